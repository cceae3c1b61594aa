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

	"github.com/gpu-metrics-server/gpu-metrics-server/collector/counters"
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
		exposition.TotalEnergy: 123456789012, exposition.MemoryTemp: 48, exposition.XIDErrors: 79, exposition.PCIeReplayCounter: 3,
		exposition.FBReserved: 512 * mib, exposition.CorrectableRemappedRows: 2, exposition.UncorrectableRemappedRows: 0,
		exposition.RowRemapFailure: 0, exposition.NVLinkBandwidthTotal: 1234, exposition.GREngineActive: 0.875,
		exposition.PipeTensorActive: 0.5, exposition.DRAMActive: 0.25, exposition.PCIeTXBytes: 1.5e9, exposition.PCIeRXBytes: 2.5e9,
	})
	noEnc := reading(map[exposition.Field]float64{
		exposition.GPUUtil: 0, exposition.MemCopyUtil: 12.5, exposition.DecUtil: 3,
		exposition.FBUsed: 1024 * mib, exposition.FBFree: 80 * 1024 * mib,
		exposition.PowerUsage: 301.25, exposition.GPUTemp: 55, exposition.SMClock: 1980, exposition.MemClock: 2619,
		exposition.TotalEnergy: 123456789012,
	})
	// The MIG instance as the sampler hands it over: its own memory and
	// activity, its GPU's power and temperature (layoutMIG).
	mig := reading(map[exposition.Field]float64{exposition.FBUsed: 2 * 1024 * mib, exposition.FBFree: 18 * 1024 * mib,
		exposition.GREngineActive: 0.375, exposition.SMActive: 0.25, exposition.PowerUsage: 150, exposition.GPUTemp: 40})
	migGPU := reading(map[exposition.Field]float64{exposition.FBUsed: 3 * 1024 * mib, exposition.FBFree: 77 * 1024 * mib,
		exposition.PowerUsage: 150, exposition.GPUTemp: 40})
	dev := func(i int, uuid string) *Device {
		d := &Device{Index: i, UUID: uuid, Name: "NVIDIA H100 80GB HBM3", PCIBusID: "00000000:1" + string(rune('0'+i)) + ":00.0", Minor: i, Profiling: i < 2}
		d.Labels[exposition.DriverVersionLabel] = "580.95.05"
		d.Labels[exposition.SerialLabel] = "1650923000000" // not in the built-in list: not rendered
		return d
	}
	parent := dev(3, "GPU-3")
	parent.MIGInstances, parent.Profiling = true, false
	migDev := dev(3, "MIG-11111111-2222-3333-4444-555555555555")
	migDev.MIG = &MIGInstance{ParentUUID: "GPU-3", GPUInstance: 2, ComputeInstance: 0, Profile: "1g.20gb"}
	migDev.Profiling = true
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
			{DeviceReading: DeviceReading{Device: parent, Reading: migGPU}},
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
		if l["Hostname"] != "gpu-node-1" || l["modelName"] != "NVIDIA H100 80GB HBM3" || l["device"] != "nvidia"+l["gpu"] ||
			l["DCGM_FI_DRIVER_VERSION"] != "580.95.05" || l["DCGM_FI_DEV_SERIAL"] != "" {
			t.Errorf("device labels %v", l)
		}
		if l["UUID"] == "GPU-0" && (l["namespace"] != "ml" || l["container"] != "main" || m.GetGauge().GetValue() != 87) {
			t.Errorf("GPU-0 series %v = %v", l, m.GetGauge().GetValue())
		}
		if l["UUID"] == "GPU-2" && (len(l) != 7 || m.GetGauge().GetValue() != 0) {
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
	// The GPU in MIG mode is reported through its instance only, as
	// dcgm-exporter does: a sum over gpu="3" counts its memory once.
	for name, mf := range mfs {
		if !strings.HasPrefix(name, "DCGM_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			if l := collectortest.Labels(m); l["gpu"] == "3" && l["GPU_I_ID"] != "2" {
				t.Errorf("%s: series of the GPU in MIG mode %v", name, l)
			}
		}
	}
	if ms := mfs["DCGM_FI_DEV_POWER_USAGE"].GetMetric(); len(ms) != 5 || ms[4].GetGauge().GetValue() != 150 {
		t.Errorf("power %v, want 3 GPUs' (one per pod) and the MIG instance's (its GPU's)", ms)
	}
	if ms := mfs["DCGM_FI_PROF_SM_ACTIVE"].GetMetric(); len(ms) != 1 || collectortest.Labels(ms[0])["GPU_I_ID"] != "2" || collectortest.Labels(ms[0])["pod"] != "small" {
		t.Fatalf("SM active: %v, want the MIG instance only", ms)
	}
	engine := map[string]float64{}
	for _, m := range mfs["DCGM_FI_PROF_GR_ENGINE_ACTIVE"].GetMetric() {
		l := collectortest.Labels(m)
		engine[l["UUID"]+"/"+l["GPU_I_ID"]+"/"+l["pod"]] = m.GetGauge().GetValue()
	}
	if want := map[string]float64{"GPU-0//train-0": 0.875, "GPU-1//a": 0.875, "GPU-1//b": 0.875, "GPU-3/2/small": 0.375}; fmt.Sprint(engine) != fmt.Sprint(want) {
		t.Errorf("GR engine active %v, want %v", engine, want)
	}
	// The XID carries dcgm-exporter's err_code label.
	for _, m := range mfs["DCGM_FI_DEV_XID_ERRORS"].GetMetric() {
		if l := collectortest.Labels(m); l["err_code"] != "79" || m.GetGauge().GetValue() != 79 {
			t.Errorf("XID %v = %v", l, m.GetGauge().GetValue())
		}
	}
	if bw := mfs["DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL"]; bw.GetType() != dto.MetricType_COUNTER || bw.GetMetric()[0].GetCounter().GetValue() != 1234 {
		t.Errorf("NVLink bandwidth %v", bw)
	}
	if v := mfs["DCGM_FI_DEV_FB_RESERVED"].GetMetric()[0].GetGauge().GetValue(); v != 512 {
		t.Errorf("reserved %v MiB", v)
	}

	// Per-pod shares: only on GPU-1, which two pods share; pod b's memory
	// is unknown, so absent.
	type share struct{ uuid, ns, pod, container, uid string }
	shares := map[share]float64{}
	for _, m := range mfs[exposition.PodGPUUtilization.Name()].GetMetric() {
		l := collectortest.Labels(m)
		if l["Hostname"] != "gpu-node-1" || l["gpu"] != "1" || l["vgpu"] != "" {
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
		"GPU-3/process": 0, "GPU-3/device": 1, // its GPU
	}
	if fmt.Sprint(modes) != fmt.Sprint(wantModes) {
		t.Errorf("attribution modes %v, want %v", modes, wantModes)
	}
	if act := mfs[exposition.MIGActivitySupported.Name()].GetMetric(); len(act) != 1 || act[0].GetGauge().GetValue() != 1 {
		t.Errorf("MIG activity %v", act)
	}
	prof := map[string]float64{}
	for _, m := range mfs[exposition.ProfilingSupported.Name()].GetMetric() {
		l := collectortest.Labels(m)
		prof[l["UUID"]+l["GPU_I_ID"]] = m.GetGauge().GetValue()
	}
	if want := map[string]float64{"GPU-0": 1, "GPU-1": 1, "GPU-2": 0, "GPU-3": 0, "GPU-32": 1}; fmt.Sprint(prof) != fmt.Sprint(want) {
		t.Errorf("profiling supported %v, want %v", prof, want)
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
	if err := os.WriteFile(path, allFieldsSnapshot().Exposition(), 0o600); err != nil {
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

// allFieldsSnapshot is testSnapshot with every device field set on GPU 0
// and every label field written.
func allFieldsSnapshot() *Snapshot {
	snap := testSnapshot()
	c := counters.Default()
	for f := range exposition.NumFields {
		c.Fields.Add(f)
		snap.Devices[0].Reading.Set(f, float64(f))
	}
	for l := range exposition.NumLabelFields {
		c.Labels.Add(l)
		snap.Devices[0].Device.Labels[l] = "v" + l.Name()
	}
	snap.format = NewFormat(c, exposition.LabelHostname)
	return snap
}

// knownPromtoolFinding: dcgm-exporter's names and labels are kept verbatim,
// so its counters lack the _total suffix (DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION,
// …_REMAPPED_ROWS, DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL, whose suffix is
// upper case, …), DCGM_FI_DEV_PCIE_REPLAY_COUNTER names its type, and its
// modelName label is camelCase: promtool flags all three. The agent's own
// per-device and per-pod series carry the same device labels, modelName
// included. docs/metrics.md lists them.
func knownPromtoolFinding(line string) bool {
	camel := strings.Contains(line, "label names should be written in 'snake_case' not 'camelCase'")
	if name, _, ok := strings.Cut(line, " "); ok && strings.HasPrefix(name, "DCGM_FI_") {
		f, known := exposition.FieldNamed(name)
		counter := known && f.Family().Type == exposition.Counter
		switch {
		case camel:
			return true
		case counter && strings.Contains(line, `counter metrics should have "_total" suffix`):
			return true
		case f == exposition.PCIeReplayCounter && strings.Contains(line, "metric name should not include type 'counter'"):
			return true
		}
		return false
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
