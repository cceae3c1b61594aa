package server

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	cmv1beta1 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta1"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"
	cmclient "k8s.io/metrics/pkg/client/custom_metrics"
	cmscheme "k8s.io/metrics/pkg/client/custom_metrics/scheme"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/provider"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// testServer is a running server on 127.0.0.1 with its client config.
type testServer struct {
	rest  *rest.Config
	url   string
	ready *atomic.Bool
	srv   *Server
}

// startServer runs a server of cfg (its Options set here) on a free
// loopback port, with one more readiness check the test controls. With
// insecure it runs in InsecureLoopback mode; otherwise with the production
// delegated authentication and authorization, made optional (there is no
// kube-apiserver) and allowing anonymous requests.
func startServer(t testing.TB, cfg Config, insecure bool) *testServer {
	t.Helper()
	return startServerWith(t, cfg, insecure, nil)
}

// startServerWith is startServer with the options changed by mod, when
// set, before the server is built.
func startServerWith(t testing.TB, cfg Config, insecure bool, mod func(*Options)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := NewOptions()
	o.SecureServing.Listener = ln
	o.SecureServing.BindPort = ln.Addr().(*net.TCPAddr).Port
	o.InsecureLoopback = insecure
	if !insecure {
		o.Authentication.RemoteKubeConfigFileOptional = true
		o.Authentication.SkipInClusterLookup = true
		o.Authorization.RemoteKubeConfigFileOptional = true
		o.Authorization.AlwaysAllowGroups = []string{"system:unauthenticated"}
	}
	if mod != nil {
		mod(o)
	}
	ready := &atomic.Bool{}
	cfg.Options = o
	cfg.ReadyChecks = append(cfg.ReadyChecks, ReadyCheck{Name: "test", HasSynced: ready.Load})
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := testutil.Receive(t, "Run to return", done); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	ts := &testServer{
		rest:  &rest.Config{Host: "https://" + ln.Addr().String(), TLSClientConfig: rest.TLSClientConfig{Insecure: true}},
		url:   "https://" + ln.Addr().String(),
		ready: ready,
		srv:   srv,
	}
	// /livez answers once the server serves (readiness waits on the
	// test's check).
	testutil.Eventually(t, "the server to serve /livez", func() bool {
		code, _ := ts.get(t, "/livez")
		return code == http.StatusOK
	})
	return ts
}

func (ts *testServer) get(t testing.TB, path string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: testutil.DefaultTimeout}
	resp, err := c.Get(ts.url + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// fixture: pods ml/a (two GPUs at 40 and 80) and ml/b (one GPU, 0..50 over
// the window) fed by one agent, ml/c known to the API but without a GPU.
func fixture(t *testing.T) (*store.Store, provider.PodLister, time.Time) {
	t.Helper()
	// A long window and stale-after: the test runs on the real clock and
	// must not depend on how fast the server starts.
	st, err := store.New(store.Config{Window: time.Minute, StaleAfter: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// Real time: the server queries the store with its clock. Readings
	// every 2 s up to now, sampled 300 ms before receipt.
	now := time.Now()
	var newest time.Time
	for i := 5; i >= 0; i-- {
		at := now.Add(-time.Duration(2*i) * time.Second)
		newest = at.Add(-300 * time.Millisecond)
		smp := func(pod, dev string, u float64) store.Sample {
			return store.Sample{Namespace: "ml", Pod: pod, Container: "main", Device: dev, Time: newest,
				Present: store.FieldUtilization | store.FieldPower, Utilization: u, PowerWatts: 100}
		}
		if _, err := st.Append("agent/gms/agent-1", at, []store.Sample{
			smp("a", "GPU-1", 40), smp("a", "GPU-2", 80), smp("b", "GPU-3", float64(10*(5-i))),
		}); err != nil {
			t.Fatal(err)
		}
	}
	pods := provider.NewStaticPodLister([]provider.StaticPod{
		{Namespace: "ml", Name: "a", Labels: map[string]string{"app": "train"}},
		{Namespace: "ml", Name: "b", Labels: map[string]string{"app": "train"}},
		{Namespace: "ml", Name: "c", Labels: map[string]string{"app": "train"}},
		{Namespace: "ml", Name: "x", Labels: map[string]string{"app": "other"}},
	})
	return st, pods, newest
}

func podMapper() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper([]schema.GroupVersion{{Version: "v1"}})
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, meta.RESTScopeNamespace)
	return m
}

func TestCustomMetricsAPI(t *testing.T) {
	st, pods, newest := fixture(t)
	ts := startServer(t, Config{Metrics: st, Pods: pods, Collectors: []prometheus.Collector{store.NewCollector(st)}}, false)
	podKind := schema.GroupKind{Kind: "Pod"}
	train := labels.SelectorFromSet(labels.Set{"app": "train"})

	for _, gv := range []schema.GroupVersion{cmv1beta1.SchemeGroupVersion, cmv1beta2.SchemeGroupVersion} {
		t.Run(gv.Version, func(t *testing.T) {
			c, err := cmclient.NewForVersionForConfig(ts.rest, podMapper(), gv)
			if err != nil {
				t.Fatal(err)
			}
			ms := c.NamespacedMetrics("ml")

			// The HPA's query: the scale target's selector.
			list, err := ms.GetForObjects(podKind, train, "gpu_utilization", labels.Everything())
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int64{}
			for _, it := range list.Items {
				got[it.DescribedObject.Name] = it.Value.MilliValue()
				if !it.Timestamp.Time.Equal(newest.Truncate(time.Second)) {
					t.Errorf("%s: timestamp %v, want the newest sample's %v (RFC 3339 seconds)", it.DescribedObject.Name, it.Timestamp.Time, newest)
				}
				if it.WindowSeconds == nil || *it.WindowSeconds != 10 {
					t.Errorf("%s: windowSeconds %v, want 10", it.DescribedObject.Name, it.WindowSeconds)
				}
				if it.Metric.Name != "gpu_utilization" || it.DescribedObject.Kind != "Pod" || it.DescribedObject.Namespace != "ml" {
					t.Errorf("item %+v does not describe pod ml/%s's gpu_utilization", it, it.DescribedObject.Name)
				}
			}
			// a: mean of 40 and 80; b: mean of 0..50; c has no GPU.
			if len(got) != 2 || got["a"] != 60_000 || got["b"] != 25_000 {
				t.Errorf("values = %v (milli), want a=60000 b=25000 and c omitted", got)
			}

			// One pod by name.
			one, err := ms.GetForObject(podKind, "a", "gpu_power_usage_watts", labels.Everything())
			if err != nil || one.Value.Value() != 200 || one.WindowSeconds == nil || *one.WindowSeconds != 0 {
				t.Errorf("GetForObject(a, power) = %+v, %v; want 200 W over 0 s", one, err)
			}

			// Unknown metric and a pod without a GPU: 404 naming the metric.
			_, err = ms.GetForObjects(podKind, train, "gpu_temperature", labels.Everything())
			if !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), "gpu_temperature") {
				t.Errorf("unknown metric: err = %v, want 404 naming it", err)
			}
			_, err = ms.GetForObject(podKind, "c", "gpu_utilization", labels.Everything())
			if !apierrors.IsNotFound(err) {
				t.Errorf("pod without GPU: err = %v, want 404", err)
			}
			// A metric label selector is refused, not ignored.
			_, err = ms.GetForObjects(podKind, train, "gpu_utilization", labels.SelectorFromSet(labels.Set{"gpu": "0"}))
			if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), "metricLabelSelector") {
				t.Errorf("metric label selector: err = %v, want 400 explaining it", err)
			}
		})
	}

	t.Run("malformed selectors", func(t *testing.T) {
		rc, err := rest.RESTClientFor(withGroup(ts.rest))
		if err != nil {
			t.Fatal(err)
		}
		for _, param := range []string{"labelSelector", "metricLabelSelector"} {
			err := rc.Get().AbsPath("/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/pods/*/gpu_utilization").
				Param(param, "app in (").Do(context.Background()).Error()
			if !apierrors.IsBadRequest(err) {
				t.Errorf("%s=%q: err = %v, want 400", param, "app in (", err)
			}
		}
	})

	t.Run("discovery", func(t *testing.T) {
		dc, err := discovery.NewDiscoveryClientForConfig(ts.rest)
		if err != nil {
			t.Fatal(err)
		}
		// The library's aggregated discovery reply is empty.
		dc.UseLegacyDiscovery = true
		pref, err := cmclient.NewAvailableAPIsGetter(dc).PreferredVersion()
		if err != nil || pref != cmv1beta2.SchemeGroupVersion {
			t.Errorf("preferred version = %v, %v; want v1beta2", pref, err)
		}
		groups, err := dc.ServerGroups()
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range groups.Groups {
			if g.Name == "custom.metrics.k8s.io" && len(g.Versions) != 2 {
				t.Errorf("group lists versions %v, want v1beta2 and v1beta1", g.Versions)
			}
		}
		if code, body := ts.get(t, "/apis/custom.metrics.k8s.io"); code != http.StatusOK || !strings.Contains(body, `"groupVersion":"custom.metrics.k8s.io/v1beta1"`) ||
			!strings.Contains(body, `"preferredVersion":{"groupVersion":"custom.metrics.k8s.io/v1beta2"`) {
			t.Errorf("/apis/custom.metrics.k8s.io = %d %s, want both versions, v1beta2 preferred", code, body)
		}
		// The multi-version client, as the HPA controller builds it.
		multi := cmclient.NewForConfig(ts.rest, podMapper(), cmclient.NewAvailableAPIsGetter(dc))
		if _, err := multi.NamespacedMetrics("ml").GetForObject(schema.GroupKind{Kind: "Pod"}, "a", "gpu_utilization", labels.Everything()); err != nil {
			t.Errorf("multi-version client: %v", err)
		}
		for _, gv := range []string{"custom.metrics.k8s.io/v1beta1", "custom.metrics.k8s.io/v1beta2"} {
			rl, err := dc.ServerResourcesForGroupVersion(gv)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range rl.APIResources {
				names = append(names, r.Name)
				if !r.Namespaced {
					t.Errorf("%s listed as cluster-scoped", r.Name)
				}
			}
			slices.Sort(names)
			want := []string{"pods/gpu_memory_used_bytes", "pods/gpu_memory_utilization", "pods/gpu_power_usage_watts", "pods/gpu_utilization"}
			if !slices.Equal(names, want) {
				t.Errorf("%s lists %v, want %v", gv, names, want)
			}
		}
	})

	t.Run("readiness and self-metrics", func(t *testing.T) {
		if code, body := ts.get(t, "/readyz"); code == http.StatusOK {
			t.Errorf("/readyz = %d before the first scrape: %s", code, body)
		}
		ts.ready.Store(true)
		if code, body := ts.get(t, "/readyz"); code != http.StatusOK {
			t.Errorf("/readyz = %d after the first scrape: %s", code, body)
		}
		code, body := ts.get(t, "/metrics")
		for _, m := range []string{"gpu_metrics_server_query_duration_seconds", "gpu_metrics_server_store_pods 2"} {
			if code != http.StatusOK || !strings.Contains(body, m) {
				t.Errorf("/metrics (HTTP %d) lacks %q", code, m)
			}
		}
	})
}

func withGroup(c *rest.Config) *rest.Config {
	c = rest.CopyConfig(c)
	gv := cmv1beta2.SchemeGroupVersion
	c.GroupVersion = &gv
	c.APIPath = "/apis"
	c.NegotiatedSerializer = cmscheme.Codecs.WithoutConversion()
	return c
}

func TestInsecureLoopback(t *testing.T) {
	st, pods, _ := fixture(t)
	ts := startServer(t, Config{Metrics: st, Pods: pods}, true)
	c, err := cmclient.NewForVersionForConfig(ts.rest, podMapper(), cmv1beta2.SchemeGroupVersion)
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.NamespacedMetrics("ml").GetForObjects(schema.GroupKind{Kind: "Pod"}, labels.Everything(), "gpu_utilization", labels.Everything())
	if err != nil || len(list.Items) != 2 {
		t.Errorf("GetForObjects = %+v, %v; want a and b", list, err)
	}

	// Not on a non-loopback address.
	o := NewOptions()
	o.SecureServing.BindAddress = net.IPv4zero
	o.InsecureLoopback = true
	_, err = New(Config{Options: o, Metrics: st, Pods: pods})
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("New(InsecureLoopback on 0.0.0.0) = %v, want a loopback error", err)
	}
}

func TestNewRequiresInputs(t *testing.T) {
	st, pods, _ := fixture(t)
	for _, c := range []Config{{Metrics: st, Pods: pods}, {Options: NewOptions(), Pods: pods}, {Options: NewOptions(), Metrics: st}} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted a missing input", c)
		}
	}
	o := NewOptions()
	o.SecureServing.BindPort = 0
	if _, err := New(Config{Options: o, Metrics: st, Pods: pods}); err == nil || !strings.Contains(err.Error(), "secure-port") {
		t.Errorf("New with --secure-port=0 = %v, want a secure-port error", err)
	}
}
