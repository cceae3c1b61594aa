package server

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"
	cmclient "k8s.io/metrics/pkg/client/custom_metrics"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/provider"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/scrape"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// fakeAgent serves an agent exposition of one GPU held by ml/trainer-0 whose
// utilization and snapshot time the test sets.
type fakeAgent struct {
	mu       sync.Mutex
	util     float64
	snapshot time.Time
}

func (a *fakeAgent) set(util float64, snapshot time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.util, a.snapshot = util, snapshot
}

func (a *fakeAgent) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	const labels = `gpu="0",UUID="GPU-8a1c6f0e-3b7d-4c52-9e1f-5d2a7b9c0e11",pci_bus_id="00000000:17:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",hostname="node-1",container="trainer",namespace="ml",pod="trainer-0"`
	fmt.Fprintf(w, "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\nDCGM_FI_DEV_GPU_UTIL{%s} %g\n", labels, a.util)
	fmt.Fprintf(w, "# TYPE DCGM_FI_DEV_POWER_USAGE gauge\nDCGM_FI_DEV_POWER_USAGE{%s} 250.5\n", labels)
	fmt.Fprintf(w, "# TYPE gpu_metrics_server_sample_timestamp_seconds gauge\ngpu_metrics_server_sample_timestamp_seconds %.3f\n",
		float64(a.snapshot.UnixMilli())/1000)
}

// TestScrapedAgentServed runs the aggregator's pipeline on loopback: an
// agent scraped by the scraper into the store, served by the API to the
// HPA's client.
func TestScrapedAgentServed(t *testing.T) {
	agent := &fakeAgent{}
	first := time.Now().Add(-time.Second).Truncate(time.Second)
	agent.set(30, first)
	srv := httptest.NewServer(agent)
	defer srv.Close()

	st, err := store.New(store.Config{Window: time.Minute, StaleAfter: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	targets, err := scrape.NewStaticTargets([]string{srv.URL + "/metrics"})
	if err != nil {
		t.Fatal(err)
	}
	// A timeout that a loaded CI machine meets; the test waits for what
	// each step needs in the store (a round that finished may have failed).
	scraper, err := scrape.New(scrape.Config{Interval: time.Second, Timeout: time.Second, MaxBodyBytes: 1 << 20}, targets, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go scraper.Run(ctx)
	testutil.Eventually(t, "the first snapshot to reach the store", func() bool { return st.Stats().Appended > 0 })
	pods := provider.NewStaticPodLister([]provider.StaticPod{{Namespace: "ml", Name: "trainer-0", Labels: map[string]string{"app": "trainer"}}})
	ts := startServer(t, Config{
		Metrics: st, Pods: pods,
		ReadyChecks: []ReadyCheck{{Name: "first-scrape-round", HasSynced: scraper.HasSynced}},
		Collectors:  []prometheus.Collector{scraper},
	}, false)
	ts.ready.Store(true)

	c, err := cmclient.NewForVersionForConfig(ts.rest, podMapper(), cmv1beta2.SchemeGroupVersion)
	if err != nil {
		t.Fatal(err)
	}
	query := func() (int64, time.Time, int64) {
		t.Helper()
		list, err := c.NamespacedMetrics("ml").GetForObjects(schema.GroupKind{Kind: "Pod"}, labels.SelectorFromSet(labels.Set{"app": "trainer"}), "gpu_utilization", labels.Everything())
		if err != nil || len(list.Items) != 1 {
			t.Fatalf("GetForObjects = %+v, %v; want one item", list, err)
		}
		it := list.Items[0]
		return it.Value.MilliValue(), it.Timestamp.Time, *it.WindowSeconds
	}
	if v, at, w := query(); v != 30_000 || !at.Equal(first) || w != 0 {
		t.Errorf("after the first snapshot: %d m at %v over %d s; want 30 at the snapshot's %v over 0 s", v, at, w, first)
	}
	// Repeated scrapes of one snapshot store it once.
	testutil.Eventually(t, "a repeated scrape of the snapshot", func() bool { return st.Stats().Duplicates > 0 })
	if n := st.Stats().Appended; n != 1 {
		t.Errorf("one snapshot scraped several times stored %d samples, want 1", n)
	}
	// A new snapshot 2 s later: the mean of both, over 2 s, stamped with
	// the new snapshot's time.
	second := first.Add(2 * time.Second)
	agent.set(50, second)
	testutil.Eventually(t, "the second snapshot to reach the store", func() bool { return st.Stats().Appended > 1 })
	if v, at, w := query(); !at.Equal(second) || v != 40_000 || w != 2 {
		t.Errorf("after the second snapshot: %d m at %v over %d s; want 40 at %v over 2 s", v, at, w, second)
	}
	if code, body := ts.get(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d after the first round: %s", code, body)
	}
	if code, body := ts.get(t, "/metrics"); code != http.StatusOK || !containsAll(body, "gpu_metrics_server_scrape_duration_seconds{target=\""+srv.URL+"/metrics\"}") {
		t.Errorf("/metrics (HTTP %d) lacks the scrape duration of the target", code)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
