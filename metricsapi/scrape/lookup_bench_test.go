package scrape

import (
	"bytes"
	"testing"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// BenchmarkFamilyLookup is the parser's name lookup over every series name
// of an agent body, read or skipped.
func BenchmarkFamilyLookup(b *testing.B) {
	var names [][]byte
	for line := range bytes.SplitSeq(agentBody(0, 8, 110, receipt), []byte("\n")) {
		if i := bytes.IndexAny(line, "{ "); i > 0 && line[0] != '#' {
			names = append(names, line[:i])
		}
	}
	names = append(names, []byte("go_gc_duration_seconds"), []byte("process_resident_memory_bytes"))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for _, name := range names {
			if _, ok := exposition.RoleOf(name); ok {
				n++
			}
		}
	}
	if n == 0 {
		b.Fatal("no name found")
	}
	b.ReportMetric(float64(len(names)), "names/op")
}
