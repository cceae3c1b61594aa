package scrape

import (
	"math"
	"slices"
	"strings"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// The parser reads a family by its role (exposition.RoleOf): what it reads
// from it. Every other series in the exposition is skipped without being
// looked at.
type role = exposition.Role

// roleLimits are, per role, the largest plausible value in the family's
// unit (exposition.Unit.Max) and the family's unit, which converts the
// value to base units (MiB to bytes).
var roleLimits = func() (out [exposition.NumRoles]struct {
	max  float64
	unit exposition.Unit
}) {
	for r := range exposition.NumRoles {
		fam := r.Family()
		out[r].max, out[r].unit = fam.Unit.Max(), fam.Unit
	}
	return out
}()

// label is one of the labels the parser reads on a device series.
type label int

const (
	lblUUID label = iota
	lblGPUInstance
	lblPod
	lblNamespace
	lblContainer
	lblExportedPod
	lblExportedNamespace
	lblExportedContainer
	lblHostname
	lblHostnameLower
	numLabels
)

func labelOf(b []byte) (label, bool) {
	switch string(b) {
	case exposition.LabelUUID:
		return lblUUID, true
	case exposition.LabelGPUInstanceID:
		return lblGPUInstance, true
	case exposition.LabelPod:
		return lblPod, true
	case exposition.LabelNamespace:
		return lblNamespace, true
	case exposition.LabelContainer:
		return lblContainer, true
	case exposition.LabelExportedPod:
		return lblExportedPod, true
	case exposition.LabelExportedNamespace:
		return lblExportedNamespace, true
	case exposition.LabelExportedContainer:
		return lblExportedContainer, true
	case exposition.LabelHostname:
		return lblHostname, true
	case exposition.LabelHostnameLower:
		return lblHostnameLower, true
	}
	return 0, false
}

// lineLabels holds the values of the labels read on one series line.
type lineLabels [numLabels]string

// seriesKey identifies one pod's view of one device: the containers of a
// pod holding the device (or time-slicing replicas of it) give one sample.
type seriesKey struct {
	namespace, pod, uuid, gpuInstance string
}

// shareKey identifies one pod's share of one device.
type shareKey struct {
	namespace, pod, uuid string
}

// share is a pod's own utilization and memory on a shared device.
type share struct {
	seen        uint8 // bit 0: utilization, bit 1: memory
	utilization float64
	memoryBytes float64
}

// partial gathers the families seen for one seriesKey.
type partial struct {
	key seriesKey
	// container is the container label of the lines, or, when they name
	// several, the union of their names, sorted and comma separated (see
	// joinContainers).
	container string
	seen      uint16 // bit per role
	// vals are in base units (bytes, not MiB).
	vals [exposition.NumRoles]float64
	// exported records that the pod came from the exported_* labels;
	// lines counts the series lines that went into the partial.
	exported bool
	lines    int
}

// accumulator turns (role, labels, value) triples, in any family order,
// into samples. Both parsers feed it, so they agree on every rule below.
type accumulator struct {
	index   map[seriesKey]int
	parts   []partial
	samples []store.Sample
	// shares are the per-pod shares of shared devices; they replace the
	// device's utilization and memory used for that pod in finish.
	shares map[shareKey]share

	timestamp    float64 // max over the snapshot-timestamp series, 0 if none
	badTimestamp bool
	// relabelled records that some line carried exported_pod: the body
	// went through Prometheus-style relabelling, so plain pod labels
	// anywhere in it name the exporter, not a workload.
	relabelled bool
	stats      ParseStats

	// strs interns label values and device names within one parse.
	strs map[string]string

	// nodes gathers the whole-device readings of every device line,
	// held or idle, for the node samples (see nodes.go).
	nodes nodeAccumulator
}

func (a *accumulator) reset() {
	if a.index == nil {
		a.index = make(map[seriesKey]int)
		a.strs = make(map[string]string)
		a.shares = make(map[shareKey]share)
	}
	clear(a.index)
	clear(a.shares)
	clear(a.strs)
	clear(a.parts) // drop string references
	a.parts = a.parts[:0]
	clear(a.samples)
	a.samples = a.samples[:0]
	a.timestamp = 0
	a.badTimestamp = false
	a.relabelled = false
	a.stats = ParseStats{}
	a.nodes.reset()
}

func (a *accumulator) intern(b []byte) string {
	if s, ok := a.strs[string(b)]; ok {
		return s
	}
	s := string(b)
	a.strs[s] = s
	return s
}

// valid reports whether v is a plausible reading of role r: finite,
// non-negative, and at most 100 % for a percentage, 1 for a ratio.
func valid(r role, v float64) bool {
	return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0 && v <= roleLimits[r].max
}

// seriesSlots remembers where the lines of one label set went in the
// accumulator, so that the next line with the same labels finds its
// partials without the map lookups: the index plus one in parts and in
// nodes.parts, 0 while unknown. Valid within one parse.
type seriesSlots struct {
	part, node int32
}

// add records one series line. slots, if not nil, are the slots of the
// line's label set in this parse, filled in as they become known.
func (a *accumulator) add(r role, l *lineLabels, v float64, slots *seriesSlots) {
	a.stats.Series++
	if r == exposition.RoleSampleTime {
		if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
			a.badTimestamp = true
			return
		}
		a.timestamp = max(a.timestamp, v)
		return
	}
	if r != exposition.RolePodUtilization && r != exposition.RolePodMemoryUsed && l[lblUUID] != "" && valid(r, v) {
		a.nodes.add(r, l, roleLimits[r].unit.ToBase(v), slots)
	}
	// Prometheus-style relabelling renames the workload's labels to
	// exported_*; when present they name the pod, and the plain labels
	// name the exporter.
	ns, pod, ctr := l[lblNamespace], l[lblPod], l[lblContainer]
	exported := l[lblExportedPod] != ""
	if exported {
		ns, pod, ctr = l[lblExportedNamespace], l[lblExportedPod], l[lblExportedContainer]
		a.relabelled = true
	}
	if pod == "" || ns == "" {
		a.stats.Unattributed++
		return
	}
	if l[lblUUID] == "" || !valid(r, v) {
		a.stats.Invalid++
		return
	}
	v = roleLimits[r].unit.ToBase(v)
	if r == exposition.RolePodUtilization || r == exposition.RolePodMemoryUsed {
		sk := shareKey{namespace: ns, pod: pod, uuid: l[lblUUID]}
		sh := a.shares[sk]
		if r == exposition.RolePodUtilization {
			sh.seen |= 1
			sh.utilization = v
		} else {
			sh.seen |= 2
			sh.memoryBytes = v
		}
		a.shares[sk] = sh
		return
	}
	var i int
	if slots != nil && slots.part > 0 {
		i = int(slots.part - 1)
	} else {
		k := seriesKey{namespace: ns, pod: pod, uuid: l[lblUUID], gpuInstance: l[lblGPUInstance]}
		var ok bool
		if i, ok = a.index[k]; !ok {
			i = len(a.parts)
			a.index[k] = i
			a.parts = append(a.parts, partial{key: k, container: ctr})
		}
		if slots != nil {
			slots.part = int32(i + 1)
		}
	}
	p := &a.parts[i]
	if ctr != p.container {
		p.container = a.joinContainers(p.container, ctr)
	}
	p.exported = p.exported || exported
	p.lines++
	p.seen |= 1 << r
	p.vals[r] = v
}

// joinContainers returns the names of the containers in x and y (each one
// name or a comma-separated list), sorted, without duplicates or empty names,
// joined by commas. The result depends only on the set of names, not on the
// order the lines came in, so that both parsers agree.
func (a *accumulator) joinContainers(x, y string) string {
	names := append(strings.Split(x, ","), strings.Split(y, ",")...)
	slices.Sort(names)
	names = slices.Compact(names)
	if names[0] == "" {
		names = names[1:]
	}
	return a.intern([]byte(strings.Join(names, ",")))
}

// finish builds the samples. at is the receipt time, used as the samples'
// time when the exposition carries no snapshot timestamp (dcgm-exporter).
// The agent's exposition, which carries it, gives its samples the agent's
// precedence.
func (a *accumulator) finish(at time.Time) []store.Sample {
	t, prec := at, store.PrecedenceExporter
	if a.timestamp > 0 {
		sec, frac := math.Modf(a.timestamp)
		t, prec = time.Unix(int64(sec), int64(frac*1e9)), store.PrecedenceAgent
		a.stats.SnapshotTime = true
	}
	var dev []byte
	for i := range a.parts {
		p := &a.parts[i]
		if a.relabelled && !p.exported {
			// A device no workload holds, labelled with the exporter's
			// own pod by the relabelling.
			a.stats.Unattributed += p.lines
			continue
		}
		has := func(r role) bool { return p.seen&(1<<r) != 0 }
		s := store.Sample{
			Namespace:  p.key.namespace,
			Pod:        p.key.pod,
			Container:  p.container,
			Device:     p.key.uuid,
			Time:       t,
			Precedence: prec,
		}
		if p.key.gpuInstance != "" {
			dev = append(append(append(dev[:0], p.key.uuid...), '/'), p.key.gpuInstance...)
			s.Device = a.intern(dev)
		}
		// Utilization: the pod's own share of a shared device where the
		// agent attributes processes, else the device's own, else (MIG
		// instances, which have none) the graphics engine activity of
		// dcgm-exporter's profiling fields.
		sh, shared := a.shares[shareKey{namespace: p.key.namespace, pod: p.key.pod, uuid: p.key.uuid}]
		switch {
		case shared && sh.seen&1 != 0:
			s.Utilization = sh.utilization
			s.Present |= store.FieldUtilization
		case has(exposition.RoleUtilization):
			s.Utilization = p.vals[exposition.RoleUtilization]
			s.Present |= store.FieldUtilization
		case has(exposition.RoleEngineActive):
			s.Utilization = 100 * p.vals[exposition.RoleEngineActive]
			s.Present |= store.FieldUtilization
		}
		if has(exposition.RoleMemoryUsed) {
			s.MemoryUsedBytes = p.vals[exposition.RoleMemoryUsed]
			if shared && sh.seen&2 != 0 {
				s.MemoryUsedBytes = sh.memoryBytes
			}
			s.Present |= store.FieldMemoryUsed
			if has(exposition.RoleMemoryFree) {
				s.MemoryTotalBytes = p.vals[exposition.RoleMemoryUsed] + p.vals[exposition.RoleMemoryFree] + p.vals[exposition.RoleMemoryReserved]
				s.Present |= store.FieldMemoryTotal
			}
		}
		if has(exposition.RolePower) {
			s.PowerWatts = p.vals[exposition.RolePower]
			s.Present |= store.FieldPower
		}
		if s.Present == 0 {
			continue
		}
		a.samples = append(a.samples, s)
	}
	a.stats.Samples = len(a.samples)
	a.nodes.finish(t, prec)
	a.stats.NodeSamples = len(a.nodes.samples)
	return a.samples
}
