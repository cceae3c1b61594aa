package podmap

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"

	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

// waitTimeout only keeps a broken test from hanging; no test asserts how
// fast anything happens.
const waitTimeout = 20 * time.Second

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

// startRefresher runs a Refresher until the test ends. A zero Interval or
// Timeout gets a short test default.
func startRefresher(t testing.TB, o Options) *Refresher {
	t.Helper()
	if o.Interval == 0 {
		o.Interval = 20 * time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	r, err := NewRefresher(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return r
}

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitListCalls waits until s received n more List calls than now. The
// refresh loop is sequential, so every refresh before the last of them has
// then completed.
func waitListCalls(t testing.TB, s *fakekubelet.Server, n int) {
	t.Helper()
	target := s.ListCalls() + n
	waitFor(t, "more List calls", func() bool { return s.ListCalls() >= target })
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// captureKlog sends klog's output to the returned buffer until the test
// ends. Tests using it must not run in parallel.
func captureKlog(t *testing.T) *syncBuffer {
	t.Helper()
	buf := &syncBuffer{}
	klog.SetLogger(textlogger.NewLogger(textlogger.NewConfig(textlogger.Output(buf))))
	t.Cleanup(klog.ClearLogger)
	return buf
}
