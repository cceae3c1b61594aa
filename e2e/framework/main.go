//go:build e2e

package framework

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// Environment variables that configure the run.
const (
	// envControlPlaneDir names a directory holding kube-apiserver and
	// kube-controller-manager; unset, hack/build-control-plane.sh builds
	// (or finds in its cache) the pinned version.
	envControlPlaneDir = "GMS_CONTROL_PLANE_DIR"
	// envEtcd is the etcd binary; unset, etcd is looked up on PATH.
	envEtcd = "GMS_ETCD"
	// envKeep keeps the run directories (certificates, kubeconfig, logs)
	// instead of removing them.
	envKeep = "GMS_E2E_KEEP"
)

// modulePath is the project's module, which RepoRoot looks for.
const modulePath = "github.com/gpu-metrics-server/gpu-metrics-server"

// Main is a suite's TestMain: it starts the control plane (building it
// first when needed), hands it to use, runs the tests, and stops every
// component it or the tests started. It returns the exit code. The
// components also stop on SIGINT, SIGTERM and SIGHUP (exit 130), and get
// SIGKILL if the test binary dies without running its cleanup.
func Main(m *testing.M, cfg Config, use func(*ControlPlane)) int {
	bins, err := findControlPlane()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: the Kubernetes control plane is not available: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "gms-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: %v\n", err)
		return 1
	}
	cleanup := func() {
		stopAll()
		if keepFiles() {
			fmt.Fprintf(os.Stderr, "e2e: kept %s (kubeconfig: %s)\n", dir, filepath.Join(dir, "admin.kubeconfig"))
			return
		}
		_ = os.RemoveAll(dir)
	}

	// An interrupt stops every component before the binary exits; the
	// components also get SIGKILL (Pdeathsig) if this process dies
	// without running it.
	var cluster atomic.Pointer[ControlPlane]
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "e2e: %v: stopping the control plane\n", sig)
		if cp := cluster.Load(); cp != nil {
			cp.dumpLogs(os.Stderr)
		}
		cleanup()
		os.Exit(130)
	}()

	cp, err := startControlPlane(context.Background(), bins, dir, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: starting the control plane: %v\n", err)
		cleanup()
		return 1
	}
	cluster.Store(cp)
	use(cp)
	code := m.Run()
	if code != 0 {
		cp.dumpLogs(os.Stderr)
	}
	cleanup()
	return code
}

// findControlPlane locates etcd, kube-apiserver and
// kube-controller-manager, building the latter two when needed.
func findControlPlane() (controlPlaneBinaries, error) {
	var bins controlPlaneBinaries
	dir := os.Getenv(envControlPlaneDir)
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return bins, err
		}
		script := filepath.Join(root, "hack", "build-control-plane.sh")
		var stdout bytes.Buffer
		cmd := exec.Command("bash", script)
		cmd.Stdout = &stdout
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return bins, fmt.Errorf("%s failed (%v); it needs the Go module proxy to build k8s.io/kubernetes, or set %s to a directory holding kube-apiserver and kube-controller-manager", script, err, envControlPlaneDir)
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		dir = lines[len(lines)-1]
	}
	bins.apiserver = filepath.Join(dir, "kube-apiserver")
	bins.controllerManager = filepath.Join(dir, "kube-controller-manager")
	for _, b := range []string{bins.apiserver, bins.controllerManager} {
		if _, err := exec.LookPath(b); err != nil {
			return bins, fmt.Errorf("%s: %w", b, err)
		}
	}
	bins.etcd = os.Getenv(envEtcd)
	if bins.etcd == "" {
		bins.etcd = "etcd"
	}
	path, err := exec.LookPath(bins.etcd)
	if err != nil {
		return bins, fmt.Errorf("etcd not found (%v); run hack/install-deps.sh or set %s", err, envEtcd)
	}
	bins.etcd = path
	return bins, nil
}

// RepoRoot returns the root of the project's checkout: the nearest
// directory above the working directory (a test's package directory)
// whose go.mod declares the project's module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if declaresModule(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no directory above the working directory holds the go.mod of " + modulePath)
		}
		dir = parent
	}
}

// declaresModule reports whether the go.mod file at path declares the
// project's module.
func declaresModule(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == modulePath
		}
	}
	return false
}

// keepFiles reports whether run directories are kept (GMS_E2E_KEEP).
func keepFiles() bool {
	return os.Getenv(envKeep) != ""
}

// TempDir creates a directory with a short path (unix socket paths are
// limited to 108 bytes, too short for t.TempDir's) for one test's files
// and logs. It is removed at the end of the test unless GMS_E2E_KEEP is
// set.
func TempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if keepFiles() {
			t.Logf("kept %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	return dir
}
