package store

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// fill appends a full window (8 readings, one per 2 s) of pods pods, one GPU
// each, fed by nodes of 8 pods, and returns the time of the last append.
func fill(tb testing.TB, s *Store, pods int) time.Time {
	tb.Helper()
	var at time.Time
	for round := 0; round < 8; round++ {
		at = t0.Add(time.Duration(2*round) * time.Second)
		for node := 0; node < pods/8; node++ {
			samples := make([]Sample, 8)
			for j := range samples {
				samples[j] = Sample{Namespace: "team-a", Pod: fmt.Sprintf("worker-%d-%d", node, j), Container: "main",
					Device: fmt.Sprintf("GPU-8a1c6f0e-3b7d-4c52-9e1f-%012d", node*8+j), Time: at.Add(-500 * time.Millisecond),
					Present:     FieldUtilization | FieldMemoryUsed | FieldMemoryTotal | FieldPower,
					Utilization: 50, MemoryUsedBytes: 1 << 30, MemoryTotalBytes: 80 << 30, PowerWatts: 300}
			}
			if _, err := s.Append(fmt.Sprintf("agent/gms/agent-%d", node), at, samples); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return at
}

// BenchmarkMemoryPer1000Pods reports the heap a store holds for 1,000 pods
// (one GPU each, full 15 s window) in bytes, and per node of 8 GPUs.
func BenchmarkMemoryPer1000Pods(b *testing.B) {
	const pods = 1000
	var perThousand float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		s := newStore(b)
		fill(b, s, pods)
		runtime.GC()
		runtime.ReadMemStats(&after)
		perThousand = float64(after.HeapAlloc) - float64(before.HeapAlloc)
		runtime.KeepAlive(s)
	}
	b.ReportMetric(perThousand, "heap-B/1000pods")
	b.ReportMetric(perThousand/pods*8, "heap-B/node(8GPU,8pods)")
}

// BenchmarkAppend is one node's append of 8 pods in steady state.
func BenchmarkAppend(b *testing.B) {
	s := newStore(b)
	at := fill(b, s, 8)
	samples := make([]Sample, 8)
	for j := range samples {
		samples[j] = Sample{Namespace: "team-a", Pod: fmt.Sprintf("worker-0-%d", j), Device: fmt.Sprintf("GPU-8a1c6f0e-3b7d-4c52-9e1f-%012d", j),
			Present: FieldUtilization, Utilization: 50}
	}
	b.ReportAllocs()
	for b.Loop() {
		at = at.Add(2 * time.Second)
		for j := range samples {
			samples[j].Time = at
		}
		if _, err := s.Append("agent/gms/agent-0", at, samples); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendFleet is the store's side of a scrape at fleet scale: one
// op is one node's append of its 8 pods, the nodes taken in turn, into a
// store holding 5,000 nodes × 8 pods with full windows (a live heap of the
// size the aggregator has, so that allocation costs what it costs there).
func BenchmarkAppendFleet(b *testing.B) {
	const nodes = 5000
	s := newStore(b)
	at := fill(b, s, nodes*8)
	sources := make([]string, nodes)
	batches := make([][]Sample, nodes)
	for node := range batches {
		sources[node] = fmt.Sprintf("agent/gms/agent-%d", node)
		batches[node] = make([]Sample, 8)
		for j := range batches[node] {
			batches[node][j] = Sample{Namespace: "team-a", Pod: fmt.Sprintf("worker-%d-%d", node, j), Container: "main",
				Device:  fmt.Sprintf("GPU-8a1c6f0e-3b7d-4c52-9e1f-%012d", node*8+j),
				Present: FieldUtilization | FieldMemoryUsed | FieldMemoryTotal | FieldPower, Utilization: 50, MemoryUsedBytes: 1 << 30, MemoryTotalBytes: 80 << 30, PowerWatts: 300}
		}
	}
	b.ReportAllocs()
	node := 0
	for b.Loop() {
		if node == 0 {
			at = at.Add(2 * time.Second)
		}
		samples := batches[node]
		for j := range samples {
			samples[j].Time = at.Add(-500 * time.Millisecond)
		}
		if _, err := s.Append(sources[node], at, samples); err != nil {
			b.Fatal(err)
		}
		node = (node + 1) % nodes
	}
}
