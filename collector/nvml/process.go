package nvml

import (
	"errors"
	"fmt"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
)

// processWindow is the span each round's per-process utilization covers.
// NVML averages a process's SM utilization over the driver's samples after
// the timestamp it is given, and the driver updates a lightly loaded process
// that shares the GPU only every few seconds (measured on an H200, driver
// 580: every 2.4-4.6 s next to a busy process, while a lone process is
// updated every second; a 5 s window once lost such a process for two
// rounds). Asking only for samples after the previous round's newest gives
// such a process 0 in most rounds and a multiple of its share in the
// others; asking for the window before the newest sample gives every
// process its average over the same recent span, steady from round to
// round, and the processes' values add up to the device's. The window is
// twice the longest update gap seen; the price is that a process that
// stops keeps its last share for up to the window.
const processWindow = 10 * time.Second

// processState is what the NVML backend keeps per GPU between rounds for
// reading its processes.
type processState struct {
	// newest is the newest utilization sample timestamp seen (the
	// driver's CPU time, µs); 0 before the first.
	newest uint64
	// unsupported: the driver has no process table or utilization for the
	// GPU (vGPU guests, some older boards); not asked again.
	unsupported bool
	// noMPS: the driver has no MPS client list; not asked again.
	noMPS bool
	// stamps is scratch space: the timestamp of the sample each list entry
	// took its utilization from.
	stamps []uint64
	// last is the last table read, carried on a GPU one pod holds between
	// reads (backend.SelectProcesses); haveLast: there is one.
	last     collector.Processes
	haveLast bool
}

var (
	errProcessesUnsupported = errors.New("the driver has no per-process utilization for this GPU (NVML NOT_SUPPORTED)")
	errMPSServerSamples     = errors.New("under MPS the driver reports the GPU's utilization for the MPS server, not its clients")
)

// valueNotAvailable is NVML_VALUE_NOT_AVAILABLE as an unsigned long long: a
// process whose memory the driver does not know.
const valueNotAvailable = ^uint64(0)

// readProcesses reads a GPU's running compute processes (MPS clients
// included, with their memory) and their SM utilization over the last
// processWindow. It returns an error only for a lost GPU; any other failure
// is reported in Processes.Err and leaves the GPU's other values alone.
func (d *device) readProcesses() (collector.Processes, error) {
	s := &d.procs
	if s.unsupported {
		return collector.Processes{Err: errProcessesUnsupported}, nil
	}
	h := d.handle
	running, ret := h.GetComputeRunningProcesses()
	if ret != nvml.SUCCESS {
		return s.failure("running compute processes", ret)
	}
	var clients []nvml.ProcessInfo
	if !s.noMPS {
		clients, ret = h.GetMPSComputeRunningProcesses()
		switch ret {
		case nvml.SUCCESS:
		case nvml.ERROR_NOT_SUPPORTED:
			s.noMPS = true
		default:
			return s.failure("MPS client processes", ret)
		}
	}
	samples, ret := h.GetProcessUtilization(s.since())
	switch ret {
	case nvml.SUCCESS:
	case nvml.ERROR_NOT_FOUND:
		samples = nil // no sample in the window: every process idle
	default:
		return s.failure("process utilization", ret)
	}

	list := make([]collector.ProcessUsage, 0, len(running)+len(clients)+len(samples))
	list = addRunning(list, running)
	list = addRunning(list, clients)
	s.stamps = s.stamps[:0]
	for range list {
		s.stamps = append(s.stamps, 0)
	}
	for _, smp := range samples {
		s.newest = max(s.newest, smp.TimeStamp)
		i := indexOfPID(list, smp.Pid)
		if i < 0 {
			list = append(list, collector.ProcessUsage{PID: smp.Pid})
			s.stamps = append(s.stamps, 0)
			i = len(list) - 1
		}
		// A PID may have several samples in the window: the newest wins.
		if smp.TimeStamp >= s.stamps[i] {
			s.stamps[i] = smp.TimeStamp
			list[i].SMUtil = float64(min(smp.SmUtil, 100))
		}
	}
	if len(clients) > 0 && serverHoldsSamples(list, clients) {
		return collector.Processes{Err: errMPSServerSamples}, nil
	}
	return collector.Processes{Read: true, List: list}, nil
}

// since is the timestamp to ask for samples after: the start of the window
// ending at the newest sample seen, or 0 (everything the driver holds)
// before the first.
func (s *processState) since() uint64 {
	const window = uint64(processWindow / time.Microsecond)
	if s.newest <= window {
		return 0
	}
	return s.newest - window
}

// addRunning adds the processes the driver lists as running, merging a PID
// listed twice (the compute and the MPS lists).
func addRunning(list []collector.ProcessUsage, infos []nvml.ProcessInfo) []collector.ProcessUsage {
	for _, p := range infos {
		i := indexOfPID(list, p.Pid)
		if i < 0 {
			list = append(list, collector.ProcessUsage{PID: p.Pid, Running: true})
			i = len(list) - 1
		}
		if !list[i].HasMemory && p.UsedGpuMemory != valueNotAvailable {
			list[i].MemoryUsed, list[i].HasMemory = p.UsedGpuMemory, true
		}
	}
	return list
}

func indexOfPID(list []collector.ProcessUsage, pid uint32) int {
	for i := range list {
		if list[i].PID == pid {
			return i
		}
	}
	return -1
}

// serverHoldsSamples reports whether, on a GPU running MPS clients, a
// utilization sample belongs to a process that is not one of the clients
// (the MPS server): the clients' shares cannot be told apart then.
func serverHoldsSamples(list []collector.ProcessUsage, clients []nvml.ProcessInfo) bool {
	for _, p := range list {
		if p.SMUtil == 0 || !p.Running {
			continue
		}
		client := false
		for _, c := range clients {
			if c.Pid == p.PID {
				client = true
				break
			}
		}
		if !client {
			return true
		}
	}
	return false
}

// failure turns a failed process call into the round's answer.
func (s *processState) failure(what string, ret nvml.Return) (collector.Processes, error) {
	switch ret {
	case nvml.ERROR_NOT_SUPPORTED:
		s.unsupported = true
		return collector.Processes{Err: errProcessesUnsupported}, nil
	case nvml.ERROR_GPU_IS_LOST:
		return collector.Processes{}, fmt.Errorf("%s: %w", what, errGPULost)
	}
	return collector.Processes{Err: fmt.Errorf("%s: %s", what, nvmlError(ret))}, nil
}
