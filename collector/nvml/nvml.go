// Package nvml is the agent's NVML backend: it reads NVIDIA GPUs, their MIG
// instances (activity through NVML GPM) and their processes through
// go-nvml. It is the only package that loads libnvidia-ml.
package nvml

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// ErrUnavailable is returned by New when libnvidia-ml cannot be
// loaded: no NVIDIA driver on the host, or the container was started
// without the NVIDIA container toolkit (runtimeClassName: nvidia).
var ErrUnavailable = errors.New("NVML library (libnvidia-ml.so.1) not found: is the NVIDIA driver installed, and does the container run with the NVIDIA container toolkit (runtimeClassName: nvidia, NVIDIA_VISIBLE_DEVICES=all)?")

// Options configure the NVML backend.
type Options struct {
	// Processes turns on reading each GPU's processes (memory and SM
	// utilization per PID) for per-pod attribution.
	Processes bool
	// Fields are the device fields to read; the zero set reads every
	// field NVML supplies.
	Fields exposition.FieldSet
	// Labels are the label fields to read.
	Labels exposition.LabelSet
	// Registerer receives the backend's self-metrics (XID events); nil
	// for none.
	Registerer prometheus.Registerer
	// SlowInterval is how often the slow fields (slowFields: energy,
	// violation times, error and row-remapping counters, PCIe replays,
	// vGPU license), and the processes of a GPU the sampler does not
	// select (SelectProcesses), are read; between reads each round
	// carries their last reading. 0 reads them every round.
	SlowInterval time.Duration
}

// backend reads devices through NVML. Nothing touches NVML before a
// successful Init: after a failed Init any other call kills the process.
type backend struct {
	lib     nvml.Interface
	opts    Options
	fields  exposition.FieldSet
	devices []*device
	// gpmRequest is the GPM request reused by every device every round
	// (it holds room for every GPM metric: ~20 KiB).
	gpmRequest *nvml.GpmMetricsGetType
	xid        *xidWatcher
	// shared, set by the sampler, names the devices whose processes are
	// read every round (nil: all of them).
	shared func(*collector.Device) bool
}

// SelectProcesses implements collector.ProcessSelector: the processes of a
// GPU shared reports false are read with the slow fields (every
// SlowInterval), the last table carried in between.
func (b *backend) SelectProcesses(shared func(*collector.Device) bool) { b.shared = shared }

type device struct {
	handle nvml.Device
	info   collector.Device
	lost   bool
	// unsupported remembers fields that answered NOT_SUPPORTED so they are
	// not asked again every second.
	unsupported exposition.FieldSet
	// parent is the GPU a MIG instance belongs to.
	parent *device
	// migEnabled marks a GPU in MIG mode: utilization and processes are
	// read per instance, not on the GPU.
	migEnabled bool
	// memoryV1: the driver has no nvmlDeviceGetMemoryInfo_v2; memory is
	// read with v1, without the reserved memory.
	memoryV1 bool
	// gpm samples the device's profiling fields; nil without GPM.
	gpm   *gpmSampler
	batch fieldBatch
	xid   xidState
	procs processState
	// slow is the last reading of the slow fields, taken at slowAt.
	slow   collector.Reading
	slowAt time.Time
}

// New loads libnvidia-ml, initialises NVML and enumerates the devices, and
// the MIG instances of GPUs in MIG mode. A device whose identity cannot be
// read is logged and left out. ErrUnavailable: no library.
func New(o Options) (collector.Backend, error) { return newBackend(nvml.New(), o) }

// newBackend is New through lib (a mock in tests).
func newBackend(lib nvml.Interface, o Options) (*backend, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			return nil, ErrUnavailable
		}
		return nil, fmt.Errorf("NVML init: %s", nvmlError(ret))
	}
	b := &backend{lib: lib, opts: o, fields: o.Fields}
	if b.fields == (exposition.FieldSet{}) {
		for f := range exposition.NumFields {
			b.fields.Add(f)
		}
	}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("NVML device count: %s", nvmlError(ret))
	}
	system := systemLabels(lib, o.Labels)
	profiling := b.fields.Intersects(gpmFields)
	var gpus []*device
	instances := 0
	for i := 0; i < count; i++ {
		d, err := b.identify(i)
		if err != nil {
			klog.ErrorS(err, "Skipping GPU whose identity cannot be read", "index", i)
			continue
		}
		d.info.Labels = system
		deviceLabels(d.handle, o.Labels, &d.info.Labels)
		b.devices = append(b.devices, d)
		gpus = append(gpus, d)
		migs := b.migInstances(d)
		d.info.MIGInstances = len(migs) > 0
		b.devices = append(b.devices, migs...)
		instances += len(migs)
		if !d.migEnabled && profiling && b.gpmSupported(d) {
			if g, err := newGPMSampler(lib, d.handle, -1); err != nil {
				klog.ErrorS(err, "The GPU's profiling fields are absent", "uuid", d.info.UUID)
			} else {
				d.gpm, d.info.Profiling = g, true
			}
		}
	}
	if b.fields.Has(exposition.XIDErrors) && len(gpus) > 0 {
		b.xid = watchXIDs(lib, gpus, newXIDMetrics(o.Registerer))
	}
	klog.InfoS("NVML initialised", "devices", len(b.devices)-instances, "migInstances", instances, "processes", o.Processes, "xidEvents", b.xid != nil)
	return b, nil
}

func (b *backend) identify(i int) (*device, error) {
	h, ret := b.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("handle: %s", nvmlError(ret))
	}
	uuid, ret := h.GetUUID()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("UUID: %s", nvmlError(ret))
	}
	d := &device{handle: h, info: collector.Device{Index: i, UUID: uuid, Minor: -1}}
	if name, ret := h.GetName(); ret == nvml.SUCCESS {
		d.info.Name = name
	}
	if pci, ret := h.GetPciInfo(); ret == nvml.SUCCESS {
		d.info.PCIBusID = cString(pci.BusId[:])
	}
	if minor, ret := h.GetMinorNumber(); ret == nvml.SUCCESS {
		d.info.Minor = minor
	}
	return d, nil
}

func (b *backend) Name() string { return "nvml" }

// Close stops the XID watcher and frees its event set and the GPM
// samples before NVML shuts down.
func (b *backend) Close() error {
	if b.xid != nil {
		b.xid.close()
	}
	for _, d := range b.devices {
		if d.gpm != nil {
			d.gpm.free(b.lib)
		}
	}
	if ret := b.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("NVML shutdown: %s", nvmlError(ret))
	}
	return nil
}

func (b *backend) Sample(now time.Time) ([]collector.DeviceReading, []collector.DeviceError) {
	readings := make([]collector.DeviceReading, 0, len(b.devices))
	var errs []collector.DeviceError
	for _, d := range b.devices {
		if d.parent != nil && d.parent.lost {
			d.lost = true
		}
		if d.lost {
			continue
		}
		var dr collector.DeviceReading
		var err error
		if d.parent != nil {
			dr.Reading, err = b.readMIG(d)
		} else {
			dr.Reading, dr.Processes, err = b.read(d, now)
		}
		if err != nil {
			lost := errors.Is(err, errGPULost)
			if lost {
				d.lost = true
				klog.ErrorS(err, "GPU is lost; it is dropped until the agent restarts", "uuid", d.info.UUID, "index", d.info.Index)
			}
			errs = append(errs, collector.DeviceError{Device: d.info.UUID, Err: err, Lost: lost})
			continue
		}
		dr.Device = &d.info
		readings = append(readings, dr)
	}
	return readings, errs
}

var errGPULost = errors.New("GPU is lost")

// fieldReader collects one device's fields: NOT_SUPPORTED leaves the fields
// of a call out (and they are not asked again); GPU_IS_LOST fails the
// device for good; any other error fails this device's sample.
type fieldReader struct {
	d *device
	// fields are the fields to read.
	fields exposition.FieldSet
	// slowDue: the slow fields are read this round (else carried).
	slowDue bool
	r       collector.Reading
	err     error
}

// want reports whether the call reading fields fs should be made: one of
// them is to be read, and none answered NOT_SUPPORTED before.
func (x *fieldReader) want(fs ...exposition.Field) bool {
	set := exposition.FieldsOf(fs...)
	return x.fields.Intersects(set) && !x.d.unsupported.Intersects(set) && x.err == nil
}

// check records the outcome of the NVML call reading fields fs and says
// whether its values may be used.
func (x *fieldReader) check(what string, ret nvml.Return, fs ...exposition.Field) bool {
	return x.checkSet(what, ret, exposition.FieldsOf(fs...))
}

// checkSet is check for a set of fields.
func (x *fieldReader) checkSet(what string, ret nvml.Return, fs exposition.FieldSet) bool {
	switch ret {
	case nvml.SUCCESS:
		return true
	case nvml.ERROR_NOT_SUPPORTED:
		x.d.unsupported.AddAll(fs)
	case nvml.ERROR_GPU_IS_LOST:
		if x.err == nil || !errors.Is(x.err, errGPULost) {
			x.err = fmt.Errorf("%s: %w", what, errGPULost)
		}
	default:
		if x.err == nil {
			x.err = fmt.Errorf("%s: %s", what, nvmlError(ret))
		}
	}
	return false
}

// read reads every selected, supported field of a GPU, and its processes
// when attribution is on and the GPU is not in MIG mode.
func (b *backend) read(d *device, now time.Time) (collector.Reading, collector.Processes, error) {
	x := fieldReader{d: d, fields: b.fields, slowDue: d.slowDue(now, b.opts.SlowInterval)}
	h := d.handle
	if x.want(exposition.GPUUtil, exposition.MemCopyUtil) {
		u, ret := h.GetUtilizationRates()
		if x.check("utilization", ret, exposition.GPUUtil, exposition.MemCopyUtil) {
			x.r.Set(exposition.GPUUtil, float64(u.Gpu))
			x.r.Set(exposition.MemCopyUtil, float64(u.Memory))
		}
	}
	if x.want(exposition.EncUtil) {
		v, _, ret := h.GetEncoderUtilization()
		if x.check("encoder utilization", ret, exposition.EncUtil) {
			x.r.Set(exposition.EncUtil, float64(v))
		}
	}
	if x.want(exposition.DecUtil) {
		v, _, ret := h.GetDecoderUtilization()
		if x.check("decoder utilization", ret, exposition.DecUtil) {
			x.r.Set(exposition.DecUtil, float64(v))
		}
	}
	x.readMemory()
	if x.want(exposition.PowerUsage) {
		mw, ret := h.GetPowerUsage()
		if x.check("power usage", ret, exposition.PowerUsage) {
			x.r.Set(exposition.PowerUsage, float64(mw)/1000)
		}
	}
	if x.want(exposition.GPUTemp) {
		t, ret := h.GetTemperature(nvml.TEMPERATURE_GPU)
		if x.check("temperature", ret, exposition.GPUTemp) {
			x.r.Set(exposition.GPUTemp, float64(t))
		}
	}
	if x.want(exposition.SMClock) {
		c, ret := h.GetClockInfo(nvml.CLOCK_SM)
		if x.check("SM clock", ret, exposition.SMClock) {
			x.r.Set(exposition.SMClock, float64(c))
		}
	}
	if x.want(exposition.MemClock) {
		c, ret := h.GetClockInfo(nvml.CLOCK_MEM)
		if x.check("memory clock", ret, exposition.MemClock) {
			x.r.Set(exposition.MemClock, float64(c))
		}
	}
	if x.err == nil {
		x.readFieldValues(b.fields, now)
	}
	x.readLicense()
	if d.xid.watched && b.fields.Has(exposition.XIDErrors) {
		x.r.Set(exposition.XIDErrors, float64(d.xid.last.Load()))
	}
	if x.err == nil {
		b.readGPM(&x)
	}
	if x.err != nil {
		return collector.Reading{}, collector.Processes{}, x.err
	}
	x.keepOrCarrySlow(now)
	// A call may have read fields beside those asked.
	x.r.Restrict(b.fields)
	var procs collector.Processes
	if b.opts.Processes && !d.migEnabled {
		if x.slowDue || b.shared == nil || b.shared(&d.info) || !d.procs.haveLast {
			var err error
			if procs, err = d.readProcesses(); err != nil {
				return collector.Reading{}, collector.Processes{}, err
			}
			// Kept apart from what the attribution writes into.
			d.procs.last, d.procs.haveLast = procs, true
			d.procs.last.List = slices.Clone(procs.List)
		} else {
			// The attribution writes into the list: each round its copy.
			procs = d.procs.last
			procs.List = slices.Clone(procs.List)
		}
	}
	return x.r, procs, nil
}

// readMemory reads the frame-buffer memory (of a GPU or a MIG instance)
// as DCGM does: with nvmlDeviceGetMemoryInfo_v2, whose used memory leaves
// out what the driver reserves; with v1 (used includes the reserved, none
// reported) on a driver without v2.
func (x *fieldReader) readMemory() {
	d := x.d
	if !d.memoryV1 && x.want(exposition.FBUsed, exposition.FBFree, exposition.FBReserved) {
		m, ret := d.handle.GetMemoryInfo_v2()
		switch ret {
		case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_FUNCTION_NOT_FOUND, nvml.ERROR_ARGUMENT_VERSION_MISMATCH:
			d.memoryV1 = true
			d.unsupported.Add(exposition.FBReserved)
		default:
			if x.check("memory info", ret, exposition.FBUsed, exposition.FBFree, exposition.FBReserved) {
				x.r.Set(exposition.FBUsed, float64(m.Used))
				x.r.Set(exposition.FBFree, float64(m.Free))
				x.r.Set(exposition.FBReserved, float64(m.Reserved))
			}
			return
		}
	}
	if d.memoryV1 && x.want(exposition.FBUsed, exposition.FBFree) {
		m, ret := d.handle.GetMemoryInfo()
		if x.check("memory info", ret, exposition.FBUsed, exposition.FBFree) {
			x.r.Set(exposition.FBUsed, float64(m.Used))
			x.r.Set(exposition.FBFree, float64(m.Free))
		}
	}
}

// nvmlError describes ret. Return.Error is pure Go until the library is
// loaded, so it is safe on the failed-Init path too.
func nvmlError(ret nvml.Return) string {
	return fmt.Sprintf("%s (%d)", ret.Error(), int32(ret))
}

// cString converts a NUL-terminated C char array.
func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}
