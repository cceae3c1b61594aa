package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// Cache housekeeping: entries of processes not asked about for cacheTTL are
// dropped, in a sweep that runs at most once per cacheTTL.
const cacheTTL = time.Minute

// Resolver answers Resolve(pid) from <procRoot>/<pid>/cgroup, caching each
// process's answer. Every call reads <procRoot>/<pid>/stat (a few hundred
// bytes) to learn the process's start time: a cached answer is used only for
// the same PID and start time, so a PID the kernel hands to a new process is
// read afresh. It is safe for concurrent use.
type Resolver struct {
	root string
	now  func() time.Time

	mu        sync.Mutex
	cache     map[uint32]*entry
	lastSweep time.Time
	// path and buf are reused by every read.
	path []byte
	buf  []byte
}

type entry struct {
	start uint64
	info  Info
	err   error
	used  time.Time
}

// NewResolver reads processes under procRoot: "/proc" when the agent shares
// the host's PID namespace (hostPID: true), or wherever the host's /proc is
// mounted.
func NewResolver(procRoot string) *Resolver {
	return &Resolver{root: procRoot, now: time.Now, cache: make(map[uint32]*entry)}
}

// Resolve returns where process pid runs. An error wrapping fs.ErrNotExist
// means no such process is visible under the proc root: it has exited, or
// the proc root is not the PID namespace the PID came from. Any other error
// is a cgroup or stat file that cannot be read or parsed; it is logged once
// per process.
func (r *Resolver) Resolve(pid uint32) (Info, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.sweep(now)
	stat, err := r.read(pid, "stat")
	if err != nil {
		return Info{}, r.readError(pid, err)
	}
	start, err := ParseStartTime(stat)
	if err != nil {
		return Info{}, fmt.Errorf("process %d: %w", pid, err)
	}
	if e := r.cache[pid]; e != nil && e.start == start {
		e.used = now
		return e.info, e.err
	}
	data, err := r.read(pid, "cgroup")
	if err != nil {
		return Info{}, r.readError(pid, err)
	}
	info, err := Parse(data)
	if err != nil {
		err = fmt.Errorf("process %d: cgroup: %w", pid, err)
		klog.ErrorS(err, "Cannot tell which pod a GPU process belongs to", "pid", pid)
	}
	r.cache[pid] = &entry{start: start, info: info, err: err, used: now}
	return info, err
}

// read reads <root>/<pid>/<file> into the reused buffer; the result is
// valid until the next read. It calls the kernel directly rather than
// through os.File, which would allocate a file object for every process
// every round.
func (r *Resolver) read(pid uint32, file string) ([]byte, error) {
	r.path = append(r.path[:0], r.root...)
	r.path = append(r.path, '/')
	r.path = strconv.AppendUint(r.path, uint64(pid), 10)
	r.path = append(r.path, '/')
	r.path = append(r.path, file...)
	fd, err := syscall.Open(string(r.path), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)
	r.buf = r.buf[:0]
	for {
		if len(r.buf) == cap(r.buf) {
			r.buf = append(r.buf, make([]byte, max(512, cap(r.buf)))...)[:len(r.buf)]
		}
		n, err := syscall.Read(fd, r.buf[len(r.buf):cap(r.buf)])
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return nil, err
		case n == 0:
			return r.buf, nil
		}
		r.buf = r.buf[:len(r.buf)+n]
	}
}

// readError maps a process that vanished (ENOENT, or ESRCH while reading a
// process that is exiting) to fs.ErrNotExist.
func (r *Resolver) readError(pid uint32, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("process %d under %s: %w", pid, r.root, fs.ErrNotExist)
	}
	return fmt.Errorf("process %d: %w", pid, err)
}

// sweep drops the entries of processes not asked about for cacheTTL.
func (r *Resolver) sweep(now time.Time) {
	if now.Sub(r.lastSweep) < cacheTTL {
		return
	}
	r.lastSweep = now
	for pid, e := range r.cache {
		if now.Sub(e.used) >= cacheTTL {
			delete(r.cache, pid)
		}
	}
}

// PodUID returns the UID of the pod process pid runs in, "" for a host
// process; errors as Resolve's.
func (r *Resolver) PodUID(pid uint32) (string, error) {
	info, err := r.Resolve(pid)
	return info.PodUID, err
}
