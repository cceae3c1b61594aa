package collector

import (
	"strconv"
	"sync"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

func appendFloat(b []byte, v float64) []byte { return strconv.AppendFloat(b, v, 'f', -1, 64) }

// lazyBytes renders once, on first use.
type lazyBytes struct {
	once sync.Once
	b    []byte
}

// Exposition returns the snapshot's device series in the Prometheus text
// format (version 0.0.4), rendered once on first use and cached: serving a
// scrape costs a copy.
func (s *Snapshot) Exposition() []byte {
	s.exposition.once.Do(func() {
		// Sized from the sampler's previous rendering (plus an eighth for
		// a pod or field more): one allocation, not a growing slice's
		// dozen, and no copying.
		var b []byte
		if s.sizeHint != nil {
			if n := s.sizeHint.Load(); n > 0 {
				b = make([]byte, 0, n+n/8)
			}
		}
		s.exposition.b = s.render(b)
		if s.sizeHint != nil {
			s.sizeHint.Store(int64(len(s.exposition.b)))
		}
	})
	return s.exposition.b
}

func (s *Snapshot) render(b []byte) []byte {
	format := s.format
	if format == nil {
		format = defaultFormat
	}
	// The label set of each series, computed once per render: the
	// device's labels, then the owner's (dcgm-exporter's attributes, in
	// the order of their names: container, err_code on the XID family,
	// namespace, pod, vgpu), split where err_code goes.
	type series struct {
		device, container, rest []byte
		r                       *Reading
	}
	var all []series
	bases := make([][]byte, len(s.Devices))
	for i := range s.Devices {
		d := &s.Devices[i]
		base := deviceLabels(nil, d.Device, s.Node, format)
		bases[i] = base
		if d.Device.MIGInstances {
			// A GPU in MIG mode is reported through its instances.
			continue
		}
		if len(d.Owners) == 0 {
			all = append(all, series{device: base, r: &d.Reading})
			continue
		}
		for _, o := range d.Owners {
			ctr := appendLabel(nil, exposition.LabelContainer, o.Container)
			rest := appendLabel(nil, exposition.LabelNamespace, o.Namespace)
			rest = appendLabel(rest, exposition.LabelPod, o.Pod)
			rest = appendLabel(rest, exposition.LabelVGPU, o.Replica)
			all = append(all, series{device: base, container: ctr, rest: rest, r: &d.Reading})
		}
	}
	// The device fields, in the table's order; a family no device has is
	// left out.
	var extra []byte
	for f := range exposition.NumFields {
		fam := &format.families[f]
		header := false
		for _, se := range all {
			v, ok := se.r.Get(f)
			if !ok {
				continue
			}
			if !header {
				b = appendHeader(b, fam)
				header = true
			}
			extra = append(extra[:0], se.container...)
			if f == exposition.XIDErrors {
				extra = appendLabel(extra, exposition.LabelErrCode, strconv.FormatFloat(v, 'f', -1, 64))
			}
			extra = append(extra, se.rest...)
			b = appendSample(b, fam.Name, se.device, extra)
			b = appendFloat(b, fam.Unit.FromBase(v))
			b = append(b, '\n')
		}
	}
	b = s.renderShares(b, bases, exposition.PodGPUUtilization, func(sh *PodShare, b []byte) ([]byte, bool) {
		return appendFloat(b, sh.SMUtil), true
	})
	b = s.renderShares(b, bases, exposition.PodGPUMemoryUsed, func(sh *PodShare, b []byte) ([]byte, bool) {
		return strconv.AppendUint(b, sh.MemoryUsed, 10), sh.HasMemory
	})
	if len(s.Devices) > 0 {
		fam := exposition.DeviceAttributionMode.Family()
		b = appendHeader(b, &fam)
		process := appendLabel(nil, exposition.LabelMode, exposition.ModeProcess)
		device := appendLabel(nil, exposition.LabelMode, exposition.ModeDevice)
		for i := range s.Devices {
			active := s.Devices[i].Attribution
			b = appendSample(b, fam.Name, bases[i], process)
			b = appendBool(b, active == AttributionProcess)
			b = appendSample(b, fam.Name, bases[i], device)
			b = appendBool(b, active == AttributionDevice)
		}
	}
	fam := exposition.MIGActivitySupported.Family()
	header := false
	for i := range s.Devices {
		dev := s.Devices[i].Device
		if dev.MIG == nil {
			continue
		}
		if !header {
			b = appendHeader(b, &fam)
			header = true
		}
		b = appendSample(b, fam.Name, bases[i], nil)
		b = appendBool(b, dev.Profiling)
	}
	if len(s.Devices) > 0 {
		fam := exposition.ProfilingSupported.Family()
		b = appendHeader(b, &fam)
		for i := range s.Devices {
			b = appendSample(b, fam.Name, bases[i], nil)
			b = appendBool(b, s.Devices[i].Device.Profiling)
		}
	}
	fam = exposition.SampleTimestamp.Family()
	b = appendHeader(b, &fam)
	b = append(b, fam.Name...)
	b = append(b, ' ')
	b = appendFloat(b, float64(s.Time.UnixMilli())/1000)
	b = append(b, '\n')
	return b
}

// renderShares renders one per-pod family; value returns false to leave a
// pod's series out.
func (s *Snapshot) renderShares(b []byte, bases [][]byte, af exposition.AgentFamily, value func(*PodShare, []byte) ([]byte, bool)) []byte {
	fam := af.Family()
	header := false
	var extra []byte
	for i := range s.Devices {
		for j := range s.Devices[i].Shares {
			sh := &s.Devices[i].Shares[j]
			mark := len(b)
			if !header {
				b = appendHeader(b, &fam)
			}
			extra = appendLabel(extra[:0], exposition.LabelContainer, sh.Container)
			extra = appendLabel(extra, exposition.LabelNamespace, sh.Namespace)
			extra = appendLabel(extra, exposition.LabelPod, sh.Pod)
			extra = appendLabel(extra, exposition.LabelPodUID, sh.UID)
			b = appendSample(b, fam.Name, bases[i], extra)
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

func appendHeader(b []byte, fam *exposition.Family) []byte {
	b = append(b, "# HELP "...)
	b = append(b, fam.Name...)
	b = append(b, ' ')
	b = append(b, fam.Help...)
	b = append(b, "\n# TYPE "...)
	b = append(b, fam.Name...)
	b = append(b, ' ')
	b = append(b, fam.Type.String()...)
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
// the trailing comma: its identity, the node label, then the label fields
// the format writes, in the order of their names.
func deviceLabels(b []byte, d *Device, host string, format *Format) []byte {
	b = append(b, exposition.LabelGPU+`="`...)
	b = strconv.AppendInt(b, int64(d.Index), 10)
	b = append(b, '"')
	// A MIG instance is labelled as dcgm-exporter labels it: the parent
	// GPU's UUID, told apart by GPU_I_ID, so that dashboards, rules and
	// the aggregator see one device whichever exporter reported it.
	uuid := d.UUID
	if d.MIG != nil && d.MIG.ParentUUID != "" {
		uuid = d.MIG.ParentUUID
	}
	b = appendLabel(b, exposition.LabelUUID, uuid)
	b = appendLabel(b, exposition.LabelPCIBusID, d.PCIBusID)
	if d.Minor >= 0 {
		b = appendLabel(b, exposition.LabelDevice, "nvidia"+strconv.Itoa(d.Minor))
	}
	b = appendLabel(b, exposition.LabelModelName, d.Name)
	if d.MIG != nil {
		b = appendLabel(b, exposition.LabelGPUInstanceProfile, d.MIG.Profile)
		b = appendLabel(b, exposition.LabelGPUInstanceID, strconv.Itoa(d.MIG.GPUInstance))
	}
	if format.hostname != "" {
		b = appendLabel(b, format.hostname, host)
	}
	for l := range exposition.NumLabelFields {
		if format.labels.Has(l) {
			b = appendLabel(b, l.Name(), d.Labels[l])
		}
	}
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
