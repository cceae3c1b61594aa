package exposition

// Field is a device field: a family whose value a backend reads per device
// (GPU or MIG instance). It indexes the table; the agent renders the fields
// in this order.
type Field uint8

// The device fields.
const (
	SMClock Field = iota
	MemClock
	GPUTemp
	PowerUsage
	TotalEnergy
	GPUUtil
	MemCopyUtil
	EncUtil
	DecUtil
	FBFree
	FBUsed
	FBReserved
	// GREngineActive and SMActive are NVML GPM's activity ratios (Hopper
	// and newer).
	GREngineActive
	SMActive
	NumFields
)

// fields is the table of device fields: dcgm-exporter's names, types, help
// texts (as its default counters files have them) and units.
var fields = [NumFields]Family{
	SMClock:        {"DCGM_FI_DEV_SM_CLOCK", Gauge, "SM clock frequency (in MHz).", MHz, RoleNone},
	MemClock:       {"DCGM_FI_DEV_MEM_CLOCK", Gauge, "Memory clock frequency (in MHz).", MHz, RoleNone},
	GPUTemp:        {"DCGM_FI_DEV_GPU_TEMP", Gauge, "GPU temperature (in C).", Celsius, RoleNone},
	PowerUsage:     {"DCGM_FI_DEV_POWER_USAGE", Gauge, "Power draw (in W).", Watts, RolePower},
	TotalEnergy:    {"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", Counter, "Total energy consumption since boot (in mJ).", Millijoules, RoleNone},
	GPUUtil:        {"DCGM_FI_DEV_GPU_UTIL", Gauge, "GPU utilization (in %).", Percent, RoleUtilization},
	MemCopyUtil:    {"DCGM_FI_DEV_MEM_COPY_UTIL", Gauge, "Memory utilization (in %).", Percent, RoleNone},
	EncUtil:        {"DCGM_FI_DEV_ENC_UTIL", Gauge, "Encoder utilization (in %).", Percent, RoleNone},
	DecUtil:        {"DCGM_FI_DEV_DEC_UTIL", Gauge, "Decoder utilization (in %).", Percent, RoleNone},
	FBFree:         {"DCGM_FI_DEV_FB_FREE", Gauge, "Frame buffer memory free (in MiB).", MiB, RoleMemoryFree},
	FBUsed:         {"DCGM_FI_DEV_FB_USED", Gauge, "Frame buffer memory used (in MiB).", MiB, RoleMemoryUsed},
	FBReserved:     {"DCGM_FI_DEV_FB_RESERVED", Gauge, "Framebuffer memory reserved (in MiB).", MiB, RoleMemoryReserved},
	GREngineActive: {"DCGM_FI_PROF_GR_ENGINE_ACTIVE", Gauge, "Ratio of time the graphics engine is active.", Ratio, RoleEngineActive},
	SMActive:       {"DCGM_FI_PROF_SM_ACTIVE", Gauge, "The ratio of cycles an SM has at least 1 warp assigned.", Ratio, RoleNone},
}

// Family returns f's row.
func (f Field) Family() Family { return fields[f] }

// Name is f's family name.
func (f Field) Name() string { return fields[f].Name }

// AgentFamily is one of the agent's own families (gpu_metrics_server_*),
// rendered from a snapshot's attribution, MIG layout and time rather than
// from a device reading.
type AgentFamily uint8

const (
	// PodGPUUtilization is a pod's share of a device several pods hold:
	// its processes' summed SM utilization.
	PodGPUUtilization AgentFamily = iota
	// PodGPUMemoryUsed is the device memory a pod's processes hold on a
	// device several pods hold.
	PodGPUMemoryUsed
	// DeviceAttributionMode says, per device, whether its processes are
	// attributed to pods (ModeProcess) or every pod holding it is given
	// the device's values (ModeDevice).
	DeviceAttributionMode
	// MIGActivitySupported says, per MIG instance, whether its activity
	// (GREngineActive) is served.
	MIGActivitySupported
	// SampleTimestamp carries the snapshot's time, which the aggregator
	// uses as the real sample time.
	SampleTimestamp
	NumAgentFamilies
)

var agentFamilies = [NumAgentFamilies]Family{
	PodGPUUtilization: {"gpu_metrics_server_pod_gpu_utilization", Gauge,
		"Percent of time the pod's processes ran kernels on the device over the last few seconds " +
			"(summed per-process SM utilization, at most 100); only for devices several pods share.", Percent, RolePodUtilization},
	PodGPUMemoryUsed: {"gpu_metrics_server_pod_gpu_memory_used_bytes", Gauge,
		"Device memory held by the pod's processes (in bytes); only for devices several pods share.", Bytes, RolePodMemoryUsed},
	DeviceAttributionMode: {"gpu_metrics_server_device_attribution_mode", Gauge,
		"1 for the active attribution mode of the device: process (its processes are mapped to pods) " +
			"or device (every pod holding it is given the device's values).", Count, RoleNone},
	MIGActivitySupported: {"gpu_metrics_server_mig_activity_supported", Gauge,
		"1 when the MIG instance's activity (DCGM_FI_PROF_GR_ENGINE_ACTIVE) is read through NVML GPM, " +
			"0 when NVML has none for it (before Hopper): it then reports memory only.", Count, RoleNone},
	SampleTimestamp: {"gpu_metrics_server_sample_timestamp_seconds", Gauge,
		"Unix time of the sampling round whose values this scrape serves.", Seconds, RoleSampleTime},
}

// Family returns a's row.
func (a AgentFamily) Family() Family { return agentFamilies[a] }

// Name is a's family name.
func (a AgentFamily) Name() string { return agentFamilies[a].Name }
