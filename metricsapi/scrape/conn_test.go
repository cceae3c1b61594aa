package scrape

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

// connCounter serves an exposition and counts the connections it accepted
// and those that are closed.
type connCounter struct {
	mu             sync.Mutex
	opened, closed int
	requests       int
}

func (c *connCounter) counts() (opened, closed, requests int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opened, c.closed, c.requests
}

func serveCounting(t *testing.T, h http.HandlerFunc) (*httptest.Server, *connCounter) {
	t.Helper()
	c := &connCounter{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.requests++
		c.mu.Unlock()
		h(w, r)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		c.mu.Lock()
		defer c.mu.Unlock()
		switch s {
		case http.StateNew:
			c.opened++
		case http.StateClosed, http.StateHijacked:
			c.closed++
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, c
}

// TestConnectionKeptAcrossRounds checks that a target is scraped over one
// connection round after round, whatever the framing of its answer, and
// that a target answering "Connection: close" gets a new one each time.
func TestConnectionKeptAcrossRounds(t *testing.T) {
	agent := readTestdata(t, "agent.prom")
	tests := []struct {
		name        string
		handler     http.HandlerFunc
		wantOpened  int
		wantSamples float64
	}{
		{"chunked (no Content-Length)", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write(agent[:len(agent)/2])
			_, _ = w.Write(agent[len(agent)/2:])
		}, 1, 3},
		{"Content-Length", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(agent)))
			_, _ = w.Write(agent)
		}, 1, 3},
		{"Connection: close", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Connection", "close")
			_, _ = w.Write(agent)
		}, 3, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, c := serveCounting(t, tc.handler)
			targets, err := NewStaticTargets([]string{srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			s, err := New(generous(1<<20), targets, newTestStore(t))
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				s.round(context.Background())
			}
			if n := promtest.CollectAndCount(s.metrics.errors); n != 0 {
				t.Errorf("%d error series, want none", n)
			}
			if got := promtest.ToFloat64(s.metrics.samples.WithLabelValues(srv.URL)); got != tc.wantSamples {
				t.Errorf("samples = %v, want %v", got, tc.wantSamples)
			}
			if opened, _, requests := c.counts(); opened != tc.wantOpened || requests != 3 {
				t.Errorf("3 rounds opened %d connections for %d requests, want %d for 3", opened, requests, tc.wantOpened)
			}
		})
	}
}

// TestKeptConnectionClosedByTarget checks that a scrape whose kept
// connection the target closed meanwhile (its idle timeout) succeeds on a
// new one.
func TestKeptConnectionClosedByTarget(t *testing.T) {
	srv, c := serveCounting(t, body(readTestdata(t, "agent.prom")))
	targets, err := NewStaticTargets([]string{srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(generous(1<<20), targets, newTestStore(t))
	if err != nil {
		t.Fatal(err)
	}
	s.round(context.Background())
	srv.CloseClientConnections()
	testutil.Eventually(t, "the server to close the idle connection", func() bool {
		_, closed, _ := c.counts()
		return closed == 1
	})
	s.round(context.Background())
	if n := promtest.CollectAndCount(s.metrics.errors); n != 0 {
		t.Errorf("%d error series, want none: the closed connection was not replaced", n)
	}
	if opened, _, requests := c.counts(); opened != 2 || requests != 2 {
		t.Errorf("opened %d connections for %d requests, want 2 for 2", opened, requests)
	}
}

// TestGoneTargetConnectionClosed checks that a target that leaves the list
// has its kept connection closed.
func TestGoneTargetConnectionClosed(t *testing.T) {
	agent := readTestdata(t, "agent.prom")
	gone, c := serveCounting(t, body(agent))
	stays := serve(t, body(agent))
	targets, err := NewStaticTargets([]string{gone.URL, stays.URL})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(generous(1<<20), targets, newTestStore(t))
	if err != nil {
		t.Fatal(err)
	}
	s.round(context.Background())
	s.targets = StaticTargets{{Name: stays.URL, URL: stays.URL}}
	s.round(context.Background())
	testutil.Eventually(t, "the gone target's connection to close", func() bool {
		opened, closed, _ := c.counts()
		return opened == 1 && closed == 1
	})
}

// TestDeclaredOversizedBody checks that a body whose Content-Length is over
// the limit fails as too large, without being read.
func TestDeclaredOversizedBody(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "100000")
		_, _ = w.Write(make([]byte, 100000))
	})
	targets, err := NewStaticTargets([]string{srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(generous(1000), targets, newTestStore(t))
	if err != nil {
		t.Fatal(err)
	}
	s.round(context.Background())
	if got := promtest.ToFloat64(s.metrics.errors.WithLabelValues(srv.URL, reasonTooLarge)); got != 1 {
		t.Errorf("errors{reason=body_too_large} = %v, want 1", got)
	}
}
