package delegate

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/endpoints/request"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
)

// requestInfo parses requests as the generic API server does (its
// default resolver: prefixes api and apis, api groupless).
var requestInfo = &request.RequestInfoFactory{APIPrefixes: sets.NewString("api", "apis"), GrouplessAPIPrefixes: sets.NewString("api")}

// classifyPath classifies a request for method and target (path and
// query) as the handler sees it in the API server's chain.
func classifyPath(t testing.TB, method, target string) classified {
	t.Helper()
	r := httptest.NewRequest(method, "https://example"+target, nil)
	info, err := requestInfo.NewRequestInfo(r)
	if err != nil {
		return classified{}
	}
	return classify(r.WithContext(request.WithRequestInfo(r.Context(), info)))
}

func podsMetric(name string) cmprovider.CustomMetricInfo {
	return cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "pods"}, Namespaced: true, Metric: name}
}

func TestClassify(t *testing.T) {
	const g = "/apis/custom.metrics.k8s.io"
	ns := func(metric string) cmprovider.CustomMetricInfo {
		return cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "namespaces"}, Metric: metric}
	}
	for _, tc := range []struct {
		method, path string
		want         classified
	}{
		{"GET", g + "/v1beta2/namespaces/test/pods/*/requests_per_second?labelSelector=app%3Dpodinfo", classified{kind: metric, version: "v1beta2", info: podsMetric("requests_per_second")}},
		{"GET", g + "/v1beta1/namespaces/test/pods/podinfo-0/requests_per_second", classified{kind: metric, version: "v1beta1", info: podsMetric("requests_per_second")}},
		{"GET", g + "/v1beta2/namespaces/test/pods/*/gpu_utilization?metricLabelSelector=a%3Db", classified{kind: metric, version: "v1beta2", info: podsMetric("gpu_utilization")}},
		{"GET", g + "/v1beta2/namespaces/test/metrics/requests_per_second", classified{kind: metric, version: "v1beta2", info: ns("requests_per_second")}},
		// Not a route of the library (it answers 400): the local server's.
		{"GET", g + "/v1beta2/namespaces/*/requests_per_second", classified{}},
		{"GET", g + "/v1beta2/nodes/node-1/node_load", classified{kind: metric, version: "v1beta2",
			info: cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "nodes"}, Metric: "node_load"}}},
		{"GET", g + "/v1beta2/namespaces/test/deployments.apps/web/queue_length", classified{kind: metric, version: "v1beta2",
			info: cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Group: "apps", Resource: "deployments"}, Namespaced: true, Metric: "queue_length"}}},
		{"GET", g + "/v1beta2/namespaces/test/services/*/http_requests", classified{kind: metric, version: "v1beta2",
			info: cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "services"}, Namespaced: true, Metric: "http_requests"}}},
		// Discovery of a version; the group document and the root are the
		// local server's.
		{"GET", g + "/v1beta2", classified{kind: discoveryRequest, version: "v1beta2"}},
		{"GET", g + "/v1beta1", classified{kind: discoveryRequest, version: "v1beta1"}},
		{"GET", g, classified{}},
		{"GET", "/apis", classified{}},
		// Not a metric: too few or too many parts, other verbs, other
		// groups.
		{"GET", g + "/v1beta2/namespaces/test/pods", classified{}},
		{"GET", g + "/v1beta2/namespaces/test/pods/*", classified{}},
		{"GET", g + "/v1beta2/namespaces/test/pods/*/m/extra", classified{}},
		{"GET", g + "/v1beta2/namespaces/test", classified{}},
		{"GET", g + "/v1beta2/namespaces/test/metrics", classified{}},
		{"GET", g + "/v1beta2/watch/namespaces/test/pods/*/m", classified{}},
		{"POST", g + "/v1beta2/namespaces/test/pods/*/m", classified{}},
		{"DELETE", g + "/v1beta2/namespaces/test/pods/x/m", classified{}},
		{"GET", "/apis/external.metrics.k8s.io/v1beta1/namespaces/test/queue", classified{}},
		{"GET", "/api/v1/namespaces/test/pods/x/log", classified{}},
		{"GET", "/healthz", classified{}},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			if got := classifyPath(t, tc.method, tc.path); got != tc.want {
				t.Errorf("classify = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestIsOurs(t *testing.T) {
	ours := []cmprovider.CustomMetricInfo{podsMetric("gpu_utilization"), podsMetric("gpu_power_usage_watts")}
	for _, tc := range []struct {
		info cmprovider.CustomMetricInfo
		want bool
	}{
		{podsMetric("gpu_utilization"), true},
		{podsMetric("gpu_power_usage_watts"), true},
		{podsMetric("requests_per_second"), false},
		{cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "pods"}, Metric: "gpu_utilization"}, false},
		{cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "namespaces"}, Metric: "gpu_utilization"}, false},
		{cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Group: "v1", Resource: "pods"}, Namespaced: true, Metric: "gpu_utilization"}, false},
	} {
		if got := isOurs(ours, tc.info); got != tc.want {
			t.Errorf("isOurs(%v) = %v, want %v", tc.info, got, tc.want)
		}
	}
}

// FuzzClassify: no request panics; a metric request is a GET naming a
// version, a resource and a metric, each one path segment; a discovery
// request is exactly the path of its version.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		"/apis/custom.metrics.k8s.io/v1beta2/namespaces/test/pods/*/requests_per_second",
		"/apis/custom.metrics.k8s.io/v1beta1/namespaces/test/metrics/m",
		"/apis/custom.metrics.k8s.io/v1beta2/nodes/n/m",
		"/apis/custom.metrics.k8s.io/v1beta2/namespaces/x/deployments.apps/*/m?labelSelector=a%3Db",
		"/apis/custom.metrics.k8s.io/v1beta2",
		"/apis/custom.metrics.k8s.io//namespaces//pods//",
	} {
		f.Add("GET", s)
	}
	f.Fuzz(func(t *testing.T, method, target string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \t\r\n#") || !isToken(method) {
			return
		}
		var r *http.Request
		func() {
			defer func() { _ = recover() }() // httptest.NewRequest panics on what net/http would refuse
			r = httptest.NewRequest(method, "https://example"+target, nil)
		}()
		if r == nil {
			return
		}
		c := classifyPath(t, method, target)
		switch c.kind {
		case metric:
			if method != http.MethodGet || c.version == "" || c.info.Metric == "" || c.info.GroupResource.Resource == "" {
				t.Fatalf("%s %s: metric %+v", method, target, c)
			}
			if strings.Contains(c.info.Metric, "/") || strings.Contains(c.version, "/") {
				t.Fatalf("%s %s: a path segment holds a slash: %+v", method, target, c)
			}
		case discoveryRequest:
			if r.URL.Path != groupPrefix+"/"+c.version {
				t.Fatalf("%s %s: discovery of %q", method, target, c.version)
			}
		}
	})
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, c) {
			return false
		}
	}
	return true
}
