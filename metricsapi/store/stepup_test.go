package store

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// TestStepUp feeds one device's utilization every 2 s and checks the
// served mean after the last point: with Config.StepUp the window
// restarts only where the load rose to a new level.
func TestStepUp(t *testing.T) {
	tests := []struct {
		name   string
		stepUp float64 // Config.StepUp
		points []float64
		want   float64
		// wantWindow is the served Value.Window in feeds (2 s each).
		wantWindow int
	}{
		{"step up restarts at its second point", 10, []float64{10, 10, 10, 10, 90, 90}, 90, 1},
		{"step up, first point only", 10, []float64{10, 10, 10, 10, 90}, (4*10 + 90) / 5.0, 4},
		{"step up with a partial first point", 10, []float64{10, 10, 10, 10, 40, 90}, 65, 1},
		{"the new level then fills its own window", 10, []float64{10, 10, 10, 10, 90, 90, 80}, (90 + 90 + 80) / 3.0, 2},
		{"a step down does not restart", 10, []float64{90, 88, 92, 90, 10, 12}, (90 + 88 + 92 + 90 + 10 + 12) / 6.0, 5},
		{"off: the plain window mean", 0, []float64{10, 10, 10, 10, 90, 90}, (4*10 + 2*90) / 6.0, 5},
		{"one spike does not restart", 10, []float64{10, 10, 10, 10, 90, 10}, (5*10 + 90) / 6.0, 5},
		{"a spike and a drop do not restart", 10, []float64{50, 50, 50, 90, 10}, 50, 4},
		{"a rise within the minimum does not restart", 10, []float64{50, 50, 50, 50, 59, 60}, (4*50 + 59 + 60) / 6.0, 5},
		{"noise wider than a third of the rise does not restart", 10, []float64{40, 50, 45, 44, 75, 76}, (40 + 50 + 45 + 44 + 75 + 76) / 6.0, 5},
		{"the same rise on a quiet load restarts", 10, []float64{50, 51, 49, 50, 75, 76}, 75.5, 1},
		{"fewer than three points before", 10, []float64{10, 10, 90, 90}, 50, 3},
		// Range 2: the margin is max(10, 3×2) = 10 above 12.
		{"exactly the margin does not restart", 10, []float64{10, 10, 12, 10, 22, 30}, (10 + 10 + 12 + 10 + 22 + 30) / 6.0, 5},
		{"just past the margin restarts", 10, []float64{10, 10, 12, 10, 22.5, 30}, 26.25, 1},
		// Range 5: the margin is 3×5 = 15 above 15.
		{"the margin grows with the range", 10, []float64{10, 15, 10, 10, 29, 30}, (10 + 15 + 10 + 10 + 29 + 30) / 6.0, 5},
		{"past a range-sized margin restarts", 10, []float64{10, 15, 10, 10, 31, 32}, 31.5, 1},
		// Points older than the 15 s window have left it: the test only
		// sees the window's points.
		{"only the window's points count", 10, []float64{95, 10, 10, 10, 10, 10, 10, 10, 10, 90, 90}, 90, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Config{Window: 15 * time.Second, StaleAfter: 6 * time.Second, StepUp: tt.stepUp})
			if err != nil {
				t.Fatal(err)
			}
			for i, u := range tt.points {
				ts := float64(2 * i)
				mustAppend(t, s, []appendStep{{"agent", ts, []Sample{util("ns", "p", "GPU-0", sec(ts), u)}}})
			}
			last := float64(2 * (len(tt.points) - 1))
			got, ok := s.PodValue(Utilization, "ns", "p", sec(last))
			if !ok {
				t.Fatal("no value")
			}
			if math.Abs(got.Value-tt.want) > 1e-9 {
				t.Errorf("value %v, want %v", got.Value, tt.want)
			}
			if want := time.Duration(tt.wantWindow) * 2 * time.Second; got.Window != want {
				t.Errorf("window %v, want %v", got.Window, want)
			}
		})
	}
}

// TestStepUpNodes: node windows restart the same way.
func TestStepUpNodes(t *testing.T) {
	s, err := New(Config{Window: 15 * time.Second, StaleAfter: 6 * time.Second, StepUp: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range []float64{10, 10, 10, 90, 90} {
		ts := float64(2 * i)
		smp := Sample{Node: "n1", Device: "GPU-0", Time: sec(ts), Present: FieldUtilization, Utilization: u}
		if _, err := s.AppendNodes("agent", sec(ts), []Sample{smp}); err != nil {
			t.Fatal(err)
		}
	}
	if got, ok := s.NodeValue(UtilizationMax, "n1", sec(8)); !ok || got.Value != 90 {
		t.Errorf("NodeValue = %v, %v; want 90", got, ok)
	}
}

// noiseModel is a load with noise: utilization samples, one a second,
// from a seeded generator (deterministic).
type noiseModel struct {
	name string
	// start returns the generator of one run: its sample at second sec.
	start func() func(r *rand.Rand, sec int) float64
}

// stateless wraps a generator that keeps no state between samples.
func stateless(next func(r *rand.Rand, sec int) float64) func() func(r *rand.Rand, sec int) float64 {
	return func() func(r *rand.Rand, sec int) float64 { return next }
}

func clamp(u float64) float64 { return max(0, min(100, u)) }

// noiseModels are steady loads of different kinds of noise (synthetic: no
// recorded trace of a real GPU is at hand).
var noiseModels = []noiseModel{
	{"gaussian-sd5", stateless(func(r *rand.Rand, _ int) float64 { return clamp(60 + 5*r.NormFloat64()) })},
	{"gaussian-sd15", stateless(func(r *rand.Rand, _ int) float64 { return clamp(50 + 15*r.NormFloat64()) })},
	{"heavy-tailed", stateless(func(r *rand.Rand, _ int) float64 {
		// Student-t-like: a normal scaled by a random factor.
		return clamp(60 + 4*r.NormFloat64()/math.Sqrt(max(0.05, r.ExpFloat64())))
	})},
	// Inference serving: each second the GPU is busy for a fraction set
	// by a Poisson number of requests of 120 ms each.
	{"poisson-requests", stateless(func(r *rand.Rand, _ int) float64 {
		n := poisson(r, 4)
		return clamp(100 * float64(n) * 0.12)
	})},
	// Training: near full load with a data-loading dip of 4 s every 30 s.
	{"training-dips", stateless(func(r *rand.Rand, s int) float64 {
		if s%30 < 4 {
			return clamp(15 + 5*r.NormFloat64())
		}
		return clamp(96 + 2*r.NormFloat64())
	})},
}

// burstyModel alternates busy and idle periods of random length: not a
// steady load, and the worst case for a step test, each busy period being
// a genuine rise lasting a few seconds.
var burstyModel = noiseModel{"bursty-on-off", func() func(r *rand.Rand, _ int) float64 {
	busy := false
	return func(r *rand.Rand, _ int) float64 {
		// Mean dwell 6 s busy, 8 s idle.
		if busy && r.Float64() < 1.0/6 || !busy && r.Float64() < 1.0/8 {
			busy = !busy
		}
		if busy {
			return clamp(90 + 4*r.NormFloat64())
		}
		return clamp(15 + 4*r.NormFloat64())
	}
}}

func poisson(r *rand.Rand, mean float64) int {
	l, k, p := math.Exp(-mean), 0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// servedNoise replays model through a store fed as the aggregator feeds it
// (the agent samples every second; a scrape every 2 s takes the newest
// sample) for the given simulated seconds, queries the pod every second
// after a warm-up, and returns the standard deviation of the served value
// and how often the window restarted.
func servedNoise(tb testing.TB, m noiseModel, stepUp float64, seconds int) (sd float64, restarts int) {
	tb.Helper()
	s, err := New(Config{Window: 15 * time.Second, StaleAfter: 6 * time.Second, StepUp: stepUp})
	if err != nil {
		tb.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var n, sum, sum2 float64
	var lastWindow time.Duration
	next := m.start()
	for i := range seconds {
		u := next(r, i)
		at := sec(float64(i))
		if i%2 == 0 {
			if _, err := s.Append("agent", at, []Sample{util("ns", "p", "GPU-0", at, u)}); err != nil {
				tb.Fatal(err)
			}
		}
		v, ok := s.PodValue(Utilization, "ns", "p", at)
		if !ok {
			tb.Fatalf("%s: no value at %d s", m.name, i)
		}
		if v.Window < lastWindow-2*time.Second {
			restarts++
		}
		lastWindow = v.Window
		if i < 60 {
			continue
		}
		n++
		sum += v.Value
		sum2 += v.Value * v.Value
	}
	mean := sum / n
	return math.Sqrt(max(0, sum2/n-mean*mean)), restarts
}

// TestStepUpNoNoisier: on steady loads with noise, the served value is
// no noisier with steps detected (the default, 10 points) than the plain
// 15 s window mean: the window never restarts. The loads are seeded, so
// each run sees the same samples.
func TestStepUpNoNoisier(t *testing.T) {
	const seconds = 4 * 3600
	for _, m := range noiseModels {
		t.Run(m.name, func(t *testing.T) {
			plain, _ := servedNoise(t, m, 0, seconds)
			step, restarts := servedNoise(t, m, 10, seconds)
			if restarts != 0 || step > plain {
				t.Errorf("sd %.3f with steps (%d restarts in %d s), %.3f without: noisier", step, restarts, seconds, plain)
			}
		})
	}
}

// BenchmarkServedNoise reports, for each load, the standard deviation of
// the served gpu_utilization (percentage points) with the plain 15 s window
// mean and with steps up detected at 10 points, over four simulated hours,
// and the window's restarts per hour. Figures in docs/benchmarks.md.
func BenchmarkServedNoise(b *testing.B) {
	const seconds = 4 * 3600
	for _, m := range append(noiseModels, burstyModel) {
		b.Run(m.name, func(b *testing.B) {
			var plain, step float64
			var restarts int
			for range b.N {
				plain, _ = servedNoise(b, m, 0, seconds)
				step, restarts = servedNoise(b, m, 10, seconds)
			}
			b.ReportMetric(plain, "sd-plain")
			b.ReportMetric(step, "sd-step")
			b.ReportMetric(float64(restarts)/4, "restarts/h")
		})
	}
}

// TestStepUpReaction: after a step of the load, how many feeds until
// the served value crosses the level an HPA at a target of 50 acts on (55,
// its 10 % tolerance), with and without steps detected.
func TestStepUpReaction(t *testing.T) {
	for _, tt := range []struct {
		stepUp float64
		want   int // feeds after the step's first point
	}{
		{0, 4}, // (k×90 + (8-k)×10)/8 > 55 from k = 5 of the 8 points in 15 s
		{10, 1},
	} {
		t.Run(fmt.Sprint(tt.stepUp), func(t *testing.T) {
			s, err := New(Config{Window: 15 * time.Second, StaleAfter: 6 * time.Second, StepUp: tt.stepUp})
			if err != nil {
				t.Fatal(err)
			}
			got := -1
			for i := range 20 {
				u := 10.0
				if i >= 10 {
					u = 90
				}
				ts := float64(2 * i)
				mustAppend(t, s, []appendStep{{"agent", ts, []Sample{util("ns", "p", "GPU-0", sec(ts), u)}}})
				if v, ok := s.PodValue(Utilization, "ns", "p", sec(ts)); ok && v.Value > 55 && got < 0 {
					got = i - 10
				}
			}
			if got != tt.want {
				t.Errorf("crossed 55 %d feeds after the step's first point, want %d", got, tt.want)
			}
		})
	}
}
