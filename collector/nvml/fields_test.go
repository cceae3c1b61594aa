package nvml

import (
	"slices"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	itestutil "github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

// sampleDevice runs rounds on a fresh DGX H100 whose device 1 break_ has
// changed, and returns device 1's readings and errors per round.
func sampleDevice(t *testing.T, o Options, rounds int, break_ func(n node, d *server.Device)) (n node, readings []collector.DeviceReading, errs [][]collector.DeviceError) {
	t.Helper()
	n = h100Node(t)
	d := n.Devices[1].(*server.Device)
	if break_ != nil {
		break_(n, d)
	}
	b, err := newBackend(n.Server, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	for round := 0; round < rounds; round++ {
		r, e := b.Sample(time.Now())
		var dr collector.DeviceReading
		for _, x := range r {
			if x.Device.UUID == d.UUID {
				dr = x
			}
		}
		readings = append(readings, dr)
		errs = append(errs, e)
	}
	return n, readings, errs
}

func TestNVMLFieldValueFaults(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(n node, d *server.Device)
		// has: per round, whether device 1 reports the memory temperature
		// (nil: device 1 failed that round).
		has       []any
		lost      bool
		notAsked  uint32 // a field id no longer in the request after round 1
		wantCalls int
	}{
		{
			name: "field not supported: absent, not asked again",
			break_: func(n node, d *server.Device) {
				n.fields[1].values[nvml.FI_DEV_MEMORY_TEMP] = scriptedValue{ret: nvml.ERROR_NOT_SUPPORTED}
			},
			has: []any{false, false, false}, notAsked: nvml.FI_DEV_MEMORY_TEMP, wantCalls: 3,
		},
		{
			name: "field unknown to the driver: same",
			break_: func(n node, d *server.Device) {
				n.fields[1].values[nvml.FI_DEV_MEMORY_TEMP] = scriptedValue{ret: nvml.ERROR_INVALID_ARGUMENT}
			},
			has: []any{false, false, false}, notAsked: nvml.FI_DEV_MEMORY_TEMP, wantCalls: 3,
		},
		{
			name: "transient error on one field: absent that round only",
			break_: func(n node, d *server.Device) {
				f := n.fields[1]
				f.values[nvml.FI_DEV_MEMORY_TEMP] = scriptedValue{ret: nvml.ERROR_UNKNOWN}
				inner := d.GetFieldValuesFunc
				d.GetFieldValuesFunc = func(req []nvml.FieldValue) nvml.Return {
					ret := inner(req)
					f.values[nvml.FI_DEV_MEMORY_TEMP] = scriptedValue{v: 44}
					return ret
				}
			},
			has: []any{false, true, true}, wantCalls: 3,
		},
		{
			name: "one field lost: the GPU is lost",
			break_: func(n node, d *server.Device) {
				n.fields[1].values[nvml.FI_DEV_ECC_DBE_VOL_TOTAL] = scriptedValue{ret: nvml.ERROR_GPU_IS_LOST}
			},
			has: []any{nil, nil, nil}, lost: true, wantCalls: 1,
		},
		{
			name: "the call not supported: none of its fields, not asked again",
			break_: func(n node, d *server.Device) {
				f := n.fields[1]
				d.GetFieldValuesFunc = func([]nvml.FieldValue) nvml.Return { f.calls++; return nvml.ERROR_NOT_SUPPORTED }
			},
			has: []any{false, false, false}, wantCalls: 1,
		},
		{
			name: "the call fails: the GPU fails that round",
			break_: func(n node, d *server.Device) {
				f := n.fields[1]
				inner := d.GetFieldValuesFunc
				d.GetFieldValuesFunc = func(req []nvml.FieldValue) nvml.Return {
					if f.calls == 0 {
						f.calls++
						return nvml.ERROR_UNKNOWN
					}
					return inner(req)
				}
			},
			has: []any{nil, true, true}, wantCalls: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, readings, errs := sampleDevice(t, Options{}, 3, tt.break_)
			for round, want := range tt.has {
				r := readings[round]
				if want == nil {
					if r.Device != nil || len(errs[round]) > 1 || (round == 0 && (len(errs[0]) != 1 || errs[0][0].Lost != tt.lost)) {
						t.Errorf("round %d: reading %+v errors %+v, want device 1 failed (lost %v)", round, r.Device, errs[round], tt.lost)
					}
					continue
				}
				if r.Device == nil {
					t.Fatalf("round %d: device 1 missing (%v)", round, errs[round])
				}
				if got := r.Reading.Fields().Has(exposition.MemoryTemp); got != want.(bool) {
					t.Errorf("round %d: memory temperature present %v, want %v", round, got, want)
				}
				if !r.Reading.Fields().Has(exposition.GPUUtil) || (want.(bool) && !r.Reading.Fields().Has(exposition.PCIeReplayCounter)) {
					t.Errorf("round %d: other fields lost: %v", round, r.Reading.Fields())
				}
			}
			if f := n.fields[1]; f.calls != tt.wantCalls {
				t.Errorf("%d field-value calls, want %d", f.calls, tt.wantCalls)
			}
			if tt.notAsked != 0 && slices.Contains(n.fields[1].asked, tt.notAsked) {
				t.Errorf("field %d still asked after NOT_SUPPORTED", tt.notAsked)
			}
		})
	}
}

func TestNVMLRates(t *testing.T) {
	var f *fakeFields
	// NVLink data counters (KiB) per round; the reading is DCGM's
	// KiB/s / 1000 between rounds one second apart.
	rx := []uint64{1000, 5000, 100, 2100, 0, 1000}
	_, readings, _ := sampleDevice(t, Options{}, len(rx), func(n node, d *server.Device) {
		f = n.fields[1]
		inner := d.GetFieldValuesFunc
		d.GetFieldValuesFunc = func(req []nvml.FieldValue) nvml.Return {
			v := scriptedValue{v: rx[f.calls]}
			if f.calls == 4 {
				v = scriptedValue{ret: nvml.ERROR_UNKNOWN}
			}
			f.values[nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_RX] = v
			f.values[nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX] = scriptedValue{v: 0}
			return inner(req)
		}
	})
	// first round: no interval; 4000 KiB in 1 s; the counter went
	// back (reset): none; 2000 KiB; a failed read: none; the read
	// after it has no previous value: none.
	want := []any{nil, 4.0, nil, 2.0, nil, nil}
	for i, w := range want {
		v, ok := readings[i].Reading.Get(exposition.NVLinkBandwidthTotal)
		if ok != (w != nil) || (ok && v != w.(float64)) {
			t.Errorf("round %d: bandwidth %v (%v), want %v", i, v, ok, w)
		}
	}
}

// TestNVMLWithoutNVLink: a GPU without NVLink (a PCIe card) has no NVLink
// fields, not zeros, even where the driver answers 0 for them; the link
// count is asked with the first request only, once it is known.
func TestNVMLWithoutNVLink(t *testing.T) {
	zeroLinks := func(f *fakeFields) {
		for _, id := range []uint32{nvml.FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL, nvml.FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL,
			nvml.FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL, nvml.FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL,
			nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_RX, nvml.FI_DEV_NVLINK_THROUGHPUT_DATA_TX} {
			f.values[id] = scriptedValue{v: 0}
		}
	}
	tests := []struct {
		name  string
		count []scriptedValue // the link count's answer per round
		// has: per round, whether device 1 has its NVLink error counters
		// (nil: device 1 failed that round).
		has []any
		// askedAfter: the round from which the count is no longer asked.
		askedAfter int
		lost       bool
	}{
		{"NVLink present", []scriptedValue{{v: 18}}, []any{true, true, true}, 1, false},
		{"no links, the driver answers 0 for the counters", []scriptedValue{{v: 0}}, []any{false, false, false}, 1, false},
		{"the link count not supported", []scriptedValue{{ret: nvml.ERROR_NOT_SUPPORTED}}, []any{false, false, false}, 1, false},
		{"the link count failing once: asked again", []scriptedValue{{ret: nvml.ERROR_UNKNOWN}, {v: 0}}, []any{true, false, false}, 2, false},
		{"the GPU lost", []scriptedValue{{ret: nvml.ERROR_GPU_IS_LOST}}, []any{nil, nil, nil}, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f *fakeFields
			var asked [][]uint32
			_, readings, errs := sampleDevice(t, Options{}, len(tt.has), func(n node, d *server.Device) {
				f = n.fields[1]
				zeroLinks(f)
				inner := d.GetFieldValuesFunc
				d.GetFieldValuesFunc = func(req []nvml.FieldValue) nvml.Return {
					f.values[nvml.FI_DEV_NVLINK_LINK_COUNT] = tt.count[min(f.calls, len(tt.count)-1)]
					ret := inner(req)
					asked = append(asked, slices.Clone(f.asked))
					return ret
				}
			})
			for round, want := range tt.has {
				r := readings[round]
				if want == nil {
					if r.Device != nil || (round == 0 && (len(errs[0]) != 1 || errs[0][0].Lost != tt.lost)) {
						t.Errorf("round %d: reading %+v errors %v, want device 1 lost", round, r.Device, errs[round])
					}
					continue
				}
				if r.Device == nil {
					t.Fatalf("round %d: device 1 missing (%v)", round, errs[round])
				}
				got := r.Reading.Fields()
				if got.Has(exposition.NVLinkCRCFlitErrors) != want.(bool) || got.Has(exposition.NVLinkRecoveryErrors) != want.(bool) {
					t.Errorf("round %d: NVLink fields present %v, want %v", round, got.Has(exposition.NVLinkCRCFlitErrors), want)
				}
				if !want.(bool) && got.Has(exposition.NVLinkBandwidthTotal) {
					t.Errorf("round %d: NVLink bandwidth without NVLink", round)
				}
				if !got.Has(exposition.MemoryTemp) || !got.Has(exposition.CorrectableRemappedRows) {
					t.Errorf("round %d: other field values lost: %v", round, got)
				}
			}
			for round, ids := range asked {
				if has := slices.Contains(ids, nvml.FI_DEV_NVLINK_LINK_COUNT); has != (round < tt.askedAfter) {
					t.Errorf("call %d: link count asked %v, want %v", round, has, round < tt.askedAfter)
				}
			}
		})
	}
}

func TestNVMLMemoryV1Fallback(t *testing.T) {
	calls := 0
	_, readings, _ := sampleDevice(t, Options{}, 2, func(n node, d *server.Device) {
		d.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) { calls++; return nvml.Memory_v2{}, nvml.ERROR_FUNCTION_NOT_FOUND }
	})
	for round, r := range readings {
		used, _ := r.Reading.Get(exposition.FBUsed)
		free, _ := r.Reading.Get(exposition.FBFree)
		if used != 2<<30 || free != 78<<30 || r.Reading.Fields().Has(exposition.FBReserved) {
			t.Errorf("round %d: used %v free %v fields %v, want v1's and no reserved", round, used, free, r.Reading.Fields())
		}
	}
	if calls != 1 {
		t.Errorf("v2 asked %d times, want once", calls)
	}
}

func TestNVMLLicense(t *testing.T) {
	feature := func(code nvml.GridLicenseFeatureCode, state uint32) nvml.GridLicensableFeatures {
		lf := nvml.GridLicensableFeatures{IsGridLicenseSupported: 1, LicensableFeaturesCount: 2}
		lf.GridLicensableFeatures[0].FeatureCode = uint32(nvml.GRID_LICENSE_FEATURE_CODE_NVIDIA_RTX)
		lf.GridLicensableFeatures[0].FeatureState = 1
		lf.GridLicensableFeatures[1].FeatureCode = uint32(code)
		lf.GridLicensableFeatures[1].FeatureState = state
		return lf
	}
	tests := []struct {
		name string
		lf   nvml.GridLicensableFeatures
		ret  nvml.Return
		want any
	}{
		{"bare metal", nvml.GridLicensableFeatures{}, nvml.ERROR_NOT_SUPPORTED, nil},
		{"no licensing (an H200)", nvml.GridLicensableFeatures{}, nvml.SUCCESS, nil},
		{"vGPU licensed", feature(nvml.GRID_LICENSE_FEATURE_CODE_VGPU, 1), nvml.SUCCESS, 1.0},
		{"vGPU not licensed", feature(nvml.GRID_LICENSE_FEATURE_CODE_VGPU, 0), nvml.SUCCESS, 0.0},
		{"no vGPU feature", feature(nvml.GRID_LICENSE_FEATURE_CODE_VWORKSTATION, 1), nvml.SUCCESS, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, readings, _ := sampleDevice(t, Options{}, 1, func(n node, d *server.Device) {
				d.GetGridLicensableFeaturesFunc = func() (nvml.GridLicensableFeatures, nvml.Return) { return tt.lf, tt.ret }
			})
			v, ok := readings[0].Reading.Get(exposition.VGPULicenseStatus)
			if ok != (tt.want != nil) || (ok && v != tt.want.(float64)) {
				t.Errorf("license %v (%v), want %v", v, ok, tt.want)
			}
		})
	}
}

// TestNVMLSelection: only the selected fields are read: no field-value
// call, GPM sampler or event set for fields left out.
func TestNVMLSelection(t *testing.T) {
	n := h100Node(t)
	gpm := newFakeGPM(t, n.Server, true)
	n.EventSetCreateFunc = nil // never asked without the XID field: would panic
	b, err := newBackend(n.Server, Options{Fields: exposition.FieldsOf(exposition.GPUUtil, exposition.MemoryTemp)})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := b.Sample(time.Now())
	if got := r[0].Reading.Fields(); got != exposition.FieldsOf(exposition.GPUUtil, exposition.MemoryTemp) {
		t.Errorf("fields %v", got)
	}
	if asked := n.fields[0].asked; !slices.Equal(asked, []uint32{nvml.FI_DEV_MEMORY_TEMP}) {
		t.Errorf("field values asked %v, want the memory temperature only", asked)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if gpm.freed != 0 || r[0].Device.Profiling {
		t.Errorf("GPM used without profiling fields (%d samples freed)", gpm.freed)
	}
}

func TestNVMLLabels(t *testing.T) {
	var all exposition.LabelSet
	for l := range exposition.NumLabelFields {
		all.Add(l)
	}
	n := h100Node(t)
	n.Devices[2].(*server.Device).GetSerialFunc = func() (string, nvml.Return) { return "", nvml.ERROR_NOT_SUPPORTED }
	b, err := newBackend(n.Server, Options{Labels: all})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, _ := b.Sample(time.Now())
	want := [exposition.NumLabelFields]string{
		exposition.BrandLabel: "NVIDIA", exposition.ECCInforomVersionLabel: "inforom-1", exposition.InforomImageVersionLabel: "G520.0200.00.05",
		exposition.OEMInforomVersionLabel: "inforom-0", exposition.PowerInforomVersionLabel: "inforom-2", exposition.SerialLabel: "1650923000000",
		exposition.VBIOSVersionLabel: "96.00.99.00.01", exposition.DriverVersionLabel: "550.54.15", exposition.NVMLVersionLabel: "12.550.54.15",
	}
	if r[0].Device.Labels != want {
		t.Errorf("labels\n got %q\nwant %q", r[0].Device.Labels, want)
	}
	if r[2].Device.Labels[exposition.SerialLabel] != "" || r[2].Device.Labels[exposition.DriverVersionLabel] == "" {
		t.Errorf("GPU 2 labels %q: want no serial", r[2].Device.Labels)
	}
}

// TestNVMLWholeGPUGPM: on Hopper the profiling fields of a whole GPU come
// from GPM from the second round on, PCIe included (MiB/s to bytes/s), so
// the PCIe byte counters are not asked.
func TestNVMLWholeGPUGPM(t *testing.T) {
	n := h100Node(t)
	gpm := newFakeGPM(t, n.Server, true)
	gpm.graphics[gpuKey(1)] = 80
	gpm.sm[gpuKey(1)] = 60
	gpm.other = map[nvml.GpmMetricId]float64{
		nvml.GPM_METRIC_ANY_TENSOR_UTIL: 50, nvml.GPM_METRIC_DRAM_BW_UTIL: 25, nvml.GPM_METRIC_SM_OCCUPANCY: 12.5,
		nvml.GPM_METRIC_FP64_UTIL: 1, nvml.GPM_METRIC_FP32_UTIL: 2, nvml.GPM_METRIC_FP16_UTIL: 3,
		nvml.GPM_METRIC_PCIE_TX_PER_SEC: 100, nvml.GPM_METRIC_PCIE_RX_PER_SEC: 0.5,
	}
	b, err := newBackend(n.Server, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for round := 1; round <= 2; round++ {
		r, _ := b.Sample(time.Now())
		d := r[1]
		if !d.Device.Profiling {
			t.Fatal("GPU 1 without profiling")
		}
		if round == 1 {
			if d.Reading.Fields().Intersects(exposition.ProfilingFields()) {
				t.Errorf("profiling fields on the first round: %v", d.Reading.Fields())
			}
			continue
		}
		want := map[exposition.Field]float64{
			exposition.GREngineActive: 0.8, exposition.SMActive: 0.6, exposition.SMOccupancy: 0.125, exposition.PipeTensorActive: 0.5,
			exposition.DRAMActive: 0.25, exposition.PipeFP64Active: 0.01, exposition.PipeFP32Active: 0.02, exposition.PipeFP16Active: 0.03,
			exposition.PCIeTXBytes: 100 << 20, exposition.PCIeRXBytes: 1 << 19,
		}
		for f, w := range want {
			if v, ok := d.Reading.Get(f); !ok || v != w {
				t.Errorf("%s = %v (%v), want %v", f.Name(), v, ok, w)
			}
		}
	}
	if slices.Contains(n.fields[1].asked, nvml.FI_DEV_PCIE_COUNT_TX_BYTES) {
		t.Error("PCIe counters asked although GPM supplies the rates")
	}
}

func TestXIDEvents(t *testing.T) {
	defer func(d time.Duration) { xidRetryDelay = d }(xidRetryDelay)
	xidRetryDelay = time.Millisecond

	n := h100Node(t)
	n.Devices[5].(*server.Device).RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.ERROR_NOT_SUPPORTED }
	var order []string
	n.ShutdownFunc = func() nvml.Return {
		n.events.mu.Lock()
		defer n.events.mu.Unlock()
		order = append(n.events.order, "shutdown")
		return nvml.SUCCESS
	}
	reg := prometheus.NewRegistry()
	b, err := newBackend(n.Server, Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	xidOf := func(i int) (float64, bool) {
		r, _ := b.Sample(time.Now())
		return r[i].Reading.Get(exposition.XIDErrors)
	}
	if v, ok := xidOf(3); !ok || v != 0 {
		t.Fatalf("XID before any event %v (%v), want 0", v, ok)
	}
	if _, ok := xidOf(5); ok {
		t.Fatal("XID on a GPU that cannot register XID events")
	}
	n.events.send(n.Devices[3], 79)
	itestutil.Eventually(t, "XID 79 on GPU 3", func() bool { v, _ := xidOf(3); return v == 79 })
	if v, _ := xidOf(2); v != 0 {
		t.Errorf("GPU 2 XID %v, want 0", v)
	}

	// A failing wait is counted and survived.
	waitErrors := func() float64 {
		return testutil.ToFloat64(b.xid.waitErrors)
	}
	n.events.waitErr <- nvml.ERROR_UNKNOWN
	n.events.waitErr <- nvml.ERROR_UNKNOWN
	itestutil.Eventually(t, "two wait errors counted", func() bool { return waitErrors() == 2 })
	n.events.send(n.Devices[3], 48)
	itestutil.Eventually(t, "XID 48 on GPU 3 after the failures", func() bool { v, _ := xidOf(3); return v == 48 })
	if got := testutil.ToFloat64(b.xid.events); got != 2 {
		t.Errorf("%v XID events counted, want 2", got)
	}
	if n, err := testutil.GatherAndCount(reg, "gpu_metrics_server_xid_event_wait_errors_total", "gpu_metrics_server_xid_events_total"); err != nil || n != 2 {
		t.Errorf("self-metrics registered: %d, %v", n, err)
	}

	// Close: the watcher stops and frees its set before NVML shuts down.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []string{"free event set", "shutdown"}) {
		t.Errorf("close order %v", order)
	}
	select {
	case <-b.xid.done:
	default:
		t.Error("watcher goroutine still running after Close")
	}
}

// TestNVMLSlowFields: with a SlowInterval the slow fields are asked on the
// first round and then once per interval (and again when the clock goes
// back); the rounds between carry their last reading, the other fields are
// read every round, and a slow field unsupported at its read stays absent.
func TestNVMLSlowFields(t *testing.T) {
	n := h100Node(t)
	f := n.fields[0]
	f.values[nvml.FI_DEV_TOTAL_ENERGY_CONSUMPTION] = scriptedValue{v: 1000}
	f.values[nvml.FI_DEV_MEMORY_TEMP] = scriptedValue{v: 40}
	delete(f.values, nvml.FI_DEV_PCIE_REPLAY_COUNTER) // not supported
	b, err := newBackend(n.Server, Options{SlowInterval: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	t0 := time.Unix(1_800_000_000, 0)
	rounds := []struct {
		at          time.Duration
		energy, mem uint64 // the driver's values this round
		asked       bool   // the energy counter is in the request
		want        float64
	}{
		{0, 1000, 40, true, 1000},
		{time.Second, 2000, 41, false, 1000},
		{9 * time.Second, 3000, 42, false, 1000},
		{10 * time.Second, 4000, 43, true, 4000},
		{11 * time.Second, 5000, 44, false, 4000},
		{5 * time.Second, 6000, 45, true, 6000}, // the clock went back
		{6 * time.Second, 7000, 46, false, 6000},
	}
	for i, r := range rounds {
		f.values[nvml.FI_DEV_TOTAL_ENERGY_CONSUMPTION] = scriptedValue{v: r.energy}
		f.values[nvml.FI_DEV_MEMORY_TEMP] = scriptedValue{v: r.mem}
		readings, errs := b.Sample(t0.Add(r.at))
		if len(errs) != 0 {
			t.Fatalf("round %d: %v", i, errs)
		}
		if asked := slices.Contains(f.asked, nvml.FI_DEV_TOTAL_ENERGY_CONSUMPTION); asked != r.asked {
			t.Errorf("round %d: energy asked %v, want %v", i, asked, r.asked)
		}
		got := readings[0].Reading
		if v, ok := got.Get(exposition.TotalEnergy); !ok || v != r.want {
			t.Errorf("round %d: energy %v (%v), want %v", i, v, ok, r.want)
		}
		if v, ok := got.Get(exposition.MemoryTemp); !ok || v != float64(r.mem) {
			t.Errorf("round %d: memory temperature %v (%v), want this round's %v", i, v, ok, r.mem)
		}
		if v, ok := got.Get(exposition.PCIeReplayCounter); ok {
			t.Errorf("round %d: unsupported PCIe replay counter carried as %v", i, v)
		}
	}
}
