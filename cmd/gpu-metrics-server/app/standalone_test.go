package app

import (
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

func TestStoreSamples(t *testing.T) {
	at := time.Unix(100, 0)
	full := collector.Reading{Valid: collector.FieldGPUUtil | collector.FieldMemory | collector.FieldPower,
		GPUUtil: 80, FBUsed: 30, FBFree: 50, FBTotal: 80, PowerWatts: 300}
	mig := collector.Reading{Valid: collector.FieldGREngineActive | collector.FieldMemory, GREngineActive: 0.25, FBUsed: 1, FBTotal: 10}
	snap := &collector.Snapshot{Time: at, Devices: []collector.DeviceSample{
		{ // shared, attributed
			DeviceReading: collector.DeviceReading{Device: &collector.Device{UUID: "GPU-s"}, Reading: full},
			Owners:        []podmap.Owner{{Namespace: "n", Pod: "a", Container: "c"}, {Namespace: "n", Pod: "b", Container: "c"}},
			Attribution:   collector.AttributionProcess,
			Shares: []collector.PodShare{
				{Namespace: "n", Pod: "a", SMUtil: 70, MemoryUsed: 20, HasMemory: true},
				{Namespace: "n", Pod: "b", SMUtil: 10},
			},
		},
		{ // dedicated
			DeviceReading: collector.DeviceReading{Device: &collector.Device{UUID: "GPU-d"}, Reading: full},
			Owners:        []podmap.Owner{{Namespace: "n", Pod: "d", Container: "c"}},
		},
		{ // MIG instance
			DeviceReading: collector.DeviceReading{Device: &collector.Device{UUID: "MIG-m"}, Reading: mig},
			Owners:        []podmap.Owner{{Namespace: "n", Pod: "m", Container: "c"}},
		},
		{ // idle: no owner, no sample
			DeviceReading: collector.DeviceReading{Device: &collector.Device{UUID: "GPU-i"}, Reading: full},
		},
	}}
	got := storeSamples(snap, nil)
	type row struct {
		pod        string
		util, used float64
		power      bool
	}
	want := []row{{"a", 70, 20, true}, {"b", 10, 30, true}, {"d", 80, 30, true}, {"m", 25, 1, false}}
	if len(got) != len(want) {
		t.Fatalf("%d samples, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Pod != w.pod || g.Utilization != w.util || g.MemoryUsedBytes != w.used || g.Present.Has(store.FieldPower) != w.power || !g.Time.Equal(at) {
			t.Errorf("sample %d = %+v, want %+v", i, g, w)
		}
	}
}
