//go:build e2e

package framework

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// nodeRegistry records the nodes of the run: the directories of every
// node (removed at the end of an interrupted run, and checked for at the
// end of every run) and every mount namespace a node had (checked for
// processes left in it).
type nodeRegistry struct {
	mu         sync.Mutex
	live       map[*Node]struct{}
	namespaces []string // "mnt:[<inode>]"
	dirs       []string
	// pinned holds each node namespace open until the process exits: a
	// namespace freed after its node stopped could have its inode reused
	// by another run's node on the same host, whose processes would then
	// look like ours.
	pinned []*os.File
}

var nodes = &nodeRegistry{live: map[*Node]struct{}{}}

func (r *nodeRegistry) add(n *Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live[n] = struct{}{}
	r.dirs = append(r.dirs, n.Dir)
}

func (r *nodeRegistry) addNamespace(ns string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.namespaces = append(r.namespaces, ns)
}

// pinNamespace records the mount namespace of process pid, held open for
// the rest of the run, and returns its identity.
func (r *nodeRegistry) pinNamespace(pid int) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return "", err
	}
	// The identity of what was opened, whatever pid is by now.
	ns, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		_ = f.Close()
		return "", err
	}
	r.mu.Lock()
	r.pinned = append(r.pinned, f)
	r.mu.Unlock()
	r.addNamespace(ns)
	return ns, nil
}

func (r *nodeRegistry) remove(n *Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.live, n)
}

// snapshot returns the nodes still running, and every namespace and
// directory recorded.
func (r *nodeRegistry) snapshot() (live []*Node, namespaces, dirs []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n := range r.live {
		live = append(live, n)
	}
	return live, slices.Clone(r.namespaces), slices.Clone(r.dirs)
}

// hostState is what a run must leave on the host as it found it: the
// kernel tunables a kubelet sets, and the kubepods cgroups (none are made:
// cgroupsPerQOS is off).
type hostState struct {
	tunables map[string]string
	kubepods []string
}

// readHostState reads the host's current state.
func readHostState() hostState {
	s := hostState{tunables: map[string]string{}}
	for _, t := range kernelTunables {
		data, err := os.ReadFile(filepath.Join("/proc/sys", t))
		if err != nil {
			s.tunables[t] = "unreadable: " + err.Error()
			continue
		}
		s.tunables[t] = strings.TrimSpace(string(data))
	}
	for _, pattern := range []string{"/sys/fs/cgroup/kubepods*", "/sys/fs/cgroup/*/kubepods*"} {
		m, _ := filepath.Glob(pattern)
		s.kubepods = append(s.kubepods, m...)
	}
	slices.Sort(s.kubepods)
	return s
}

// leftovers lists what the run left on the host compared with before:
// processes in a node's mount namespace, mounts of a node's directories
// or of the kubelet's paths, kubepods cgroups, changed kernel tunables,
// and node directories (unless GMS_E2E_KEEP is set). Empty when the host
// is clean.
func (before hostState) leftovers() []string {
	var out []string
	_, namespaces, dirs := nodes.snapshot()

	for _, ns := range namespaces {
		for _, p := range processesIn(ns) {
			out = append(out, "process "+p+" in a node's mount namespace "+ns)
		}
	}
	for _, m := range hostMounts() {
		if strings.HasPrefix(m, "/var/lib/kubelet") || strings.HasPrefix(m, "/var/log/pods") || slices.ContainsFunc(dirs, func(d string) bool { return m == d || strings.HasPrefix(m, d+"/") }) {
			out = append(out, "mount "+m)
		}
	}
	after := readHostState()
	for _, c := range after.kubepods {
		if !slices.Contains(before.kubepods, c) {
			out = append(out, "cgroup "+c)
		}
	}
	for _, t := range kernelTunables {
		if before.tunables[t] != after.tunables[t] {
			out = append(out, fmt.Sprintf("kernel tunable %s changed from %s to %s", t, before.tunables[t], after.tunables[t]))
		}
	}
	if !keepFiles() {
		for _, d := range dirs {
			if _, err := os.Stat(d); err == nil {
				out = append(out, "directory "+d)
			}
		}
	}
	return out
}

// processesIn lists the processes (as "<pid> <command line>") whose mount
// namespace is ns ("mnt:[<inode>]").
func processesIn(ns string) []string {
	if ns == "" {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []string{"cannot read /proc: " + err.Error()}
	}
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		if err != nil || link != ns {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out = append(out, fmt.Sprintf("%d %s", pid, strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))))
	}
	return out
}

// hostMounts lists the mount points of this process's (the host's) mount
// namespace.
func hostMounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer func() { _ = f.Close() }()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "<id> <parent> <major:minor> <root> <mount point> ..."
		if fields := strings.Fields(sc.Text()); len(fields) > 4 {
			out = append(out, unescapeMountinfo(fields[4]))
		}
	}
	return out
}

// unescapeMountinfo undoes mountinfo's octal escapes ("\040" for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
