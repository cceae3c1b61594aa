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

// gpmMetric is how NVML GPM supplies one profiling field: a metric and the
// factor from its unit to the field's (a percentage to DCGM's ratio,
// MiB/s to bytes/s).
type gpmMetric struct {
	field exposition.Field
	id    nvml.GpmMetricId
	// scale converts the metric to the field's unit; ratio clamps the
	// result to 0-1.
	scale float64
	ratio bool
}

// gpmMetrics are the profiling fields NVML GPM supplies, as DCGM maps them
// on Hopper and newer.
var gpmMetrics = []gpmMetric{
	{exposition.GREngineActive, nvml.GPM_METRIC_GRAPHICS_UTIL, 0.01, true},
	{exposition.SMActive, nvml.GPM_METRIC_SM_UTIL, 0.01, true},
	{exposition.SMOccupancy, nvml.GPM_METRIC_SM_OCCUPANCY, 0.01, true},
	{exposition.PipeTensorActive, nvml.GPM_METRIC_ANY_TENSOR_UTIL, 0.01, true},
	{exposition.DRAMActive, nvml.GPM_METRIC_DRAM_BW_UTIL, 0.01, true},
	{exposition.PipeFP64Active, nvml.GPM_METRIC_FP64_UTIL, 0.01, true},
	{exposition.PipeFP32Active, nvml.GPM_METRIC_FP32_UTIL, 0.01, true},
	{exposition.PipeFP16Active, nvml.GPM_METRIC_FP16_UTIL, 0.01, true},
	{exposition.PCIeTXBytes, nvml.GPM_METRIC_PCIE_TX_PER_SEC, 1 << 20, false},
	{exposition.PCIeRXBytes, nvml.GPM_METRIC_PCIE_RX_PER_SEC, 1 << 20, false},
}

// gpmFields are the fields gpmMetrics supply.
var gpmFields = func() (s exposition.FieldSet) {
	for _, m := range gpmMetrics {
		s.Add(m.field)
	}
	return s
}()

// gpmSampler samples one device's profiling metrics through NVML GPM (GPU
// Performance Monitoring): a whole GPU, or a MIG GPU instance of one. Every
// round takes a GPM sample, and the metrics are computed between it and the
// previous round's, so they cover exactly one sample interval.
type gpmSampler struct {
	gpu nvml.Device
	// gi is the GPU instance, or -1 for the whole GPU.
	gi int
	// prev and cur alternate; havePrev says prev holds the previous
	// round's sample.
	prev, cur nvml.GpmSample
	havePrev  bool
	logged    bool
	// asked maps the request's metrics back to the table.
	asked []int
}

func newGPMSampler(lib nvml.Interface, gpu nvml.Device, gi int) (*gpmSampler, error) {
	a, ret := lib.GpmSampleAlloc()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("GPM sample alloc: %s", nvmlError(ret))
	}
	b, ret := lib.GpmSampleAlloc()
	if ret != nvml.SUCCESS {
		lib.GpmSampleFree(a)
		return nil, fmt.Errorf("GPM sample alloc: %s", nvmlError(ret))
	}
	return &gpmSampler{gpu: gpu, gi: gi, prev: a, cur: b}, nil
}

func (g *gpmSampler) free(lib nvml.Interface) {
	lib.GpmSampleFree(g.prev)
	lib.GpmSampleFree(g.cur)
}

func (g *gpmSampler) sample(lib nvml.Interface) nvml.Return {
	if g.gi < 0 {
		return lib.GpmSampleGet(g.gpu, g.cur)
	}
	return lib.GpmMigSampleGet(g.gpu, g.gi, g.cur)
}

// read takes this round's sample and sets in r the metrics of the fields
// in want since the previous sample: nothing on the first round, or after
// a failed one. A metric NVML does not support for the device is added to
// unsupported. m is the request buffer, reused across calls.
func (g *gpmSampler) read(lib nvml.Interface, m *nvml.GpmMetricsGetType, want exposition.FieldSet, r *collector.Reading, unsupported *exposition.FieldSet) nvml.Return {
	if ret := g.sample(lib); ret != nvml.SUCCESS {
		g.havePrev = false
		return ret
	}
	first := !g.havePrev
	g.havePrev = true
	if first {
		g.prev, g.cur = g.cur, g.prev
		return nvml.SUCCESS
	}
	g.asked = g.asked[:0]
	for i, gm := range gpmMetrics {
		if want.Has(gm.field) {
			m.Metrics[len(g.asked)] = nvml.GpmMetric{MetricId: uint32(gm.id)}
			g.asked = append(g.asked, i)
		}
	}
	if len(g.asked) == 0 {
		g.prev, g.cur = g.cur, g.prev
		return nvml.SUCCESS
	}
	m.NumMetrics = uint32(len(g.asked))
	m.Sample1, m.Sample2 = g.prev, g.cur
	ret := lib.GpmMetricsGet(m)
	g.prev, g.cur = g.cur, g.prev
	if ret != nvml.SUCCESS {
		return ret
	}
	for j, i := range g.asked {
		gm, got := &gpmMetrics[i], &m.Metrics[j]
		switch nvml.Return(got.NvmlReturn) {
		case nvml.SUCCESS:
		case nvml.ERROR_NOT_SUPPORTED:
			unsupported.Add(gm.field)
			continue
		default:
			continue
		}
		v := got.Value * gm.scale
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		if gm.ratio {
			v = min(max(v, 0), 1)
		} else {
			v = max(v, 0)
		}
		r.Set(gm.field, v)
	}
	return nvml.SUCCESS
}

// logFailure logs the first failed GPM round of a device.
func (g *gpmSampler) logFailure(uuid string, ret nvml.Return) {
	if g.logged {
		return
	}
	g.logged = true
	klog.ErrorS(errors.New(nvmlError(ret)), "GPM sample failed; the device's profiling fields (DCGM_FI_PROF_*) are absent until it works again", "uuid", uuid)
}

// gpmSupported reports whether NVML GPM works on the GPU (Hopper and
// newer), which is the only source of the profiling fields and of a MIG
// instance's activity in NVML. Without it, that is logged once per GPU.
func (b *backend) gpmSupported(gpu *device) bool {
	s, ret := b.lib.GpmQueryDeviceSupport(gpu.handle)
	if ret == nvml.SUCCESS && s.IsSupportedDevice != 0 {
		return true
	}
	reason := "GPM not supported"
	if ret != nvml.SUCCESS {
		reason = nvmlError(ret)
	}
	klog.InfoS("GPU has no NVML GPM (it needs Hopper or newer): its profiling fields (DCGM_FI_PROF_*) are absent, and in MIG mode "+
		"its instances report memory only; for those fields add dcgm-exporter as an aggregator source (it reads them through DCGM's profiling module)",
		"uuid", gpu.info.UUID, "model", gpu.info.Name, "reason", reason)
	return false
}

// readGPM reads the profiling fields of a device with a GPM sampler into
// x's reading.
func (b *backend) readGPM(x *fieldReader) {
	d := x.d
	want := b.fields.Intersect(gpmFields)
	want.Remove(d.unsupported)
	if d.gpm == nil || want == (exposition.FieldSet{}) {
		return
	}
	if b.gpmRequest == nil {
		b.gpmRequest = new(nvml.GpmMetricsGetType)
	}
	switch ret := d.gpm.read(b.lib, b.gpmRequest, want, &x.r, &d.unsupported); ret {
	case nvml.SUCCESS:
	case nvml.ERROR_NOT_SUPPORTED:
		d.unsupported.AddAll(gpmFields)
		klog.InfoS("GPM not supported on this device after all; its profiling fields are absent", "uuid", d.info.UUID)
	case nvml.ERROR_GPU_IS_LOST:
		x.check("GPM sample", ret)
	default:
		// The profiling fields are absent this round; the others stand.
		d.gpm.logFailure(d.info.UUID, ret)
	}
}
