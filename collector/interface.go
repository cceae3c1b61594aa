// Package collector reads GPUs (through NVML, or a simulation) in a
// background sampling loop and renders the latest snapshot as Prometheus
// exposition in dcgm-exporter's names and labels.
//
// The Backend is the only code that talks to the GPU; the Sampler calls it on
// a fixed interval and publishes an immutable Snapshot; HTTP handlers only
// ever read the latest Snapshot.
package collector

import "time"

// Backend reads devices. Implementations need not be safe for concurrent
// use: the Sampler calls them from one goroutine.
type Backend interface {
	// Name is the backend's flag value ("nvml", "sim").
	Name() string
	// Sample reads every device once. A device that fails is left out of
	// the readings and reported in errs; the others are still returned.
	Sample(now time.Time) (readings []DeviceReading, errs []DeviceError)
	// Close releases the backend (NVML shutdown).
	Close() error
}

// ProcessSelector is a Backend whose process tables (read for per-pod
// attribution) cost enough to read them every round only where they make
// the values: on devices several pods hold. The Sampler calls
// SelectProcesses before each Sample; the backend reads the processes of
// the devices shared reports true every round, and those of the others at
// a slower cadence of its own, carrying the last table in between.
type ProcessSelector interface {
	SelectProcesses(shared func(*Device) bool)
}

// DeviceError is one device's failure in one sample.
type DeviceError struct {
	// Device names the device: its UUID when known, else "index:<n>".
	Device string
	Err    error
	// Lost is true when the device is gone for good (NVML's
	// ERROR_GPU_IS_LOST); the backend stops asking it.
	Lost bool
}

func (e DeviceError) Error() string { return e.Device + ": " + e.Err.Error() }
