// Package podmap learns which pod and container holds each GPU (or MIG
// instance) on this node, from the kubelet's pod-resources API, and keeps the
// answer in an immutable Mapping refreshed in the background, so that no
// scrape ever waits on the kubelet.
//
// Refresher keeps the current Mapping for the agent; NewMapping builds a
// Mapping from a List answer directly; ParseDeviceID knows the device-ID
// forms device plugins hand out. The fakekubelet subpackage serves scripted answers on a
// real socket for tests.
package podmap

// Owner is one container's claim on a device.
type Owner struct {
	Namespace string
	Pod       string
	Container string
	// Resource is the extended resource name the device was allocated
	// under, e.g. "nvidia.com/gpu" or "nvidia.com/mig-3g.40gb".
	Resource string
	// Replica is the time-slicing replica ("<UUID>::<n>" gives "n"), or
	// "" when the device is held whole. It is exported as the vgpu label.
	Replica string
}

// DeviceKey names a device the way the agent sees it, so that every
// device-ID form the kubelet may hand out can be matched against it.
type DeviceKey struct {
	// UUID is "GPU-…" for a full GPU, "MIG-…" for a MIG instance.
	UUID string
	// Minor is the device's /dev/nvidia<minor> number (of the parent GPU
	// for a MIG instance); -1 when unknown.
	Minor int
	// GPUInstance is the MIG GPU instance id, -1 for a full GPU.
	GPUInstance int
	// ParentUUID is the parent GPU's UUID for a MIG instance, "" otherwise.
	ParentUUID string
}

// Lookup answers which containers hold a device.
type Lookup interface {
	// Owners returns the containers holding the device, ordered by
	// namespace, pod, container and replica; nil when the device is idle
	// or no mapping was ever obtained. The slice must not be modified.
	Owners(k DeviceKey) []Owner
}
