package collector

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

// testHandler is a handler over a sampler of one GPU, its clock fixed at
// the returned time, with one snapshot taken then.
func testHandler(t *testing.T, inFlight int) (*metricsHandler, *Sampler, time.Time) {
	t.Helper()
	d := &Device{Index: 0, UUID: "GPU-a", Name: "H", PCIBusID: "00000000:01:00.0", Minor: 0}
	b := &scriptedBackend{readings: []DeviceReading{utilReading(d, 42)}}
	reg := prometheus.NewRegistry()
	s := NewSampler(b, SamplerOptions{Node: "n", Interval: time.Second, Registerer: reg})
	h := newMetricsHandler(s, reg, HandlerOptions{MaxAge: time.Minute}, inFlight)
	now := time.Unix(1_000_000, 0)
	h.now = func() time.Time { return now }
	s.SampleOnce(now)
	return h, s, now
}

func TestMetricsHandlerMethods(t *testing.T) {
	h, _, _ := testHandler(t, 1)
	for _, tt := range []struct {
		method   string
		want     int
		wantBody bool
	}{
		{http.MethodGet, http.StatusOK, true},
		{http.MethodHead, http.StatusOK, false},
		{http.MethodPost, http.StatusMethodNotAllowed, false},
		{http.MethodPut, http.StatusMethodNotAllowed, false},
		{http.MethodDelete, http.StatusMethodNotAllowed, false},
		{http.MethodTrace, http.StatusMethodNotAllowed, false},
		{http.MethodOptions, http.StatusMethodNotAllowed, false},
		{"PATCH", http.StatusMethodNotAllowed, false},
	} {
		t.Run(tt.method, func(t *testing.T) {
			// A real server: net/http drops HEAD bodies there, not in a
			// recorder.
			srv := httptest.NewServer(h)
			defer srv.Close()
			req, _ := http.NewRequest(tt.method, srv.URL+"/metrics", nil)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("%s: status %d, want %d", tt.method, resp.StatusCode, tt.want)
			}
			if tt.want == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s: Allow %q", tt.method, resp.Header.Get("Allow"))
			}
			if got := strings.Contains(string(body), "DCGM_FI_DEV_GPU_UTIL"); got != tt.wantBody {
				t.Errorf("%s: series in body %v, want %v", tt.method, got, tt.wantBody)
			}
		})
	}
}

// TestMetricsHandlerBuildsOncePerSnapshot: however many clients scrape at
// once, a snapshot's body is built (self-metrics gathered) once and gzipped
// at most once, only if a client asks for gzip.
func TestMetricsHandlerBuildsOncePerSnapshot(t *testing.T) {
	for _, tt := range []struct {
		name                  string
		plain, gzipped        int // concurrent clients of each kind
		snapshots             int // snapshots, each scraped by all clients
		wantBuilds, wantGzips int64
	}{
		{"plain only", 50, 0, 1, 1, 0},
		{"gzip only", 0, 200, 1, 1, 1},
		{"mixed", 100, 100, 1, 1, 1},
		{"three snapshots", 20, 20, 3, 3, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, s, now := testHandler(t, MaxScrapesInFlight)
			for i := range tt.snapshots {
				if i > 0 {
					now = now.Add(time.Second)
					h.now = func() time.Time { return now }
					s.SampleOnce(now)
				}
				var wg sync.WaitGroup
				var bad atomic.Int64
				for c := range tt.plain + tt.gzipped {
					wg.Go(func() {
						req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
						gz := c >= tt.plain
						if gz {
							req.Header.Set("Accept-Encoding", "gzip")
						}
						rec := httptest.NewRecorder()
						h.ServeHTTP(rec, req)
						var body io.Reader = rec.Body
						if gz {
							zr, err := gzip.NewReader(rec.Body)
							if err != nil {
								bad.Add(1)
								return
							}
							body = zr
						}
						out, err := io.ReadAll(body)
						if err != nil || !strings.Contains(string(out), `DCGM_FI_DEV_GPU_UTIL{gpu="0"`) ||
							!strings.Contains(string(out), "gpu_metrics_server_devices 1") {
							bad.Add(1)
						}
					})
				}
				wg.Wait()
				if bad.Load() > 0 {
					t.Fatalf("snapshot %d: %d answers lacked the device series or self-metrics", i, bad.Load())
				}
			}
			if got := h.builds.Load(); got != tt.wantBuilds {
				t.Errorf("bodies built %d, want %d", got, tt.wantBuilds)
			}
			if got := h.compressions.Load(); got != tt.wantGzips {
				t.Errorf("compressions %d, want %d", got, tt.wantGzips)
			}
		})
	}
}

// TestMetricsHandlerRefreshesSelfMetrics: with no new snapshot (stuck or
// stale), the body, and so the self-metrics, is rebuilt every interval.
func TestMetricsHandlerRefreshesSelfMetrics(t *testing.T) {
	h, _, start := testHandler(t, 1)
	for _, tt := range []struct {
		after      time.Duration
		wantBuilds int64
	}{
		{0, 1},
		{999 * time.Millisecond, 1},
		{time.Second, 2},
		{time.Second + 500*time.Millisecond, 2},
		{2 * time.Minute, 3}, // the snapshot is stale now: self-metrics only
		{2*time.Minute + 10*time.Millisecond, 3},
		{2*time.Minute + time.Second, 4},
	} {
		now := start.Add(tt.after)
		h.now = func() time.Time { return now }
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if got := h.builds.Load(); got != tt.wantBuilds {
			t.Errorf("after %v: %d bodies built, want %d", tt.after, got, tt.wantBuilds)
		}
		stale := tt.after > time.Minute
		if got := strings.Contains(rec.Body.String(), "DCGM_FI_DEV_GPU_UTIL"); got == stale {
			t.Errorf("after %v: device series served %v with the snapshot stale %v", tt.after, got, stale)
		}
	}
}

// TestMetricsHandlerRuntimeMetricsCadence: the runtime's self-metrics are
// gathered at most every RuntimeEvery, and every body in between carries
// the last gathering; a clock that went back gathers again.
func TestMetricsHandlerRuntimeMetricsCadence(t *testing.T) {
	h, _, start := testHandler(t, 1)
	runtimeReg := prometheus.NewRegistry()
	gathers := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "runtime_gathers_total", Help: "h"},
		func() float64 { return float64(h.runtimeGathers.Load()) + 1 })
	runtimeReg.MustRegister(gathers)
	h.runtime, h.runtimeEvery = runtimeReg, 10*time.Second
	for _, tt := range []struct {
		after       time.Duration
		wantGathers int64
		wantValue   string // runtime_gathers_total served: the gathering it came from
	}{
		{0, 1, "1"},
		{time.Second, 1, "1"},     // a new body, the same runtime text
		{9 * time.Second, 1, "1"}, // still younger than RuntimeEvery
		{10 * time.Second, 2, "2"},
		{15 * time.Second, 2, "2"},
		{20 * time.Second, 3, "3"},
		{12 * time.Second, 4, "4"}, // the clock went back
	} {
		now := start.Add(tt.after)
		h.now = func() time.Time { return now }
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if got := h.runtimeGathers.Load(); got != tt.wantGathers {
			t.Errorf("after %v: runtime gathered %d times, want %d", tt.after, got, tt.wantGathers)
		}
		body := rec.Body.String()
		if want := "\nruntime_gathers_total " + tt.wantValue + "\n"; !strings.Contains(body, want) {
			t.Errorf("after %v: body lacks %q", tt.after, want)
		}
		if !strings.Contains(body, "DCGM_FI_DEV_GPU_UTIL") || !strings.Contains(body, "gpu_metrics_server_") {
			t.Errorf("after %v: the device series or the own self-metrics are missing", tt.after)
		}
	}
}

// blockingWriter holds a request in its first Write until release closes.
type blockingWriter struct {
	*httptest.ResponseRecorder
	inside  *atomic.Int64
	most    *atomic.Int64
	release <-chan struct{}
}

func (w blockingWriter) Write(b []byte) (int, error) {
	n := w.inside.Add(1)
	for {
		m := w.most.Load()
		if n <= m || w.most.CompareAndSwap(m, n) {
			break
		}
	}
	<-w.release
	w.inside.Add(-1)
	return w.ResponseRecorder.Write(b)
}

// TestMetricsHandlerInFlightBound: no more than the bound are served at
// once; the others wait for a slot, and one whose client goes away while
// waiting is dropped.
func TestMetricsHandlerInFlightBound(t *testing.T) {
	for _, tt := range []struct {
		bound, clients, cancelled int
	}{
		{1, 5, 0},
		{4, 20, 3},
		{MaxScrapesInFlight, 200, 10},
	} {
		h, _, _ := testHandler(t, tt.bound)
		var inside, most atomic.Int64
		release := make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var served atomic.Int64
		for range tt.clients {
			wg.Go(func() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(blockingWriter{rec, &inside, &most, release}, httptest.NewRequest(http.MethodGet, "/metrics", nil))
				if rec.Code == http.StatusOK && rec.Body.Len() > 0 {
					served.Add(1)
				}
			})
		}
		for range tt.cancelled {
			wg.Go(func() {
				// Waits behind the others, then its client goes away.
				h.ServeHTTP(blockingWriter{httptest.NewRecorder(), &inside, &most, release},
					httptest.NewRequest(http.MethodGet, "/metrics", nil).WithContext(ctx))
			})
		}
		total := int64(tt.clients + tt.cancelled)
		testutil.Eventually(t, "the bound in flight and the rest waiting", func() bool {
			return inside.Load() == int64(tt.bound) && h.waiting.Load() == total-int64(tt.bound)
		})
		if got := most.Load(); got != int64(tt.bound) {
			t.Fatalf("bound %d: %d in flight at once", tt.bound, got)
		}
		cancel()
		close(release)
		wg.Wait()
		if got := most.Load(); got > int64(tt.bound) {
			t.Errorf("bound %d: %d in flight at once", tt.bound, got)
		}
		if got := served.Load(); got != int64(tt.clients) {
			t.Errorf("bound %d: %d of %d clients served", tt.bound, got, tt.clients)
		}
		if got := h.waiting.Load(); got != 0 {
			t.Errorf("bound %d: %d still waiting", tt.bound, got)
		}
	}
}
