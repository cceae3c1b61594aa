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

var (
	answersDesc = prometheus.NewDesc("gpu_metrics_server_answers_total",
		"Selector queries answered from the kept encoded answers, by result: hit (served as kept), rebuilt (first asked, or a pod, the namespace's pods or the time changed it).",
		[]string{"result"}, nil)
	answerItemsDesc = prometheus.NewDesc("gpu_metrics_server_answer_items_total",
		"Items of the rebuilt answers, by result: reused (unchanged since the query's previous answer), encoded.",
		[]string{"result"}, nil)
	answersKeptDesc = prometheus.NewDesc("gpu_metrics_server_answers_kept",
		"Encoded answers kept, one per (API version, namespace, metric, selector) recently asked.", nil, nil)
	answersBytesDesc = prometheus.NewDesc("gpu_metrics_server_answers_kept_bytes",
		"Approximate memory of the kept answers.", nil, nil)
)

func (p *Provider) observe(metric, kind string, start time.Time) {
	p.query.WithLabelValues(metric, kind).Observe(time.Since(start).Seconds())
}

// Describe implements prometheus.Collector.
func (p *Provider) Describe(ch chan<- *prometheus.Desc) {
	p.query.Describe(ch)
	for _, d := range []*prometheus.Desc{answersDesc, answerItemsDesc, answersKeptDesc, answersBytesDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (p *Provider) Collect(ch chan<- prometheus.Metric) {
	p.query.Collect(ch)
	st := p.AnswerStats()
	ch <- prometheus.MustNewConstMetric(answersDesc, prometheus.CounterValue, float64(st.Hits), "hit")
	ch <- prometheus.MustNewConstMetric(answersDesc, prometheus.CounterValue, float64(st.Rebuilt), "rebuilt")
	ch <- prometheus.MustNewConstMetric(answerItemsDesc, prometheus.CounterValue, float64(st.Reused), "reused")
	ch <- prometheus.MustNewConstMetric(answerItemsDesc, prometheus.CounterValue, float64(st.Encoded), "encoded")
	ch <- prometheus.MustNewConstMetric(answersKeptDesc, prometheus.GaugeValue, float64(st.Kept))
	ch <- prometheus.MustNewConstMetric(answersBytesDesc, prometheus.GaugeValue, float64(st.Bytes))
}
