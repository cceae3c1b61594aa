package cgroup

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestResolverFakeProc resolves the processes of the fake /proc tree under
// testdata/proc.
func TestResolverFakeProc(t *testing.T) {
	r := NewResolver(filepath.Join("testdata", "proc"))
	tests := []struct {
		pid      uint32
		want     Info
		notExist bool
		wantErr  string
	}{
		{pid: 4242, want: Info{PodUID: fixtureUID, ContainerID: fixtureContainer}},
		{pid: 777}, // a host process
		{pid: 31337, wantErr: "no controller list"},
		{pid: 9000, notExist: true}, // exited between reading stat and cgroup
		{pid: 12345, notExist: true},
	}
	for _, tt := range tests {
		got, err := r.Resolve(tt.pid)
		switch {
		case tt.notExist:
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("pid %d: err = %v, want fs.ErrNotExist", tt.pid, err)
			}
		case tt.wantErr != "":
			if err == nil || errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("pid %d: err = %v, want a parse error %q", tt.pid, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("pid %d: %v", tt.pid, err)
		}
		if got != tt.want {
			t.Errorf("pid %d: got %+v, want %+v", tt.pid, got, tt.want)
		}
	}
}

// writeProc writes a fake process into a proc tree.
func writeProc(t *testing.T, root string, pid, start, cgroup string) {
	t.Helper()
	dir := filepath.Join(root, pid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stat := pid + " (worker) S 1 1 1 0 -1 4194560 1 0 0 0 1 1 0 0 20 0 1 0 " + start + " 1000 10\n"
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestResolverCacheAndPIDReuse: a cached answer holds while the process
// lives (its cgroup file is not read again) and is dropped as soon as the
// PID belongs to a process with another start time.
func TestResolverCacheAndPIDReuse(t *testing.T) {
	root := t.TempDir()
	podA := "0::/kubepods/besteffort/pod" + fixtureUID + "/" + fixtureContainer + "\n"
	podB := "0::/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/" + strings.Repeat("ab", 32) + "\n"
	writeProc(t, root, "500", "1000", podA)
	r := NewResolver(root)

	got, err := r.Resolve(500)
	if err != nil || got.PodUID != fixtureUID {
		t.Fatalf("first lookup: %+v %v", got, err)
	}
	// Same process (same start time), cgroup file changed underneath: the
	// cached answer is served, proving the file was not read again.
	if err := os.WriteFile(filepath.Join(root, "500", "cgroup"), []byte(podB), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Resolve(500); got.PodUID != fixtureUID {
		t.Errorf("same process: %+v, want the cached pod", got)
	}
	// The PID is reused by a new process of another pod.
	writeProc(t, root, "500", "2000", podB)
	got, err = r.Resolve(500)
	if err != nil || got.PodUID != "11111111-2222-3333-4444-555555555555" || got.ContainerID != strings.Repeat("ab", 32) {
		t.Errorf("reused PID: %+v %v, want the new process's pod", got, err)
	}
	// The process exits: not found, whatever the cache holds.
	if err := os.RemoveAll(filepath.Join(root, "500")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(500); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("exited process: err = %v, want fs.ErrNotExist", err)
	}
}

func TestResolverSweep(t *testing.T) {
	root := t.TempDir()
	writeProc(t, root, "1", "10", "0::/init.scope\n")
	writeProc(t, root, "2", "20", "0::/init.scope\n")
	r := NewResolver(root)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	for _, pid := range []uint32{1, 2} {
		if _, err := r.Resolve(pid); err != nil {
			t.Fatal(err)
		}
	}
	// Only PID 2 is asked about after that; past the TTL PID 1's entry goes.
	now = now.Add(cacheTTL / 2)
	if _, err := r.Resolve(2); err != nil {
		t.Fatal(err)
	}
	now = now.Add(cacheTTL/2 + time.Second)
	if _, err := r.Resolve(2); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.cache[1]; ok {
		t.Error("entry of a process not asked about for the TTL is still cached")
	}
	if _, ok := r.cache[2]; !ok {
		t.Error("entry in use was dropped")
	}
}

func TestResolverBadStat(t *testing.T) {
	root := t.TempDir()
	writeProc(t, root, "3", "x", "0::/init.scope\n")
	_, err := NewResolver(root).Resolve(3)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want a stat parse error", err)
	}
}

func BenchmarkResolveCached(b *testing.B) {
	r := NewResolver(filepath.Join("testdata", "proc"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Resolve(4242); err != nil {
			b.Fatal(err)
		}
	}
}
