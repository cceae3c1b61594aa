package collector

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector/internal/collectortest"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

const mib = 1 << 20

// reading sets the given fields.
func reading(values map[exposition.Field]float64) Reading {
	var r Reading
	for f, v := range values {
		r.Set(f, v)
	}
	return r
}

// testSnapshot: GPU 0 held whole by one container, GPU 1 time-sliced by two
// pods, GPU 2 idle and without encoder support, and one MIG instance.
func testSnapshot() *Snapshot {
	full := reading(map[exposition.Field]float64{
		exposition.GPUUtil: 87, exposition.MemCopyUtil: 12.5, exposition.EncUtil: 0, exposition.DecUtil: 3,
		exposition.FBUsed: 1024 * mib, exposition.FBFree: 80 * 1024 * mib,
		exposition.PowerUsage: 301.25, exposition.GPUTemp: 55, exposition.SMClock: 1980, exposition.MemClock: 2619,
		exposition.TotalEnergy: 123456789012,
	})
	noEnc := reading(map[exposition.Field]float64{
		exposition.GPUUtil: 0, exposition.MemCopyUtil: 12.5, exposition.DecUtil: 3,
		exposition.FBUsed: 1024 * mib, exposition.FBFree: 80 * 1024 * mib,
		exposition.PowerUsage: 301.25, exposition.GPUTemp: 55, exposition.SMClock: 1980, exposition.MemClock: 2619,
		exposition.TotalEnergy: 123456789012,
	})
	mig := reading(map[exposition.Field]float64{exposition.FBUsed: 2 * 1024 * mib, exposition.FBFree: 18 * 1024 * mib,
		exposition.GREngineActive: 0.375, exposition.SMActive: 0.25})
	dev := func(i int, uuid string) *Device {
		return &Device{Index: i, UUID: uuid, Name: "NVIDIA H100 80GB HBM3", PCIBusID: "00000000:1" + string(rune('0'+i)) + ":00.0", Minor: i}
	}
	migDev := dev(3, "MIG-11111111-2222-3333-4444-555555555555")
	migDev.MIG = &MIGInstance{ParentUUID: "GPU-3", GPUInstance: 2, ComputeInstance: 0, Profile: "1g.20gb", Activity: true}
	return &Snapshot{
		Time: time.UnixMilli(1700000000123),
		Node: "gpu-node-1",
		Devices: []DeviceSample{
			{DeviceReading: DeviceReading{Device: dev(0, "GPU-0"), Reading: full}, Attribution: AttributionProcess,
				Owners: []podmap.Owner{{Namespace: "ml", Pod: "train-0", Container: "main", Resource: "nvidia.com/gpu"}}},
			{DeviceReading: DeviceReading{Device: dev(1, "GPU-1"), Reading: full}, Attribution: AttributionProcess,
				Owners: []podmap.Owner{
					{Namespace: "inf", Pod: "a", Container: "srv", Resource: "nvidia.com/gpu", Replica: "0"},
					{Namespace: "inf", Pod: "b", Container: "srv", Resource: "nvidia.com/gpu", Replica: "3"},
				},
				Shares: []PodShare{
					{Namespace: "inf", Pod: "a", Container: "srv", UID: "uid-a", SMUtil: 70, MemoryUsed: 3 << 30, HasMemory: true},
					{Namespace: "inf", Pod: "b", Container: "srv", UID: "uid-b", SMUtil: 10},
				}},
			{DeviceReading: DeviceReading{Device: dev(2, "GPU-2"), Reading: noEnc}},
			{DeviceReading: DeviceReading{Device: migDev, Reading: mig}, Owners: []podmap.Owner{{Namespace: "ml", Pod: "small", Container: "c", Resource: "nvidia.com/mig-1g.20gb"}}},
		},
	}
}

func TestExposition(t *testing.T) {
	snap := testSnapshot()
	mfs := collectortest.ParseExposition(t, snap.Exposition())

	util := mfs["DCGM_FI_DEV_GPU_UTIL"]
	if util.GetType() != dto.MetricType_GAUGE {
		t.Errorf("GPU_UTIL type %v", util.GetType())
	}
	type row struct{ uuid, pod, vgpu string }
	var rows []row
	for _, m := range util.GetMetric() {
		l := collectortest.Labels(m)
		rows = append(rows, row{l["UUID"], l["pod"], l["vgpu"]})
		if l["hostname"] != "gpu-node-1" || l["modelName"] != "NVIDIA H100 80GB HBM3" || l["device"] != "nvidia"+l["gpu"] {
			t.Errorf("device labels %v", l)
		}
		if l["UUID"] == "GPU-0" && (l["namespace"] != "ml" || l["container"] != "main" || m.GetGauge().GetValue() != 87) {
			t.Errorf("GPU-0 series %v = %v", l, m.GetGauge().GetValue())
		}
		if l["UUID"] == "GPU-2" && (len(l) != 6 || m.GetGauge().GetValue() != 0) {
			t.Errorf("idle GPU-2 should have device labels only and 0: %v = %v", l, m.GetGauge().GetValue())
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].uuid+rows[i].pod < rows[j].uuid+rows[j].pod })
	want := []row{{"GPU-0", "train-0", ""}, {"GPU-1", "a", "0"}, {"GPU-1", "b", "3"}, {"GPU-2", "", ""}}
	if len(rows) != len(want) {
		t.Fatalf("GPU_UTIL series %v, want %v (MIG instance has no utilization)", rows, want)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("GPU_UTIL series %d = %v, want %v", i, rows[i], want[i])
		}
	}

	if n := len(mfs["DCGM_FI_DEV_ENC_UTIL"].GetMetric()); n != 3 {
		t.Errorf("ENC_UTIL series %d, want 3 (GPU-2 does not support it)", n)
	}
	energy := mfs["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"]
	if energy.GetType() != dto.MetricType_COUNTER || energy.GetMetric()[0].GetCounter().GetValue() != 123456789012 {
		t.Errorf("energy %v", energy)
	}
	for _, m := range mfs["DCGM_FI_DEV_FB_USED"].GetMetric() {
		l := collectortest.Labels(m)
		switch l["GPU_I_ID"] {
		case "2":
			// A MIG instance carries its parent's UUID, as dcgm-exporter's do.
			if l["UUID"] != "GPU-3" || l["GPU_I_PROFILE"] != "1g.20gb" || m.GetGauge().GetValue() != 2048 || l["pod"] != "small" {
				t.Errorf("MIG FB_USED %v = %v", l, m.GetGauge().GetValue())
			}
		default:
			if m.GetGauge().GetValue() != 1024 {
				t.Errorf("FB_USED in MiB %v = %v", l, m.GetGauge().GetValue())
			}
		}
	}
	if v := mfs["DCGM_FI_DEV_POWER_USAGE"].GetMetric()[0].GetGauge().GetValue(); v != 301.25 {
		t.Errorf("power %v", v)
	}
	for _, name := range []string{"DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_SM_ACTIVE"} {
		ms := mfs[name].GetMetric()
		if len(ms) != 1 || collectortest.Labels(ms[0])["GPU_I_ID"] != "2" || collectortest.Labels(ms[0])["pod"] != "small" {
			t.Fatalf("%s: %v, want the MIG instance only", name, ms)
		}
	}
	if v := mfs["DCGM_FI_PROF_GR_ENGINE_ACTIVE"].GetMetric()[0].GetGauge().GetValue(); v != 0.375 {
		t.Errorf("GR engine active %v", v)
	}

	// Per-pod shares: only on GPU-1, which two pods share; pod b's memory
	// is unknown, so absent.
	type share struct{ uuid, ns, pod, container, uid string }
	shares := map[share]float64{}
	for _, m := range mfs[exposition.PodGPUUtilization.Name()].GetMetric() {
		l := collectortest.Labels(m)
		if l["hostname"] != "gpu-node-1" || l["gpu"] != "1" || l["vgpu"] != "" {
			t.Errorf("pod share labels %v", l)
		}
		shares[share{l["UUID"], l["namespace"], l["pod"], l["container"], l["pod_uid"]}] = m.GetGauge().GetValue()
	}
	wantShares := map[share]float64{{"GPU-1", "inf", "a", "srv", "uid-a"}: 70, {"GPU-1", "inf", "b", "srv", "uid-b"}: 10}
	if fmt.Sprint(shares) != fmt.Sprint(wantShares) {
		t.Errorf("pod utilization %v, want %v", shares, wantShares)
	}
	mem := mfs[exposition.PodGPUMemoryUsed.Name()].GetMetric()
	if len(mem) != 1 || collectortest.Labels(mem[0])["pod"] != "a" || mem[0].GetGauge().GetValue() != 3<<30 {
		t.Errorf("pod memory %v, want pod a's 3 GiB only", mem)
	}

	// Attribution mode: both states per device, 1 for the active one.
	modes := map[string]float64{}
	for _, m := range mfs[exposition.DeviceAttributionMode.Name()].GetMetric() {
		l := collectortest.Labels(m)
		modes[l["UUID"]+l["GPU_I_ID"]+"/"+l["mode"]] = m.GetGauge().GetValue()
	}
	wantModes := map[string]float64{
		"GPU-0/process": 1, "GPU-0/device": 0, "GPU-1/process": 1, "GPU-1/device": 0, "GPU-2/process": 0, "GPU-2/device": 1,
		"GPU-32/process": 0, "GPU-32/device": 1, // the MIG instance: parent UUID + GPU_I_ID
	}
	if fmt.Sprint(modes) != fmt.Sprint(wantModes) {
		t.Errorf("attribution modes %v, want %v", modes, wantModes)
	}
	if act := mfs[exposition.MIGActivitySupported.Name()].GetMetric(); len(act) != 1 || act[0].GetGauge().GetValue() != 1 {
		t.Errorf("MIG activity %v", act)
	}

	ts := mfs[exposition.SampleTimestamp.Name()].GetMetric()[0].GetGauge().GetValue()
	if ts != 1700000000.123 {
		t.Errorf("sample timestamp %v", ts)
	}
	// Rendered once and cached.
	if a, b := snap.Exposition(), snap.Exposition(); &a[0] != &b[0] {
		t.Error("exposition rendered twice")
	}
}

var update = flag.Bool("update", false, "rewrite testdata/exposition.golden")

// TestExpositionGolden holds the rendered bytes of testSnapshot: the wire
// format the aggregator and dcgm-exporter's users read. go test -update
// rewrites it after a deliberate change.
func TestExpositionGolden(t *testing.T) {
	const golden = "testdata/exposition.golden"
	got := testSnapshot().Exposition()
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("exposition differs from %s (go test -update rewrites it):\n%s", golden, got)
	}
}

// TestExpositionPromtool lints the exposition with Prometheus's own
// promtool (Debian's prometheus package; hack/install-deps.sh installs it).
// Findings kept on purpose for dcgm-exporter compatibility are listed in
// docs/metrics.md and filtered here; any other finding fails.
func TestExpositionPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run hack/install-deps.sh (make test does)")
	}
	path := filepath.Join(t.TempDir(), "metrics.prom")
	if err := os.WriteFile(path, testSnapshot().Exposition(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdin = f
	out, err := cmd.CombinedOutput()
	var unexpected []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" || knownPromtoolFinding(line) {
			continue
		}
		unexpected = append(unexpected, line)
	}
	if len(unexpected) > 0 {
		t.Errorf("promtool findings (exit %v):\n%s", err, strings.Join(unexpected, "\n"))
	}
}

// knownPromtoolFinding: dcgm-exporter's names and labels are kept verbatim,
// so its energy counter lacks the _total suffix and its modelName label is
// camelCase, both of which promtool flags. The agent's own per-device and
// per-pod series carry the same device labels, modelName included.
func knownPromtoolFinding(line string) bool {
	camel := strings.Contains(line, "label names should be written in 'snake_case' not 'camelCase'")
	switch {
	case strings.HasPrefix(line, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION ") && strings.Contains(line, `counter metrics should have "_total" suffix`):
		return true
	case strings.HasPrefix(line, "DCGM_FI_"):
		return camel
	}
	for a := range exposition.NumAgentFamilies {
		if strings.HasPrefix(line, a.Name()+" ") {
			return camel
		}
	}
	return false
}

func FuzzLabelEscaping(f *testing.F) {
	for _, s := range []string{"plain", `quo"te`, `back\slash`, "new\nline", "ünï", `\"\n`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		if !utf8.ValidString(value) {
			t.Skip("label values are UTF-8 (Kubernetes names, NVML strings)")
		}
		snap := &Snapshot{Time: time.Unix(1, 0), Node: "n", Devices: []DeviceSample{{
			DeviceReading: DeviceReading{Device: &Device{UUID: "GPU-x", Name: value, Minor: -1}, Reading: reading(map[exposition.Field]float64{exposition.GPUUtil: 1})},
			Owners:        []podmap.Owner{{Namespace: "ns", Pod: value, Container: "c"}, {Namespace: "ns", Pod: "other", Container: "c"}},
			Attribution:   AttributionProcess,
			Shares: []PodShare{
				{Namespace: "ns", Pod: value, Container: value, UID: value, SMUtil: 1, HasMemory: true},
				{Namespace: "ns", Pod: "other", Container: "c"},
			},
		}}}
		mfs := collectortest.ParseExposition(t, snap.Exposition())
		l := collectortest.Labels(mfs["DCGM_FI_DEV_GPU_UTIL"].GetMetric()[0])
		if value != "" && (l["modelName"] != value || l["pod"] != value) {
			t.Fatalf("label round trip: %q became modelName=%q pod=%q", value, l["modelName"], l["pod"])
		}
		sl := collectortest.Labels(mfs[exposition.PodGPUUtilization.Name()].GetMetric()[0])
		if value != "" && (sl["pod"] != value || sl["container"] != value || sl["pod_uid"] != value) {
			t.Fatalf("pod share label round trip: %q became %v", value, sl)
		}
		if n := len(mfs[exposition.PodGPUMemoryUsed.Name()].GetMetric()); n != 1 {
			t.Fatalf("%d pod memory series, want 1 (the other pod's memory is unknown)", n)
		}
		if _, ok := l["device"]; ok {
			t.Fatal("device label for an unknown minor number")
		}
	})
}

func BenchmarkExposition8GPUs(b *testing.B) {
	snap := testSnapshot()
	base := snap.Devices[0]
	snap.Devices = nil
	for i := 0; i < 8; i++ {
		d := base
		dev := *base.Device
		dev.Index, dev.Minor = i, i
		d.Device = &dev
		snap.Devices = append(snap.Devices, d)
	}
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n = len(snap.render(nil))
	}
	b.ReportMetric(float64(n), "bytes")
}
