package collector

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"time"
)

// SimModel is the simulated GPU model: an H100 SXM.
const (
	simModel       = "NVIDIA H100 80GB HBM3"
	simMemoryTotal = 81559 * 1024 * 1024 // bytes, as nvidia-smi reports an H100 80GB
	simIdleWatts   = 70.0
	simMaxWatts    = 700.0
)

// Sim is a deterministic simulated backend. Its devices' utilization and
// memory are driven through Set (the agent's POST /sim/set in sim mode);
// power, temperature, clocks and energy follow utilization.
type Sim struct {
	mu      sync.Mutex
	devices []*simDevice
}

type simDevice struct {
	info     Device
	util     float64
	memUsed  uint64
	energyMJ float64
	last     time.Time
}

// NewSim returns n simulated GPUs whose UUIDs derive from node and the
// index, so an agent restarted on the same node reports the same devices.
func NewSim(node string, n int) *Sim {
	s := &Sim{}
	for i := 0; i < n; i++ {
		s.devices = append(s.devices, &simDevice{info: Device{
			Index:    i,
			UUID:     SimUUID(node, i),
			Name:     simModel,
			PCIBusID: fmt.Sprintf("00000000:%02X:00.0", 0x18+i),
			Minor:    i,
		}})
	}
	return s
}

// SimUUID is the UUID the simulation gives GPU index on node.
func SimUUID(node string, index int) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("gpu-metrics-server/sim/%s/%d", node, index)))
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// Name implements Backend.
func (s *Sim) Name() string { return "sim" }

// Close implements Backend.
func (s *Sim) Close() error { return nil }

// Len returns the number of simulated GPUs.
func (s *Sim) Len() int { return len(s.devices) }

// SimUpdate changes simulated values; nil fields are left as they are.
type SimUpdate struct {
	// Utilization in percent, 0-100.
	Utilization *float64
	// MemoryUsedBytes, at most the device's memory.
	MemoryUsedBytes *uint64
}

// Set applies u to GPU index, or to every GPU when index is -1.
func (s *Sim) Set(index int, u SimUpdate) error {
	if index < -1 || index >= len(s.devices) {
		return fmt.Errorf("gpu %d out of range: %d simulated GPUs", index, len(s.devices))
	}
	if u.Utilization != nil && (*u.Utilization < 0 || *u.Utilization > 100) {
		return fmt.Errorf("utilization %v out of range 0-100", *u.Utilization)
	}
	if u.MemoryUsedBytes != nil && *u.MemoryUsedBytes > simMemoryTotal {
		return fmt.Errorf("memory used %d exceeds the device's %d bytes", *u.MemoryUsedBytes, uint64(simMemoryTotal))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, d := range s.devices {
		if index != -1 && i != index {
			continue
		}
		if u.Utilization != nil {
			d.util = *u.Utilization
		}
		if u.MemoryUsedBytes != nil {
			d.memUsed = *u.MemoryUsedBytes
		}
	}
	return nil
}

// Sample implements Backend.
func (s *Sim) Sample(now time.Time) ([]DeviceReading, []DeviceError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DeviceReading, 0, len(s.devices))
	for _, d := range s.devices {
		power := simIdleWatts + d.util/100*(simMaxWatts-simIdleWatts)
		if !d.last.IsZero() && now.After(d.last) {
			d.energyMJ += power * now.Sub(d.last).Seconds() * 1000
		}
		d.last = now
		smClock := 345.0
		if d.util > 0 {
			smClock = 1980
		}
		out = append(out, DeviceReading{Device: &d.info, Reading: Reading{
			Valid:             FieldGPUUtil | FieldMemCopyUtil | FieldEncUtil | FieldDecUtil | FieldMemory | FieldPower | FieldTemp | FieldSMClock | FieldMemClock | FieldEnergy,
			GPUUtil:           d.util,
			MemCopyUtil:       d.util / 2,
			FBUsed:            d.memUsed,
			FBFree:            simMemoryTotal - d.memUsed,
			FBTotal:           simMemoryTotal,
			PowerWatts:        power,
			TempCelsius:       30 + d.util*0.4,
			SMClockMHz:        smClock,
			MemClockMHz:       2619,
			EnergyMillijoules: uint64(d.energyMJ),
		}})
	}
	return out, nil
}
