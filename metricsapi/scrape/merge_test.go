package scrape

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// withSnapshot returns body with its snapshot timestamp set to snap.
func withSnapshot(t *testing.T, body []byte, snap time.Time) []byte {
	t.Helper()
	name := []byte("\ngpu_metrics_server_sample_timestamp_seconds ")
	i := bytes.LastIndex(body, name)
	if i < 0 {
		t.Fatal("body has no snapshot timestamp")
	}
	i += len(name)
	end := i + bytes.IndexByte(body[i:], '\n')
	out := fmt.Appendf(slices.Clone(body[:i]), "%.3f", float64(snap.UnixMilli())/1000)
	return append(out, body[end:]...)
}

// TestSourcesMerge feeds the store, through the parser, with an agent and a
// dcgm-exporter reporting the same devices of the same pods, as the
// aggregator scrapes both: the agent's readings win where it has them, and
// dcgm-exporter's fill in the others, whatever the order of the scrapes and
// however the agent's snapshot times compare with dcgm-exporter's receipt
// times; no reading is counted twice.
func TestSourcesMerge(t *testing.T) {
	type want struct {
		namespace, pod string
		metric         store.Metric
		value          float64
	}
	tests := []struct {
		name            string
		agent, exporter string // testdata files
		series          int64  // (pod, device) series in the store
		want            []want
	}{
		{
			// A100 MIG: the agent reports the instances' memory only (no
			// GPM), dcgm-exporter their engine activity, memory and power;
			// both key an instance <parent UUID>/<GPU_I_ID>.
			name: "MIG instances", agent: "agent-mig.prom", exporter: "dcgm-exporter-mig.prom",
			series: 2,
			want: []want{
				{"ml", "tiny-0", store.Utilization, 25.4312},
				{"ml", "tiny-0", store.MemoryUsedBytes, 260 * mib},
				{"ml", "tiny-0", store.MemoryUtilization, 100 * 260.0 / 9735},
				{"ml", "tiny-0", store.PowerWatts, 98.4},
				{"ml", "mid-0", store.Utilization, 80.125},
				{"ml", "mid-0", store.MemoryUsedBytes, 9900 * mib},
				{"ml", "mid-0", store.MemoryUtilization, 100 * 9900.0 / 39978},
			},
		},
		{
			// A time-sliced GPU: the agent's per-pod shares, not the
			// device's values dcgm-exporter gives both pods (nor a mean of
			// the two).
			name: "time-sliced GPU", agent: "agent-timesliced.prom", exporter: "dcgm-exporter-timesliced.prom",
			series: 2,
			want: []want{
				{"web", "infer-a", store.Utilization, 62},
				{"web", "infer-a", store.MemoryUsedBytes, 12 << 30},
				{"web", "infer-a", store.MemoryUtilization, 100 * float64(12<<30) / (81000 * mib)},
				{"web", "infer-a", store.PowerWatts, 301.5},
				{"web", "infer-b", store.Utilization, 18},
				{"web", "infer-b", store.MemoryUsedBytes, 8 << 30},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := store.New(store.Config{Window: 15 * time.Second, StaleAfter: 6 * time.Second, FeedInterval: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			agentBody, exporterBody := readTestdata(t, tc.agent), readTestdata(t, tc.exporter)
			p := NewParser()
			feed := func(source string, body []byte, at time.Time) store.AppendResult {
				t.Helper()
				samples, _, err := p.Parse(body, at)
				if err != nil {
					t.Fatalf("%s: %v", source, err)
				}
				res, err := st.Append(source, at, samples)
				if err != nil {
					t.Fatal(err)
				}
				return res
			}
			// Five rounds 2 s apart. The agent's snapshot is taken 0.5 s
			// before dcgm-exporter's scrape is received; the agent's
			// scrape is received 0.1 s after it in even rounds, before it
			// in odd ones.
			var now time.Time
			var last []byte
			for r := range 5 {
				round := receipt.Add(time.Duration(r) * 2 * time.Second)
				agentAt := round.Add(100 * time.Millisecond)
				if r%2 == 1 {
					agentAt = round.Add(-100 * time.Millisecond)
				}
				last = withSnapshot(t, agentBody, round.Add(-500*time.Millisecond))
				if r%2 == 1 {
					feed("agent", last, agentAt)
				}
				feed("dcgm-exporter", exporterBody, round)
				if r%2 == 0 {
					feed("agent", last, agentAt)
				}
				now = agentAt
			}
			stats := st.Stats()
			if stats.Duplicates != 0 || stats.Series != tc.series {
				t.Errorf("Stats = %+v, want %d series and no duplicates", stats, tc.series)
			}
			for _, w := range tc.want {
				v, ok := st.PodValue(w.metric, w.namespace, w.pod, now)
				if !ok || math.Abs(v.Value-w.value) > 1e-9*math.Abs(w.value) {
					t.Errorf("%s/%s %v = %v, %v; want %v", w.namespace, w.pod, w.metric, v.Value, ok, w.value)
				}
			}
			// The agent's snapshot scraped again is stored once.
			if res := feed("agent", last, now.Add(time.Second)); res.Stored != 0 || res.Duplicates != int(tc.series) {
				t.Errorf("repeated agent snapshot: Append = %+v, want %d duplicates and nothing stored", res, tc.series)
			}
		})
	}
}
