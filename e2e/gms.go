//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
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
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

const (
	// envBinary is the gpu-metrics-server binary under test.
	envBinary = "GMS_BIN"
	// apiServiceNamespace and apiServiceName name the ExternalName Service
	// the custom.metrics.k8s.io APIServices route through.
	apiServiceNamespace = "gms-e2e-system"
	apiServiceName      = "gpu-metrics-server"
	// Aggregator timing: scrape every second, average over a short window,
	// and drop a pod's value once its agent has not answered for
	// staleAfter.
	scrapeInterval = time.Second
	metricsWindow  = 2 * time.Second
	staleAfter     = 3 * time.Second
	// gpuUtilSeries is the agent series that carries each GPU's index and
	// UUID.
	gpuUtilSeries = "DCGM_FI_DEV_GPU_UTIL"
)

// customMetricsVersions are the custom.metrics.k8s.io versions the
// aggregator serves, each registered as an APIService.
var customMetricsVersions = []string{"v1beta1", "v1beta2"}

var apiServiceGVR = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// gpuNode is one simulated GPU node: a fake kubelet pod-resources socket and
// the agent that reads it.
type gpuNode struct {
	name    string
	kubelet *fakekubelet.Server
	agent   *process
	url     string         // the agent's base URL
	gpus    map[int]string // index → UUID, as the agent's /metrics reports them
}

// gmsEnv is gpu-metrics-server deployed for one test: agents with
// simulated GPUs, the aggregator registered as custom.metrics.k8s.io, and a
// pod faker for the test's namespace.
type gmsEnv struct {
	t          *testing.T
	namespace  string
	dir        string
	nodes      []*gpuNode
	aggregator *process
	// registerPort is the aggregator's secure port, which the APIService
	// routes to.
	registerPort int
	faker        *podFaker
}

// startGMS starts one agent per entry of gpusPerNode (with that many
// simulated GPUs) and fakes the pods of namespace onto their GPUs (see
// startAgents), then starts the aggregator scraping the agents and
// registers it as the custom.metrics.k8s.io APIService. Everything stops at
// the end of the test.
func startGMS(t *testing.T, namespace string, gpusPerNode ...int) *gmsEnv {
	t.Helper()
	env := startAgents(t, namespace, gpusPerNode...)
	agentURLs := make([]string, 0, len(env.nodes))
	for _, n := range env.nodes {
		agentURLs = append(agentURLs, n.url+"/metrics")
	}
	env.startAggregator(gmsBinary(t), agentURLs)
	env.register()
	return env
}

// startAgents starts, for each entry of gpusPerNode, a fake kubelet and an
// agent with that many simulated GPUs reading it, and a pod faker that
// runs the pods of namespace and gives each a GPU. No aggregator.
func startAgents(t *testing.T, namespace string, gpusPerNode ...int) *gmsEnv {
	t.Helper()
	return startSharedAgents(t, namespace, 0, gpusPerNode...)
}

// startSharedGMS is startGMS with every simulated GPU time-sliced into
// replicas slots, so that up to replicas pods share each GPU.
func startSharedGMS(t *testing.T, namespace string, replicas int, gpusPerNode ...int) *gmsEnv {
	t.Helper()
	env := startSharedAgents(t, namespace, replicas, gpusPerNode...)
	agentURLs := make([]string, 0, len(env.nodes))
	for _, n := range env.nodes {
		agentURLs = append(agentURLs, n.url+"/metrics")
	}
	env.startAggregator(gmsBinary(t), agentURLs)
	env.register()
	return env
}

// startSharedAgents is startAgents with each GPU time-sliced into replicas
// slots (0: held whole).
func startSharedAgents(t *testing.T, namespace string, replicas int, gpusPerNode ...int) *gmsEnv {
	t.Helper()
	bin := gmsBinary(t)
	// Unix socket paths are limited to 108 bytes: keep the directory short.
	dir, err := os.MkdirTemp("", "gms-e2e-env-")
	if err != nil {
		t.Fatal(err)
	}
	env := &gmsEnv{t: t, namespace: namespace, dir: dir}
	t.Cleanup(func() {
		if t.Failed() {
			env.dumpLogs()
		}
		if os.Getenv(envKeep) == "" {
			_ = os.RemoveAll(dir)
		}
	})

	var slots []gpuSlot
	var kubelets []podResourcesSetter
	for i, n := range gpusPerNode {
		node := env.startNode(bin, i, n)
		env.nodes = append(env.nodes, node)
		kubelets = append(kubelets, node.kubelet)
		indexes := make([]int, 0, len(node.gpus))
		for idx := range node.gpus {
			indexes = append(indexes, idx)
		}
		slices.Sort(indexes)
		for _, idx := range indexes {
			if replicas == 0 {
				slots = append(slots, gpuSlot{node: i, index: idx, uuid: node.gpus[idx]})
				continue
			}
			for r := range replicas {
				slots = append(slots, gpuSlot{node: i, index: idx, uuid: node.gpus[idx], replica: strconv.Itoa(r)})
			}
		}
	}
	env.faker = startPodFaker(t, cluster.client, namespace, kubelets, slots)
	return env
}

// gmsBinary returns the path of the project binary, failing the test
// with a hint when it has not been built.
func gmsBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv(envBinary)
	if bin == "" {
		bin = filepath.Join("..", "bin", "gpu-metrics-server")
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

// startNode starts a fake kubelet and an agent with gpus simulated GPUs,
// and waits until the agent reports them all.
func (env *gmsEnv) startNode(bin string, i, gpus int) *gpuNode {
	t := env.t
	t.Helper()
	name := fmt.Sprintf("gpu-node-%d", i)
	kubelet, err := fakekubelet.Start(filepath.Join(env.dir, name+".sock"))
	if err != nil {
		t.Fatalf("starting the fake kubelet of %s: %v", name, err)
	}
	t.Cleanup(kubelet.Stop)
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	agent, err := startProcess(env.dir, "agent-"+name, bin, "agent",
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
	t.Cleanup(agent.stop)
	node := &gpuNode{name: name, kubelet: kubelet, agent: agent, url: "http://" + addr}
	if err := waitServing(t.Context(), agent, plainHTTP, node.url+"/readyz"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, fmt.Sprintf("%s's agent to report %d GPUs", name, gpus), func(ctx context.Context) (bool, string, error) {
		found, err := scrapeGPUs(ctx, node.url+"/metrics")
		if err != nil {
			return false, err.Error(), nil
		}
		node.gpus = found
		return len(found) == gpus, fmt.Sprintf("GPUs %v", found), nil
	})
	return node
}

// series is one sample of an agent's exposition.
type series struct {
	labels map[string]string
	value  float64
}

// scrapeSeries reads an agent's /metrics and returns the samples of the
// gauge name.
func scrapeSeries(ctx context.Context, metricsURL, name string) ([]series, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := plainHTTP.Do(req)
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
	var out []series
	for _, m := range families[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		out = append(out, series{labels: labels, value: m.GetGauge().GetValue()})
	}
	return out, nil
}

// scrapeGPUs returns an agent's GPUs (index → UUID) from its utilization
// series.
func scrapeGPUs(ctx context.Context, metricsURL string) (map[int]string, error) {
	samples, err := scrapeSeries(ctx, metricsURL, gpuUtilSeries)
	if err != nil {
		return nil, err
	}
	gpus := map[int]string{}
	for _, s := range samples {
		idx, err := strconv.Atoi(s.labels["gpu"])
		if err != nil || s.labels["UUID"] == "" {
			return nil, fmt.Errorf("%s: %s series with gpu=%q UUID=%q", metricsURL, gpuUtilSeries, s.labels["gpu"], s.labels["UUID"])
		}
		gpus[idx] = s.labels["UUID"]
	}
	return gpus, nil
}

// startAggregator issues the aggregator's serving certificate (for the
// Service name the API server dials), starts it and waits until it serves.
func (env *gmsEnv) startAggregator(bin string, agentURLs []string) {
	t := env.t
	t.Helper()
	cert := servingCert(t, env.dir)
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	port := ports[0]
	env.aggregator, err = startProcess(env.dir, "aggregator", bin, "aggregator",
		"--agent-urls="+strings.Join(agentURLs, ","),
		// Static targets only: the agents are not pods of the cluster.
		"--agent-selector=",
		"--secure-port="+strconv.Itoa(port),
		"--bind-address=127.0.0.1",
		"--tls-cert-file="+cert.certFile,
		"--tls-private-key-file="+cert.keyFile,
		"--kubeconfig="+cluster.kubeconfig,
		"--authentication-kubeconfig="+cluster.kubeconfig,
		"--authorization-kubeconfig="+cluster.kubeconfig,
		"--scrape-interval="+scrapeInterval.String(),
		"--window="+metricsWindow.String(),
		"--stale-after="+staleAfter.String(),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.aggregator.stop)
	if err := waitServing(t.Context(), env.aggregator, cluster.httpClient(), fmt.Sprintf("https://127.0.0.1:%d/readyz", port)); err != nil {
		t.Fatal(err)
	}
	env.registerPort = port
}

// register routes custom.metrics.k8s.io to the aggregator: an ExternalName
// Service for localhost (no kube-proxy, and Endpoints may not hold loopback
// addresses) and one APIService per version, trusting the cluster CA. It
// waits until the API server reports both Available and serves them.
func (env *gmsEnv) register() {
	t := env.t
	t.Helper()
	ctx := t.Context()
	_, err := cluster.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: apiServiceNamespace},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", apiServiceNamespace, err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: apiServiceName, Namespace: apiServiceNamespace},
		Spec: corev1.ServiceSpec{
			Type:         corev1.ServiceTypeExternalName,
			ExternalName: "localhost",
			Ports: []corev1.ServicePort{{
				Name: "https", Port: int32(env.registerPort), TargetPort: intstr.FromInt(env.registerPort),
			}},
		},
	}
	services := cluster.client.CoreV1().Services(apiServiceNamespace)
	if _, err := services.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the aggregator's Service: %v", err)
	}
	t.Cleanup(func() {
		if err := services.Delete(context.Background(), apiServiceName, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting the aggregator's Service: %v", err)
		}
	})

	dyn, err := dynamic.NewForConfig(cluster.config)
	if err != nil {
		t.Fatal(err)
	}
	apiServices := dyn.Resource(apiServiceGVR)
	for i, version := range customMetricsVersions {
		name := version + ".custom.metrics.k8s.io"
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiregistration.k8s.io/v1",
			"kind":       "APIService",
			"metadata":   map[string]any{"name": name},
			"spec": map[string]any{
				"group":                "custom.metrics.k8s.io",
				"version":              version,
				"groupPriorityMinimum": int64(100),
				"versionPriority":      int64(100 + 100*i),
				"caBundle":             cluster.ca.certPEM,
				"service": map[string]any{
					"namespace": apiServiceNamespace,
					"name":      apiServiceName,
					"port":      int64(env.registerPort),
				},
			},
		}}
		if _, err := apiServices.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating APIService %s: %v", name, err)
		}
		t.Cleanup(func() {
			if err := apiServices.Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
				t.Errorf("deleting APIService %s: %v", name, err)
			}
		})
	}

	for _, version := range customMetricsVersions {
		name := version + ".custom.metrics.k8s.io"
		waitFor(t, 60*time.Second, "APIService "+name+" to be Available", func(ctx context.Context) (bool, string, error) {
			obj, err := apiServices.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error(), nil
			}
			conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
			for _, c := range conds {
				cond, _ := c.(map[string]any)
				if cond["type"] == "Available" {
					return cond["status"] == "True", fmt.Sprintf("Available=%v %v: %v", cond["status"], cond["reason"], cond["message"]), nil
				}
			}
			return false, "no Available condition yet", nil
		})
		waitFor(t, 30*time.Second, "the API server to serve "+name, func(ctx context.Context) (bool, string, error) {
			_, err := kubectl(ctx, nil, "get", "--raw", "/apis/custom.metrics.k8s.io/"+version)
			if err != nil {
				return false, err.Error(), nil
			}
			return true, "", nil
		})
	}
}

// dumpLogs prints the tail of each component's log into the test log.
func (env *gmsEnv) dumpLogs() {
	procs := []*process{env.aggregator}
	for _, n := range env.nodes {
		procs = append(procs, n.agent)
	}
	for _, p := range procs {
		if p != nil {
			env.t.Logf("---- last %d lines of %s ----\n%s", logTailLines, p.name, p.tail(logTailLines))
		}
	}
}

// gpuOf waits until the pod faker has given pod a GPU and returns it.
func (env *gmsEnv) gpuOf(pod string) gpuSlot {
	t := env.t
	t.Helper()
	var slot gpuSlot
	waitFor(t, 30*time.Second, "a GPU for pod "+pod, func(context.Context) (bool, string, error) {
		s, ok := env.faker.assignment(pod)
		slot = s
		return ok, "unassigned", nil
	})
	return slot
}

// setUtilization sets the simulated utilization of one GPU (gpu is its
// index) or of all GPUs (gpu "all") of node, and returns when the agent
// accepted it.
func (env *gmsEnv) setUtilization(node int, gpu string, percent int) time.Time {
	env.t.Helper()
	return env.simSet(node, url.Values{"gpu": {gpu}, "utilization": {strconv.Itoa(percent)}})
}

// simSet posts q to a node agent's /sim/set and returns when the agent
// accepted it.
func (env *gmsEnv) simSet(node int, q url.Values) time.Time {
	t := env.t
	t.Helper()
	u := env.nodes[node].url + "/sim/set?" + q.Encode()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := plainHTTP.Do(req)
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

// setAllUtilization sets every simulated GPU of every node.
func (env *gmsEnv) setAllUtilization(percent int) time.Time {
	env.t.Helper()
	var at time.Time
	for i := range env.nodes {
		at = env.setUtilization(i, "all", percent)
	}
	return at
}

// setPodShare sets the utilization of pod's own (simulated) process on the
// GPU it holds: on a shared GPU the device's utilization is the sum of its
// pods' shares.
func (env *gmsEnv) setPodShare(pod string, percent int) time.Time {
	env.t.Helper()
	s := env.gpuOf(pod)
	return env.simSet(s.node, url.Values{"gpu": {strconv.Itoa(s.index)}, "pod": {env.namespace + "/" + pod}, "utilization": {strconv.Itoa(percent)}})
}

// setPodUtilization sets the utilization of the GPU that pod holds.
func (env *gmsEnv) setPodUtilization(pod string, percent int) time.Time {
	env.t.Helper()
	s := env.gpuOf(pod)
	return env.setUtilization(s.node, strconv.Itoa(s.index), percent)
}

// servingCert issues the serving certificate of the Service the
// APIServices route to.
func servingCert(t *testing.T, dir string) keyPair {
	t.Helper()
	cert, err := cluster.ca.issue(dir, "custom-metrics-serving", certSpec{
		commonName: apiServiceName,
		dnsNames:   []string{apiServiceName + "." + apiServiceNamespace + ".svc", "localhost"},
		ips:        []net.IP{net.IPv4(127, 0, 0, 1)},
		server:     true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
