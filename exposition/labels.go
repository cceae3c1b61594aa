package exposition

// The label names of the exposition: dcgm-exporter's device labels, in the
// order the agent writes them, then the pod attribution labels.
const (
	LabelGPU       = "gpu" // NVML's index (of the parent GPU for a MIG instance)
	LabelUUID      = "UUID"
	LabelPCIBusID  = "pci_bus_id"
	LabelDevice    = "device" // nvidia<minor>
	LabelModelName = "modelName"
	// LabelGPUInstanceProfile and LabelGPUInstanceID tell the MIG
	// instances of a GPU apart.
	LabelGPUInstanceProfile = "GPU_I_PROFILE"
	LabelGPUInstanceID      = "GPU_I_ID"
	// LabelHostname is the node label every released dcgm-exporter (4.x
	// tags) writes; LabelHostnameLower is the one its unreleased main
	// writes. The agent writes either (--hostname-label); the aggregator
	// reads either as the node of a static target's devices (node
	// metrics).
	LabelHostname      = "Hostname"
	LabelHostnameLower = "hostname"
	// LabelErrCode is on DCGM_FI_DEV_XID_ERRORS: the XID as a label.
	LabelErrCode = "err_code"

	LabelContainer = "container"
	LabelNamespace = "namespace"
	LabelPod       = "pod"
	// LabelVGPU is the time-slicing replica of a shared device.
	LabelVGPU = "vgpu"
	// LabelPodUID is on the per-pod share families.
	LabelPodUID = "pod_uid"

	// The pod labels as Prometheus-style relabelling renames them when it
	// labels a scrape with the exporter's own pod.
	LabelExportedContainer = "exported_container"
	LabelExportedNamespace = "exported_namespace"
	LabelExportedPod       = "exported_pod"

	// LabelMode is DeviceAttributionMode's label, ModeProcess or
	// ModeDevice.
	LabelMode   = "mode"
	ModeProcess = "process"
	ModeDevice  = "device"
)
