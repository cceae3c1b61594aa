package nvml

import (
	"errors"
	"fmt"
	"math"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// gpmInstance samples one MIG GPU instance's activity through NVML GPM
// (GPU Performance Monitoring): every round takes a GPM sample of the
// instance, and the metrics are computed between it and the previous
// round's, so they cover exactly one sample interval.
type gpmInstance struct {
	parent nvml.Device
	gi     int
	// prev and cur alternate; havePrev says prev holds the previous
	// round's sample.
	prev, cur nvml.GpmSample
	havePrev  bool
	logged    bool
}

func newGPMInstance(lib nvml.Interface, parent nvml.Device, gi int) (*gpmInstance, error) {
	a, ret := lib.GpmSampleAlloc()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("GPM sample alloc: %s", nvmlError(ret))
	}
	b, ret := lib.GpmSampleAlloc()
	if ret != nvml.SUCCESS {
		lib.GpmSampleFree(a)
		return nil, fmt.Errorf("GPM sample alloc: %s", nvmlError(ret))
	}
	return &gpmInstance{parent: parent, gi: gi, prev: a, cur: b}, nil
}

func (g *gpmInstance) free(lib nvml.Interface) {
	lib.GpmSampleFree(g.prev)
	lib.GpmSampleFree(g.cur)
}

// read takes this round's sample and sets in r the activity since the
// previous one: nothing on the first round, or after a failed one. m is the
// request buffer, reused across calls.
func (g *gpmInstance) read(lib nvml.Interface, m *nvml.GpmMetricsGetType, r *collector.Reading) nvml.Return {
	if ret := lib.GpmMigSampleGet(g.parent, g.gi, g.cur); ret != nvml.SUCCESS {
		g.havePrev = false
		return ret
	}
	first := !g.havePrev
	g.havePrev = true
	if first {
		g.prev, g.cur = g.cur, g.prev
		return nvml.SUCCESS
	}
	m.NumMetrics = 2
	m.Sample1, m.Sample2 = g.prev, g.cur
	m.Metrics[0] = nvml.GpmMetric{MetricId: uint32(nvml.GPM_METRIC_GRAPHICS_UTIL)}
	m.Metrics[1] = nvml.GpmMetric{MetricId: uint32(nvml.GPM_METRIC_SM_UTIL)}
	ret := lib.GpmMetricsGet(m)
	g.prev, g.cur = g.cur, g.prev
	if ret != nvml.SUCCESS {
		return ret
	}
	if v, ok := gpmRatio(&m.Metrics[0]); ok {
		r.Set(exposition.GREngineActive, v)
	}
	if v, ok := gpmRatio(&m.Metrics[1]); ok {
		r.Set(exposition.SMActive, v)
	}
	return nvml.SUCCESS
}

// gpmRatio turns a GPM percentage into dcgm-exporter's 0-1 ratio.
func gpmRatio(m *nvml.GpmMetric) (float64, bool) {
	if nvml.Return(m.NvmlReturn) != nvml.SUCCESS || math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
		return 0, false
	}
	return min(max(m.Value/100, 0), 1), true
}

// logFailure logs the first failed GPM round of an instance.
func (g *gpmInstance) logFailure(uuid string, ret nvml.Return) {
	if g.logged {
		return
	}
	g.logged = true
	klog.ErrorS(errors.New(nvmlError(ret)), "GPM sample failed; the MIG instance's activity is absent until it works again", "uuid", uuid)
}
