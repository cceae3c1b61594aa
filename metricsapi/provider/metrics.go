package provider

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// newQueryDuration returns the provider's self-metric.
func newQueryDuration() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "gpu_metrics_server_query_duration_seconds",
		Help:    "Time to answer a custom metrics query (selector resolution and aggregation), by metric and kind (name, selector).",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 14),
	}, []string{"metric", "kind"})
}

func (p *Provider) observe(metric, kind string, start time.Time) {
	p.query.WithLabelValues(metric, kind).Observe(time.Since(start).Seconds())
}

// Describe implements prometheus.Collector.
func (p *Provider) Describe(ch chan<- *prometheus.Desc) { p.query.Describe(ch) }

// Collect implements prometheus.Collector.
func (p *Provider) Collect(ch chan<- prometheus.Metric) { p.query.Collect(ch) }
