//go:build e2e

package framework

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

// TestLeftoversFindsWhatARunLeaves: the end-of-run check reports a process
// left in a node's mount namespace, a node directory mounted on the host
// and a node directory left on disk, and nothing once they are gone. (A
// kubepods cgroup and a changed kernel tunable are host-wide: the test
// makes neither.)
func TestLeftoversFindsWhatARunLeaves(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("the host check needs root, as the suite's nodes do (run hack/e2e.sh as root)")
	}
	t.Setenv(envKeep, "") // the check looks for directories left
	before := readHostState()
	dir, err := os.MkdirTemp("", "gms-node-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	mnt := filepath.Join(dir, "var-lib")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	n := &Node{Dir: dir}
	nodes.add(n)
	t.Cleanup(func() { nodes.remove(n) })

	// A process in a mount namespace of its own, as a node's are.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // killed: the error says so
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		testutil.Receive(t, "the sleeping process to be reaped", exited)
	})
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	var ns string
	testutil.Eventually(t, "sleep to run in its own namespace", func() bool {
		ns, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))
		return ns != "" && ns != self && strings.HasPrefix(string(cmdline), "sleep\x00")
	})
	nodes.addNamespace(ns)
	// A node directory mounted on the host.
	if out, err := exec.Command("mount", "-t", "tmpfs", "gms-e2e-test", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	unmounted := false
	t.Cleanup(func() {
		if !unmounted {
			_ = exec.Command("umount", mnt).Run()
		}
	})

	left := before.leftovers()
	for _, want := range []string{
		fmt.Sprintf("process %d sleep 600 in a node's mount namespace %s", cmd.Process.Pid, ns),
		"mount " + mnt,
		"directory " + dir,
	} {
		if !slices.Contains(left, want) {
			t.Errorf("leftovers %q lack %q", left, want)
		}
	}

	_ = cmd.Process.Kill()
	testutil.Receive(t, "the sleeping process to be reaped", exited)
	if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	unmounted = true
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if left := before.leftovers(); len(left) != 0 {
		t.Errorf("leftovers after cleaning up: %q", left)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/plain`:         "/tmp/plain",
		`/tmp/with\040space`: "/tmp/with space",
		`/tmp/tab\011x`:      "/tmp/tab\tx",
		`/tmp/back\134slash`: `/tmp/back\slash`,
		`/tmp/short\04`:      `/tmp/short\04`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
	if m := hostMounts(); !slices.Contains(m, "/") || slices.ContainsFunc(m, func(s string) bool { return strings.Contains(s, `\040`) }) {
		t.Errorf("hostMounts() = %v: want / and no escapes", m)
	}
}
