//go:build gpu

// Checks of the NVML backend against a real driver: go test -tags gpu
// -run Real ./collector/ on a machine with an NVIDIA GPU. They load the GPU
// with PyTorch when python3 can import it.

package collector

import (
	"context"
	"errors"
	"math"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/cgroup"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/podinfo"
)

const torchLoad = `
import sys, time, torch
a = torch.randn(8192, 8192, device="cuda")
print("load running", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    (a @ a).sum().item()
`

// startLoad runs a PyTorch matmul loop on GPU 0 for d, or returns nil when
// PyTorch with CUDA is not there.
func startLoad(t *testing.T, d time.Duration) *exec.Cmd {
	t.Helper()
	if err := exec.Command("python3", "-c", "import torch; assert torch.cuda.is_available()").Run(); err != nil {
		t.Logf("no GPU load: python3 with CUDA PyTorch unavailable (%v)", err)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	cmd := exec.CommandContext(ctx, "python3", "-c", torchLoad, strconv.Itoa(int(d.Seconds())))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = append(os.Environ(), "CUDA_VISIBLE_DEVICES=0")
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); cancel() })
	return cmd
}

func TestRealNVMLProcesses(t *testing.T) {
	lib := nvml.New()
	b, err := NewNVML(lib, NVMLOptions{Processes: true})
	if errors.Is(err, ErrNVMLUnavailable) {
		t.Skip("no NVIDIA driver")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	readings, errs := b.Sample(time.Now())
	if len(errs) != 0 || len(readings) == 0 {
		t.Fatalf("readings %d errors %v", len(readings), errs)
	}
	gpu0 := readings[0].Device
	for _, r := range readings {
		t.Logf("device %d %s %q MIG=%+v fields=%b processes read=%v err=%v n=%d", r.Device.Index, r.Device.UUID, r.Device.Name,
			r.Device.MIG, r.Reading.Valid, r.Processes.Read, r.Processes.Err, len(r.Processes.List))
		if r.Device.MIG == nil && !r.Processes.Read && r.Processes.Err == nil {
			t.Errorf("device %s: process table neither read nor failed", r.Device.UUID)
		}
	}
	if h, ret := lib.DeviceGetHandleByIndex(0); ret == nvml.SUCCESS {
		s, ret := lib.GpmQueryDeviceSupport(h)
		t.Logf("GPM support on GPU 0: %+v %v", s, ret)
	}

	// Attribute GPU 0 as if two pods shared it: the load is a host process.
	owners := fakeLookup{gpu0.UUID: {{Namespace: "ns", Pod: "a", Container: "c"}, {Namespace: "ns", Pod: "b", Container: "c"}}}
	s := NewSampler(b, SamplerOptions{
		Interval:    time.Second,
		Owners:      func() podmap.Lookup { return owners },
		Attribution: &Attribution{Resolver: cgroup.NewResolver("/proc"), Pods: podinfo.Static{"ns/a": "uid-a", "ns/b": "uid-b"}},
	})
	load := startLoad(t, 40*time.Second)
	if load == nil {
		snap := s.SampleOnce(time.Now())
		t.Logf("idle GPU 0: mode %d shares %+v processes %+v", snap.Devices[0].Attribution, snap.Devices[0].Shares, snap.Devices[0].Processes)
		return
	}
	pid := uint32(load.Process.Pid)
	deadline := time.Now().Add(60 * time.Second)
	seenUtil := false
	for time.Now().Before(deadline) && !seenUtil {
		time.Sleep(time.Second)
		snap := s.SampleOnce(time.Now())
		ds := snap.Devices[0]
		for _, p := range ds.Processes.List {
			if p.PID != pid {
				continue
			}
			t.Logf("load PID %d: %+v; GPU util %v; mode %d; shares %+v; round %v", pid, p, ds.Reading.GPUUtil, ds.Attribution, ds.Shares, snap.Duration)
			if p.Running && p.HasMemory && p.MemoryUsed > 0 && p.SMUtil > 0 {
				seenUtil = true
			}
			if ds.Attribution != AttributionProcess || len(ds.Shares) != 2 {
				t.Errorf("mode %d shares %+v: want process mode, the host load counted for neither pod", ds.Attribution, ds.Shares)
			}
		}
	}
	if !seenUtil {
		t.Fatalf("load PID %d never seen running with memory and SM utilization", pid)
	}
	uid, err := cgroup.NewResolver("/proc").PodUID(pid)
	t.Logf("load's pod UID %q err %v", uid, err)
}

// TestRealGPMMetrics exercises the GPM request the MIG path uses, on the
// whole GPU (GpmSampleGet instead of GpmMigSampleGet: MIG mode is not
// changed here).
func TestRealGPMMetrics(t *testing.T) {
	lib := nvml.New()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		t.Skipf("NVML init: %v", ret)
	}
	defer lib.Shutdown()
	h, ret := lib.DeviceGetHandleByIndex(0)
	if ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	if s, ret := lib.GpmQueryDeviceSupport(h); ret != nvml.SUCCESS || s.IsSupportedDevice == 0 {
		t.Skipf("no GPM: %+v %v", s, ret)
	}
	load := startLoad(t, 20*time.Second)
	g, err := newGPMInstance(lib, h, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.free(lib)
	m := new(nvml.GpmMetricsGetType)
	if load != nil {
		time.Sleep(8 * time.Second) // past PyTorch's start-up
	}
	var last gpmValues
	for round := 0; round < 3; round++ {
		if ret := lib.GpmSampleGet(h, g.cur); ret != nvml.SUCCESS {
			t.Fatalf("GPM sample: %v", ret)
		}
		if round > 0 {
			m.NumMetrics = 2
			m.Sample1, m.Sample2 = g.prev, g.cur
			m.Metrics[0] = nvml.GpmMetric{MetricId: uint32(nvml.GPM_METRIC_GRAPHICS_UTIL)}
			m.Metrics[1] = nvml.GpmMetric{MetricId: uint32(nvml.GPM_METRIC_SM_UTIL)}
			if ret := lib.GpmMetricsGet(m); ret != nvml.SUCCESS {
				t.Fatalf("GPM metrics: %v", ret)
			}
			gr, grOK := gpmRatio(&m.Metrics[0])
			sm, smOK := gpmRatio(&m.Metrics[1])
			last = gpmValues{grEngine: gr, sm: sm}
			t.Logf("round %d: graphics %v (%v, raw %v ret %d) SM %v (%v, raw %v ret %d)", round, gr, grOK, m.Metrics[0].Value, m.Metrics[0].NvmlReturn,
				sm, smOK, m.Metrics[1].Value, m.Metrics[1].NvmlReturn)
			if !grOK || !smOK {
				t.Errorf("round %d: metrics not valid", round)
			}
		}
		g.prev, g.cur = g.cur, g.prev
		time.Sleep(time.Second)
	}
	if load != nil && last.grEngine < 0.5 {
		t.Errorf("graphics engine active %v under a matmul loop, want > 0.5", last.grEngine)
	}
}

const torchDuty = `
import sys, time, torch
a = torch.randn(4096, 4096, device="cuda")
duty, end = float(sys.argv[1]), time.time() + float(sys.argv[2])
print("duty load running", duty, flush=True)
while time.time() < end:
    t = time.time()
    while time.time() - t < 0.1 * duty:
        (a @ a).sum().item()
    time.sleep(0.1 * (1 - duty))
`

// TestRealSharedGPUShares: a full process and one at 20 % duty time-sliced
// on GPU 0, as the processes of pods inf/a and inf/b. Every round gives the
// light pod a share (it never reads idle while it runs), and the shares add
// up to the device's utilization. (On an H200 the light one gets ~11 %: its
// busy phases are themselves time-sliced with the full one.)
func TestRealSharedGPUShares(t *testing.T) {
	if err := exec.Command("python3", "-c", "import torch; assert torch.cuda.is_available()").Run(); err != nil {
		t.Skip("no PyTorch")
	}
	lib := nvml.New()
	b, err := NewNVML(lib, NVMLOptions{Processes: true})
	if err != nil {
		t.Skip(err)
	}
	defer b.Close()
	resolver := fakeResolver{}
	for _, p := range []struct{ duty, uid string }{{"1.0", uidA}, {"0.2", uidB}} {
		cmd := exec.Command("python3", "-c", torchDuty, p.duty, "60")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		resolver[uint32(cmd.Process.Pid)] = p.uid
	}
	readings, _ := b.Sample(time.Now())
	owners := fakeLookup{readings[0].Device.UUID: sharedOwners(readings[0].Device.UUID)[readings[0].Device.UUID]}
	s := NewSampler(b, SamplerOptions{
		Interval:    time.Second,
		Owners:      func() podmap.Lookup { return owners },
		Attribution: &Attribution{Resolver: resolver, Pods: testPods},
	})
	time.Sleep(10 * time.Second)
	var sumA, sumB, sumDev float64
	const rounds = 12
	for round := 0; round < rounds; round++ {
		time.Sleep(time.Second)
		ds := s.SampleOnce(time.Now()).Devices[0]
		if ds.Attribution != AttributionProcess || len(ds.Shares) != 2 {
			t.Fatalf("round %d: mode %d shares %+v", round, ds.Attribution, ds.Shares)
		}
		a, b := ds.Shares[0].SMUtil, ds.Shares[1].SMUtil
		t.Logf("round %d: device %v%%, inf/a %v%%, inf/b %v%%", round, ds.Reading.GPUUtil, a, b)
		if b == 0 {
			t.Errorf("round %d: the light pod reads idle", round)
		}
		sumA, sumB, sumDev = sumA+a, sumB+b, sumDev+ds.Reading.GPUUtil
	}
	meanA, meanB, meanDev := sumA/rounds, sumB/rounds, sumDev/rounds
	t.Logf("means: device %.1f%%, inf/a %.1f%%, inf/b %.1f%%", meanDev, meanA, meanB)
	if math.Abs(meanA+meanB-meanDev) > 5 || meanA <= meanB {
		t.Errorf("shares %.1f + %.1f do not add up to the device's %.1f", meanA, meanB, meanDev)
	}
}
