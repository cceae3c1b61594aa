package scrape

import (
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// TestParseNodeSamples checks the node samples: every GPU of the
// exposition, held or idle, once, with its whole-device readings; a GPU
// in MIG mode with its instances' memory summed, its own power and no
// utilization; the node from the Hostname or hostname label.
func TestParseNodeSamples(t *testing.T) {
	agentTime := time.Unix(1772467203, 500_000_000)
	const (
		h100a = "GPU-8a1c6f0e-3b7d-4c52-9e1f-5d2a7b9c0e11"
		h100b = "GPU-2f6e9d3a-71c4-4b0e-8d25-c3a1e6f7b842"
		h100c = "GPU-c90d4e1b-5a38-4f6d-b7e2-91f0a3c5d726"
		a100a = "GPU-5fd4e3f5-2d1b-8e3c-3a0b-1c2d3e4f5a6b"
	)
	agent := func(node, dev string, u, usedMiB, totalMiB, watts float64) store.Sample {
		return store.Sample{Node: node, Device: dev, Time: agentTime, Precedence: store.PrecedenceAgent, Present: allFields,
			Utilization: u, MemoryUsedBytes: usedMiB * mib, MemoryTotalBytes: totalMiB * mib, PowerWatts: watts}
	}
	noUtil := store.FieldMemoryUsed | store.FieldMemoryTotal | store.FieldPower
	tests := []struct {
		name string
		file string
		body string
		want []store.Sample
	}{
		{
			// Two held GPUs (one time-sliced between two pods: one node
			// device) and the idle one.
			name: "agent", file: "agent.prom",
			want: []store.Sample{
				agent("gpu-node-7", h100a, 87, 61440, 81000, 312.456),
				agent("gpu-node-7", h100b, 35, 20480, 81000, 145.2),
				agent("gpu-node-7", h100c, 0, 0, 81000, 61.03),
			},
		},
		{
			// The per-pod shares are not the device's: the node gets the
			// device's own utilization and memory.
			name: "agent, time-sliced with shares", file: "agent-timesliced.prom",
			want: []store.Sample{agent("gpu-node-7", h100b, 80, 20480, 81000, 301.5)},
		},
		{
			name: "agent, MIG", file: "agent-mig.prom",
			want: []store.Sample{{Node: "gpu-node-3", Device: a100a, Time: agentTime, Precedence: store.PrecedenceAgent, Present: noUtil,
				MemoryUsedBytes: (9900 + 260) * mib, MemoryTotalBytes: (39978 + 9735) * mib, PowerWatts: 98.4}},
		},
		{
			// dcgm-exporter repeats the GPU's power on every instance.
			name: "dcgm-exporter, MIG", file: "dcgm-exporter-mig.prom",
			want: []store.Sample{{Node: "nvidia-dcgm-exporter-7xk2p", Device: a100a, Time: receipt, Present: noUtil,
				MemoryUsedBytes: (251 + 9876) * mib, MemoryTotalBytes: (251 + 9484 + 9876 + 30102) * mib, PowerWatts: 98.4}},
		},
		{
			name: "no hostname label: the scraper names the node",
			body: "DCGM_FI_DEV_GPU_UTIL{UUID=\"GPU-1\"} 5\nDCGM_FI_DEV_POWER_USAGE{UUID=\"GPU-1\"} 50\n",
			want: []store.Sample{{Device: "GPU-1", Time: receipt, Present: store.FieldUtilization | store.FieldPower, Utilization: 5, PowerWatts: 50}},
		},
		{
			name: "Hostname preferred; two nodes apart; invalid and UUID-less lines skipped",
			body: "DCGM_FI_DEV_GPU_UTIL{UUID=\"GPU-1\",Hostname=\"a\",hostname=\"b\"} 5\n" +
				"DCGM_FI_DEV_GPU_UTIL{UUID=\"GPU-1\",hostname=\"c\"} 6\n" +
				"DCGM_FI_DEV_GPU_UTIL{UUID=\"GPU-2\",hostname=\"c\"} 101\n" +
				"DCGM_FI_DEV_GPU_UTIL{hostname=\"c\"} 7\n",
			want: []store.Sample{
				{Node: "a", Device: "GPU-1", Time: receipt, Present: store.FieldUtilization, Utilization: 5},
				{Node: "c", Device: "GPU-1", Time: receipt, Present: store.FieldUtilization, Utilization: 6},
			},
		},
		{
			name: "an instance without free memory gives the GPU no total",
			body: "DCGM_FI_DEV_FB_USED{UUID=\"GPU-1\",GPU_I_ID=\"1\"} 1\nDCGM_FI_DEV_FB_FREE{UUID=\"GPU-1\",GPU_I_ID=\"1\"} 1\n" +
				"DCGM_FI_DEV_FB_USED{UUID=\"GPU-1\",GPU_I_ID=\"2\"} 2\n",
			want: []store.Sample{{Device: "GPU-1", Time: receipt, Present: store.FieldMemoryUsed, MemoryUsedBytes: 3 * mib}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			if tc.file != "" {
				body = readTestdata(t, tc.file)
			}
			p := NewParser()
			_, stats, err := p.Parse(body, receipt)
			if err != nil {
				t.Fatal(err)
			}
			got := p.NodeSamples()
			if stats.NodeSamples != len(got) {
				t.Errorf("stats.NodeSamples = %d, want %d", stats.NodeSamples, len(got))
			}
			if tc.want != nil {
				if err := sameSamples(got, tc.want); err != nil {
					t.Error(err)
				}
			}
			_, ref, err := parseWithReferenceNodes(body, receipt)
			if err != nil {
				t.Fatal(err)
			}
			if err := sameSamples(got, ref); err != nil {
				t.Errorf("reference parser: %v", err)
			}
			// A failed parse leaves no node samples behind.
			if _, _, err := p.Parse([]byte("DCGM_FI_DEV_GPU_UTIL{UUID=\"GPU-1\"} x\n"), receipt); err == nil || len(p.NodeSamples()) != 0 {
				t.Errorf("after a failed parse: %v, %d node samples", err, len(p.NodeSamples()))
			}
		})
	}
}
