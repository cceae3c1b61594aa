package server

import (
	"crypto/tls"
	"net/http"
	"testing"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

// TestInsecureLoopbackImpersonation: on the demo's loopback API, which
// serves everyone, impersonation headers change nothing; they made a 500.
func TestInsecureLoopbackImpersonation(t *testing.T) {
	st, pods, _ := fixture(t)
	ts := startServer(t, Config{Metrics: st, Pods: pods}, true)
	ts.ready.Store(true)
	path := "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/pods/*/gpu_utilization"
	for _, tt := range []struct {
		name    string
		headers map[string]string
	}{
		{"none", nil},
		{"user", map[string]string{"Impersonate-User": "alice"}},
		{"user and group", map[string]string{"Impersonate-User": "alice", "Impersonate-Group": "admins"}},
		{"service account", map[string]string{"Impersonate-User": "system:serviceaccount:kube-system:hpa"}},
		{"uid", map[string]string{"Impersonate-User": "alice", "Impersonate-Uid": "1234"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, ts.url+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: testutil.DefaultTimeout}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status %d, want 200", resp.StatusCode)
			}
		})
	}
}
