package collector

import (
	"github.com/prometheus/client_golang/prometheus"
)

// samplerMetrics are the sampler's self-metrics.
type samplerMetrics struct {
	duration prometheus.Histogram
	errors   *prometheus.CounterVec
	devices  prometheus.Gauge
	lost     prometheus.Counter
}

func newSamplerMetrics(reg prometheus.Registerer) *samplerMetrics {
	m := &samplerMetrics{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gpu_metrics_server_sample_duration_seconds",
			Help:    "Time one sampling round spent reading all devices from the backend and attributing their processes to pods.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpu_metrics_server_sample_errors_total",
			Help: "Sampling rounds in which a device failed and was left out, by device UUID.",
		}, []string{"device"}),
		devices: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gpu_metrics_server_devices",
			Help: "Devices read successfully in the last sampling round.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gpu_metrics_server_devices_lost_total",
			Help: "Devices dropped because the backend reported them lost (NVML's ERROR_GPU_IS_LOST), until the agent restarts.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.duration, m.errors, m.devices, m.lost)
	}
	return m
}

func (m *samplerMetrics) observe(s *Snapshot) {
	m.duration.Observe(s.Duration.Seconds())
	m.devices.Set(float64(len(s.Devices)))
	for _, e := range s.Errors {
		m.errors.WithLabelValues(e.Device).Inc()
		if e.Lost {
			m.lost.Inc()
		}
	}
}
