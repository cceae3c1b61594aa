//go:build e2e

package framework

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

const (
	// envBinary is the gpu-metrics-server binary under test.
	envBinary = "GMS_BIN"
	// Aggregator timing of the scenarios: scrape every second, average
	// over a short window, and drop a pod's value once its agent has not
	// answered for StaleAfter.
	ScrapeInterval = time.Second
	metricsWindow  = 2 * time.Second
	StaleAfter     = 3 * time.Second
	// GPUUtilSeries is the agent series that carries each GPU's index and
	// UUID.
	GPUUtilSeries = "DCGM_FI_DEV_GPU_UTIL"
	// maxArgBytes keeps each --agent-urls value under Linux's limit on one
	// argument (128 KiB); the flag is repeated instead.
	maxArgBytes = 100 << 10
)

// GMSBinary returns the absolute path of the project binary (GMS_BIN, or
// bin/gpu-metrics-server of the checkout), failing the test with a hint
// when it has not been built.
func GMSBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv(envBinary)
	if bin == "" {
		root, err := RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(root, "bin", "gpu-metrics-server")
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(abs); err != nil || fi.IsDir() {
		t.Fatalf("the gpu-metrics-server binary %s is missing (%v): build it with `make build` (hack/e2e.sh does) or set %s", abs, err, envBinary)
	}
	return abs
}

// GMSOptions says what StartGMS starts.
type GMSOptions struct {
	// GPUsPerNode has one entry per simulated GPU node: a fake kubelet and
	// an agent with that many simulated GPUs reading it.
	GPUsPerNode []int
	// TimeSlices time-slices every GPU into that many replicas, so that up
	// to that many pods share it (0: each GPU is held whole).
	TimeSlices int
	// AgentsOnly starts no aggregator and registers none.
	AgentsOnly bool
	// AggregatorArgs are further aggregator flags (e.g. --delegate-to).
	AggregatorArgs []string
	// Unregistered starts the aggregator but leaves its registration as
	// custom.metrics.k8s.io to the test.
	Unregistered bool
}

// GMS is gpu-metrics-server deployed for one test: agents with simulated
// GPUs, a pod faker that runs the test namespace's pods and gives each a
// GPU, and the aggregator registered as custom.metrics.k8s.io.
type GMS struct {
	t          testing.TB
	cp         *ControlPlane
	dir        string
	Namespace  string
	Nodes      []*GPUNode
	Faker      *PodFaker
	Aggregator *Aggregator // nil with AgentsOnly
}

// GPUNode is one simulated GPU node: a fake kubelet pod-resources socket
// and the agent that reads it.
type GPUNode struct {
	Name    string
	Kubelet *fakekubelet.Server
	Agent   *Process
	URL     string         // the agent's base URL
	GPUs    map[int]string // index → UUID, as the agent's /metrics reports them
}

// StartGMS starts the project's processes for one test: one agent per
// entry of opts.GPUsPerNode, each reading its own fake kubelet; a pod faker
// that runs the pods of namespace and gives each a free GPU slot (nodes in
// order, GPUs by index); and, unless opts.AgentsOnly, the aggregator
// scraping the agents, registered as the custom.metrics.k8s.io
// APIService (unless opts.Unregistered). Everything stops at the end of the test; on failure the
// tail of each component's log is printed.
func StartGMS(t testing.TB, cp *ControlPlane, namespace string, opts GMSOptions) *GMS {
	t.Helper()
	bin := GMSBinary(t)
	g := &GMS{t: t, cp: cp, dir: TempDir(t, "gms-e2e-env-"), Namespace: namespace}
	t.Cleanup(func() {
		if t.Failed() {
			g.dumpLogs()
		}
	})

	var slots []GPUSlot
	var kubelets []PodResourcesSetter
	for i, n := range opts.GPUsPerNode {
		node := g.startNode(bin, i, n)
		g.Nodes = append(g.Nodes, node)
		kubelets = append(kubelets, node.Kubelet)
		for _, idx := range slices.Sorted(maps.Keys(node.GPUs)) {
			if opts.TimeSlices == 0 {
				slots = append(slots, GPUSlot{Node: i, Index: idx, UUID: node.GPUs[idx]})
				continue
			}
			for r := range opts.TimeSlices {
				slots = append(slots, GPUSlot{Node: i, Index: idx, UUID: node.GPUs[idx], Replica: strconv.Itoa(r)})
			}
		}
	}
	g.Faker = StartPodFaker(t, cp.Client, namespace, kubelets, slots)
	if opts.AgentsOnly {
		return g
	}

	agentURLs := make([]string, 0, len(g.Nodes))
	for _, n := range g.Nodes {
		agentURLs = append(agentURLs, n.URL+"/metrics")
	}
	g.Aggregator = cp.StartAggregator(t, g.dir, agentURLs, append([]string{
		"--authentication-kubeconfig=" + cp.Kubeconfig,
		"--authorization-kubeconfig=" + cp.Kubeconfig,
		"--scrape-interval=" + ScrapeInterval.String(),
		"--window=" + metricsWindow.String(),
		"--stale-after=" + StaleAfter.String(),
	}, opts.AggregatorArgs...)...)
	if !opts.Unregistered {
		cp.RegisterCustomMetrics(t, g.Aggregator.Port)
	}
	return g
}

// startNode starts a fake kubelet and an agent with gpus simulated GPUs,
// and waits until the agent reports them all.
func (g *GMS) startNode(bin string, i, gpus int) *GPUNode {
	t := g.t
	t.Helper()
	name := fmt.Sprintf("gpu-node-%d", i)
	kubelet, err := fakekubelet.Start(filepath.Join(g.dir, name+".sock"))
	if err != nil {
		t.Fatalf("starting the fake kubelet of %s: %v", name, err)
	}
	t.Cleanup(kubelet.Stop)
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	agent, err := StartProcess(g.dir, "agent-"+name, bin, "agent",
		"--backend=sim",
		"--sim-gpus="+strconv.Itoa(gpus),
		"--node-name="+name,
		"--web.listen-address="+addr,
		"--pod-resources-socket="+kubelet.Path(),
		"--pod-resources-interval=1s",
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Stop)
	node := &GPUNode{Name: name, Kubelet: kubelet, Agent: agent, URL: "http://" + addr}
	if err := WaitServing(t.Context(), agent, PlainHTTP, node.URL+"/readyz"); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 30*time.Second, fmt.Sprintf("%s's agent to report %d GPUs", name, gpus), func(ctx context.Context) (bool, string, error) {
		found, err := ScrapeGPUs(ctx, node.URL+"/metrics")
		if err != nil {
			return false, err.Error(), nil
		}
		node.GPUs = found
		return len(found) == gpus, fmt.Sprintf("GPUs %v", found), nil
	})
	return node
}

// Aggregator is a running aggregator.
type Aggregator struct {
	Process *Process
	// Port is its secure port on 127.0.0.1, which an APIService routes
	// to; URL is https://127.0.0.1:<Port>.
	Port int
	URL  string
}

// StartAggregator starts the aggregator on a free loopback port, with a
// serving certificate for the Service the APIServices route to (see
// ServingCert), scraping agentURLs as static targets, and waits until it
// serves; args are further flags. Its files and log go to dir. It stops at
// the end of the test; register it with RegisterCustomMetrics.
func (cp *ControlPlane) StartAggregator(t testing.TB, dir string, agentURLs []string, args ...string) *Aggregator {
	t.Helper()
	cert := cp.ServingCert(t, dir)
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	a := &Aggregator{Port: ports[0], URL: loopbackURL("https", ports[0])}
	all := []string{"aggregator"}
	for _, chunk := range chunkURLs(agentURLs, maxArgBytes) {
		all = append(all, "--agent-urls="+chunk)
	}
	all = append(all,
		// Static targets only: the agents are not pods of the cluster.
		"--agent-selector=",
		"--secure-port="+strconv.Itoa(a.Port),
		"--bind-address=127.0.0.1",
		"--tls-cert-file="+cert.CertFile,
		"--tls-private-key-file="+cert.KeyFile,
		"--kubeconfig="+cp.Kubeconfig,
	)
	a.Process, err = StartProcess(dir, "aggregator", GMSBinary(t), append(all, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Process.Stop)
	if err := WaitServing(t.Context(), a.Process, cp.HTTPClient(), a.URL+"/readyz"); err != nil {
		t.Fatal(err)
	}
	return a
}

// chunkURLs joins urls with commas into values of at most limit bytes.
func chunkURLs(urls []string, limit int) []string {
	var out []string
	var b strings.Builder
	for _, u := range urls {
		if b.Len() > 0 && b.Len()+1+len(u) > limit {
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(u)
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// Series is one sample of an agent's exposition.
type Series struct {
	Labels map[string]string
	Value  float64
}

// ScrapeSeries reads an agent's /metrics and returns the samples of the
// gauge name.
func ScrapeSeries(ctx context.Context, metricsURL, name string) ([]Series, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := PlainHTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", metricsURL, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", metricsURL, err)
	}
	var out []Series
	for _, m := range families[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		out = append(out, Series{Labels: labels, Value: m.GetGauge().GetValue()})
	}
	return out, nil
}

// ScrapeGPUs returns an agent's GPUs (index → UUID) from its utilization
// series.
func ScrapeGPUs(ctx context.Context, metricsURL string) (map[int]string, error) {
	samples, err := ScrapeSeries(ctx, metricsURL, GPUUtilSeries)
	if err != nil {
		return nil, err
	}
	gpus := map[int]string{}
	for _, s := range samples {
		idx, err := strconv.Atoi(s.Labels["gpu"])
		if err != nil || s.Labels["UUID"] == "" {
			return nil, fmt.Errorf("%s: %s series with gpu=%q UUID=%q", metricsURL, GPUUtilSeries, s.Labels["gpu"], s.Labels["UUID"])
		}
		gpus[idx] = s.Labels["UUID"]
	}
	return gpus, nil
}

// dumpLogs prints the tail of each component's log into the test log.
func (g *GMS) dumpLogs() {
	var procs []*Process
	if g.Aggregator != nil {
		procs = append(procs, g.Aggregator.Process)
	}
	for _, n := range g.Nodes {
		procs = append(procs, n.Agent)
	}
	for _, p := range procs {
		g.t.Logf("---- last %d lines of %s ----\n%s", LogTailLines, p.Name, p.Tail(LogTailLines))
	}
}

// GPUOf waits until the pod faker has given pod a GPU and returns it.
func (g *GMS) GPUOf(pod string) GPUSlot {
	t := g.t
	t.Helper()
	var slot GPUSlot
	WaitFor(t, 30*time.Second, "a GPU for pod "+pod, func(context.Context) (bool, string, error) {
		s, ok := g.Faker.Assignment(pod)
		slot = s
		return ok, "unassigned", nil
	})
	return slot
}

// SetUtilization sets the simulated utilization of one GPU (gpu is its
// index) or of all GPUs (gpu "all") of node, and returns when the agent
// accepted it.
func (g *GMS) SetUtilization(node int, gpu string, percent int) time.Time {
	g.t.Helper()
	return g.simSet(node, url.Values{"gpu": {gpu}, "utilization": {strconv.Itoa(percent)}})
}

// simSet posts q to a node agent's /sim/set and returns when the agent
// accepted it.
func (g *GMS) simSet(node int, q url.Values) time.Time {
	t := g.t
	t.Helper()
	u := g.Nodes[node].URL + "/sim/set?" + q.Encode()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := PlainHTTP.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return time.Now()
}

// SetAllUtilization sets every simulated GPU of every node.
func (g *GMS) SetAllUtilization(percent int) time.Time {
	g.t.Helper()
	var at time.Time
	for i := range g.Nodes {
		at = g.SetUtilization(i, "all", percent)
	}
	return at
}

// SetPodShare sets the utilization of pod's own (simulated) process on the
// GPU it holds: on a shared GPU the device's utilization is the sum of its
// pods' shares.
func (g *GMS) SetPodShare(pod string, percent int) time.Time {
	g.t.Helper()
	s := g.GPUOf(pod)
	return g.simSet(s.Node, url.Values{"gpu": {strconv.Itoa(s.Index)}, "pod": {g.Namespace + "/" + pod}, "utilization": {strconv.Itoa(percent)}})
}

// SetPodUtilization sets the utilization of the GPU that pod holds.
func (g *GMS) SetPodUtilization(pod string, percent int) time.Time {
	g.t.Helper()
	s := g.GPUOf(pod)
	return g.SetUtilization(s.Node, strconv.Itoa(s.Index), percent)
}

// Get requests path from the aggregator directly (not through
// kube-apiserver) with client and the given headers, and returns the
// status code and body (0 and the error for a failed request).
func (a *Aggregator) Get(t testing.TB, client *http.Client, path string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, a.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(body)
}
