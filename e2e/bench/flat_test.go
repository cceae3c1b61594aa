package bench

// The soak's flatness rule (TestSoak; docs/benchmarks.md, "Soak (issue
// 16)"). This file has no build tag, so that the rule is tested by a plain
// `go test ./...`.

import (
	"math"
	"slices"
	"testing"
	"time"
)

const (
	// Counts (goroutines, open fds): the last third's median may exceed
	// the first third's by at most max(flatCountSlack, flatCountShare of
	// it).
	flatCountSlack = 10
	flatCountShare = 0.02
	// Memory (anon RSS, Go heap goal): the last third's mean may exceed
	// the first third's by at most flatMemShare of it plus
	// flatMemSlackMiB.
	flatMemShare    = 0.10
	flatMemSlackMiB = 2
)

// flatStats is one series under the flatness rule.
type flatStats struct {
	Start, End, Min, Max float64
	// SlopePerHour is the least-squares slope over the whole series.
	SlopePerHour float64
	// First and Last are the first and last thirds' Stat ("median" for a
	// count, "mean" for memory); Limit is the highest Last that passes.
	Stat               string
	First, Last, Limit float64
	Flat               bool
}

// flatness applies the rule to a series sampled at offsets at (ascending,
// the first at 0): the first third is the samples at or before a third of
// the last offset, the last third those at or after two thirds of it. It
// returns false when either third is empty.
func flatness(at []time.Duration, ys []float64, count bool) (flatStats, bool) {
	if len(at) == 0 || len(at) != len(ys) {
		return flatStats{}, false
	}
	total := at[len(at)-1]
	var first, last, hours []float64
	for i, a := range at {
		hours = append(hours, a.Hours())
		if a <= total/3 {
			first = append(first, ys[i])
		}
		if a >= total-total/3 {
			last = append(last, ys[i])
		}
	}
	if len(first) == 0 || len(last) == 0 || total == 0 {
		return flatStats{}, false
	}
	st := flatStats{Start: ys[0], End: ys[len(ys)-1], Min: slices.Min(ys), Max: slices.Max(ys), SlopePerHour: slope(hours, ys)}
	if count {
		st.Stat = "median"
		st.First, st.Last = median(first), median(last)
		st.Limit = st.First + math.Max(flatCountSlack, flatCountShare*st.First)
	} else {
		st.Stat = "mean"
		st.First, st.Last = mean(first), mean(last)
		st.Limit = st.First*(1+flatMemShare) + flatMemSlackMiB
	}
	st.Flat = st.Last <= st.Limit
	return st, true
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// slope is the least-squares slope of ys over xs (0 when xs are equal).
func slope(xs, ys []float64) float64 {
	mx, my := mean(xs), mean(ys)
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	if den == 0 {
		return 0
	}
	return num / den
}

func TestFlatness(t *testing.T) {
	minutes := func(n int) []time.Duration {
		out := make([]time.Duration, n)
		for i := range out {
			out[i] = time.Duration(i) * time.Minute
		}
		return out
	}
	series := func(n int, f func(i int) float64) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		at       []time.Duration
		ys       []float64
		count    bool
		ok, flat bool
		first    float64
		last     float64
		limit    float64
		// wantSlope, when set, is the slope per hour expected.
		wantSlope float64
	}{
		{name: "constant goroutines", at: minutes(31), ys: series(31, func(int) float64 { return 114 }), count: true,
			ok: true, flat: true, first: 114, last: 114, limit: 124},
		{name: "goroutines leaking one a minute over 30 minutes", at: minutes(31), ys: series(31, func(i int) float64 { return 114 + float64(i) }), count: true,
			ok: true, flat: false, first: 119, last: 139, limit: 129, wantSlope: 60},
		{name: "fds of a large count within 2 %", at: minutes(31), ys: series(31, func(i int) float64 { return 2000 + float64(i%3) }), count: true,
			ok: true, flat: true, first: 2001, last: 2001, limit: 2041.02},
		{name: "a start-up spike in the first third only", at: minutes(31), ys: series(31, func(i int) float64 { return map[bool]float64{true: 500, false: 400}[i == 0] }), count: true,
			ok: true, flat: true, first: 400, last: 400, limit: 410},
		{name: "memory sawtooth within 10 %", at: minutes(31), ys: series(31, func(i int) float64 { return 100 + 8*float64(i%2) }),
			ok: true, flat: true, first: 100 + 8*5.0/11, last: 100 + 8*5.0/11, limit: (100+8*5.0/11)*1.1 + 2},
		{name: "memory growing 1 MiB a minute", at: minutes(31), ys: series(31, func(i int) float64 { return 100 + float64(i) }),
			ok: true, flat: false, first: 105, last: 125, limit: 117.5, wantSlope: 60},
		{name: "empty", ok: false},
		{name: "one sample", at: minutes(1), ys: []float64{1}, ok: false},
		{name: "lengths differ", at: minutes(3), ys: []float64{1, 2}, ok: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, ok := flatness(tc.at, tc.ys, tc.count)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
			if st.Flat != tc.flat || !near(st.First, tc.first) || !near(st.Last, tc.last) || !near(st.Limit, tc.limit) {
				t.Errorf("got flat=%v first=%v last=%v limit=%v, want %v %v %v %v", st.Flat, st.First, st.Last, st.Limit, tc.flat, tc.first, tc.last, tc.limit)
			}
			if tc.wantSlope != 0 && math.Abs(st.SlopePerHour-tc.wantSlope) > 1e-6 {
				t.Errorf("slope %v per hour, want %v", st.SlopePerHour, tc.wantSlope)
			}
		})
	}
}
