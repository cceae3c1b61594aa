package collector_test

import (
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/sim"
)

// BenchmarkScrapeFreshBody8GPUs is what one agent scrape costs when a new
// snapshot came since the last one (the aggregator's 2 s interval against
// 1 s sampling): a sampling round of 8 simulated GPUs, the body built
// (device series rendered, self-metrics gathered) and written. The Go and
// process collectors are gathered with every body ("runtime=every-body",
// the agent before issue 12's fix) or once and reused ("runtime=cached",
// the agent between two gatherings, every 10 s).
func BenchmarkScrapeFreshBody8GPUs(b *testing.B) {
	for _, bc := range []struct {
		name  string
		every time.Duration
	}{
		{"runtime=every-body", 0},
		{"runtime=cached", time.Hour},
	} {
		b.Run(bc.name, func(b *testing.B) {
			backend, err := sim.New("n", 8, nil)
			if err != nil {
				b.Fatal(err)
			}
			reg, runtimeReg := prometheus.NewRegistry(), prometheus.NewRegistry()
			runtimeReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			s := collector.NewSampler(backend, collector.SamplerOptions{Node: "n", Interval: time.Second, Registerer: reg})
			h := collector.MetricsHandler(s, reg, collector.HandlerOptions{MaxAge: time.Hour, Runtime: runtimeReg, RuntimeEvery: bc.every})
			req := httptest.NewRequest("GET", "/metrics", nil)
			w := discardWriter{httptest.NewRecorder()}
			b.ReportAllocs()
			for b.Loop() {
				s.SampleOnce(time.Now())
				h.ServeHTTP(w, req)
			}
		})
	}
}

// discardWriter is a ResponseWriter whose body goes nowhere: a recorder's
// growing buffer is not part of a scrape's cost.
type discardWriter struct{ *httptest.ResponseRecorder }

func (discardWriter) Write(p []byte) (int, error) { return io.Discard.Write(p) }
