package collector

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector/internal/collectortest"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

// The pods of the tests.
const (
	uidA     = "aaaaaaaa-1111-4111-8111-aaaaaaaaaaaa"
	uidB     = "bbbbbbbb-2222-4222-8222-bbbbbbbbbbbb"
	uidStray = "cccccccc-3333-4333-8333-cccccccccccc"
)

var testPods = collectortest.Pods{"inf/a": uidA, "inf/b": uidB, "ml/stray": uidStray}

func TestAttribution(t *testing.T) {
	dev := &Device{Index: 0, UUID: "GPU-s", Minor: 0}
	two := []podmap.Owner{
		{Namespace: "inf", Pod: "a", Container: "srv", Replica: "0"},
		{Namespace: "inf", Pod: "b", Container: "srv", Replica: "1"},
	}
	running := func(pid uint32, util float64, mem uint64) ProcessUsage {
		return ProcessUsage{PID: pid, SMUtil: util, MemoryUsed: mem, HasMemory: true, Running: true}
	}
	named := func(ns, name string, util float64) ProcessUsage {
		return ProcessUsage{PID: 1, Pod: PodRef{Namespace: ns, Name: name}, SMUtil: util, HasMemory: true, Running: true}
	}
	resolver := collectortest.Resolver{1: uidA, 2: uidA, 3: uidB, 4: "", 5: uidStray}
	tests := []struct {
		name             string
		attr             Attribution
		owners           []podmap.Owner
		util             float64
		procs            Processes
		wantMode         AttributionMode
		wantShares       []PodShare
		wantUnattributed map[string]float64
	}{
		{
			name:   "resolved by PID, host, foreign pod, exited and unreadable processes",
			attr:   Attribution{Resolver: resolver, Pods: testPods},
			owners: two, util: 90,
			procs: Processes{Read: true, List: []ProcessUsage{
				running(1, 30, 100), running(2, 20, 200), running(3, 10, 400), running(4, 5, 1), running(5, 15, 1),
				{PID: 9, SMUtil: 5},                        // exited: only a sample left
				running(collectortest.UnreadablePID, 5, 1), // unreadable cgroup
			}},
			wantMode: AttributionProcess,
			wantShares: []PodShare{
				{Namespace: "inf", Pod: "a", Container: "srv", UID: uidA, SMUtil: 50, MemoryUsed: 300, HasMemory: true},
				{Namespace: "inf", Pod: "b", Container: "srv", UID: uidB, SMUtil: 10, MemoryUsed: 400, HasMemory: true},
			},
			wantUnattributed: map[string]float64{"host": 1, "other_pod": 1, "not_found": 1, "lookup_error": 1},
		},
		{
			name: "several containers of one pod, a third pod idle, shares capped at 100",
			attr: Attribution{Resolver: resolver, Pods: collectortest.Pods{"inf/a": uidA, "inf/b": uidB, "inf/c": "uid-c"}},
			owners: []podmap.Owner{
				{Namespace: "inf", Pod: "a", Container: "main", Replica: "0"},
				{Namespace: "inf", Pod: "a", Container: "sidecar", Replica: "1"},
				{Namespace: "inf", Pod: "b", Container: "srv", Replica: "2"},
				{Namespace: "inf", Pod: "c", Container: "srv", Replica: "3"},
			},
			util:     100,
			procs:    Processes{Read: true, List: []ProcessUsage{running(1, 80, 1), running(2, 70, 1), running(3, 0, 1)}},
			wantMode: AttributionProcess,
			wantShares: []PodShare{
				{Namespace: "inf", Pod: "a", Container: "main,sidecar", UID: uidA, SMUtil: 100, MemoryUsed: 2, HasMemory: true},
				{Namespace: "inf", Pod: "b", Container: "srv", UID: uidB, MemoryUsed: 1, HasMemory: true},
				{Namespace: "inf", Pod: "c", Container: "srv", UID: "uid-c", HasMemory: true},
			},
			wantUnattributed: map[string]float64{"host": 0, "other_pod": 0, "not_found": 0, "lookup_error": 0},
		},
		{
			name:   "processes carry pod names (sim, no cluster): no pod_uid",
			attr:   Attribution{},
			owners: two, util: 80,
			procs:    Processes{Read: true, List: []ProcessUsage{named("inf", "a", 70), named("inf", "b", 10), named("ml", "x", 1)}},
			wantMode: AttributionProcess,
			wantShares: []PodShare{
				{Namespace: "inf", Pod: "a", Container: "srv", SMUtil: 70, HasMemory: true},
				{Namespace: "inf", Pod: "b", Container: "srv", SMUtil: 10, HasMemory: true},
			},
			wantUnattributed: map[string]float64{"other_pod": 1},
		},
		{
			name:   "a pod holding the device is not in the index yet",
			attr:   Attribution{Resolver: resolver, Pods: collectortest.Pods{"inf/a": uidA}},
			owners: two, util: 50,
			procs:    Processes{Read: true, List: []ProcessUsage{running(1, 50, 1)}},
			wantMode: AttributionDevice,
		},
		{
			name:   "UIDs from cgroups but no pod index",
			attr:   Attribution{Resolver: resolver},
			owners: two, util: 50,
			procs:    Processes{Read: true, List: []ProcessUsage{running(1, 50, 1)}},
			wantMode: AttributionDevice,
		},
		{
			name:   "dedicated device: process mode, no shares",
			attr:   Attribution{Resolver: resolver, Pods: testPods},
			owners: two[:1], util: 50,
			procs:    Processes{Read: true, List: []ProcessUsage{running(1, 50, 1)}},
			wantMode: AttributionProcess,
		},
		{
			name:   "processes not read: device mode",
			attr:   Attribution{Resolver: resolver, Pods: testPods},
			owners: two, util: 50,
			procs:    Processes{Err: errors.New("the driver has no per-process utilization")},
			wantMode: AttributionDevice,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &scriptedBackend{readings: []DeviceReading{{
				Device:    dev,
				Reading:   reading(map[exposition.Field]float64{exposition.GPUUtil: tt.util}),
				Processes: tt.procs,
			}}}
			reg := prometheus.NewRegistry()
			attr := tt.attr
			s := NewSampler(b, SamplerOptions{
				Interval: time.Second, Registerer: reg, Attribution: &attr,
				Owners: func() podmap.Lookup { return collectortest.Owners{"GPU-s": tt.owners} },
			})
			ds := s.SampleOnce(time.Now()).Devices[0]
			if ds.Attribution != tt.wantMode {
				t.Errorf("mode %v, want %v", ds.Attribution, tt.wantMode)
			}
			if !slices.Equal(ds.Shares, tt.wantShares) {
				t.Errorf("shares\n got %+v\nwant %+v", ds.Shares, tt.wantShares)
			}
			if tt.wantUnattributed != nil {
				got := collectortest.Gauges(t, reg, "gpu_metrics_server_unattributed_gpu_processes")
				for k, v := range tt.wantUnattributed {
					if got[k] != v {
						t.Errorf("unattributed %s = %v, want %v (all: %v)", k, got[k], v, got)
					}
				}
			}
		})
	}
}

// TestAttributionOff: without Attribution every device is in device mode
// and the processes a backend returns are ignored.
func TestAttributionOff(t *testing.T) {
	b := &scriptedBackend{readings: []DeviceReading{{
		Device:    &Device{UUID: "GPU-s", Minor: -1},
		Reading:   reading(map[exposition.Field]float64{exposition.GPUUtil: 80}),
		Processes: Processes{Read: true, List: []ProcessUsage{{PID: 1, Pod: PodRef{Namespace: "inf", Name: "a"}, SMUtil: 70}}},
	}}}
	owners := collectortest.Owners{"GPU-s": {{Namespace: "inf", Pod: "a", Container: "c"}, {Namespace: "inf", Pod: "b", Container: "c"}}}
	s := NewSampler(b, SamplerOptions{Interval: time.Second, Owners: func() podmap.Lookup { return owners }})
	ds := s.SampleOnce(time.Now()).Devices[0]
	if ds.Attribution != AttributionDevice || ds.Shares != nil {
		t.Errorf("mode %v shares %+v", ds.Attribution, ds.Shares)
	}
}
