package app

import (
	"net/http"
	"net/http/httptest"
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
