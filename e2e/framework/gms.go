//go:build e2e

package framework

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/hack/deviceplugin/devices"
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
	// GPUsPerNode has one entry per GPU node: a node with that many
	// simulated GPUs and an agent reading them.
	GPUsPerNode []int
	// MIG, when set, has one entry per node: the indexes of its GPUs in MIG
	// mode (mixed strategy).
	MIG [][]int
	// TimeSlices time-slices every device into that many replicas, so
	// that up to that many pods share it (0: each is held whole).
	TimeSlices int
	// RenameShared advertises time-sliced devices as "<name>.shared"
	// (nvidia.com/gpu.shared), as NVIDIA's renameByDefault does.
	RenameShared bool
	// AgentsOnly starts no aggregator and registers none.
	AgentsOnly bool
	// AggregatorArgs are further aggregator flags (e.g. --delegate-to).
	AggregatorArgs []string
	// Unregistered starts the aggregator but leaves its registration as
	// custom.metrics.k8s.io to the test.
	Unregistered bool
	// FakeKubelets replaces the nodes with in-process fake kubelets
	// (podmap/fakekubelet) and the pod faker, which marks the namespace's
	// pods Running and hands out GPUs itself: for the faults a real kubelet
	// cannot be made to show (a pod-resources API that hangs or answers
	// garbage). MIG and RenameShared do not apply.
	FakeKubelets bool
	// AgentAuth runs the agents as the chart's agent.auth does: TLS (a
	// certificate of the cluster CA, through --web.config.file) and
	// --authn-authz=kubernetes. The aggregator scrapes them over https with
	// the token of the ServiceAccount <namespace>/AggregatorServiceAccount,
	// granted get on /metrics; the framework's own scrapes use it too.
	AgentAuth bool
	// AgentTLS, when set, serves the agents over TLS with its flags (a
	// --web.config.file, as the chart renders one) instead of AgentAuth's
	// certificate; the framework's own scrapes verify them with its CA for
	// its server name. The aggregator's TLS flags are the test's
	// (AggregatorArgs). Not with AgentAuth.
	AgentTLS *AgentTLS
}

// AgentTLS is how agents serve TLS and how they are verified.
type AgentTLS struct {
	// Args are the agents' flags that serve TLS.
	Args []string
	// CAFile verifies the agents' certificate for ServerName (they are
	// dialed at 127.0.0.1, which it need not name).
	CAFile     string
	ServerName string
}

// client returns an HTTP client that verifies the agents as a.
func (a *AgentTLS) client() (*http.Client, error) {
	pem, err := os.ReadFile(a.CAFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", a.CAFile)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: a.ServerName}}
	return &http.Client{Timeout: PlainHTTP.Timeout, Transport: tr}, nil
}

// AggregatorServiceAccount is the ServiceAccount whose token the
// aggregator presents to the agents with GMSOptions.AgentAuth.
const AggregatorServiceAccount = "gms-aggregator"

// GMS is gpu-metrics-server deployed for one test: GPU nodes, each a real
// kubelet with the test device plugin and an agent with simulated GPUs
// reading its pod-resources socket (or, with FakeKubelets, fake kubelets
// and the pod faker), and the aggregator registered as
// custom.metrics.k8s.io.
type GMS struct {
	t          testing.TB
	cp         *ControlPlane
	dir        string
	Namespace  string
	Nodes      []*GPUNode
	Faker      *PodFaker   // only with FakeKubelets
	Aggregator *Aggregator // nil with AgentsOnly

	// With AgentAuth: the agents' extra flags, the client that verifies
	// their certificate, and the aggregator's token and its file.
	agentArgs  []string
	AgentHTTP  *http.Client // PlainHTTP without AgentAuth
	AgentToken string
	tokenFile  string
}

// GPUNode is one GPU node and the agent that reads its kubelet.
type GPUNode struct {
	Name string
	// Node is the real node; nil with FakeKubelets.
	Node *Node
	// Kubelet is the fake kubelet; nil without FakeKubelets.
	Kubelet *fakekubelet.Server
	Agent   *Process
	URL     string         // the agent's base URL
	GPUs    map[int]string // index → UUID, as the agent's /metrics reports them (GPUs in MIG mode have none)
	// start starts the agent again as it was started, with extra flags.
	start func(extra ...string) (*Process, error)
}

// StartGMS starts the project's processes for one test: one GPU node per
// entry of opts.GPUsPerNode (named <namespace>-gpu-<i>), each with an agent
// in the node's mount namespace reading its kubelet's pod-resources socket,
// and, unless opts.AgentsOnly, the aggregator scraping the agents,
// registered as the custom.metrics.k8s.io APIService (unless
// opts.Unregistered). The scheduler places
// the test's pods and the kubelets allocate their devices. At the end of
// the test the namespace's workloads are deleted (and their pods waited
// for) while the nodes still run, then everything stops; on failure the
// tail of each component's log is printed.
func StartGMS(t testing.TB, cp *ControlPlane, namespace string, opts GMSOptions) *GMS {
	t.Helper()
	bin := GMSBinary(t)
	g := &GMS{t: t, cp: cp, dir: TempDir(t, "gms-e2e-env-"), Namespace: namespace, AgentHTTP: PlainHTTP}
	if opts.AgentAuth {
		if opts.AgentTLS != nil {
			t.Fatal("GMSOptions: AgentAuth and AgentTLS both set; AgentAuth brings its own TLS")
		}
		g.prepareAgentAuth()
	}
	if opts.AgentTLS != nil {
		client, err := opts.AgentTLS.client()
		if err != nil {
			t.Fatal(err)
		}
		g.agentArgs, g.AgentHTTP = slices.Clone(opts.AgentTLS.Args), client
	}
	t.Cleanup(func() {
		if t.Failed() {
			g.dumpLogs()
		}
	})

	if opts.FakeKubelets {
		g.startFakeNodes(bin, opts)
		if cp.cfg.Kubelets {
			// The scheduler finds no node for the faked pods; they
			// must not wait for the next test's nodes.
			cp.DeleteWorkloadsAtEnd(t, namespace)
		}
	} else {
		for i, gpus := range opts.GPUsPerNode {
			no := NodeOptions{
				Name:         fmt.Sprintf("%s-gpu-%d", namespace, i),
				Labels:       map[string]string{GPUPresentLabel: "true"},
				GPUs:         gpus,
				TimeSlices:   opts.TimeSlices,
				RenameShared: opts.RenameShared,
			}
			if i < len(opts.MIG) {
				no.MIG = opts.MIG[i]
			}
			g.Nodes = append(g.Nodes, g.startNode(bin, cp.StartNode(t, no)))
		}
		// Registered after the nodes, so it runs before they stop.
		cp.DeleteWorkloadsAtEnd(t, namespace)
	}
	if opts.AgentsOnly {
		return g
	}

	agentURLs := make([]string, 0, len(g.Nodes))
	for _, n := range g.Nodes {
		agentURLs = append(agentURLs, n.URL+"/metrics")
	}
	var authArgs []string
	if opts.AgentAuth {
		authArgs = []string{"--scrape-ca-file=" + cp.CAFile(), "--scrape-bearer-token-file=" + g.tokenFile}
	}
	g.Aggregator = cp.StartAggregator(t, g.dir, agentURLs, append(append(cp.AggregatorFlags(), authArgs...), opts.AggregatorArgs...)...)
	if !opts.Unregistered {
		cp.RegisterCustomMetrics(t, g.Aggregator.Port)
	}
	return g
}

// prepareAgentAuth issues the agents' serving certificate and web config
// and the aggregator's ServiceAccount token, granted get on /metrics.
func (g *GMS) prepareAgentAuth() {
	t, cp := g.t, g.cp
	t.Helper()
	cert := cp.ServingCertFor(t, g.dir, g.Namespace, "agent")
	webConfig := filepath.Join(g.dir, "agent-web.yml")
	if err := os.WriteFile(webConfig, fmt.Appendf(nil, "tls_server_config:\n  cert_file: %s\n  key_file: %s\n", cert.CertFile, cert.KeyFile), 0o600); err != nil {
		t.Fatal(err)
	}
	g.agentArgs = []string{"--web.config.file=" + webConfig, "--authn-authz=kubernetes", "--kubeconfig=" + cp.Kubeconfig}
	g.AgentHTTP = cp.HTTPClient()
	cp.GrantAgentMetricsGet(t, g.Namespace, AggregatorServiceAccount)
	g.AgentToken = cp.ServiceAccountToken(t, g.Namespace, AggregatorServiceAccount)
	g.tokenFile = filepath.Join(g.dir, "aggregator-token")
	if err := os.WriteFile(g.tokenFile, []byte(g.AgentToken), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startNode starts the agent of a real node, in the node's mount
// namespace (as the chart's DaemonSet pod would be), and waits until it
// reports the node's GPUs: those the device plugin advertises.
func (g *GMS) startNode(bin string, node *Node) *GPUNode {
	t := g.t
	t.Helper()
	o := node.opts
	args := []string{"--sim-gpus=" + strconv.Itoa(o.GPUs), "--pod-resources-socket=" + PodResourcesSocket}
	if len(o.MIG) > 0 {
		args = append(args, "--sim-mig="+joinInts(o.MIG))
	}
	n := g.startAgent(bin, node.Name, "agent", node.Exec, o.GPUs-len(o.MIG), args...)
	n.Node = node
	// The agent and the device plugin must agree on the hardware.
	want := map[int]string{}
	for _, r := range node.Resources {
		for _, d := range r.Devices {
			if d.GPUInstance < 0 {
				want[d.GPU] = d.UUID
			}
		}
	}
	if !maps.Equal(n.GPUs, want) {
		t.Fatalf("%s: the agent reports GPUs %v, the device plugin advertises %v", node.Name, n.GPUs, want)
	}
	return n
}

// startFakeNodes starts, per entry of opts.GPUsPerNode, a fake kubelet and
// an agent reading it, and the pod faker handing out their GPUs.
func (g *GMS) startFakeNodes(bin string, opts GMSOptions) {
	t := g.t
	t.Helper()
	var slots []GPUSlot
	var kubelets []PodResourcesSetter
	for i, gpus := range opts.GPUsPerNode {
		name := fmt.Sprintf("gpu-node-%d", i)
		kubelet, err := fakekubelet.Start(filepath.Join(g.dir, name+".sock"))
		if err != nil {
			t.Fatalf("starting the fake kubelet of %s: %v", name, err)
		}
		t.Cleanup(kubelet.Stop)
		start := func(logName, bin string, args ...string) (*Process, error) {
			return StartProcess(g.dir, logName, bin, args...)
		}
		node := g.startAgent(bin, name, "agent-"+name, start, gpus, "--sim-gpus="+strconv.Itoa(gpus), "--pod-resources-socket="+kubelet.Path())
		node.Kubelet = kubelet
		g.Nodes = append(g.Nodes, node)
		kubelets = append(kubelets, kubelet)
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
	g.Faker = StartPodFaker(t, g.cp.Client, g.Namespace, kubelets, slots)
}

// startAgent starts an agent for node name through start (in the node's
// namespace, or on the host), logging as logName, and waits until it
// reports its gpus whole GPUs (those not in MIG mode).
func (g *GMS) startAgent(bin, name, logName string, start func(logName, bin string, args ...string) (*Process, error), gpus int, args ...string) *GPUNode {
	t := g.t
	t.Helper()
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	all := append(append([]string{"agent",
		"--backend=sim",
		"--node-name=" + name,
		"--web.listen-address=" + addr,
		"--pod-resources-interval=1s",
	}, g.agentArgs...), args...)
	scheme := "http"
	if g.agentArgs != nil {
		scheme = "https"
	}
	node := &GPUNode{Name: name, URL: scheme + "://" + addr, start: func(extra ...string) (*Process, error) {
		return start(logName, bin, append(slices.Clone(all), extra...)...)
	}}
	agent, err := node.start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Stop)
	node.Agent = agent
	if err := WaitServing(t.Context(), agent, g.AgentHTTP, node.URL+"/readyz"); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 30*time.Second, fmt.Sprintf("%s's agent to report %d GPUs", name, gpus), func(ctx context.Context) (bool, string, error) {
		found, err := scrapeGPUs(ctx, g.AgentHTTP, g.AgentToken, node.URL+"/metrics")
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

// AggregatorFlags are the aggregator's flags of the scenarios, as StartGMS
// starts it: delegated authentication and authorization with the admin
// kubeconfig, and the suite's scrape interval, window and stale-after.
func (cp *ControlPlane) AggregatorFlags() []string {
	return []string{
		"--authentication-kubeconfig=" + cp.Kubeconfig,
		"--authorization-kubeconfig=" + cp.Kubeconfig,
		"--scrape-interval=" + ScrapeInterval.String(),
		"--window=" + metricsWindow.String(),
		"--stale-after=" + StaleAfter.String(),
	}
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

// ScrapeFamilies reads an agent's /metrics.
func ScrapeFamilies(ctx context.Context, metricsURL string) (map[string]*dto.MetricFamily, error) {
	return ScrapeFamiliesAs(ctx, PlainHTTP, "", metricsURL)
}

// ScrapeFamiliesAs reads an agent's /metrics with client, presenting token
// unless empty.
func ScrapeFamiliesAs(ctx context.Context, client *http.Client, token, metricsURL string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
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
	return families, nil
}

// ScrapeSeries reads an agent's /metrics and returns the samples of the
// gauge name.
func ScrapeSeries(ctx context.Context, metricsURL, name string) ([]Series, error) {
	families, err := ScrapeFamilies(ctx, metricsURL)
	if err != nil {
		return nil, err
	}
	return gaugeSeries(families, name), nil
}

// GaugeSeries returns the samples of the gauge name.
func GaugeSeries(families map[string]*dto.MetricFamily, name string) []Series {
	return gaugeSeries(families, name)
}

// gaugeSeries returns the samples of the gauge name.
func gaugeSeries(families map[string]*dto.MetricFamily, name string) []Series {
	var out []Series
	for _, m := range families[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		out = append(out, Series{Labels: labels, Value: m.GetGauge().GetValue()})
	}
	return out
}

// AgentState is one scrape of an agent: its device series and what it
// says of its own rounds.
type AgentState struct {
	// Series are the samples of the scraped gauge.
	Series []Series
	// Refreshes counts the pod-mapping refreshes that have called the
	// kubelet, failed ones included; each publishes its mapping before
	// the next one starts.
	Refreshes uint64
	// RefreshErrors counts the failed calls to the kubelet.
	RefreshErrors float64
	// KubeletUp is the last refresh's outcome.
	KubeletUp bool
	// Sampled is the start of the sampling round the series come from;
	// the round attributed devices with the mapping current then.
	Sampled time.Time
}

// ScrapeAgent reads an agent's /metrics: the gauge name and the agent's
// own refresh and sampling counters.
func ScrapeAgent(ctx context.Context, metricsURL, name string) (AgentState, error) {
	families, err := ScrapeFamilies(ctx, metricsURL)
	if err != nil {
		return AgentState{}, err
	}
	st := AgentState{Series: gaugeSeries(families, name)}
	for _, m := range families["gpu_metrics_server_pod_resources_refresh_duration_seconds"].GetMetric() {
		st.Refreshes = m.GetHistogram().GetSampleCount()
	}
	for _, m := range families["gpu_metrics_server_pod_resources_refresh_errors_total"].GetMetric() {
		st.RefreshErrors += m.GetCounter().GetValue()
	}
	for _, m := range families["gpu_metrics_server_pod_resources_up"].GetMetric() {
		st.KubeletUp = m.GetGauge().GetValue() == 1
	}
	for _, m := range families["gpu_metrics_server_sample_timestamp_seconds"].GetMetric() {
		st.Sampled = time.UnixMilli(int64(m.GetGauge().GetValue() * 1000))
	}
	return st, nil
}

// ScrapeGPUs returns an agent's GPUs (index → UUID) from its utilization
// series.
func ScrapeGPUs(ctx context.Context, metricsURL string) (map[int]string, error) {
	return scrapeGPUs(ctx, PlainHTTP, "", metricsURL)
}

// scrapeGPUs is ScrapeGPUs with client and token (ScrapeFamiliesAs).
func scrapeGPUs(ctx context.Context, client *http.Client, token, metricsURL string) (map[int]string, error) {
	families, err := ScrapeFamiliesAs(ctx, client, token, metricsURL)
	if err != nil {
		return nil, err
	}
	samples := gaugeSeries(families, GPUUtilSeries)
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

// dumpLogs prints the tail of the aggregator's log, and of the agents'
// of fake nodes, into the test log (a real node prints its own, agent
// included).
func (g *GMS) dumpLogs() {
	var procs []*Process
	if g.Aggregator != nil {
		procs = append(procs, g.Aggregator.Process)
	}
	for _, n := range g.Nodes {
		if n.Node == nil {
			procs = append(procs, n.Agent)
		}
	}
	for _, p := range procs {
		g.t.Logf("---- last %d lines of %s ----\n%s", LogTailLines, p.Name, p.Tail(LogTailLines))
	}
}

// GPUOf waits until pod holds a GPU and returns it: on real nodes the
// device the kubelet's device manager allocated to it, as its
// pod-resources API reports it, on the node the scheduler chose; with
// FakeKubelets the one the faker gave it. A MIG instance is not a GPUSlot:
// see Allocation.
func (g *GMS) GPUOf(pod string) GPUSlot {
	t := g.t
	t.Helper()
	var slot GPUSlot
	WaitFor(t, 60*time.Second, "a GPU for pod "+pod, func(ctx context.Context) (bool, string, error) {
		if g.Faker != nil {
			s, ok := g.Faker.Assignment(pod)
			slot = s
			return ok, "unassigned", nil
		}
		a, state, err := g.allocation(ctx, pod)
		if a == nil || err != nil {
			return false, state, err
		}
		if len(a.Devices) != 1 || a.Devices[0].GPUInstance >= 0 {
			return false, "", fmt.Errorf("pod %s holds %+v, not one whole GPU", pod, a.Devices)
		}
		d := a.Devices[0]
		if g.Nodes[a.Node].GPUs[d.GPU] != d.UUID {
			return false, "", fmt.Errorf("pod %s holds %s, which the agent of %s does not report as GPU %d (it reports %v)", pod, d.ID, a.NodeName, d.GPU, g.Nodes[a.Node].GPUs)
		}
		slot = GPUSlot{Node: a.Node, Index: d.GPU, UUID: d.UUID, Replica: d.Replica}
		return true, "", nil
	})
	return slot
}

// Allocation is what a kubelet allocated to one pod.
type Allocation struct {
	// Node indexes GMS.Nodes; NodeName is its name.
	Node     int
	NodeName string
	// Resource is the extended resource, Devices what the IDs stand for.
	Resource string
	Devices  []devices.Device
}

// Allocation waits until a kubelet has allocated devices to pod and
// returns them, mapped to the node's hardware.
func (g *GMS) Allocation(pod string) Allocation {
	t := g.t
	t.Helper()
	var out Allocation
	WaitFor(t, 60*time.Second, "devices for pod "+pod, func(ctx context.Context) (bool, string, error) {
		a, state, err := g.allocation(ctx, pod)
		if a != nil {
			out = *a
		}
		return a != nil, state, err
	})
	return out
}

// allocation reads pod's devices from the pod-resources API of the node
// it was scheduled to: nil (and the state) while it has none yet, an error
// when they are not what the node advertises.
func (g *GMS) allocation(ctx context.Context, pod string) (*Allocation, string, error) {
	p, err := g.cp.Client.CoreV1().Pods(g.Namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return nil, err.Error(), nil
	}
	if p.Spec.NodeName == "" {
		return nil, "not scheduled", nil
	}
	i := slices.IndexFunc(g.Nodes, func(n *GPUNode) bool { return n.Name == p.Spec.NodeName })
	if i < 0 {
		return nil, "", fmt.Errorf("pod %s was scheduled to %s, not one of this test's GPU nodes", pod, p.Spec.NodeName)
	}
	node := g.Nodes[i].Node
	ids, err := node.DeviceIDs(ctx, g.Namespace, pod)
	if err != nil {
		return nil, err.Error(), nil
	}
	if len(ids) == 0 {
		return nil, fmt.Sprintf("on %s, no devices listed yet", node.Name), nil
	}
	if len(ids) > 1 {
		return nil, "", fmt.Errorf("pod %s holds devices of several resources: %v", pod, ids)
	}
	a := &Allocation{Node: i, NodeName: node.Name}
	for res, list := range ids {
		a.Resource = res
		for _, id := range list {
			d, name, ok := devices.Find(node.Resources, id)
			if !ok || name != res {
				return nil, "", fmt.Errorf("pod %s holds %s under %s, which %s does not advertise", pod, id, res, node.Name)
			}
			a.Devices = append(a.Devices, d)
		}
	}
	return a, "", nil
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
	resp, err := g.AgentHTTP.Do(req)
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

// LoseGPU makes GPU gpu (its index) of node fall off the bus, as NVML's
// ERROR_GPU_IS_LOST reports it (POST /sim/set?lost=true), and returns when
// the agent accepted it.
func (g *GMS) LoseGPU(node, gpu int) time.Time {
	g.t.Helper()
	return g.simSet(node, url.Values{"gpu": {strconv.Itoa(gpu)}, "lost": {"true"}})
}

// RestartAgent stops node's agent (SIGTERM, as the kubelet stops a pod)
// and starts it again on the same address with the same flags plus extra
// ones (a simulation starts anew: --sim-utilization gives it its load
// back), and returns when it serves again: when its /readyz answers 200.
func (g *GMS) RestartAgent(node int, extra ...string) {
	t := g.t
	t.Helper()
	n := g.Nodes[node]
	n.Agent.Stop()
	agent, err := n.start(extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Stop)
	n.Agent = agent
	if err := WaitServing(t.Context(), agent, g.AgentHTTP, n.URL+"/readyz"); err != nil {
		t.Fatal(err)
	}
}

// SetInstanceUtilization sets the activity of MIG instance gi of GPU gpu
// of node (percent of its graphics engine), and returns when the agent
// accepted it.
func (g *GMS) SetInstanceUtilization(node, gpu, gi, percent int) time.Time {
	g.t.Helper()
	return g.simSet(node, url.Values{"gpu": {strconv.Itoa(gpu)}, "gpu_i_id": {strconv.Itoa(gi)}, "utilization": {strconv.Itoa(percent)}})
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
