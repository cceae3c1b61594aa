//go:build e2e && benchcompare

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

const (
	// envFleetSizes overrides the fleet sizes of TestFleetScale, e.g.
	// "1000,5000".
	envFleetSizes = "BENCH_FLEET_SIZES"
	// envFleetWindow overrides how long each size is measured (default
	// 30s).
	envFleetWindow = "BENCH_FLEET_WINDOW"
	// envFleetAggregatorArgs are extra aggregator flags for an experiment
	// (whitespace separated, e.g. "--scrape-timeout=200ms").
	envFleetAggregatorArgs = "BENCH_FLEET_AGGREGATOR_ARGS"
	// envProfile, set with BENCH_OUT, saves a CPU profile of the
	// aggregator per fleet size, taken during the measurement window, and
	// a heap profile at its end.
	envProfile = "BENCH_PROFILE"
)

// fleetResult is one aggregator's figures against one fleet size.
type fleetResult struct {
	Nodes int
	// Aggregator flags besides the defaults (an experiment), if any.
	Args string
	// Rounds completed in the window, and how many the interval allows.
	Rounds, Expected float64
	// RoundMean is the mean over the rounds of the slowest scrape's time
	// from its start slot to its end (before the spread rounds: the mean
	// round duration).
	RoundMean    time.Duration
	ScrapeErrors float64
	// Skipped counts the scrapes not started because the target's
	// previous one still ran.
	Skipped float64
	// HeapMiB, StackMiB and Goroutines are the aggregator's Go heap in
	// use, goroutine stacks and goroutines at the end of the window.
	HeapMiB, StackMiB, Goroutines float64
	StoredPerSecond               float64
	StorePods                     float64
	Aggregator                    footprint
	Fleet                         footprint
	Latency                       []latency
	// ProviderP99 and ServerP99 are the 99th percentiles (histogram bucket
	// bounds) of the aggregator's own time for the queries of the
	// last latency run: the provider's, and its API server's in all.
	ProviderP99, ServerP99 string
	// AnswerHits is, per latency run (20/s, then 100/s), the share of its
	// selector queries answered from a kept encoded answer as it was (the
	// rest were rebuilt: first asked, or a pod changed since).
	AnswerHits []optional
	// Load is the machine's 1-minute load average at the start of the
	// size's measurement and at its end: the figures are only comparable
	// between quiet runs.
	Load [2]optional
}

// fits reports whether the aggregator kept up: every round within the
// interval, no scrape failed, and no round skipped.
func (r fleetResult) fits() bool {
	return r.RoundMean <= defaultScrapeInterval && r.ScrapeErrors == 0 && r.Skipped == 0 && r.Rounds >= 0.9*r.Expected
}

// TestFleetScale runs our aggregator, at its defaults, against fleets of
// simulated agents of growing size (8 GPUs each, every GPU held by a pod)
// and records its scrape rounds, footprint and API latency, to find the
// largest fleet one aggregator serves within its scrape interval on this
// machine. It asserts nothing about speed.
func TestFleetScale(t *testing.T) {
	sizes := []int{1000, 2000, 3000, 4000, 5000}
	window := 30 * time.Second
	loadWindow := 10 * time.Second
	if os.Getenv(envQuick) != "" {
		sizes, window, loadWindow = []int{500, 1000}, 15*time.Second, 3*time.Second
	}
	if v := os.Getenv(envFleetSizes); v != "" {
		sizes = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > 20000 {
				t.Fatalf("%s=%q: want node counts such as 1000,5000", envFleetSizes, v)
			}
			sizes = append(sizes, n)
		}
	}
	if v := os.Getenv(envFleetWindow); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 5*time.Second {
			t.Fatalf("%s=%q: want a duration of at least 5s", envFleetWindow, v)
		}
		window = d
	}
	extraArgs := strings.Fields(os.Getenv(envFleetAggregatorArgs))
	start := time.Now()
	ns := cluster.NewNamespace(t, "fleet")
	// The pods of the HPA-shaped query: one Deployment, placed on each
	// size's fleet by that size's pod faker.
	pods := min(bigGroup, sizes[0]*gpusPerNode/2)
	sel := createGroup(t, ns, "load", "load", int32(pods))
	t.Cleanup(func() {
		if err := scaleDeployment(context.Background(), ns, "load", 0); err != nil {
			t.Errorf("scaling load down: %v", err)
		}
	})
	var results []fleetResult
	for _, nodes := range sizes {
		t.Run(fmt.Sprintf("nodes=%d", nodes), func(t *testing.T) {
			dir := framework.TempDir(t, "gms-bench-")
			fleet, p := serveFleet(t, dir, ns, sel, nodes, pods, nil, extraArgs...)
			client, err := apiClient()
			if err != nil {
				t.Fatal(err)
			}
			u := selectorURL(ns, sel)
			// Let the rounds settle past the start (connections opened,
			// heap grown) before measuring.
			time.Sleep(2 * defaultWindow / 3)

			r := fleetResult{Nodes: nodes, Args: strings.Join(extraArgs, " ")}
			r.Load[0] = optional(loadAverage())
			before, err := readAggregatorStats(t.Context(), p.metricsURL)
			if err != nil {
				t.Fatal(err)
			}
			aggMeter, err := meter(p.procs)
			if err != nil {
				t.Fatal(err)
			}
			fleetMeter, err := meter([]*framework.Process{fleet.proc})
			if err != nil {
				t.Fatal(err)
			}
			profiled := make(chan error, 1)
			if out := os.Getenv(envOut); out != "" && os.Getenv(envProfile) != "" {
				go func() {
					profiled <- saveProfile(t.Context(), p.metricsURL, window-2*time.Second, filepath.Join(out, fmt.Sprintf("fleet-%d.cpu.pprof", nodes)))
				}()
			} else {
				profiled <- nil
			}
			time.Sleep(window)
			if err := <-profiled; err != nil {
				t.Errorf("CPU profile: %v", err)
			}
			if out := os.Getenv(envOut); out != "" && os.Getenv(envProfile) != "" {
				if err := fetchDebug(t.Context(), p.metricsURL, "/debug/pprof/heap", time.Minute, filepath.Join(out, fmt.Sprintf("fleet-%d.heap.pprof", nodes))); err != nil {
					t.Errorf("heap profile: %v", err)
				}
			}
			after, err := readAggregatorStats(t.Context(), p.metricsURL)
			if err != nil {
				t.Fatal(err)
			}
			if r.Aggregator, err = aggMeter.stop(); err != nil {
				t.Fatal(err)
			}
			if r.Fleet, err = fleetMeter.stop(); err != nil {
				t.Fatal(err)
			}
			r.Rounds = after.rounds - before.rounds
			r.Expected = r.Aggregator.Window.Seconds() / defaultScrapeInterval.Seconds()
			if r.Rounds > 0 {
				r.RoundMean = time.Duration((after.roundSeconds - before.roundSeconds) / r.Rounds * float64(time.Second))
			}
			r.ScrapeErrors = after.errors - before.errors
			r.Skipped = after.skipped - before.skipped
			r.HeapMiB, r.StackMiB, r.Goroutines = after.heapMiB, after.stackMiB, after.goroutines
			r.StoredPerSecond = (after.stored - before.stored) / r.Aggregator.Window.Seconds()
			r.StorePods = after.storePods
			for _, rate := range []float64{20, 100} {
				before, err := readAggregatorStats(t.Context(), p.metricsURL)
				if err != nil {
					t.Fatal(err)
				}
				profiled := make(chan error, 1)
				if out := os.Getenv(envOut); out != "" && os.Getenv(envProfile) != "" && rate == 100 {
					go func() {
						profiled <- saveProfile(t.Context(), p.metricsURL, loadWindow-time.Second, filepath.Join(out, fmt.Sprintf("fleet-%d-queries.cpu.pprof", nodes)))
					}()
				} else {
					profiled <- nil
				}
				l, err := measuredLoad(t.Context(), client, u, pods, rate, loadWindow, p.procs)
				if err != nil {
					t.Fatal(err)
				}
				r.Latency = append(r.Latency, l)
				if err := <-profiled; err != nil {
					t.Errorf("CPU profile: %v", err)
				}
				if out := os.Getenv(envOut); out != "" && os.Getenv(envProfile) != "" && rate == 100 && slices.Contains(extraArgs, "--contention-profiling") {
					if err := fetchDebug(t.Context(), p.metricsURL, "/debug/pprof/block", time.Minute, filepath.Join(out, fmt.Sprintf("fleet-%d.block.pprof", nodes))); err != nil {
						t.Errorf("block profile: %v", err)
					}
				}
				after, err := readAggregatorStats(t.Context(), p.metricsURL)
				if err != nil {
					t.Fatal(err)
				}
				if n := (after.hits - before.hits) + (after.rebuilt - before.rebuilt); n > 0 {
					r.AnswerHits = append(r.AnswerHits, optional((after.hits-before.hits)/n))
				} else {
					r.AnswerHits = append(r.AnswerHits, optional(math.NaN()))
				}
				r.ProviderP99 = fmtBound(after.provider.quantileSince(before.provider, 0.99))
				r.ServerP99 = fmtBound(after.server.quantileSince(before.server, 0.99))
			}
			r.Load[1] = optional(loadAverage())
			t.Logf("measured: %d nodes: %+v", nodes, r)
			results = append(results, r)
		})
	}
	report := renderFleet(results, window, time.Since(start))
	fmt.Print("\n" + report)
	writeResults(t, "fleet", report, results)
}

// serveFleet starts fleetsim with nodes × gpusPerNode GPUs, the pod faker
// handing the first GPUs to the pods of namespace matching selector (pods
// of them, created by the caller), and our aggregator at its defaults
// (plus extraArgs) scraping the fleet and extraURLs; it returns once the
// aggregator serves a value for every one of the pods.
func serveFleet(t *testing.T, dir, namespace, selector string, nodes, pods int, extraURLs []string, extraArgs ...string) (*fleetSim, *pipeline) {
	t.Helper()
	fleet := startFleet(t, dir, nodes, gpusPerNode)
	faker := framework.StartPodFaker(t, cluster.Client, namespace, fleet.kubelets(t), fleet.slots(t, pods))
	waitAssigned(t, faker, namespace, selector, pods, 3*time.Minute)
	p := startOurs(t, dir, append(fleet.urls(), extraURLs...), 0, extraArgs...)
	client, err := apiClient()
	if err != nil {
		t.Fatal(err)
	}
	u := selectorURL(namespace, selector)
	framework.WaitFor(t, 2*time.Minute, fmt.Sprintf("the aggregator to serve all %d pods", pods), func(ctx context.Context) (bool, string, error) {
		items, err := getValues(ctx, client, u)
		if err != nil {
			return false, err.Error(), nil
		}
		return len(items) == pods, fmt.Sprintf("%d items", len(items)), nil
	})
	return fleet, p
}

// renderFleet prints the fleet-scale table.
func renderFleet(results []fleetResult, window, took time.Duration) string {
	var b strings.Builder
	args := "at its defaults"
	if len(results) > 0 && results[0].Args != "" {
		args = "with " + results[0].Args
	}
	fmt.Fprintf(&b, "# Fleet scale: one aggregator %s (scrape %v, window %v)\n\n", args, defaultScrapeInterval, defaultWindow)
	fmt.Fprintf(&b, "Each size measured over %v after warm-up; every GPU held by a pod; fleetsim on the same 2 cores. Run took %v.\n\n", window, took.Round(time.Second))
	b.WriteString("| nodes (GPUs) | rounds / expected | mean round lag | scrape errors / skipped | samples stored/s | aggregator RSS (anon), MiB | Go heap / stacks, MiB (goroutines) | per node | aggregator CPU, millicores | per node | fleetsim CPU | API p50 / p99, pods at 20/s | at 100/s | aggregator-side p99 at 100/s, bucket bound (provider / whole server) | CPU at 100/s: aggregator / kube-apiserver | answers kept hit, at 20/s / 100/s | within the interval | load average (start / end) |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	largest := 0
	for _, r := range results {
		lat := []string{"—", "—"}
		for i, l := range r.Latency {
			if i < len(lat) {
				lat[i] = fmt.Sprintf("%d: %s", l.Pods, fmtLatency(l))
			}
		}
		fmt.Fprintf(&b, "| %d (%d) | %.0f / %.0f | %v | %.0f / %.0f | %.0f | %.0f (%.0f) | %.0f / %.0f (%.0f) | %.3f MiB | %.0f | %.3f m | %.0f m | %s | %s | %s / %s | %s | %s | %s | %.1f / %.1f |\n",
			r.Nodes, r.Nodes*gpusPerNode, r.Rounds, r.Expected, r.RoundMean.Round(time.Millisecond), r.ScrapeErrors, r.Skipped, r.StoredPerSecond,
			r.Aggregator.RSSMiB, r.Aggregator.AnonMiB, r.HeapMiB, r.StackMiB, r.Goroutines, r.Aggregator.RSSMiB/float64(r.Nodes),
			r.Aggregator.Millicores, r.Aggregator.Millicores/float64(r.Nodes), r.Fleet.Millicores,
			lat[0], lat[1], r.ProviderP99, r.ServerP99, loadCPU(r.Latency), fmtShares(r.AnswerHits), map[bool]string{true: "yes", false: "no"}[r.fits()], r.Load[0], r.Load[1])
		if r.fits() && r.Nodes > largest {
			largest = r.Nodes
		}
	}
	if largest > 0 {
		fmt.Fprintf(&b, "\nLargest fleet served within the %v interval here: %d nodes (%d GPUs).\n", defaultScrapeInterval, largest, largest*gpusPerNode)
	} else {
		fmt.Fprintf(&b, "\nNo measured size was served within the %v interval here.\n", defaultScrapeInterval)
	}
	return b.String()
}

// saveProfile fetches a CPU profile of d from the aggregator's
// /debug/pprof (next to metricsURL) into path.
func saveProfile(ctx context.Context, metricsURL string, d time.Duration, path string) error {
	return fetchDebug(ctx, metricsURL, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())), d+30*time.Second, path)
}

// fetchDebug saves the aggregator's debug endpoint at the path next to
// metricsURL into file.
func fetchDebug(ctx context.Context, metricsURL, path string, timeout time.Duration, file string) error {
	u := strings.TrimSuffix(metricsURL, "/metrics") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	client := cluster.HTTPClient()
	client.Timeout = timeout
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// fmtShares prints shares as percentages separated by " / ", "—" for
// none.
func fmtShares(shares []optional) string {
	if len(shares) == 0 {
		return "—"
	}
	parts := make([]string, len(shares))
	for i, v := range shares {
		parts[i] = "—"
		if !math.IsNaN(float64(v)) {
			parts[i] = fmt.Sprintf("%.0f %%", 100*v)
		}
	}
	return strings.Join(parts, " / ")
}

// optional is a figure that may be missing (NaN: an aggregator without
// the metric, an unreadable /proc/loadavg); JSON writes a missing one as
// null, which encoding/json cannot do for a NaN float64.
type optional float64

func (o optional) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(o)) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(o))
}

// loadAverage returns the machine's 1-minute load average, or NaN when
// /proc/loadavg cannot be read.
func loadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return math.NaN()
	}
	f, err := strconv.ParseFloat(strings.Fields(string(data) + " x")[0], 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

// fmtBound prints a histogram bucket bound in seconds as a duration.
func fmtBound(s float64) string {
	if math.IsInf(s, 1) {
		return "> largest bucket"
	}
	if s == 0 {
		return "—"
	}
	return fmtDuration(time.Duration(s * float64(time.Second)))
}

// loadCPU prints the CPU of the last latency run.
func loadCPU(ls []latency) string {
	if len(ls) == 0 {
		return "—"
	}
	l := ls[len(ls)-1]
	return fmt.Sprintf("%.0f m / %.0f m", l.ServerMillicores, l.APIServerMillicores)
}
