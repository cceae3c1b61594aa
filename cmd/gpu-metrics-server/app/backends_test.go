package app

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestLoopbackOnly(t *testing.T) {
	h := loopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	for _, tt := range []struct {
		remote string
		want   int
	}{
		{"127.0.0.1:5000", http.StatusNoContent},
		{"127.8.9.10:5000", http.StatusNoContent},
		{"[::1]:5000", http.StatusNoContent},
		{"[::ffff:127.0.0.1]:5000", http.StatusNoContent},
		{"10.0.0.7:5000", http.StatusForbidden},
		{"192.0.2.1:1234", http.StatusForbidden},
		{"[2001:db8::1]:5000", http.StatusForbidden},
		{"[::ffff:10.0.0.1]:5000", http.StatusForbidden},
		{"0.0.0.0:5000", http.StatusForbidden},
		{"localhost:5000", http.StatusForbidden}, // not an address
		{"127.0.0.1", http.StatusForbidden},      // no port: not what net/http sets
		{"", http.StatusForbidden},
	} {
		req := httptest.NewRequest(http.MethodPost, "/sim/set?gpu=0&utilization=1", nil)
		req.RemoteAddr = tt.remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("from %q: %d, want %d", tt.remote, rec.Code, tt.want)
		}
	}
}

func TestLandingPage(t *testing.T) {
	for _, simulated := range []bool{false, true} {
		h, err := landingPage(simulated)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			path string
			want int
			has  []string
		}{
			{"/", http.StatusOK, []string{"gpu-metrics-server agent", `href="/metrics"`, `href="/healthz"`, `href="/readyz"`}},
			{"/nope", http.StatusNotFound, nil},
			{"/metricsx", http.StatusNotFound, nil},
		} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if rec.Code != tt.want {
				t.Errorf("simulated %v, %s: %d, want %d", simulated, tt.path, rec.Code, tt.want)
			}
			for _, want := range tt.has {
				if !strings.Contains(rec.Body.String(), want) {
					t.Errorf("simulated %v, %s: no %q in the page", simulated, tt.path, want)
				}
			}
			if got := strings.Contains(rec.Body.String(), "/sim/set"); tt.want == http.StatusOK && got != simulated {
				t.Errorf("simulated %v: /sim/set mentioned %v", simulated, got)
			}
		}
	}
}
