package nvml

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/internal/collectortest"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/cgroup"
)

// The pods of the fake /proc tree under testdata/proc:
//
//	1001, 1002, 1006  pod inf/a (containerd, systemd driver, cgroup v2)
//	1003              pod inf/b (CRI-O, cgroupfs driver, cgroup v1)
//	1004              a host process (display manager)
//	1005              pod ml/stray, which holds no GPU
//	2000              the MPS server, a host service
const (
	uidA     = "aaaaaaaa-1111-4111-8111-aaaaaaaaaaaa"
	uidB     = "bbbbbbbb-2222-4222-8222-bbbbbbbbbbbb"
	uidStray = "cccccccc-3333-4333-8333-cccccccccccc"
	gib      = 1 << 30
)

var fakeProc = filepath.Join("testdata", "proc")

// testPods is the pod index of the fake node.
var testPods = collectortest.Pods{"inf/a": uidA, "inf/b": uidB, "ml/stray": uidStray}

// sharedOwners: pods inf/a and inf/b hold time-slicing replicas of uuid.
func sharedOwners(uuid string) collectortest.Owners {
	return collectortest.Owners{uuid: {
		{Namespace: "inf", Pod: "a", Container: "srv", Resource: "nvidia.com/gpu", Replica: "0"},
		{Namespace: "inf", Pod: "b", Container: "srv", Resource: "nvidia.com/gpu", Replica: "1"},
	}}
}

// setProcesses scripts a mock GPU's process calls. samples is served to a
// GetProcessUtilization call whatever its timestamp; an empty list answers
// NOT_FOUND as the driver does.
func setProcesses(d *server.Device, running, mps []nvml.ProcessInfo, samples []nvml.ProcessUtilizationSample) {
	d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return running, nvml.SUCCESS }
	d.GetMPSComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return mps, nvml.SUCCESS }
	d.GetProcessUtilizationFunc = func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		if len(samples) == 0 {
			return nil, nvml.ERROR_NOT_FOUND
		}
		return samples, nvml.SUCCESS
	}
}

// attributedSampler samples lib with processes on, owners, the fake /proc
// and the test pod index.
func attributedSampler(t testing.TB, lib nvml.Interface, owners collectortest.Owners) (*collector.Sampler, *prometheus.Registry) {
	t.Helper()
	b, err := newBackend(lib, Options{Processes: true})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	return collector.NewSampler(b, collector.SamplerOptions{
		Node:        "n",
		Interval:    time.Second,
		Owners:      func() podmap.Lookup { return owners },
		Registerer:  reg,
		Attribution: &collector.Attribution{Resolver: cgroup.NewResolver(fakeProc), Pods: testPods},
	}), reg
}

// TestTimeSlicedGPU: one GPU time-sliced between pods inf/a (two
// processes) and inf/b (one), with a host process on it too.
func TestTimeSlicedGPU(t *testing.T) {
	lib := h100(t)
	d := lib.Devices[0].(*server.Device)
	var asked []uint64
	setProcesses(d, []nvml.ProcessInfo{
		{Pid: 1001, UsedGpuMemory: 1 * gib},
		{Pid: 1002, UsedGpuMemory: 2 * gib},
		{Pid: 1003, UsedGpuMemory: 4 * gib},
		{Pid: 1004, UsedGpuMemory: 256 << 20},
	}, nil, nil)
	const t0 = 1_700_000_000_000_000 // the driver's CPU time, µs
	rounds := [][]nvml.ProcessUtilizationSample{
		{
			{Pid: 1001, TimeStamp: t0 + 90, SmUtil: 99}, // older sample of 1001: superseded
			{Pid: 1001, TimeStamp: t0 + 100, SmUtil: 30},
			{Pid: 1002, TimeStamp: t0 + 100, SmUtil: 20},
			{Pid: 1003, TimeStamp: t0 + 110, SmUtil: 10},
			{Pid: 1004, TimeStamp: t0 + 100, SmUtil: 5},
		},
		nil, // no sample in the window: everyone idle
	}
	d.GetProcessUtilizationFunc = func(lastSeen uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		asked = append(asked, lastSeen)
		if s := rounds[len(asked)-1]; len(s) > 0 {
			return s, nvml.SUCCESS
		}
		return nil, nvml.ERROR_NOT_FOUND
	}
	s, reg := attributedSampler(t, lib, sharedOwners(d.UUID))

	want := [][]collector.PodShare{
		{
			{Namespace: "inf", Pod: "a", Container: "srv", UID: uidA, SMUtil: 50, MemoryUsed: 3 * gib, HasMemory: true},
			{Namespace: "inf", Pod: "b", Container: "srv", UID: uidB, SMUtil: 10, MemoryUsed: 4 * gib, HasMemory: true},
		},
		{
			{Namespace: "inf", Pod: "a", Container: "srv", UID: uidA, SMUtil: 0, MemoryUsed: 3 * gib, HasMemory: true},
			{Namespace: "inf", Pod: "b", Container: "srv", UID: uidB, SMUtil: 0, MemoryUsed: 4 * gib, HasMemory: true},
		},
	}
	for round := range want {
		snap := s.SampleOnce(time.Now())
		ds := snap.Devices[0]
		if ds.Attribution != collector.AttributionProcess {
			t.Fatalf("round %d: attribution %v, want process", round, ds.Attribution)
		}
		if !slices.Equal(ds.Shares, want[round]) {
			t.Errorf("round %d shares\n got %+v\nwant %+v", round, ds.Shares, want[round])
		}
		for _, other := range snap.Devices[1:] {
			if other.Shares != nil {
				t.Errorf("unshared GPU %s has shares %+v", other.Device.UUID, other.Shares)
			}
		}
		if got := collectortest.Gauges(t, reg, "gpu_metrics_server_unattributed_gpu_processes"); got["host"] != 1 || got["other_pod"] != 0 || got["not_found"] != 0 {
			t.Errorf("round %d unattributed %v, want the one host process", round, got)
		}
	}
	// First everything the driver holds, then the window before the newest
	// sample seen.
	if want := []uint64{0, t0 + 110 - uint64(processWindow/time.Microsecond)}; fmt.Sprint(asked) != fmt.Sprint(want) {
		t.Errorf("GetProcessUtilization asked with %v, want %v", asked, want)
	}
}

// TestMPS: the pods' processes are MPS clients; the MPS server is the only
// compute process the plain list shows.
func TestMPS(t *testing.T) {
	running := []nvml.ProcessInfo{{Pid: 2000, UsedGpuMemory: 512 << 20}}
	clients := []nvml.ProcessInfo{{Pid: 1001, UsedGpuMemory: 1 * gib}, {Pid: 1003, UsedGpuMemory: 2 * gib}}
	tests := []struct {
		name     string
		samples  []nvml.ProcessUtilizationSample
		wantMode collector.AttributionMode
		want     []collector.PodShare
	}{
		{
			name:     "samples per client",
			samples:  []nvml.ProcessUtilizationSample{{Pid: 1001, TimeStamp: 5, SmUtil: 40}, {Pid: 1003, TimeStamp: 5, SmUtil: 15}},
			wantMode: collector.AttributionProcess,
			want: []collector.PodShare{
				{Namespace: "inf", Pod: "a", Container: "srv", UID: uidA, SMUtil: 40, MemoryUsed: 1 * gib, HasMemory: true},
				{Namespace: "inf", Pod: "b", Container: "srv", UID: uidB, SMUtil: 15, MemoryUsed: 2 * gib, HasMemory: true},
			},
		},
		{
			name:     "samples on the server cannot be split",
			samples:  []nvml.ProcessUtilizationSample{{Pid: 2000, TimeStamp: 5, SmUtil: 55}},
			wantMode: collector.AttributionDevice,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lib := h100(t)
			d := lib.Devices[0].(*server.Device)
			setProcesses(d, running, clients, tt.samples)
			s, _ := attributedSampler(t, lib, sharedOwners(d.UUID))
			ds := s.SampleOnce(time.Now()).Devices[0]
			if ds.Attribution != tt.wantMode || !slices.Equal(ds.Shares, tt.want) {
				t.Errorf("mode %v shares %+v, want %v %+v", ds.Attribution, ds.Shares, tt.wantMode, tt.want)
			}
			if !ds.Reading.Fields().Has(exposition.GPUUtil) {
				t.Error("device values lost")
			}
		})
	}
}

// TestAttributionFallbacks: the cases where a device keeps device-level
// attribution, and the ones where it does not.
func TestAttributionFallbacks(t *testing.T) {
	tests := []struct {
		name     string
		script   func(d *server.Device)
		wantMode collector.AttributionMode
		wantErr  bool // Processes.Err set
	}{
		{
			name: "PIDs not under the host proc root (no hostPID)",
			script: func(d *server.Device) {
				setProcesses(d, []nvml.ProcessInfo{{Pid: 7777, UsedGpuMemory: gib}, {Pid: 7778, UsedGpuMemory: gib}},
					nil, []nvml.ProcessUtilizationSample{{Pid: 7777, SmUtil: 30, TimeStamp: 1}})
			},
			wantMode: collector.AttributionDevice,
		},
		{
			name: "busy GPU listing no process (PID namespace filtering)",
			script: func(d *server.Device) {
				d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 65}, nvml.SUCCESS }
				setProcesses(d, nil, nil, nil)
			},
			wantMode: collector.AttributionDevice,
		},
		{
			name: "idle GPU with no process: every pod 0",
			script: func(d *server.Device) {
				d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.SUCCESS }
				setProcesses(d, nil, nil, nil)
			},
			wantMode: collector.AttributionProcess,
		},
		{
			name: "one process found, one exited since: attribution holds",
			script: func(d *server.Device) {
				setProcesses(d, []nvml.ProcessInfo{{Pid: 1001, UsedGpuMemory: gib}, {Pid: 7777, UsedGpuMemory: gib}}, nil, nil)
			},
			wantMode: collector.AttributionProcess,
		},
		{
			name: "process utilization not supported",
			script: func(d *server.Device) {
				setProcesses(d, nil, nil, nil)
				d.GetProcessUtilizationFunc = func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
					return nil, nvml.ERROR_NOT_SUPPORTED
				}
			},
			wantMode: collector.AttributionDevice,
			wantErr:  true,
		},
		{
			name: "process table fails",
			script: func(d *server.Device) {
				setProcesses(d, nil, nil, nil)
				d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.ERROR_UNKNOWN }
			},
			wantMode: collector.AttributionDevice,
			wantErr:  true,
		},
		{
			name: "no MPS client list is fine",
			script: func(d *server.Device) {
				setProcesses(d, []nvml.ProcessInfo{{Pid: 1001, UsedGpuMemory: gib}}, nil, nil)
				d.GetMPSComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.ERROR_NOT_SUPPORTED }
			},
			wantMode: collector.AttributionProcess,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lib := h100(t)
			d := lib.Devices[0].(*server.Device)
			tt.script(d)
			s, _ := attributedSampler(t, lib, sharedOwners(d.UUID))
			for round := 0; round < 2; round++ {
				snap := s.SampleOnce(time.Now())
				if len(snap.Devices) != 8 {
					t.Fatalf("round %d: %d devices, want 8: a process problem must not drop the device", round, len(snap.Devices))
				}
				ds := snap.Devices[0]
				if ds.Attribution != tt.wantMode {
					t.Errorf("round %d: mode %v, want %v", round, ds.Attribution, tt.wantMode)
				}
				if (ds.Processes.Err != nil) != tt.wantErr {
					t.Errorf("round %d: processes error %v, want one: %v", round, ds.Processes.Err, tt.wantErr)
				}
				if tt.wantMode == collector.AttributionDevice && ds.Shares != nil {
					t.Errorf("round %d: shares %+v in device mode", round, ds.Shares)
				}
				if tt.wantMode == collector.AttributionProcess && len(ds.Shares) != 2 {
					t.Errorf("round %d: shares %+v, want one per pod", round, ds.Shares)
				}
			}
		})
	}
}

func TestProcessesNotSupportedAskedOnce(t *testing.T) {
	lib := h100(t)
	d := lib.Devices[2].(*server.Device)
	calls := 0
	d.GetProcessUtilizationFunc = func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		calls++
		return nil, nvml.ERROR_NOT_SUPPORTED
	}
	b, err := newBackend(lib, Options{Processes: true})
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		r, errs := b.Sample(time.Now())
		if len(r) != 8 || len(errs) != 0 {
			t.Fatalf("round %d: %d readings, errors %v", round, len(r), errs)
		}
		if !errors.Is(r[2].Processes.Err, errProcessesUnsupported) || r[2].Processes.Read {
			t.Errorf("round %d: processes %+v", round, r[2].Processes)
		}
	}
	if calls != 1 {
		t.Errorf("unsupported process utilization asked %d times, want 1", calls)
	}
}

func TestProcessesLostGPU(t *testing.T) {
	lib := h100(t)
	d := lib.Devices[1].(*server.Device)
	d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.ERROR_GPU_IS_LOST }
	b, err := newBackend(lib, Options{Processes: true})
	if err != nil {
		t.Fatal(err)
	}
	r, errs := b.Sample(time.Now())
	if len(r) != 7 || len(errs) != 1 || !errs[0].Lost || errs[0].Device != d.UUID {
		t.Fatalf("readings %d errors %+v, want GPU 1 lost", len(r), errs)
	}
}

func TestProcessesOff(t *testing.T) {
	lib := h100(t)
	lib.Devices[0].(*server.Device).GetComputeRunningProcessesFunc = nil // would panic if called
	b, err := newBackend(lib, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := b.Sample(time.Now())
	if r[0].Processes.Read || r[0].Processes.Err != nil {
		t.Errorf("processes read with attribution off: %+v", r[0].Processes)
	}
}

func TestProcessMemoryUnknown(t *testing.T) {
	lib := h100(t)
	d := lib.Devices[0].(*server.Device)
	setProcesses(d, []nvml.ProcessInfo{{Pid: 1001, UsedGpuMemory: valueNotAvailable}, {Pid: 1003, UsedGpuMemory: gib}},
		nil, []nvml.ProcessUtilizationSample{{Pid: 1001, SmUtil: 130, TimeStamp: 1}})
	s, _ := attributedSampler(t, lib, sharedOwners(d.UUID))
	sh := s.SampleOnce(time.Now()).Devices[0].Shares
	want := []collector.PodShare{
		{Namespace: "inf", Pod: "a", Container: "srv", UID: uidA, SMUtil: 100},
		{Namespace: "inf", Pod: "b", Container: "srv", UID: uidB, MemoryUsed: gib, HasMemory: true},
	}
	if !slices.Equal(sh, want) {
		t.Errorf("shares\n got %+v\nwant %+v (unknown memory stays unknown; utilization capped at 100)", sh, want)
	}
}

// BenchmarkSampleOnce8WithProcesses: one round of 8 GPUs, each time-sliced
// between two pods running three processes, through the real cgroup
// resolver on the fake /proc and the owners join.
func BenchmarkSampleOnce8WithProcesses(b *testing.B) {
	lib := h100(b)
	owners := collectortest.Owners{}
	for i, dev := range lib.Devices {
		d := dev.(*server.Device)
		setProcesses(d, []nvml.ProcessInfo{{Pid: 1001, UsedGpuMemory: gib}, {Pid: 1002, UsedGpuMemory: gib}, {Pid: 1003, UsedGpuMemory: gib}},
			nil, []nvml.ProcessUtilizationSample{{Pid: 1001, SmUtil: uint32(i), TimeStamp: 1}, {Pid: 1002, SmUtil: 5, TimeStamp: 1}, {Pid: 1003, SmUtil: 7, TimeStamp: 1}})
		for k, v := range sharedOwners(d.UUID) {
			owners[k] = v
		}
	}
	s, _ := attributedSampler(b, lib, owners)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if snap := s.SampleOnce(now); len(snap.Devices[7].Shares) != 2 {
			b.Fatal("no shares")
		}
	}
}

// TestProcessesReadEveryRoundOnlyWhereShared: with a SlowInterval and the
// sampler's selection, a GPU two pods hold has its processes read every
// round; one a single pod holds, or none, at the first round and then with
// the slow fields, its last table carried in between (a copy: the
// attribution's writes do not reach the carried table), its attribution
// mode steady.
func TestProcessesReadEveryRoundOnlyWhereShared(t *testing.T) {
	n := h100Node(t)
	calls := make([]int, 3)
	for i := range calls {
		d := n.Devices[i].(*server.Device)
		setProcesses(d, []nvml.ProcessInfo{{Pid: uint32(1001 + 2*i), UsedGpuMemory: gib}}, nil,
			[]nvml.ProcessUtilizationSample{{Pid: uint32(1001 + 2*i), TimeStamp: 1, SmUtil: 40}})
		inner := d.GetProcessUtilizationFunc
		d.GetProcessUtilizationFunc = func(ts uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
			calls[i]++
			return inner(ts)
		}
	}
	uuid := func(i int) string { return n.Devices[i].(*server.Device).UUID }
	owners := sharedOwners(uuid(0))
	owners[uuid(1)] = []podmap.Owner{{Namespace: "inf", Pod: "b", Container: "srv", Resource: "nvidia.com/gpu"}}
	b, err := newBackend(n.Server, Options{Processes: true, SlowInterval: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	s := collector.NewSampler(b, collector.SamplerOptions{
		Node:        "n",
		Interval:    time.Second,
		Owners:      func() podmap.Lookup { return owners },
		Attribution: &collector.Attribution{Resolver: cgroup.NewResolver(fakeProc), Pods: testPods},
	})
	t0 := time.Unix(1_800_000_000, 0)
	for round, at := range []time.Duration{0, time.Second, 2 * time.Second, 10 * time.Second, 11 * time.Second} {
		snap := s.SampleOnce(t0.Add(at))
		if mode := snap.Devices[1].Attribution; mode != collector.AttributionProcess {
			t.Errorf("round %d: the dedicated GPU's attribution mode %d, want process", round, mode)
		}
		if p := snap.Devices[1].Processes; !p.Read || len(p.List) != 1 || p.List[0].PID != 1003 {
			t.Errorf("round %d: the dedicated GPU's processes %+v, want its one process", round, p)
		}
	}
	if want := []int{5, 2, 2}; !slices.Equal(calls, want) {
		t.Errorf("process utilization read %v times on the shared, dedicated and idle GPU, want %v", calls, want)
	}
	if last := b.devices[1].procs.last.List; last[0].Pod != (collector.PodRef{}) {
		t.Errorf("the carried table was written to by the attribution: %+v", last[0])
	}
}
