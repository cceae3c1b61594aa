package scrape

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

func newTestStore(t *testing.T) *store.Store {
	t.Helper()
	// Samples never go stale while a test runs, however slow the machine.
	s, err := store.New(store.Config{Window: 15 * time.Second, StaleAfter: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func body(b []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(b) }
}

// generous is a scrape configuration whose timeout no healthy loopback
// target misses however loaded the machine; the interval equals it, so
// that every target starts at once.
func generous(maxBody int64) Config {
	return Config{Interval: testutil.DefaultTimeout, Timeout: testutil.DefaultTimeout, MaxBodyBytes: maxBody}
}

func TestRoundSkipsBadTargets(t *testing.T) {
	agent := readTestdata(t, "agent.prom")
	dcgmBody := readTestdata(t, "dcgm-exporter.prom")
	limit := max(len(agent), len(dcgmBody)) + 4096
	good := serve(t, body(agent))
	dcgm := serve(t, body(dcgmBody))
	status := serve(t, func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) })
	big := serve(t, body([]byte(strings.Repeat("# padding\n", limit/5))))
	malformed := serve(t, body([]byte("DCGM_FI_DEV_GPU_UTIL{pod=\"x\" 1\n")))
	// Nothing listens on port 0: connecting is refused at once. (A closed
	// test server's port may be taken by a test running in parallel.)
	const closedURL = "http://127.0.0.1:0/metrics"

	targets, err := NewStaticTargets([]string{good.URL, dcgm.URL, status.URL, big.URL, malformed.URL, closedURL, good.URL})
	if err != nil {
		t.Fatal(err)
	}
	st := newTestStore(t)
	// The body limit fits the real expositions but not the padding.
	s, err := New(generous(int64(limit)), targets, st)
	if err != nil {
		t.Fatal(err)
	}
	if s.HasSynced() {
		t.Fatal("scraper synced before any round")
	}
	s.round(context.Background())
	if !s.HasSynced() {
		t.Error("scraper not synced after a round")
	}
	wantErrors := map[string]string{
		status.URL: reasonStatus, big.URL: reasonTooLarge, malformed.URL: reasonParse, closedURL: reasonConnect,
	}
	for url, reason := range wantErrors {
		if got := promtest.ToFloat64(s.metrics.errors.WithLabelValues(url, reason)); got != 1 {
			t.Errorf("errors{target=%s,reason=%s} = %v, want 1", url, reason, got)
		}
	}
	if n := promtest.CollectAndCount(s.metrics.errors); n != len(wantErrors) {
		t.Errorf("%d error series, want %d (good targets must not fail)", n, len(wantErrors))
	}
	if got := promtest.ToFloat64(s.metrics.targets); got != 6 {
		t.Errorf("targets = %v, want 6 (the repeated URL once)", got)
	}
	if got := promtest.ToFloat64(s.metrics.samples.WithLabelValues(good.URL)); got != 3 {
		t.Errorf("samples{target=good} = %v, want 3", got)
	}
	// The good targets' pods are served.
	now := time.Now()
	for _, pod := range []struct{ ns, name string }{{"ml", "trainer-0"}, {"web", "infer-b"}, {"ml", "trainer-1"}} {
		if _, ok := st.PodValue(store.Utilization, pod.ns, pod.name, now); !ok {
			t.Errorf("pod %s/%s not in the store after the round", pod.ns, pod.name)
		}
	}

	// A target that goes away loses its self-metrics series.
	s.targets = StaticTargets{{Name: good.URL, URL: good.URL}}
	s.round(context.Background())
	if n := promtest.CollectAndCount(s.metrics.errors); n != 0 {
		t.Errorf("%d error series left for targets gone, want 0", n)
	}
	if n := promtest.CollectAndCount(s.metrics.duration); n != 1 {
		t.Errorf("%d duration series, want 1", n)
	}
}

// hung serves a target that answers only once the test ends.
func hung(t *testing.T) *httptest.Server {
	release := make(chan struct{})
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) }) // runs before the server's Close
	return srv
}

// hungAndGood returns a scraper of two targets, one that hangs and one
// that serves an agent's body, and the store it appends to.
func hungAndGood(t *testing.T) (*Scraper, *store.Store) {
	t.Helper()
	good := serve(t, body(readTestdata(t, "agent.prom")))
	slow := hung(t)
	targets, err := NewStaticTargets([]string{slow.URL, good.URL})
	if err != nil {
		t.Fatal(err)
	}
	st := newTestStore(t)
	s, err := New(generous(1<<20), targets, st)
	if err != nil {
		t.Fatal(err)
	}
	return s, st
}

// TestRoundTimesOutHungTarget: a target that never answers, and one that
// never finishes its body (one byte per second), are cut off at the
// timeout however short it is.
func TestRoundTimesOutHungTarget(t *testing.T) {
	for _, tc := range []struct {
		name string
		srv  func(t *testing.T) *httptest.Server
	}{
		{"no answer", hung},
		{"one byte per second", func(t *testing.T) *httptest.Server { return serve(t, testutil.OneBytePerSecond) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			slow := tc.srv(t)
			targets, err := NewStaticTargets([]string{slow.URL})
			if err != nil {
				t.Fatal(err)
			}
			s, err := New(Config{Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond, MaxBodyBytes: 1 << 20}, targets, newTestStore(t))
			if err != nil {
				t.Fatal(err)
			}
			s.round(context.Background())
			if got := promtest.ToFloat64(s.metrics.errors.WithLabelValues(slow.URL, reasonTimeout)); got != 1 {
				t.Errorf("errors{reason=timeout} = %v, want 1", got)
			}
			if n := promtest.CollectAndCount(s.metrics.errors); n != 1 {
				t.Errorf("%d error series, want 1", n)
			}
		})
	}
}

// TestHungTargetHoldsUpNoOther checks that the other targets' samples reach
// the store while one target's scrape hangs.
func TestHungTargetHoldsUpNoOther(t *testing.T) {
	s, st := hungAndGood(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.round(ctx); close(done) }()
	testutil.Eventually(t, "the good target's samples in the store", func() bool { return st.Stats().Appended > 0 })
	select {
	case <-done:
		t.Error("the round ended while a target still hung")
	default:
	}
	cancel()
	testutil.Receive(t, "the round to end with its context", done)
	if s.HasSynced() {
		t.Error("a round cut short by its context counted as the first round")
	}
}

func TestBearerTokenOnlyOverTLS(t *testing.T) {
	agent := readTestdata(t, "agent.prom")
	var mu sync.Mutex
	seen := map[string]string{}
	record := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen[name] = r.Header.Get("Authorization")
			mu.Unlock()
			if name == "tls" && r.Header.Get("Authorization") != "Bearer s3cret" {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			_, _ = w.Write(agent)
		}
	}
	tlsSrv := httptest.NewTLSServer(record("tls"))
	defer tlsSrv.Close()
	plain := serve(t, record("plain"))

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw})
	tokenFile := filepath.Join(dir, "token")
	for path, data := range map[string][]byte{caFile: cert, tokenFile: []byte("s3cret\n")} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	targets, err := NewStaticTargets([]string{tlsSrv.URL, plain.URL})
	if err != nil {
		t.Fatal(err)
	}
	cfg := generous(1 << 20)
	cfg.CAFile, cfg.BearerTokenFile = caFile, tokenFile
	s, err := New(cfg, targets, newTestStore(t))
	if err != nil {
		t.Fatal(err)
	}
	s.round(context.Background())
	if n := promtest.CollectAndCount(s.metrics.errors); n != 0 {
		t.Errorf("%d scrape errors, want 0", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["tls"] != "Bearer s3cret" || seen["plain"] != "" {
		t.Errorf("Authorization headers = %q, want the token over TLS only", seen)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := Config{Interval: 2 * time.Second, Timeout: time.Second, MaxBodyBytes: 1}
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"zero interval", func(c *Config) { c.Interval = 0 }},
		{"timeout above interval", func(c *Config) { c.Timeout = 3 * time.Second }},
		{"zero timeout", func(c *Config) { c.Timeout = 0 }},
		{"zero body limit", func(c *Config) { c.MaxBodyBytes = 0 }},
		{"missing CA file", func(c *Config) { c.CAFile = filepath.Join(dir, "nope") }},
		{"CA file without PEM", func(c *Config) { c.CAFile = notPEM }},
		{"missing token file", func(c *Config) { c.BearerTokenFile = filepath.Join(dir, "nope") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			if _, err := New(c, StaticTargets{}, newTestStore(t)); err == nil {
				t.Errorf("New accepted %+v", c)
			}
		})
	}
}

func TestStaticTargets(t *testing.T) {
	for _, bad := range []string{"ftp://host/metrics", "/metrics", "http://", "http://[::1"} {
		if _, err := NewStaticTargets([]string{bad}); err == nil {
			t.Errorf("NewStaticTargets accepted %q", bad)
		}
	}
	ts, err := NewStaticTargets([]string{"http://10.0.0.1:9400/metrics", "https://agent.example:9400/metrics"})
	if err != nil || len(ts.Targets()) != 2 || !ts.HasSynced() {
		t.Errorf("NewStaticTargets = %v, %v", ts, err)
	}
}

func TestPodDiscoveryTargets(t *testing.T) {
	client, err := kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []DiscoveryConfig{
		{Kind: "agent", Namespace: "", Selector: "a=b", Scheme: "http", Port: 9400},
		{Kind: "agent", Namespace: "gms", Selector: "a in (", Scheme: "http", Port: 9400},
		{Kind: "agent", Namespace: "gms", Selector: "a=b", Scheme: "ftp", Port: 9400},
		{Kind: "agent", Namespace: "gms", Selector: "a=b", Scheme: "http", Port: 0},
	} {
		if _, err := NewPodDiscovery(client, bad); err == nil {
			t.Errorf("NewPodDiscovery accepted %+v", bad)
		}
	}
	d, err := NewPodDiscovery(client, DiscoveryConfig{Kind: "agent", Namespace: "gms", Selector: "app=agent", Scheme: "https", Port: 9400})
	if err != nil {
		t.Fatal(err)
	}
	pod := func(name, ip string, phase corev1.PodPhase) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "gms"},
			Spec:       corev1.PodSpec{NodeName: "node-of-" + name},
			Status:     corev1.PodStatus{Phase: phase, PodIP: ip},
		}
	}
	for _, p := range []*corev1.Pod{
		pod("agent-a", "10.1.2.3", corev1.PodRunning),
		pod("agent-b", "fd00::7", corev1.PodRunning),
		pod("agent-c", "", corev1.PodRunning),
		pod("agent-d", "10.1.2.4", corev1.PodPending),
	} {
		if err := d.informer.GetStore().Add(p); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]string{}
	for _, tg := range d.Targets() {
		got[tg.Name] = tg.URL
		if want := "node-of-" + tg.Name[len("agent/gms/"):]; tg.Node != want {
			t.Errorf("target %s on node %q, want %q", tg.Name, tg.Node, want)
		}
	}
	want := map[string]string{
		"agent/gms/agent-a": "https://10.1.2.3:9400/metrics",
		"agent/gms/agent-b": "https://[fd00::7]:9400/metrics",
	}
	if len(got) != len(want) || got["agent/gms/agent-a"] != want["agent/gms/agent-a"] || got["agent/gms/agent-b"] != want["agent/gms/agent-b"] {
		t.Errorf("Targets = %v, want %v", got, want)
	}

	// Asking for families: the query names each, in order.
	fd, err := NewPodDiscovery(client, DiscoveryConfig{Kind: "agent", Namespace: "gms", Selector: "app=agent", Scheme: "http", Port: 9400,
		Families: []string{"DCGM_FI_DEV_GPU_UTIL", "gpu_metrics_server_sample_timestamp_seconds"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := fd.informer.GetStore().Add(pod("agent-a", "10.1.2.3", corev1.PodRunning)); err != nil {
		t.Fatal(err)
	}
	const wantURL = "http://10.1.2.3:9400/metrics?name%5B%5D=DCGM_FI_DEV_GPU_UTIL&name%5B%5D=gpu_metrics_server_sample_timestamp_seconds"
	if tg := fd.Targets(); len(tg) != 1 || tg[0].URL != wantURL {
		t.Errorf("Targets = %+v, want %s", tg, wantURL)
	}
	if (Sources{d, StaticTargets{}}).HasSynced() {
		t.Error("Sources synced before the informer listed")
	}
	if n := len((Sources{d, StaticTargets{{Name: "x", URL: "http://x/metrics"}}}).Targets()); n != 3 {
		t.Errorf("Sources.Targets = %d targets, want 3", n)
	}
}

func TestOffsetSpreadsWithinBound(t *testing.T) {
	spread := 200 * time.Millisecond
	for i := 0; i < 100; i++ {
		d := offset("agent/gms/agent-"+string(rune('a'+i%26))+string(rune('a'+i/26)), spread)
		if d < 0 || d >= spread {
			t.Fatalf("offset %v outside [0, %v)", d, spread)
		}
	}
	first, again := offset("x", spread), offset("x", spread)
	if offset("x", 0) != 0 || first != again {
		t.Error("offset is not stable, or not zero without a spread")
	}
}

func TestRunStopsWithContext(t *testing.T) {
	srv := serve(t, body(readTestdata(t, "agent.prom")))
	targets, err := NewStaticTargets([]string{srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	st := newTestStore(t)
	// A timeout that a loaded CI machine meets: the test waits for the
	// store, not for a round to end.
	s, err := New(Config{Interval: time.Second, Timeout: time.Second, MaxBodyBytes: 1 << 20}, targets, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	testutil.WaitFor(t, testutil.DefaultTimeout, "a round to reach the store", func(context.Context) (bool, string, error) {
		return st.Stats().Appended > 0 && s.HasSynced(), fmt.Sprintf("store %+v, synced %v", st.Stats(), s.HasSynced()), nil
	})
	cancel()
	testutil.Receive(t, "Run to return after its context's end", done)
	if _, ok := st.PodValue(store.Utilization, "ml", "trainer-0", time.Now()); !ok {
		t.Error("Run's rounds did not reach the store")
	}
}

// TestRoundDoesNotWaitForSlowTarget checks that a round started while a
// target's scrape from the round before still hangs skips that target
// (counted), scrapes the others and ends, and that the earlier round ends
// only with the hung scrape.
func TestRoundDoesNotWaitForSlowTarget(t *testing.T) {
	s, st := hungAndGood(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := s.startRound(ctx)
	testutil.Eventually(t, "the first round's good scrape in the store", func() bool { return st.Stats().Appended > 0 })
	second := s.startRound(ctx)
	testutil.Receive(t, "the second round to end while the first round's slow scrape hangs", second)
	select {
	case <-first:
		t.Error("the first round ended while its slow scrape hung")
	default:
	}
	if got := promtest.ToFloat64(s.metrics.skipped); got != 1 {
		t.Errorf("skipped = %v, want 1 (the hung target's second turn)", got)
	}
	if st.Stats().Duplicates == 0 {
		t.Error("the second round did not scrape the good target again")
	}
	if !s.HasSynced() {
		t.Error("not synced after a round ended")
	}
	cancel()
	testutil.Receive(t, "the first round to end with its context", first)
}

// TestOffsetsShareSlots: offsets fall on a grid of spreadSlots start
// times, so a round wakes at most spreadSlots times whatever its targets.
func TestOffsetsShareSlots(t *testing.T) {
	for _, spread := range []time.Duration{2 * time.Second, 200 * time.Millisecond, 150 * time.Nanosecond} {
		step := spread / spreadSlots
		starts := map[time.Duration]bool{}
		for i := range 5000 {
			d := offset(fmt.Sprintf("agent/gms/agent-%d", i), spread)
			if d < 0 || d >= spread {
				t.Fatalf("spread %v: offset %v outside [0, %v)", spread, d, spread)
			}
			if step > 0 && d%step != 0 {
				t.Fatalf("spread %v: offset %v is not on the %v grid", spread, d, step)
			}
			starts[d] = true
		}
		if want := min(spreadSlots, int(spread)); len(starts) != want {
			t.Errorf("spread %v: 5000 targets start at %d times, want %d", spread, len(starts), want)
		}
	}
}

// TestSpreadPlacesTargetsAtTheirOffsets checks where a round places its
// targets: each at offset(name) within the spread, the same in every round
// and whatever the order of the list.
func TestSpreadPlacesTargetsAtTheirOffsets(t *testing.T) {
	const spread = 2 * time.Second
	var names []string
	for i := range 500 {
		names = append(names, fmt.Sprintf("agent/gms/agent-%d", i))
	}
	slots := map[string]time.Duration{}
	var lo, hi time.Duration = spread, 0
	for _, n := range names {
		d := offset(n, spread)
		slots[n] = d
		lo, hi = min(lo, d), max(hi, d)
	}
	// 500 uniform draws cover nearly the whole spread: no burst.
	if lo > spread/50 || hi < spread-spread/50 {
		t.Errorf("offsets span [%v, %v], want nearly all of [0, %v)", lo, hi, spread)
	}
	// Stable: the same name, the same slot, in any round.
	for _, n := range slices.Backward(names) {
		if d := offset(n, spread); d != slots[n] {
			t.Fatalf("offset(%q) = %v, then %v", n, slots[n], d)
		}
	}
	// Evenly spread: no tenth of the spread holds more than twice its share.
	var bins [10]int
	for _, d := range slots {
		bins[d*10/spread]++
	}
	for i, n := range bins {
		if n > 2*len(names)/10 {
			t.Errorf("tenth %d of the spread holds %d of %d targets: %v", i, n, len(names), bins)
		}
	}
}

// TestNodeSamplesReachTheStore checks that a round stores every device of
// a target's node, held or idle, under the target's node when discovery
// knows it, else under the series' hostname label.
func TestNodeSamplesReachTheStore(t *testing.T) {
	agent := serve(t, body(readTestdata(t, "agent.prom")))
	exporter := serve(t, body(readTestdata(t, "dcgm-exporter.prom")))
	tests := []struct {
		name     string
		target   Target
		node     string
		wantGPUs float64
	}{
		{"static agent: its hostname label", Target{Name: "a", URL: agent.URL}, "gpu-node-7", 3},
		{"discovered exporter: its pod's node, not its Hostname label", Target{Name: "e", URL: exporter.URL, Node: "node-9"}, "node-9", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newTestStore(t)
			s, err := New(generous(1<<20), StaticTargets{tc.target}, st)
			if err != nil {
				t.Fatal(err)
			}
			s.round(context.Background())
			testutil.Eventually(t, "the node in the store", func() bool { return st.Stats().Nodes == 1 })
			v, ok := st.NodeValue(store.Devices, tc.node, time.Now())
			if !ok || v.Value != tc.wantGPUs {
				t.Errorf("node %s devices = %v, %v; want %v", tc.node, v.Value, ok, tc.wantGPUs)
			}
		})
	}
}
