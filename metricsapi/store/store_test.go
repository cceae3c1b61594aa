package store

import (
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func sec(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := New(Config{Window: 15 * time.Second, StaleAfter: 6 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// full builds a sample of pod ns/podName on device dev with utilization u,
// memory used/total in MiB and power, taken at sampled.
func full(ns, podName, dev string, sampled time.Time, u, usedMiB, totalMiB, watts float64) Sample {
	return Sample{
		Namespace: ns, Pod: podName, Container: "main", Device: dev, Time: sampled,
		Present:     FieldUtilization | FieldMemoryUsed | FieldMemoryTotal | FieldPower,
		Utilization: u, MemoryUsedBytes: usedMiB * (1 << 20), MemoryTotalBytes: totalMiB * (1 << 20), PowerWatts: watts,
	}
}

// util builds a sample carrying only a utilization reading.
func util(ns, podName, dev string, sampled time.Time, u float64) Sample {
	return Sample{Namespace: ns, Pod: podName, Container: "main", Device: dev, Time: sampled, Present: FieldUtilization, Utilization: u}
}

type appendStep struct {
	source  string
	at      float64 // receipt, seconds after t0
	samples []Sample
}

func mustAppend(t *testing.T, s *Store, steps []appendStep) {
	t.Helper()
	for _, st := range steps {
		if _, err := s.Append(st.source, sec(st.at), st.samples); err != nil {
			t.Fatalf("Append(%q): %v", st.source, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Window: 0, StaleAfter: time.Second},
		{Window: time.Second, StaleAfter: 0},
		{Window: -time.Second, StaleAfter: time.Second},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted an invalid config", c)
		}
	}
}

func TestUtilizationWindow(t *testing.T) {
	// One reading every 2 s (sampled 0.5 s before receipt), utilization
	// rising by 10 each time: 0, 10, ..., 90 at receipts 1, 3, ..., 19.
	var steps []appendStep
	for i := 0; i < 10; i++ {
		at := 1 + 2*float64(i)
		steps = append(steps, appendStep{"agent-a", at, []Sample{util("ns", "p", "GPU-1", sec(at-0.5), float64(10*i))}})
	}
	tests := []struct {
		name       string
		now        float64
		wantOK     bool
		wantValue  float64
		wantTime   time.Time
		wantWindow time.Duration
	}{
		// At 19 the window [4, 19] holds receipts 5..19: values 20..90.
		{"full window", 19, true, 55, sec(18.5), 14 * time.Second},
		// At 20 the window [5, 20] still holds receipt 5.
		{"window edge inclusive", 20, true, 55, sec(18.5), 14 * time.Second},
		// At 21 receipt 5 (value 20) falls out: 30..90.
		{"oldest reading expired", 21, true, 60, sec(18.5), 12 * time.Second},
		// At 25 the newest reading (received 19) is exactly stale-after old;
		// the window [10, 25] holds receipts 11..19: values 50..90.
		{"at stale-after", 25, true, 70, sec(18.5), 8 * time.Second},
		{"stale", 25.001, false, 0, time.Time{}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			mustAppend(t, s, steps)
			v, ok := s.PodValue(Utilization, "ns", "p", sec(tc.now))
			if ok != tc.wantOK {
				t.Fatalf("PodValue ok = %v, want %v (value %+v)", ok, tc.wantOK, v)
			}
			if !ok {
				return
			}
			if math.Abs(v.Value-tc.wantValue) > 1e-9 || !v.Time.Equal(tc.wantTime) || v.Window != tc.wantWindow {
				t.Errorf("PodValue = %v at %v over %v, want %v at %v over %v", v.Value, v.Time, v.Window, tc.wantValue, tc.wantTime, tc.wantWindow)
			}
		})
	}
}

func TestAggregatesAcrossDevices(t *testing.T) {
	const ns = "ml"
	tests := []struct {
		name    string
		samples []Sample
		metric  Metric
		wantOK  bool
		want    float64
		// wantTime is the newest reading's time.
		wantTime time.Time
	}{
		{
			name: "two GPUs: utilization is their mean",
			samples: []Sample{
				full(ns, "p", "GPU-1", sec(0.1), 80, 1000, 4000, 100),
				full(ns, "p", "GPU-2", sec(0.3), 20, 3000, 4000, 50),
			},
			metric: Utilization, wantOK: true, want: 50, wantTime: sec(0.3),
		},
		{
			name: "two GPUs: memory used is the sum",
			samples: []Sample{
				full(ns, "p", "GPU-1", sec(0.1), 80, 1000, 4000, 100),
				full(ns, "p", "GPU-2", sec(0.3), 20, 3000, 4000, 50),
			},
			metric: MemoryUsedBytes, wantOK: true, want: 4000 * (1 << 20), wantTime: sec(0.3),
		},
		{
			name: "two GPUs: memory utilization is used over total",
			samples: []Sample{
				full(ns, "p", "GPU-1", sec(0.1), 80, 1000, 4000, 100),
				full(ns, "p", "GPU-2", sec(0.3), 20, 3000, 4000, 50),
			},
			metric: MemoryUtilization, wantOK: true, want: 50, wantTime: sec(0.3),
		},
		{
			name: "two GPUs: power is the sum",
			samples: []Sample{
				full(ns, "p", "GPU-1", sec(0.1), 80, 1000, 4000, 100),
				full(ns, "p", "GPU-2", sec(0.3), 20, 3000, 4000, 50),
			},
			metric: PowerWatts, wantOK: true, want: 150, wantTime: sec(0.3),
		},
		{
			name:    "idle GPU reports zero",
			samples: []Sample{full(ns, "p", "GPU-1", sec(0.1), 0, 0, 4000, 30)},
			metric:  Utilization, wantOK: true, want: 0, wantTime: sec(0.1),
		},
		{
			name: "a device without power makes the pod's power unknown",
			samples: []Sample{
				full(ns, "p", "GPU-1", sec(0.1), 80, 1000, 4000, 100),
				util(ns, "p", "GPU-2", sec(0.1), 20),
			},
			metric: PowerWatts, wantOK: false,
		},
		{
			name: "a device without utilization makes the pod's utilization unknown",
			samples: []Sample{
				util(ns, "p", "GPU-1", sec(0.1), 20),
				{Namespace: ns, Pod: "p", Device: "GPU-2", Time: sec(0.1), Present: FieldPower, PowerWatts: 10},
			},
			metric: Utilization, wantOK: false,
		},
		{
			name:    "zero total memory gives no memory utilization",
			samples: []Sample{full(ns, "p", "GPU-1", sec(0.1), 80, 0, 0, 100)},
			metric:  MemoryUtilization, wantOK: false,
		},
		{
			name: "two containers holding one GPU count it once",
			samples: []Sample{
				{Namespace: ns, Pod: "p", Container: "a", Device: "GPU-1", Time: sec(0.1), Present: FieldPower, PowerWatts: 70},
				{Namespace: ns, Pod: "p", Container: "b", Device: "GPU-1", Time: sec(0.1), Present: FieldPower, PowerWatts: 70},
			},
			metric: PowerWatts, wantOK: true, want: 70, wantTime: sec(0.1),
		},
		{
			name:    "unknown metric",
			samples: []Sample{full(ns, "p", "GPU-1", sec(0.1), 80, 1000, 4000, 100)},
			metric:  Metric(99), wantOK: false,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			mustAppend(t, s, []appendStep{{"agent-a", 1, tc.samples}})
			v, ok := s.PodValue(tc.metric, ns, "p", sec(1))
			if ok != tc.wantOK {
				t.Fatalf("PodValue(%v) ok = %v, want %v (value %+v)", tc.metric, ok, tc.wantOK, v)
			}
			if !ok {
				return
			}
			if math.Abs(v.Value-tc.want) > 1e-6 || !v.Time.Equal(tc.wantTime) {
				t.Errorf("PodValue(%v) = %v at %v, want %v at %v", tc.metric, v.Value, v.Time, tc.want, tc.wantTime)
			}
			if tc.metric != Utilization && v.Window != 0 {
				t.Errorf("PodValue(%v).Window = %v, want 0 for an instantaneous value", tc.metric, v.Window)
			}
		})
	}
}

func TestSharedGPUEachPodGetsDeviceValue(t *testing.T) {
	s := newStore(t)
	mustAppend(t, s, []appendStep{{"agent-a", 1, []Sample{
		util("ns", "a", "GPU-1", sec(0.5), 70),
		util("ns", "b", "GPU-1", sec(0.5), 70),
	}}})
	got := s.PodValues(Utilization, "ns", []string{"a", "b", "c"}, sec(1), nil)
	if len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" || got[0].Value.Value != 70 || got[1].Value.Value != 70 {
		t.Errorf("PodValues = %+v, want a and b at 70, c omitted", got)
	}
}

func TestDuplicateSnapshotsAreSkipped(t *testing.T) {
	s := newStore(t)
	smp := util("ns", "p", "GPU-1", sec(0.5), 40)
	r1, _ := s.Append("agent-a", sec(1), []Sample{smp})
	r2, _ := s.Append("agent-a", sec(3), []Sample{smp})
	older := util("ns", "p", "GPU-1", sec(0.2), 100)
	r3, _ := s.Append("agent-a", sec(4), []Sample{older})
	if r1.Stored != 1 || r2.Duplicates != 1 || r2.Stored != 0 || r3.Duplicates != 1 {
		t.Errorf("Append results = %+v, %+v, %+v; want stored, duplicate, duplicate", r1, r2, r3)
	}
	// The duplicate did not refresh the reading: it went stale 6 s after
	// its first receipt, although its source kept answering.
	if _, ok := s.PodValue(Utilization, "ns", "p", sec(7.5)); ok {
		t.Error("a reading repeated by its source stayed fresh past stale-after")
	}
	if st := s.Stats(); st.Appended != 1 || st.Duplicates != 2 {
		t.Errorf("Stats = %+v, want 1 appended and 2 duplicates", st)
	}
}

func TestRejectsIncompleteSamples(t *testing.T) {
	s := newStore(t)
	res, err := s.Append("agent-a", sec(1), []Sample{
		{Pod: "p", Device: "GPU-1", Time: sec(1)},
		{Namespace: "ns", Device: "GPU-1", Time: sec(1)},
		{Namespace: "ns", Pod: "p", Time: sec(1)},
		{Namespace: "ns", Pod: "p", Device: "GPU-1"},
	})
	if err != nil || res.Rejected != 4 || res.Stored != 0 {
		t.Errorf("Append = %+v, %v; want 4 rejected", res, err)
	}
	if _, err := s.Append("", sec(1), nil); err == nil {
		t.Error("Append accepted an empty source name")
	}
}

func TestSourceViewReplacesItsSeries(t *testing.T) {
	tests := []struct {
		name  string
		steps []appendStep
		// want lists the pods that must be served at receipt time of the
		// last step; all others must not be.
		want []string
	}{
		{
			name: "pod gone from its source is dropped at once",
			steps: []appendStep{
				{"agent-a", 1, []Sample{util("ns", "a", "GPU-1", sec(1), 10), util("ns", "b", "GPU-2", sec(1), 10)}},
				{"agent-a", 3, []Sample{util("ns", "a", "GPU-1", sec(3), 10)}},
			},
			want: []string{"a"},
		},
		{
			name: "device released by a pod is dropped, the other stays",
			steps: []appendStep{
				{"agent-a", 1, []Sample{util("ns", "a", "GPU-1", sec(1), 10), util("ns", "a", "GPU-2", sec(1), 90)}},
				{"agent-a", 3, []Sample{util("ns", "a", "GPU-1", sec(3), 10)}},
			},
			want: []string{"a"},
		},
		{
			name: "series taken over by another source survives the first source's omission",
			steps: []appendStep{
				{"agent-a", 1, []Sample{util("ns", "a", "GPU-1", sec(1), 10)}},
				{"dcgm-b", 2, []Sample{util("ns", "a", "GPU-1", sec(2), 10)}},
				{"agent-a", 3, nil},
			},
			want: []string{"a"},
		},
		{
			name: "empty view drops everything of the source",
			steps: []appendStep{
				{"agent-a", 1, []Sample{util("ns", "a", "GPU-1", sec(1), 10)}},
				{"agent-b", 1, []Sample{util("ns", "b", "GPU-9", sec(1), 10)}},
				{"agent-a", 3, nil},
			},
			want: []string{"b"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			mustAppend(t, s, tc.steps)
			now := sec(tc.steps[len(tc.steps)-1].at)
			got := s.PodValues(Utilization, "ns", []string{"a", "b"}, now, nil)
			var names []string
			for _, g := range got {
				names = append(names, g.Name)
			}
			if len(names) != len(tc.want) {
				t.Fatalf("served %v, want %v", names, tc.want)
			}
			for i := range names {
				if names[i] != tc.want[i] {
					t.Fatalf("served %v, want %v", names, tc.want)
				}
			}
		})
	}
}

func TestReleasedDeviceLeavesTheMean(t *testing.T) {
	s := newStore(t)
	mustAppend(t, s, []appendStep{
		{"agent-a", 1, []Sample{util("ns", "a", "GPU-1", sec(1), 10), util("ns", "a", "GPU-2", sec(1), 90)}},
		{"agent-a", 3, []Sample{util("ns", "a", "GPU-1", sec(3), 10)}},
	})
	if v, ok := s.PodValue(Utilization, "ns", "a", sec(3)); !ok || v.Value != 10 {
		t.Errorf("PodValue = %+v, %v; want 10 from the GPU still held", v, ok)
	}
}

func TestSweepBoundsMemory(t *testing.T) {
	s := newStore(t)
	// 100 pods from one source, then the source goes quiet while another
	// keeps appending: the sweep must free the quiet source's pods.
	var samples []Sample
	for i := 0; i < 100; i++ {
		samples = append(samples, util("ns", "p"+string(rune('a'+i%26))+string(rune('a'+i/26)), "GPU-1", sec(1), 50))
	}
	mustAppend(t, s, []appendStep{{"agent-a", 1, samples}})
	if st := s.Stats(); st.Pods != 100 || st.Series != 100 {
		t.Fatalf("after first append Stats = %+v, want 100 pods and series", st)
	}
	for at := 3.0; at <= 21; at += 2 {
		mustAppend(t, s, []appendStep{{"agent-b", at, []Sample{util("other", "q", "GPU-7", sec(at), 1)}}})
	}
	if st := s.Stats(); st.Pods != 1 || st.Series != 1 {
		t.Errorf("after the sweep Stats = %+v, want only the live pod", st)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.sources) != 1 {
		t.Errorf("sources held = %d, want 1 (the quiet source forgotten)", len(s.sources))
	}
	for _, p := range s.pods {
		for _, sr := range p.devices {
			// Receipts 7..21 are within the 15 s window of the last sweep's
			// time at the latest; older points must be gone.
			if len(sr.points) > 8 {
				t.Errorf("series holds %d points, want at most 8 within the window", len(sr.points))
			}
		}
	}
}

func TestPointsCapped(t *testing.T) {
	s := newStore(t)
	// 200 readings within one second: far above any expected feed rate.
	for i := 0; i < 200; i++ {
		at := 1 + float64(i)/200
		mustAppend(t, s, []appendStep{{"fast", at, []Sample{util("ns", "p", "GPU-1", sec(at), float64(i))}}})
	}
	s.mu.RLock()
	n := len(s.pods[podKey{"ns", "p"}].devices[0].points)
	s.mu.RUnlock()
	if n != maxPoints {
		t.Errorf("points held = %d, want the cap %d", n, maxPoints)
	}
	// The mean covers the newest maxPoints readings: 136..199.
	v, ok := s.PodValue(Utilization, "ns", "p", sec(2))
	if want := (136.0 + 199.0) / 2; !ok || math.Abs(v.Value-want) > 1e-9 {
		t.Errorf("PodValue = %+v, %v; want %v", v, ok, want)
	}
}

func TestHasSynced(t *testing.T) {
	s := newStore(t)
	if s.HasSynced() {
		t.Fatal("empty store reports synced")
	}
	mustAppend(t, s, []appendStep{{"standalone", 1, nil}})
	if !s.HasSynced() {
		t.Error("store fed once does not report synced")
	}
}

func TestMetricString(t *testing.T) {
	for m, want := range map[Metric]string{
		Utilization: "utilization", MemoryUsedBytes: "memory_used_bytes",
		MemoryUtilization: "memory_utilization", PowerWatts: "power_watts", Metric(7): "Metric(7)",
	} {
		if got := m.String(); got != want {
			t.Errorf("Metric(%d).String() = %q, want %q", int(m), got, want)
		}
	}
}
