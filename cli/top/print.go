package top

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
)

// Output formats of -o.
const (
	OutputTable = ""
	OutputWide  = "wide"
	OutputJSON  = "json"
)

// Printer prints rows.
type Printer struct {
	Out io.Writer
	// Output is OutputTable, OutputWide or OutputJSON.
	Output string
	// NoHeaders leaves the header row out.
	NoHeaders bool
	// Namespaces adds the NAMESPACE column (-A).
	Namespaces bool
	// Bars adds a utilization bar to each row (--watch on a terminal).
	Bars bool
}

// unknown is printed for a value the API does not serve, as the HPA's
// `kubectl get hpa` prints one.
const unknown = "<unknown>"

// barWidth is the number of cells of a utilization bar.
const barWidth = 10

// bar draws a utilization percent as barWidth cells.
func bar(p *float64) string {
	if p == nil {
		return "[" + strings.Repeat(" ", barWidth) + "]"
	}
	n := int(math.Round(math.Max(0, math.Min(100, *p)) * barWidth / 100))
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", barWidth-n) + "]"
}

func percent(p *float64) string {
	if p == nil {
		return unknown
	}
	return fmt.Sprintf("%.0f%%", *p)
}

// mebibytes prints bytes as `kubectl top` prints memory.
func mebibytes(b *float64) string {
	if b == nil {
		return unknown
	}
	return fmt.Sprintf("%dMi", int64(*b)/(1<<20))
}

func watts(w *float64) string {
	if w == nil {
		return unknown
	}
	return fmt.Sprintf("%.0fW", *w)
}

func gpus(r *PodRow) string {
	if r.GPUs == 0 {
		return unknown // served, but its GPU resource is not one we recognise
	}
	if r.Sharing != "" {
		return fmt.Sprintf("%d (%s)", r.GPUs, r.Sharing)
	}
	return fmt.Sprint(r.GPUs)
}

func seconds(s *int64) string {
	if s == nil {
		return unknown
	}
	return duration.HumanDuration(time.Duration(*s) * time.Second)
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// printJSON prints rows as one indented JSON list of kind (items: [],
// never null).
func printJSON[R any](out io.Writer, kind string, rows []R) error {
	if rows == nil {
		rows = []R{}
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Kind  string `json:"kind"`
		Items []R    `json:"items"`
	}{kind, rows})
}

// PrintPods prints rows in p's format; now dates the sample ages.
func (p Printer) PrintPods(rows []PodRow, now time.Time) error {
	if p.Output == OutputJSON {
		return printJSON(p.Out, "PodGPUMetricsList", rows)
	}
	w := tabwriter.NewWriter(p.Out, 6, 4, 3, ' ', 0)
	wide := p.Output == OutputWide
	if !p.NoHeaders {
		var h []string
		if p.Namespaces {
			h = append(h, "NAMESPACE")
		}
		h = append(h, "NAME", "GPU-UTIL")
		if p.Bars {
			h = append(h, "")
		}
		h = append(h, "GPU-MEMORY", "MEMORY%", "POWER", "GPUS", "SAMPLE-AGE")
		if wide {
			h = append(h, "WINDOW", "NODE", "RESOURCES")
		}
		fmt.Fprintln(w, strings.Join(h, "\t"))
	}
	for i := range rows {
		r := &rows[i]
		var c []string
		if p.Namespaces {
			c = append(c, r.Namespace)
		}
		c = append(c, r.Name, percent(r.UtilizationPercent))
		if p.Bars {
			c = append(c, bar(r.UtilizationPercent))
		}
		sampleAge := unknown
		if d, ok := age(r.Timestamp, now); ok {
			sampleAge = duration.HumanDuration(d)
		}
		c = append(c, mebibytes(r.MemoryUsedBytes), percent(r.MemoryUtilizationPercent), watts(r.PowerWatts), gpus(r), sampleAge)
		if wide {
			c = append(c, seconds(r.WindowSeconds), orNone(r.Node), orNone(strings.Join(r.Resources, ",")))
		}
		fmt.Fprintln(w, strings.Join(c, "\t"))
	}
	return w.Flush()
}

// count prints a served count, <unknown> when not served.
func count(n *float64) string {
	if n == nil {
		return unknown
	}
	return fmt.Sprintf("%.0f", *n)
}

// PrintNodes prints node rows in p's format (p.Namespaces is ignored);
// now dates the sample ages.
func (p Printer) PrintNodes(rows []NodeRow, now time.Time) error {
	if p.Output == OutputJSON {
		return printJSON(p.Out, "NodeGPUMetricsList", rows)
	}
	w := tabwriter.NewWriter(p.Out, 6, 4, 3, ' ', 0)
	wide := p.Output == OutputWide
	if !p.NoHeaders {
		h := []string{"NAME", "GPU-UTIL"}
		if p.Bars {
			h = append(h, "")
		}
		h = append(h, "GPU-UTIL-MAX", "GPU-MEMORY", "MEMORY%", "POWER", "GPUS", "PODS", "SAMPLE-AGE")
		if wide {
			h = append(h, "WINDOW", "ALLOCATABLE", "RESOURCES")
		}
		fmt.Fprintln(w, strings.Join(h, "\t"))
	}
	for i := range rows {
		r := &rows[i]
		c := []string{r.Name, percent(r.UtilizationPercent)}
		if p.Bars {
			c = append(c, bar(r.UtilizationPercent))
		}
		sampleAge := unknown
		if d, ok := age(r.Timestamp, now); ok {
			sampleAge = duration.HumanDuration(d)
		}
		c = append(c, percent(r.UtilizationMaxPercent), mebibytes(r.MemoryUsedBytes), percent(r.MemoryUtilizationPercent),
			watts(r.PowerWatts), count(r.GPUs), fmt.Sprint(r.Pods), sampleAge)
		if wide {
			c = append(c, seconds(r.WindowSeconds), fmt.Sprint(r.Allocatable), orNone(strings.Join(r.Resources, ",")))
		}
		fmt.Fprintln(w, strings.Join(c, "\t"))
	}
	return w.Flush()
}

// clearScreen moves the cursor home and clears the screen (ANSI).
const clearScreen = "\x1b[H\x1b[2J"

// Watch prints fetch's rows every interval until ctx ends. On a terminal
// each round redraws the screen in place under a title line; otherwise
// each round is appended as plain lines, rounds separated by a blank line
// (one JSON document per round with -o json). An error of the first round
// is returned; a later one is printed (in its round on a terminal, on
// errOut otherwise) and the watch goes on.
func Watch(ctx context.Context, interval time.Duration, terminal bool, title string,
	fetch func(context.Context) ([]PodRow, error), p Printer, errOut io.Writer, now func() time.Time) error {
	return watch(ctx, interval, terminal, title, fetch, p, p.PrintPods, errOut, now)
}

// WatchNodes is Watch for `top nodes`.
func WatchNodes(ctx context.Context, interval time.Duration, terminal bool, title string,
	fetch func(context.Context) ([]NodeRow, error), p Printer, errOut io.Writer, now func() time.Time) error {
	return watch(ctx, interval, terminal, title, fetch, p, p.PrintNodes, errOut, now)
}

func watch[R any](ctx context.Context, interval time.Duration, terminal bool, title string,
	fetch func(context.Context) ([]R, error), p Printer, print func([]R, time.Time) error, errOut io.Writer, now func() time.Time) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for round := 0; ; round++ {
		rows, err := fetch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && round == 0 {
			return err
		}
		t := now()
		switch {
		case terminal:
			fmt.Fprintf(p.Out, "%s%s    %s\n\n", clearScreen, title, t.UTC().Format(time.RFC3339))
			if err != nil {
				fmt.Fprintf(p.Out, "error: %v\n", err)
			}
		case err != nil:
			fmt.Fprintf(errOut, "error: %v\n", err)
		case round > 0 && p.Output != OutputJSON:
			fmt.Fprintln(p.Out)
		}
		if err == nil {
			if err := print(rows, t); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
