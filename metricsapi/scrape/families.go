package scrape

import (
	"math"
	"slices"
	"strings"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// family is one of the series the parser reads; every other series in the
// exposition is skipped without being looked at.
type family int

const (
	famGPUUtil family = iota
	famGREngineActive
	famFBUsed
	famFBFree
	famFBReserved
	famPower
	famSampleTimestamp
	// famPodGPUUtil and famPodGPUMem are the agent's per-pod shares of a
	// device several pods share (time-slicing, MPS), from per-process
	// samples; keyed by namespace, pod and device, not container.
	famPodGPUUtil
	famPodGPUMem
	numFamilies
)

// familyNames are the exposition names of the families, dcgm-exporter's for
// the device fields.
var familyNames = [numFamilies]string{
	famGPUUtil:         "DCGM_FI_DEV_GPU_UTIL",
	famGREngineActive:  "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
	famFBUsed:          "DCGM_FI_DEV_FB_USED",
	famFBFree:          "DCGM_FI_DEV_FB_FREE",
	famFBReserved:      "DCGM_FI_DEV_FB_RESERVED",
	famPower:           "DCGM_FI_DEV_POWER_USAGE",
	famSampleTimestamp: "gpu_metrics_server_sample_timestamp_seconds",
	famPodGPUUtil:      "gpu_metrics_server_pod_gpu_utilization",
	famPodGPUMem:       "gpu_metrics_server_pod_gpu_memory_used_bytes",
}

// familyOf returns the family named b. The string conversion in the switch
// does not allocate.
func familyOf(b []byte) (family, bool) {
	switch string(b) {
	case "DCGM_FI_DEV_GPU_UTIL":
		return famGPUUtil, true
	case "DCGM_FI_PROF_GR_ENGINE_ACTIVE":
		return famGREngineActive, true
	case "DCGM_FI_DEV_FB_USED":
		return famFBUsed, true
	case "DCGM_FI_DEV_FB_FREE":
		return famFBFree, true
	case "DCGM_FI_DEV_FB_RESERVED":
		return famFBReserved, true
	case "DCGM_FI_DEV_POWER_USAGE":
		return famPower, true
	case "gpu_metrics_server_sample_timestamp_seconds":
		return famSampleTimestamp, true
	case "gpu_metrics_server_pod_gpu_utilization":
		return famPodGPUUtil, true
	case "gpu_metrics_server_pod_gpu_memory_used_bytes":
		return famPodGPUMem, true
	}
	return 0, false
}

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
	numLabels
)

func labelOf(b []byte) (label, bool) {
	switch string(b) {
	case "UUID":
		return lblUUID, true
	case "GPU_I_ID":
		return lblGPUInstance, true
	case "pod":
		return lblPod, true
	case "namespace":
		return lblNamespace, true
	case "container":
		return lblContainer, true
	case "exported_pod":
		return lblExportedPod, true
	case "exported_namespace":
		return lblExportedNamespace, true
	case "exported_container":
		return lblExportedContainer, true
	}
	return 0, false
}

// lineLabels holds the values of the labels read on one series line.
type lineLabels [numLabels]string

const bytesPerMiB = 1 << 20

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
	seen      uint16 // bit per family
	vals      [numFamilies]float64
	// exported records that the pod came from the exported_* labels;
	// lines counts the series lines that went into the partial.
	exported bool
	lines    int
}

// accumulator turns (family, labels, value) triples, in any family order,
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
}

func (a *accumulator) intern(b []byte) string {
	if s, ok := a.strs[string(b)]; ok {
		return s
	}
	s := string(b)
	a.strs[s] = s
	return s
}

// valid reports whether v is a plausible reading of family f: finite,
// non-negative, and at most 100 % for a utilization.
func valid(f family, v float64) bool {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return false
	}
	switch f {
	case famGPUUtil, famPodGPUUtil:
		return v <= 100
	case famGREngineActive:
		return v <= 1
	}
	return true
}

// add records one series line.
func (a *accumulator) add(f family, l *lineLabels, v float64) {
	a.stats.Series++
	if f == famSampleTimestamp {
		if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
			a.badTimestamp = true
			return
		}
		a.timestamp = max(a.timestamp, v)
		return
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
	if l[lblUUID] == "" || !valid(f, v) {
		a.stats.Invalid++
		return
	}
	if f == famPodGPUUtil || f == famPodGPUMem {
		sk := shareKey{namespace: ns, pod: pod, uuid: l[lblUUID]}
		sh := a.shares[sk]
		if f == famPodGPUUtil {
			sh.seen |= 1
			sh.utilization = v
		} else {
			sh.seen |= 2
			sh.memoryBytes = v
		}
		a.shares[sk] = sh
		return
	}
	k := seriesKey{namespace: ns, pod: pod, uuid: l[lblUUID], gpuInstance: l[lblGPUInstance]}
	i, ok := a.index[k]
	if !ok {
		i = len(a.parts)
		a.index[k] = i
		a.parts = append(a.parts, partial{key: k, container: ctr})
	}
	p := &a.parts[i]
	if ctr != p.container {
		p.container = a.joinContainers(p.container, ctr)
	}
	p.exported = p.exported || exported
	p.lines++
	p.seen |= 1 << f
	p.vals[f] = v
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
		has := func(f family) bool { return p.seen&(1<<f) != 0 }
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
		case has(famGPUUtil):
			s.Utilization = p.vals[famGPUUtil]
			s.Present |= store.FieldUtilization
		case has(famGREngineActive):
			s.Utilization = 100 * p.vals[famGREngineActive]
			s.Present |= store.FieldUtilization
		}
		if has(famFBUsed) {
			s.MemoryUsedBytes = p.vals[famFBUsed] * bytesPerMiB
			if shared && sh.seen&2 != 0 {
				s.MemoryUsedBytes = sh.memoryBytes
			}
			s.Present |= store.FieldMemoryUsed
			if has(famFBFree) {
				s.MemoryTotalBytes = (p.vals[famFBUsed] + p.vals[famFBFree] + p.vals[famFBReserved]) * bytesPerMiB
				s.Present |= store.FieldMemoryTotal
			}
		}
		if has(famPower) {
			s.PowerWatts = p.vals[famPower]
			s.Present |= store.FieldPower
		}
		if s.Present == 0 {
			continue
		}
		a.samples = append(a.samples, s)
	}
	a.stats.Samples = len(a.samples)
	return a.samples
}
