package collector

import (
	"sync/atomic"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
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
	// MIGInstances marks a GPU in MIG mode with instances: as
	// dcgm-exporter, the agent reports its instances and not the GPU
	// (each instance carries the GPU's whole-GPU fields).
	MIGInstances bool
	// Profiling is true when the backend reads the device's profiling
	// fields (exposition.ProfilingFields: NVML GPM, Hopper and newer).
	Profiling bool
	// Labels holds the device's label fields (driver version, serial…),
	// "" where the backend has none.
	Labels [exposition.NumLabelFields]string
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

// Reading is one sample of one device's values: a value per device field of
// the exposition's table, each in its unit's base (bytes for the MiB
// fields). A field not set was not supported or failed, and is not
// exported: the agent never reports a zero it did not read.
type Reading struct {
	valid  exposition.FieldSet
	values [exposition.NumFields]float64
}

// Set records field f's value.
func (r *Reading) Set(f exposition.Field, v float64) {
	r.values[f] = v
	r.valid.Add(f)
}

// Get returns field f's value, and false when it was not read.
func (r *Reading) Get(f exposition.Field) (float64, bool) {
	return r.values[f], r.valid.Has(f)
}

// Fields returns the fields read.
func (r *Reading) Fields() exposition.FieldSet { return r.valid }

// Restrict drops every field not in s.
func (r *Reading) Restrict(s exposition.FieldSet) { r.valid = r.valid.Intersect(s) }

// inherit sets, from the reading of a MIG instance's GPU, the GPU's
// whole-GPU fields (exposition.PerGPU) the instance has not set itself.
func (r *Reading) inherit(gpu *Reading) {
	for f := range exposition.NumFields {
		if f.Scope() == exposition.PerGPU && !r.valid.Has(f) && gpu.valid.Has(f) {
			r.Set(f, gpu.values[f])
		}
	}
}

// DeviceReading is what a backend returns for one device.
type DeviceReading struct {
	Device  *Device
	Reading Reading
	// Processes is the device's process table, for per-pod attribution.
	Processes Processes
}

// Processes is a device's process table in one round.
type Processes struct {
	// Read is true when the backend read the table this round.
	Read bool
	// Err says why the table could not be read; nil when the backend does
	// not read processes for this device at all (attribution off, a MIG
	// instance or a MIG-enabled GPU).
	Err error
	// List holds the processes that ran on the device or held its memory.
	List []ProcessUsage
}

// ProcessUsage is one process's use of a device over the last sample
// period.
type ProcessUsage struct {
	// PID is the process ID in the agent's PID namespace.
	PID uint32
	// Pod is the pod the process runs in: set by a backend that knows it
	// (sim), else filled in by the Sampler from the PID. Zero for a host
	// process or one whose pod is not known.
	Pod PodRef
	// SMUtil is the percent (0-100) of time the process ran kernels over
	// the backend's recent window (NVML: the 5 s before the newest sample);
	// 0 when the driver has no sample for it in that window (idle).
	SMUtil float64
	// MemoryUsed is the device memory the process holds, in bytes; valid
	// when HasMemory.
	MemoryUsed uint64
	HasMemory  bool
	// Running is true when the driver lists the process as running on the
	// device; false for a process seen only in utilization samples (it has
	// exited since).
	Running bool
}

// PodRef names a pod by UID, or by namespace and name, or both.
type PodRef struct {
	UID, Namespace, Name string
}

// AttributionMode says how a device's utilization is attributed to the
// pods holding it.
type AttributionMode uint8

const (
	// AttributionDevice: every pod holding the device is given the
	// device's values (dcgm-exporter's behaviour).
	AttributionDevice AttributionMode = iota
	// AttributionProcess: the device's processes were mapped to pods; a
	// device shared by several pods has a PodShare per pod.
	AttributionProcess
)

// PodShare is one pod's use of a device held by several pods.
type PodShare struct {
	Namespace, Pod string
	// Container names the pod's containers holding the device, comma
	// separated when there are several.
	Container string
	// UID is the pod's UID, "" when not known.
	UID string
	// SMUtil is the sum of the pod's processes' SM utilization on the
	// device, in percent, at most 100.
	SMUtil float64
	// MemoryUsed is the device memory the pod's processes hold, in bytes;
	// valid when HasMemory.
	MemoryUsed uint64
	HasMemory  bool
}

// DeviceSample is one device in a Snapshot: its reading, the containers
// holding it when the snapshot was taken and how its use is attributed.
type DeviceSample struct {
	DeviceReading
	Owners      []podmap.Owner
	Attribution AttributionMode
	// Shares holds one entry per pod when several pods hold the device
	// and Attribution is AttributionProcess, ordered as Owners.
	Shares []PodShare
}

// Snapshot is one sampling round. It is immutable once published.
type Snapshot struct {
	// Time is when the round started.
	Time time.Time
	// Duration is how long the round took: reading the backend and
	// attributing the devices' processes to pods.
	Duration time.Duration
	// Devices holds every device that answered, ordered by index.
	Devices []DeviceSample
	// Errors holds the devices that failed this round.
	Errors []DeviceError
	// Node is the node name, exported as the Hostname label.
	Node string

	format     *Format
	exposition lazyBytes
	sizeHint   *atomic.Int64 // the sampler's last exposition size; nil: none
}
