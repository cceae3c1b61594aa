package collector

import (
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

// Device is a GPU's (or MIG instance's) identity. It does not change while
// the agent runs.
type Device struct {
	// Index is NVML's device index (of the parent GPU for a MIG instance).
	Index int
	// UUID is "GPU-…", or "MIG-…" for a MIG instance.
	UUID string
	// Name is the model name, e.g. "NVIDIA H100 80GB HBM3".
	Name string
	// PCIBusID is NVML's bus id, e.g. "00000000:3B:00.0".
	PCIBusID string
	// Minor is the /dev/nvidia<minor> number; -1 when unknown.
	Minor int
	// MIG is set for a MIG instance.
	MIG *MIGInstance
}

// MIGInstance describes a MIG device within its parent GPU.
type MIGInstance struct {
	ParentUUID      string
	GPUInstance     int
	ComputeInstance int
	// Profile is the GPU instance profile, e.g. "3g.40gb".
	Profile string
}

// Key returns the identity podmap matches allocations against.
func (d *Device) Key() podmap.DeviceKey {
	k := podmap.DeviceKey{UUID: d.UUID, Minor: d.Minor, GPUInstance: -1}
	if d.MIG != nil {
		k.GPUInstance = d.MIG.GPUInstance
		k.ParentUUID = d.MIG.ParentUUID
	}
	return k
}

// Field is one reading a device may or may not support.
type Field uint16

// The fields of a Reading. A field not in Reading.Valid was not supported or
// failed, and is not exported: the agent never reports a zero it did not read.
const (
	FieldGPUUtil Field = 1 << iota
	FieldMemCopyUtil
	FieldEncUtil
	FieldDecUtil
	FieldMemory // FBUsed, FBFree and FBTotal together
	FieldPower
	FieldTemp
	FieldSMClock
	FieldMemClock
	FieldEnergy
)

// Reading is one sample of one device's values.
type Reading struct {
	Valid Field
	// Utilizations in percent, 0-100.
	GPUUtil, MemCopyUtil, EncUtil, DecUtil float64
	// Frame-buffer memory in bytes.
	FBUsed, FBFree, FBTotal uint64
	PowerWatts              float64
	TempCelsius             float64
	SMClockMHz, MemClockMHz float64
	// EnergyMillijoules is the total energy since the driver loaded.
	EnergyMillijoules uint64
}

// Has reports whether f was read.
func (r *Reading) Has(f Field) bool { return r.Valid&f != 0 }

// DeviceReading is what a backend returns for one device.
type DeviceReading struct {
	Device  *Device
	Reading Reading
}

// DeviceSample is one device in a Snapshot: its reading and the containers
// holding it when the snapshot was taken.
type DeviceSample struct {
	DeviceReading
	Owners []podmap.Owner
}

// Snapshot is one sampling round. It is immutable once published.
type Snapshot struct {
	// Time is when the round started.
	Time time.Time
	// Duration is how long the backend took.
	Duration time.Duration
	// Devices holds every device that answered, ordered by index.
	Devices []DeviceSample
	// Errors holds the devices that failed this round.
	Errors []DeviceError
	// Node is the node name, exported as the hostname label.
	Node string
	// PodsMapped is false when the agent runs without a pod mapping.
	PodsMapped bool

	exposition lazyBytes
}
