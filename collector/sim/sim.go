// Package sim is the agent's simulated backend (--backend=sim): GPUs, MIG
// instances and pod processes whose values tests and demos set through POST
// /sim/set (Handler) or Set, SetMIG and SetPod.
package sim

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// The simulated GPU: an H100 SXM.
const (
	model       = "NVIDIA H100 80GB HBM3"
	mib         = 1 << 20
	memoryTotal = 81559 * mib // bytes, as nvidia-smi reports an H100 80GB
	// memoryReserved is what the driver keeps for itself (NVML's memory
	// info v2): the used memory leaves it out.
	memoryReserved = 581 * mib
	idleWatts      = 70.0
	maxWatts       = 700.0
	firstPID       = 4000
	// nvlinkMiBps is DCGM's NVLink bandwidth of a GPU at full load (its
	// KiB/s / 1000), pcieTXBps and pcieRXBps the PCIe bytes per second.
	nvlinkMiBps = 300000.0
	pcieTXBps   = 6e9
	pcieRXBps   = 12e9
	// The driver version and NVML version the simulation reports.
	driverVersion = "580.95.05"
	nvmlVersion   = "13.580.95.05"
)

// migLayout is the layout of a simulated GPU in MIG mode: a valid mixed
// H100 80GB layout (7 slices), with NVIDIA's GPU instance ids and memory.
var migLayout = []struct {
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
// memory are driven through Apply (the agent's POST /sim/set in sim mode)
// and Set; power, temperature, clocks and energy follow utilization. A whole GPU can run processes of named pods (the process
// table carries the pod, so no /proc is needed); a GPU in MIG mode is
// split into MIG instances whose activity reads as NVML GPM's.
type Sim struct {
	mu sync.Mutex
	// devices holds the GPUs and, after each GPU in MIG mode, its
	// instances: the order of the readings.
	devices []*device
	gpus    []*device
	nextPID uint32
}

type device struct {
	info collector.Device
	// util and memUsed are the values set on the device itself; a GPU's
	// processes add theirs.
	util        float64
	memUsed     uint64
	memTotal    uint64
	memReserved uint64
	energyMJ    float64
	last        time.Time
	// The whole GPU's error state, set through Apply.
	xid                            uint64
	correctableRows, uncorrectable uint64
	remapFailure                   bool
	// lost: the GPU fell off the bus (NVML's ERROR_GPU_IS_LOST), set
	// through Apply; lostReported once Sample has reported it.
	lost, lostReported bool
	// Violation times accumulate with the activity, in ns.
	powerViolationNs, lowUtilViolationNs float64
	procs                                []*process
	// instances are the MIG instances of a GPU in MIG mode.
	instances []*device
	slices    int // of a MIG instance
}

type process struct {
	pid  uint32
	pod  collector.PodRef
	util float64
	mem  uint64
}

// New returns n simulated GPUs whose UUIDs derive from node and the
// index, so an agent restarted on the same node reports the same devices.
// The GPUs at the indexes in mig are in MIG mode, each split as 3g.40gb +
// 2g.20gb + 1g.10gb + 1g.10gb (GPU instances 2, 3, 9 and 10).
func New(node string, n int, mig []int) (*Sim, error) {
	for _, i := range mig {
		if i < 0 || i >= n {
			return nil, fmt.Errorf("MIG GPU %d out of range: %d simulated GPUs", i, n)
		}
	}
	s := &Sim{nextPID: firstPID}
	for i := 0; i < n; i++ {
		g := &device{memTotal: memoryTotal, memReserved: memoryReserved, info: collector.Device{
			Index:     i,
			UUID:      UUID(node, i),
			Name:      model,
			PCIBusID:  fmt.Sprintf("00000000:%02X:00.0", 0x18+i),
			Minor:     i,
			Profiling: !slices.Contains(mig, i),
			Labels:    labels(node, i),
		}}
		s.gpus = append(s.gpus, g)
		s.devices = append(s.devices, g)
		if !slices.Contains(mig, i) {
			continue
		}
		for _, l := range migLayout {
			inst := &device{memTotal: l.memMiB * mib, slices: l.slices, info: g.info}
			inst.info.UUID = MIGUUID(node, i, l.gi)
			inst.info.MIG = &collector.MIGInstance{ParentUUID: g.info.UUID, GPUInstance: l.gi, Profile: l.profile}
			inst.info.Profiling = true
			g.instances = append(g.instances, inst)
			s.devices = append(s.devices, inst)
		}
		g.info.MIGInstances = true
	}
	return s, nil
}

// labels are the label fields of simulated GPU index on node.
func labels(node string, index int) (l [exposition.NumLabelFields]string) {
	l[exposition.DriverVersionLabel] = driverVersion
	l[exposition.NVMLVersionLabel] = nvmlVersion
	l[exposition.BrandLabel] = "NVIDIA"
	h := sha256.Sum256([]byte(UUID(node, index)))
	l[exposition.SerialLabel] = fmt.Sprintf("1652%09d", binary.BigEndian.Uint32(h[:4])%1e9)
	l[exposition.VBIOSVersionLabel] = "96.00.99.00.01"
	l[exposition.InforomImageVersionLabel] = "G520.0200.00.05"
	l[exposition.OEMInforomVersionLabel] = "2.1"
	l[exposition.ECCInforomVersionLabel] = "7.0"
	l[exposition.PowerInforomVersionLabel] = ""
	return l
}

// UUID is the UUID the simulation gives GPU index on node.
func UUID(node string, index int) string {
	return "GPU-" + uuidHash(fmt.Sprintf("gpu-metrics-server/sim/%s/%d", node, index))
}

// MIGUUID is the UUID the simulation gives GPU instance gi of GPU index on
// node.
func MIGUUID(node string, index, gi int) string {
	return "MIG-" + uuidHash(fmt.Sprintf("gpu-metrics-server/sim/%s/%d/mig/%d", node, index, gi))
}

func uuidHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// Name implements collector.Backend.
func (s *Sim) Name() string { return "sim" }

// Close implements collector.Backend.
func (s *Sim) Close() error { return nil }

// Update changes simulated values; nil fields are left as they are.
type Update struct {
	// Utilization in percent, 0-100.
	Utilization *float64
	// MemoryUsedBytes, at most the device's memory.
	MemoryUsedBytes *uint64
	// XID is the GPU's last XID error (DCGM_FI_DEV_XID_ERRORS).
	XID *uint64
	// CorrectableRemappedRows and UncorrectableRemappedRows are the GPU's
	// remapped-row counters: they do not decrease.
	CorrectableRemappedRows, UncorrectableRemappedRows *uint64
	// RowRemapFailure says a row could not be remapped.
	RowRemapFailure *bool
	// Lost, when true, makes the GPU fall off the bus as NVML's
	// ERROR_GPU_IS_LOST says: the next sample reports it lost once (the
	// sampler counts it), and from then on it and its MIG instances are
	// read no more, until the simulation is made anew (the agent
	// restarts), as with NVML. False is refused: a lost GPU does not
	// come back.
	Lost *bool
}

// gpuLevel reports whether u changes a whole GPU's error state, which a
// MIG instance or a pod's process has not of its own.
func (u Update) gpuLevel() bool {
	return u.XID != nil || u.CorrectableRemappedRows != nil || u.UncorrectableRemappedRows != nil || u.RowRemapFailure != nil || u.Lost != nil
}

func (u Update) validate() error {
	if u.Utilization != nil && !(*u.Utilization >= 0 && *u.Utilization <= 100) {
		return fmt.Errorf("utilization %v out of range 0-100", *u.Utilization)
	}
	if u.Lost != nil && !*u.Lost {
		return errors.New("a lost GPU does not come back until the agent restarts: lost takes only true")
	}
	return nil
}

// AllGPUs, as a GPU index, means every GPU.
const AllGPUs = -1

// Request is one change of the simulation: an Update of a GPU (of each of
// its MIG instances when it is in MIG mode), of one MIG instance, or of one
// pod's process on a whole GPU.
type Request struct {
	// GPU is the GPU's index, or AllGPUs.
	GPU int
	// GPUInstance, when set, names a MIG instance of GPU (by GPU instance
	// id) to change instead of the GPU.
	GPUInstance *int
	// Pod, when set, names a pod whose process on GPU is changed instead of
	// the GPU: started if the pod has none there, ended when left with no
	// utilization and no memory. It needs a namespace and a name, or a UID
	// (matched against the pod index, when the agent has one).
	Pod    collector.PodRef
	Update Update
}

// Set applies u to GPU index, or to every GPU when index is AllGPUs.
func (s *Sim) Set(index int, u Update) error { return s.Apply(Request{GPU: index, Update: u}) }

// Apply makes the change r asks for; none when r is invalid or would take a
// device out of range.
func (s *Sim) Apply(r Request) error { return s.change(r, true) }

// Check returns the error Apply(r) would return now, changing nothing.
func (s *Sim) Check(r Request) error { return s.change(r, false) }

func (s *Sim) change(r Request, commit bool) error {
	if err := r.Update.validate(); err != nil {
		return err
	}
	if r.GPU < AllGPUs || r.GPU >= len(s.gpus) {
		return fmt.Errorf("gpu %d out of range: %d simulated GPUs", r.GPU, len(s.gpus))
	}
	pod := r.Pod != (collector.PodRef{})
	switch {
	case r.GPUInstance != nil && pod:
		return errors.New("a MIG instance and a pod do not go together: MIG instances are attributed whole")
	case (r.GPUInstance != nil || pod) && r.GPU == AllGPUs:
		return errors.New("a MIG instance or a pod needs one GPU index, not all GPUs")
	case (r.GPUInstance != nil || pod) && r.Update.gpuLevel():
		return errors.New("an XID, remapped rows and a loss belong to the whole GPU, not to a MIG instance or a pod")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var gpus []*device
	for i, g := range s.gpus {
		if r.GPU == AllGPUs || i == r.GPU {
			gpus = append(gpus, g)
		}
	}
	if err := setGPUs(gpus, r.Update, false); err != nil {
		return err
	}
	switch {
	case r.GPUInstance != nil:
		for _, inst := range s.gpus[r.GPU].instances {
			if inst.info.MIG.GPUInstance == *r.GPUInstance {
				return setDevices([]*device{inst}, r.Update, commit)
			}
		}
		return fmt.Errorf("gpu %d has no MIG GPU instance %d", r.GPU, *r.GPUInstance)
	case pod:
		return s.setPod(s.gpus[r.GPU], r.Pod, r.Update, commit)
	}
	// A GPU in MIG mode is changed through each of its instances.
	var targets []*device
	for _, g := range gpus {
		if len(g.instances) > 0 {
			targets = append(targets, g.instances...)
		} else {
			targets = append(targets, g)
		}
	}
	if err := setDevices(targets, r.Update, commit); err != nil {
		return err
	}
	return setGPUs(gpus, r.Update, commit)
}

// setGPUs sets the whole-GPU error state of u on every GPU, or on none when
// a counter would go back (or when commit is false).
func setGPUs(gpus []*device, u Update, commit bool) error {
	for _, g := range gpus {
		if u.CorrectableRemappedRows != nil && *u.CorrectableRemappedRows < g.correctableRows {
			return fmt.Errorf("correctable remapped rows %d below gpu %d's %d: a counter does not go back", *u.CorrectableRemappedRows, g.info.Index, g.correctableRows)
		}
		if u.UncorrectableRemappedRows != nil && *u.UncorrectableRemappedRows < g.uncorrectable {
			return fmt.Errorf("uncorrectable remapped rows %d below gpu %d's %d: a counter does not go back", *u.UncorrectableRemappedRows, g.info.Index, g.uncorrectable)
		}
	}
	if !commit {
		return nil
	}
	for _, g := range gpus {
		if u.XID != nil {
			g.xid = *u.XID
		}
		if u.CorrectableRemappedRows != nil {
			g.correctableRows = *u.CorrectableRemappedRows
		}
		if u.UncorrectableRemappedRows != nil {
			g.uncorrectable = *u.UncorrectableRemappedRows
		}
		if u.RowRemapFailure != nil {
			g.remapFailure = *u.RowRemapFailure
		}
		if u.Lost != nil {
			g.lost = true
		}
	}
	return nil
}

// setDevices sets u on every target, or on none when one would go out of
// range (or when commit is false).
func setDevices(targets []*device, u Update, commit bool) error {
	if u.MemoryUsedBytes != nil {
		for _, d := range targets {
			if used := *u.MemoryUsedBytes + d.procMemory(nil); used > d.memTotal-d.memReserved {
				return fmt.Errorf("memory used %d exceeds %s's %d bytes", used, d.info.UUID, d.memTotal)
			}
		}
	}
	if !commit {
		return nil
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

// setPod applies u to the simulated process of pod on whole GPU g (when
// commit is set), starting one if the pod has none there.
func (s *Sim) setPod(g *device, pod collector.PodRef, u Update, commit bool) error {
	if (pod.Namespace == "") != (pod.Name == "") {
		return errors.New("a pod needs a namespace and a name, or a UID")
	}
	if len(g.instances) > 0 {
		return fmt.Errorf("gpu %d is in MIG mode: its instances are attributed whole, set them with gpu_i_id", g.info.Index)
	}
	i := slices.IndexFunc(g.procs, func(p *process) bool { return p.pod == pod })
	mem, util := uint64(0), 0.0
	if i >= 0 {
		mem, util = g.procs[i].mem, g.procs[i].util
	}
	if u.MemoryUsedBytes != nil {
		mem = *u.MemoryUsedBytes
		var others *process
		if i >= 0 {
			others = g.procs[i]
		}
		if used := g.memUsed + g.procMemory(others) + mem; used > g.memTotal-g.memReserved {
			return fmt.Errorf("memory used %d exceeds %s's %d bytes", used, g.info.UUID, g.memTotal)
		}
	}
	if u.Utilization != nil {
		util = *u.Utilization
	}
	if !commit {
		return nil
	}
	switch {
	case util == 0 && mem == 0:
		if i >= 0 {
			g.procs = slices.Delete(g.procs, i, i+1)
		}
	case i >= 0:
		g.procs[i].mem, g.procs[i].util = mem, util
	default:
		g.procs = append(g.procs, &process{pid: s.nextPID, pod: pod, mem: mem, util: util})
		s.nextPID++
	}
	return nil
}

// procMemory is the memory of d's processes other than except.
func (d *device) procMemory(except *process) uint64 {
	var m uint64
	for _, p := range d.procs {
		if p != except {
			m += p.mem
		}
	}
	return m
}

// errLost is the error of a GPU made lost (Update.Lost), worded as NVML's.
var errLost = errors.New("GPU is lost (simulated ERROR_GPU_IS_LOST)")

// Sample implements collector.Backend. A GPU made lost is reported lost in
// the first sample after, as the NVML backend reports ERROR_GPU_IS_LOST,
// and then left out with its MIG instances.
func (s *Sim) Sample(now time.Time) ([]collector.DeviceReading, []collector.DeviceError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]collector.DeviceReading, 0, len(s.devices))
	var errs []collector.DeviceError
	for _, g := range s.gpus {
		if g.lost {
			if !g.lostReported {
				g.lostReported = true
				errs = append(errs, collector.DeviceError{Device: g.info.UUID, Err: errLost, Lost: true})
			}
			continue
		}
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
		setMemory(&r, used, g.memTotal, g.memReserved)
		out = append(out, collector.DeviceReading{Device: &g.info, Reading: r})
		for _, inst := range g.instances {
			var r collector.Reading
			setMemory(&r, inst.memUsed, inst.memTotal, 0)
			setProfiling(&r, inst.util, false)
			out = append(out, collector.DeviceReading{Device: &inst.info, Reading: r})
		}
	}
	return out, errs
}

// sampleGPU reads a whole GPU: its own values plus its processes'.
func (g *device) sampleGPU(now time.Time) collector.DeviceReading {
	util, used := g.util, g.memUsed
	procs := collector.Processes{Read: true, List: make([]collector.ProcessUsage, 0, len(g.procs))}
	for _, p := range g.procs {
		util += p.util
		used += p.mem
		procs.List = append(procs.List, collector.ProcessUsage{PID: p.pid, Pod: p.pod, SMUtil: p.util, MemoryUsed: p.mem, HasMemory: true, Running: true})
	}
	util = min(util, 100)
	r := g.physics(now, util)
	r.Set(exposition.GPUUtil, util)
	r.Set(exposition.MemCopyUtil, util/2)
	r.Set(exposition.EncUtil, 0)
	r.Set(exposition.DecUtil, 0)
	setMemory(&r, used, g.memTotal, g.memReserved)
	setProfiling(&r, util, true)
	return collector.DeviceReading{Device: &g.info, Reading: r, Processes: procs}
}

func setMemory(r *collector.Reading, used, total, reserved uint64) {
	r.Set(exposition.FBUsed, float64(used))
	r.Set(exposition.FBFree, float64(total-reserved-used))
	r.Set(exposition.FBReserved, float64(reserved))
}

// setProfiling sets the profiling fields of a device whose activity is
// util percent: the engine busy that share of the time, the tensor pipes
// and the memory interface a plausible part of it; a whole GPU also moves
// PCIe traffic (a MIG instance has none of its own in NVML).
func setProfiling(r *collector.Reading, util float64, pcie bool) {
	a := util / 100
	r.Set(exposition.GREngineActive, a)
	r.Set(exposition.SMActive, a*0.95)
	r.Set(exposition.SMOccupancy, a*0.5)
	r.Set(exposition.PipeTensorActive, a*0.6)
	r.Set(exposition.DRAMActive, a*0.4)
	r.Set(exposition.PipeFP64Active, a*0.01)
	r.Set(exposition.PipeFP32Active, a*0.2)
	r.Set(exposition.PipeFP16Active, a*0.05)
	if pcie {
		// Some traffic even when idle: the driver's own.
		r.Set(exposition.PCIeTXBytes, 1e6+a*pcieTXBps)
		r.Set(exposition.PCIeRXBytes, 2e6+a*pcieRXBps)
	}
}

// physics derives a GPU's power, temperatures, clocks, energy, NVLink
// traffic and violation times from its activity in percent, and reports
// its error state.
func (g *device) physics(now time.Time, activity float64) collector.Reading {
	power := idleWatts + activity/100*(maxWatts-idleWatts)
	if !g.last.IsZero() && now.After(g.last) {
		dt := now.Sub(g.last).Seconds()
		g.energyMJ += power * dt * 1000
		// Capped near full load; held at low clocks when idle.
		if activity > 90 {
			g.powerViolationNs += dt * 1e9 * (activity - 90) / 10
		}
		if activity == 0 {
			g.lowUtilViolationNs += dt * 1e9
		}
	}
	g.last = now
	smClock := 345.0
	if activity > 0 {
		smClock = 1980
	}
	var r collector.Reading
	r.Set(exposition.PowerUsage, power)
	r.Set(exposition.GPUTemp, 30+activity*0.4)
	r.Set(exposition.MemoryTemp, 34+activity*0.35)
	r.Set(exposition.SMClock, smClock)
	r.Set(exposition.MemClock, 2619)
	r.Set(exposition.TotalEnergy, math.Floor(g.energyMJ)) // whole mJ, as NVML's
	r.Set(exposition.PCIeReplayCounter, 0)
	r.Set(exposition.XIDErrors, float64(g.xid))
	r.Set(exposition.PowerViolation, math.Floor(g.powerViolationNs))
	r.Set(exposition.LowUtilViolation, math.Floor(g.lowUtilViolationNs))
	for _, f := range []exposition.Field{exposition.ThermalViolation, exposition.SyncBoostViolation, exposition.BoardLimitViolation,
		exposition.ReliabilityViolation, exposition.ECCSBEVolatileTotal, exposition.ECCDBEVolatileTotal, exposition.ECCSBEAggregateTotal,
		exposition.ECCDBEAggregateTotal, exposition.RetiredPagesSBE, exposition.RetiredPagesDBE, exposition.RetiredPagesPending,
		exposition.NVLinkCRCFlitErrors, exposition.NVLinkCRCDataErrors, exposition.NVLinkReplayErrors, exposition.NVLinkRecoveryErrors} {
		r.Set(f, 0)
	}
	r.Set(exposition.NVLinkBandwidthTotal, math.Floor(activity/100*nvlinkMiBps))
	r.Set(exposition.CorrectableRemappedRows, float64(g.correctableRows))
	r.Set(exposition.UncorrectableRemappedRows, float64(g.uncorrectable))
	remap := 0.0
	if g.remapFailure {
		remap = 1
	}
	r.Set(exposition.RowRemapFailure, remap)
	return r
}
