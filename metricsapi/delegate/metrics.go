package delegate

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Delegator's self-metrics.
type metrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	inFlight   prometheus.Gauge
	up         prometheus.Gauge
	refreshes  *prometheus.CounterVec
	discovered *prometheus.GaugeVec
	shadowed   prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpu_metrics_server_delegate_requests_total",
			Help: "Custom metrics requests forwarded to the delegate, by outcome: success, client_error, server_error (the delegate's status class), " +
				"timeout, unreachable, bad_response, overloaded (too many in flight), canceled (the caller left).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gpu_metrics_server_delegate_request_duration_seconds",
			Help:    "Time to answer a forwarded custom metrics request, delegate included, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"outcome"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gpu_metrics_server_delegate_requests_in_flight",
			Help: "Forwarded custom metrics requests waiting on the delegate.",
		}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gpu_metrics_server_delegate_up",
			Help: "1 when the last refresh of the delegate's discovery succeeded, else 0.",
		}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpu_metrics_server_delegate_discovery_refreshes_total",
			Help: "Refreshes of the delegate's discovery, by result (success, failure).",
		}, []string{"result"}),
		discovered: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gpu_metrics_server_delegate_discovered_metrics",
			Help: "Metrics in the delegate's last known discovery, by the versions it serves.",
		}, []string{"version"}),
		shadowed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gpu_metrics_server_delegate_shadowed_metrics",
			Help: "Metrics the delegate lists that this server serves too (this server answers them).",
		}),
	}
	for _, o := range []string{outcomeSuccess, outcomeClientError, outcomeServerError, outcomeTimeout, outcomeUnreachable, outcomeBadResponse, outcomeOverloaded, outcomeCanceled} {
		m.requests.WithLabelValues(o)
	}
	for _, r := range []string{"success", "failure"} {
		m.refreshes.WithLabelValues(r)
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.duration, m.inFlight, m.up, m.refreshes, m.discovered, m.shadowed}
}

func (m *metrics) request(outcome string, d time.Duration) {
	m.requests.WithLabelValues(outcome).Inc()
	m.duration.WithLabelValues(outcome).Observe(d.Seconds())
}

func (m *metrics) refresh(ok bool) {
	if ok {
		m.up.Set(1)
		m.refreshes.WithLabelValues("success").Inc()
		return
	}
	m.up.Set(0)
	m.refreshes.WithLabelValues("failure").Inc()
}

func (m *metrics) setDiscovered(st *state) {
	m.discovered.Reset()
	for v, list := range st.resources {
		m.discovered.WithLabelValues(v).Set(float64(len(list)))
	}
}

// Describe implements prometheus.Collector.
func (d *Delegator) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range d.metrics.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (d *Delegator) Collect(ch chan<- prometheus.Metric) {
	for _, c := range d.metrics.collectors() {
		c.Collect(ch)
	}
}
