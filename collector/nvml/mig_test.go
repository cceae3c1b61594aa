package nvml

import (
	"fmt"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/internal/collectortest"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// memoryOnly are the fields of a MIG instance without activity.
var memoryOnly = exposition.FieldsOf(exposition.FBUsed, exposition.FBFree, exposition.FBReserved)

// perDevice are the fields a MIG instance has of its own (the others are
// its GPU's).
func perDevice() exposition.FieldSet {
	var s exposition.FieldSet
	for f := range exposition.NumFields {
		if f.Scope() == exposition.PerDevice {
			s.Add(f)
		}
	}
	return s
}

// migLayout creates GPU instances of the given profiles on a mock GPU put
// in MIG mode, one compute instance each, and the MIG device handles NVML
// hands out for them (at MIG indexes 0, 2, 4, … to exercise the empty
// slots). It returns the MIG devices by GPU instance id.
func migLayout(t testing.TB, d *server.Device, profiles ...int) map[int]*mock.Device {
	t.Helper()
	if ret, _ := d.SetMigMode(nvml.DEVICE_MIG_ENABLE); ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	// The GPU's own utilization is per instance in MIG mode.
	d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED }
	d.GetComputeRunningProcessesFunc = nil // never asked in MIG mode: would panic
	gis := map[int]nvml.GpuInstance{}
	migs := map[int]*mock.Device{}
	var byIndex []nvml.Device
	for n, p := range profiles {
		info, ret := d.GetGpuInstanceProfileInfo(p)
		if ret != nvml.SUCCESS {
			t.Fatalf("profile %d: %v", p, ret)
		}
		gi, ret := d.CreateGpuInstance(&info)
		if ret != nvml.SUCCESS {
			t.Fatal(ret)
		}
		giInfo, _ := gi.GetInfo()
		id := int(giInfo.Id)
		gis[id] = gi
		mem := nvml.Memory{Total: info.MemorySizeMB << 20, Used: uint64(n+1) << 30, Free: info.MemorySizeMB<<20 - uint64(n+1)<<30}
		m := &mock.Device{
			GetUUIDFunc:              func() (string, nvml.Return) { return fmt.Sprintf("MIG-%s-gi%d", d.UUID[4:], id), nvml.SUCCESS },
			GetGpuInstanceIdFunc:     func() (int, nvml.Return) { return id, nvml.SUCCESS },
			GetComputeInstanceIdFunc: func() (int, nvml.Return) { return 0, nvml.SUCCESS },
			GetMemoryInfoFunc:        func() (nvml.Memory, nvml.Return) { return mem, nvml.SUCCESS },
			GetMemoryInfo_v2Func: func() (nvml.Memory_v2, nvml.Return) {
				return nvml.Memory_v2{Total: mem.Total, Used: mem.Used, Free: mem.Free}, nvml.SUCCESS
			},
			GetAttributesFunc: func() (nvml.DeviceAttributes, nvml.Return) {
				return nvml.DeviceAttributes{GpuInstanceSliceCount: info.SliceCount, MemorySizeMB: info.MemorySizeMB}, nvml.SUCCESS
			},
		}
		migs[id] = m
		byIndex = append(byIndex, m, nil)
	}
	d.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 7, nvml.SUCCESS }
	d.GetMigDeviceHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
		if i < len(byIndex) && byIndex[i] != nil {
			return byIndex[i], nvml.SUCCESS
		}
		return nil, nvml.ERROR_NOT_FOUND
	}
	d.GetGpuInstanceByIdFunc = func(id int) (nvml.GpuInstance, nvml.Return) {
		if gi, ok := gis[id]; ok {
			return gi, nvml.SUCCESS
		}
		return nil, nvml.ERROR_NOT_FOUND
	}
	return migs
}

// fakeGPM scripts NVML GPM on a mock: each GPU instance's activity is
// given in percent; MigSampleGet stamps a sample with its instance and
// round, and MetricsGet checks it is given two consecutive samples of one
// instance.
type fakeGPM struct {
	t testing.TB
	// graphics and sm are by GPU instance id, or by gpuKey for a whole
	// GPU; other metrics read other (the same for every device).
	graphics map[int]float64
	sm       map[int]float64
	other    map[nvml.GpmMetricId]float64
	samples  map[nvml.GpmSample][2]int // gi, round
	round    map[int]int
	freed    int
	// smFails makes the SM metric fail for that instance.
	smFails int
}

func newFakeGPM(t testing.TB, lib *server.Server, supported bool) *fakeGPM {
	g := &fakeGPM{t: t, graphics: map[int]float64{}, sm: map[int]float64{}, other: map[nvml.GpmMetricId]float64{},
		samples: map[nvml.GpmSample][2]int{}, round: map[int]int{}, smFails: -1}
	lib.GpmQueryDeviceSupportFunc = func(nvml.Device) (nvml.GpmSupport, nvml.Return) {
		if !supported {
			return nvml.GpmSupport{IsSupportedDevice: 0}, nvml.SUCCESS
		}
		return nvml.GpmSupport{IsSupportedDevice: 1}, nvml.SUCCESS
	}
	lib.GpmSampleAllocFunc = func() (nvml.GpmSample, nvml.Return) {
		return &mock.GpmSample{FreeFunc: func() nvml.Return { g.freed++; return nvml.SUCCESS }}, nvml.SUCCESS
	}
	lib.GpmSampleFreeFunc = func(s nvml.GpmSample) nvml.Return { return s.Free() }
	lib.GpmMigSampleGetFunc = func(_ nvml.Device, gi int, s nvml.GpmSample) nvml.Return {
		g.round[gi]++
		g.samples[s] = [2]int{gi, g.round[gi]}
		return nvml.SUCCESS
	}
	lib.GpmSampleGetFunc = func(d nvml.Device, s nvml.GpmSample) nvml.Return {
		i, _ := d.GetIndex()
		key := gpuKey(i)
		g.round[key]++
		g.samples[s] = [2]int{key, g.round[key]}
		return nvml.SUCCESS
	}
	lib.GpmMetricsGetFunc = func(m *nvml.GpmMetricsGetType) nvml.Return {
		a, b := g.samples[m.Sample1], g.samples[m.Sample2]
		if a[0] != b[0] || a[1]+1 != b[1] {
			g.t.Errorf("GPM metrics between samples %v and %v: not consecutive samples of one instance", a, b)
		}
		gi := b[0]
		for i := 0; i < int(m.NumMetrics); i++ {
			mt := &m.Metrics[i]
			switch nvml.GpmMetricId(mt.MetricId) {
			case nvml.GPM_METRIC_GRAPHICS_UTIL:
				mt.Value = g.graphics[gi]
			case nvml.GPM_METRIC_SM_UTIL:
				mt.Value = g.sm[gi]
				if gi == g.smFails {
					mt.NvmlReturn = uint32(nvml.ERROR_NOT_SUPPORTED)
				}
			default:
				mt.Value = g.other[nvml.GpmMetricId(mt.MetricId)]
			}
		}
		return nvml.SUCCESS
	}
	return g
}

// gpuKey is fakeGPM's key of whole GPU i.
func gpuKey(i int) int { return -1 - i }

func TestMIGH100MixedProfilesWithGPM(t *testing.T) {
	lib := h100(t)
	parent := lib.Devices[1].(*server.Device)
	migs := migLayout(t, parent, nvml.GPU_INSTANCE_PROFILE_3_SLICE, nvml.GPU_INSTANCE_PROFILE_2_SLICE,
		nvml.GPU_INSTANCE_PROFILE_1_SLICE, nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1)
	gpm := newFakeGPM(t, lib, true)
	gpm.graphics = map[int]float64{0: 42, 1: 7.5, 2: 100, 3: 0}
	gpm.sm = map[int]float64{0: 30, 1: 5, 2: 250, 3: 0}
	gpm.smFails = 3

	b, err := newBackend(lib, Options{Processes: true})
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		profile string
		usedGiB uint64
		gr, sm  float64
		hasSM   bool
	}
	wants := map[int]want{
		0: {"3g.40gb", 1, 0.42, 0.30, true},
		1: {"2g.20gb", 2, 0.075, 0.05, true},
		2: {"1g.10gb", 3, 1, 1, true}, // 250 % clamped to a ratio of 1
		3: {"1g.10gb+me", 4, 0, 0, false},
	}
	for round := 1; round <= 2; round++ {
		readings, errs := b.Sample(time.Now())
		if len(errs) != 0 {
			t.Fatalf("round %d errors %v", round, errs)
		}
		if len(readings) != 12 {
			t.Fatalf("round %d: %d readings, want 8 GPUs + 4 MIG instances", round, len(readings))
		}
		// The parent comes first, its instances right after it, by GPU
		// instance id.
		if readings[1].Device.UUID != parent.UUID || readings[1].Reading.Fields().Has(exposition.GPUUtil) || readings[1].Processes.Read {
			t.Errorf("MIG-enabled GPU: %+v", readings[1])
		}
		if !readings[1].Reading.Fields().Has(exposition.PowerUsage) {
			t.Error("the MIG-enabled GPU lost its power reading")
		}
		for gi := 0; gi < 4; gi++ {
			r := readings[2+gi]
			w := wants[gi]
			dev := r.Device
			if dev.MIG == nil || dev.MIG.GPUInstance != gi || dev.MIG.ParentUUID != parent.UUID || dev.MIG.Profile != w.profile || !dev.Profiling {
				t.Fatalf("instance %d identity %+v / %+v", gi, dev, dev.MIG)
			}
			if uuid, _ := migs[gi].GetUUID(); dev.UUID != uuid || dev.Index != 1 || dev.Minor != 1 || dev.Name != parent.Config.Name {
				t.Errorf("instance %d device %+v", gi, dev)
			}
			if key := dev.Key(); key.GPUInstance != gi || key.ParentUUID != parent.UUID || key.UUID != dev.UUID {
				t.Errorf("instance %d key %+v", gi, key)
			}
			if used, ok := r.Reading.Get(exposition.FBUsed); used != float64(w.usedGiB<<30) || !ok || !r.Reading.Fields().Has(exposition.FBFree) {
				t.Errorf("instance %d memory %+v", gi, r.Reading)
			}
			if r.Reading.Fields().Has(exposition.GPUUtil) || r.Reading.Fields().Has(exposition.PowerUsage) {
				t.Errorf("instance %d reports GPU-level fields: %+v", gi, r.Reading)
			}
			if round == 1 {
				if r.Reading.Fields().Has(exposition.GREngineActive) || r.Reading.Fields().Has(exposition.SMActive) {
					t.Errorf("instance %d: activity on the first round, with no interval yet", gi)
				}
				continue
			}
			if gr, ok := r.Reading.Get(exposition.GREngineActive); !ok || gr != w.gr {
				t.Errorf("instance %d GR engine active %v (valid %v), want %v", gi, gr, ok, w.gr)
			}
			if sm, ok := r.Reading.Get(exposition.SMActive); ok != w.hasSM || sm != w.sm {
				t.Errorf("instance %d SM active %v (valid %v), want %v (valid %v)", gi, sm, ok, w.sm, w.hasSM)
			}
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if gpm.freed != 22 {
		t.Errorf("%d GPM samples freed, want 22 (two per instance, two per GPU not in MIG mode)", gpm.freed)
	}
}

// TestMIGA100NoGPM: an A100 in MIG mode has no per-instance activity in
// NVML: its instances report memory only and say so.
func TestMIGA100NoGPM(t *testing.T) {
	lib := dgxa100.New()
	for i, d := range lib.Devices {
		healthyDevice(d.(*server.Device), i)
	}
	fakeNode(t, lib)
	parent := lib.Devices[0].(*server.Device)
	parent.MemoryInfo = nvml.Memory{Total: 40960 << 20, Free: 40960 << 20}
	migLayout(t, parent, nvml.GPU_INSTANCE_PROFILE_3_SLICE, nvml.GPU_INSTANCE_PROFILE_2_SLICE, nvml.GPU_INSTANCE_PROFILE_1_SLICE)
	newFakeGPM(t, lib, false)
	lib.GpmSampleAllocFunc = nil // never asked without GPM: would panic

	b, err := newBackend(lib, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := collector.NewSampler(b, collector.SamplerOptions{Node: "n", Interval: time.Second})
	var snap *collector.Snapshot
	for round := 0; round < 2; round++ {
		snap = s.SampleOnce(time.Now())
	}
	wantProfiles := []string{"3g.20gb", "2g.10gb", "1g.5gb"}
	for gi, want := range wantProfiles {
		ds := snap.Devices[1+gi]
		if ds.Device.MIG == nil || ds.Device.MIG.Profile != want || ds.Device.Profiling {
			t.Errorf("instance %d: %+v, want profile %s without activity", gi, ds.Device.MIG, want)
		}
		if own := ds.Reading.Fields().Intersect(perDevice()); own != memoryOnly {
			t.Errorf("instance %d fields of its own %v, want memory only", gi, own)
		}
	}
	mfs := collectortest.ParseExposition(t, snap.Exposition())
	activity := exposition.MIGActivitySupported.Name()
	if n := len(mfs[activity].GetMetric()); n != 3 {
		t.Fatalf("%d %s series, want one per instance", n, activity)
	}
	for _, m := range mfs[activity].GetMetric() {
		if m.GetGauge().GetValue() != 0 || collectortest.Labels(m)["GPU_I_PROFILE"] == "" {
			t.Errorf("%v = %v, want 0 with the instance's labels", collectortest.Labels(m), m.GetGauge().GetValue())
		}
	}
	if _, ok := mfs["DCGM_FI_PROF_GR_ENGINE_ACTIVE"]; ok {
		t.Error("activity served without GPM")
	}
}

func TestMIGProfileFallbackAndFaults(t *testing.T) {
	lib := h100(t)
	parent := lib.Devices[0].(*server.Device)
	migs := migLayout(t, parent, nvml.GPU_INSTANCE_PROFILE_3_SLICE, nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1, nvml.GPU_INSTANCE_PROFILE_2_SLICE)
	newFakeGPM(t, lib, true)
	// An unprivileged agent: NVML refuses the GPU instances; the MIG
	// device's attributes still name the profile (without the +me suffix).
	parent.GetGpuInstanceByIdFunc = func(int) (nvml.GpuInstance, nvml.Return) { return nil, nvml.ERROR_NO_PERMISSION }
	// Instance 2's compute instance id cannot be read: it is left out.
	migs[2].GetComputeInstanceIdFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	// Instance 1's memory is not supported: absent, not zero; its
	// activity still reads.
	migs[1].GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_NOT_SUPPORTED }
	migs[1].GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) { return nvml.Memory_v2{}, nvml.ERROR_NOT_SUPPORTED }

	b, err := newBackend(lib, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var readings []collector.DeviceReading
	for round := 0; round < 2; round++ {
		readings, _ = b.Sample(time.Now())
	}
	if len(readings) != 10 {
		t.Fatalf("%d readings, want 8 GPUs + 2 instances", len(readings))
	}
	if p := readings[1].Device.MIG.Profile; p != "3g.40gb" {
		t.Errorf("instance 0 profile %q", p)
	}
	if p := readings[2].Device.MIG.Profile; p != "1g.10gb" {
		t.Errorf("instance 1 profile %q, want 1g.10gb from the attributes", p)
	}
	if r := readings[2].Reading; r.Fields().Intersects(memoryOnly) || !r.Fields().Has(exposition.GREngineActive) {
		t.Errorf("instance 1 fields %v", r.Fields())
	}
}

func TestMIGLostParent(t *testing.T) {
	lib := h100(t)
	parent := lib.Devices[0].(*server.Device)
	migLayout(t, parent, nvml.GPU_INSTANCE_PROFILE_7_SLICE)
	newFakeGPM(t, lib, true)
	b, err := newBackend(lib, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := b.Sample(time.Now()); len(r) != 9 || r[1].Device.MIG.Profile != "7g.80gb" {
		t.Fatalf("readings %d", len(r))
	}
	parent.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) { return nvml.Memory_v2{}, nvml.ERROR_GPU_IS_LOST }
	r, errs := b.Sample(time.Now())
	if len(r) != 7 || len(errs) != 1 || !errs[0].Lost {
		t.Fatalf("readings %d errors %+v: want the GPU lost and its instance gone with it", len(r), errs)
	}
}

func TestGPMFaults(t *testing.T) {
	tests := []struct {
		name string
		// fail scripts GPM from the given round on (1-based).
		fail      func(lib *server.Server)
		wantLost  bool
		wantField bool // GR engine active on round 3
	}{
		{
			name: "sample fails: activity absent, memory stands",
			fail: func(lib *server.Server) {
				lib.GpmMigSampleGetFunc = func(nvml.Device, int, nvml.GpmSample) nvml.Return { return nvml.ERROR_UNKNOWN }
			},
		},
		{
			name: "metrics fail: activity absent",
			fail: func(lib *server.Server) {
				lib.GpmMetricsGetFunc = func(*nvml.GpmMetricsGetType) nvml.Return { return nvml.ERROR_UNKNOWN }
			},
		},
		{
			name: "GPM not supported after all: not asked again",
			fail: func(lib *server.Server) {
				calls := 0
				lib.GpmMigSampleGetFunc = func(nvml.Device, int, nvml.GpmSample) nvml.Return {
					calls++
					if calls > 1 {
						panic("asked again after NOT_SUPPORTED")
					}
					return nvml.ERROR_NOT_SUPPORTED
				}
			},
		},
		{
			name: "lost",
			fail: func(lib *server.Server) {
				lib.GpmMigSampleGetFunc = func(nvml.Device, int, nvml.GpmSample) nvml.Return { return nvml.ERROR_GPU_IS_LOST }
			},
			wantLost: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lib := h100(t)
			migLayout(t, lib.Devices[0].(*server.Device), nvml.GPU_INSTANCE_PROFILE_7_SLICE)
			newFakeGPM(t, lib, true)
			b, err := newBackend(lib, Options{})
			if err != nil {
				t.Fatal(err)
			}
			b.Sample(time.Now())
			if r, _ := b.Sample(time.Now()); !r[1].Reading.Fields().Has(exposition.GREngineActive) {
				t.Fatal("no activity before the fault")
			}
			tt.fail(lib)
			for round := 0; round < 2; round++ {
				r, errs := b.Sample(time.Now())
				if tt.wantLost {
					if len(errs) != 1 || !errs[0].Lost || len(r) != 8 {
						t.Fatalf("errors %+v readings %d, want the instance lost", errs, len(r))
					}
					return
				}
				if len(errs) != 0 || len(r) != 9 {
					t.Fatalf("errors %+v readings %d", errs, len(r))
				}
				if r[1].Reading.Fields() != memoryOnly {
					t.Errorf("round %d: fields %v, want memory without activity", round, r[1].Reading.Fields())
				}
			}
		})
	}
}

func TestProfileName(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		slices  uint32
		memMiB  uint64
		total   uint64
		profile int
		want    string
	}{
		// NVIDIA's published names, with the memory nvidia-smi reports.
		{1, 4864, 40960 * mib, nvml.GPU_INSTANCE_PROFILE_1_SLICE, "1g.5gb"},   // A100 40GB
		{3, 19968, 40960 * mib, nvml.GPU_INSTANCE_PROFILE_3_SLICE, "3g.20gb"}, // A100 40GB
		{7, 40192, 40960 * mib, nvml.GPU_INSTANCE_PROFILE_7_SLICE, "7g.40gb"}, // A100 40GB
		{7, 80896, 81920 * mib, nvml.GPU_INSTANCE_PROFILE_7_SLICE, "7g.80gb"}, // A100 80GB: 79 GiB by plain rounding
		{1, 9856, 81559 * mib, nvml.GPU_INSTANCE_PROFILE_1_SLICE, "1g.10gb"},  // H100 80GB
		{1, 9856, 81559 * mib, nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1, "1g.10gb+me"},
		{1, 19968, 81559 * mib, nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV2, "1g.20gb"},
		{3, 40192, 81559 * mib, nvml.GPU_INSTANCE_PROFILE_3_SLICE, "3g.40gb"},
		{4, 40192, 81559 * mib, nvml.GPU_INSTANCE_PROFILE_4_SLICE, "4g.40gb"},
		{7, 80384, 81559 * mib, nvml.GPU_INSTANCE_PROFILE_7_SLICE, "7g.80gb"},
		{1, 16384, 140 * 1024 * mib, nvml.GPU_INSTANCE_PROFILE_1_SLICE_GFX, "1g.18gb+gfx"},
		{1, 16384, 140 * 1024 * mib, nvml.GPU_INSTANCE_PROFILE_1_SLICE_NO_ME, "1g.18gb-me"},
		{2, 33792, 140 * 1024 * mib, nvml.GPU_INSTANCE_PROFILE_2_SLICE_ALL_ME, "2g.35gb+me.all"},
		{2, 10000, 0, nvml.GPU_INSTANCE_PROFILE_2_SLICE, "2g.10gb"}, // GPU memory unknown
	}
	for _, tt := range tests {
		if got := profileName(tt.slices, tt.memMiB, tt.total) + profileSuffix(tt.profile); got != tt.want {
			t.Errorf("%d slices %d MiB of %d: %q, want %q", tt.slices, tt.memMiB, tt.total, got, tt.want)
		}
	}
}
