package store

import (
	"math"
	"strings"
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

// at returns smp with precedence prec.
func at(prec uint8, smp Sample) Sample {
	smp.Precedence = prec
	return smp
}

// memory builds a sample carrying only memory used and total, in MiB.
func memory(ns, podName, dev string, sampled time.Time, usedMiB, totalMiB float64) Sample {
	return Sample{Namespace: ns, Pod: podName, Container: "main", Device: dev, Time: sampled, Present: FieldMemoryUsed | FieldMemoryTotal,
		MemoryUsedBytes: usedMiB * (1 << 20), MemoryTotalBytes: totalMiB * (1 << 20)}
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
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // empty: valid
	}{
		{"zero window", Config{Window: 0, StaleAfter: time.Second}, "window must be positive"},
		{"negative window", Config{Window: -time.Second, StaleAfter: time.Second}, "window must be positive"},
		{"zero stale-after", Config{Window: time.Second, StaleAfter: 0}, "stale-after must be positive"},
		{"negative feed interval", Config{Window: time.Second, StaleAfter: time.Second, FeedInterval: -time.Second}, "feed interval must not be negative"},
		{"no feed interval skips the window check", Config{Window: time.Hour, StaleAfter: time.Second}, ""},
		{"window of MaxWindowFeeds feeds", Config{Window: MaxWindowFeeds * 2 * time.Second, StaleAfter: 6 * time.Second, FeedInterval: 2 * time.Second}, ""},
		{"5m window at 2 s", Config{Window: 5 * time.Minute, StaleAfter: 6 * time.Second, FeedInterval: 2 * time.Second},
			"window 5m0s spans more than 128 feeds of 2s, more than the store holds: use a window of at most 4m16s or a longer feed interval"},
		{"one nanosecond too long", Config{Window: MaxWindowFeeds*time.Second + 1, StaleAfter: time.Second, FeedInterval: time.Second}, "spans more than 128 feeds"},
		{"huge feed interval", Config{Window: time.Hour, StaleAfter: time.Second, FeedInterval: time.Duration(math.MaxInt64)}, ""},
		{"step-up threshold", Config{Window: time.Second, StaleAfter: time.Second, StepUp: 10}, ""},
		{"step-up threshold 100", Config{Window: time.Second, StaleAfter: time.Second, StepUp: 100}, ""},
		{"negative step-up threshold", Config{Window: time.Second, StaleAfter: time.Second, StepUp: -1}, "step-up must be 0-100 percentage points, got -1"},
		{"step-up threshold above 100", Config{Window: time.Second, StaleAfter: time.Second, StepUp: 100.5}, "step-up must be 0-100"},
		{"step-up threshold NaN", Config{Window: time.Second, StaleAfter: time.Second, StepUp: math.NaN()}, "step-up must be 0-100"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate(%+v) = %v, want nil", tc.cfg, err)
				}
				if _, err := New(tc.cfg); err != nil {
					t.Fatalf("New(%+v) = %v", tc.cfg, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate(%+v) = %v, want an error containing %q", tc.cfg, err, tc.wantErr)
			}
			if _, err := New(tc.cfg); err == nil {
				t.Errorf("New(%+v) accepted an invalid config", tc.cfg)
			}
		})
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

// TestDuplicatesPerPrecedence checks that readings are deduplicated within
// one precedence only: the agent's snapshot time and dcgm-exporter's receipt
// time come from different clocks.
func TestDuplicatesPerPrecedence(t *testing.T) {
	tests := []struct {
		name          string
		steps         []appendStep
		wantStored    uint64
		wantDuplicate uint64
	}{
		{
			name: "agent snapshot older than dcgm-exporter's receipt is stored",
			steps: []appendStep{
				{"dcgm", 1, []Sample{at(PrecedenceExporter, util("ns", "p", "GPU-1", sec(1), 80))}},
				{"agent", 1.1, []Sample{at(PrecedenceAgent, util("ns", "p", "GPU-1", sec(0.5), 70))}},
			},
			wantStored: 2,
		},
		{
			name: "repeated agent snapshot is a duplicate, exporter readings between",
			steps: []appendStep{
				{"agent", 1, []Sample{at(PrecedenceAgent, util("ns", "p", "GPU-1", sec(0.5), 70))}},
				{"dcgm", 2, []Sample{at(PrecedenceExporter, util("ns", "p", "GPU-1", sec(2), 80))}},
				{"agent", 3, []Sample{at(PrecedenceAgent, util("ns", "p", "GPU-1", sec(0.5), 70))}},
			},
			wantStored: 2, wantDuplicate: 1,
		},
		{
			name: "one snapshot twice in one append is stored once",
			steps: []appendStep{
				{"agent", 1, []Sample{at(PrecedenceAgent, util("ns", "p", "GPU-1", sec(0.5), 70)), at(PrecedenceAgent, util("ns", "p", "GPU-1", sec(0.5), 70))}},
			},
			wantStored: 1, wantDuplicate: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			mustAppend(t, s, tc.steps)
			if st := s.Stats(); st.Appended != tc.wantStored || st.Duplicates != tc.wantDuplicate {
				t.Errorf("Stats = %+v, want %d stored and %d duplicates", st, tc.wantStored, tc.wantDuplicate)
			}
		})
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

// query is one PodValue call and its expected answer.
type query struct {
	pod    string
	metric Metric
	now    float64 // seconds after t0
	wantOK bool
	want   float64
}

func checkQueries(t *testing.T, s *Store, queries []query) {
	t.Helper()
	for _, q := range queries {
		v, ok := s.PodValue(q.metric, "ns", q.pod, sec(q.now))
		if ok != q.wantOK || ok && math.Abs(v.Value-q.want) > 1e-6 {
			t.Errorf("PodValue(%v, %s) at %v = %v, %v; want %v, %v", q.metric, q.pod, q.now, v.Value, ok, q.want, q.wantOK)
		}
	}
}

// TestOmittedReadingsExpire checks that a reading a source leaves out of a
// round (a transient error on one field or one device) is served until it
// is stale-after old, and not after.
func TestOmittedReadingsExpire(t *testing.T) {
	tests := []struct {
		name    string
		steps   []appendStep
		queries []query
	}{
		{
			name: "pod omitted by its source stays served until stale-after",
			steps: []appendStep{
				{"agent-a", 1, []Sample{util("ns", "a", "GPU-1", sec(1), 10), util("ns", "b", "GPU-2", sec(1), 20)}},
				{"agent-a", 3, []Sample{util("ns", "a", "GPU-1", sec(3), 10)}},
				{"agent-a", 5, []Sample{util("ns", "a", "GPU-1", sec(5), 10)}},
			},
			queries: []query{
				{"b", Utilization, 5, true, 20},
				{"b", Utilization, 7, true, 20},
				{"b", Utilization, 7.001, false, 0},
				{"a", Utilization, 7.001, true, 10},
			},
		},
		{
			name: "device released by a pod leaves the mean after stale-after",
			steps: []appendStep{
				{"agent-a", 1, []Sample{util("ns", "a", "GPU-1", sec(1), 10), util("ns", "a", "GPU-2", sec(1), 90)}},
				{"agent-a", 3, []Sample{util("ns", "a", "GPU-1", sec(3), 10)}},
				{"agent-a", 5, []Sample{util("ns", "a", "GPU-1", sec(5), 10)}},
				{"agent-a", 7, []Sample{util("ns", "a", "GPU-1", sec(7), 10)}},
			},
			queries: []query{
				{"a", Utilization, 5, true, 50},
				{"a", Utilization, 7.5, true, 10},
			},
		},
		{
			name: "a field missing for a round keeps its reading until stale-after",
			steps: []appendStep{
				{"agent-a", 1, []Sample{full("ns", "a", "GPU-1", sec(1), 50, 1000, 4000, 100)}},
				{"agent-a", 3, []Sample{util("ns", "a", "GPU-1", sec(3), 60)}},
				{"agent-a", 5, []Sample{util("ns", "a", "GPU-1", sec(5), 70)}},
				{"agent-a", 7, []Sample{util("ns", "a", "GPU-1", sec(7), 80)}},
			},
			queries: []query{
				{"a", PowerWatts, 5, true, 100},
				{"a", MemoryUtilization, 5, true, 25},
				{"a", PowerWatts, 7.001, false, 0},
				{"a", MemoryUsedBytes, 7.001, false, 0},
				{"a", Utilization, 7.001, true, 65},
			},
		},
		{
			name: "utilization missing for a round keeps the window",
			steps: []appendStep{
				{"agent-a", 1, []Sample{full("ns", "a", "GPU-1", sec(1), 10, 1000, 4000, 100)}},
				{"agent-a", 3, []Sample{full("ns", "a", "GPU-1", sec(3), 20, 1000, 4000, 100)}},
				{"agent-a", 5, []Sample{memory("ns", "a", "GPU-1", sec(5), 2000, 4000)}},
			},
			queries: []query{
				{"a", Utilization, 5, true, 15},
				{"a", MemoryUsedBytes, 5, true, 2000 * (1 << 20)},
				{"a", PowerWatts, 5, true, 100},
				{"a", Utilization, 9, true, 15},
				{"a", Utilization, 9.001, false, 0},
			},
		},
		{
			name: "source gone: everything expires at stale-after",
			steps: []appendStep{
				{"agent-a", 1, []Sample{util("ns", "a", "GPU-1", sec(1), 10)}},
				{"agent-b", 1, []Sample{util("ns", "b", "GPU-9", sec(1), 10)}},
				{"agent-a", 3, nil},
				{"agent-b", 3, []Sample{util("ns", "b", "GPU-9", sec(3), 10)}},
			},
			queries: []query{
				{"a", Utilization, 3, true, 10},
				{"a", Utilization, 7.001, false, 0},
				{"b", Utilization, 7.001, true, 10},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			mustAppend(t, s, tc.steps)
			checkQueries(t, s, tc.queries)
		})
	}
}

// TestPrecedence checks how the readings of two sources of one device of
// one pod combine: field by field, the highest precedence with a fresh
// reading wins, and the lower one fills in where it has none.
func TestPrecedence(t *testing.T) {
	const (
		agent = PrecedenceAgent
		dcgm  = PrecedenceExporter
	)
	// exporterRounds is dcgm-exporter reporting utilization u, 3000 of
	// 4000 MiB and 200 W, stamped with its receipt, every 2 s from first
	// to last.
	exporterRounds := func(first, last, u float64) []appendStep {
		var steps []appendStep
		for x := first; x <= last; x += 2 {
			steps = append(steps, appendStep{"dcgm", x, []Sample{at(dcgm, full("ns", "p", "GPU-1", sec(x), u, 3000, 4000, 200))}})
		}
		return steps
	}
	// agentRounds is the agent reporting the samples mk builds every 2 s
	// from first to last, received 0.1 s after dcgm-exporter's of the
	// round, its snapshot taken 0.4 s before dcgm-exporter's stamp.
	agentRounds := func(first, last float64, mk func(sampled time.Time) Sample) []appendStep {
		var steps []appendStep
		for x := first; x <= last; x += 2 {
			steps = append(steps, appendStep{"agent", x + 0.1, []Sample{at(agent, mk(sec(x-0.4)))}})
		}
		return steps
	}
	interleave := func(a, b []appendStep) []appendStep {
		var out []appendStep
		for len(a) > 0 || len(b) > 0 {
			if len(b) == 0 || len(a) > 0 && a[0].at <= b[0].at {
				out, a = append(out, a[0]), a[1:]
			} else {
				out, b = append(out, b[0]), b[1:]
			}
		}
		return out
	}
	tests := []struct {
		name    string
		steps   []appendStep
		queries []query
	}{
		{
			name: "both report every field: the agent's win, never averaged",
			steps: interleave(exporterRounds(1, 9, 80), agentRounds(1, 9, func(ts time.Time) Sample {
				return full("ns", "p", "GPU-1", ts, 70, 1000, 4000, 100)
			})),
			queries: []query{
				{"p", Utilization, 9.1, true, 70},
				{"p", MemoryUsedBytes, 9.1, true, 1000 * (1 << 20)},
				{"p", MemoryUtilization, 9.1, true, 25},
				{"p", PowerWatts, 9.1, true, 100},
			},
		},
		{
			name: "agent reports memory only (A100 MIG): dcgm-exporter fills in utilization and power",
			steps: interleave(exporterRounds(1, 9, 25), agentRounds(1, 9, func(ts time.Time) Sample {
				return memory("ns", "p", "GPU-1", ts, 1000, 4000)
			})),
			queries: []query{
				{"p", Utilization, 9.1, true, 25},
				{"p", MemoryUsedBytes, 9.1, true, 1000 * (1 << 20)},
				{"p", MemoryUtilization, 9.1, true, 25},
				{"p", PowerWatts, 9.1, true, 200},
			},
		},
		{
			name: "agent gone stale: dcgm-exporter's readings alone, not mixed with the agent's in the window",
			steps: interleave(exporterRounds(1, 9, 80), agentRounds(1, 3, func(ts time.Time) Sample {
				return full("ns", "p", "GPU-1", ts, 10, 1000, 4000, 100)
			})),
			queries: []query{
				// The agent's newest reading, received at 3.1, is fresh
				// until 9.1.
				{"p", Utilization, 9, true, 10},
				{"p", PowerWatts, 9, true, 100},
				{"p", Utilization, 9.2, true, 80},
				{"p", MemoryUsedBytes, 9.2, true, 3000 * (1 << 20)},
				{"p", PowerWatts, 9.2, true, 200},
			},
		},
		{
			name: "agent back after going stale: its new points alone",
			steps: interleave(exporterRounds(1, 13, 80), append(
				agentRounds(1, 1, func(ts time.Time) Sample { return util("ns", "p", "GPU-1", ts, 10) }),
				agentRounds(13, 13, func(ts time.Time) Sample { return util("ns", "p", "GPU-1", ts, 30) })...)),
			queries: []query{
				{"p", Utilization, 13.1, true, 30},
			},
		},
		{
			name: "dcgm-exporter first, then the agent with an older snapshot time",
			steps: []appendStep{
				{"dcgm", 1, []Sample{at(dcgm, full("ns", "p", "GPU-1", sec(1), 80, 3000, 4000, 200))}},
				{"agent", 1.1, []Sample{at(agent, full("ns", "p", "GPU-1", sec(0.5), 70, 1000, 4000, 100))}},
			},
			queries: []query{
				{"p", Utilization, 1.1, true, 70},
				{"p", PowerWatts, 1.1, true, 100},
			},
		},
		{
			name: "a lower precedence arriving later does not replace a fresh higher one",
			steps: []appendStep{
				{"agent", 1, []Sample{at(agent, full("ns", "p", "GPU-1", sec(0.5), 70, 1000, 4000, 100))}},
				{"dcgm", 2, []Sample{at(dcgm, full("ns", "p", "GPU-1", sec(2), 80, 3000, 4000, 200))}},
			},
			queries: []query{
				{"p", Utilization, 2, true, 70},
				{"p", MemoryUsedBytes, 2, true, 1000 * (1 << 20)},
				{"p", PowerWatts, 2, true, 100},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			mustAppend(t, s, tc.steps)
			checkQueries(t, s, tc.queries)
		})
	}
}

func TestSweepBoundsMemory(t *testing.T) {
	// rounds is src reporting pod other/q at prec every 2 s from 3 to 21.
	rounds := func(src string, prec uint8) []appendStep {
		var steps []appendStep
		for x := 3.0; x <= 21; x += 2 {
			steps = append(steps, appendStep{src, x, []Sample{at(prec, util("other", "q", "GPU-7", sec(x), 1))}})
		}
		return steps
	}
	tests := []struct {
		name string
		// prec is the precedence of the 100 pods agent-a reports at 1;
		// later are the appends that follow.
		prec  uint8
		later []appendStep
	}{
		{"a source goes quiet", PrecedenceAgent, rounds("agent-b", PrecedenceAgent)},
		{"a source omits the pods it used to report", PrecedenceAgent, rounds("agent-a", PrecedenceAgent)},
		{"the exporter's pods go quiet while the agent reports another", PrecedenceExporter, rounds("agent-b", PrecedenceAgent)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			var samples []Sample
			for i := 0; i < 100; i++ {
				samples = append(samples, at(tc.prec, util("ns", "p"+string(rune('a'+i%26))+string(rune('a'+i/26)), "GPU-1", sec(1), 50)))
			}
			mustAppend(t, s, []appendStep{{"agent-a", 1, samples}})
			if st := s.Stats(); st.Pods != 100 || st.Series != 100 {
				t.Fatalf("after first append Stats = %+v, want 100 pods and series", st)
			}
			mustAppend(t, s, tc.later)
			if st := s.Stats(); st.Pods != 1 || st.Series != 1 {
				t.Errorf("after the sweep Stats = %+v, want only the live pod", st)
			}
			s.pods.each(func(_ objectKey, e *entry) {
				for _, dv := range e.view.Load().devices {
					// Receipts 7..21 are within the 15 s window of the
					// last sweep's time at the latest; older points must
					// be gone.
					for _, lv := range dv.levels {
						if len(lv.points) > 8 {
							t.Errorf("series holds %d points, want at most 8 within the window", len(lv.points))
						}
					}
				}
			})
		})
	}
}

// TestSweepDropsStaleLevel checks that a series keeps only the precedences
// with a fresh reading once swept.
func TestSweepDropsStaleLevel(t *testing.T) {
	s := newStore(t)
	steps := []appendStep{{"dcgm", 1, []Sample{at(PrecedenceExporter, util("ns", "p", "GPU-1", sec(1), 80))}}}
	for x := 1.0; x <= 21; x += 2 {
		steps = append(steps, appendStep{"agent", x, []Sample{at(PrecedenceAgent, util("ns", "p", "GPU-1", sec(x), 70))}})
	}
	mustAppend(t, s, steps)
	levels := s.pods.load(objectKey{"ns", "p"}).devices[0].levels
	n, prec := len(levels), levels[0].precedence
	if n != 1 || prec != PrecedenceAgent {
		t.Errorf("series holds %d precedences (the first %d), want only the agent's", n, prec)
	}
}

func TestPointsCapped(t *testing.T) {
	s := newStore(t)
	// 600 readings within one second: far above any expected feed rate.
	for i := 0; i < 600; i++ {
		x := 1 + float64(i)/600
		mustAppend(t, s, []appendStep{{"fast", x, []Sample{util("ns", "p", "GPU-1", sec(x), float64(i)/10)}}})
	}
	n := len(s.pods.load(objectKey{"ns", "p"}).devices[0].levels[0].points)
	if n != maxPoints || maxPoints != 2*MaxWindowFeeds {
		t.Errorf("points held = %d, want the cap %d (twice MaxWindowFeeds)", n, maxPoints)
	}
	// The mean covers the newest maxPoints readings: 34.4..59.9.
	v, ok := s.PodValue(Utilization, "ns", "p", sec(2))
	if want := (34.4 + 59.9) / 2; !ok || math.Abs(v.Value-want) > 1e-9 {
		t.Errorf("PodValue = %+v, %v; want %v", v, ok, want)
	}
}

// TestLongWindowHeldInFull checks that a window of MaxWindowFeeds feeds is
// served in full, also when the source feeds faster than expected.
func TestLongWindowHeldInFull(t *testing.T) {
	const interval = 2 * time.Second
	tests := []struct {
		name string
		feed time.Duration
	}{
		{"at the expected interval", interval},
		{"1.5 times as fast as expected (jitter)", interval * 2 / 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Window: MaxWindowFeeds * interval, StaleAfter: 3 * interval, FeedInterval: interval}
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			// Utilization 0, 1, 2, ..., one per feed, over two windows.
			feeds := int(2 * cfg.Window / tc.feed)
			var last time.Time
			for i := 0; i < feeds; i++ {
				last = t0.Add(time.Duration(i) * tc.feed)
				if _, err := s.Append("agent", last, []Sample{util("ns", "p", "GPU-1", last, float64(i))}); err != nil {
					t.Fatal(err)
				}
			}
			// The window [last − Window, last] holds the feeds from first
			// to feeds−1, its oldest edge included.
			first := feeds - 1 - int(cfg.Window/tc.feed)
			want, wantWindow := float64(first+feeds-1)/2, time.Duration(feeds-1-first)*tc.feed
			v, ok := s.PodValue(Utilization, "ns", "p", last)
			if !ok || v.Value != want || v.Window != wantWindow {
				t.Errorf("PodValue = %+v, %v; want %v over %v", v, ok, want, wantWindow)
			}
		})
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
		MemoryUtilization: "memory_utilization", PowerWatts: "power_watts",
		UtilizationMax: "utilization_max", Devices: "devices", Metric(7): "Metric(7)",
	} {
		if got := m.String(); got != want {
			t.Errorf("Metric(%d).String() = %q, want %q", int(m), got, want)
		}
	}
}
