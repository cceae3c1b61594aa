package sim

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

func TestUUIDs(t *testing.T) {
	re := regexp.MustCompile(`^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	a, b := mustSim(t, "node-a", 3), mustSim(t, "node-a", 3)
	seen := map[string]bool{}
	ra, _ := a.Sample(time.Now())
	rb, _ := b.Sample(time.Now())
	for i := range ra {
		u := ra[i].Device.UUID
		if !re.MatchString(u) {
			t.Errorf("UUID %q is not in NVML's form", u)
		}
		if u != rb[i].Device.UUID {
			t.Errorf("UUID of GPU %d differs between runs", i)
		}
		if seen[u] {
			t.Errorf("duplicate UUID %q", u)
		}
		seen[u] = true
	}
	if UUID("node-a", 0) == UUID("node-b", 0) {
		t.Error("UUIDs do not depend on the node")
	}
}

// TestSimAllFields: a simulated whole GPU has every field NVML gives an
// H100 SXM on bare metal (not the vGPU license status, which only vGPU
// guests have), each in its unit's range, and the activity fields, power,
// temperatures, clocks and traffic move with utilization.
func TestSimAllFields(t *testing.T) {
	s := mustSim(t, "n", 2)
	f := func(v float64) *float64 { return &v }
	if err := s.Set(1, Update{Utilization: f(80)}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(100, 0)
	s.Sample(t0)
	r, _ := s.Sample(t0.Add(time.Second))
	idle, busy := r[0].Reading, r[1].Reading
	for fld := range exposition.NumFields {
		for _, rd := range []collector.Reading{idle, busy} {
			v, ok := rd.Get(fld)
			if ok != (fld != exposition.VGPULicenseStatus) {
				t.Errorf("%s present %v", fld.Name(), ok)
			}
			if ok && (v < 0 || v > fld.Family().Unit.Max()) {
				t.Errorf("%s = %v out of its unit's range", fld.Name(), v)
			}
		}
	}
	for _, fld := range []exposition.Field{exposition.GPUUtil, exposition.MemCopyUtil, exposition.PowerUsage, exposition.GPUTemp, exposition.MemoryTemp,
		exposition.SMClock, exposition.NVLinkBandwidthTotal, exposition.GREngineActive, exposition.SMActive, exposition.SMOccupancy,
		exposition.PipeTensorActive, exposition.DRAMActive, exposition.PipeFP32Active, exposition.PCIeTXBytes, exposition.PCIeRXBytes} {
		i, _ := idle.Get(fld)
		b, _ := busy.Get(fld)
		if b <= i {
			t.Errorf("%s: %v at 80 %% is not above %v idle", fld.Name(), b, i)
		}
	}
	if d := r[1].Device; !d.Profiling || d.Labels[exposition.DriverVersionLabel] != driverVersion || d.Labels[exposition.SerialLabel] == "" {
		t.Errorf("device %+v", d)
	}
	// The violation times accumulate: idle GPU 0 is held at low clocks,
	// GPU 1 at 95 % is power capped.
	if err := s.Set(1, Update{Utilization: f(95)}); err != nil {
		t.Fatal(err)
	}
	r, _ = s.Sample(t0.Add(3 * time.Second))
	if v := val(r[0], exposition.LowUtilViolation); v != 3e9 {
		t.Errorf("idle GPU's low-utilization violation %v ns after 3 s, want 3e9", v)
	}
	if v := val(r[1], exposition.PowerViolation); v != 1e9 {
		t.Errorf("power violation %v ns after 2 s at 95 %%, want 1e9", v)
	}
}

// TestSimErrors: an XID and remapped rows set on a GPU are reported by it
// (and, in MIG mode, by the GPU whose fields its instances take); counters
// do not go back; an instance or a pod has none of its own.
func TestSimErrors(t *testing.T) {
	s, err := New("n", 2, []int{1})
	if err != nil {
		t.Fatal(err)
	}
	u := func(v uint64) *uint64 { return &v }
	yes := true
	for _, gpu := range []int{0, 1} {
		if err := s.Apply(Request{GPU: gpu, Update: Update{XID: u(79), CorrectableRemappedRows: u(2), UncorrectableRemappedRows: u(1), RowRemapFailure: &yes}}); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := s.Sample(time.Unix(1, 0))
	for _, i := range []int{0, 1} {
		if val(r[i], exposition.XIDErrors) != 79 || val(r[i], exposition.CorrectableRemappedRows) != 2 ||
			val(r[i], exposition.UncorrectableRemappedRows) != 1 || val(r[i], exposition.RowRemapFailure) != 1 {
			t.Errorf("GPU %d reading %+v", i, r[i].Reading)
		}
	}
	if r[2].Reading.Fields().Has(exposition.XIDErrors) {
		t.Error("a MIG instance reports an XID of its own: it takes its GPU's (collector.Sampler)")
	}
	for _, bad := range []Request{
		{GPU: 0, Update: Update{CorrectableRemappedRows: u(1)}},
		{GPU: AllGPUs, Update: Update{UncorrectableRemappedRows: u(0)}},
		{GPU: 1, GPUInstance: gi(2), Update: Update{XID: u(13)}},
		{GPU: 0, Pod: collector.PodRef{UID: "p"}, Update: Update{XID: u(13)}},
	} {
		if err := s.Apply(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	r, _ = s.Sample(time.Unix(2, 0))
	if val(r[0], exposition.CorrectableRemappedRows) != 2 || val(r[0], exposition.XIDErrors) != 79 {
		t.Errorf("a refused change changed GPU 0: %+v", r[0].Reading)
	}
}

// TestSimLostGPU: a GPU made lost is reported lost once, as the NVML
// backend reports ERROR_GPU_IS_LOST, and then read no more, with its MIG
// instances; the other GPUs are read as before, and the sampler counts
// the loss once, as it counts NVML's.
func TestSimLostGPU(t *testing.T) {
	yes := true
	tests := []struct {
		name string
		mig  []int
		gpu  int
		// wantDevices are the devices read after the loss (of 3 GPUs).
		wantDevices int
		wantLost    []int
	}{
		{name: "a whole GPU", gpu: 1, wantDevices: 2, wantLost: []int{1}},
		{name: "a GPU in MIG mode goes with its instances", mig: []int{1}, gpu: 1, wantDevices: 2, wantLost: []int{1}},
		{name: "another GPU than the one in MIG mode", mig: []int{1}, gpu: 0, wantDevices: 1 + 1 + len(migLayout), wantLost: []int{0}},
		{name: "every GPU", gpu: AllGPUs, wantDevices: 0, wantLost: []int{0, 1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New("n", 3, tt.mig)
			if err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			sampler := collector.NewSampler(s, collector.SamplerOptions{Interval: time.Second, Registerer: reg})
			before := sampler.SampleOnce(time.Unix(1, 0))
			if err := s.Apply(Request{GPU: tt.gpu, Update: Update{Lost: &yes}}); err != nil {
				t.Fatal(err)
			}
			lostUUIDs := map[string]bool{}
			for _, i := range tt.wantLost {
				lostUUIDs[UUID("n", i)] = true
			}
			for round := 2; round <= 3; round++ {
				snap := sampler.SampleOnce(time.Unix(int64(round), 0))
				if len(snap.Devices) != tt.wantDevices {
					t.Errorf("round %d: %d devices, want %d", round, len(snap.Devices), tt.wantDevices)
				}
				for _, d := range snap.Devices {
					parent := d.Device.UUID
					if d.Device.MIG != nil {
						parent = d.Device.MIG.ParentUUID
					}
					if lostUUIDs[parent] {
						t.Errorf("round %d: %s still read, of a lost GPU", round, d.Device.UUID)
					}
				}
				var errs []string
				for _, e := range snap.Errors {
					if !e.Lost || !lostUUIDs[e.Device] {
						t.Errorf("round %d: error %v (lost %v), want only the lost GPUs'", round, e, e.Lost)
					}
					errs = append(errs, e.Device)
				}
				if want := len(tt.wantLost); round == 3 && len(errs) != 0 || round == 2 && len(errs) != want {
					t.Errorf("round %d: errors of %v, want the %d lost GPUs in the first round after the loss only", round, errs, want)
				}
			}
			// The others read as before.
			for _, d := range before.Devices {
				parent := d.Device.UUID
				if d.Device.MIG != nil {
					parent = d.Device.MIG.ParentUUID
				}
				if !lostUUIDs[parent] && !slices.ContainsFunc(sampler.SampleOnce(time.Unix(4, 0)).Devices, func(x collector.DeviceSample) bool { return x.Device.UUID == d.Device.UUID }) {
					t.Errorf("%s, of a GPU not lost, is gone", d.Device.UUID)
				}
			}
			if got := counterValue(t, reg, "gpu_metrics_server_devices_lost_total"); got != float64(len(tt.wantLost)) {
				t.Errorf("devices_lost_total %v, want %d", got, len(tt.wantLost))
			}
			if err := s.Apply(Request{GPU: tt.gpu, Update: Update{Lost: new(false)}}); err == nil {
				t.Error("a lost GPU was brought back")
			}
		})
	}
}

func TestSimSetAndPhysics(t *testing.T) {
	s := mustSim(t, "n", 2)
	f := func(v float64) *float64 { return &v }
	mem := uint64(10 * mib)
	if err := s.Set(1, Update{Utilization: f(100), MemoryUsedBytes: &mem}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(100, 0)
	s.Sample(t0)
	r, _ := s.Sample(t0.Add(2 * time.Second))
	if val(r[0], exposition.GPUUtil) != 0 || val(r[0], exposition.PowerUsage) != idleWatts || val(r[0], exposition.SMClock) != 345 {
		t.Errorf("idle GPU 0 = %+v", r[0].Reading)
	}
	if val(r[1], exposition.GPUUtil) != 100 || val(r[1], exposition.PowerUsage) != maxWatts || val(r[1], exposition.FBUsed) != float64(mem) ||
		val(r[1], exposition.FBUsed)+val(r[1], exposition.FBFree)+val(r[1], exposition.FBReserved) != memoryTotal {
		t.Errorf("busy GPU 1 = %+v", r[1].Reading)
	}
	if e := val(r[1], exposition.TotalEnergy); e != maxWatts*2*1000 {
		t.Errorf("energy over 2 s at %v W = %v mJ", maxWatts, e)
	}
	for _, tt := range []struct {
		name  string
		index int
		u     Update
	}{
		{"index too high", 2, Update{Utilization: f(1)}},
		{"index negative", -2, Update{Utilization: f(1)}},
		{"utilization above 100", 0, Update{Utilization: f(100.5)}},
		{"utilization negative", -1, Update{Utilization: f(-1)}},
	} {
		if err := s.Set(tt.index, tt.u); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func TestHandler(t *testing.T) {
	s := mustSim(t, "n", 2)
	h := Handler(s)
	tests := []struct {
		method, query string
		want          int
	}{
		{http.MethodPost, "gpu=all&utilization=55", http.StatusNoContent},
		{http.MethodPost, "gpu=1&utilization=90&memory_used_mib=100", http.StatusNoContent},
		{http.MethodGet, "gpu=all&utilization=1", http.StatusMethodNotAllowed},
		{http.MethodPost, "utilization=1", http.StatusBadRequest},
		{http.MethodPost, "gpu=x&utilization=1", http.StatusBadRequest},
		{http.MethodPost, "gpu=5&utilization=1", http.StatusBadRequest},
		{http.MethodPost, "gpu=-1&utilization=1", http.StatusBadRequest}, // AllGPUs's value is not "all"
		{http.MethodPost, "gpu=-2&utilization=1", http.StatusBadRequest},
		{http.MethodPost, "gpu=&utilization=1", http.StatusBadRequest},
		{http.MethodPost, "gpu=0&utilization=abc", http.StatusBadRequest},
		{http.MethodPost, "gpu=0&utilization=101", http.StatusBadRequest},
		{http.MethodPost, "gpu=0", http.StatusBadRequest},
		{http.MethodPost, "gpu=0&memory_used_mib=-1", http.StatusBadRequest},
		{http.MethodPost, "gpu=0&memory_used_mib=99999999", http.StatusBadRequest},
		{http.MethodPost, "gpu=0&memory_used_mib=81000", http.StatusBadRequest}, // beyond what the driver leaves free
		{http.MethodPost, "gpu=0&xid=79&correctable_remapped_rows=4", http.StatusNoContent},
		{http.MethodPost, "gpu=0&correctable_remapped_rows=3", http.StatusBadRequest}, // a counter going back
		{http.MethodPost, "gpu=0&xid=abc", http.StatusBadRequest},
		{http.MethodPost, "gpu=0&row_remap_failure=2", http.StatusBadRequest},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, "/sim/set?"+tt.query, nil))
		if rec.Code != tt.want {
			t.Errorf("%s ?%s: %d %q, want %d", tt.method, tt.query, rec.Code, rec.Body, tt.want)
		}
	}
	r, _ := s.Sample(time.Now())
	if val(r[0], exposition.GPUUtil) != 55 || val(r[1], exposition.GPUUtil) != 90 || val(r[1], exposition.FBUsed) != 100*mib ||
		val(r[0], exposition.XIDErrors) != 79 || val(r[0], exposition.CorrectableRemappedRows) != 4 {
		t.Errorf("after requests: %+v / %+v", r[0].Reading, r[1].Reading)
	}
}

func TestSimPods(t *testing.T) {
	s := mustSim(t, "n", 2)
	f := func(v float64) *float64 { return &v }
	m := func(v uint64) *uint64 { return &v }
	a := collector.PodRef{Namespace: "inf", Name: "a"}
	b := collector.PodRef{Namespace: "inf", Name: "b", UID: "uid-b"}
	for _, step := range []struct {
		pod collector.PodRef
		u   Update
	}{
		{a, Update{Utilization: f(70), MemoryUsedBytes: m(10 * mib)}},
		{b, Update{Utilization: f(10)}},
		{b, Update{MemoryUsedBytes: m(5 * mib)}},
	} {
		if err := s.Apply(Request{GPU: 1, Pod: step.pod, Update: step.u}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Set(1, Update{Utilization: f(5), MemoryUsedBytes: m(1 * mib)}); err != nil {
		t.Fatal(err)
	}
	r, _ := s.Sample(time.Now())
	g := r[1]
	if val(g, exposition.GPUUtil) != 85 || val(g, exposition.FBUsed) != 16*mib {
		t.Errorf("GPU 1 = %v %% %v bytes, want its own values plus its pods': 85 %% 16 MiB", val(g, exposition.GPUUtil), val(g, exposition.FBUsed))
	}
	want := []collector.ProcessUsage{
		{PID: firstPID, Pod: a, SMUtil: 70, MemoryUsed: 10 * mib, HasMemory: true, Running: true},
		{PID: firstPID + 1, Pod: b, SMUtil: 10, MemoryUsed: 5 * mib, HasMemory: true, Running: true},
	}
	if !g.Processes.Read || fmt.Sprint(g.Processes.List) != fmt.Sprint(want) {
		t.Errorf("processes %+v, want %+v", g.Processes, want)
	}
	if !r[0].Processes.Read || len(r[0].Processes.List) != 0 {
		t.Errorf("idle GPU 0 processes %+v", r[0].Processes)
	}

	// Pods beyond 100 % are capped on the device (MPS can oversubscribe).
	if err := s.Apply(Request{GPU: 1, Pod: collector.PodRef{UID: "uid-c"}, Update: Update{Utilization: f(90)}}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Sample(time.Now()); val(r[1], exposition.GPUUtil) != 100 {
		t.Errorf("oversubscribed GPU at %v %%", val(r[1], exposition.GPUUtil))
	}
	// A process with nothing left ends.
	if err := s.Apply(Request{GPU: 1, Pod: a, Update: Update{Utilization: f(0), MemoryUsedBytes: m(0)}}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Sample(time.Now()); len(r[1].Processes.List) != 2 || r[1].Processes.List[0].Pod != b {
		t.Errorf("after pod a ended: %+v", r[1].Processes.List)
	}

	for _, tt := range []struct {
		name  string
		index int
		pod   collector.PodRef
		u     Update
	}{
		{"namespace without name", 0, collector.PodRef{Namespace: "x"}, Update{Utilization: f(1)}},
		{"gpu out of range", 2, a, Update{Utilization: f(1)}},
		{"all GPUs", -1, a, Update{Utilization: f(1)}},
		{"utilization out of range", 0, a, Update{Utilization: f(101)}},
		{"memory beyond the GPU's", 0, a, Update{MemoryUsedBytes: m(memoryTotal + 1)}},
	} {
		if err := s.Apply(Request{GPU: tt.index, Pod: tt.pod, Update: tt.u}); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	// The GPU's own memory plus its pods' must fit.
	if err := s.Set(1, Update{MemoryUsedBytes: m(memoryTotal - 2*mib)}); err == nil {
		t.Error("GPU memory beyond what its pods leave accepted")
	}
}

func TestSimMIG(t *testing.T) {
	if _, err := New("n", 2, []int{2}); err == nil {
		t.Fatal("MIG GPU out of range accepted")
	}
	s, err := New("n", 2, []int{1})
	if err != nil {
		t.Fatal(err)
	}
	f := func(v float64) *float64 { return &v }
	m := func(v uint64) *uint64 { return &v }
	if err := s.Apply(Request{GPU: 1, GPUInstance: gi(2), Update: Update{Utilization: f(70), MemoryUsedBytes: m(1000 * mib)}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(Request{GPU: 1, GPUInstance: gi(9), Update: Update{Utilization: f(35)}}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(100, 0)
	s.Sample(t0)
	r, _ := s.Sample(t0.Add(time.Second))
	if len(r) != 6 {
		t.Fatalf("%d readings, want GPU 0, GPU 1 and its 4 instances", len(r))
	}
	parent := r[1]
	if parent.Reading.Fields().Has(exposition.GPUUtil) || !parent.Reading.Fields().Has(exposition.PowerUsage) || val(parent, exposition.FBUsed) != 1000*mib || parent.Processes.Read {
		t.Errorf("MIG-enabled GPU %+v", parent)
	}
	// 3 of 7 slices at 70 %, 1 at 35 %: 35 % of the GPU.
	if w := idleWatts + 0.35*(maxWatts-idleWatts); math.Abs(val(parent, exposition.PowerUsage)-w) > 1e-9 {
		t.Errorf("power %v, want %v", val(parent, exposition.PowerUsage), w)
	}
	wantInst := []struct {
		gi      int
		profile string
		gr      float64
		total   float64
	}{{2, "3g.40gb", 0.7, 40192 * mib}, {3, "2g.20gb", 0, 19968 * mib}, {9, "1g.10gb", 0.35, 9856 * mib}, {10, "1g.10gb", 0, 9856 * mib}}
	for i, w := range wantInst {
		d := r[2+i]
		mig := d.Device.MIG
		if mig == nil || mig.GPUInstance != w.gi || mig.Profile != w.profile || !d.Device.Profiling || mig.ParentUUID != UUID("n", 1) {
			t.Fatalf("instance %d: %+v", i, mig)
		}
		if d.Device.UUID != MIGUUID("n", 1, w.gi) || d.Device.Index != 1 {
			t.Errorf("instance %d device %+v", i, d.Device)
		}
		if val(d, exposition.GREngineActive) != w.gr || val(d, exposition.FBUsed)+val(d, exposition.FBFree) != w.total || d.Reading.Fields().Has(exposition.GPUUtil) {
			t.Errorf("instance %d reading %+v", i, d.Reading)
		}
	}
	for _, tt := range []struct {
		name      string
		index, gi int
	}{{"no such instance", 1, 4}, {"GPU not in MIG mode", 0, 2}, {"GPU out of range", 3, 2}} {
		if err := s.Apply(Request{GPU: tt.index, GPUInstance: gi(tt.gi), Update: Update{Utilization: f(1)}}); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	if err := s.Apply(Request{GPU: 1, GPUInstance: gi(9), Update: Update{MemoryUsedBytes: m(9857 * mib)}}); err == nil {
		t.Error("memory beyond the instance's accepted")
	}
	if err := s.Apply(Request{GPU: 1, Pod: collector.PodRef{Namespace: "a", Name: "b"}, Update: Update{Utilization: f(1)}}); err == nil {
		t.Error("pod process on a MIG-enabled GPU accepted")
	}
	// A GPU in MIG mode set as a whole sets each of its instances.
	if err := s.Set(1, Update{Utilization: f(20)}); err != nil {
		t.Fatal(err)
	}
	r, _ = s.Sample(t0.Add(2 * time.Second))
	for _, d := range r[2:] {
		if val(d, exposition.GREngineActive) != 0.2 {
			t.Errorf("%s activity %v after setting the whole GPU", d.Device.UUID, val(d, exposition.GREngineActive))
		}
	}
}

func TestHandlerPodsAndMIG(t *testing.T) {
	s, err := New("n", 2, []int{1})
	if err != nil {
		t.Fatal(err)
	}
	h := Handler(s)
	tests := []struct {
		query string
		want  int
	}{
		{"gpu=0&pod=inf/a&utilization=70", http.StatusNoContent},
		{"gpu=0&pod=inf/b&pod_uid=uid-b&utilization=10&memory_used_mib=100", http.StatusNoContent},
		{"gpu=0&pod_uid=uid-c&utilization=5", http.StatusNoContent},
		{"gpu=1&gpu_i_id=3&utilization=50", http.StatusNoContent},
		{"gpu=all&pod=inf/a&utilization=1", http.StatusBadRequest},
		{"gpu=0&pod=inf&utilization=1", http.StatusBadRequest},
		{"gpu=0&pod=/a&utilization=1", http.StatusBadRequest},
		{"gpu=0&pod=a/b/c&utilization=1", http.StatusBadRequest},
		{"gpu=1&pod=inf/a&utilization=1", http.StatusBadRequest},
		{"gpu=1&gpu_i_id=3&pod=inf/a&utilization=1", http.StatusBadRequest},
		{"gpu=all&gpu_i_id=3&utilization=1", http.StatusBadRequest},
		{"gpu=1&gpu_i_id=x&utilization=1", http.StatusBadRequest},
		{"gpu=1&gpu_i_id=5&utilization=1", http.StatusBadRequest},
		{"gpu=0&pod=inf/a", http.StatusBadRequest},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/sim/set?"+tt.query, nil))
		if rec.Code != tt.want {
			t.Errorf("?%s: %d %q, want %d", tt.query, rec.Code, rec.Body, tt.want)
		}
	}
	r, _ := s.Sample(time.Now())
	var pods []string
	for _, p := range r[0].Processes.List {
		pods = append(pods, fmt.Sprintf("%s/%s/%s=%v", p.Pod.Namespace, p.Pod.Name, p.Pod.UID, p.SMUtil))
	}
	if got := strings.Join(pods, " "); got != "inf/a/=70 inf/b/uid-b=10 //uid-c=5" {
		t.Errorf("GPU 0 processes %s", got)
	}
	if val(r[0], exposition.GPUUtil) != 85 || val(r[0], exposition.FBUsed) != 100*mib {
		t.Errorf("GPU 0 %+v", r[0].Reading)
	}
	if r[3].Device.MIG.GPUInstance != 3 || val(r[3], exposition.GREngineActive) != 0.5 {
		t.Errorf("MIG instance 3: %+v %+v", r[3].Device.MIG, r[3].Reading)
	}
}

// FuzzHandler: any query is either applied (204) or refused with a
// reason (400); nothing panics, and the devices stay within their ranges.
func FuzzHandler(f *testing.F) {
	for _, q := range []string{
		"gpu=0&pod=inf/a&utilization=70", "gpu=1&gpu_i_id=2&utilization=50&memory_used_mib=10",
		"gpu=all&utilization=5", "gpu=0&pod_uid=u&memory_used_mib=1", "gpu=-1&pod=a/b&utilization=1e309",
		"gpu=0&pod=%2F&utilization=NaN", "gpu=0&utilization=NaN", "gpu=1&gpu_i_id=-9&utilization=1",
		"gpu=1&xid=79&correctable_remapped_rows=2&row_remap_failure=1", "gpu=all&uncorrectable_remapped_rows=18446744073709551615",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, query string) {
		s, err := New("n", 2, []int{1})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, "/sim/set", nil)
		req.URL.RawQuery = query
		rec := httptest.NewRecorder()
		Handler(s).ServeHTTP(rec, req)
		if rec.Code != http.StatusNoContent && rec.Code != http.StatusBadRequest {
			t.Fatalf("?%s: status %d", query, rec.Code)
		}
		r, _ := s.Sample(time.Now())
		for _, d := range r {
			for f := range exposition.NumFields {
				if v, ok := d.Reading.Get(f); ok && !(v >= 0 && v <= f.Family().Unit.Max()) {
					t.Fatalf("?%s left %s's %s at %v", query, d.Device.UUID, f.Name(), v)
				}
			}
			if val(d, exposition.FBFree)+val(d, exposition.FBUsed)+val(d, exposition.FBReserved) > memoryTotal {
				t.Fatalf("?%s left %s's memory at %+v", query, d.Device.UUID, d.Reading)
			}
		}
	})
}

// val is field f of d's reading, 0 when absent.
func val(d collector.DeviceReading, f exposition.Field) float64 {
	v, _ := d.Reading.Get(f)
	return v
}

func gi(id int) *int { return &id }

// counterValue is the value of the counter name in reg (0 when absent).
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

// mustSim returns n simulated GPUs, none in MIG mode.
func mustSim(t *testing.T, node string, n int) *Sim {
	t.Helper()
	s, err := New(node, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
