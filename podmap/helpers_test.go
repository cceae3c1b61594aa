package podmap

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

// socketPath returns a socket path in a fresh directory short enough for
// the 108-byte limit of unix socket paths.
func socketPath(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "kubelet.sock")
}

func startFake(t testing.TB, path string) *fakekubelet.Server {
	t.Helper()
	s, err := fakekubelet.Start(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// startRefresher runs a Refresher until the test ends. A zero Interval gets
// a short test default; a zero Timeout gets testutil.DefaultTimeout, so
// that a call to a live fake never times out however loaded the machine
// (a spurious timeout is an outage). Each setup function sees the
// Refresher before Run starts.
func startRefresher(t testing.TB, o Options, setup ...func(*Refresher)) *Refresher {
	t.Helper()
	if o.Interval == 0 {
		o.Interval = 20 * time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = testutil.DefaultTimeout
	}
	r, err := NewRefresher(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		testutil.Receive(t, "Run to return", done)
	})
	return r
}

// isUp reports whether the refresher's last List call succeeded, as its
// up gauge says.
func isUp(r *Refresher) bool {
	return promtest.ToFloat64(r.metrics.up) == 1
}

// up is isUp as a condition to wait for.
func up(r *Refresher) func() bool {
	return func() bool { return isUp(r) }
}

// waitListCalls waits until s received n more List calls than now. The
// refresh loop is sequential, so every refresh before the last of them has
// then completed.
func waitListCalls(t testing.TB, s *fakekubelet.Server, n int) {
	t.Helper()
	target := s.ListCalls() + n
	testutil.Eventually(t, "more List calls", func() bool { return s.ListCalls() >= target })
}

// waitRefreshDone waits until the refresh that produced what the test last
// observed (a mapping, Up) has returned, with all its effects (metrics, the
// allocatable count): a refresh publishes them one after the other, and
// the next refresh's List call comes only after it returned.
func waitRefreshDone(t testing.TB, s *fakekubelet.Server) {
	t.Helper()
	waitListCalls(t, s, 1)
}

// transitions records what a Refresher reports through onTransition.
type transitions struct {
	mu   sync.Mutex
	seen []transition
}

func (ts *transitions) add(t transition) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.seen = append(ts.seen, t)
}

// all returns the transitions seen so far, in order.
func (ts *transitions) all() []transition {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.seen)
}

// count returns how many times t was seen.
func (ts *transitions) count(t transition) int {
	n := 0
	for _, s := range ts.all() {
		if s == t {
			n++
		}
	}
	return n
}
