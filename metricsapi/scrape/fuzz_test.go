package scrape

import (
	"bytes"
	"testing"
)

// maxFuzzSeed bounds a seed of FuzzParse. Seeded with whole expositions
// (up to 37 KB), the fuzzer spent its time minimising the large inputs it
// derived from them and ran a few dozen inputs a minute; with seeds of a
// few KB it runs thousands a second (make fuzz also bounds the minimisation
// of each new input: FUZZMINIMIZETIME).
const maxFuzzSeed = 2048

// seedExpositions are the testdata expositions FuzzParse starts from.
var seedExpositions = []string{"agent.prom", "agent-mig.prom", "agent-timesliced.prom", "dcgm-exporter.prom", "dcgm-exporter-relabelled.prom",
	"dcgm-exporter-mig.prom", "dcgm-exporter-timesliced.prom"}

// fuzzSeeds are the testdata expositions cut, at line ends, into pieces of
// at most maxFuzzSeed bytes (a longer line is a piece of its own), so that
// every line of every exposition is in some seed and no seed is large.
func fuzzSeeds(tb testing.TB) [][]byte {
	var seeds [][]byte
	for _, name := range seedExpositions {
		var piece []byte
		for line := range bytes.Lines(readTestdata(tb, name)) {
			if len(piece) > 0 && len(piece)+len(line) > maxFuzzSeed {
				seeds = append(seeds, piece)
				piece = nil
			}
			piece = append(piece, line...)
		}
		if len(piece) > 0 {
			seeds = append(seeds, piece)
		}
	}
	return seeds
}

// FuzzParse checks the fast scanner against expfmt's parser: on every input
// the reference accepts, the fast path (or its fallback) must accept it too
// and give the same samples. Inputs the reference rejects may go either way
// (the fast scanner does not look inside series it does not read), but must
// not panic.
func FuzzParse(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	p := NewParser()
	f.Fuzz(func(t *testing.T, body []byte) {
		got, _, err := p.Parse(body, receipt)
		nodes := sortSamples(p.NodeSamples())
		want, wantNodes, refErr := parseWithReferenceNodes(body, receipt)
		if refErr != nil {
			return
		}
		if err != nil {
			t.Fatalf("Parse rejected what the reference accepts: %v", err)
		}
		if err := sameSamples(got, want); err != nil {
			t.Fatal(err)
		}
		if err := sameSamples(nodes, wantNodes); err != nil {
			t.Fatalf("node samples: %v", err)
		}
	})
}

// TestFuzzSeeds: FuzzParse's seeds are small, and hold every testdata line.
func TestFuzzSeeds(t *testing.T) {
	seeds := fuzzSeeds(t)
	var all []byte
	for i, s := range seeds {
		if len(s) > maxFuzzSeed && bytes.Count(s, []byte("\n")) > 1 {
			t.Errorf("seed %d: %d bytes, over %d", i, len(s), maxFuzzSeed)
		}
		all = append(all, s...)
	}
	var want []byte
	for _, name := range seedExpositions {
		want = append(want, readTestdata(t, name)...)
	}
	if !bytes.Equal(all, want) {
		t.Errorf("the seeds (%d bytes) are not the testdata (%d bytes) cut", len(all), len(want))
	}
}
