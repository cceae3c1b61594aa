package collector

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestSimUUIDs(t *testing.T) {
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
	if SimUUID("node-a", 0) == SimUUID("node-b", 0) {
		t.Error("UUIDs do not depend on the node")
	}
}

func TestSimSetAndPhysics(t *testing.T) {
	s := mustSim(t, "n", 2)
	f := func(v float64) *float64 { return &v }
	mem := uint64(10 * mib)
	if err := s.Set(1, SimUpdate{Utilization: f(100), MemoryUsedBytes: &mem}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(100, 0)
	s.Sample(t0)
	r, _ := s.Sample(t0.Add(2 * time.Second))
	if r[0].Reading.GPUUtil != 0 || r[0].Reading.PowerWatts != simIdleWatts || r[0].Reading.SMClockMHz != 345 {
		t.Errorf("idle GPU 0 = %+v", r[0].Reading)
	}
	g1 := r[1].Reading
	if g1.GPUUtil != 100 || g1.PowerWatts != simMaxWatts || g1.FBUsed != mem || g1.FBUsed+g1.FBFree != g1.FBTotal {
		t.Errorf("busy GPU 1 = %+v", g1)
	}
	if g1.EnergyMillijoules != uint64(simMaxWatts*2*1000) {
		t.Errorf("energy over 2 s at %v W = %d mJ", simMaxWatts, g1.EnergyMillijoules)
	}
	for _, tt := range []struct {
		name  string
		index int
		u     SimUpdate
	}{
		{"index too high", 2, SimUpdate{Utilization: f(1)}},
		{"index negative", -2, SimUpdate{Utilization: f(1)}},
		{"utilization above 100", 0, SimUpdate{Utilization: f(100.5)}},
		{"utilization negative", -1, SimUpdate{Utilization: f(-1)}},
	} {
		if err := s.Set(tt.index, tt.u); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func TestSimHandler(t *testing.T) {
	s := mustSim(t, "n", 2)
	h := SimHandler(s)
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
		{http.MethodPost, "gpu=0&utilization=abc", http.StatusBadRequest},
		{http.MethodPost, "gpu=0&utilization=101", http.StatusBadRequest},
		{http.MethodPost, "gpu=0", http.StatusBadRequest},
		{http.MethodPost, "gpu=0&memory_used_mib=-1", http.StatusBadRequest},
		{http.MethodPost, "gpu=0&memory_used_mib=99999999", http.StatusBadRequest},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, "/sim/set?"+tt.query, nil))
		if rec.Code != tt.want {
			t.Errorf("%s ?%s: %d %q, want %d", tt.method, tt.query, rec.Code, rec.Body, tt.want)
		}
	}
	r, _ := s.Sample(time.Now())
	if r[0].Reading.GPUUtil != 55 || r[1].Reading.GPUUtil != 90 || r[1].Reading.FBUsed != 100*mib {
		t.Errorf("after requests: %+v / %+v", r[0].Reading, r[1].Reading)
	}
}

func TestSimPods(t *testing.T) {
	s := mustSim(t, "n", 2)
	f := func(v float64) *float64 { return &v }
	m := func(v uint64) *uint64 { return &v }
	a := PodRef{Namespace: "inf", Name: "a"}
	b := PodRef{Namespace: "inf", Name: "b", UID: "uid-b"}
	for _, step := range []struct {
		pod PodRef
		u   SimUpdate
	}{
		{a, SimUpdate{Utilization: f(70), MemoryUsedBytes: m(10 * mib)}},
		{b, SimUpdate{Utilization: f(10)}},
		{b, SimUpdate{MemoryUsedBytes: m(5 * mib)}},
	} {
		if err := s.SetPod(1, step.pod, step.u); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Set(1, SimUpdate{Utilization: f(5), MemoryUsedBytes: m(1 * mib)}); err != nil {
		t.Fatal(err)
	}
	r, _ := s.Sample(time.Now())
	g := r[1]
	if g.Reading.GPUUtil != 85 || g.Reading.FBUsed != 16*mib {
		t.Errorf("GPU 1 = %v %% %d bytes, want its own values plus its pods': 85 %% 16 MiB", g.Reading.GPUUtil, g.Reading.FBUsed)
	}
	want := []ProcessUsage{
		{PID: simFirstPID, Pod: a, SMUtil: 70, MemoryUsed: 10 * mib, HasMemory: true, Running: true},
		{PID: simFirstPID + 1, Pod: b, SMUtil: 10, MemoryUsed: 5 * mib, HasMemory: true, Running: true},
	}
	if !g.Processes.Read || fmt.Sprint(g.Processes.List) != fmt.Sprint(want) {
		t.Errorf("processes %+v, want %+v", g.Processes, want)
	}
	if !r[0].Processes.Read || len(r[0].Processes.List) != 0 {
		t.Errorf("idle GPU 0 processes %+v", r[0].Processes)
	}

	// Pods beyond 100 % are capped on the device (MPS can oversubscribe).
	if err := s.SetPod(1, PodRef{UID: "uid-c"}, SimUpdate{Utilization: f(90)}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Sample(time.Now()); r[1].Reading.GPUUtil != 100 {
		t.Errorf("oversubscribed GPU at %v %%", r[1].Reading.GPUUtil)
	}
	// A process with nothing left ends.
	if err := s.SetPod(1, a, SimUpdate{Utilization: f(0), MemoryUsedBytes: m(0)}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Sample(time.Now()); len(r[1].Processes.List) != 2 || r[1].Processes.List[0].Pod != b {
		t.Errorf("after pod a ended: %+v", r[1].Processes.List)
	}

	for _, tt := range []struct {
		name  string
		index int
		pod   PodRef
		u     SimUpdate
	}{
		{"no pod", 0, PodRef{}, SimUpdate{Utilization: f(1)}},
		{"namespace without name", 0, PodRef{Namespace: "x"}, SimUpdate{Utilization: f(1)}},
		{"gpu out of range", 2, a, SimUpdate{Utilization: f(1)}},
		{"all GPUs", -1, a, SimUpdate{Utilization: f(1)}},
		{"utilization out of range", 0, a, SimUpdate{Utilization: f(101)}},
		{"memory beyond the GPU's", 0, a, SimUpdate{MemoryUsedBytes: m(simMemoryTotal + 1)}},
	} {
		if err := s.SetPod(tt.index, tt.pod, tt.u); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	// The GPU's own memory plus its pods' must fit.
	if err := s.Set(1, SimUpdate{MemoryUsedBytes: m(simMemoryTotal - 2*mib)}); err == nil {
		t.Error("GPU memory beyond what its pods leave accepted")
	}
}

func TestSimMIG(t *testing.T) {
	if _, err := NewSim("n", 2, []int{2}); err == nil {
		t.Fatal("MIG GPU out of range accepted")
	}
	s, err := NewSim("n", 2, []int{1})
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 2 {
		t.Fatalf("Len %d", s.Len())
	}
	f := func(v float64) *float64 { return &v }
	m := func(v uint64) *uint64 { return &v }
	if err := s.SetMIG(1, 2, SimUpdate{Utilization: f(70), MemoryUsedBytes: m(1000 * mib)}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMIG(1, 9, SimUpdate{Utilization: f(35)}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(100, 0)
	s.Sample(t0)
	r, _ := s.Sample(t0.Add(time.Second))
	if len(r) != 6 {
		t.Fatalf("%d readings, want GPU 0, GPU 1 and its 4 instances", len(r))
	}
	parent := r[1]
	if parent.Reading.Has(FieldGPUUtil) || !parent.Reading.Has(FieldPower) || parent.Reading.FBUsed != 1000*mib || parent.Processes.Read {
		t.Errorf("MIG-enabled GPU %+v", parent)
	}
	// 3 of 7 slices at 70 %, 1 at 35 %: 35 % of the GPU.
	if w := simIdleWatts + 0.35*(simMaxWatts-simIdleWatts); math.Abs(parent.Reading.PowerWatts-w) > 1e-9 {
		t.Errorf("power %v, want %v", parent.Reading.PowerWatts, w)
	}
	wantInst := []struct {
		gi      int
		profile string
		gr      float64
		total   uint64
	}{{2, "3g.40gb", 0.7, 40192 * mib}, {3, "2g.20gb", 0, 19968 * mib}, {9, "1g.10gb", 0.35, 9856 * mib}, {10, "1g.10gb", 0, 9856 * mib}}
	for i, w := range wantInst {
		d := r[2+i]
		mig := d.Device.MIG
		if mig == nil || mig.GPUInstance != w.gi || mig.Profile != w.profile || !mig.Activity || mig.ParentUUID != SimUUID("n", 1) {
			t.Fatalf("instance %d: %+v", i, mig)
		}
		if d.Device.UUID != SimMIGUUID("n", 1, w.gi) || d.Device.Index != 1 {
			t.Errorf("instance %d device %+v", i, d.Device)
		}
		if d.Reading.GREngineActive != w.gr || d.Reading.FBTotal != w.total || d.Reading.Has(FieldGPUUtil) {
			t.Errorf("instance %d reading %+v", i, d.Reading)
		}
	}
	for _, tt := range []struct {
		name      string
		index, gi int
	}{{"no such instance", 1, 4}, {"GPU not in MIG mode", 0, 2}, {"GPU out of range", 3, 2}} {
		if err := s.SetMIG(tt.index, tt.gi, SimUpdate{Utilization: f(1)}); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	if err := s.SetMIG(1, 9, SimUpdate{MemoryUsedBytes: m(9857 * mib)}); err == nil {
		t.Error("memory beyond the instance's accepted")
	}
	if err := s.SetPod(1, PodRef{Namespace: "a", Name: "b"}, SimUpdate{Utilization: f(1)}); err == nil {
		t.Error("pod process on a MIG-enabled GPU accepted")
	}
	// A GPU in MIG mode set as a whole sets each of its instances.
	if err := s.Set(1, SimUpdate{Utilization: f(20)}); err != nil {
		t.Fatal(err)
	}
	r, _ = s.Sample(t0.Add(2 * time.Second))
	for _, d := range r[2:] {
		if d.Reading.GREngineActive != 0.2 {
			t.Errorf("%s activity %v after setting the whole GPU", d.Device.UUID, d.Reading.GREngineActive)
		}
	}
}

func TestSimHandlerPodsAndMIG(t *testing.T) {
	s, err := NewSim("n", 2, []int{1})
	if err != nil {
		t.Fatal(err)
	}
	h := SimHandler(s)
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
	if r[0].Reading.GPUUtil != 85 || r[0].Reading.FBUsed != 100*mib {
		t.Errorf("GPU 0 %+v", r[0].Reading)
	}
	if r[3].Device.MIG.GPUInstance != 3 || r[3].Reading.GREngineActive != 0.5 {
		t.Errorf("MIG instance 3: %+v %+v", r[3].Device.MIG, r[3].Reading)
	}
}

// FuzzSimHandler: any query is either applied (204) or refused with a
// reason (400); nothing panics, and the devices stay within their ranges.
func FuzzSimHandler(f *testing.F) {
	for _, q := range []string{
		"gpu=0&pod=inf/a&utilization=70", "gpu=1&gpu_i_id=2&utilization=50&memory_used_mib=10",
		"gpu=all&utilization=5", "gpu=0&pod_uid=u&memory_used_mib=1", "gpu=-1&pod=a/b&utilization=1e309",
		"gpu=0&pod=%2F&utilization=NaN", "gpu=0&utilization=NaN", "gpu=1&gpu_i_id=-9&utilization=1",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, query string) {
		s, err := NewSim("n", 2, []int{1})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, "/sim/set", nil)
		req.URL.RawQuery = query
		rec := httptest.NewRecorder()
		SimHandler(s).ServeHTTP(rec, req)
		if rec.Code != http.StatusNoContent && rec.Code != http.StatusBadRequest {
			t.Fatalf("?%s: status %d", query, rec.Code)
		}
		r, _ := s.Sample(time.Now())
		for _, d := range r {
			u, g := d.Reading.GPUUtil, d.Reading.GREngineActive
			if u < 0 || u > 100 || math.IsNaN(u) || g < 0 || g > 1 || math.IsNaN(g) || d.Reading.FBUsed > d.Reading.FBTotal {
				t.Fatalf("?%s left %s at %+v", query, d.Device.UUID, d.Reading)
			}
		}
	})
}

// mustSim returns n simulated GPUs, none in MIG mode.
func mustSim(t *testing.T, node string, n int) *Sim {
	t.Helper()
	s, err := NewSim(node, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
