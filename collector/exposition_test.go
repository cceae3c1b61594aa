package collector

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

func parseExposition(t testing.TB, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, b)
	}
	return mfs
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// testSnapshot: GPU 0 held whole by one container, GPU 1 time-sliced by two
// pods, GPU 2 idle and without encoder support, and one MIG instance.
func testSnapshot() *Snapshot {
	full := Reading{
		Valid:   FieldGPUUtil | FieldMemCopyUtil | FieldEncUtil | FieldDecUtil | FieldMemory | FieldPower | FieldTemp | FieldSMClock | FieldMemClock | FieldEnergy,
		GPUUtil: 87, MemCopyUtil: 12.5, EncUtil: 0, DecUtil: 3,
		FBUsed: 1024 * mib, FBFree: 80 * 1024 * mib, FBTotal: 81 * 1024 * mib,
		PowerWatts: 301.25, TempCelsius: 55, SMClockMHz: 1980, MemClockMHz: 2619, EnergyMillijoules: 123456789012,
	}
	noEnc := full
	noEnc.Valid &^= FieldEncUtil
	noEnc.GPUUtil = 0
	mig := Reading{Valid: FieldMemory, FBUsed: 2 * 1024 * mib, FBFree: 18 * 1024 * mib, FBTotal: 20 * 1024 * mib}
	dev := func(i int, uuid string) *Device {
		return &Device{Index: i, UUID: uuid, Name: "NVIDIA H100 80GB HBM3", PCIBusID: "00000000:1" + string(rune('0'+i)) + ":00.0", Minor: i}
	}
	migDev := dev(3, "MIG-11111111-2222-3333-4444-555555555555")
	migDev.MIG = &MIGInstance{ParentUUID: "GPU-3", GPUInstance: 2, ComputeInstance: 0, Profile: "1g.20gb"}
	return &Snapshot{
		Time: time.UnixMilli(1700000000123),
		Node: "gpu-node-1",
		Devices: []DeviceSample{
			{DeviceReading{dev(0, "GPU-0"), full}, []podmap.Owner{{Namespace: "ml", Pod: "train-0", Container: "main", Resource: "nvidia.com/gpu"}}},
			{DeviceReading{dev(1, "GPU-1"), full}, []podmap.Owner{
				{Namespace: "inf", Pod: "a", Container: "srv", Resource: "nvidia.com/gpu", Replica: "0"},
				{Namespace: "inf", Pod: "b", Container: "srv", Resource: "nvidia.com/gpu", Replica: "3"},
			}},
			{DeviceReading{dev(2, "GPU-2"), noEnc}, nil},
			{DeviceReading{migDev, mig}, []podmap.Owner{{Namespace: "ml", Pod: "small", Container: "c", Resource: "nvidia.com/mig-1g.20gb"}}},
		},
	}
}

func TestExposition(t *testing.T) {
	snap := testSnapshot()
	mfs := parseExposition(t, snap.Exposition())

	util := mfs["DCGM_FI_DEV_GPU_UTIL"]
	if util.GetType() != dto.MetricType_GAUGE {
		t.Errorf("GPU_UTIL type %v", util.GetType())
	}
	type row struct{ uuid, pod, vgpu string }
	var rows []row
	for _, m := range util.GetMetric() {
		l := labelsOf(m)
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
		l := labelsOf(m)
		switch l["UUID"] {
		case "MIG-11111111-2222-3333-4444-555555555555":
			if l["GPU_I_PROFILE"] != "1g.20gb" || l["GPU_I_ID"] != "2" || m.GetGauge().GetValue() != 2048 || l["pod"] != "small" {
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
	ts := mfs[SampleTimestampMetric].GetMetric()[0].GetGauge().GetValue()
	if ts != 1700000000.123 {
		t.Errorf("sample timestamp %v", ts)
	}
	// Rendered once and cached.
	if a, b := snap.Exposition(), snap.Exposition(); &a[0] != &b[0] {
		t.Error("exposition rendered twice")
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
// camelCase, both of which promtool flags.
func knownPromtoolFinding(line string) bool {
	if !strings.HasPrefix(line, "DCGM_FI_DEV_") {
		return false
	}
	return strings.Contains(line, "label names should be written in 'snake_case' not 'camelCase'") ||
		strings.HasPrefix(line, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION ") && strings.Contains(line, `counter metrics should have "_total" suffix`)
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
			DeviceReading: DeviceReading{Device: &Device{UUID: "GPU-x", Name: value, Minor: -1}, Reading: Reading{Valid: FieldGPUUtil, GPUUtil: 1}},
			Owners:        []podmap.Owner{{Namespace: "ns", Pod: value, Container: "c"}},
		}}}
		mfs := parseExposition(t, snap.Exposition())
		l := labelsOf(mfs["DCGM_FI_DEV_GPU_UTIL"].GetMetric()[0])
		if value != "" && (l["modelName"] != value || l["pod"] != value) {
			t.Fatalf("label round trip: %q became modelName=%q pod=%q", value, l["modelName"], l["pod"])
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
