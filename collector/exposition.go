package collector

import (
	"strconv"
	"sync"
)

// family is one dcgm-exporter series family the agent renders.
type family struct {
	name, help, typ string
	field           Field
	value           func(r *Reading, b []byte) []byte
}

func appendFloat(b []byte, v float64) []byte { return strconv.AppendFloat(b, v, 'f', -1, 64) }

const mib = 1 << 20

// families lists the rendered series in dcgm-exporter's names, help texts
// and units (its default counters file).
var families = []family{
	{"DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", "gauge", FieldSMClock,
		func(r *Reading, b []byte) []byte { return appendFloat(b, r.SMClockMHz) }},
	{"DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).", "gauge", FieldMemClock,
		func(r *Reading, b []byte) []byte { return appendFloat(b, r.MemClockMHz) }},
	{"DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "gauge", FieldTemp,
		func(r *Reading, b []byte) []byte { return appendFloat(b, r.TempCelsius) }},
	{"DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "gauge", FieldPower,
		func(r *Reading, b []byte) []byte { return appendFloat(b, r.PowerWatts) }},
	{"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Total energy consumption since boot (in mJ).", "counter", FieldEnergy,
		func(r *Reading, b []byte) []byte { return strconv.AppendUint(b, r.EnergyMillijoules, 10) }},
	{"DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "gauge", FieldGPUUtil,
		func(r *Reading, b []byte) []byte { return appendFloat(b, r.GPUUtil) }},
	{"DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", "gauge", FieldMemCopyUtil,
		func(r *Reading, b []byte) []byte { return appendFloat(b, r.MemCopyUtil) }},
	{"DCGM_FI_DEV_ENC_UTIL", "Encoder utilization (in %).", "gauge", FieldEncUtil,
		func(r *Reading, b []byte) []byte { return appendFloat(b, r.EncUtil) }},
	{"DCGM_FI_DEV_DEC_UTIL", "Decoder utilization (in %).", "gauge", FieldDecUtil,
		func(r *Reading, b []byte) []byte { return appendFloat(b, r.DecUtil) }},
	{"DCGM_FI_DEV_FB_FREE", "Frame buffer memory free (in MiB).", "gauge", FieldMemory,
		func(r *Reading, b []byte) []byte { return strconv.AppendUint(b, r.FBFree/mib, 10) }},
	{"DCGM_FI_DEV_FB_USED", "Frame buffer memory used (in MiB).", "gauge", FieldMemory,
		func(r *Reading, b []byte) []byte { return strconv.AppendUint(b, r.FBUsed/mib, 10) }},
	{"DCGM_FI_PROF_GR_ENGINE_ACTIVE", "Ratio of time the graphics engine is active.", "gauge", FieldGREngineActive,
		func(r *Reading, b []byte) []byte { return appendFloat(b, r.GREngineActive) }},
	{"DCGM_FI_PROF_SM_ACTIVE", "The ratio of cycles an SM has at least 1 warp assigned.", "gauge", FieldSMActive,
		func(r *Reading, b []byte) []byte { return appendFloat(b, r.SMActive) }},
}

// The agent's own per-pod and per-device series.
const (
	// PodUtilizationMetric is a pod's share of a device several pods hold:
	// its processes' summed SM utilization, in percent.
	PodUtilizationMetric = "gpu_metrics_server_pod_gpu_utilization"
	// PodMemoryMetric is the device memory a pod's processes hold on a
	// device several pods hold, in bytes.
	PodMemoryMetric = "gpu_metrics_server_pod_gpu_memory_used_bytes"
	// AttributionModeMetric says, per device, whether its processes are
	// attributed to pods ("process") or every pod holding it is given the
	// device's values ("device").
	AttributionModeMetric = "gpu_metrics_server_device_attribution_mode"
	// MIGActivityMetric says, per MIG instance, whether its activity
	// (DCGM_FI_PROF_GR_ENGINE_ACTIVE) is served.
	MIGActivityMetric = "gpu_metrics_server_mig_activity_supported"
)

const (
	podUtilizationHelp = "Percent of time the pod's processes ran kernels on the device over the last few seconds " +
		"(summed per-process SM utilization, at most 100); only for devices several pods share."
	podMemoryHelp   = "Device memory held by the pod's processes (in bytes); only for devices several pods share."
	attributionHelp = "1 for the active attribution mode of the device: process (its processes are mapped to pods) " +
		"or device (every pod holding it is given the device's values)."
	migActivityHelp = "1 when the MIG instance's activity (DCGM_FI_PROF_GR_ENGINE_ACTIVE) is read through NVML GPM, " +
		"0 when NVML has none for it (before Hopper): it then reports memory only."
)

// SampleTimestampMetric is the series carrying the snapshot's time, which the
// aggregator uses as the real sample time.
const SampleTimestampMetric = "gpu_metrics_server_sample_timestamp_seconds"

// lazyBytes renders once, on first use.
type lazyBytes struct {
	once sync.Once
	b    []byte
}

// Exposition returns the snapshot's device series in the Prometheus text
// format (version 0.0.4), rendered once on first use and cached: serving a
// scrape costs a copy.
func (s *Snapshot) Exposition() []byte {
	s.exposition.once.Do(func() { s.exposition.b = s.render(nil) })
	return s.exposition.b
}

func (s *Snapshot) render(b []byte) []byte {
	// The label set of each series, computed once per render.
	type series struct {
		labels []byte
		r      *Reading
	}
	var all []series
	bases := make([][]byte, len(s.Devices))
	for i := range s.Devices {
		d := &s.Devices[i]
		base := deviceLabels(nil, d.Device, s.Node)
		bases[i] = base
		if len(d.Owners) == 0 {
			all = append(all, series{labels: base, r: &d.Reading})
			continue
		}
		for _, o := range d.Owners {
			l := append([]byte(nil), base...)
			l = appendLabel(l, "container", o.Container)
			l = appendLabel(l, "namespace", o.Namespace)
			l = appendLabel(l, "pod", o.Pod)
			if o.Replica != "" {
				l = appendLabel(l, "vgpu", o.Replica)
			}
			all = append(all, series{labels: l, r: &d.Reading})
		}
	}
	for _, f := range families {
		header := false
		for _, se := range all {
			if !se.r.Has(f.field) {
				continue
			}
			if !header {
				b = appendHeader(b, f.name, f.help, f.typ)
				header = true
			}
			b = appendSample(b, f.name, se.labels, nil)
			b = f.value(se.r, b)
			b = append(b, '\n')
		}
	}
	b = s.renderShares(b, bases, PodUtilizationMetric, podUtilizationHelp, func(sh *PodShare, b []byte) ([]byte, bool) {
		return appendFloat(b, sh.SMUtil), true
	})
	b = s.renderShares(b, bases, PodMemoryMetric, podMemoryHelp, func(sh *PodShare, b []byte) ([]byte, bool) {
		return strconv.AppendUint(b, sh.MemoryUsed, 10), sh.HasMemory
	})
	if len(s.Devices) > 0 {
		b = appendHeader(b, AttributionModeMetric, attributionHelp, "gauge")
		for i := range s.Devices {
			active := s.Devices[i].Attribution
			b = appendSample(b, AttributionModeMetric, bases[i], []byte(`,mode="process"`))
			b = appendBool(b, active == AttributionProcess)
			b = appendSample(b, AttributionModeMetric, bases[i], []byte(`,mode="device"`))
			b = appendBool(b, active == AttributionDevice)
		}
	}
	header := false
	for i := range s.Devices {
		mig := s.Devices[i].Device.MIG
		if mig == nil {
			continue
		}
		if !header {
			b = appendHeader(b, MIGActivityMetric, migActivityHelp, "gauge")
			header = true
		}
		b = appendSample(b, MIGActivityMetric, bases[i], nil)
		b = appendBool(b, mig.Activity)
	}
	b = append(b, "# HELP "+SampleTimestampMetric+" Unix time of the sampling round whose values this scrape serves.\n# TYPE "+SampleTimestampMetric+" gauge\n"+SampleTimestampMetric+" "...)
	b = appendFloat(b, float64(s.Time.UnixMilli())/1000)
	b = append(b, '\n')
	return b
}

// renderShares renders one per-pod family; value returns false to leave a
// pod's series out.
func (s *Snapshot) renderShares(b []byte, bases [][]byte, name, help string, value func(*PodShare, []byte) ([]byte, bool)) []byte {
	header := false
	var extra []byte
	for i := range s.Devices {
		for j := range s.Devices[i].Shares {
			sh := &s.Devices[i].Shares[j]
			mark := len(b)
			if !header {
				b = appendHeader(b, name, help, "gauge")
			}
			extra = appendLabel(extra[:0], "container", sh.Container)
			extra = appendLabel(extra, "namespace", sh.Namespace)
			extra = appendLabel(extra, "pod", sh.Pod)
			extra = appendLabel(extra, "pod_uid", sh.UID)
			b = appendSample(b, name, bases[i], extra)
			var ok bool
			if b, ok = value(sh, b); !ok {
				b = b[:mark]
				continue
			}
			header = true
			b = append(b, '\n')
		}
	}
	return b
}

func appendHeader(b []byte, name, help, typ string) []byte {
	b = append(b, "# HELP "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = append(b, help...)
	b = append(b, "\n# TYPE "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = append(b, typ...)
	return append(b, '\n')
}

// appendSample appends `name{labels extra} ` (extra starts with a comma).
func appendSample(b []byte, name string, labels, extra []byte) []byte {
	b = append(b, name...)
	b = append(b, '{')
	b = append(b, labels...)
	b = append(b, extra...)
	return append(b, "} "...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, "1\n"...)
	}
	return append(b, "0\n"...)
}

// deviceLabels renders a device's labels in dcgm-exporter's order, without
// the trailing comma.
func deviceLabels(b []byte, d *Device, host string) []byte {
	b = append(b, `gpu="`...)
	b = strconv.AppendInt(b, int64(d.Index), 10)
	b = append(b, '"')
	// A MIG instance is labelled as dcgm-exporter labels it: the parent
	// GPU's UUID, told apart by GPU_I_ID, so that dashboards, rules and
	// the aggregator see one device whichever exporter reported it.
	uuid := d.UUID
	if d.MIG != nil && d.MIG.ParentUUID != "" {
		uuid = d.MIG.ParentUUID
	}
	b = appendLabel(b, "UUID", uuid)
	b = appendLabel(b, "pci_bus_id", d.PCIBusID)
	if d.Minor >= 0 {
		b = appendLabel(b, "device", "nvidia"+strconv.Itoa(d.Minor))
	}
	b = appendLabel(b, "modelName", d.Name)
	if d.MIG != nil {
		b = appendLabel(b, "GPU_I_PROFILE", d.MIG.Profile)
		b = appendLabel(b, "GPU_I_ID", strconv.Itoa(d.MIG.GPUInstance))
	}
	b = appendLabel(b, "hostname", host)
	return b
}

// appendLabel appends `,name="value"` with the text format's escaping;
// empty values are left out (Prometheus treats them as absent anyway).
func appendLabel(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ',')
	b = append(b, name...)
	b = append(b, `="`...)
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '"':
			b = append(b, `\"`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
