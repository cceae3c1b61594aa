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

// envHelm is the helm binary; unset, hack/build-helm.sh builds (or finds in
// its cache) the pinned version.
const envHelm = "HELM"

var helmBinary struct {
	once sync.Once
	path string
	err  error
}

// HelmBinary returns helm ($HELM, else hack/build-helm.sh's cached build).
func HelmBinary(t testing.TB) string {
	t.Helper()
	helmBinary.once.Do(func() {
		if p := os.Getenv(envHelm); p != "" {
			helmBinary.path = p
			return
		}
		root, err := RepoRoot()
		if err != nil {
			helmBinary.err = err
			return
		}
		out, err := exec.Command("bash", filepath.Join(root, "hack", "build-helm.sh")).Output()
		if err != nil {
			helmBinary.err = fmt.Errorf("hack/build-helm.sh: %w (set %s to a helm binary)", err, envHelm)
			return
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		helmBinary.path = lines[len(lines)-1]
	})
	if helmBinary.err != nil {
		t.Fatal(helmBinary.err)
	}
	return helmBinary.path
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

// Helm runs helm as the admin against the cluster, with its own
// configuration and cache directories under dir, and returns its stdout;
// the error holds its stderr.
func (cp *ControlPlane) Helm(ctx context.Context, t testing.TB, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, HelmBinary(t), args...)
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+cp.Kubeconfig,
		"HELM_CONFIG_HOME="+filepath.Join(dir, "helm-config"),
		"HELM_CACHE_HOME="+filepath.Join(dir, "helm-cache"),
		"HELM_DATA_HOME="+filepath.Join(dir, "helm-data"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
