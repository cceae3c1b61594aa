//go:build e2e && benchcompare

package bench

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	listersv1 "k8s.io/client-go/listers/core/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// Environment variables of TestSoak (hack/bench-compare.sh soak).
const (
	// envSoakNodes is the fleet's node count (default 1000).
	envSoakNodes = "BENCH_SOAK_NODES"
	// envSoakDuration is how long the soak is measured, after its
	// warm-up (default 30m).
	envSoakDuration = "BENCH_SOAK_DURATION"
	// envSoakChurn is how many pods per second are replaced (one deleted,
	// its Deployment creating a new one) in each of the two groups: the
	// fleet's and the real agent's (default 1).
	envSoakChurn = "BENCH_SOAK_CHURN"
	// envSoakSample is the sampling period (default 1m).
	envSoakSample = "BENCH_SOAK_SAMPLE"
)

const (
	// soakAgentSlices time-slices each of the real agent's 8 GPUs, so that
	// it holds soakAgentPods pods and each lives about a minute at the
	// default churn.
	soakAgentSlices = 8
	soakAgentPods   = 60
	// soakSettled is how old a pod must be (how long ago a deleted one
	// must have gone) before the API check requires its value (its
	// absence): the pod faker, the kubelet's answer, a scrape interval and
	// the informers take a few seconds; this leaves room for a loaded
	// machine. A check that fails is retried soakCheckTries times,
	// soakCheckRetry apart, before it counts as failed.
	soakSettled    = 30 * time.Second
	soakCheckTries = 3
	soakCheckRetry = 10 * time.Second
	// soakDeletedKept is how long a deleted pod's name is remembered.
	soakDeletedKept = 10 * time.Minute
)

// soakProcs are the measured processes, in the report's order.
var soakProcs = []string{"aggregator", "agent", "fleetsim"}

// procSample is one process's figures at one sample.
type procSample struct {
	// AnonMiB is RssAnon (heap, stacks, runtime; not the mapped binary).
	AnonMiB float64
	// HeapMiB is the Go heap in use (go_memstats_heap_inuse_bytes): it
	// swings up to twice the live heap with the GC cycle.
	HeapMiB optional
	// GoalMiB is the Go heap goal (go_memstats_next_gc_bytes): set at
	// each GC from the heap marked live, so it follows the live heap
	// whatever the sample's phase in the GC cycle.
	GoalMiB    optional
	Goroutines optional
	FDs        float64
}

// soakSample is one sample of the soak.
type soakSample struct {
	// At is the time since the measurement started.
	At    time.Duration
	Load  optional
	Procs map[string]procSample
	// Replaced is the number of pods replaced so far, per group.
	Replaced map[string]int
	// API is, per group, "ok" or what the last try of the check found.
	API map[string]string
	// Items is, per group, how many values the last try returned.
	Items map[string]int
}

// soakVerdict is one process's figure under the flatness rule.
type soakVerdict struct {
	Proc, Figure string
	flatStats
}

// soakResult is the whole soak's record.
type soakResult struct {
	Nodes, FleetPods, AgentPods int
	Churn                       float64
	Duration, Warmup, Sample    time.Duration
	Samples                     []soakSample
	Verdicts                    []soakVerdict
	APIFailures                 int
	DeleteErrors                int
	Rounds, ScrapeErrors        float64
	Skipped                     float64
	Load                        [2]optional
}

// TestSoak runs our aggregator at its defaults against a fleet of
// simulated agents (BENCH_SOAK_NODES nodes × 8 GPUs) and one real agent
// process (gpu-metrics-server agent --backend=sim, its pods from an
// in-process fake kubelet) while pods churn: every second (BENCH_SOAK_CHURN)
// the oldest pod of each group is deleted in the API server and its
// Deployment creates a new one (new name, new UID), which the pod faker
// hands the freed GPU, publishing it on the node's kubelet. Every sample
// period it records each process's memory, goroutines and open fds, and
// checks that the custom metrics API serves the current pods and none of
// the deleted ones. It fails on a figure that grows (flatness in flat_test.go and
// in docs/benchmarks.md) or an API check that keeps failing; nothing about
// speed is asserted.
func TestSoak(t *testing.T) {
	nodes := soakEnv(t, envSoakNodes, 1000, 1, 20000, strconv.Atoi)
	duration := soakEnv(t, envSoakDuration, 30*time.Minute, time.Minute, 24*time.Hour, time.ParseDuration)
	sample := soakEnv(t, envSoakSample, time.Minute, 5*time.Second, time.Hour, time.ParseDuration)
	// Pods replaced per second in each group.
	churn := soakEnv(t, envSoakChurn, 1.0, 0.01, 50, parseFloat)
	if duration < 3*sample {
		t.Fatalf("%s=%v is under three samples of %v: the rule compares thirds", envSoakDuration, duration, sample)
	}
	warmup := min(2*time.Minute, duration/6)
	res := soakResult{Nodes: nodes, Churn: churn, Duration: duration, Warmup: warmup, Sample: sample, AgentPods: soakAgentPods}
	res.FleetPods = min(bigGroup, nodes*gpusPerNode/2)

	// The real agent, its fake kubelet and pod faker, and its pods.
	agentNs := cluster.NewNamespace(t, "soak-agent")
	gms := framework.StartGMS(t, cluster, agentNs, framework.GMSOptions{
		GPUsPerNode: []int{8}, FakeKubelets: true, AgentsOnly: true, TimeSlices: soakAgentSlices,
	})
	agent := gms.Nodes[0]
	agentSel := createGroup(t, agentNs, "churn", "churn", int32(res.AgentPods))
	waitAssigned(t, gms.Faker, agentNs, agentSel, res.AgentPods, 3*time.Minute)

	// The fleet and the aggregator scraping it and the agent.
	ns := cluster.NewNamespace(t, "soak")
	sel := createGroup(t, ns, "churn", "churn", int32(res.FleetPods))
	dir := framework.TempDir(t, "gms-bench-")
	fleet, p := serveFleet(t, dir, ns, sel, nodes, res.FleetPods, []string{agent.URL + "/metrics"})
	client, err := apiClient()
	if err != nil {
		t.Fatal(err)
	}
	framework.WaitFor(t, 2*time.Minute, fmt.Sprintf("the aggregator to serve the agent's %d pods", res.AgentPods), func(ctx context.Context) (bool, string, error) {
		items, err := getValues(ctx, client, selectorURL(agentNs, agentSel))
		if err != nil {
			return false, err.Error(), nil
		}
		return len(items) == res.AgentPods, fmt.Sprintf("%d items", len(items)), nil
	})

	type watched struct {
		proc       *framework.Process
		metricsURL string
		client     *http.Client
	}
	procs := map[string]watched{
		"aggregator": {p.procs[0], p.metricsURL, cluster.HTTPClient()},
		"agent":      {agent.Agent, agent.URL + "/metrics", framework.PlainHTTP},
		// fleetsim appends its own Go runtime's metrics to every node's
		// exposition.
		"fleetsim": {fleet.proc, fleet.nodes[0].URL, framework.PlainHTTP},
	}
	groups := map[string]*churner{
		"fleet": startChurner(t, ns, sel),
		"agent": startChurner(t, agentNs, agentSel),
	}
	groupNames := []string{"fleet", "agent"}

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Duration(float64(time.Second) / churn))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for _, name := range groupNames {
				groups[name].step(ctx)
			}
		}
	})
	t.Cleanup(func() {
		stop()
		wg.Wait()
	})

	t.Logf("soak: churning %v pods/s per group; warm-up %v, then %v sampled every %v", churn, warmup, duration, sample)
	time.Sleep(warmup)
	before, err := readAggregatorStats(t.Context(), p.metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	res.Load[0] = optional(loadAverage())
	start := time.Now()
	for i := 0; ; i++ {
		next := start.Add(time.Duration(i) * sample)
		if next.Sub(start) > duration {
			break
		}
		time.Sleep(time.Until(next))
		s := soakSample{At: time.Since(start).Round(time.Second), Load: optional(loadAverage()),
			Procs: map[string]procSample{}, Replaced: map[string]int{}, API: map[string]string{}, Items: map[string]int{}}
		for _, name := range soakProcs {
			w := procs[name]
			ps, err := readProcSample(t.Context(), w.proc, w.client, w.metricsURL)
			if err != nil {
				t.Fatalf("sampling the %s: %v", name, err)
			}
			s.Procs[name] = ps
		}
		for _, name := range groupNames {
			g := groups[name]
			s.Replaced[name] = g.replaced()
			for try := 1; ; try++ {
				items, problem, err := g.check(t.Context(), client)
				if err != nil {
					problem = err.Error()
				}
				s.Items[name] = items
				if problem == "" {
					s.API[name] = "ok"
					break
				}
				s.API[name] = problem
				if try == soakCheckTries {
					res.APIFailures++
					t.Errorf("at %v, %s group: the custom metrics API %s (after %d tries)", s.At, name, problem, try)
					break
				}
				time.Sleep(soakCheckRetry)
			}
		}
		t.Logf("soak sample %v: %+v", s.At, s)
		res.Samples = append(res.Samples, s)
	}
	stop()
	wg.Wait()
	res.Load[1] = optional(loadAverage())
	after, err := readAggregatorStats(t.Context(), p.metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	res.Rounds = after.rounds - before.rounds
	res.ScrapeErrors = after.errors - before.errors
	res.Skipped = after.skipped - before.skipped
	for _, name := range groupNames {
		res.DeleteErrors += groups[name].errors()
	}
	res.Verdicts = soakVerdicts(res.Samples)
	report := renderSoak(res)
	fmt.Print("\n" + report)
	writeResults(t, "soak", report, res)
	for _, v := range res.Verdicts {
		if !v.Flat {
			t.Errorf("%s %s grew: %s %.1f in the first third, %.1f in the last (limit %.1f)", v.Proc, v.Figure, v.Stat, v.First, v.Last, v.Limit)
		}
	}
	if res.DeleteErrors > 0 {
		t.Errorf("%d pod deletions failed (see the log)", res.DeleteErrors)
	}
}

// soakEnv reads a setting in [lo, hi] with parse, def when unset.
func soakEnv[T int | float64 | time.Duration](t *testing.T, name string, def, lo, hi T, parse func(string) (T, error)) T {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil || x < lo || x > hi {
		t.Fatalf("%s=%q: want a value in [%v, %v]", name, v, lo, hi)
	}
	return x
}

func parseFloat(s string) (float64, error) { return strconv.ParseFloat(s, 64) }

// readProcSample reads a process's memory and fds from /proc and its Go
// runtime's figures from its /metrics.
func readProcSample(ctx context.Context, p *framework.Process, client *http.Client, metricsURL string) (procSample, error) {
	ps := procSample{HeapMiB: optional(math.NaN()), GoalMiB: optional(math.NaN()), Goroutines: optional(math.NaN())}
	st, err := readProcStat(p.Pid())
	if err != nil {
		return ps, err
	}
	ps.AnonMiB = float64(st.anonKiB) / 1024
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.Pid()))
	if err != nil {
		return ps, err
	}
	ps.FDs = float64(len(fds))
	ctx, cancel := context.WithTimeout(ctx, statsTimeout)
	defer cancel()
	families, err := framework.ScrapeFamiliesAs(ctx, client, "", metricsURL)
	if err != nil {
		return ps, err
	}
	for name, dst := range map[string]*optional{
		"go_memstats_heap_inuse_bytes": &ps.HeapMiB, "go_memstats_next_gc_bytes": &ps.GoalMiB, "go_goroutines": &ps.Goroutines,
	} {
		if m := families[name].GetMetric(); len(m) == 1 {
			*dst = optional(m[0].GetGauge().GetValue())
			if name != "go_goroutines" {
				*dst /= 1 << 20
			}
		}
	}
	return ps, nil
}

// churner replaces the pods of one group: each step deletes the oldest
// live pod (its Deployment creates a new one).
type churner struct {
	t         *testing.T
	namespace string
	selector  string
	matches   labels.Selector
	pods      listersv1.PodLister

	mu      sync.Mutex
	deleted map[string]time.Time // pod name → when it was deleted
	count   int
	failed  int
}

// startChurner watches the group's pods; it stops at the end of the test.
func startChurner(t *testing.T, namespace, selector string) *churner {
	t.Helper()
	factory := informers.NewSharedInformerFactoryWithOptions(cluster.Client, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	inf := factory.Core().V1().Pods()
	matches, err := labels.Parse(selector)
	if err != nil {
		t.Fatal(err)
	}
	c := &churner{t: t, namespace: namespace, selector: selector, matches: matches, pods: inf.Lister(), deleted: map[string]time.Time{}}
	informer := inf.Informer()
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	t.Cleanup(func() {
		cancel()
		factory.Shutdown()
	})
	framework.WaitFor(t, time.Minute, "the churner's pod informer to sync", func(context.Context) (bool, string, error) {
		return informer.HasSynced(), "not synced", nil
	})
	return c
}

// step deletes the group's oldest live pod not deleted yet.
func (c *churner) step(ctx context.Context) {
	pods, err := c.pods.List(c.matches)
	if err != nil {
		c.t.Logf("churn %s: listing pods: %v", c.namespace, err)
		return
	}
	now := time.Now()
	c.mu.Lock()
	for name, at := range c.deleted {
		if now.Sub(at) > soakDeletedKept {
			delete(c.deleted, name)
		}
	}
	pods = slices.DeleteFunc(pods, func(p *corev1.Pod) bool {
		_, gone := c.deleted[p.Name]
		return gone || p.DeletionTimestamp != nil
	})
	c.mu.Unlock()
	if len(pods) == 0 {
		return
	}
	victim := slices.MinFunc(pods, func(a, b *corev1.Pod) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	err = cluster.Client.CoreV1().Pods(c.namespace).Delete(ctx, victim.Name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64(0)),
		Preconditions:      &metav1.Preconditions{UID: &victim.UID},
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			c.failed++
			c.t.Logf("churn %s: deleting %s: %v", c.namespace, victim.Name, err)
		}
		return
	}
	c.deleted[victim.Name] = time.Now()
	c.count++
}

// replaced returns how many pods were deleted.
func (c *churner) replaced() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

// errors returns how many deletions failed.
func (c *churner) errors() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

// check runs the HPA's selector query for the group and compares its
// items with the pods the API server lists after it: every item must name
// a live pod or one deleted less than soakSettled before the query, and
// every live pod older than soakSettled must have an item. It returns the
// number of items and the first problem found ("" when none).
func (c *churner) check(ctx context.Context, client *http.Client) (int, string, error) {
	asked := time.Now()
	items, err := getValues(ctx, client, selectorURL(c.namespace, c.selector))
	if err != nil {
		return 0, "", fmt.Errorf("query: %w", err)
	}
	list, err := cluster.Client.CoreV1().Pods(c.namespace).List(ctx, metav1.ListOptions{LabelSelector: c.selector})
	if err != nil {
		return len(items), "", fmt.Errorf("listing pods: %w", err)
	}
	live := map[string]time.Time{}
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			live[p.Name] = p.CreationTimestamp.Time
		}
	}
	served := map[string]bool{}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, it := range items {
		name := it.DescribedObject.Name
		served[name] = true
		if _, ok := live[name]; ok {
			continue
		}
		at, ok := c.deleted[name]
		switch {
		case !ok:
			return len(items), fmt.Sprintf("served a value for pod %s, which is neither live nor deleted by the churn", name), nil
		case asked.Sub(at) >= soakSettled:
			return len(items), fmt.Sprintf("served a value for pod %s, deleted %v before the query", name, asked.Sub(at).Round(time.Second)), nil
		}
	}
	for _, name := range slices.Sorted(maps.Keys(live)) {
		if age := asked.Sub(live[name]); age >= soakSettled && !served[name] {
			return len(items), fmt.Sprintf("served no value for pod %s, created %v before the query", name, age.Round(time.Second)), nil
		}
	}
	return len(items), "", nil
}

// soakVerdicts applies the flatness rule to every process and figure.
func soakVerdicts(samples []soakSample) []soakVerdict {
	var out []soakVerdict
	if len(samples) < 3 {
		return out
	}
	type figure struct {
		name  string
		count bool // a count (median rule) or memory (mean rule)
		get   func(procSample) float64
	}
	figures := []figure{
		{"anon RSS, MiB", false, func(p procSample) float64 { return p.AnonMiB }},
		{"Go heap goal, MiB", false, func(p procSample) float64 { return float64(p.GoalMiB) }},
		{"goroutines", true, func(p procSample) float64 { return float64(p.Goroutines) }},
		{"open fds", true, func(p procSample) float64 { return p.FDs }},
	}
	for _, proc := range soakProcs {
		for _, f := range figures {
			var at []time.Duration
			var ys []float64
			for _, s := range samples {
				if v := f.get(s.Procs[proc]); !math.IsNaN(v) {
					at, ys = append(at, s.At), append(ys, v)
				}
			}
			st, ok := flatness(at, ys, f.count)
			if !ok {
				continue
			}
			out = append(out, soakVerdict{Proc: proc, Figure: f.name, flatStats: st})
		}
	}
	return out
}

// renderSoak prints the soak's report.
func renderSoak(r soakResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Soak: %d simulated nodes × %d GPUs + one real agent (%d pods), %v pod(s)/s replaced per group, %v after a %v warm-up\n\n",
		r.Nodes, gpusPerNode, r.AgentPods, r.Churn, r.Duration, r.Warmup)
	fmt.Fprintf(&b, "Fleet group: %d pods; pods replaced over the soak: fleet %d, agent %d; failed deletions: %d. Aggregator at its defaults (scrape %v, window %v): %.0f rounds, %.0f scrape errors, %.0f skipped. API checks failed: %d of %d. Load average at start / end: %.1f / %.1f.\n\n",
		r.FleetPods, lastReplaced(r, "fleet"), lastReplaced(r, "agent"), r.DeleteErrors, defaultScrapeInterval, defaultWindow,
		r.Rounds, r.ScrapeErrors, r.Skipped, r.APIFailures, 2*len(r.Samples), r.Load[0], r.Load[1])
	fmt.Fprintf(&b, "Rule: goroutines and open fds flat when the last third's median ≤ the first third's + max(%d, %.0f %%); anon RSS and Go heap goal flat when the last third's mean ≤ the first third's × %.2f + %d MiB.\n\n",
		flatCountSlack, 100*flatCountShare, 1+flatMemShare, flatMemSlackMiB)
	b.WriteString("| process | figure | start | end | min / max | first third | last third | limit | slope per hour | flat |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, v := range r.Verdicts {
		fmt.Fprintf(&b, "| %s | %s | %.1f | %.1f | %.1f / %.1f | %s %.1f | %s %.1f | %.1f | %+.1f | %s |\n",
			v.Proc, v.Figure, v.Start, v.End, v.Min, v.Max, v.Stat, v.First, v.Stat, v.Last, v.Limit, v.SlopePerHour, verdict(v.Flat))
	}
	b.WriteString("\nPer sample: anon RSS MiB / Go heap in use MiB / heap goal MiB / goroutines / open fds\n\n")
	b.WriteString("| at | aggregator | agent | fleetsim | replaced (fleet / agent) | API (fleet / agent, items) | load |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, s := range r.Samples {
		cells := make([]string, 0, len(soakProcs))
		for _, name := range soakProcs {
			p := s.Procs[name]
			cells = append(cells, fmt.Sprintf("%.1f / %.1f / %.1f / %.0f / %.0f", p.AnonMiB, p.HeapMiB, p.GoalMiB, p.Goroutines, p.FDs))
		}
		fmt.Fprintf(&b, "| %v | %s | %d / %d | %s %d / %s %d | %.1f |\n", s.At, strings.Join(cells, " | "),
			s.Replaced["fleet"], s.Replaced["agent"], s.API["fleet"], s.Items["fleet"], s.API["agent"], s.Items["agent"], s.Load)
	}
	return b.String()
}

// lastReplaced is the group's replaced count at the last sample.
func lastReplaced(r soakResult, group string) int {
	if len(r.Samples) == 0 {
		return 0
	}
	return r.Samples[len(r.Samples)-1].Replaced[group]
}
