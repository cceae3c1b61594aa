package delegate

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	genericapifilters "k8s.io/apiserver/pkg/endpoints/filters"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	cmv1beta1 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta1"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	wait "github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/delegate/fakeadapter"
)

const (
	// ourToken is the credential this server presents to the delegate;
	// ourUser is who the fake adapter takes it for.
	ourToken = "our-service-account-token"
	ourUser  = "system:serviceaccount:gms:gpu-metrics-server-aggregator"
	// callerToken is a caller's credential, which must never reach the
	// delegate.
	callerToken = "the-callers-own-token"
	group       = "/apis/custom.metrics.k8s.io"
)

// oursProvider is the local server's metric list: pods/gpu_utilization.
// Its values are never read: the local handler is a stub.
type oursProvider struct{}

func (oursProvider) ListAllMetrics() []cmprovider.CustomMetricInfo {
	return []cmprovider.CustomMetricInfo{podsMetric("gpu_utilization")}
}

func (oursProvider) GetMetricByName(context.Context, types.NamespacedName, cmprovider.CustomMetricInfo, labels.Selector) (*custom_metrics.MetricValue, error) {
	return nil, fmt.Errorf("not used")
}

func (oursProvider) GetMetricBySelector(context.Context, string, labels.Selector, cmprovider.CustomMetricInfo, labels.Selector) (*custom_metrics.MetricValueList, error) {
	return nil, fmt.Errorf("not used")
}

// local stands for the API server's own handler: it answers 200 "local".
type local struct{}

func (local) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	_, _ = io.WriteString(w, "local")
}

// env is a Delegator in front of a fake adapter, served over plain HTTP
// behind the request-info filter the API server runs it behind.
type env struct {
	t       *testing.T
	adapter *fakeadapter.Adapter
	d       *Delegator
	local   *local
	url     string
}

func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newEnv(t *testing.T, opts fakeadapter.Options, cfg Config) *env {
	t.Helper()
	if opts.Tokens == nil {
		opts.Tokens = map[string]string{ourToken: ourUser, callerToken: "the-caller"}
		opts.Allowed = []string{ourUser, "the-caller"}
	}
	a := fakeadapter.Start(t, opts)
	if cfg.Target.URL == nil {
		target, err := ParseTarget(a.URL)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Target = target
	}
	if cfg.Transport == nil {
		tr, err := NewTransport(TransportConfig{Target: cfg.Target, BearerTokenFile: writeFile(t, "token", ourToken), CAFile: a.CAFile})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Transport = tr
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = wait.DefaultTimeout
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, adapter: a, d: d, local: &local{}}
	srv := httptest.NewServer(genericapifilters.WithRequestInfo(d.Handler(e.local, oursProvider{}), requestInfo))
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

// get requests path through the Delegator with the given headers.
func (e *env) get(path string, header map[string]string) (int, string, http.Header) {
	e.t.Helper()
	return get(e.t, http.DefaultClient, e.url+path, header)
}

func get(t testing.TB, c *http.Client, url string, header map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// direct requests path from the fake adapter itself, with our token.
func (e *env) direct(path string) (int, string) {
	e.t.Helper()
	pool := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	code, body, _ := get(e.t, pool, e.adapter.URL+path, map[string]string{"Authorization": "Bearer " + ourToken, "Accept": "application/json"})
	return code, body
}

func (e *env) outcomes() map[string]float64 {
	out := map[string]float64{}
	for _, o := range []string{outcomeSuccess, outcomeClientError, outcomeServerError, outcomeTimeout, outcomeUnreachable, outcomeBadResponse, outcomeOverloaded, outcomeCanceled} {
		if v := testutil.ToFloat64(e.d.metrics.requests.WithLabelValues(o)); v > 0 {
			out[o] = v
		}
	}
	return out
}

func nsMetric(name string) cmprovider.CustomMetricInfo {
	return cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "namespaces"}, Metric: name}
}

// seedAdapter gives the fake adapter the seed user's request rate on two
// pods and their namespace, a Deployment's queue length, a node's load,
// and a gpu_utilization of its own (which ours must shadow).
func seedAdapter(a *fakeadapter.Adapter) {
	a.Set(podsMetric("requests_per_second"), "test", "podinfo-0", 4.5)
	a.Set(podsMetric("requests_per_second"), "test", "podinfo-1", 5.5)
	a.Set(nsMetric("requests_per_second"), "", "test", 10)
	a.Set(cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Group: "apps", Resource: "deployments"}, Namespaced: true, Metric: "queue_length"}, "test", "web", 7)
	a.Set(cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "nodes"}, Metric: "node_load"}, "", "node-1", 0.25)
	a.Set(podsMetric("gpu_utilization"), "test", "podinfo-0", 99)
}

// TestForwardedUnchanged: every metric the local server does not serve is
// answered by the delegate, status code and body exactly as the delegate
// gives them to a direct request; ours never reach it.
func TestForwardedUnchanged(t *testing.T) {
	e := newEnv(t, fakeadapter.Options{}, Config{})
	seedAdapter(e.adapter)
	for _, path := range []string{
		group + "/v1beta2/namespaces/test/pods/*/requests_per_second?labelSelector=app%3Dpodinfo",
		group + "/v1beta1/namespaces/test/pods/*/requests_per_second?labelSelector=app%3Dpodinfo",
		group + "/v1beta2/namespaces/test/pods/podinfo-1/requests_per_second",
		group + "/v1beta2/namespaces/test/pods/*/requests_per_second?metricLabelSelector=destination_workload%3Dpodinfo",
		group + "/v1beta2/namespaces/test/metrics/requests_per_second",
		group + "/v1beta1/namespaces/test/metrics/requests_per_second",
		group + "/v1beta2/namespaces/test/deployments.apps/web/queue_length",
		group + "/v1beta2/nodes/node-1/node_load",
		group + "/v1beta2/nodes/*/node_load",
		// Errors too: an unknown metric and an unknown pod.
		group + "/v1beta2/namespaces/test/pods/*/no_such_metric",
		group + "/v1beta2/namespaces/test/pods/podinfo-9/requests_per_second",
	} {
		t.Run(path, func(t *testing.T) {
			before := len(e.adapter.Requests())
			code, body, hdr := e.get(path, map[string]string{"Accept": "application/json"})
			wantCode, wantBody := e.direct(path)
			if code != wantCode || body != wantBody {
				t.Errorf("through the delegator: %d %s\ndirect: %d %s", code, body, wantCode, wantBody)
			}
			if !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
				t.Errorf("Content-Type %q", hdr.Get("Content-Type"))
			}
			reqs := e.adapter.Requests()[before:]
			if len(reqs) != 2 {
				t.Fatalf("the adapter saw %d requests, want 2 (forwarded and direct)", len(reqs))
			}
			if want, _, _ := strings.Cut(strings.TrimPrefix(path, ""), "?"); reqs[0].Path != want {
				t.Errorf("forwarded path %q, want %q", reqs[0].Path, want)
			}
			if _, q, _ := strings.Cut(path, "?"); reqs[0].Query != q {
				t.Errorf("forwarded query %q, want %q", reqs[0].Query, q)
			}
		})
	}
	// Ours: the local handler, never the delegate, whatever it lists.
	before := len(e.adapter.Requests())
	for _, v := range []string{"v1beta1", "v1beta2"} {
		path := group + "/" + v + "/namespaces/test/pods/*/gpu_utilization"
		if code, body, _ := e.get(path, nil); code != http.StatusOK || body != "local" {
			t.Errorf("%s: %d %q, want the local answer", path, code, body)
		}
	}
	// Not metric requests: the local server's too.
	for _, path := range []string{group, group + "/v1beta2/namespaces/test/pods", group + "/v1/namespaces/test/pods/*/requests_per_second", "/healthz"} {
		if code, body, _ := e.get(path, nil); code != http.StatusOK || body != "local" {
			t.Errorf("%s: %d %q, want the local answer", path, code, body)
		}
	}
	if reqs := e.adapter.Requests()[before:]; len(reqs) != 0 {
		t.Errorf("requests for ours reached the delegate: %+v", reqs)
	}
	if got := e.outcomes(); got[outcomeSuccess] != 9 || got[outcomeClientError] != 2 || len(got) != 2 {
		t.Errorf("outcomes %v, want 9 success and 2 client_error", got)
	}
}

// TestCallerIdentityNotForwarded: the delegate sees our credentials and none
// of the caller's identity headers.
func TestCallerIdentityNotForwarded(t *testing.T) {
	e := newEnv(t, fakeadapter.Options{}, Config{})
	seedAdapter(e.adapter)
	code, body, _ := e.get(group+"/v1beta2/namespaces/test/pods/*/requests_per_second", map[string]string{
		"Authorization":            "Bearer " + callerToken,
		"Impersonate-User":         "system:admin",
		"Impersonate-Group":        "system:masters",
		"Impersonate-Uid":          "0",
		"Impersonate-Extra-Scopes": "all",
		"X-Remote-User":            "system:admin",
		"X-Remote-Group":           "system:masters",
		"X-Remote-Extra-Scopes":    "all",
		"Cookie":                   "session=secret",
		"X-Forwarded-For":          "10.0.0.1",
	})
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	reqs := e.adapter.Requests()
	if len(reqs) != 1 {
		t.Fatalf("the adapter saw %d requests", len(reqs))
	}
	r := reqs[0]
	if r.User != ourUser || r.Header.Get("Authorization") != "Bearer "+ourToken {
		t.Errorf("the delegate saw user %q with Authorization %q, want %s with our token", r.User, r.Header.Get("Authorization"), ourUser)
	}
	for name := range r.Header {
		lower := strings.ToLower(name)
		if strings.HasPrefix(lower, "impersonate-") || strings.HasPrefix(lower, "x-remote-") || lower == "cookie" || lower == "x-forwarded-for" {
			t.Errorf("the caller's header %s reached the delegate: %q", name, r.Header.Values(name))
		}
	}
}

// TestV1beta1OnlyDelegate: a delegate that serves only v1beta1 answers
// v1beta2 requests through the library's conversions, both ways.
func TestV1beta1OnlyDelegate(t *testing.T) {
	e := newEnv(t, fakeadapter.Options{V1beta1Only: true}, Config{})
	seedAdapter(e.adapter)
	e.d.Refresh(t.Context())
	if !e.d.Up() {
		t.Fatal("the delegate is not up after a refresh")
	}
	if got := e.d.versionFor("v1beta2"); got != "v1beta1" {
		t.Fatalf("v1beta2 requests go to the delegate in %s, want v1beta1", got)
	}

	path := "/namespaces/test/pods/*/requests_per_second?metricLabelSelector=destination_workload%3Dpodinfo"
	code, body, _ := e.get(group+"/v1beta2"+path, map[string]string{"Accept": "application/json"})
	if code != http.StatusOK {
		t.Fatalf("v1beta2 request: %d %s", code, body)
	}
	reqs := e.adapter.Requests()
	if last := reqs[len(reqs)-1]; last.Path != group+"/v1beta1/namespaces/test/pods/*/requests_per_second" || last.Query != "metricLabelSelector=destination_workload%3Dpodinfo" {
		t.Errorf("the delegate was asked %s?%s, want the v1beta1 path with the same query", last.Path, last.Query)
	}
	var v2 cmv1beta2.MetricValueList
	if err := json.Unmarshal([]byte(body), &v2); err != nil {
		t.Fatal(err)
	}
	_, v1body := e.direct(group + "/v1beta1" + path)
	var v1 cmv1beta1.MetricValueList
	if err := json.Unmarshal([]byte(v1body), &v1); err != nil {
		t.Fatal(err)
	}
	if v2.APIVersion != "custom.metrics.k8s.io/v1beta2" || v2.Kind != "MetricValueList" || len(v2.Items) != 2 || len(v1.Items) != 2 {
		t.Fatalf("converted answer %s, want a v1beta2 MetricValueList of 2 items (the delegate's: %s)", body, v1body)
	}
	for i, it := range v2.Items {
		want := v1.Items[i]
		if it.DescribedObject != want.DescribedObject || it.Metric.Name != want.MetricName || it.Value.Cmp(want.Value) != 0 ||
			!it.Timestamp.Equal(&want.Timestamp) || it.Metric.Selector == nil || metav1.FormatLabelSelector(it.Metric.Selector) != "destination_workload=podinfo" {
			t.Errorf("item %d: %+v, the delegate's %+v", i, it, want)
		}
	}

	// Errors are passed back unchanged, and v1beta1 is not converted.
	code, body, _ = e.get(group+"/v1beta2/namespaces/test/pods/*/no_such_metric", map[string]string{"Accept": "application/json"})
	wantCode, wantBody := e.direct(group + "/v1beta1/namespaces/test/pods/*/no_such_metric")
	if code != http.StatusNotFound || code != wantCode || body != wantBody {
		t.Errorf("an error: %d %s, want the delegate's %d %s", code, body, wantCode, wantBody)
	}
	code, body, _ = e.get(group+"/v1beta1"+path, map[string]string{"Accept": "application/json"})
	if code != http.StatusOK || body != v1body {
		t.Errorf("v1beta1: %d %s, want the delegate's %s", code, body, v1body)
	}
	// The discovery of v1beta2 lists the delegate's v1beta1 metrics.
	if names := e.discovery("v1beta2"); !slices.Contains(names, "pods/requests_per_second") {
		t.Errorf("v1beta2 discovery %v lacks the delegate's pods/requests_per_second", names)
	}
}

// discovery returns the resource names of a version's discovery through
// the Delegator.
func (e *env) discovery(v string) []string {
	e.t.Helper()
	code, body, _ := e.get(group+"/"+v, map[string]string{"Accept": "application/json"})
	if code != http.StatusOK {
		e.t.Fatalf("discovery of %s: %d %s", v, code, body)
	}
	var list metav1.APIResourceList
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		e.t.Fatal(err)
	}
	if list.GroupVersion != "custom.metrics.k8s.io/"+v {
		e.t.Errorf("discovery of %s is of %q", v, list.GroupVersion)
	}
	var names []string
	for _, r := range list.APIResources {
		names = append(names, r.Name)
	}
	return names
}

// TestDiscoveryUnion: each version lists ours, then the delegate's that are
// not ours (ours win); a delegate that goes down keeps its last known list
// and is reported down until a refresh succeeds again.
func TestDiscoveryUnion(t *testing.T) {
	e := newEnv(t, fakeadapter.Options{}, Config{Timeout: 200 * time.Millisecond})
	seedAdapter(e.adapter)
	if names := e.discovery("v1beta2"); !slices.Equal(names, []string{"pods/gpu_utilization"}) {
		t.Errorf("before the first refresh: %v, want ours only", names)
	}
	e.d.Refresh(t.Context())
	want := []string{"pods/gpu_utilization", "deployments.apps/queue_length", "namespaces/requests_per_second", "nodes/node_load", "pods/requests_per_second"}
	for _, v := range []string{"v1beta1", "v1beta2"} {
		if got := e.discovery(v); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", v, got, want)
		}
	}
	if !e.d.Up() || testutil.ToFloat64(e.d.metrics.up) != 1 || testutil.ToFloat64(e.d.metrics.shadowed) != 1 {
		t.Errorf("up %v (metric %v), shadowed %v; want up and 1 shadowed (pods/gpu_utilization)",
			e.d.Up(), testutil.ToFloat64(e.d.metrics.up), testutil.ToFloat64(e.d.metrics.shadowed))
	}

	// Down: every request to it hangs past the timeout.
	e.adapter.Hang()
	e.d.Refresh(t.Context())
	if e.d.Up() || testutil.ToFloat64(e.d.metrics.up) != 0 {
		t.Error("a refresh that timed out left the delegate up")
	}
	if got := e.discovery("v1beta2"); !slices.Equal(got, want) {
		t.Errorf("down: %v, want the last known %v", got, want)
	}
	e.adapter.Release()
	e.adapter.Set(podsMetric("queue_depth"), "test", "worker-0", 3)
	e.d.Refresh(t.Context())
	if !e.d.Up() || !slices.Contains(e.discovery("v1beta2"), "pods/queue_depth") {
		t.Error("back: not up, or the new metric is not listed")
	}
	if f, s := testutil.ToFloat64(e.d.metrics.refreshes.WithLabelValues("failure")), testutil.ToFloat64(e.d.metrics.refreshes.WithLabelValues("success")); f != 1 || s != 2 {
		t.Errorf("refreshes: %v failed, %v succeeded; want 1 and 2", f, s)
	}
}

// TestNotAnAdapter: a delegate that serves no custom metrics is down; its
// answers to the forwarded requests are still passed back.
func TestNotAnAdapter(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, "nothing here")
	}))
	defer srv.Close()
	target, err := ParseTarget(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, fakeadapter.Options{}, Config{Target: target, Transport: srv.Client().Transport})
	e.d.Refresh(t.Context())
	if e.d.Up() {
		t.Error("a server without custom.metrics.k8s.io is up")
	}
	code, body, hdr := e.get(group+"/v1beta2/namespaces/test/pods/*/requests_per_second", nil)
	if code != http.StatusNotFound || body != "nothing here" || hdr.Get("Content-Type") != "text/plain" {
		t.Errorf("%d %q %q, want the delegate's 404", code, body, hdr.Get("Content-Type"))
	}
	if names := e.discovery("v1beta1"); !slices.Equal(names, []string{"pods/gpu_utilization"}) {
		t.Errorf("discovery %v, want ours only", names)
	}
}

// status decodes a metav1.Status body.
func status(t testing.TB, body string) metav1.Status {
	t.Helper()
	var s metav1.Status
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("not a Status: %v: %s", err, body)
	}
	return s
}

// TestDelegateTimeout: a delegate that does not answer in time gives 503
// naming it; ours are not affected.
func TestDelegateTimeout(t *testing.T) {
	e := newEnv(t, fakeadapter.Options{}, Config{Timeout: 100 * time.Millisecond})
	seedAdapter(e.adapter)
	e.adapter.Hang()
	code, body, _ := e.get(group+"/v1beta2/namespaces/test/pods/*/requests_per_second", map[string]string{"Accept": "application/json"})
	s := status(t, body)
	if code != http.StatusServiceUnavailable || s.Code != http.StatusServiceUnavailable || s.Reason != metav1.StatusReasonServiceUnavailable ||
		!strings.Contains(s.Message, e.d.Target().String()) || !strings.Contains(s.Message, "did not answer within 100ms") {
		t.Errorf("%d %+v, want 503 naming the delegate and the timeout", code, s)
	}
	if code, body, _ := e.get(group+"/v1beta2/namespaces/test/pods/*/gpu_utilization", nil); code != http.StatusOK || body != "local" {
		t.Errorf("ours while the delegate hangs: %d %q", code, body)
	}
	if got := e.outcomes(); got[outcomeTimeout] != 1 || len(got) != 1 {
		t.Errorf("outcomes %v, want 1 timeout", got)
	}
	if n := testutil.CollectAndCount(e.d.metrics.duration); n != 1 {
		t.Errorf("%d latency histograms, want the timeout's", n)
	}
}

// TestUnreachableDelegate: nothing listens at the target: 503 naming it,
// and the delegate is down.
func TestUnreachableDelegate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	target, err := ParseTarget("https://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, fakeadapter.Options{}, Config{Target: target})
	e.d.Refresh(t.Context())
	if e.d.Up() {
		t.Error("an unreachable delegate is up")
	}
	code, body, _ := e.get(group+"/v1beta1/namespaces/test/pods/*/requests_per_second", map[string]string{"Accept": "application/json"})
	if s := status(t, body); code != http.StatusServiceUnavailable || !strings.Contains(s.Message, "https://"+addr+" is unreachable") {
		t.Errorf("%d %+v, want 503 naming the delegate", code, s)
	}
	if s := status(t, body); s.APIVersion != "v1" || s.Kind != "Status" {
		t.Errorf("not a v1 Status: %+v", s)
	}
	if got := e.outcomes(); got[outcomeUnreachable] != 1 || len(got) != 1 {
		t.Errorf("outcomes %v, want 1 unreachable", got)
	}
}

// TestOursWhileDelegateHangs: requests hanging on the delegate (no timeout
// in sight) take at most MaxInFlight slots; beyond, delegated requests get
// 503 at once, and ours are answered all along.
func TestOursWhileDelegateHangs(t *testing.T) {
	const slots = 4
	e := newEnv(t, fakeadapter.Options{}, Config{Timeout: time.Hour, MaxInFlight: slots})
	seedAdapter(e.adapter)
	e.adapter.Hang()
	var wg sync.WaitGroup
	codes := make(chan int, slots)
	for range slots {
		wg.Go(func() {
			code, _, _ := e.get(group+"/v1beta2/namespaces/test/pods/*/requests_per_second", nil)
			codes <- code
		})
	}
	wait.Eventually(t, fmt.Sprintf("%d requests to wait on the delegate", slots), func() bool {
		return testutil.ToFloat64(e.d.metrics.inFlight) == slots
	})
	for range 20 {
		if code, body, _ := e.get(group+"/v1beta2/namespaces/test/pods/*/gpu_utilization", nil); code != http.StatusOK || body != "local" {
			t.Fatalf("ours while the delegate hangs: %d %q", code, body)
		}
	}
	code, body, _ := e.get(group+"/v1beta2/namespaces/test/pods/*/requests_per_second", map[string]string{"Accept": "application/json"})
	if s := status(t, body); code != http.StatusServiceUnavailable || !strings.Contains(s.Message, "4 requests are already waiting") {
		t.Errorf("one more delegated request: %d %+v, want 503 at once", code, s)
	}
	e.adapter.Release()
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusOK {
			t.Errorf("a released request: %d", code)
		}
	}
	if got := e.outcomes(); got[outcomeOverloaded] != 1 || got[outcomeSuccess] != slots {
		t.Errorf("outcomes %v, want %d success and 1 overloaded", got, slots)
	}
}

// TestDelegatorCollector: the self-metrics are one registrable collector.
func TestDelegatorCollector(t *testing.T) {
	e := newEnv(t, fakeadapter.Options{}, Config{})
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(e.d); err != nil {
		t.Fatal(err)
	}
	e.d.Refresh(t.Context())
	n, err := testutil.GatherAndCount(reg, "gpu_metrics_server_delegate_up", "gpu_metrics_server_delegate_requests_total",
		"gpu_metrics_server_delegate_discovery_refreshes_total", "gpu_metrics_server_delegate_discovered_metrics")
	if err != nil || n != 1+8+2+2 {
		t.Errorf("%d series, %v", n, err)
	}
}
