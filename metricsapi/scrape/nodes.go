package scrape

import (
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// nodeAccumulator turns every device line of an exposition, whichever pod
// holds the device or none, into node samples: one per physical GPU
// (UUID) of each node (Hostname label), with the whole device's readings.
// The per-pod share families are not read: a node's device is the whole
// device.
//
// A GPU in MIG mode is one node device too (a node's GPU count is its
// GPUs): its memory used and total are the sums over its instances (their
// memory partitions the GPU's), its power is the GPU's (which every
// instance line repeats), and it has no utilization, as NVML has none for
// a GPU in MIG mode: the instances' engine activity is not a utilization
// of the GPU, and a node with such a GPU serves no utilization.
type nodeAccumulator struct {
	index   map[nodeKey]int
	parts   []nodePartial
	gpus    map[gpuKey]int
	samples []store.Sample
	// scratch of finish, reused from one parse to the next.
	byGPU []gpu
	keys  []gpuKey
}

// nodeKey is one device (a GPU, or a MIG instance) of one node.
type nodeKey struct {
	host, uuid, gpuInstance string
}

// gpuKey is one physical GPU of one node.
type gpuKey struct {
	host, uuid string
}

type nodePartial struct {
	key  nodeKey
	seen uint16 // bit per role
	vals [exposition.NumRoles]float64
}

func (n *nodeAccumulator) reset() {
	if n.index == nil {
		n.index = make(map[nodeKey]int)
		n.gpus = make(map[gpuKey]int)
	}
	clear(n.index)
	clear(n.gpus)
	clear(n.parts)
	n.parts = n.parts[:0]
	clear(n.samples)
	n.samples = n.samples[:0]
}

// add records one valid device line, its value in base units. The lines
// of a device held by several pods repeat its whole-device values. slots,
// if not nil, are the slots of the line's label set (see seriesSlots).
func (n *nodeAccumulator) add(r role, l *lineLabels, v float64, slots *seriesSlots) {
	var i int
	if slots != nil && slots.node > 0 {
		i = int(slots.node - 1)
	} else {
		host := l[lblHostname]
		if host == "" {
			host = l[lblHostnameLower]
		}
		k := nodeKey{host: host, uuid: l[lblUUID], gpuInstance: l[lblGPUInstance]}
		var ok bool
		if i, ok = n.index[k]; !ok {
			i = len(n.parts)
			n.index[k] = i
			n.parts = append(n.parts, nodePartial{key: k})
		}
		if slots != nil {
			slots.node = int32(i + 1)
		}
	}
	p := &n.parts[i]
	p.seen |= 1 << r
	p.vals[r] = v
}

// gpu gathers the partials of one physical GPU.
type gpu struct {
	whole     *nodePartial // the GPU's own lines, nil if none
	instances int
	// Over the instances: how many had each memory reading, and the
	// sums; the largest power seen (every instance repeats the GPU's).
	memUsed, memTotal int
	sumUsed, sumTotal float64
	instPower         float64
	hasInstPower      bool
}

// finish builds the node samples, stamped t at precedence prec, in the
// order the GPUs first appeared.
func (n *nodeAccumulator) finish(t time.Time, prec uint8) {
	gpus, keys := n.byGPU[:0], n.keys[:0]
	defer func() {
		clear(gpus)
		clear(keys)
		n.byGPU, n.keys = gpus[:0], keys[:0]
	}()
	for i := range n.parts {
		p := &n.parts[i]
		gk := gpuKey{p.key.host, p.key.uuid}
		j, ok := n.gpus[gk]
		if !ok {
			j = len(gpus)
			n.gpus[gk] = j
			gpus = append(gpus, gpu{})
			keys = append(keys, gk)
		}
		g := &gpus[j]
		has := func(r role) bool { return p.seen&(1<<r) != 0 }
		if p.key.gpuInstance == "" {
			g.whole = p
			continue
		}
		g.instances++
		if has(exposition.RoleMemoryUsed) {
			g.memUsed++
			g.sumUsed += p.vals[exposition.RoleMemoryUsed]
			if has(exposition.RoleMemoryFree) {
				g.memTotal++
				g.sumTotal += p.vals[exposition.RoleMemoryUsed] + p.vals[exposition.RoleMemoryFree] + p.vals[exposition.RoleMemoryReserved]
			}
		}
		if has(exposition.RolePower) {
			g.instPower = max(g.instPower, p.vals[exposition.RolePower])
			g.hasInstPower = true
		}
	}
	for j := range gpus {
		g := &gpus[j]
		s := store.Sample{Node: keys[j].host, Device: keys[j].uuid, Time: t, Precedence: prec}
		if w := g.whole; w != nil {
			has := func(r role) bool { return w.seen&(1<<r) != 0 }
			switch {
			case has(exposition.RoleUtilization):
				s.Utilization = w.vals[exposition.RoleUtilization]
				s.Present |= store.FieldUtilization
			case has(exposition.RoleEngineActive) && g.instances == 0:
				s.Utilization = 100 * w.vals[exposition.RoleEngineActive]
				s.Present |= store.FieldUtilization
			}
			if g.instances == 0 && has(exposition.RoleMemoryUsed) {
				s.MemoryUsedBytes = w.vals[exposition.RoleMemoryUsed]
				s.Present |= store.FieldMemoryUsed
				if has(exposition.RoleMemoryFree) {
					s.MemoryTotalBytes = w.vals[exposition.RoleMemoryUsed] + w.vals[exposition.RoleMemoryFree] + w.vals[exposition.RoleMemoryReserved]
					s.Present |= store.FieldMemoryTotal
				}
			}
			if has(exposition.RolePower) {
				s.PowerWatts = w.vals[exposition.RolePower]
				s.Present |= store.FieldPower
			}
		}
		if g.instances > 0 {
			if g.memUsed == g.instances {
				s.MemoryUsedBytes = g.sumUsed
				s.Present |= store.FieldMemoryUsed
				if g.memTotal == g.instances {
					s.MemoryTotalBytes = g.sumTotal
					s.Present |= store.FieldMemoryTotal
				}
			}
			if !s.Present.Has(store.FieldPower) && g.hasInstPower {
				s.PowerWatts = g.instPower
				s.Present |= store.FieldPower
			}
		}
		if s.Present == 0 {
			continue
		}
		n.samples = append(n.samples, s)
	}
}
