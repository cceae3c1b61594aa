//go:build e2e

package framework

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// envHelm is the helm binary (as for the chart tests); unset,
// hack/build-helm.sh builds it or finds it in its cache.
const envHelm = "HELM"

var helmBin = sync.OnceValues(func() (string, error) {
	if p := os.Getenv(envHelm); p != "" {
		return exec.LookPath(p)
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	var stdout bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(root, "hack", "build-helm.sh"))
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("hack/build-helm.sh: %w (or set %s)", err, envHelm)
	}
	return strings.TrimSpace(stdout.String()), nil
})

// Helm runs helm as the cluster's admin and returns its stdout. Its cache,
// configuration and data go to the run directory, not the home directory.
func (cp *ControlPlane) Helm(ctx context.Context, args ...string) (string, error) {
	bin, err := helmBin()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig=" + cp.Kubeconfig}, args...)...)
	home := filepath.Join(cp.Dir, "helm")
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// HelmT is Helm failing the test on error.
func (cp *ControlPlane) HelmT(t testing.TB, args ...string) string {
	t.Helper()
	out, err := cp.Helm(t.Context(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ChartDir is the project's Helm chart.
func ChartDir(t testing.TB) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "deploy", "helm", "gpu-metrics-server")
}
