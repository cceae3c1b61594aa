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
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// Environment variables that configure the run.
const (
	// envControlPlaneDir names a directory holding kube-apiserver,
	// kube-controller-manager, kube-scheduler and kubelet; unset,
	// hack/build-control-plane.sh builds (or finds in its cache) the
	// pinned version.
	envControlPlaneDir = "GMS_CONTROL_PLANE_DIR"
	// envFakeCRI and envDevicePlugin are the node's test commands
	// (hack/fakecri, hack/deviceplugin); unset, they are built.
	envFakeCRI      = "GMS_FAKECRI"
	envDevicePlugin = "GMS_DEVICE_PLUGIN"
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
// SIGKILL if the test binary dies without running its cleanup. At the
// end, interrupted or not, it checks that the run left nothing on the
// host (see hostState.leftovers) and fails loudly if it did.
func Main(m *testing.M, cfg Config, use func(*ControlPlane)) int {
	before := readHostState()
	dir, err := os.MkdirTemp("", "gms-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: %v\n", err)
		return 1
	}
	var cluster atomic.Pointer[ControlPlane]
	var cleanupOnce sync.Once
	code := 0
	// cleanup stops everything, removes the run's files and checks the
	// host; it returns false when something was left behind.
	cleanup := func() bool {
		clean := true
		cleanupOnce.Do(func() {
			// Nodes still running (an interrupted test's, then the
			// suite's) while the API server still answers, then the
			// control plane, then anything else.
			cp := cluster.Load()
			live, _, _ := nodes.snapshot()
			for _, n := range live {
				if cp != nil && n == cp.CPUNode {
					continue
				}
				if err := n.Stop(); err != nil {
					fmt.Fprintf(os.Stderr, "e2e: FAIL: stopping node %s: %v\n", n.Name, err)
					clean = false
				}
			}
			if cp != nil {
				if err := cp.stop(); err != nil {
					fmt.Fprintf(os.Stderr, "e2e: FAIL: stopping the control plane: %v\n", err)
					clean = false
				}
			}
			stopAll()
			if keepFiles() {
				fmt.Fprintf(os.Stderr, "e2e: kept %s (kubeconfig: %s)\n", dir, filepath.Join(dir, "admin.kubeconfig"))
			} else {
				_ = os.RemoveAll(dir)
			}
			if left := before.leftovers(); len(left) > 0 {
				fmt.Fprintf(os.Stderr, "e2e: FAIL: the run left %d things on the host:\n  %s\n", len(left), strings.Join(left, "\n  "))
				clean = false
			}
		})
		return clean
	}

	// An interrupt stops every component before the binary exits; the
	// components also get SIGKILL (Pdeathsig) if this process dies
	// without running it.
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

	bins, err := findControlPlane(cfg, dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: the Kubernetes control plane is not available: %v\n", err)
		cleanup()
		return 1
	}
	cp, err := startControlPlane(context.Background(), bins, dir, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: starting the control plane: %v\n", err)
		cleanup()
		return 1
	}
	cluster.Store(cp)
	use(cp)
	code = m.Run()
	if code != 0 {
		cp.dumpLogs(os.Stderr)
	}
	if !cleanup() && code == 0 {
		code = 1
	}
	return code
}

// findControlPlane locates etcd, kube-apiserver and
// kube-controller-manager, and with cfg.Kubelets kube-scheduler, the
// kubelet and the node's test commands, building what is missing (the
// test commands into dir).
func findControlPlane(cfg Config, dir string) (controlPlaneBinaries, error) {
	var bins controlPlaneBinaries
	k8sDir := os.Getenv(envControlPlaneDir)
	if k8sDir == "" {
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
			return bins, fmt.Errorf("%s failed (%v); it needs the Go module proxy to build k8s.io/kubernetes, or set %s to a directory holding kube-apiserver, kube-controller-manager, kube-scheduler and kubelet", script, err, envControlPlaneDir)
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		k8sDir = lines[len(lines)-1]
	}
	bins.apiserver = filepath.Join(k8sDir, "kube-apiserver")
	bins.controllerManager = filepath.Join(k8sDir, "kube-controller-manager")
	need := []string{bins.apiserver, bins.controllerManager}
	if cfg.Kubelets {
		bins.scheduler = filepath.Join(k8sDir, "kube-scheduler")
		node, err := findNodeBinaries(k8sDir, dir)
		if err != nil {
			return bins, err
		}
		bins.node = node
		need = append(need, bins.scheduler, node.kubelet, node.fakeCRI, node.devicePlugin)
	}
	for _, b := range need {
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
	for _, tool := range []string{"unshare", "nsenter", "mount"} {
		if cfg.Kubelets {
			if _, err := exec.LookPath(tool); err != nil {
				return bins, fmt.Errorf("%s (util-linux) runs each node in its own mount namespace: %w", tool, err)
			}
		}
	}
	return bins, nil
}

// findNodeBinaries locates the kubelet (in k8sDir) and the node's test
// commands: GMS_FAKECRI and GMS_DEVICE_PLUGIN, or else built from
// hack/fakecri and hack/deviceplugin into dir/bin.
func findNodeBinaries(k8sDir, dir string) (*nodeBinaries, error) {
	b := &nodeBinaries{
		kubelet:      filepath.Join(k8sDir, "kubelet"),
		fakeCRI:      os.Getenv(envFakeCRI),
		devicePlugin: os.Getenv(envDevicePlugin),
	}
	if b.fakeCRI != "" && b.devicePlugin != "" {
		return b, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	binDir := filepath.Join(dir, "bin")
	cmd := exec.Command("go", "build", "-o", binDir+"/", "./hack/fakecri", "./hack/deviceplugin")
	cmd.Dir = root
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("building hack/fakecri and hack/deviceplugin: %w (or set %s and %s)", err, envFakeCRI, envDevicePlugin)
	}
	if b.fakeCRI == "" {
		b.fakeCRI = filepath.Join(binDir, "fakecri")
	}
	if b.devicePlugin == "" {
		b.devicePlugin = filepath.Join(binDir, "deviceplugin")
	}
	return b, nil
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
