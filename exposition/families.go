package exposition

// Field is a device field: a family whose value a backend reads per device
// (GPU or MIG instance). It indexes the table; the agent renders the fields
// in this order.
type Field uint8

// The device fields, grouped as dcgm-exporter's counters files group them.
const (
	SMClock Field = iota
	MemClock
	MemoryTemp
	GPUTemp
	PowerUsage
	TotalEnergy
	PCIeReplayCounter
	GPUUtil
	MemCopyUtil
	EncUtil
	DecUtil
	// XIDErrors is the last XID error the driver reported (0 before any).
	XIDErrors
	PowerViolation
	ThermalViolation
	SyncBoostViolation
	BoardLimitViolation
	LowUtilViolation
	ReliabilityViolation
	FBFree
	FBUsed
	FBReserved
	ECCSBEVolatileTotal
	ECCDBEVolatileTotal
	ECCSBEAggregateTotal
	ECCDBEAggregateTotal
	RetiredPagesSBE
	RetiredPagesDBE
	RetiredPagesPending
	NVLinkCRCFlitErrors
	NVLinkCRCDataErrors
	NVLinkReplayErrors
	NVLinkRecoveryErrors
	NVLinkBandwidthTotal
	VGPULicenseStatus
	UncorrectableRemappedRows
	CorrectableRemappedRows
	RowRemapFailure
	// GREngineActive to PCIeRXBytes are DCGM's profiling (DCP) fields,
	// read through NVML GPM (Hopper and newer); PCIeTXBytes and
	// PCIeRXBytes also from NVML's PCIe byte counters.
	GREngineActive
	SMActive
	SMOccupancy
	PipeTensorActive
	DRAMActive
	PipeFP64Active
	PipeFP32Active
	PipeFP16Active
	PCIeTXBytes
	PCIeRXBytes
	NumFields
)

// Scope says which device of a GPU in MIG mode a field's value belongs to.
type Scope uint8

const (
	// PerGPU: one value for the whole GPU (clocks, power, temperatures,
	// error counters). A MIG instance reports its GPU's value, as
	// dcgm-exporter does.
	PerGPU Scope = iota
	// PerDevice: each device has its own value (memory, utilization,
	// profiling); a MIG instance reports only its own.
	PerDevice
)

// fieldRow is a row of the device-field table: the family as the
// exposition carries it, and the columns the agent needs beyond it.
type fieldRow struct {
	Family
	scope Scope
	// inDefault: in the built-in field list (dcgm-exporter's
	// dcp-metrics-included.csv, as gpu-operator deploys it).
	inDefault bool
	// source is where NVML supplies the value, for the docs.
	source string
}

const (
	fiPerfPolicy = "field value NVML_FI_DEV_PERF_POLICY_"
	gpm          = "NVML GPM "
)

// fields is the table of device fields: dcgm-exporter's names, types, help
// texts (as its counters files have them) and units.
var fields = [NumFields]fieldRow{
	SMClock:           {Family{"DCGM_FI_DEV_SM_CLOCK", Gauge, "SM clock frequency (in MHz).", MHz, RoleNone}, PerGPU, true, "nvmlDeviceGetClockInfo(NVML_CLOCK_SM)"},
	MemClock:          {Family{"DCGM_FI_DEV_MEM_CLOCK", Gauge, "Memory clock frequency (in MHz).", MHz, RoleNone}, PerGPU, true, "nvmlDeviceGetClockInfo(NVML_CLOCK_MEM)"},
	MemoryTemp:        {Family{"DCGM_FI_DEV_MEMORY_TEMP", Gauge, "Memory temperature (in C).", Celsius, RoleNone}, PerGPU, true, "field value NVML_FI_DEV_MEMORY_TEMP"},
	GPUTemp:           {Family{"DCGM_FI_DEV_GPU_TEMP", Gauge, "GPU temperature (in C).", Celsius, RoleNone}, PerGPU, true, "nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU)"},
	PowerUsage:        {Family{"DCGM_FI_DEV_POWER_USAGE", Gauge, "Power draw (in W).", Watts, RolePower}, PerGPU, true, "nvmlDeviceGetPowerUsage (mW / 1000)"},
	TotalEnergy:       {Family{"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", Counter, "Total energy consumption since boot (in mJ).", Millijoules, RoleNone}, PerGPU, true, "field value NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION"},
	PCIeReplayCounter: {Family{"DCGM_FI_DEV_PCIE_REPLAY_COUNTER", Counter, "Total number of PCIe retries.", Count, RoleNone}, PerGPU, true, "field value NVML_FI_DEV_PCIE_REPLAY_COUNTER"},
	GPUUtil:           {Family{"DCGM_FI_DEV_GPU_UTIL", Gauge, "GPU utilization (in %).", Percent, RoleUtilization}, PerDevice, true, "nvmlDeviceGetUtilizationRates().gpu"},
	MemCopyUtil:       {Family{"DCGM_FI_DEV_MEM_COPY_UTIL", Gauge, "Memory utilization (in %).", Percent, RoleNone}, PerDevice, true, "nvmlDeviceGetUtilizationRates().memory"},
	EncUtil:           {Family{"DCGM_FI_DEV_ENC_UTIL", Gauge, "Encoder utilization (in %).", Percent, RoleNone}, PerDevice, true, "nvmlDeviceGetEncoderUtilization"},
	DecUtil:           {Family{"DCGM_FI_DEV_DEC_UTIL", Gauge, "Decoder utilization (in %).", Percent, RoleNone}, PerDevice, true, "nvmlDeviceGetDecoderUtilization"},
	XIDErrors:         {Family{"DCGM_FI_DEV_XID_ERRORS", Gauge, "Value of the last XID error encountered.", Count, RoleNone}, PerGPU, true, "NVML event set (nvmlEventTypeXidCriticalError), waited on in the background"},
	PowerViolation:    {Family{"DCGM_FI_DEV_POWER_VIOLATION", Counter, "Throttling duration due to power constraints (in ns).", Nanoseconds, RoleNone}, PerGPU, false, fiPerfPolicy + "POWER"},
	ThermalViolation:  {Family{"DCGM_FI_DEV_THERMAL_VIOLATION", Counter, "Throttling duration due to thermal constraints (in ns).", Nanoseconds, RoleNone}, PerGPU, false, fiPerfPolicy + "THERMAL"},
	SyncBoostViolation: {Family{"DCGM_FI_DEV_SYNC_BOOST_VIOLATION", Counter, "Throttling duration due to sync-boost constraints (in ns).", Nanoseconds, RoleNone},
		PerGPU, false, fiPerfPolicy + "SYNC_BOOST"},
	BoardLimitViolation: {Family{"DCGM_FI_DEV_BOARD_LIMIT_VIOLATION", Counter, "Throttling duration due to board limit constraints (in ns).", Nanoseconds, RoleNone},
		PerGPU, false, fiPerfPolicy + "BOARD_LIMIT"},
	LowUtilViolation: {Family{"DCGM_FI_DEV_LOW_UTIL_VIOLATION", Counter, "Throttling duration due to low utilization (in ns).", Nanoseconds, RoleNone},
		PerGPU, false, fiPerfPolicy + "LOW_UTILIZATION"},
	ReliabilityViolation: {Family{"DCGM_FI_DEV_RELIABILITY_VIOLATION", Counter, "Throttling duration due to reliability constraints (in ns).", Nanoseconds, RoleNone},
		PerGPU, false, fiPerfPolicy + "RELIABILITY"},
	FBFree:     {Family{"DCGM_FI_DEV_FB_FREE", Gauge, "Framebuffer memory free (in MiB).", MiB, RoleMemoryFree}, PerDevice, true, "nvmlDeviceGetMemoryInfo_v2().free (v1 on drivers without v2)"},
	FBUsed:     {Family{"DCGM_FI_DEV_FB_USED", Gauge, "Framebuffer memory used (in MiB).", MiB, RoleMemoryUsed}, PerDevice, true, "nvmlDeviceGetMemoryInfo_v2().used (v1 on drivers without v2)"},
	FBReserved: {Family{"DCGM_FI_DEV_FB_RESERVED", Gauge, "Framebuffer memory reserved (in MiB).", MiB, RoleMemoryReserved}, PerDevice, true, "nvmlDeviceGetMemoryInfo_v2().reserved"},
	ECCSBEVolatileTotal: {Family{"DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", Counter, "Total number of single-bit volatile ECC errors.", Count, RoleNone},
		PerGPU, false, "field value NVML_FI_DEV_ECC_SBE_VOL_TOTAL"},
	ECCDBEVolatileTotal: {Family{"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", Counter, "Total number of double-bit volatile ECC errors.", Count, RoleNone},
		PerGPU, false, "field value NVML_FI_DEV_ECC_DBE_VOL_TOTAL"},
	ECCSBEAggregateTotal: {Family{"DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", Counter, "Total number of single-bit persistent ECC errors.", Count, RoleNone},
		PerGPU, false, "field value NVML_FI_DEV_ECC_SBE_AGG_TOTAL"},
	ECCDBEAggregateTotal: {Family{"DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", Counter, "Total number of double-bit persistent ECC errors.", Count, RoleNone},
		PerGPU, false, "field value NVML_FI_DEV_ECC_DBE_AGG_TOTAL"},
	RetiredPagesSBE: {Family{"DCGM_FI_DEV_RETIRED_SBE", Counter, "Total number of retired pages due to single-bit errors.", Count, RoleNone},
		PerGPU, false, "field value NVML_FI_DEV_RETIRED_SBE"},
	RetiredPagesDBE: {Family{"DCGM_FI_DEV_RETIRED_DBE", Counter, "Total number of retired pages due to double-bit errors.", Count, RoleNone},
		PerGPU, false, "field value NVML_FI_DEV_RETIRED_DBE"},
	RetiredPagesPending: {Family{"DCGM_FI_DEV_RETIRED_PENDING", Counter, "Total number of pages pending retirement.", Count, RoleNone},
		PerGPU, false, "field value NVML_FI_DEV_RETIRED_PENDING (1 when pages are pending)"},
	NVLinkCRCFlitErrors: {Family{"DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", Counter, "Total number of NVLink flow-control CRC errors.", Count, RoleNone},
		PerGPU, false, "field value NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL"},
	NVLinkCRCDataErrors: {Family{"DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", Counter, "Total number of NVLink data CRC errors.", Count, RoleNone},
		PerGPU, false, "field value NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL"},
	NVLinkReplayErrors: {Family{"DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", Counter, "Total number of NVLink retries.", Count, RoleNone},
		PerGPU, false, "field value NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL"},
	NVLinkRecoveryErrors: {Family{"DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", Counter, "Total number of NVLink recovery errors.", Count, RoleNone},
		PerGPU, false, "field value NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL"},
	NVLinkBandwidthTotal: {Family{"DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", Counter, "Total number of NVLink bandwidth counters for all lanes.", MiBPerSecond, RoleNone},
		PerGPU, true, "field values NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX + _TX over all links: KiB per second between two rounds / 1000, as DCGM computes it"},
	VGPULicenseStatus: {Family{"DCGM_FI_DEV_VGPU_LICENSE_STATUS", Gauge, "vGPU License status", Count, RoleNone},
		PerGPU, true, "nvmlDeviceGetGridLicensableFeatures: 1 when the vGPU feature is licensed, 0 when not; absent without licensing"},
	UncorrectableRemappedRows: {Family{"DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", Counter, "Number of remapped rows for uncorrectable errors", Count, RoleNone},
		PerGPU, true, "field value NVML_FI_DEV_REMAPPED_UNC"},
	CorrectableRemappedRows: {Family{"DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", Counter, "Number of remapped rows for correctable errors", Count, RoleNone},
		PerGPU, true, "field value NVML_FI_DEV_REMAPPED_COR"},
	RowRemapFailure: {Family{"DCGM_FI_DEV_ROW_REMAP_FAILURE", Gauge, "Whether remapping of rows has failed", Count, RoleNone},
		PerGPU, true, "field value NVML_FI_DEV_REMAPPED_FAILURE"},
	GREngineActive: {Family{"DCGM_FI_PROF_GR_ENGINE_ACTIVE", Gauge, "Ratio of time the graphics engine is active.", Ratio, RoleEngineActive},
		PerDevice, true, gpm + "GRAPHICS_UTIL / 100"},
	SMActive: {Family{"DCGM_FI_PROF_SM_ACTIVE", Gauge, "The ratio of cycles an SM has at least 1 warp assigned.", Ratio, RoleNone},
		PerDevice, false, gpm + "SM_UTIL / 100"},
	SMOccupancy: {Family{"DCGM_FI_PROF_SM_OCCUPANCY", Gauge, "The ratio of number of warps resident on an SM.", Ratio, RoleNone},
		PerDevice, false, gpm + "SM_OCCUPANCY / 100"},
	PipeTensorActive: {Family{"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", Gauge, "Ratio of cycles the tensor (HMMA) pipe is active.", Ratio, RoleNone},
		PerDevice, true, gpm + "ANY_TENSOR_UTIL / 100"},
	DRAMActive: {Family{"DCGM_FI_PROF_DRAM_ACTIVE", Gauge, "Ratio of cycles the device memory interface is active sending or receiving data.", Ratio, RoleNone},
		PerDevice, true, gpm + "DRAM_BW_UTIL / 100"},
	PipeFP64Active: {Family{"DCGM_FI_PROF_PIPE_FP64_ACTIVE", Gauge, "Ratio of cycles the fp64 pipes are active.", Ratio, RoleNone},
		PerDevice, false, gpm + "FP64_UTIL / 100"},
	PipeFP32Active: {Family{"DCGM_FI_PROF_PIPE_FP32_ACTIVE", Gauge, "Ratio of cycles the fp32 pipes are active.", Ratio, RoleNone},
		PerDevice, false, gpm + "FP32_UTIL / 100"},
	PipeFP16Active: {Family{"DCGM_FI_PROF_PIPE_FP16_ACTIVE", Gauge, "Ratio of cycles the fp16 pipes are active.", Ratio, RoleNone},
		PerDevice, false, gpm + "FP16_UTIL / 100"},
	PCIeTXBytes: {Family{"DCGM_FI_PROF_PCIE_TX_BYTES", Gauge,
		"The rate of data transmitted over the PCIe bus - including both protocol headers and data payloads - in bytes per second.", BytesPerSecond, RoleNone},
		PerDevice, true, gpm + "PCIE_TX_PER_SEC × 2^20; without GPM, field value NVML_FI_DEV_PCIE_COUNT_TX_BYTES between two rounds"},
	PCIeRXBytes: {Family{"DCGM_FI_PROF_PCIE_RX_BYTES", Gauge,
		"The rate of data received over the PCIe bus - including both protocol headers and data payloads - in bytes per second.", BytesPerSecond, RoleNone},
		PerDevice, true, gpm + "PCIE_RX_PER_SEC × 2^20; without GPM, field value NVML_FI_DEV_PCIE_COUNT_RX_BYTES between two rounds"},
}

// Family returns f's row.
func (f Field) Family() Family { return fields[f].Family }

// Name is f's family name.
func (f Field) Name() string { return fields[f].Name }

// Scope says whether a MIG instance reports its GPU's value of f or its own.
func (f Field) Scope() Scope { return fields[f].scope }

// InDefault reports whether f is in the built-in field list: the fields
// dcgm-exporter's dcp-metrics-included.csv enables (gpu-operator's default).
func (f Field) InDefault() bool { return fields[f].inDefault }

// Source says where NVML supplies f.
func (f Field) Source() string { return fields[f].source }

// FieldNamed returns the device field named name, and false when no field
// has that name.
func FieldNamed(name string) (Field, bool) {
	for f := range NumFields {
		if fields[f].Name == name {
			return f, true
		}
	}
	return 0, false
}

// Fields of the profiling (DCP) group, read through NVML GPM.
var profilingFields = FieldsOf(GREngineActive, SMActive, SMOccupancy, PipeTensorActive, DRAMActive,
	PipeFP64Active, PipeFP32Active, PipeFP16Active, PCIeTXBytes, PCIeRXBytes)

// ProfilingFields are DCGM's profiling (DCGM_FI_PROF_*) fields.
func ProfilingFields() FieldSet { return profilingFields }

// RoleFields are the fields the aggregator reads: the agent serves them
// whatever field list it is given.
func RoleFields() FieldSet {
	var s FieldSet
	for f := range NumFields {
		if fields[f].Role != RoleNone {
			s.Add(f)
		}
	}
	return s
}

// DefaultFields are the fields of the built-in field list.
func DefaultFields() FieldSet {
	var s FieldSet
	for f := range NumFields {
		if fields[f].inDefault {
			s.Add(f)
		}
	}
	return s
}

// LabelField is one of DCGM's label fields: a device property that
// dcgm-exporter writes as a label (named after the field) on every series
// of the device, when its counters file lists the field with the type
// "label".
type LabelField uint8

// The label fields, in the order of their names: the order in which
// dcgm-exporter writes them.
const (
	BrandLabel LabelField = iota
	ECCInforomVersionLabel
	InforomImageVersionLabel
	OEMInforomVersionLabel
	PowerInforomVersionLabel
	SerialLabel
	VBIOSVersionLabel
	DriverVersionLabel
	NVMLVersionLabel
	NumLabelFields
)

type labelRow struct {
	name, help string
	inDefault  bool
	source     string
}

var labelFields = [NumLabelFields]labelRow{
	BrandLabel:               {"DCGM_FI_DEV_BRAND", "Device Brand", false, "nvmlDeviceGetBrand, named as DCGM names the brands"},
	ECCInforomVersionLabel:   {"DCGM_FI_DEV_ECC_INFOROM_VER", "ECC inforom version", false, "nvmlDeviceGetInforomVersion(NVML_INFOROM_ECC)"},
	InforomImageVersionLabel: {"DCGM_FI_DEV_INFOROM_IMAGE_VER", "Inforom image version", false, "nvmlDeviceGetInforomImageVersion"},
	OEMInforomVersionLabel:   {"DCGM_FI_DEV_OEM_INFOROM_VER", "OEM inforom version", false, "nvmlDeviceGetInforomVersion(NVML_INFOROM_OEM)"},
	PowerInforomVersionLabel: {"DCGM_FI_DEV_POWER_INFOROM_VER", "Power management object inforom version", false, "nvmlDeviceGetInforomVersion(NVML_INFOROM_POWER)"},
	SerialLabel:              {"DCGM_FI_DEV_SERIAL", "Device Serial Number", false, "nvmlDeviceGetSerial"},
	VBIOSVersionLabel:        {"DCGM_FI_DEV_VBIOS_VERSION", "VBIOS version of the device", false, "nvmlDeviceGetVbiosVersion"},
	DriverVersionLabel:       {"DCGM_FI_DRIVER_VERSION", "Driver Version", true, "nvmlSystemGetDriverVersion"},
	NVMLVersionLabel:         {"DCGM_FI_NVML_VERSION", "NVML Version", false, "nvmlSystemGetNVMLVersion"},
}

// Name is the label's name (the DCGM field's).
func (l LabelField) Name() string { return labelFields[l].name }

// Help is the field's description in dcgm-exporter's counters files.
func (l LabelField) Help() string { return labelFields[l].help }

// InDefault reports whether l is in the built-in field list.
func (l LabelField) InDefault() bool { return labelFields[l].inDefault }

// Source says where NVML supplies l.
func (l LabelField) Source() string { return labelFields[l].source }

// LabelFieldNamed returns the label field named name, and false when none
// has that name.
func LabelFieldNamed(name string) (LabelField, bool) {
	for l := range NumLabelFields {
		if labelFields[l].name == name {
			return l, true
		}
	}
	return 0, false
}

// LabelSet is a set of label fields. The zero value is empty.
type LabelSet uint16

// Add adds l to s.
func (s *LabelSet) Add(l LabelField) { *s |= 1 << l }

// Has reports whether l is in s.
func (s LabelSet) Has(l LabelField) bool { return s&(1<<l) != 0 }

// DefaultLabels are the label fields of the built-in field list.
func DefaultLabels() LabelSet {
	var s LabelSet
	for l := range NumLabelFields {
		if labelFields[l].inDefault {
			s.Add(l)
		}
	}
	return s
}

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
	// ProfilingSupported says, per device, whether its profiling fields
	// (DCGM_FI_PROF_*) are read.
	ProfilingSupported
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
	ProfilingSupported: {"gpu_metrics_server_profiling_supported", Gauge,
		"1 when the device's profiling fields (DCGM_FI_PROF_*) are read through NVML GPM, " +
			"0 when NVML has no GPM for it (before Hopper, or a GPU in MIG mode, whose instances report their own): they are then absent.", Count, RoleNone},
	SampleTimestamp: {"gpu_metrics_server_sample_timestamp_seconds", Gauge,
		"Unix time of the sampling round whose values this scrape serves.", Seconds, RoleSampleTime},
}

// Family returns a's row.
func (a AgentFamily) Family() Family { return agentFamilies[a] }

// Name is a's family name.
func (a AgentFamily) Name() string { return agentFamilies[a].Name }
