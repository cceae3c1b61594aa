package scrape

import (
	"testing"
)

// FuzzParse checks the fast scanner against expfmt's parser: on every input
// the reference accepts, the fast path (or its fallback) must accept it too
// and give the same samples. Inputs the reference rejects may go either way
// (the fast scanner does not look inside series it does not read), but must
// not panic.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"agent.prom", "agent-mig.prom", "agent-timesliced.prom", "dcgm-exporter.prom", "dcgm-exporter-relabelled.prom",
		"dcgm-exporter-mig.prom", "dcgm-exporter-timesliced.prom"} {
		f.Add(readTestdata(f, name))
	}
	p := NewParser()
	f.Fuzz(func(t *testing.T, body []byte) {
		got, _, err := p.Parse(body, receipt)
		want, refErr := parseWithReference(body, receipt)
		if refErr != nil {
			return
		}
		if err != nil {
			t.Fatalf("Parse rejected what the reference accepts: %v", err)
		}
		if err := sameSamples(got, want); err != nil {
			t.Fatal(err)
		}
	})
}
