//go:build gpu

// Checks of the NVML backend against a real driver: go test -tags gpu
// -run Real ./collector/nvml/ on a machine with an NVIDIA GPU. A test whose
// prerequisite is missing (no libnvidia-ml, no GPU, no GPM, no python3 with
// CUDA PyTorch for the ones that load the GPU) is skipped, and says why.

package nvml

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/counters"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/internal/collectortest"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/cgroup"
)

// realBackend opens NVML with processes on, skipping the test when there is
// no driver library or no GPU.
func realBackend(t *testing.T) *backend {
	t.Helper()
	b, err := newBackend(nvml.New(), Options{Processes: true})
	if errors.Is(err, ErrUnavailable) {
		t.Skip("no NVIDIA driver library (libnvidia-ml.so.1)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	if len(b.devices) == 0 {
		t.Skip("NVML sees no GPU")
	}
	return b
}

// needTorch skips the test when python3 cannot run CUDA PyTorch.
func needTorch(t *testing.T) {
	t.Helper()
	if err := exec.Command("python3", "-c", "import torch; assert torch.cuda.is_available()").Run(); err != nil {
		t.Skipf("no GPU load: python3 with CUDA PyTorch unavailable (%v)", err)
	}
}

const torchLoad = `
import sys, time, torch
a = torch.randn(8192, 8192, device="cuda")
(a @ a).sum().item()
print("load running", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    (a @ a).sum().item()
`

const torchDuty = `
import sys, time, torch
a = torch.randn(4096, 4096, device="cuda")
(a @ a).sum().item()
duty, end = float(sys.argv[1]), time.time() + float(sys.argv[2])
print("load running", duty, flush=True)
while time.time() < end:
    t = time.time()
    while time.time() - t < 0.1 * duty:
        (a @ a).sum().item()
    time.sleep(0.1 * (1 - duty))
`

// startPython runs a PyTorch script on GPU 0 with args and returns once it
// prints "load running" (past CUDA's start-up); it is killed when the test
// ends.
func startPython(t *testing.T, script string, args ...string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "python3", append([]string{"-c", script}, args...)...)
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), "CUDA_VISIBLE_DEVICES=0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	var running, exited atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "load running") {
				running.Store(true)
			}
		}
		_, _ = io.Copy(io.Discard, out)
		exited.Store(true)
	})
	t.Cleanup(func() { cancel(); wg.Wait(); _ = cmd.Wait() })
	testutil.WaitFor(t, testutil.DefaultTimeout, "the PyTorch load to start", func(context.Context) (bool, string, error) {
		if running.Load() {
			return true, "", nil
		}
		if exited.Load() {
			return false, "", errors.New("the PyTorch load exited before it ran")
		}
		return false, "starting", nil
	})
	return cmd
}

// TestRealNVMLProcessTables: every whole GPU's process table is read or
// fails with a reason, and NVML answers the GPM support query.
func TestRealNVMLProcessTables(t *testing.T) {
	b := realBackend(t)
	readings, errs := b.Sample(time.Now())
	if len(errs) != 0 || len(readings) == 0 {
		t.Fatalf("readings %d errors %v", len(readings), errs)
	}
	for _, r := range readings {
		t.Logf("device %d %s %q MIG=%+v fields=%v processes read=%v err=%v n=%d", r.Device.Index, r.Device.UUID, r.Device.Name,
			r.Device.MIG, r.Reading.Fields(), r.Processes.Read, r.Processes.Err, len(r.Processes.List))
		if r.Device.MIG == nil && !r.Processes.Read && r.Processes.Err == nil {
			t.Errorf("device %s: process table neither read nor failed", r.Device.UUID)
		}
	}
	if _, ret := b.lib.GpmQueryDeviceSupport(b.devices[0].handle); ret != nvml.SUCCESS {
		t.Errorf("GPM support query on GPU 0: %v", nvmlError(ret))
	}
}

// TestRealNVMLProcessAttribution attributes GPU 0 as if two pods shared it
// while a PyTorch load, which belongs to neither, runs on it: the load is
// seen with its memory and SM utilization, and counted for neither pod.
func TestRealNVMLProcessAttribution(t *testing.T) {
	b := realBackend(t)
	needTorch(t)
	readings, _ := b.Sample(time.Now())
	gpu0 := readings[0].Device
	owners := collectortest.Owners{gpu0.UUID: {{Namespace: "ns", Pod: "a", Container: "c"}, {Namespace: "ns", Pod: "b", Container: "c"}}}
	s := collector.NewSampler(b, collector.SamplerOptions{
		Interval:    time.Second,
		Owners:      func() podmap.Lookup { return owners },
		Attribution: &collector.Attribution{Resolver: cgroup.NewResolver("/proc"), Pods: collectortest.Pods{"ns/a": "uid-a", "ns/b": "uid-b"}},
	})
	load := startPython(t, torchLoad, "60")
	pid := uint32(load.Process.Pid)
	testutil.WaitFor(t, testutil.DefaultTimeout, "the load seen running with memory and SM utilization",
		func(context.Context) (bool, string, error) {
			ds := s.SampleOnce(time.Now()).Devices[0]
			if ds.Attribution != collector.AttributionProcess || len(ds.Shares) != 2 {
				return false, "", fmt.Errorf("mode %d shares %+v: want process mode with a share per pod", ds.Attribution, ds.Shares)
			}
			for _, sh := range ds.Shares {
				if sh.SMUtil != 0 || sh.MemoryUsed != 0 {
					return false, "", fmt.Errorf("share %+v: the load belongs to neither pod", sh)
				}
			}
			for _, p := range ds.Processes.List {
				if p.PID == pid {
					return p.Running && p.HasMemory && p.MemoryUsed > 0 && p.SMUtil > 0, fmt.Sprintf("load %+v", p), nil
				}
			}
			return false, "load not in the process table", nil
		})
	if _, err := cgroup.NewResolver("/proc").PodUID(pid); err != nil {
		t.Errorf("the load's cgroup: %v", err)
	}
}

// TestRealGPMMetrics reads the whole GPU's profiling fields through the
// backend's GPM sampler under a PyTorch bf16 matmul load: the graphics
// engine, SMs, tensor pipes and memory interface are busy.
func TestRealGPMMetrics(t *testing.T) {
	b := realBackend(t)
	if !b.devices[0].info.Profiling {
		t.Skip("no GPM on GPU 0 (Hopper or newer, not in MIG mode)")
	}
	needTorch(t)
	startPython(t, torchLoad, "30")
	var r collector.Reading
	for round := 0; round < 3; round++ {
		// One interval of GPM: the load runs through it.
		time.Sleep(time.Second)
		readings, errs := b.Sample(time.Now())
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		r = readings[0].Reading
	}
	for f := range exposition.NumFields {
		if exposition.ProfilingFields().Has(f) {
			v, ok := r.Get(f)
			t.Logf("%s = %v (%v)", f.Name(), v, ok)
		}
	}
	gr, _ := r.Get(exposition.GREngineActive)
	sm, _ := r.Get(exposition.SMActive)
	tensor, _ := r.Get(exposition.PipeTensorActive)
	if gr < 0.5 || sm <= 0 || tensor <= 0 {
		t.Errorf("graphics engine active %v, SM active %v, tensor active %v under a matmul loop, want > 0.5, > 0 and > 0", gr, sm, tensor)
	}
}

// TestRealAllFields logs, for GPU 0, every field the driver answers and
// every one it leaves absent, over two rounds (the rates need two).
func TestRealAllFields(t *testing.T) {
	b := realBackend(t)
	b.Sample(time.Now())
	time.Sleep(time.Second)
	readings, errs := b.Sample(time.Now())
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	r := readings[0].Reading
	for f := range exposition.NumFields {
		if v, ok := r.Get(f); ok {
			t.Logf("%-45s %v", f.Name(), v)
		} else {
			t.Logf("%-45s absent", f.Name())
		}
	}
	if !r.Fields().Contains(exposition.FieldsOf(exposition.GPUUtil, exposition.FBUsed, exposition.PowerUsage)) {
		t.Errorf("basic fields missing: %v", r.Fields())
	}
}

// TestRealSharedGPUShares: a full process and one at 20 % duty time-sliced
// on GPU 0, as the processes of pods inf/a and inf/b. Every round gives the
// light pod a share (it never reads idle while it runs), and the shares add
// up to the device's utilization. (On an H200 the light one gets ~11 %: its
// busy phases are themselves time-sliced with the full one.)
func TestRealSharedGPUShares(t *testing.T) {
	b := realBackend(t)
	needTorch(t)
	resolver := collectortest.Resolver{}
	var lightPID uint32
	for _, p := range []struct{ duty, uid string }{{"1.0", uidA}, {"0.2", uidB}} {
		cmd := startPython(t, torchDuty, p.duty, "90")
		resolver[uint32(cmd.Process.Pid)] = p.uid
		lightPID = uint32(cmd.Process.Pid)
	}
	readings, _ := b.Sample(time.Now())
	owners := sharedOwners(readings[0].Device.UUID)
	opts := collector.SamplerOptions{
		Interval:    time.Second,
		Owners:      func() podmap.Lookup { return owners },
		Attribution: &collector.Attribution{Resolver: resolver, Pods: testPods},
	}
	// Until both loads show in the driver's samples.
	warm := collector.NewSampler(b, opts)
	testutil.WaitFor(t, testutil.DefaultTimeout, "both pods to have a share", func(context.Context) (bool, string, error) {
		ds := warm.SampleOnce(time.Now()).Devices[0]
		if len(ds.Shares) != 2 {
			return false, fmt.Sprintf("mode %d", ds.Attribution), nil
		}
		return ds.Shares[0].SMUtil > 0 && ds.Shares[1].SMUtil > 0, fmt.Sprintf("shares %+v", ds.Shares), nil
	})
	// Then twelve rounds of the sampling loop, one a second.
	const rounds = 12
	var mu sync.Mutex
	var got []collector.DeviceSample
	// The driver's own samples of the light process at each round (what
	// its share was made from), logged beside the round.
	var raw []string
	opts.OnSample = func(s *collector.Snapshot) {
		samples, ret := b.devices[0].handle.GetProcessUtilization(0)
		var light []string
		for _, smp := range samples {
			if smp.Pid == lightPID {
				light = append(light, fmt.Sprintf("%d:%d", smp.TimeStamp/1000, smp.SmUtil))
			}
		}
		mu.Lock()
		defer mu.Unlock()
		got = append(got, s.Devices[0])
		raw = append(raw, fmt.Sprintf("%v (ret %d, %d samples in all)", light, ret, len(samples)))
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { collector.NewSampler(b, opts).Run(ctx) })
	testutil.Eventually(t, "12 sampling rounds", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= rounds
	})
	cancel()
	wg.Wait()

	var sumA, sumB, sumDev float64
	for round, ds := range got[:rounds] {
		if ds.Attribution != collector.AttributionProcess || len(ds.Shares) != 2 {
			t.Fatalf("round %d: mode %d shares %+v", round, ds.Attribution, ds.Shares)
		}
		dev, _ := ds.Reading.Get(exposition.GPUUtil)
		a, b := ds.Shares[0].SMUtil, ds.Shares[1].SMUtil
		t.Logf("round %d: device %v%%, inf/a %v%%, inf/b %v%%; driver's samples of inf/b (ms:SM%%) %s", round, dev, a, b, raw[round])
		if b == 0 {
			t.Errorf("round %d: the light pod reads idle", round)
		}
		sumA, sumB, sumDev = sumA+a, sumB+b, sumDev+dev
	}
	meanA, meanB, meanDev := sumA/rounds, sumB/rounds, sumDev/rounds
	t.Logf("means: device %.1f%%, inf/a %.1f%%, inf/b %.1f%%", meanDev, meanA, meanB)
	if math.Abs(meanA+meanB-meanDev) > 5 || meanA <= meanB {
		t.Errorf("shares %.1f + %.1f do not add up to the device's %.1f", meanA, meanB, meanDev)
	}
}

// BenchmarkRealRound is one sampling round of every GPU on the machine
// through the real driver: the built-in field list (what the agent reads by
// default) in the rounds between two reads of the slow fields ("fast") and
// in one that reads them ("slow"), the same with the processes read for
// attribution, and every field the backend knows. ns/GPU is a round's cost
// per GPU. go test -tags gpu -run '^$' -bench Real ./collector/nvml/
func BenchmarkRealRound(b *testing.B) {
	def := Options{Fields: counters.Default().Fields, Labels: exposition.DefaultLabels(), SlowInterval: time.Hour}
	every, procs, procsEvery := def, def, def
	every.SlowInterval = 0
	procs.Processes = true
	procsEvery.Processes, procsEvery.SlowInterval = true, 0
	for _, c := range []struct {
		name string
		opts Options
	}{
		{"default-fields-fast", def},
		{"default-fields-slow", every},
		{"default-fields-processes-fast", procs},
		{"default-fields-processes-slow", procsEvery},
		{"all-fields-slow", Options{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			be, err := newBackend(nvml.New(), c.opts)
			if errors.Is(err, ErrUnavailable) {
				b.Skip("no NVIDIA driver library (libnvidia-ml.so.1)")
			}
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				if err := be.Close(); err != nil {
					b.Error(err)
				}
			}()
			if len(be.devices) == 0 {
				b.Skip("NVML sees no GPU")
			}
			b.ReportAllocs()
			failed := 0
			for b.Loop() {
				if _, errs := be.Sample(time.Now()); len(errs) > 0 {
					if failed == 0 {
						b.Logf("first failed round: %v", errs)
					}
					failed++
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(be.devices)), "ns/GPU")
			b.ReportMetric(float64(failed)/float64(b.N), "failed/op")
		})
	}
}

// BenchmarkRealCalls is the cost of each NVML call a round makes, on GPU 0
// through the real driver: where a round's time goes.
// go test -tags gpu -run '^$' -bench RealCalls ./collector/nvml/
func BenchmarkRealCalls(b *testing.B) {
	lib := nvml.New()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		b.Skipf("NVML init: %v", nvmlError(ret))
	}
	defer lib.Shutdown()
	h, ret := lib.DeviceGetHandleByIndex(0)
	if ret != nvml.SUCCESS {
		b.Skipf("GPU 0: %v", nvmlError(ret))
	}
	var batch fieldBatch
	batch.build(counters.Default().Fields)
	gpm, err := newGPMSampler(lib, h, -1)
	if err != nil {
		b.Fatal(err)
	}
	defer gpm.free(lib)
	var req nvml.GpmMetricsGetType
	var r collector.Reading
	var unsupported exposition.FieldSet
	calls := []struct {
		name string
		call func() nvml.Return
	}{
		{"UtilizationRates", func() nvml.Return { _, ret := h.GetUtilizationRates(); return ret }},
		{"EncoderUtilization", func() nvml.Return { _, _, ret := h.GetEncoderUtilization(); return ret }},
		{"DecoderUtilization", func() nvml.Return { _, _, ret := h.GetDecoderUtilization(); return ret }},
		{"MemoryInfo_v2", func() nvml.Return { _, ret := h.GetMemoryInfo_v2(); return ret }},
		{"PowerUsage", func() nvml.Return { _, ret := h.GetPowerUsage(); return ret }},
		{"Temperature", func() nvml.Return { _, ret := h.GetTemperature(nvml.TEMPERATURE_GPU); return ret }},
		{"ClockInfoSM", func() nvml.Return { _, ret := h.GetClockInfo(nvml.CLOCK_SM); return ret }},
		{"ClockInfoMem", func() nvml.Return { _, ret := h.GetClockInfo(nvml.CLOCK_MEM); return ret }},
		{"GridLicensableFeatures", func() nvml.Return { _, ret := h.GetGridLicensableFeatures(); return ret }},
		{"ComputeRunningProcesses", func() nvml.Return { _, ret := h.GetComputeRunningProcesses(); return ret }},
		{"MPSComputeRunningProcesses", func() nvml.Return { _, ret := h.GetMPSComputeRunningProcesses(); return ret }},
		{"ProcessUtilization", func() nvml.Return { _, ret := h.GetProcessUtilization(0); return ret }},
		{"ProcessUtilizationLast10s", func() nvml.Return {
			_, ret := h.GetProcessUtilization(uint64(time.Now().Add(-processWindow).UnixMicro()))
			return ret
		}},
		{"FieldValuesDefault", func() nvml.Return { return h.GetFieldValues(batch.req) }},
		{"GPMSampleAndMetrics", func() nvml.Return {
			return gpm.read(lib, &req, gpmFields, &r, &unsupported)
		}},
	}
	for _, f := range fieldValues {
		id, scope := f.id, f.scope
		calls = append(calls, struct {
			name string
			call func() nvml.Return
		}{"FieldValue/" + f.field.Name(), func() nvml.Return {
			v := []nvml.FieldValue{{FieldId: id, ScopeId: scope}}
			if ret := h.GetFieldValues(v); ret != nvml.SUCCESS {
				return ret
			}
			return nvml.Return(v[0].NvmlReturn)
		}})
	}
	for _, c := range calls {
		b.Run(c.name, func(b *testing.B) {
			ret := c.call()
			for b.Loop() {
				c.call()
			}
			if ret != nvml.SUCCESS {
				b.Logf("returns %s", nvmlError(ret))
			}
		})
	}
}
