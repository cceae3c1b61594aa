//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
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
	keep := os.Getenv(envKeep) != ""
	cleanup := func() {
		stopAll()
		if keep {
			fmt.Fprintf(os.Stderr, "e2e: kept %s (kubeconfig: %s)\n", dir, filepath.Join(dir, "admin.kubeconfig"))
			return
		}
		_ = os.RemoveAll(dir)
	}

	// An interrupt stops every component before the binary exits; the
	// components also get SIGKILL (Pdeathsig) if this process dies
	// without running it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "e2e: %v: stopping the control plane\n", sig)
		if cluster != nil {
			cluster.dumpLogs(os.Stderr)
		}
		cleanup()
		os.Exit(130)
	}()

	ctx := context.Background()
	cluster, err = startControlPlane(ctx, bins, dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: starting the control plane: %v\n", err)
		cleanup()
		return 1
	}
	code := m.Run()
	if code != 0 {
		cluster.dumpLogs(os.Stderr)
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
		script, err := filepath.Abs(filepath.Join("..", "hack", "build-control-plane.sh"))
		if err != nil {
			return bins, err
		}
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
