//go:build e2e

package framework

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

const (
	// stopGrace is how long a component gets to exit after SIGTERM before
	// its process group is killed.
	stopGrace = 10 * time.Second
	// startTimeout bounds the start of each component: until it serves.
	startTimeout = 90 * time.Second
	// LogTailLines is how much of each component's log a failure prints.
	LogTailLines = 40
)

// PlainHTTP is the client for the plain-HTTP endpoints (etcd's health, the
// agents, the fleet simulator); no request may hang a test.
var PlainHTTP = &http.Client{Timeout: 5 * time.Second}

// Process is a component running in its own process group, its stdout and
// stderr going to a log file.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has been reaped
	waitErr error         // valid after done is closed
	stopMu  sync.Mutex
	// stopping is set once Stop was called: the process's end is then
	// expected.
	stopping atomic.Bool
}

// running holds every started process so that a signal or the end of
// Main can stop whatever is left.
var running = struct {
	sync.Mutex
	procs map[*Process]struct{}
}{procs: map[*Process]struct{}{}}

// StartProcess starts bin with args in a new process group, logging to
// (the end of) logDir/<name>.log. The process gets SIGKILL if the test binary dies first
// (Pdeathsig), so even a crashed run leaves nothing behind.
func StartProcess(logDir, name, bin string, args ...string) (*Process, error) {
	logPath := filepath.Join(logDir, name+".log")
	// Appended to: a component started again (a restarted kubelet) keeps
	// its earlier log.
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating the %s log: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	running.Lock()
	running.procs[p] = struct{}{}
	running.Unlock()
	go func() {
		p.waitErr = cmd.Wait()
		_ = logFile.Close()
		running.Lock()
		delete(running.procs, p)
		running.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process's ID (its process group's too).
func (p *Process) Pid() int {
	return p.cmd.Process.Pid
}

// Exited reports whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL after stopGrace,
// and waits for the process to be reaped. Safe to call more than once.
func (p *Process) Stop() {
	p.stopping.Store(true)
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if done, _ := p.Exited(); done {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Reap any straggler of the group (none of the components forks, but a
	// wrapper script might).
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// Kill sends SIGKILL to the process (kill -9: nothing of its shutdown
// runs; the kernel closes its sockets) and waits until it is reaped. Safe
// to call more than once, and Stop after it.
func (p *Process) Kill() {
	p.stopping.Store(true)
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if done, _ := p.Exited(); done {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stopped reports whether Stop was called.
func (p *Process) stopped() bool {
	return p.stopping.Load()
}

// Tail returns the last n lines of the process's log.
func (p *Process) Tail(n int) string {
	return tailFile(p.LogPath, n)
}

// stopAll stops every process still running, in parallel.
func stopAll() {
	running.Lock()
	procs := make([]*Process, 0, len(running.procs))
	for p := range running.procs {
		procs = append(procs, p)
	}
	running.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(p.Stop)
	}
	wg.Wait()
}

// tailFile returns the last n lines of a file, or a note saying why it
// cannot.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	data = bytes.TrimRight(data, "\n")
	lines := bytes.Split(data, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// errExitedEarly says a component ended while it was expected to run.
var errExitedEarly = errors.New("exited early")

// WaitServing polls url until it answers 200, failing early when the
// process exits and after startTimeout (or at ctx's end) otherwise. The
// error carries the last probe's error and the tail of the process's log.
func WaitServing(ctx context.Context, p *Process, client *http.Client, url string) error {
	lastErr := errors.New("not probed yet")
	err := wait.PollUntilContextTimeout(ctx, PollInterval, startTimeout, true, func(ctx context.Context) (bool, error) {
		if done, err := p.Exited(); done {
			return false, fmt.Errorf("%s %w (%v) while waiting for %s; last log lines:\n%s", p.Name, errExitedEarly, err, url, p.Tail(LogTailLines))
		}
		lastErr = probe(ctx, client, url)
		return lastErr == nil, nil
	})
	if err != nil && wait.Interrupted(err) {
		return fmt.Errorf("%s not serving %s after %v: %v; last log lines:\n%s", p.Name, url, startTimeout, lastErr, p.Tail(LogTailLines))
	}
	return err
}

// waitUntil is WaitFor for the steps that run outside a test (the control
// plane's, the nodes' stops): it returns an error naming what it waited
// for and the last state cond described.
func waitUntil(ctx context.Context, timeout time.Duration, what string, cond func(ctx context.Context) (done bool, state string, err error)) error {
	_, err := testutil.Poll(ctx, PollInterval, timeout, what, cond)
	return err
}

// probe returns nil when a GET of url answers 200.
func probe(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
