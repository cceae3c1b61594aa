package scrape

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the scraper's self-metrics, per target where it matters.
type metrics struct {
	duration *prometheus.GaugeVec
	errors   *prometheus.CounterVec
	samples  *prometheus.GaugeVec
	invalid  *prometheus.CounterVec
	rounds   prometheus.Histogram
	skipped  prometheus.Counter
	targets  prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		duration: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gpu_metrics_server_scrape_duration_seconds",
			Help: "Duration of the last scrape of the target (fetch, parse and store), successful or not.",
		}, []string{"target"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpu_metrics_server_scrape_errors_total",
			Help: "Failed scrapes of the target by reason: connect, timeout, http_status, body_too_large, read, parse, store.",
		}, []string{"target", "reason"}),
		samples: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gpu_metrics_server_scrape_samples",
			Help: "Pod device samples read from the target in its last successful scrape.",
		}, []string{"target"}),
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpu_metrics_server_scrape_invalid_series_total",
			Help: "Device series of the target skipped for a missing UUID or an implausible value.",
		}, []string{"target"}),
		rounds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gpu_metrics_server_scrape_round_lag_seconds",
			Help: "Per scrape round (every target once, each starting at its own offset within the interval): the longest time from a " +
				"target's start slot to the end of its scrape. Below the scrape interval, every target keeps its cadence.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gpu_metrics_server_scrape_skipped_total",
			Help: "Scrapes not started because the target's previous scrape was still running at its turn.",
		}),
		targets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gpu_metrics_server_scrape_targets",
			Help: "Targets in the last scrape round.",
		}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.duration, m.errors, m.samples, m.invalid, m.rounds, m.skipped, m.targets}
}

// scraped records one target's scrape.
func (m *metrics) scraped(target string, d time.Duration, err error) {
	m.duration.WithLabelValues(target).Set(d.Seconds())
	if err == nil {
		return
	}
	reason := reasonConnect
	var se *scrapeError
	if errors.As(err, &se) {
		reason = se.reason
	}
	m.errors.WithLabelValues(target, reason).Inc()
}

// parsed records what a successful scrape read.
func (m *metrics) parsed(target string, st ParseStats) {
	m.samples.WithLabelValues(target).Set(float64(st.Samples))
	if st.Invalid > 0 {
		m.invalid.WithLabelValues(target).Add(float64(st.Invalid))
	}
}

// forget deletes the series of a target gone.
func (m *metrics) forget(target string) {
	l := prometheus.Labels{"target": target}
	m.duration.DeletePartialMatch(l)
	m.errors.DeletePartialMatch(l)
	m.samples.DeletePartialMatch(l)
	m.invalid.DeletePartialMatch(l)
}

// Describe implements prometheus.Collector.
func (s *Scraper) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s.metrics.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (s *Scraper) Collect(ch chan<- prometheus.Metric) {
	for _, c := range s.metrics.collectors() {
		c.Collect(ch)
	}
}
