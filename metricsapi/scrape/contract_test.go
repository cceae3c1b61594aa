package scrape

import (
	"bytes"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/counters"
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
	for name, parse := range bothParsers(body) {
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

// TestAgentContractNewFamilies: what the aggregator reads from an agent does
// not depend on the device fields and label fields the agent serves beyond
// those it reads, nor on the node label's name (Hostname, hostname or
// none), nor on the MIG layout's whole-GPU fields on an instance beyond
// power: every field, every label field and err_code give the same samples
// as the aggregator's fields alone.
func TestAgentContractNewFamilies(t *testing.T) {
	const uuid = "GPU-11111111-2222-3333-4444-555555555555"
	at := time.UnixMilli(1700000000250)
	dev := &collector.Device{Index: 0, UUID: uuid, Name: "NVIDIA H100 80GB HBM3", Minor: 0, Profiling: true}
	for l := range exposition.NumLabelFields {
		dev.Labels[l] = "v" + l.Name()
	}
	inst := &collector.Device{Index: 1, UUID: "MIG-1", Name: "NVIDIA H100 80GB HBM3", Minor: 1, Profiling: true,
		MIG: &collector.MIGInstance{ParentUUID: "GPU-2", GPUInstance: 3, Profile: "3g.40gb"}}
	owners := []podmap.Owner{{Namespace: "ml", Pod: "train", Container: "main", Resource: "nvidia.com/gpu"}}
	snapshot := func(all bool, hostLabel string) *collector.Snapshot {
		var r, ri collector.Reading
		c := counters.Default()
		for f := range exposition.NumFields {
			switch {
			case all:
				c.Fields.Add(f)
				r.Set(f, float64(f)/100)
				ri.Set(f, float64(f)/200)
			case f.Family().Role != exposition.RoleNone:
				r.Set(f, float64(f)/100)
				ri.Set(f, float64(f)/200)
			}
		}
		if all {
			for l := range exposition.NumLabelFields {
				c.Labels.Add(l)
			}
		}
		s := collector.NewSampler(scripted{
			{Device: dev, Reading: r},
			{Device: inst, Reading: ri},
		}, collector.SamplerOptions{Node: "n1", Format: collector.NewFormat(c, hostLabel),
			Owners: func() podmap.Lookup { return ownersOf{uuid: owners, "MIG-1": owners} }})
		return s.SampleOnce(at)
	}
	want, _, err := NewParser().Parse(snapshot(false, exposition.LabelHostname).Exposition(), receipt)
	if err != nil || len(want) != 2 {
		t.Fatalf("aggregator fields only: %d samples, %v", len(want), err)
	}
	for _, label := range []string{exposition.LabelHostname, exposition.LabelHostnameLower, ""} {
		body := snapshot(true, label).Exposition()
		if label != "" && !bytes.Contains(body, []byte(","+label+`="n1"`)) {
			t.Fatalf("no %s label in\n%s", label, body)
		}
		for name, parse := range bothParsers(body) {
			got, err := parse()
			if err != nil {
				t.Fatalf("%s, label %q: %v", name, label, err)
			}
			if err := sameSamples(got, want); err != nil {
				t.Errorf("%s, label %q: %v", name, label, err)
			}
		}
	}
}

// scripted is a backend returning fixed readings.
type scripted []collector.DeviceReading

func (s scripted) Name() string { return "scripted" }
func (s scripted) Close() error { return nil }
func (s scripted) Sample(time.Time) ([]collector.DeviceReading, []collector.DeviceError) {
	return append([]collector.DeviceReading(nil), s...), nil
}

// ownersOf is a device-to-owners lookup by UUID.
type ownersOf map[string][]podmap.Owner

func (o ownersOf) Owners(k podmap.DeviceKey) []podmap.Owner { return o[k.UUID] }

// TestParseEitherHostname: dcgm-exporter's releases write Hostname, its
// main writes hostname; the parser reads neither, so both give the same
// samples.
func TestParseEitherHostname(t *testing.T) {
	for _, name := range []string{"dcgm-exporter.prom", "dcgm-exporter-mig.prom", "agent.prom"} {
		body := readTestdata(t, name)
		want, _, err := NewParser().Parse(body, receipt)
		if err != nil || len(want) == 0 {
			t.Fatalf("%s: %d samples, %v", name, len(want), err)
		}
		for _, swap := range [][2]string{{`Hostname="`, `hostname="`}, {`hostname="`, `Hostname="`}} {
			other := bytes.ReplaceAll(body, []byte(swap[0]), []byte(swap[1]))
			got, _, err := NewParser().Parse(other, receipt)
			if err != nil {
				t.Fatalf("%s with %s: %v", name, swap[1], err)
			}
			if err := sameSamples(got, want); err != nil {
				t.Errorf("%s with %s: %v", name, swap[1], err)
			}
		}
	}
}

// bothParsers parse body received at receipt with the fast parser and with
// the reference one.
func bothParsers(body []byte) map[string]func() ([]store.Sample, error) {
	return map[string]func() ([]store.Sample, error){
		"fast": func() ([]store.Sample, error) {
			s, _, err := NewParser().Parse(body, receipt)
			return s, err
		},
		"reference": func() ([]store.Sample, error) { return parseWithReference(body, receipt) },
	}
}
