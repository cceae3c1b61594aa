package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestCheckNamespace: a custom metrics path naming an invalid namespace is
// answered 400 before the provider sees it.
func TestCheckNamespace(t *testing.T) {
	h := checkMetricLabelSelector(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	base := "/apis/custom.metrics.k8s.io/v1beta2/"
	for _, tt := range []struct {
		name, path string
		want       int
	}{
		{"valid", base + "namespaces/ml/pods/*/gpu_utilization", http.StatusOK},
		{"not namespaced", base + "nodes/*/gpu_utilization", http.StatusOK},
		{"discovery", base, http.StatusOK},
		{"namespace list", base + "namespaces", http.StatusOK},
		{"dot dot", base + "namespaces/../pods/*/gpu_utilization", http.StatusBadRequest},
		{"NUL", base + "namespaces/a\x00b/pods/*/gpu_utilization", http.StatusBadRequest},
		{"upper case", base + "namespaces/ML/pods/*/gpu_utilization", http.StatusBadRequest},
		{"100 KB", base + "namespaces/" + strings.Repeat("a", 100_000) + "/pods/*/gpu_utilization", http.StatusBadRequest},
		{"empty", base + "namespaces//pods/*/gpu_utilization", http.StatusBadRequest},
		{"other API untouched", "/apis/other/v1/namespaces/../x", http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.URL.Path = tt.path
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("%.80q: %d, want %d", tt.path, rec.Code, tt.want)
			}
			if rec.Code == http.StatusBadRequest && len(rec.Body.String()) > 2000 {
				t.Errorf("the answer echoes the whole namespace: %d bytes", rec.Body.Len())
			}
		})
	}
}
