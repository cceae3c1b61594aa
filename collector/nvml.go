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

// nvmlBackend reads devices through NVML. Nothing touches NVML before a
// successful Init: after a failed Init any other call kills the process.
type nvmlBackend struct {
	lib     nvml.Interface
	devices []*nvmlDevice
}

type nvmlDevice struct {
	handle nvml.Device
	info   Device
	lost   bool
	// unsupported remembers fields that answered NOT_SUPPORTED so they are
	// not asked again every second.
	unsupported Field
}

// NewNVML initialises NVML through lib (nvml.New() in production, a mock in
// tests) and enumerates the devices. A device whose identity cannot be read
// is logged and left out.
func NewNVML(lib nvml.Interface) (Backend, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			return nil, ErrNVMLUnavailable
		}
		return nil, fmt.Errorf("NVML init: %s", nvmlError(ret))
	}
	b := &nvmlBackend{lib: lib}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("NVML device count: %s", nvmlError(ret))
	}
	for i := 0; i < count; i++ {
		d, err := b.identify(i)
		if err != nil {
			klog.ErrorS(err, "Skipping GPU whose identity cannot be read", "index", i)
			continue
		}
		b.devices = append(b.devices, d)
	}
	klog.InfoS("NVML initialised", "devices", len(b.devices))
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
	if ret := b.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("NVML shutdown: %s", nvmlError(ret))
	}
	return nil
}

func (b *nvmlBackend) Sample(time.Time) ([]DeviceReading, []DeviceError) {
	readings := make([]DeviceReading, 0, len(b.devices))
	var errs []DeviceError
	for _, d := range b.devices {
		if d.lost {
			continue
		}
		r, err := b.read(d)
		if err != nil {
			lost := errors.Is(err, errGPULost)
			if lost {
				d.lost = true
				klog.ErrorS(err, "GPU is lost; it is dropped until the agent restarts", "uuid", d.info.UUID, "index", d.info.Index)
			}
			errs = append(errs, DeviceError{Device: d.info.UUID, Err: err, Lost: lost})
			continue
		}
		readings = append(readings, DeviceReading{Device: &d.info, Reading: r})
	}
	return readings, errs
}

var errGPULost = errors.New("GPU is lost")

// read reads every supported field of one device. NOT_SUPPORTED leaves the
// field out (and it is not asked again); GPU_IS_LOST fails the device for
// good; any other error fails this device's sample.
func (b *nvmlBackend) read(d *nvmlDevice) (Reading, error) {
	var r Reading
	var firstErr error
	// check records the outcome of one NVML call for field f and says
	// whether the values may be used.
	check := func(f Field, what string, ret nvml.Return) bool {
		switch ret {
		case nvml.SUCCESS:
			r.Valid |= f
			return true
		case nvml.ERROR_NOT_SUPPORTED:
			d.unsupported |= f
		case nvml.ERROR_GPU_IS_LOST:
			if firstErr == nil || !errors.Is(firstErr, errGPULost) {
				firstErr = fmt.Errorf("%s: %w", what, errGPULost)
			}
		default:
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %s", what, nvmlError(ret))
			}
		}
		return false
	}
	want := func(f Field) bool { return d.unsupported&f == 0 && firstErr == nil }
	h := d.handle

	if want(FieldGPUUtil | FieldMemCopyUtil) {
		u, ret := h.GetUtilizationRates()
		if check(FieldGPUUtil|FieldMemCopyUtil, "utilization", ret) {
			r.GPUUtil, r.MemCopyUtil = float64(u.Gpu), float64(u.Memory)
		}
	}
	if want(FieldEncUtil) {
		v, _, ret := h.GetEncoderUtilization()
		if check(FieldEncUtil, "encoder utilization", ret) {
			r.EncUtil = float64(v)
		}
	}
	if want(FieldDecUtil) {
		v, _, ret := h.GetDecoderUtilization()
		if check(FieldDecUtil, "decoder utilization", ret) {
			r.DecUtil = float64(v)
		}
	}
	if want(FieldMemory) {
		m, ret := h.GetMemoryInfo()
		if check(FieldMemory, "memory info", ret) {
			r.FBUsed, r.FBFree, r.FBTotal = m.Used, m.Free, m.Total
		}
	}
	if want(FieldPower) {
		mw, ret := h.GetPowerUsage()
		if check(FieldPower, "power usage", ret) {
			r.PowerWatts = float64(mw) / 1000
		}
	}
	if want(FieldTemp) {
		t, ret := h.GetTemperature(nvml.TEMPERATURE_GPU)
		if check(FieldTemp, "temperature", ret) {
			r.TempCelsius = float64(t)
		}
	}
	if want(FieldSMClock) {
		c, ret := h.GetClockInfo(nvml.CLOCK_SM)
		if check(FieldSMClock, "SM clock", ret) {
			r.SMClockMHz = float64(c)
		}
	}
	if want(FieldMemClock) {
		c, ret := h.GetClockInfo(nvml.CLOCK_MEM)
		if check(FieldMemClock, "memory clock", ret) {
			r.MemClockMHz = float64(c)
		}
	}
	if want(FieldEnergy) {
		e, ret := h.GetTotalEnergyConsumption()
		if check(FieldEnergy, "total energy", ret) {
			r.EnergyMillijoules = e
		}
	}
	if firstErr != nil {
		return Reading{}, firstErr
	}
	return r, nil
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
