package scrape

import (
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

// TestAgentContract parses what the agent's own renderer produces for a
// time-sliced GPU whose processes were attributed to pods: each pod gets its
// own share (70 and 10), not the device's 80, once per pod however many of
// its containers hold the device, while the memory total stays the device's.
func TestAgentContract(t *testing.T) {
	const uuid = "GPU-11111111-2222-3333-4444-555555555555"
	at := time.UnixMilli(1700000000250)
	var r collector.Reading
	r.Set(exposition.GPUUtil, 80)
	r.Set(exposition.FBUsed, 30<<30)
	r.Set(exposition.FBFree, 50<<30)
	snap := &collector.Snapshot{
		Time: at,
		Node: "n1",
		Devices: []collector.DeviceSample{{
			DeviceReading: collector.DeviceReading{
				Device:  &collector.Device{Index: 0, UUID: uuid, Name: "NVIDIA H100 80GB HBM3", Minor: 0},
				Reading: r,
			},
			Owners: []podmap.Owner{
				{Namespace: "inf", Pod: "a", Container: "srv", Resource: "nvidia.com/gpu", Replica: "0"},
				{Namespace: "inf", Pod: "a", Container: "sidecar", Resource: "nvidia.com/gpu", Replica: "1"},
				{Namespace: "inf", Pod: "b", Container: "srv", Resource: "nvidia.com/gpu", Replica: "2"},
			},
			Attribution: collector.AttributionProcess,
			Shares: []collector.PodShare{
				{Namespace: "inf", Pod: "a", Container: "sidecar,srv", UID: "uid-a", SMUtil: 70, MemoryUsed: 20 << 30, HasMemory: true},
				{Namespace: "inf", Pod: "b", Container: "srv", UID: "uid-b", SMUtil: 10, MemoryUsed: 10 << 30, HasMemory: true},
			},
		}},
	}
	body := snap.Exposition()
	for name, parse := range map[string]func() ([]store.Sample, error){
		"fast": func() ([]store.Sample, error) {
			s, _, err := NewParser().Parse(body, receipt)
			return s, err
		},
		"reference": func() ([]store.Sample, error) { return parseWithReference(body, receipt) },
	} {
		got, err := parse()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, body)
		}
		total := float64(80 << 30)
		want := []store.Sample{
			{Namespace: "inf", Pod: "a", Container: "sidecar,srv", Device: uuid, Time: at, Precedence: store.PrecedenceAgent,
				Present: store.FieldUtilization | store.FieldMemoryUsed | store.FieldMemoryTotal, Utilization: 70, MemoryUsedBytes: 20 << 30, MemoryTotalBytes: total},
			{Namespace: "inf", Pod: "b", Container: "srv", Device: uuid, Time: at, Precedence: store.PrecedenceAgent,
				Present: store.FieldUtilization | store.FieldMemoryUsed | store.FieldMemoryTotal, Utilization: 10, MemoryUsedBytes: 10 << 30, MemoryTotalBytes: total},
		}
		if err := sameSamples(got, want); err != nil {
			t.Errorf("%s: %v\n%s", name, err, body)
		}
	}
}
