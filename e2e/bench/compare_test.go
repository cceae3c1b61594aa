//go:build e2e && benchcompare

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

const (
	// gpusPerNode is every simulated node's GPU count.
	gpusPerNode = 8
	// freshSteps is the number of utilization steps per pipeline, run on
	// as many pods and HPAs at once.
	freshSteps = 6
	// stepSpan is the span the steps are spread over: a little more than
	// the longest scrape interval and the HPA sync period (15 s), so that
	// the steps fall at evenly spread phases of a 15 s, 5 s and 2 s cycle
	// alike (offsets k × 17/6 s).
	stepSpan = 17 * time.Second
	// pollPeriod is how often the freshness poller reads the pods' values
	// through the kube-apiserver: the resolution of the freshness figures,
	// and below prometheus-adapter's 5 queries/s client limit.
	pollPeriod = 250 * time.Millisecond
	// stepLow and stepHigh are the utilization before and after a step.
	stepLow, stepHigh = 10, 90
	// bigGroup is the pod count of the large HPA-shaped query.
	bigGroup = 1000
)

// Environment variables of the benchmark (hack/bench-compare.sh).
const (
	// envQuick runs a smoke version: 10 nodes, no 5 s seed run, short
	// latency runs, no 1,000-pod query.
	envQuick = "BENCH_QUICK"
	// envSizes overrides the fleet sizes, e.g. "10,100,1000".
	envSizes = "BENCH_SIZES"
	// envSeed5Size is the fleet size at which the seed chain also runs at a
	// 5 s scrape interval (default 100).
	envSeed5Size = "BENCH_SEED5_SIZE"
	// envOut is a directory receiving compare.md and compare.json.
	envOut = "BENCH_OUT"
	// envExtraWindow is a shorter --window our aggregator also runs with,
	// at the first fleet size, to show what the default 15 s window costs
	// the HPA's reaction (default 5s; "off" skips it).
	envExtraWindow = "BENCH_EXTRA_WINDOW"
)

// benchConfig is one run's settings.
type benchConfig struct {
	quick      bool
	sizes      []int
	seed5Size  int
	loadWindow time.Duration // length of each latency run
	rates      []float64
	// extraWindow is the --window of an extra run of ours (0: none).
	extraWindow time.Duration
}

func benchConfigFromEnv(t *testing.T) benchConfig {
	t.Helper()
	cfg := benchConfig{
		sizes: []int{10, 100, 1000}, seed5Size: 100, loadWindow: 10 * time.Second, extraWindow: 5 * time.Second,
		// 4/s is below prometheus-adapter's client limit of 5 queries/s
		// (paced); 20 and 100/s are the rates.
		rates: []float64{4, 20, 100},
	}
	if os.Getenv(envQuick) != "" {
		cfg.quick, cfg.sizes, cfg.seed5Size, cfg.loadWindow, cfg.extraWindow = true, []int{10}, 0, 3*time.Second, 0
	}
	if v := os.Getenv(envExtraWindow); v != "" {
		cfg.extraWindow = 0
		if v != "off" {
			d, err := time.ParseDuration(v)
			if err != nil || d < defaultScrapeInterval {
				t.Fatalf("%s=%q: want a window of at least %v, or off", envExtraWindow, v, defaultScrapeInterval)
			}
			cfg.extraWindow = d
		}
	}
	if v := os.Getenv(envSizes); v != "" {
		cfg.sizes = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > 20000 {
				t.Fatalf("%s=%q: want node counts such as 10,100,1000", envSizes, v)
			}
			cfg.sizes = append(cfg.sizes, n)
		}
	}
	if v := os.Getenv(envSeed5Size); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("%s=%q: want a node count", envSeed5Size, v)
		}
		cfg.seed5Size = n
	}
	return cfg
}

// phaseResult is one pipeline's figures at one fleet size.
type phaseResult struct {
	Nodes    int
	Pipeline string
	Interval time.Duration // scrape interval
	Window   time.Duration
	// FirstChange and Within5 are the freshness of the steps: until the
	// value on the API first changed, and until it came within 5 % of
	// the new level. FirstScale: until the Deployment's first scale-up.
	FirstChange, Within5, FirstScale summary
	Footprint                        footprint
	Latency                          []latency
	// WindowSeconds is what the API reports as the value's window
	// ("none" when absent); TimestampAge is how old the value's
	// timestamp was when the answer arrived (median over the pods).
	WindowSeconds string
	TimestampAge  time.Duration
	// Rounds and RoundMean describe our aggregator's scrape rounds
	// during the freshness window (zero for the seed chain).
	Rounds, ScrapeErrors float64
	RoundMean            time.Duration
	PollErrors           int
	// Resets counts the restarts of the pipeline's API server after a
	// latency run that overloaded it.
	Resets int
}

// TestBenchCompare runs the seed's chain (Prometheus + prometheus-adapter)
// and gpu-metrics-server one after the other on the same control plane and
// the same simulated fleet, and prints the side-by-side table. It asserts
// nothing about speed: it fails only when something did not run.
func TestBenchCompare(t *testing.T) {
	cfg := benchConfigFromEnv(t)
	start := time.Now()
	var results []phaseResult
	for _, nodes := range cfg.sizes {
		t.Run(fmt.Sprintf("nodes=%d", nodes), func(t *testing.T) {
			results = append(results, benchSize(t, cfg, nodes)...)
		})
	}
	report := renderCompare(cfg, results, time.Since(start))
	fmt.Print("\n" + report)
	writeResults(t, "compare", report, results)
}

// writeResults writes the report and the raw results under $BENCH_OUT.
func writeResults(t *testing.T, name, report string, results any) {
	t.Helper()
	dir := os.Getenv(envOut)
	if dir == "" {
		return
	}
	raw, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	for file, data := range map[string][]byte{name + ".md": []byte(report), name + ".json": raw} {
		if err := os.WriteFile(filepath.Join(dir, file), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// benchSize runs every pipeline against one fleet of nodes × 8 GPUs.
func benchSize(t *testing.T, cfg benchConfig, nodes int) []phaseResult {
	dir := framework.TempDir(t, "gms-bench-")
	ns := cluster.NewNamespace(t, fmt.Sprintf("bench-%d", nodes))
	fleet := startFleet(t, dir, nodes, gpusPerNode)

	groups := []int{10}
	if !cfg.quick && nodes*gpusPerNode >= bigGroup+4*freshSteps {
		groups = append(groups, bigGroup)
	}
	// Pods at a time: the query groups and one pipeline's step pods, each
	// possibly scaled to 2.
	need := 2 * freshSteps
	for _, g := range groups {
		need += g
	}
	faker := framework.StartPodFaker(t, cluster.Client, ns, fleet.kubelets(t), fleet.slots(t, min(need+gpusPerNode, nodes*gpusPerNode)))
	for _, g := range groups {
		name := fmt.Sprintf("load-%d", g)
		sel := createGroup(t, ns, name, name, int32(g))
		t.Cleanup(func() {
			if err := scaleDeployment(context.Background(), ns, name, 0); err != nil {
				t.Errorf("scaling %s down: %v", name, err)
			}
		})
		waitAssigned(t, faker, ns, sel, g, 3*time.Minute)
	}

	type phase struct {
		tag      string
		interval time.Duration // seed chain; 0: ours
		window   time.Duration // ours: 0 for the default
	}
	phases := []phase{{tag: "seed15s", interval: 15 * time.Second}}
	if nodes == cfg.seed5Size {
		phases = append(phases, phase{tag: "seed5s", interval: 5 * time.Second})
	}
	phases = append(phases, phase{tag: "ours"})
	if cfg.extraWindow > 0 && nodes == cfg.sizes[0] {
		phases = append(phases, phase{tag: "ours-window", window: cfg.extraWindow})
	}
	var out []phaseResult
	for _, ph := range phases {
		t.Run(ph.tag, func(t *testing.T) {
			start := func(t *testing.T, dir string) *pipeline {
				if ph.interval == 0 {
					return startOurs(t, dir, fleet.urls(), ph.window)
				}
				return startSeedChain(t, dir, fleet.urls(), ph.interval, ns)
			}
			r := runPhase(t, cfg, ns, ph.tag, fleet, faker, groups, start)
			r.Nodes = nodes
			out = append(out, r)
		})
	}
	return out
}

// runPhase starts one pipeline and measures it: freshness and HPA reaction
// of freshSteps steps on as many one-pod Deployments, footprint over that
// time, then the latency of HPA-shaped queries.
func runPhase(t *testing.T, cfg benchConfig, ns, tag string, fleet *fleetSim, faker *framework.PodFaker, groups []int, start func(*testing.T, string) *pipeline) phaseResult {
	dir := framework.TempDir(t, "gms-bench-")
	group := "fresh-" + tag
	names := make([]string, freshSteps)
	for k := range names {
		names[k] = fmt.Sprintf("%s-%d", group, k)
		createGroup(t, ns, names[k], group, 1)
		cluster.CreateHPA(t, stepHPA(ns, names[k]))
	}
	selector := benchLabel + "=" + group
	t.Cleanup(func() { endPhase(t, ns, fleet, names) })
	assigned := waitAssigned(t, faker, ns, selector, freshSteps, 2*time.Minute)
	podOf := make([]string, freshSteps)
	for pod := range assigned {
		for k, name := range names {
			if strings.HasPrefix(pod, name+"-") {
				podOf[k] = pod
			}
		}
	}

	p := start(t, dir)
	res := phaseResult{Pipeline: p.name, Interval: p.scrapeInterval, Window: p.window}
	client, err := apiClient()
	if err != nil {
		t.Fatal(err)
	}
	freshURL := selectorURL(ns, selector)
	framework.WaitFor(t, p.window+2*p.scrapeInterval+2*time.Minute, fmt.Sprintf("%s to serve %d for the %d step pods", p.name, stepLow, freshSteps), func(ctx context.Context) (bool, string, error) {
		items, err := getValues(ctx, client, freshURL)
		if err != nil {
			return false, err.Error(), nil
		}
		ok := len(items) == freshSteps
		for _, it := range items {
			v, err := parseQuantity(it.Value)
			ok = ok && err == nil && v == stepLow
		}
		return ok, fmt.Sprintf("%d items %v", len(items), items), nil
	})
	for _, name := range names {
		cluster.WaitHPAMetric(t, ns, name, stepLow)
	}

	// Steps, one per pod at evenly spread offsets, with the values polled
	// and the scale-ups watched meanwhile.
	scaled := watchScaleUps(t, ns, group)
	var aggBefore aggregatorStats
	if p.metricsURL != "" {
		if aggBefore, err = readAggregatorStats(t.Context(), p.metricsURL); err != nil {
			t.Fatal(err)
		}
	}
	fm, err := meter(p.procs)
	if err != nil {
		t.Fatal(err)
	}
	pollCtx, stopPoll := context.WithCancel(t.Context())
	defer stopPoll()
	poll := startPoller(pollCtx, client, freshURL, pollPeriod)
	t0 := time.Now().Add(time.Second)
	stepAt := make([]time.Time, freshSteps)
	for k := range freshSteps {
		time.Sleep(time.Until(t0.Add(time.Duration(k) * stepSpan / freshSteps)))
		s := assigned[podOf[k]]
		stepAt[k] = fleet.setUtilization(t, strconv.Itoa(s.Node), strconv.Itoa(s.Index), stepHigh)
	}
	near := func(v float64) bool { return math.Abs(v-stepHigh) <= 0.05*stepHigh }
	changed := func(v float64) bool { return math.Abs(v-stepLow) > 0.01 }
	// Until every step showed and scaled, or the deadline: what did not
	// by then is reported as missing, not failed.
	deadline := stepAt[freshSteps-1].Add(p.window + 2*p.scrapeInterval + 2*hpaSyncPeriod + 10*time.Second)
	_ = wait.PollUntilContextTimeout(t.Context(), time.Second, time.Until(deadline), true, func(context.Context) (bool, error) {
		for k, pod := range podOf {
			_, within := poll.firstAfter(pod, stepAt[k], near)
			_, up := scaled.scaledAt(names[k])
			if !within || !up {
				return false, nil
			}
		}
		return true, nil
	})
	stopPoll()
	if res.Footprint, err = fm.stop(); err != nil {
		t.Fatal(err)
	}
	if p.metricsURL != "" {
		after, err := readAggregatorStats(t.Context(), p.metricsURL)
		if err != nil {
			t.Fatal(err)
		}
		res.Rounds, res.ScrapeErrors = after.rounds-aggBefore.rounds, after.errors-aggBefore.errors
		if res.Rounds > 0 {
			res.RoundMean = time.Duration((after.roundSeconds - aggBefore.roundSeconds) / res.Rounds * float64(time.Second))
		}
	}
	var first, within, up []time.Duration
	for k, pod := range podOf {
		if d, ok := poll.firstAfter(pod, stepAt[k], changed); ok {
			first = append(first, d)
		}
		if d, ok := poll.firstAfter(pod, stepAt[k], near); ok {
			within = append(within, d)
		}
		if at, ok := scaled.scaledAt(names[k]); ok {
			up = append(up, at.Sub(stepAt[k]))
		}
	}
	res.FirstChange, res.Within5, res.FirstScale = summarize(first, freshSteps), summarize(within, freshSteps), summarize(up, freshSteps)
	res.PollErrors = poll.errors
	t.Logf("measured: %s: first change %v, within 5%% %v, first scale %v, footprint %+v, poll errors %d (last: %v)",
		p.name, first, within, up, res.Footprint, poll.errors, poll.last)

	// What the API says about the value's time and window.
	if items, err := getValues(t.Context(), client, freshURL); err == nil && len(items) > 0 {
		now := time.Now()
		ages := make([]time.Duration, 0, len(items))
		for _, it := range items {
			ages = append(ages, now.Sub(it.Timestamp))
		}
		res.TimestampAge = summarize(ages, len(ages)).Median
		res.WindowSeconds = "none"
		if w := items[0].WindowSeconds; w != nil {
			res.WindowSeconds = strconv.FormatInt(*w, 10)
		}
	}

	// HPA-shaped queries through the kube-apiserver, once the pipeline
	// answers for every pod of the group at all.
	for _, g := range groups {
		u := selectorURL(ns, fmt.Sprintf("%s=load-%d", benchLabel, g))
		if err := waitServed(t.Context(), u, g, p.window+2*p.scrapeInterval+time.Minute); err != nil {
			t.Logf("measured: %s: no latency figures for %d pods: %v", p.name, g, err)
			for _, proc := range p.procs {
				t.Logf("---- last 20 lines of %s ----\n%s", proc.Name, proc.Tail(20))
			}
			for _, rate := range cfg.rates {
				res.Latency = append(res.Latency, latency{Pods: g, Rate: rate, Unanswered: err.Error()})
			}
			continue
		}
		skip := "" // why the group's remaining runs cannot take place
		for _, rate := range cfg.rates {
			if skip != "" {
				res.Latency = append(res.Latency, latency{Pods: g, Rate: rate, Unanswered: skip})
				continue
			}
			l, err := measuredLoad(t.Context(), client, u, g, rate, cfg.loadWindow, p.procs)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("measured: %s: %d pods at %v/s: %+v", p.name, g, rate, l)
			res.Latency = append(res.Latency, l)
			if l.Failed > 0 && p.reset != nil {
				// Its queued requests would hold it for up to a minute
				// (their handler timeout) and spoil the next figure.
				p.reset(t)
				res.Resets++
				if err := waitServed(t.Context(), u, g, time.Minute); err != nil {
					t.Logf("measured: %s: no answer for %d pods after a restart: %v", p.name, g, err)
					skip = "no complete answer after a restart: " + err.Error()
				}
			}
		}
	}
	return res
}

// endPhase removes a phase's HPAs and pods and puts every GPU back to the
// low level, so that the next pipeline starts from the same state.
func endPhase(t *testing.T, ns string, fleet *fleetSim, names []string) {
	ctx := context.Background()
	for _, name := range names {
		if err := cluster.Client.AutoscalingV2().HorizontalPodAutoscalers(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting HPA %s: %v", name, err)
		}
		if err := scaleDeployment(ctx, ns, name, 0); err != nil {
			t.Errorf("scaling %s down: %v", name, err)
		}
	}
	q := fmt.Sprintf("/sim/set?node=all&gpu=all&utilization=%d", stepLow)
	if err := fleet.call(ctx, "POST", q, nil, nil); err != nil {
		t.Errorf("resetting the fleet's utilization: %v", err)
	}
}

// renderCompare prints the side-by-side tables, one per fleet size.
func renderCompare(cfg benchConfig, results []phaseResult, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Side by side: seed chain (Prometheus + prometheus-adapter) vs gpu-metrics-server\n\n")
	fmt.Fprintf(&b, "%d steps %d→%d %% per pipeline at offsets k × %v; values polled every %v through the kube-apiserver; HPA sync %v, AverageValue 50; ours at its defaults (scrape %v, window %v). Ratio = seed / ours. Run took %v%s.\n",
		freshSteps, stepLow, stepHigh, stepSpan/freshSteps, pollPeriod, hpaSyncPeriod, defaultScrapeInterval, defaultWindow, took.Round(time.Second),
		map[bool]string{true: " (BENCH_QUICK)", false: ""}[cfg.quick])
	sizes := []int{}
	for _, r := range results {
		if !slices.Contains(sizes, r.Nodes) {
			sizes = append(sizes, r.Nodes)
		}
	}
	for _, n := range sizes {
		var seeds, extras []phaseResult
		var ours *phaseResult
		for i := range results {
			r := &results[i]
			switch {
			case r.Nodes != n:
			case r.Pipeline == "ours":
				ours = r
			case strings.HasPrefix(r.Pipeline, "seed chain"):
				seeds = append(seeds, *r)
			default:
				extras = append(extras, *r)
			}
		}
		if ours == nil || len(seeds) == 0 {
			fmt.Fprintf(&b, "\n## %d nodes × %d GPUs: incomplete (a pipeline did not finish)\n", n, gpusPerNode)
			continue
		}
		fmt.Fprintf(&b, "\n## %d nodes × %d GPUs (%d GPUs)\n\n", n, gpusPerNode, n*gpusPerNode)
		header := []string{"figure"}
		for _, s := range seeds {
			header = append(header, s.Pipeline)
		}
		header = append(header, "ours")
		for _, s := range seeds {
			header = append(header, "ratio ("+strings.TrimPrefix(s.Pipeline, "seed chain ")+")")
		}
		header = append(header, "target (ours)")
		fmt.Fprintf(&b, "| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat(" --- |", len(header)))
		row := func(figure string, cell func(r phaseResult) string, ratio func(s, o phaseResult) string, target string) {
			cells := []string{figure}
			for _, s := range seeds {
				cells = append(cells, cell(s))
			}
			cells = append(cells, cell(*ours))
			for _, s := range seeds {
				cells = append(cells, ratio(s, *ours))
			}
			cells = append(cells, target)
			fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
		}
		sumRow := func(figure string, get func(phaseResult) summary, limit time.Duration) {
			target := "—"
			if limit > 0 {
				target = fmt.Sprintf("max ≤ %v: %s", limit, verdict(get(*ours).N == get(*ours).Of && get(*ours).Max <= limit))
			}
			row(figure, func(r phaseResult) string { return fmtSummary(get(r)) },
				func(s, o phaseResult) string {
					return ratio(get(s).Median, get(o).Median) + " / " + ratio(get(s).Max, get(o).Max)
				}, target)
		}
		sumRow("value first changes, median / max", func(r phaseResult) summary { return r.FirstChange }, 3*time.Second)
		sumRow("within 5 % of the new level, median / max", func(r phaseResult) summary { return r.Within5 }, defaultWindow+3*time.Second)
		sumRow("HPA first scale, median / max", func(r phaseResult) summary { return r.FirstScale }, 20*time.Second)
		for i, l := range ours.Latency {
			target := "—"
			if l.Pods >= bigGroup && l.Rate >= 100 {
				target = "p99 ≤ 10ms: " + verdict(l.Failed == 0 && l.P99 <= 10*time.Millisecond)
			}
			row(fmt.Sprintf("API p50 / p99, %d pods at %g/s", l.Pods, l.Rate),
				func(r phaseResult) string {
					if i >= len(r.Latency) {
						return "—"
					}
					return fmtLatency(r.Latency[i])
				},
				func(s, o phaseResult) string {
					if i >= len(s.Latency) {
						return "—"
					}
					// A seed figure made of timed-out queries is a lower
					// bound.
					bound := ""
					if s.Latency[i].Failed > 0 {
						bound = "≥ "
					}
					return bound + ratio(s.Latency[i].P50, o.Latency[i].P50) + " / " + bound + ratio(s.Latency[i].P99, o.Latency[i].P99)
				}, target)
		}
		if k := len(ours.Latency) - 1; k >= 0 {
			last := ours.Latency[k]
			row(fmt.Sprintf("CPU during the %d pods at %g/s run: pipeline / kube-apiserver, millicores", last.Pods, last.Rate),
				func(r phaseResult) string {
					if k >= len(r.Latency) || r.Latency[k].Unanswered != "" {
						return "—"
					}
					return fmt.Sprintf("%.0f / %.0f", r.Latency[k].ServerMillicores, r.Latency[k].APIServerMillicores)
				}, func(phaseResult, phaseResult) string { return "—" }, "—")
		}
		perNode := func(v float64) float64 { return v / float64(n) }
		row("RSS (anonymous), MiB", func(r phaseResult) string {
			return fmt.Sprintf("%.0f (%.0f)", r.Footprint.RSSMiB, r.Footprint.AnonMiB)
		}, func(s, o phaseResult) string { return fmtRatio(s.Footprint.RSSMiB / o.Footprint.RSSMiB) },
			fmt.Sprintf("≤ 0.5 MiB/node: %.2f MiB/node, %s", perNode(ours.Footprint.RSSMiB), verdict(perNode(ours.Footprint.RSSMiB) <= 0.5)))
		row("CPU, millicores", func(r phaseResult) string {
			return fmt.Sprintf("%.0f", r.Footprint.Millicores)
		}, func(s, o phaseResult) string { return fmtRatio(s.Footprint.Millicores / o.Footprint.Millicores) },
			fmt.Sprintf("≤ 0.5 m/node: %.3f m/node, %s", perNode(ours.Footprint.Millicores), verdict(perNode(ours.Footprint.Millicores) <= 0.5)))
		row("value timestamp age / windowSeconds", func(r phaseResult) string {
			return fmt.Sprintf("%.1f s / %s", r.TimestampAge.Seconds(), r.WindowSeconds)
		}, func(phaseResult, phaseResult) string { return "—" }, "—")
		fmt.Fprintf(&b, "\nOurs: %.0f scrape rounds in the freshness window, mean round lag (slowest scrape, slot to end) %v, %v scrape errors. Footprint window %v (seed) / %v (ours).\n",
			ours.Rounds, ours.RoundMean.Round(time.Millisecond), ours.ScrapeErrors, seeds[0].Footprint.Window.Round(time.Second), ours.Footprint.Window.Round(time.Second))
		for _, r := range append(slices.Clone(seeds), *ours) {
			noted := map[int]bool{}
			for _, l := range r.Latency {
				if l.Unanswered != "" && !noted[l.Pods] {
					noted[l.Pods] = true
					fmt.Fprintf(&b, "%s, %d pods from %g/s on: no latency run (%s).\n", r.Pipeline, l.Pods, l.Rate, l.Unanswered)
				}
			}
		}
		for _, r := range seeds {
			if r.Resets > 0 {
				fmt.Fprintf(&b, "%s: prometheus-adapter restarted %d times, after each latency run with failed queries (their backlog holds it for up to a minute).\n", r.Pipeline, r.Resets)
			}
		}
		for _, r := range extras {
			fmt.Fprintf(&b, "Also measured, %s: value first changes %s, within 5 %% %s, HPA first scale %s (median / max).\n",
				r.Pipeline, fmtSummary(r.FirstChange), fmtSummary(r.Within5), fmtSummary(r.FirstScale))
		}
		for _, r := range append(append(seeds, *ours), extras...) {
			if r.PollErrors > 0 {
				fmt.Fprintf(&b, "%s: %d failed polls during the freshness window.\n", r.Pipeline, r.PollErrors)
			}
		}
	}
	b.WriteString(marginalCost(results))
	return b.String()
}

// marginalCost prints what each pipeline's footprint grows by per node
// between the smallest and the largest fleet: the per-node cost without
// the fixed cost of the processes.
func marginalCost(results []phaseResult) string {
	type span struct{ small, large *phaseResult }
	spans := map[string]*span{}
	var order []string
	for i := range results {
		r := &results[i]
		s := spans[r.Pipeline]
		if s == nil {
			s = &span{r, r}
			spans[r.Pipeline] = s
			order = append(order, r.Pipeline)
		}
		if r.Nodes < s.small.Nodes {
			s.small = r
		}
		if r.Nodes > s.large.Nodes {
			s.large = r
		}
	}
	var b strings.Builder
	for _, name := range order {
		s := spans[name]
		dn := float64(s.large.Nodes - s.small.Nodes)
		if dn <= 0 {
			continue
		}
		if b.Len() == 0 {
			b.WriteString("\n## Per node, marginal (largest minus smallest fleet)\n\n| pipeline | fleets | RSS per node | anonymous per node | CPU per node | target (ours) |\n| --- | --- | --- | --- | --- | --- |\n")
		}
		rss := (s.large.Footprint.RSSMiB - s.small.Footprint.RSSMiB) / dn
		anon := (s.large.Footprint.AnonMiB - s.small.Footprint.AnonMiB) / dn
		cpu := (s.large.Footprint.Millicores - s.small.Footprint.Millicores) / dn
		target := "—"
		if name == "ours" {
			target = fmt.Sprintf("≤ 0.5 MiB: %s; ≤ 0.5 m: %s", verdict(rss <= 0.5), verdict(cpu <= 0.5))
		}
		fmt.Fprintf(&b, "| %s | %d → %d nodes | %.3f MiB | %.3f MiB | %.3f millicores | %s |\n", name, s.small.Nodes, s.large.Nodes, rss, anon, cpu, target)
	}
	return b.String()
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func fmtDuration(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.0f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func fmtSummary(s summary) string {
	if s.N == 0 {
		return fmt.Sprintf("none of %d", s.Of)
	}
	out := fmtDuration(s.Median) + " / " + fmtDuration(s.Max)
	if s.N < s.Of {
		out += fmt.Sprintf(" (%d of %d; the rest not by the deadline)", s.N, s.Of)
	}
	return out
}

func fmtLatency(l latency) string {
	if l.Unanswered != "" {
		return "no complete answer"
	}
	out := fmtDuration(l.P50) + " / " + fmtDuration(l.P99)
	if l.Failed > 0 {
		out += fmt.Sprintf(" (%d of %d failed or timed out at %v)", l.Failed, l.Sent, queryTimeout)
	}
	return out
}

func ratio(seed, ours time.Duration) string {
	if ours <= 0 || seed <= 0 {
		return "—"
	}
	return fmtRatio(float64(seed) / float64(ours))
}

func fmtRatio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) || r <= 0 {
		return "—"
	}
	if r >= 10 {
		return fmt.Sprintf("%.0f×", r)
	}
	return fmt.Sprintf("%.1f×", r)
}
