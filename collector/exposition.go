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
}

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
	for i := range s.Devices {
		d := &s.Devices[i]
		base := deviceLabels(nil, d.Device, s.Node)
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
				b = append(b, "# HELP "...)
				b = append(b, f.name...)
				b = append(b, ' ')
				b = append(b, f.help...)
				b = append(b, "\n# TYPE "...)
				b = append(b, f.name...)
				b = append(b, ' ')
				b = append(b, f.typ...)
				b = append(b, '\n')
				header = true
			}
			b = append(b, f.name...)
			b = append(b, '{')
			b = append(b, se.labels...)
			b = append(b, "} "...)
			b = f.value(se.r, b)
			b = append(b, '\n')
		}
	}
	b = append(b, "# HELP "+SampleTimestampMetric+" Unix time of the sampling round whose values this scrape serves.\n# TYPE "+SampleTimestampMetric+" gauge\n"+SampleTimestampMetric+" "...)
	b = appendFloat(b, float64(s.Time.UnixMilli())/1000)
	b = append(b, '\n')
	return b
}

// deviceLabels renders a device's labels in dcgm-exporter's order, without
// the trailing comma.
func deviceLabels(b []byte, d *Device, host string) []byte {
	b = append(b, `gpu="`...)
	b = strconv.AppendInt(b, int64(d.Index), 10)
	b = append(b, '"')
	b = appendLabel(b, "UUID", d.UUID)
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
