package app

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
)

// TestNameFor: installed as kubectl-gpu the binary calls itself "kubectl
// gpu"; under any other name, gpu-metrics-server.
func TestNameFor(t *testing.T) {
	for _, tc := range []struct{ argv0, want string }{
		{"/usr/bin/gpu-metrics-server", "gpu-metrics-server"},
		{"bin/kubectl-gpu", "kubectl gpu"},
		{"kubectl-gpu", "kubectl gpu"},
		{"/home/u/.krew/bin/kubectl-gpu_metrics", "kubectl gpu_metrics"},
		{"kubectl-gpu-top", "kubectl gpu top"},
		{"kubectl-", "gpu-metrics-server"},
		{"./gms", "gpu-metrics-server"},
	} {
		if got := nameFor(tc.argv0); got != tc.want {
			t.Errorf("nameFor(%q) = %q, want %q", tc.argv0, got, tc.want)
		}
	}
}

// testRoot is the command tree named name, without the logging setup the
// root applies once per process.
func testRoot(name string, args ...string) *cobra.Command {
	root := newRootCommand(name)
	root.PersistentPreRunE = nil
	root.SetArgs(args)
	root.SetOut(&bytes.Buffer{})
	return root
}

// noMetricsAPI is a kube-apiserver whose discovery lists no
// custom.metrics.k8s.io.
func noMetricsAPI(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api":
			fmt.Fprint(w, `{"kind":"APIVersions","versions":["v1"]}`)
		case "/apis":
			fmt.Fprint(w, `{"kind":"APIGroupList","apiVersion":"v1","groups":[]}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// kubeconfig writes a kubeconfig with the contexts "good" (server good)
// and "broken" (nothing listens), current being current.
func kubeconfig(t *testing.T, good, current string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: good
  cluster: {server: %q}
- name: broken
  cluster: {server: "http://127.0.0.1:1"}
users:
- name: u
  user: {}
contexts:
- name: good
  context: {cluster: good, user: u, namespace: team-a}
- name: broken
  context: {cluster: broken, user: u}
current-context: %s
`, good, current)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTopPodsResolvesKubeconfigAsKubectl: --kubeconfig, $KUBECONFIG and
// --context pick the cluster as kubectl does, and a cluster without the
// custom metrics API gets one error line pointing at doctor, exit 1.
func TestTopPodsResolvesKubeconfigAsKubectl(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	server := noMetricsAPI(t)
	tests := []struct {
		name    string
		current string
		env     bool
		args    []string
	}{
		{"--kubeconfig, current context", "good", false, nil},
		{"--kubeconfig --context", "broken", false, []string{"--context=good"}},
		{"$KUBECONFIG", "good", true, nil},
		{"$KUBECONFIG --context", "broken", true, []string{"--context=good"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := kubeconfig(t, server, tc.current)
			args := append([]string{"top", "pods"}, tc.args...)
			if tc.env {
				t.Setenv("KUBECONFIG", path)
			} else {
				t.Setenv("KUBECONFIG", "")
				args = append(args, "--kubeconfig="+path)
			}
			err := testRoot("kubectl gpu", args...).Execute()
			var exit *exitError
			if !errors.As(err, &exit) || exit.code != 1 {
				t.Fatalf("Execute = %v, want an exit status 1 error", err)
			}
			const want = `the custom metrics API (custom.metrics.k8s.io) is not registered in this cluster: no APIService serves it; run "kubectl gpu doctor" to find out why`
			if err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
		})
	}
}

// TestTopPodsNoConfiguration: no kubeconfig anywhere and no cluster: one
// error line saying so.
func TestTopPodsNoConfiguration(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	t.Setenv("HOME", t.TempDir())
	err := testRoot("gpu-metrics-server", "top", "pods").Execute()
	var exit *exitError
	if !errors.As(err, &exit) || exit.code != 1 || !strings.Contains(err.Error(), "no Kubernetes configuration") {
		t.Errorf("Execute = %v, want exit 1 naming the missing configuration", err)
	}
}

// TestDoctorCannotRun: no kube-apiserver answers: exit status 2, one error
// line; invalid flags: exit status 2 through the usage path.
func TestDoctorCannotRun(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	path := kubeconfig(t, "http://127.0.0.1:1", "broken")
	err := testRoot("kubectl gpu", "doctor", "--kubeconfig="+path).Execute()
	var exit *exitError
	if !errors.As(err, &exit) || exit.code != doctorCannotRun || !strings.Contains(err.Error(), "cannot run: kube-apiserver") {
		t.Errorf("Execute = %v, want exit status 2 saying kube-apiserver cannot be reached", err)
	}
	err = testRoot("kubectl gpu", "doctor", "--pod=a", "--hpa=b", "-o=yaml").Execute()
	var fe *options.FlagError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "--output") || !strings.Contains(err.Error(), "--hpa") {
		t.Errorf("Execute = %v, want FlagErrors for --output and --hpa", err)
	}
}

// TestTopNodesCommand: top nodes takes the listing flags but the
// namespace ones, and a cluster without the custom metrics API gets one
// error line pointing at doctor, exit 1.
func TestTopNodesCommand(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	path := kubeconfig(t, noMetricsAPI(t), "good")
	err := testRoot("kubectl gpu", "top", "nodes", "--kubeconfig="+path, "-l", "pool=a", "--sort-by=power", "-o", "wide").Execute()
	var exit *exitError
	const want = `the custom metrics API (custom.metrics.k8s.io) is not registered in this cluster: no APIService serves it; run "kubectl gpu doctor" to find out why`
	if !errors.As(err, &exit) || exit.code != 1 || err.Error() != want {
		t.Errorf("Execute = %v, want exit 1 with %q", err, want)
	}
	for _, args := range [][]string{{"-A"}, {"--namespace=x"}, {"--sort-by=cpu"}, {"-o", "yaml"}} {
		err := testRoot("gpu-metrics-server", append([]string{"top", "nodes", "--kubeconfig=" + path}, args...)...).Execute()
		if err == nil || errors.As(err, &exit) && exit.code == 1 {
			t.Errorf("top nodes %v = %v, want a usage error", args, err)
		}
	}
}
