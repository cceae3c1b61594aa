package scrape

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// The faults of issue 16 as the scraper meets them: a restarted agent
// and hostile targets among healthy ones.

// TestRestartedAgentSamples scrapes one agent round after round through
// what a restart can show: the same snapshot scraped twice, and a snapshot
// older than the last one stored (a restarted agent whose clock is behind).
// Neither is appended to the window: each is counted as a duplicate and
// the served mean and time stay those of the newer samples.
func TestRestartedAgentSamples(t *testing.T) {
	var mu sync.Mutex
	var exposition string
	agent := serve(t, func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_, _ = w.Write([]byte(exposition))
	})
	// A window no slow machine outruns: the mean covers every stored
	// sample of the test.
	st, err := store.New(store.Config{Window: time.Hour, StaleAfter: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(generous(1<<20), StaticTargets{{Name: "agent", URL: agent.URL}}, st)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name        string
		snapshot    float64 // unix seconds
		utilization float64
		// What the store holds after the round.
		wantStored, wantDuplicates uint64
		wantMean                   float64
		wantTime                   float64
	}{
		{"first snapshot", 1000, 40, 1, 0, 40, 1000},
		{"the same snapshot again", 1000, 40, 1, 1, 40, 1000},
		{"an older snapshot, other value (restart, clock behind)", 999, 90, 1, 2, 40, 1000},
		{"an older snapshot by a millisecond", 999.999, 90, 1, 3, 40, 1000},
		{"a newer snapshot", 1001, 60, 2, 3, 50, 1001},
	}
	for _, step := range steps {
		mu.Lock()
		exposition = fmt.Sprintf("DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-1\",pod=\"p\",namespace=\"ns\",container=\"c\"} %v\n"+
			"gpu_metrics_server_sample_timestamp_seconds %v\n", step.utilization, step.snapshot)
		mu.Unlock()
		s.round(context.Background())
		if n := promtest.CollectAndCount(s.metrics.errors); n != 0 {
			t.Fatalf("%s: the scrape failed", step.name)
		}
		stats := st.Stats()
		if stats.Appended != step.wantStored || stats.Duplicates != step.wantDuplicates {
			t.Errorf("%s: %d stored, %d duplicates; want %d and %d", step.name, stats.Appended, stats.Duplicates, step.wantStored, step.wantDuplicates)
		}
		v, ok := st.PodValue(store.Utilization, "ns", "p", time.Now())
		wantTime := time.UnixMilli(int64(step.wantTime * 1000))
		if !ok || v.Value != step.wantMean || !v.Time.Equal(wantTime) {
			t.Errorf("%s: served %v at %v (%v), want %v at %v", step.name, v.Value, v.Time, ok, step.wantMean, wantTime)
		}
	}
}

// TestHostileTargets scrapes healthy agents among hostile targets: an
// endless body, 1 GB bodies (declared, chunked, and an error page),
// garbage, a million series, and one byte per second. Each hostile target ends as an error of
// its kind (the slow one holds only its own scrape: skipped at its next
// turn while it still runs), the healthy ones are scraped in every round,
// and what the rounds allocate stays within a small multiple of the body
// limit however much the targets offer: a scrape reads at most the limit
// (--scrape-max-body-bytes) plus one byte, for at most the timeout.
func TestHostileTargets(t *testing.T) {
	const limit = 1 << 20
	const gigabyte = 1 << 30
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i*7919>>3) | 0x80 // no valid metric name starts with these
	}
	millionSeries := func(w http.ResponseWriter, r *http.Request) {
		for i := range 1_000_000 {
			if _, err := fmt.Fprintf(w, "DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-%d\",pod=\"p%d\",namespace=\"ns\",container=\"c\"} 50\n", i, i); err != nil || r.Context().Err() != nil {
				return
			}
		}
	}
	hostile := []struct {
		name    string
		handler http.HandlerFunc
		reason  string
	}{
		{"endless body", testutil.HostileBody(-1, false), reasonTooLarge},
		{"1 GB body, declared", testutil.HostileBody(gigabyte, true), reasonTooLarge},
		{"1 GB body, chunked", testutil.HostileBody(gigabyte, false), reasonTooLarge},
		{"1 GB error page", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.FormatInt(gigabyte, 10))
			w.WriteHeader(http.StatusNotFound)
			testutil.HostileBody(gigabyte, true)(w, r)
		}, reasonStatus},
		{"garbage", body(garbage), reasonParse},
		{"a million series", millionSeries, reasonTooLarge},
	}
	agent := readTestdata(t, "agent.prom")
	var goodScrapes [2]atomic.Int64
	var urls, goodURLs []string
	for i := range goodScrapes {
		good := serve(t, func(w http.ResponseWriter, _ *http.Request) {
			goodScrapes[i].Add(1)
			_, _ = w.Write(agent)
		})
		goodURLs = append(goodURLs, good.URL)
	}
	for _, h := range hostile {
		urls = append(urls, serve(t, h.handler).URL)
	}
	slow := serve(t, testutil.OneBytePerSecond)
	targets, err := NewStaticTargets(append(append([]string{slow.URL}, urls...), goodURLs...))
	if err != nil {
		t.Fatal(err)
	}
	st := newTestStore(t)
	s, err := New(generous(limit), targets, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	first := s.startRound(ctx)
	errorsOf := func(reason string) float64 {
		var n float64
		for i, h := range hostile {
			if h.reason == reason {
				n += promtest.ToFloat64(s.metrics.errors.WithLabelValues(urls[i], reason))
			}
		}
		return n
	}
	// The first round's scrapes have ended (counted, and their targets
	// free for the next turn) but the slow one's.
	settled := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for name, ts := range s.states {
			if name != slow.URL && ts.busy.Load() {
				return false
			}
		}
		return true
	}
	testutil.Eventually(t, "every fast hostile target failed and every healthy one was scraped", func() bool {
		return errorsOf(reasonTooLarge) == 4 && errorsOf(reasonParse) == 1 && errorsOf(reasonStatus) == 1 &&
			goodScrapes[0].Load() == 1 && goodScrapes[1].Load() == 1 && settled()
	})
	second := s.startRound(ctx)
	testutil.Receive(t, "the second round to end while the slow target's first scrape still runs", second)
	runtime.ReadMemStats(&after)

	for i, h := range hostile {
		if got := promtest.ToFloat64(s.metrics.errors.WithLabelValues(urls[i], h.reason)); got != 2 {
			t.Errorf("%s: %v errors of reason %s over two rounds, want 2", h.name, got, h.reason)
		}
	}
	if n := promtest.CollectAndCount(s.metrics.errors); n != len(hostile) {
		t.Errorf("%d error series, want %d: one per hostile target, none for the healthy ones", n, len(hostile))
	}
	for i := range goodScrapes {
		if got := goodScrapes[i].Load(); got != 2 {
			t.Errorf("healthy target %d scraped %d times in two rounds, want 2", i, got)
		}
	}
	if got := promtest.ToFloat64(s.metrics.skipped); got != 1 {
		t.Errorf("skipped = %v, want 1 (the slow target's second turn)", got)
	}
	for _, pod := range []struct{ ns, name string }{{"ml", "trainer-0"}, {"web", "infer-a"}, {"web", "infer-b"}} {
		if _, ok := st.PodValue(store.Utilization, pod.ns, pod.name, time.Now()); !ok {
			t.Errorf("pod %s/%s of the healthy targets not in the store", pod.ns, pod.name)
		}
	}
	if stats := st.Stats(); stats.Pods != 3 {
		t.Errorf("the store holds %d pods, want the healthy targets' 3", stats.Pods)
	}
	// Two rounds against targets offering gigabytes: each hostile scrape
	// reads at most the limit and a byte.
	const bound = 64 * limit
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("two rounds of %d hostile and %d healthy targets allocated %d KiB (body limit %d KiB)", len(hostile)+1, len(goodURLs), allocated>>10, limit>>10)
	if allocated > bound {
		t.Errorf("two rounds allocated %d bytes, more than %d: a hostile body was read past the limit", allocated, bound)
	}

	select {
	case <-first:
		t.Error("the first round ended while the slow target's scrape ran")
	default:
	}
	cancel()
	testutil.Receive(t, "the first round to end with its context", first)
	if got := promtest.ToFloat64(s.metrics.errors.WithLabelValues(slow.URL, reasonTimeout)); got != 1 {
		t.Errorf("the slow target: %v timeouts, want 1 (its scrape cut off)", got)
	}
}
