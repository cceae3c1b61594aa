package collector

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// SimModel is the simulated GPU model: an H100 SXM.
const (
	simModel       = "NVIDIA H100 80GB HBM3"
	simMemoryTotal = 81559 * 1024 * 1024 // bytes, as nvidia-smi reports an H100 80GB
	simIdleWatts   = 70.0
	simMaxWatts    = 700.0
	simFirstPID    = 4000
)

// simMIGLayout is the layout of a simulated GPU in MIG mode: a valid mixed
// H100 80GB layout (7 slices), with NVIDIA's GPU instance ids and memory.
var simMIGLayout = []struct {
	profile string
	gi      int
	slices  int
	memMiB  uint64
}{
	{"3g.40gb", 2, 3, 40192},
	{"2g.20gb", 3, 2, 19968},
	{"1g.10gb", 9, 1, 9856},
	{"1g.10gb", 10, 1, 9856},
}

// Sim is a deterministic simulated backend. Its devices' utilization and
// memory are driven through Set, SetMIG and SetPod (the agent's POST
// /sim/set in sim mode); power, temperature, clocks and energy follow
// utilization. A whole GPU can run processes of named pods (the process
// table carries the pod, so no /proc is needed); a GPU in MIG mode is
// split into MIG instances whose activity reads as NVML GPM's.
type Sim struct {
	mu sync.Mutex
	// devices holds the GPUs and, after each GPU in MIG mode, its
	// instances: the order of the readings.
	devices []*simDevice
	gpus    []*simDevice
	nextPID uint32
}

type simDevice struct {
	info Device
	// util and memUsed are the values set on the device itself; a GPU's
	// processes add theirs.
	util     float64
	memUsed  uint64
	memTotal uint64
	energyMJ float64
	last     time.Time
	procs    []*simProcess
	// instances are the MIG instances of a GPU in MIG mode.
	instances []*simDevice
	slices    int // of a MIG instance
}

type simProcess struct {
	pid  uint32
	pod  PodRef
	util float64
	mem  uint64
}

// NewSim returns n simulated GPUs whose UUIDs derive from node and the
// index, so an agent restarted on the same node reports the same devices.
// The GPUs at the indexes in mig are in MIG mode, each split as 3g.40gb +
// 2g.20gb + 1g.10gb + 1g.10gb (GPU instances 2, 3, 9 and 10).
func NewSim(node string, n int, mig []int) (*Sim, error) {
	for _, i := range mig {
		if i < 0 || i >= n {
			return nil, fmt.Errorf("MIG GPU %d out of range: %d simulated GPUs", i, n)
		}
	}
	s := &Sim{nextPID: simFirstPID}
	for i := 0; i < n; i++ {
		g := &simDevice{memTotal: simMemoryTotal, info: Device{
			Index:    i,
			UUID:     SimUUID(node, i),
			Name:     simModel,
			PCIBusID: fmt.Sprintf("00000000:%02X:00.0", 0x18+i),
			Minor:    i,
		}}
		s.gpus = append(s.gpus, g)
		s.devices = append(s.devices, g)
		if !slices.Contains(mig, i) {
			continue
		}
		for _, l := range simMIGLayout {
			inst := &simDevice{memTotal: l.memMiB * mib, slices: l.slices, info: g.info}
			inst.info.UUID = SimMIGUUID(node, i, l.gi)
			inst.info.MIG = &MIGInstance{ParentUUID: g.info.UUID, GPUInstance: l.gi, Profile: l.profile, Activity: true}
			g.instances = append(g.instances, inst)
			s.devices = append(s.devices, inst)
		}
	}
	return s, nil
}

// SimUUID is the UUID the simulation gives GPU index on node.
func SimUUID(node string, index int) string {
	return "GPU-" + simHash(fmt.Sprintf("gpu-metrics-server/sim/%s/%d", node, index))
}

// SimMIGUUID is the UUID the simulation gives GPU instance gi of GPU index
// on node.
func SimMIGUUID(node string, index, gi int) string {
	return "MIG-" + simHash(fmt.Sprintf("gpu-metrics-server/sim/%s/%d/mig/%d", node, index, gi))
}

func simHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// Name implements Backend.
func (s *Sim) Name() string { return "sim" }

// Close implements Backend.
func (s *Sim) Close() error { return nil }

// Len returns the number of simulated GPUs.
func (s *Sim) Len() int { return len(s.gpus) }

// SimUpdate changes simulated values; nil fields are left as they are.
type SimUpdate struct {
	// Utilization in percent, 0-100.
	Utilization *float64
	// MemoryUsedBytes, at most the device's memory.
	MemoryUsedBytes *uint64
}

func (u SimUpdate) validate() error {
	if u.Utilization != nil && !(*u.Utilization >= 0 && *u.Utilization <= 100) {
		return fmt.Errorf("utilization %v out of range 0-100", *u.Utilization)
	}
	return nil
}

// Set applies u to GPU index, or to every GPU when index is -1. On a GPU
// in MIG mode it applies to each of its MIG instances.
func (s *Sim) Set(index int, u SimUpdate) error {
	if index < -1 || index >= len(s.gpus) {
		return fmt.Errorf("gpu %d out of range: %d simulated GPUs", index, len(s.gpus))
	}
	var targets []*simDevice
	for i, g := range s.gpus {
		if index != -1 && i != index {
			continue
		}
		if len(g.instances) > 0 {
			targets = append(targets, g.instances...)
		} else {
			targets = append(targets, g)
		}
	}
	return s.apply(targets, u)
}

// SetMIG applies u to GPU instance gi of GPU index (in MIG mode).
func (s *Sim) SetMIG(index, gi int, u SimUpdate) error {
	if index < 0 || index >= len(s.gpus) {
		return fmt.Errorf("gpu %d out of range: %d simulated GPUs", index, len(s.gpus))
	}
	for _, inst := range s.gpus[index].instances {
		if inst.info.MIG.GPUInstance == gi {
			return s.apply([]*simDevice{inst}, u)
		}
	}
	return fmt.Errorf("gpu %d has no MIG GPU instance %d", index, gi)
}

// apply sets u on every target, or on none when one would go out of range.
func (s *Sim) apply(targets []*simDevice, u SimUpdate) error {
	if err := u.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.MemoryUsedBytes != nil {
		for _, d := range targets {
			if used := *u.MemoryUsedBytes + d.procMemory(nil); used > d.memTotal {
				return fmt.Errorf("memory used %d exceeds %s's %d bytes", used, d.info.UUID, d.memTotal)
			}
		}
	}
	for _, d := range targets {
		if u.Utilization != nil {
			d.util = *u.Utilization
		}
		if u.MemoryUsedBytes != nil {
			d.memUsed = *u.MemoryUsedBytes
		}
	}
	return nil
}

// SetPod applies u to the simulated process of pod on whole GPU index,
// starting one if the pod has none there. pod needs a namespace and name,
// or a UID (matched against the pod index, when the agent has one). A
// process left with no utilization and no memory ends.
func (s *Sim) SetPod(index int, pod PodRef, u SimUpdate) error {
	if index < 0 || index >= len(s.gpus) {
		return fmt.Errorf("gpu %d out of range: %d simulated GPUs", index, len(s.gpus))
	}
	if (pod.Namespace == "") != (pod.Name == "") || pod == (PodRef{}) {
		return errors.New("a pod needs a namespace and a name, or a UID")
	}
	if err := u.validate(); err != nil {
		return err
	}
	g := s.gpus[index]
	if len(g.instances) > 0 {
		return fmt.Errorf("gpu %d is in MIG mode: its instances are attributed whole, set them with gpu_i_id", index)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(g.procs, func(p *simProcess) bool { return p.pod == pod })
	var p *simProcess
	if i >= 0 {
		p = g.procs[i]
	} else {
		p = &simProcess{pod: pod}
	}
	if u.MemoryUsedBytes != nil {
		if used := g.memUsed + g.procMemory(p) + *u.MemoryUsedBytes; used > g.memTotal {
			return fmt.Errorf("memory used %d exceeds %s's %d bytes", used, g.info.UUID, g.memTotal)
		}
		p.mem = *u.MemoryUsedBytes
	}
	if u.Utilization != nil {
		p.util = *u.Utilization
	}
	switch {
	case p.util == 0 && p.mem == 0:
		if i >= 0 {
			g.procs = slices.Delete(g.procs, i, i+1)
		}
	case i < 0:
		p.pid = s.nextPID
		s.nextPID++
		g.procs = append(g.procs, p)
	}
	return nil
}

// procMemory is the memory of d's processes other than except.
func (d *simDevice) procMemory(except *simProcess) uint64 {
	var m uint64
	for _, p := range d.procs {
		if p != except {
			m += p.mem
		}
	}
	return m
}

// Sample implements Backend.
func (s *Sim) Sample(now time.Time) ([]DeviceReading, []DeviceError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DeviceReading, 0, len(s.devices))
	for _, g := range s.gpus {
		if len(g.instances) == 0 {
			out = append(out, g.sampleGPU(now))
			continue
		}
		// A GPU in MIG mode: utilization exists only per instance, as
		// NVML's; the GPU's power follows its instances' activity.
		var activity float64
		var used uint64
		for _, inst := range g.instances {
			activity += inst.util * float64(inst.slices) / 7
			used += inst.memUsed
		}
		r := g.physics(now, activity)
		r.Valid = FieldMemory | FieldPower | FieldTemp | FieldSMClock | FieldMemClock | FieldEnergy
		r.FBUsed, r.FBFree, r.FBTotal = used, g.memTotal-used, g.memTotal
		out = append(out, DeviceReading{Device: &g.info, Reading: r})
		for _, inst := range g.instances {
			out = append(out, DeviceReading{Device: &inst.info, Reading: Reading{
				Valid:          FieldMemory | FieldGREngineActive | FieldSMActive,
				FBUsed:         inst.memUsed,
				FBFree:         inst.memTotal - inst.memUsed,
				FBTotal:        inst.memTotal,
				GREngineActive: inst.util / 100,
				SMActive:       inst.util / 100,
			}})
		}
	}
	return out, nil
}

// sampleGPU reads a whole GPU: its own values plus its processes'.
func (g *simDevice) sampleGPU(now time.Time) DeviceReading {
	util, used := g.util, g.memUsed
	procs := Processes{Read: true, List: make([]ProcessUsage, 0, len(g.procs))}
	for _, p := range g.procs {
		util += p.util
		used += p.mem
		procs.List = append(procs.List, ProcessUsage{PID: p.pid, Pod: p.pod, SMUtil: p.util, MemoryUsed: p.mem, HasMemory: true, Running: true})
	}
	util = min(util, 100)
	r := g.physics(now, util)
	r.Valid = FieldGPUUtil | FieldMemCopyUtil | FieldEncUtil | FieldDecUtil | FieldMemory | FieldPower | FieldTemp | FieldSMClock | FieldMemClock | FieldEnergy
	r.GPUUtil, r.MemCopyUtil = util, util/2
	r.FBUsed, r.FBFree, r.FBTotal = used, g.memTotal-used, g.memTotal
	return DeviceReading{Device: &g.info, Reading: r, Processes: procs}
}

// physics derives power, temperature, clocks and energy from a GPU's
// activity in percent.
func (g *simDevice) physics(now time.Time, activity float64) Reading {
	power := simIdleWatts + activity/100*(simMaxWatts-simIdleWatts)
	if !g.last.IsZero() && now.After(g.last) {
		g.energyMJ += power * now.Sub(g.last).Seconds() * 1000
	}
	g.last = now
	smClock := 345.0
	if activity > 0 {
		smClock = 1980
	}
	return Reading{
		PowerWatts:        power,
		TempCelsius:       30 + activity*0.4,
		SMClockMHz:        smClock,
		MemClockMHz:       2619,
		EnergyMillijoules: uint64(g.energyMJ),
	}
}
