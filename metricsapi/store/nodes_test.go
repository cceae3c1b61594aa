package store

import (
	"math"
	"testing"
)

// node builds a node sample of device dev of node n: a full sample without
// its pod.
func node(n, dev string, at float64, u, usedMiB, totalMiB, watts float64) Sample {
	s := full("", "", dev, sec(at), u, usedMiB, totalMiB, watts)
	s.Node, s.Container = n, ""
	return s
}

// TestNodeValues checks the node aggregates over all of a node's devices:
// the mean and the max of the devices' window means, the sums of memory
// and power, and the count of fresh devices.
func TestNodeValues(t *testing.T) {
	type nodeQuery struct {
		node   string
		metric Metric
		now    float64
		wantOK bool
		want   float64
	}
	tests := []struct {
		name    string
		appends []appendStep
		queries []nodeQuery
	}{
		{
			name: "two GPUs, one busy, one idle",
			appends: []appendStep{
				{"agent/a", 1, []Sample{node("n1", "GPU-1", 1, 80, 1000, 4000, 200), node("n1", "GPU-2", 1, 0, 0, 4000, 60)}},
				{"agent/a", 3, []Sample{node("n1", "GPU-1", 3, 100, 3000, 4000, 250), node("n1", "GPU-2", 3, 10, 0, 4000, 70)}},
			},
			queries: []nodeQuery{
				{"n1", Utilization, 3, true, (90 + 5) / 2.0},
				{"n1", UtilizationMax, 3, true, 90},
				{"n1", MemoryUsedBytes, 3, true, 3000 << 20},
				{"n1", MemoryUtilization, 3, true, 100 * 3000.0 / 8000},
				{"n1", PowerWatts, 3, true, 320},
				{"n1", Devices, 3, true, 2},
				{"n2", Devices, 3, false, 0},
			},
		},
		{
			name: "a device gone stale leaves the node's values",
			appends: []appendStep{
				{"agent/a", 1, []Sample{node("n1", "GPU-1", 1, 80, 1000, 4000, 200), node("n1", "GPU-2", 1, 20, 500, 4000, 60)}},
				{"agent/a", 5, []Sample{node("n1", "GPU-1", 5, 40, 1000, 4000, 100)}},
			},
			queries: []nodeQuery{
				{"n1", Devices, 5, true, 2},
				{"n1", Devices, 8, true, 1},
				{"n1", UtilizationMax, 8, true, 60},
				{"n1", PowerWatts, 8, true, 100},
				{"n1", Devices, 12, false, 0},
			},
		},
		{
			name: "a device without power takes the node's power away, not its other values",
			appends: []appendStep{
				{"agent/a", 1, []Sample{node("n1", "GPU-1", 1, 80, 1000, 4000, 200), util("", "", "GPU-2/1", sec(1), 30)}},
			},
			queries: []nodeQuery{
				{"n1", PowerWatts, 1, false, 0},
				{"n1", Utilization, 1, true, 55},
				{"n1", Devices, 1, true, 2},
			},
		},
		{
			name: "the agent's readings outrank the exporter's on a node as on a pod",
			appends: []appendStep{
				{"dcgm/x", 1, []Sample{at(PrecedenceExporter, node("n1", "GPU-1", 1, 10, 1000, 4000, 50))}},
				{"agent/a", 1, []Sample{at(PrecedenceAgent, node("n1", "GPU-1", 1, 70, 2000, 4000, 150))}},
			},
			queries: []nodeQuery{
				{"n1", Utilization, 1, true, 70},
				{"n1", PowerWatts, 1, true, 150},
				{"n1", Devices, 1, true, 1},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			for _, st := range tc.appends {
				for i := range st.samples {
					if st.samples[i].Node == "" {
						st.samples[i].Node = "n1"
					}
				}
				if _, err := s.AppendNodes(st.source, sec(st.at), st.samples); err != nil {
					t.Fatal(err)
				}
			}
			for _, q := range tc.queries {
				v, ok := s.NodeValue(q.metric, q.node, sec(q.now))
				if ok != q.wantOK || ok && math.Abs(v.Value-q.want) > 1e-6 {
					t.Errorf("NodeValue(%v, %s) at %v = %v, %v; want %v, %v", q.metric, q.node, q.now, v.Value, ok, q.want, q.wantOK)
				}
				vals := s.NodeValues(q.metric, []string{"absent", q.node}, sec(q.now), nil)
				if len(vals) != map[bool]int{true: 1}[q.wantOK] || q.wantOK && (vals[0].Name != q.node || vals[0].Value != v) {
					t.Errorf("NodeValues(%v, %s) at %v = %+v, want only the node's %v", q.metric, q.node, q.now, vals, v)
				}
			}
		})
	}
}

// TestNodesApartFromPods checks that node samples and pod samples live in
// their own indexes: a pod named as a node is not the node, and the
// counters and the sweep cover both.
func TestNodesApartFromPods(t *testing.T) {
	s := newStore(t)
	res, err := s.AppendNodes("agent/a", sec(1), []Sample{
		node("n1", "GPU-1", 1, 50, 1, 2, 3),
		{Device: "GPU-1", Time: sec(1)},              // no node
		{Node: "n1", Time: sec(1)},                   // no device
		{Node: "n1", Device: "GPU-1"},                // no time
		full("ns", "p", "GPU-1", sec(1), 1, 1, 1, 1), // a pod sample: no node
	})
	if err != nil || res.Stored != 1 || res.Rejected != 4 {
		t.Fatalf("AppendNodes = %+v, %v; want 1 stored, 4 rejected", res, err)
	}
	if _, err := s.AppendNodes("", sec(1), nil); err == nil {
		t.Error("AppendNodes accepted an empty source name")
	}
	mustAppend(t, s, []appendStep{{"agent/a", 1, []Sample{full("", "n1", "GPU-1", sec(1), 1, 1, 1, 1)}}})
	if _, ok := s.PodValue(Devices, "", "n1", sec(1)); ok {
		t.Error("a pod sample without a namespace was stored")
	}
	if _, ok := s.PodValue(Utilization, "ns", "n1", sec(1)); ok {
		t.Error("the node answered as a pod")
	}
	if st := s.Stats(); st.Nodes != 1 || st.NodeSeries != 1 || st.Pods != 0 || st.NodeAppended != 1 || st.NodeRejected != 4 || st.Appended != 0 || st.Rejected != 1 {
		t.Errorf("Stats = %+v, want 1 node, 1 node series, no pod; 1 node sample stored, 4 rejected; 1 pod sample rejected", st)
	}
	// A later append past stale-after sweeps the node.
	mustAppend(t, s, []appendStep{{"agent/b", 20, []Sample{full("ns", "p", "GPU-9", sec(20), 1, 1, 1, 1)}}})
	if st := s.Stats(); st.Nodes != 0 || st.NodeSeries != 0 || st.Pods != 1 {
		t.Errorf("after the sweep Stats = %+v, want no node and the one pod", st)
	}
}
