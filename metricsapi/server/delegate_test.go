package server

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	cmv1beta1 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta1"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"
	cmclient "k8s.io/metrics/pkg/client/custom_metrics"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/delegate"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/delegate/fakeadapter"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

const (
	delegateToken = "aggregator-token"
	delegateUser  = "system:serviceaccount:gms:aggregator"
)

// startDelegate starts a fake adapter serving requests_per_second for pods
// ml/a and ml/b and a gpu_utilization of its own for ml/a, and a Delegator
// forwarding to it with delegateToken.
func startDelegate(t *testing.T, opts fakeadapter.Options) (*fakeadapter.Adapter, *delegate.Delegator) {
	t.Helper()
	opts.Tokens = map[string]string{delegateToken: delegateUser}
	opts.Allowed = []string{delegateUser}
	a := fakeadapter.Start(t, opts)
	rps := cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "pods"}, Namespaced: true, Metric: "requests_per_second"}
	a.Set(rps, "ml", "a", 4.5)
	a.Set(rps, "ml", "b", 6)
	a.Set(cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "pods"}, Namespaced: true, Metric: "gpu_utilization"}, "ml", "a", 99)
	target, err := delegate.ParseTarget(a.URL)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(delegateToken), 0o600); err != nil {
		t.Fatal(err)
	}
	tr, err := delegate.NewTransport(delegate.TransportConfig{Target: target, BearerTokenFile: tokenFile, CAFile: a.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	d, err := delegate.New(delegate.Config{Target: target, Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	return a, d
}

// TestDelegation runs the API server with a delegate: the HPA's client
// reads our gpu_utilization (never the delegate's) and the delegate's
// requests_per_second in both versions, discovery lists both, the group
// keeps v1beta2 preferred, and the delegate's self-metrics are served.
func TestDelegation(t *testing.T) {
	st, pods, _ := fixture(t)
	a, d := startDelegate(t, fakeadapter.Options{V1beta1Only: true})
	ts := startServer(t, Config{Metrics: st, Pods: pods, Delegate: d,
		Collectors: []prometheus.Collector{store.NewCollector(st), d}}, false)
	d.Refresh(t.Context())
	if !d.Up() {
		t.Fatal("the delegate is not up")
	}
	podKind := schema.GroupKind{Kind: "Pod"}
	train := labels.SelectorFromSet(labels.Set{"app": "train"})
	for _, gv := range []schema.GroupVersion{cmv1beta1.SchemeGroupVersion, cmv1beta2.SchemeGroupVersion} {
		t.Run(gv.Version, func(t *testing.T) {
			c, err := cmclient.NewForVersionForConfig(ts.rest, podMapper(), gv)
			if err != nil {
				t.Fatal(err)
			}
			before := len(a.Requests())
			ours, err := c.NamespacedMetrics("ml").GetForObjects(podKind, train, "gpu_utilization", labels.Everything())
			if err != nil || len(ours.Items) != 2 {
				t.Fatalf("gpu_utilization: %+v, %v", ours, err)
			}
			for _, it := range ours.Items {
				if it.DescribedObject.Name == "a" && it.Value.MilliValue() != 60_000 {
					t.Errorf("gpu_utilization of a = %v, want ours (60), not the delegate's 99", it.Value.String())
				}
			}
			if reqs := a.Requests()[before:]; len(reqs) != 0 {
				t.Errorf("a request for ours reached the delegate: %+v", reqs)
			}
			theirs, err := c.NamespacedMetrics("ml").GetForObjects(podKind, train, "requests_per_second", labels.Everything())
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int64{}
			for _, it := range theirs.Items {
				got[it.DescribedObject.Name] = it.Value.MilliValue()
			}
			if len(got) != 2 || got["a"] != 4500 || got["b"] != 6000 {
				t.Errorf("requests_per_second = %v (milli), want the delegate's a=4500 b=6000", got)
			}
			one, err := c.NamespacedMetrics("ml").GetForObject(podKind, "b", "requests_per_second", labels.Everything())
			if err != nil || one.Value.MilliValue() != 6000 {
				t.Errorf("requests_per_second of b = %+v, %v", one, err)
			}
			_, err = c.NamespacedMetrics("ml").GetForObjects(podKind, train, "no_such_metric", labels.Everything())
			if !apierrors.IsNotFound(err) {
				t.Errorf("an unknown metric: %v, want the delegate's 404", err)
			}
			for _, r := range a.Requests()[before:] {
				if r.User != delegateUser || !strings.HasPrefix(r.Path, "/apis/custom.metrics.k8s.io/v1beta1/") {
					t.Errorf("the delegate saw %s %s, want %s on v1beta1 (it serves only that)", r.User, r.Path, delegateUser)
				}
			}
		})
	}

	dc, err := discovery.NewDiscoveryClientForConfig(ts.rest)
	if err != nil {
		t.Fatal(err)
	}
	for _, gv := range []string{"custom.metrics.k8s.io/v1beta1", "custom.metrics.k8s.io/v1beta2"} {
		list, err := dc.ServerResourcesForGroupVersion(gv)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range list.APIResources {
			names = append(names, r.Name)
		}
		want := []string{"pods/gpu_utilization", "pods/gpu_memory_used_bytes", "pods/gpu_memory_utilization", "pods/gpu_power_usage_watts", "pods/requests_per_second"}
		if !slices.Equal(names, want) {
			t.Errorf("%s lists %v, want %v", gv, names, want)
		}
	}
	groups, err := dc.ServerGroups()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups.Groups {
		if g.Name == "custom.metrics.k8s.io" && (g.PreferredVersion.Version != "v1beta2" || len(g.Versions) != 2) {
			t.Errorf("the group document: %+v, want v1beta2 preferred of both", g)
		}
	}
	if code, body := ts.get(t, "/metrics"); code != http.StatusOK ||
		!containsAll(body, `gpu_metrics_server_delegate_up 1`, `gpu_metrics_server_delegate_requests_total{outcome="success"} 4`,
			`gpu_metrics_server_delegate_requests_total{outcome="client_error"} 2`, "gpu_metrics_server_delegate_request_duration_seconds_bucket") {
		t.Errorf("/metrics (HTTP %d) lacks the delegate's self-metrics:\n%s", code, grepLines(body, "gpu_metrics_server_delegate_requests_total", "gpu_metrics_server_delegate_up"))
	}
}

// TestDelegationAfterAuthorization: a caller the server does not authorize
// gets 403 and nothing reaches the delegate.
func TestDelegationAfterAuthorization(t *testing.T) {
	st, pods, _ := fixture(t)
	a, d := startDelegate(t, fakeadapter.Options{})
	ts := startServerWith(t, Config{Metrics: st, Pods: pods, Delegate: d, Collectors: []prometheus.Collector{d}}, false,
		func(o *Options) { o.Authorization.AlwaysAllowGroups = nil })
	for _, path := range []string{
		"/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/pods/*/requests_per_second?labelSelector=app%3Dtrain",
		"/apis/custom.metrics.k8s.io/v1beta1/namespaces/ml/pods/a/requests_per_second",
		"/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/metrics/requests_per_second",
		"/apis/custom.metrics.k8s.io/v1beta2",
	} {
		if code, body := ts.get(t, path); code != http.StatusForbidden {
			t.Errorf("%s as an unauthorized caller: %d %s, want 403", path, code, body)
		}
	}
	if reqs := a.Requests(); len(reqs) != 0 {
		t.Errorf("requests of an unauthorized caller reached the delegate: %+v", reqs)
	}
}

// grepLines returns the lines of s that contain one of subs.
func grepLines(s string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
