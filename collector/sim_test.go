package collector

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"
)

func TestSimUUIDs(t *testing.T) {
	re := regexp.MustCompile(`^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	a, b := NewSim("node-a", 3), NewSim("node-a", 3)
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
	s := NewSim("n", 2)
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
	s := NewSim("n", 2)
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
