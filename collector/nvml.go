package collector

import (
	"errors"
	"fmt"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"
)

// ErrNVMLUnavailable is returned by NewNVML when libnvidia-ml cannot be
// loaded: no NVIDIA driver on the host, or the container was started
// without the NVIDIA container toolkit (runtimeClassName: nvidia).
var ErrNVMLUnavailable = errors.New("NVML library (libnvidia-ml.so.1) not found: is the NVIDIA driver installed, and does the container run with the NVIDIA container toolkit (runtimeClassName: nvidia, NVIDIA_VISIBLE_DEVICES=all)?")

// NVMLOptions configure the NVML backend.
type NVMLOptions struct {
	// Processes turns on reading each GPU's processes (memory and SM
	// utilization per PID) for per-pod attribution.
	Processes bool
}

// nvmlBackend reads devices through NVML. Nothing touches NVML before a
// successful Init: after a failed Init any other call kills the process.
type nvmlBackend struct {
	lib     nvml.Interface
	opts    NVMLOptions
	devices []*nvmlDevice
	// gpmMetrics is the GPM request reused by every MIG instance every
	// round (it holds room for every GPM metric: ~20 KiB).
	gpmMetrics *nvml.GpmMetricsGetType
}

type nvmlDevice struct {
	handle nvml.Device
	info   Device
	lost   bool
	// unsupported remembers fields that answered NOT_SUPPORTED so they are
	// not asked again every second.
	unsupported Field
	// parent is the GPU a MIG instance belongs to.
	parent *nvmlDevice
	// migEnabled marks a GPU in MIG mode: utilization and processes are
	// read per instance, not on the GPU.
	migEnabled bool
	// gpm samples a MIG instance's activity; nil without GPM.
	gpm   *gpmInstance
	procs processState
}

// NewNVML initialises NVML through lib (nvml.New() in production, a mock in
// tests) and enumerates the devices, and the MIG instances of GPUs in MIG
// mode. A device whose identity cannot be read is logged and left out.
func NewNVML(lib nvml.Interface, o NVMLOptions) (Backend, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			return nil, ErrNVMLUnavailable
		}
		return nil, fmt.Errorf("NVML init: %s", nvmlError(ret))
	}
	b := &nvmlBackend{lib: lib, opts: o}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("NVML device count: %s", nvmlError(ret))
	}
	instances := 0
	for i := 0; i < count; i++ {
		d, err := b.identify(i)
		if err != nil {
			klog.ErrorS(err, "Skipping GPU whose identity cannot be read", "index", i)
			continue
		}
		b.devices = append(b.devices, d)
		migs := b.migInstances(d)
		b.devices = append(b.devices, migs...)
		instances += len(migs)
	}
	klog.InfoS("NVML initialised", "devices", len(b.devices)-instances, "migInstances", instances, "processes", o.Processes)
	return b, nil
}

func (b *nvmlBackend) identify(i int) (*nvmlDevice, error) {
	h, ret := b.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("handle: %s", nvmlError(ret))
	}
	uuid, ret := h.GetUUID()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("UUID: %s", nvmlError(ret))
	}
	d := &nvmlDevice{handle: h, info: Device{Index: i, UUID: uuid, Minor: -1}}
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

func (b *nvmlBackend) Name() string { return "nvml" }

func (b *nvmlBackend) Close() error {
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

func (b *nvmlBackend) Sample(time.Time) ([]DeviceReading, []DeviceError) {
	readings := make([]DeviceReading, 0, len(b.devices))
	var errs []DeviceError
	for _, d := range b.devices {
		if d.parent != nil && d.parent.lost {
			d.lost = true
		}
		if d.lost {
			continue
		}
		var dr DeviceReading
		var err error
		if d.parent != nil {
			dr.Reading, err = b.readMIG(d)
		} else {
			dr.Reading, dr.Processes, err = b.read(d)
		}
		if err != nil {
			lost := errors.Is(err, errGPULost)
			if lost {
				d.lost = true
				klog.ErrorS(err, "GPU is lost; it is dropped until the agent restarts", "uuid", d.info.UUID, "index", d.info.Index)
			}
			errs = append(errs, DeviceError{Device: d.info.UUID, Err: err, Lost: lost})
			continue
		}
		dr.Device = &d.info
		readings = append(readings, dr)
	}
	return readings, errs
}

var errGPULost = errors.New("GPU is lost")

// fieldReader collects one device's fields: NOT_SUPPORTED leaves a field
// out (and it is not asked again); GPU_IS_LOST fails the device for good;
// any other error fails this device's sample.
type fieldReader struct {
	d   *nvmlDevice
	r   Reading
	err error
}

// want reports whether field f should be asked for.
func (x *fieldReader) want(f Field) bool { return x.d.unsupported&f == 0 && x.err == nil }

// check records the outcome of one NVML call for field f and says whether
// the values may be used.
func (x *fieldReader) check(f Field, what string, ret nvml.Return) bool {
	switch ret {
	case nvml.SUCCESS:
		x.r.Valid |= f
		return true
	case nvml.ERROR_NOT_SUPPORTED:
		x.d.unsupported |= f
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

// read reads every supported field of a GPU, and its processes when
// attribution is on and the GPU is not in MIG mode.
func (b *nvmlBackend) read(d *nvmlDevice) (Reading, Processes, error) {
	x := fieldReader{d: d}
	h := d.handle
	if x.want(FieldGPUUtil | FieldMemCopyUtil) {
		u, ret := h.GetUtilizationRates()
		if x.check(FieldGPUUtil|FieldMemCopyUtil, "utilization", ret) {
			x.r.GPUUtil, x.r.MemCopyUtil = float64(u.Gpu), float64(u.Memory)
		}
	}
	if x.want(FieldEncUtil) {
		v, _, ret := h.GetEncoderUtilization()
		if x.check(FieldEncUtil, "encoder utilization", ret) {
			x.r.EncUtil = float64(v)
		}
	}
	if x.want(FieldDecUtil) {
		v, _, ret := h.GetDecoderUtilization()
		if x.check(FieldDecUtil, "decoder utilization", ret) {
			x.r.DecUtil = float64(v)
		}
	}
	x.readMemory()
	if x.want(FieldPower) {
		mw, ret := h.GetPowerUsage()
		if x.check(FieldPower, "power usage", ret) {
			x.r.PowerWatts = float64(mw) / 1000
		}
	}
	if x.want(FieldTemp) {
		t, ret := h.GetTemperature(nvml.TEMPERATURE_GPU)
		if x.check(FieldTemp, "temperature", ret) {
			x.r.TempCelsius = float64(t)
		}
	}
	if x.want(FieldSMClock) {
		c, ret := h.GetClockInfo(nvml.CLOCK_SM)
		if x.check(FieldSMClock, "SM clock", ret) {
			x.r.SMClockMHz = float64(c)
		}
	}
	if x.want(FieldMemClock) {
		c, ret := h.GetClockInfo(nvml.CLOCK_MEM)
		if x.check(FieldMemClock, "memory clock", ret) {
			x.r.MemClockMHz = float64(c)
		}
	}
	if x.want(FieldEnergy) {
		e, ret := h.GetTotalEnergyConsumption()
		if x.check(FieldEnergy, "total energy", ret) {
			x.r.EnergyMillijoules = e
		}
	}
	if x.err != nil {
		return Reading{}, Processes{}, x.err
	}
	var procs Processes
	if b.opts.Processes && !d.migEnabled {
		var err error
		if procs, err = d.readProcesses(); err != nil {
			return Reading{}, Processes{}, err
		}
	}
	return x.r, procs, nil
}

// readMemory reads the frame-buffer memory (of a GPU or a MIG instance).
func (x *fieldReader) readMemory() {
	if x.want(FieldMemory) {
		m, ret := x.d.handle.GetMemoryInfo()
		if x.check(FieldMemory, "memory info", ret) {
			x.r.FBUsed, x.r.FBFree, x.r.FBTotal = m.Used, m.Free, m.Total
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
