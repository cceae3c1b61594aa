//go:build e2e && benchcompare

package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

const (
	// seedRule is the seed's prometheus-adapter metricsQuery.
	seedRule = `avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)`
	// seedRelist is the seed's --metrics-relist-interval.
	seedRelist = time.Minute
	// seedWindow is the range of the seed rule's avg_over_time.
	seedWindow = time.Minute
	// Our aggregator's defaults (docs/architecture.md), which the
	// benchmark runs it with.
	defaultScrapeInterval = 2 * time.Second
	defaultWindow         = 15 * time.Second
)

// pipeline is one way of serving gpu_utilization on
// custom.metrics.k8s.io, started against a fleet and registered as the
// APIService for the rest of the (sub)test.
type pipeline struct {
	name string
	// scrapeInterval and window bound how fast a step can show.
	scrapeInterval, window time.Duration
	// procs are the processes whose footprint is the pipeline's.
	procs []*framework.Process
	// metricsURL is our aggregator's self-metrics (empty for the seed
	// chain).
	metricsURL string
	// reset, when set, restarts the part of the pipeline that an
	// overloading latency run leaves busy with queued requests (the
	// seed's adapter), so that the next figure is not measured behind
	// them.
	reset func(t *testing.T)
}

// startOurs starts the aggregator with its default scrape interval, window
// (unless window is set) and staleness, scraping urls, and registers it.
// extra flags, if any, are appended (and named in the pipeline's name).
func startOurs(t *testing.T, dir string, urls []string, window time.Duration, extra ...string) *pipeline {
	t.Helper()
	var args []string
	name := "ours"
	if window > 0 {
		args = append(args, "--window="+window.String())
		name += " --window=" + window.String()
	} else {
		window = defaultWindow
	}
	if len(extra) > 0 {
		args = append(args, extra...)
		name += " " + strings.Join(extra, " ")
	}
	a := cluster.StartAggregator(t, dir, urls, args...)
	cluster.RegisterCustomMetrics(t, a.Port)
	return &pipeline{name: name, scrapeInterval: defaultScrapeInterval, window: window, procs: []*framework.Process{a.Process}, metricsURL: a.URL + "/metrics"}
}

// startSeedChain starts Prometheus scraping urls every interval, waits
// until it has scraped every target and holds the pods' series, then
// starts prometheus-adapter with the seed's rule and registers it.
func startSeedChain(t *testing.T, dir string, urls []string, interval time.Duration, namespace string) *pipeline {
	t.Helper()
	prom := framework.StartPrometheus(t, dir, "gpu-metrics-server-agent", urls, interval)
	framework.WaitFor(t, 2*interval+60*time.Second, "Prometheus to scrape every target and hold the pods' GPU series", func(ctx context.Context) (bool, string, error) {
		up, err := prom.Scalar(ctx, `count(up == 1)`)
		if err != nil {
			return false, err.Error(), nil
		}
		pods, err := prom.Scalar(ctx, fmt.Sprintf(`count(DCGM_FI_DEV_GPU_UTIL{namespace=%q})`, namespace))
		if err != nil {
			return false, err.Error(), nil
		}
		return up == float64(len(urls)) && pods > 0, fmt.Sprintf("%v of %d targets up, %v series in %s", up, len(urls), pods, namespace), nil
	})
	adapter := startAdapter(t, dir, prom.URL, 0, 0)
	cluster.RegisterCustomMetrics(t, adapter.Port)
	p := &pipeline{
		name:           "seed chain " + interval.String(),
		scrapeInterval: interval,
		window:         seedWindow,
		procs:          []*framework.Process{prom.Process, adapter.Process},
	}
	restarts := 0
	p.reset = func(t *testing.T) {
		t.Helper()
		restarts++
		p.procs[1].Stop()
		p.procs[1] = startAdapter(t, dir, prom.URL, adapter.Port, restarts).Process
	}
	return p
}

// adapterConfig is prometheus-adapter's rule file with the seed's rule.
func adapterConfig() string {
	return `rules:
- seriesQuery: 'DCGM_FI_DEV_GPU_UTIL{namespace!="",pod!=""}'
  resources:
    overrides:
      namespace: {resource: "namespace"}
      pod: {resource: "pod"}
  name:
    matches: "^DCGM_FI_DEV_GPU_UTIL$"
    as: "gpu_utilization"
  metricsQuery: '` + seedRule + `'
`
}

// startAdapter starts prometheus-adapter v0.12.0 on Prometheus at promURL
// with the seed's rule and relist interval, on port (0: a free one).
// restart numbers the log of a restart.
func startAdapter(t *testing.T, dir, promURL string, port, restart int) *framework.Adapter {
	t.Helper()
	name := "prometheus-adapter"
	if restart > 0 {
		name += "-restart-" + strconv.Itoa(restart)
	}
	return cluster.StartPrometheusAdapter(t, dir, framework.AdapterOptions{
		Name: name, PrometheusURL: promURL, Rules: adapterConfig(), RelistInterval: seedRelist, Port: port,
	})
}

// aggregatorStats is what our aggregator's self-metrics say about its
// scraping.
type aggregatorStats struct {
	// rounds and roundSeconds are the count and sum of the scrape rounds'
	// histogram: each round's slowest scrape from its start slot to its
	// end (gpu_metrics_server_scrape_round_lag_seconds), or, from a binary
	// before the spread rounds, each round's duration.
	rounds, roundSeconds float64
	skipped              float64 // scrapes skipped: the previous still running
	errors               float64 // all scrape errors
	// heapMiB, stackMiB and goroutines are the Go runtime's heap in use,
	// goroutine stacks and goroutine count.
	heapMiB, stackMiB, goroutines float64
	targets                       float64
	stored, duplicate             float64
	storePods                     float64
	// hits and rebuilt count the selector queries answered from a kept
	// encoded answer as it was, and those whose answer was (re)built
	// (gpu_metrics_server_answers_total).
	hits, rebuilt float64
	// provider is the provider's time to answer selector queries;
	// server the whole request inside the aggregator's API server
	// (authentication, authorization, provider, encoding). Cumulative
	// bucket counts by upper bound.
	provider, server buckets
}

// buckets are a histogram's cumulative counts by upper bound (the +Inf
// bucket included), summed over its series.
type buckets map[float64]float64

func (b buckets) add(h *dto.Histogram) {
	hasInf := false
	for _, bk := range h.GetBucket() {
		hasInf = hasInf || math.IsInf(bk.GetUpperBound(), 1)
		b[bk.GetUpperBound()] += float64(bk.GetCumulativeCount())
	}
	if !hasInf {
		b[math.Inf(1)] += float64(h.GetSampleCount())
	}
}

// quantileSince returns the upper bound of the bucket holding the
// q-quantile of the observations made between before and b: 0 when there
// were none, +Inf when it lies beyond the largest finite bound.
func (b buckets) quantileSince(before buckets, q float64) float64 {
	total := b[math.Inf(1)] - before[math.Inf(1)]
	if total <= 0 {
		return 0
	}
	for _, ub := range slices.Sorted(maps.Keys(b)) {
		if b[ub]-before[ub] >= q*total {
			return ub
		}
	}
	return math.Inf(1)
}

// statsTimeout bounds one read of the aggregator's /metrics: thousands of
// targets' series, read right after a latency run on a loaded machine.
const statsTimeout = 30 * time.Second

// readAggregatorStats reads our aggregator's /metrics.
func readAggregatorStats(ctx context.Context, metricsURL string) (aggregatorStats, error) {
	st := aggregatorStats{provider: buckets{}, server: buckets{}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return st, err
	}
	client := cluster.HTTPClient()
	client.Timeout = statsTimeout
	resp, err := client.Do(req)
	if err != nil {
		return st, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return st, fmt.Errorf("GET %s: %s: %s", metricsURL, resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return st, fmt.Errorf("parsing %s: %w", metricsURL, err)
	}
	for _, name := range []string{"gpu_metrics_server_scrape_round_lag_seconds", "gpu_metrics_server_scrape_round_duration_seconds"} {
		if h := mfs[name].GetMetric(); len(h) == 1 {
			st.rounds = float64(h[0].GetHistogram().GetSampleCount())
			st.roundSeconds = h[0].GetHistogram().GetSampleSum()
			break
		}
	}
	if m := mfs["gpu_metrics_server_scrape_skipped_total"].GetMetric(); len(m) == 1 {
		st.skipped = m[0].GetCounter().GetValue()
	}
	for name, dst := range map[string]*float64{
		"go_memstats_heap_inuse_bytes": &st.heapMiB, "go_memstats_stack_inuse_bytes": &st.stackMiB, "go_goroutines": &st.goroutines,
	} {
		if m := mfs[name].GetMetric(); len(m) == 1 {
			*dst = m[0].GetGauge().GetValue()
			if name != "go_goroutines" {
				*dst /= 1 << 20
			}
		}
	}
	for _, m := range mfs["gpu_metrics_server_scrape_errors_total"].GetMetric() {
		st.errors += m.GetCounter().GetValue()
	}
	if m := mfs["gpu_metrics_server_scrape_targets"].GetMetric(); len(m) == 1 {
		st.targets = m[0].GetGauge().GetValue()
	}
	if m := mfs["gpu_metrics_server_store_pods"].GetMetric(); len(m) == 1 {
		st.storePods = m[0].GetGauge().GetValue()
	}
	for _, m := range mfs["gpu_metrics_server_answers_total"].GetMetric() {
		switch labelOf(m, "result") {
		case "hit":
			st.hits = m.GetCounter().GetValue()
		case "rebuilt":
			st.rebuilt = m.GetCounter().GetValue()
		}
	}
	for _, m := range mfs["gpu_metrics_server_query_duration_seconds"].GetMetric() {
		if labelOf(m, "kind") == "selector" && labelOf(m, "metric") == framework.MetricName {
			st.provider.add(m.GetHistogram())
		}
	}
	for _, m := range mfs["apiserver_request_duration_seconds"].GetMetric() {
		if labelOf(m, "group") == "custom.metrics.k8s.io" {
			st.server.add(m.GetHistogram())
		}
	}
	for _, m := range mfs["gpu_metrics_server_store_samples_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() != "result" {
				continue
			}
			switch l.GetValue() {
			case "stored":
				st.stored = m.GetCounter().GetValue()
			case "duplicate":
				st.duplicate = m.GetCounter().GetValue()
			}
		}
	}
	return st, nil
}

// labelOf returns a series' label value.
func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
