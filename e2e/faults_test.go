//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

// The faults of issue 16, each with an HPA running: what the API serves
// and what the HPA does while the fault lasts and after.

// TestLostGPU: one GPU of node A falls off the bus (the simulation's
// lost=true, as NVML's ERROR_GPU_IS_LOST): the agent drops every series of
// that device and counts it lost; the pod holding it gets no value on the
// API (not a wrong one), while the other GPU of node A and node B's keep
// theirs, and the HPA, measuring the pods it still has values for, makes
// no decision on the missing one.
func TestLostGPU(t *testing.T) {
	ns := cluster.NewNamespace(t, "lostgpu")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{2, 1}})
	const name, selector = "lost", "app=lost"
	cluster.CreateDeployment(t, framework.GPUDeployment(ns, name, 3))
	pods := cluster.WaitPods(t, ns, selector, 3)
	// Three pods on three GPUs: two on node A (index 0), one on node B.
	var onA []string
	var onB string
	slots := map[string]framework.GPUSlot{}
	for _, p := range pods {
		s := env.GPUOf(p)
		slots[p] = s
		if s.Node == 0 {
			onA = append(onA, p)
		} else {
			onB = p
		}
	}
	if len(onA) != 2 || onB == "" {
		t.Fatalf("pods on node A %v, on node B %q: want two and one", onA, onB)
	}
	lost, keptA := onA[0], onA[1]
	// The average is 50 with or without the lost pod's 50: the HPA has no
	// reason to scale either way, unless it is fed a wrong value.
	want := map[string]float64{lost: 50, keptA: 40, onB: 60}
	for p, v := range want {
		env.SetPodUtilization(p, int(v))
	}
	waitPodValues(t, ns, selector, func(v map[string]float64) bool { return maps.Equal(v, want) })
	replicas := cluster.RecordReplicas(t, ns, name)
	cluster.CreateHPA(t, framework.GPUHPA(ns, name, 1, 6, autoscalingv2.MetricTarget{
		Type:         autoscalingv2.AverageValueMetricType,
		AverageValue: new(resource.MustParse("50")),
	}))
	cluster.WaitHPAMetric(t, ns, name, 50)

	lostUUID := slots[lost].UUID
	at := env.LoseGPU(0, slots[lost].Index)
	delete(want, lost)
	gone := waitPodValues(t, ns, selector, func(v map[string]float64) bool { return maps.Equal(v, want) })
	t.Logf("measured: GPU lost: its pod's value gone from the API after %v (stale-after %v)",
		gone.Sub(at).Round(100*time.Millisecond), framework.StaleAfter)

	// Node A's agent: nothing of the lost device, the loss counted once,
	// the other GPU still attributed to its pod; node B's lost nothing.
	families, err := framework.ScrapeFamilies(t.Context(), env.Nodes[0].URL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for fam, mf := range families {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "UUID" && l.GetValue() == lostUUID {
					t.Errorf("node A still serves %s of the lost GPU %s", fam, lostUUID)
				}
			}
		}
	}
	if got := counterOf(families, "gpu_metrics_server_devices_lost_total"); got != 1 {
		t.Errorf("node A: devices_lost_total %v, want 1", got)
	}
	kept := false
	for _, s := range framework.GaugeSeries(families, framework.GPUUtilSeries) {
		if s.Labels["UUID"] == slots[keptA].UUID {
			kept = s.Labels["pod"] == keptA && s.Value == 40
		}
	}
	if !kept {
		t.Errorf("node A's other GPU %s is not served attributed to %s at 40: %v", slots[keptA].UUID, keptA, framework.GaugeSeries(families, framework.GPUUtilSeries))
	}
	familiesB, err := framework.ScrapeFamilies(t.Context(), env.Nodes[1].URL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if got := counterOf(familiesB, "gpu_metrics_server_devices_lost_total"); got != 0 {
		t.Errorf("node B: devices_lost_total %v, want 0", got)
	}
	if n := len(framework.GaugeSeries(familiesB, framework.GPUUtilSeries)); n != 1 {
		t.Errorf("node B serves %d GPUs, want 1", n)
	}

	// The HPA still measures 50 (40 and 60) and keeps 3 replicas.
	cluster.WaitHPAMetric(t, ns, name, 50)
	if v, err := cluster.PodMetrics(t.Context(), "v1beta1", ns, selector, framework.MetricName); err != nil || !maps.Equal(v, want) {
		t.Errorf("v1beta1 after the loss: %v (%v), want %v", v, err, want)
	}
	if got := replicas.Values(); !slices.Equal(got, []int32{3}) {
		t.Errorf("replicas went %v after a GPU was lost, want [3]", got)
	}
}

// TestAgentRestart: the agent of the pod's node stops (SIGTERM) and starts
// again on the same node, with the same pods and its GPUs still at the
// same load. Every read of the API from before the stop until the
// restarted agent's samples are served gives the pod's right value or none
// (never a wrong one), its timestamps never go back (no duplicate or older
// sample enters a window), and the HPA makes no decision. The restarted
// simulation's counters (energy) start again from zero; the aggregator
// reads gauges only (exposition's TestTable), so the reset reaches no
// served value.
func TestAgentRestart(t *testing.T) {
	ns := cluster.NewNamespace(t, "agentrestart")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{1}})
	const name, selector, load = "steady", "app=steady", 50
	env.SetAllUtilization(load)
	pod, replicas := scaledPod(t, env, name, selector, load, load)

	agent := env.Nodes[0].URL + "/metrics"
	energy := func() float64 {
		t.Helper()
		var e float64
		framework.WaitFor(t, 30*time.Second, "the agent's energy counter", func(ctx context.Context) (bool, string, error) {
			families, err := framework.ScrapeFamilies(ctx, agent)
			if err != nil {
				return false, err.Error(), nil
			}
			m := families["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"].GetMetric()
			if len(m) != 1 || m[0].GetCounter() == nil {
				return false, fmt.Sprintf("%d series, %v", len(m), m), nil
			}
			e = m[0].GetCounter().GetValue()
			return true, "", nil
		})
		return e
	}
	before := energy()

	reads := observePod(t, ns, selector)
	stopped := time.Now()
	env.RestartAgent(0, "--sim-utilization="+strconv.Itoa(load))
	restarted := time.Now()
	// Served again once a sample of the new agent is: a timestamp after
	// the stop (whole seconds: at or after the next second).
	back := framework.WaitFor(t, 30*time.Second, "a sample of the restarted agent on the API", func(ctx context.Context) (bool, string, error) {
		v, err := cluster.PodMetricSamples(ctx, "v1beta2", ns, selector, framework.MetricName)
		if err != nil {
			return false, err.Error(), nil
		}
		s, ok := v[pod]
		return ok && s.Timestamp.After(stopped), fmt.Sprint(v), nil
	})
	// And a few reads more of the restarted agent's values.
	reads.waitMore(t, 8)
	seen := reads.stop()

	var last time.Time
	gaps := 0
	for i, r := range seen {
		if r.err != nil {
			t.Errorf("read %d: %v", i, r.err)
			continue
		}
		s, ok := r.values[pod]
		if !ok {
			gaps++
			continue
		}
		if s.Value != load {
			t.Errorf("read %d at %v: %v, want %d or no value", i, r.at.Format(time.RFC3339Nano), s.Value, load)
		}
		if s.Timestamp.Before(last) {
			t.Errorf("read %d: timestamp %v before the previous read's %v", i, s.Timestamp, last)
		}
		last = s.Timestamp
	}
	t.Logf("measured: agent restart: stop to serving %v, to its sample on the API %v; %d of %d reads without a value, none wrong; energy counter %v mJ before, %v mJ after (a reset; the aggregator reads gauges only)",
		restarted.Sub(stopped).Round(100*time.Millisecond), back.Sub(stopped).Round(100*time.Millisecond), gaps, len(seen), before, energy())

	cluster.WaitHPAMetric(t, ns, name, load)
	if got := replicas.Values(); !slices.Equal(got, []int32{1}) {
		t.Errorf("replicas went %v across the agent's restart, want [1]", got)
	}
	// The aggregator's memory with one healthy target, to set beside
	// TestHostileScrapeTargets'.
	peak, rss := procMemory(t, env.Aggregator.Process.Pid())
	t.Logf("measured: aggregator RSS %d MiB, peak %d MiB (one agent)", rss>>20, peak>>20)
}

// podRead is one read of the custom metrics API.
type podRead struct {
	at     time.Time
	values map[string]framework.MetricSample
	err    error
}

// podObserver reads the pods' values (v1beta2) every poll interval in the
// background.
type podObserver struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	reads  []podRead
}

// observePod starts reading the gpu_utilization of the pods matching
// selector until stop.
func observePod(t *testing.T, namespace, selector string) *podObserver {
	ctx, cancel := context.WithCancel(t.Context())
	o := &podObserver{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(o.done)
		tick := time.NewTicker(framework.PollInterval)
		defer tick.Stop()
		for {
			v, err := cluster.PodMetricSamples(ctx, "v1beta2", namespace, selector, framework.MetricName)
			if ctx.Err() != nil {
				return
			}
			o.mu.Lock()
			o.reads = append(o.reads, podRead{at: time.Now(), values: v, err: err})
			o.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { o.stop() })
	return o
}

// waitMore waits until n more reads are recorded.
func (o *podObserver) waitMore(t *testing.T, n int) {
	t.Helper()
	o.mu.Lock()
	want := len(o.reads) + n
	o.mu.Unlock()
	framework.WaitFor(t, 60*time.Second, fmt.Sprintf("%d more reads of the API", n), func(context.Context) (bool, string, error) {
		o.mu.Lock()
		defer o.mu.Unlock()
		return len(o.reads) >= want, fmt.Sprintf("%d reads", len(o.reads)), nil
	})
}

// stop ends the reads and returns them.
func (o *podObserver) stop() []podRead {
	o.cancel()
	<-o.done
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.reads)
}

// scaledPod creates the Deployment name of one GPU pod under an HPA
// (AverageValue target, 1–2 replicas), waits until the HPA measures
// measured, and returns the pod and the Deployment's replica recorder.
func scaledPod(t *testing.T, env *framework.GMS, name, selector string, target int, measured float64) (string, *framework.ReplicaRecorder) {
	t.Helper()
	ns := env.Namespace
	cluster.CreateDeployment(t, framework.GPUDeployment(ns, name, 1))
	pod := cluster.WaitPods(t, ns, selector, 1)[0]
	env.GPUOf(pod)
	replicas := cluster.RecordReplicas(t, ns, name)
	cluster.CreateHPA(t, framework.GPUHPA(ns, name, 1, 2, autoscalingv2.MetricTarget{
		Type:         autoscalingv2.AverageValueMetricType,
		AverageValue: new(resource.MustParse(strconv.Itoa(target))),
	}))
	cluster.WaitHPAMetric(t, ns, name, measured)
	return pod, replicas
}

// counterOf sums the counter name's series.
func counterOf(families map[string]*dto.MetricFamily, name string) float64 {
	var v float64
	for _, m := range families[name].GetMetric() {
		v += m.GetCounter().GetValue()
	}
	return v
}

// TestAPIServerRestart: kube-apiserver stops and starts again on the same
// etcd and port while the aggregator runs. The aggregator is not
// restarted: its informers resync, the API (through the restarted
// kube-apiserver's aggregation layer) serves the pod's value again, and
// the HPA keeps working: a load step after the restart scales the
// Deployment 1 → 2, and the pod created then gets its value.
func TestAPIServerRestart(t *testing.T) {
	ns := cluster.NewNamespace(t, "apirestart")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{2}})
	const name, selector = "survivor", "app=survivor"
	env.SetAllUtilization(30)
	first, replicas := scaledPod(t, env, name, selector, 50, 30)
	aggregator := env.Aggregator.Process

	stopped := time.Now()
	var down time.Duration
	cluster.RestartAPIServer(t, func() {
		down = time.Since(stopped)
		if exited, err := aggregator.Exited(); exited {
			t.Errorf("the aggregator exited when kube-apiserver stopped: %v", err)
		}
	})
	ready := time.Now()
	back := waitPodValues(t, ns, selector, func(v map[string]float64) bool { return v[first] == 30 })
	t.Logf("measured: kube-apiserver restart: stopped in %v, ready again after %v, the pod's value served again after %v",
		down.Round(100*time.Millisecond), ready.Sub(stopped).Round(100*time.Millisecond), back.Sub(stopped).Round(100*time.Millisecond))

	// The HPA keeps working on the restarted control plane.
	step := env.SetAllUtilization(100)
	scaled := waitReplicas(t, ns, name, func(n int32) bool { return n == 2 })
	pods := cluster.WaitPods(t, ns, selector, 2)
	second := pods[0]
	if second == first {
		second = pods[1]
	}
	env.GPUOf(second)
	waitPodValues(t, ns, selector, func(v map[string]float64) bool { return v[first] == 100 && v[second] == 100 })
	cluster.WaitHPAMetric(t, ns, name, 100)
	t.Logf("measured: after the kube-apiserver restart, utilization 30→100: scaled 1 → 2 after %v", scaled.Sub(step).Round(100*time.Millisecond))
	if got := replicas.Values(); !slices.Equal(got, []int32{1, 2}) {
		t.Errorf("replicas went %v, want [1 2]", got)
	}
	if exited, err := aggregator.Exited(); exited {
		t.Errorf("the aggregator exited: %v", err)
	}
}

// TestHostileScrapeTargets: beside the node's agent, the aggregator is
// given hostile targets, the way it is given the agents (--agent-urls): an
// endless body, 1 GB bodies (declared and chunked), garbage, a million
// series and one byte per second, each served from this test. Each ends as
// scrape errors of its kind, the agent's scrapes never fail, the HPA
// scales on its value, and the aggregator's peak memory stays under the
// chart's limit (512 MiB): a scrape holds at most --scrape-max-body-bytes
// (4 MiB) for at most --scrape-timeout.
func TestHostileScrapeTargets(t *testing.T) {
	hostile := map[string]struct {
		handler http.HandlerFunc
		reason  string
	}{
		"endless":         {testutil.HostileBody(-1, false), "body_too_large"},
		"gigabyte":        {testutil.HostileBody(1<<30, true), "body_too_large"},
		"gigabyte-chunks": {testutil.HostileBody(1<<30, false), "body_too_large"},
		"garbage": {func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write(bytes.Repeat([]byte{0xff, 0xfe, '{', '\n'}, 1<<14))
		}, "parse"},
		"million-series": {func(w http.ResponseWriter, r *http.Request) {
			for i := range 1_000_000 {
				if _, err := fmt.Fprintf(w, "DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-%d\",pod=\"p%d\",namespace=\"x\"} 1\n", i, i); err != nil || r.Context().Err() != nil {
					return
				}
			}
		}, "body_too_large"},
		"byte-per-second": {testutil.OneBytePerSecond, "timeout"},
	}
	urls := map[string]string{} // URL → name
	var list []string
	for name, h := range hostile {
		srv := httptest.NewServer(h.handler)
		t.Cleanup(srv.Close)
		u := srv.URL + "/" + name
		urls[u] = name
		list = append(list, u)
	}
	ns := cluster.NewNamespace(t, "hostile")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{
		GPUsPerNode:    []int{2},
		AggregatorArgs: []string{"--agent-urls=" + strings.Join(list, ",")},
	})
	agentTarget := env.Nodes[0].URL + "/metrics"
	const name, selector = "amid", "app=amid"
	env.SetAllUtilization(30)
	_, replicas := scaledPod(t, env, name, selector, 50, 30)

	// Every hostile target has failed, each of its own kind, at least
	// twice (so the slow one was cut off by the timeout more than once).
	var errs map[string]map[string]float64
	framework.WaitFor(t, 60*time.Second, "every hostile target to fail twice with its reason", func(ctx context.Context) (bool, string, error) {
		var err error
		errs, err = scrapeErrorReasons(t, env.Aggregator)
		if err != nil {
			return false, err.Error(), nil
		}
		for u, name := range urls {
			if errs[u][hostile[name].reason] < 2 {
				return false, fmt.Sprint(errs), nil
			}
		}
		return true, "", nil
	})
	step := env.SetAllUtilization(100)
	scaled := waitReplicas(t, ns, name, func(n int32) bool { return n == 2 })
	cluster.WaitHPAMetric(t, ns, name, 100)
	errs, err := scrapeErrorReasons(t, env.Aggregator)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs[agentTarget]) != 0 {
		t.Errorf("the agent's scrapes failed amid the hostile targets: %v", errs[agentTarget])
	}
	for u, name := range urls {
		for reason, n := range errs[u] {
			if reason != hostile[name].reason {
				t.Errorf("%s: %v errors of reason %s, want only %s", name, n, reason, hostile[name].reason)
			}
		}
	}
	if got := replicas.Values(); !slices.Equal(got, []int32{1, 2}) {
		t.Errorf("replicas went %v, want [1 2]", got)
	}
	peak, rss := procMemory(t, env.Aggregator.Process.Pid())
	t.Logf("measured: amid %d hostile targets: utilization 30→100 scaled 1 → 2 after %v; aggregator RSS %d MiB, peak %d MiB; errors %v",
		len(hostile), scaled.Sub(step).Round(100*time.Millisecond), rss>>20, peak>>20, errs)
	if peak > 512<<20 {
		t.Errorf("the aggregator's peak RSS %d MiB is over the chart's 512 MiB limit", peak>>20)
	}
}

// scrapeErrorReasons reads the aggregator's
// gpu_metrics_server_scrape_errors_total by target and reason.
func scrapeErrorReasons(t *testing.T, agg *framework.Aggregator) (map[string]map[string]float64, error) {
	code, body := agg.Get(t, cluster.HTTPClient(), "/metrics", nil)
	if code != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]float64{}
	for _, m := range mfs["gpu_metrics_server_scrape_errors_total"].GetMetric() {
		var target, reason string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "target":
				target = l.GetValue()
			case "reason":
				reason = l.GetValue()
			}
		}
		if out[target] == nil {
			out[target] = map[string]float64{}
		}
		out[target][reason] = m.GetCounter().GetValue()
	}
	return out, nil
}

// procMemory returns a process's peak and current resident memory, in
// bytes (VmHWM and VmRSS of /proc/<pid>/status).
func procMemory(t *testing.T, pid int) (peak, rss int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmHWM:":
			peak = n << 10
		case "VmRSS:":
			rss = n << 10
		}
	}
	if peak == 0 || rss == 0 {
		t.Fatalf("no VmHWM/VmRSS in /proc/%d/status", pid)
	}
	return peak, rss
}
