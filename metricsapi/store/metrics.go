package store

import "github.com/prometheus/client_golang/prometheus"

var (
	podsDesc = prometheus.NewDesc("gpu_metrics_server_store_pods",
		"Pods the aggregator holds GPU samples for.", nil, nil)
	seriesDesc = prometheus.NewDesc("gpu_metrics_server_store_series",
		"(pod, device) sample windows the aggregator holds.", nil, nil)
	nodesDesc = prometheus.NewDesc("gpu_metrics_server_store_nodes",
		"Nodes the aggregator holds GPU samples for (every device of the node, held or idle).", nil, nil)
	nodeSeriesDesc = prometheus.NewDesc("gpu_metrics_server_store_node_series",
		"(node, device) sample windows the aggregator holds.", nil, nil)
	samplesDesc = prometheus.NewDesc("gpu_metrics_server_store_samples_total",
		"Samples handed to the store, by result: stored, duplicate (a snapshot already stored), rejected (missing namespace, pod, device or time).",
		[]string{"result"}, nil)
	nodeSamplesDesc = prometheus.NewDesc("gpu_metrics_server_store_node_samples_total",
		"Node samples (every device of a node, held or idle) handed to the store, by result: stored, duplicate (a snapshot already stored), rejected (missing node, device or time).",
		[]string{"result"}, nil)
)

// collector exposes a store's size and counters as Prometheus metrics.
type collector struct{ s *Store }

// NewCollector returns a Prometheus collector of the store's self-metrics:
// pods, nodes and series held, and samples (pods' and nodes') stored,
// duplicate and rejected.
func NewCollector(s *Store) prometheus.Collector { return collector{s} }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- podsDesc
	ch <- seriesDesc
	ch <- nodesDesc
	ch <- nodeSeriesDesc
	ch <- samplesDesc
	ch <- nodeSamplesDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	ch <- prometheus.MustNewConstMetric(podsDesc, prometheus.GaugeValue, float64(st.Pods))
	ch <- prometheus.MustNewConstMetric(seriesDesc, prometheus.GaugeValue, float64(st.Series))
	ch <- prometheus.MustNewConstMetric(nodesDesc, prometheus.GaugeValue, float64(st.Nodes))
	ch <- prometheus.MustNewConstMetric(nodeSeriesDesc, prometheus.GaugeValue, float64(st.NodeSeries))
	ch <- prometheus.MustNewConstMetric(samplesDesc, prometheus.CounterValue, float64(st.Appended), "stored")
	ch <- prometheus.MustNewConstMetric(samplesDesc, prometheus.CounterValue, float64(st.Duplicates), "duplicate")
	ch <- prometheus.MustNewConstMetric(samplesDesc, prometheus.CounterValue, float64(st.Rejected), "rejected")
	ch <- prometheus.MustNewConstMetric(nodeSamplesDesc, prometheus.CounterValue, float64(st.NodeAppended), "stored")
	ch <- prometheus.MustNewConstMetric(nodeSamplesDesc, prometheus.CounterValue, float64(st.NodeDuplicates), "duplicate")
	ch <- prometheus.MustNewConstMetric(nodeSamplesDesc, prometheus.CounterValue, float64(st.NodeRejected), "rejected")
}
