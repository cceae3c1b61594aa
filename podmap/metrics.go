package podmap

import (
	"github.com/prometheus/client_golang/prometheus"
)

const (
	metricsNamespace = "gpu_metrics_server"
	metricsSubsystem = "pod_resources"
)

// refresherMetrics are the Refresher's self-metrics.
type refresherMetrics struct {
	up              prometheus.Gauge
	refreshDuration prometheus.Histogram
	errors          *prometheus.CounterVec
	unknownIDs      prometheus.Counter
	mappedDevices   prometheus.Gauge
	// allocatable has no labels; its one series appears once the kubelet
	// answered GetAllocatableResources, so an unknown count is never 0.
	allocatable *prometheus.GaugeVec
	skipped     prometheus.Gauge
	cut         prometheus.Gauge
}

func newRefresherMetrics() *refresherMetrics {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help}
	}
	return &refresherMetrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts(opts("up",
			"1 when the last List call to the kubelet pod-resources API succeeded, 0 otherwise."))),
		refreshDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "refresh_duration_seconds",
			Help:    "Time taken by one refresh of the pod mapping (List call and indexing), failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts(opts("refresh_errors_total",
			"Failed calls to the kubelet pod-resources API, by method and gRPC code.")), []string{"method", "code"}),
		unknownIDs: prometheus.NewCounter(prometheus.CounterOpts(opts("unknown_device_ids_total",
			"Distinct device IDs under a GPU resource name in no known form, counted when first seen."))),
		mappedDevices: prometheus.NewGauge(prometheus.GaugeOpts(opts("mapped_devices",
			"Devices held by at least one container in the mapping in use."))),
		allocatable: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("allocatable_devices",
			"Devices under GPU resource names the kubelet reported as allocatable at the last successful GetAllocatableResources call.")), nil),
		skipped: prometheus.NewGauge(prometheus.GaugeOpts(opts("skipped_containers",
			"Containers holding GPU devices left out of the last mapping because the kubelet gave no namespace, pod or container name."))),
		cut: prometheus.NewGauge(prometheus.GaugeOpts(opts("cut_owners",
			"Containers left out of the last mapping because their device already had the most owners one device is attributed to (128)."))),
	}
}

// register registers every metric on reg, or none if one fails; a nil reg
// registers nothing.
func (m *refresherMetrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	all := []prometheus.Collector{m.up, m.refreshDuration, m.errors, m.unknownIDs, m.mappedDevices, m.allocatable, m.skipped, m.cut}
	for i, c := range all {
		if err := reg.Register(c); err != nil {
			for _, done := range all[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}
