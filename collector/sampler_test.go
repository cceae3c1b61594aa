package collector

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector/counters"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/internal/collectortest"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

// scriptedBackend returns whatever the test put in it.
type scriptedBackend struct {
	readings []DeviceReading
	errs     []DeviceError
	calls    int
}

func (b *scriptedBackend) Name() string { return "scripted" }
func (b *scriptedBackend) Close() error { return nil }
func (b *scriptedBackend) Sample(time.Time) ([]DeviceReading, []DeviceError) {
	b.calls++
	return b.readings, b.errs
}

func utilReading(d *Device, util float64) DeviceReading {
	return DeviceReading{Device: d, Reading: reading(map[exposition.Field]float64{exposition.GPUUtil: util})}
}

func TestSamplerJoinsOwners(t *testing.T) {
	d0 := &Device{Index: 0, UUID: "GPU-a", Minor: 0}
	d1 := &Device{Index: 1, UUID: "GPU-b", Minor: 1}
	b := &scriptedBackend{readings: []DeviceReading{utilReading(d0, 50), utilReading(d1, 0)}}
	owners := collectortest.Owners{"GPU-a": {{Namespace: "ns", Pod: "p", Container: "c", Resource: "nvidia.com/gpu"}}}
	s := NewSampler(b, SamplerOptions{Node: "n1", Interval: time.Second, Owners: func() podmap.Lookup { return owners }})
	if s.Ready() || s.Latest() != nil {
		t.Fatal("ready before the first sample")
	}
	now := time.Unix(1000, 0)
	snap := s.SampleOnce(now)
	if !s.Ready() || s.Latest() != snap || snap.Node != "n1" || snap.Time != now {
		t.Fatalf("after one round: ready=%v latest=%p snap=%p node=%q time=%v", s.Ready(), s.Latest(), snap, snap.Node, snap.Time)
	}
	if got := snap.Devices[0].Owners; len(got) != 1 || got[0].Pod != "p" {
		t.Errorf("GPU-a owners = %+v", got)
	}
	if got := snap.Devices[1].Owners; got != nil {
		t.Errorf("idle GPU-b owners = %+v, want none", got)
	}
	if s.Fresh(now.Add(3*time.Second), 3*time.Second) != snap {
		t.Error("snapshot at max age not served")
	}
	if s.Fresh(now.Add(3*time.Second+time.Millisecond), 3*time.Second) != nil {
		t.Error("stale snapshot served")
	}
}

func TestSamplerReadiness(t *testing.T) {
	tests := []struct {
		name      string
		readings  int
		errs      int
		wantReady bool
	}{
		{"devices read", 1, 0, true},
		{"some failing", 1, 1, true},
		{"all failing", 0, 1, false},
		{"no GPUs at all", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &scriptedBackend{}
			for i := 0; i < tt.readings; i++ {
				b.readings = append(b.readings, utilReading(&Device{UUID: "GPU-x"}, 1))
			}
			for i := 0; i < tt.errs; i++ {
				b.errs = append(b.errs, DeviceError{Device: "GPU-y", Err: io.EOF})
			}
			s := NewSampler(b, SamplerOptions{Interval: time.Second})
			s.SampleOnce(time.Now())
			if s.Ready() != tt.wantReady {
				t.Errorf("ready = %v, want %v", s.Ready(), tt.wantReady)
			}
		})
	}
}

func TestMetricsHandler(t *testing.T) {
	d := &Device{Index: 0, UUID: "GPU-a", Name: "H", PCIBusID: "00000000:01:00.0", Minor: 0}
	b := &scriptedBackend{readings: []DeviceReading{utilReading(d, 42)}}
	reg := prometheus.NewRegistry()
	s := NewSampler(b, SamplerOptions{Node: "n", Interval: time.Second, Registerer: reg})
	h := MetricsHandler(s, reg, HandlerOptions{MaxAge: time.Minute})

	get := func(gz bool) string {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if gz {
			req.Header.Set("Accept-Encoding", "deflate, gzip;q=1.0")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d", rec.Code)
		}
		if v := rec.Header().Values("Vary"); len(v) != 1 || v[0] != "Accept-Encoding" {
			t.Errorf("Vary %q, want Accept-Encoding", v)
		}
		return responseBody(t, rec, gz)
	}

	before := get(false)
	if strings.Contains(before, "DCGM_FI_DEV_GPU_UTIL") {
		t.Error("device series served before the first sample")
	}
	s.SampleOnce(time.Now())
	for _, gz := range []bool{false, true} {
		out := get(gz)
		for _, want := range []string{
			`DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",pci_bus_id="00000000:01:00.0",device="nvidia0",modelName="H",Hostname="n"} 42`,
			"gpu_metrics_server_devices 1",
			"gpu_metrics_server_sample_duration_seconds_count 1",
			exposition.SampleTimestamp.Name() + " ",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("gzip=%v: missing %q in\n%s", gz, want, out)
			}
		}
	}
	// A stuck sampler: the snapshot ages out and is no longer served.
	s.SampleOnce(time.Now().Add(-2 * time.Minute))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if strings.Contains(rec.Body.String(), "DCGM_FI_DEV_GPU_UTIL") {
		t.Error("stale snapshot served")
	}
}

func TestAcceptsGzip(t *testing.T) {
	tests := []struct {
		accept []string // Accept-Encoding headers
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"gzip"}, true},
		{[]string{"GZip"}, true},
		{[]string{"x-gzip"}, true},
		{[]string{"deflate, gzip;q=1.0, *;q=0.5"}, true},
		{[]string{"gzip;q=0.001"}, true},
		{[]string{"gzip ; Q=0.5"}, true},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip;q=0.000"}, false},
		{[]string{"gzip; q=0, deflate"}, false},
		{[]string{"*"}, true},
		{[]string{"*;q=0"}, false},
		{[]string{"gzip;q=0, *"}, false}, // the explicit entry wins
		{[]string{"*;q=0, gzip"}, true},
		{[]string{"identity"}, false},
		{[]string{"br, deflate"}, false},
		{[]string{"gzipx, xgzip"}, false},
		{[]string{"gzip;q=abc"}, false},
		{[]string{"gzip;q=2"}, false},
		{[]string{"gzip;q=NaN"}, false},
		{[]string{"gzip;level=1"}, true},
		{[]string{"deflate", "gzip"}, true}, // several header lines
		{[]string{"deflate", "gzip;q=0"}, false},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		for _, v := range tt.accept {
			r.Header.Add("Accept-Encoding", v)
		}
		if got := AcceptsGzip(r); got != tt.want {
			t.Errorf("Accept-Encoding %q: gzip %v, want %v", tt.accept, got, tt.want)
		}
	}
}

func TestSamplerErrorMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := &scriptedBackend{errs: []DeviceError{{Device: "GPU-z", Err: io.EOF, Lost: true}}}
	s := NewSampler(b, SamplerOptions{Interval: time.Second, Registerer: reg})
	s.SampleOnce(time.Now())
	s.SampleOnce(time.Now())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				got[mf.GetName()] += c.GetValue()
			}
		}
	}
	if got["gpu_metrics_server_sample_errors_total"] != 2 || got["gpu_metrics_server_devices_lost_total"] != 2 {
		t.Errorf("counters = %v", got)
	}
}

// TestSamplerFormat checks what the sampler does with the format: fields
// outside it are dropped from every reading, a MIG instance gets its GPU's
// whole-GPU fields of the same round (not its utilization or memory), and
// the snapshot renders with the format's names, types and help texts.
func TestSamplerFormat(t *testing.T) {
	gpu := &Device{Index: 0, UUID: "GPU-m", Minor: 0, MIGInstances: true}
	inst := &Device{Index: 0, UUID: "MIG-1", Minor: 0, MIG: &MIGInstance{ParentUUID: "GPU-m", GPUInstance: 3, Profile: "3g.40gb"}}
	other := &Device{Index: 1, UUID: "GPU-o", Minor: 1}
	gpuFields := map[exposition.Field]float64{
		exposition.PowerUsage: 200, exposition.GPUTemp: 50, exposition.XIDErrors: 13, exposition.SMClock: 1980,
		exposition.GPUUtil: 99, exposition.FBUsed: 7 * mib, exposition.FBFree: 1 * mib, exposition.ECCDBEVolatileTotal: 1,
	}
	b := &scriptedBackend{readings: []DeviceReading{
		{Device: gpu, Reading: reading(gpuFields)},
		{Device: inst, Reading: reading(map[exposition.Field]float64{exposition.FBUsed: 2 * mib, exposition.FBFree: 3 * mib, exposition.GREngineActive: 0.5})},
		{Device: other, Reading: reading(map[exposition.Field]float64{exposition.GPUUtil: 10, exposition.ECCDBEVolatileTotal: 2, exposition.SMClock: 345})},
	}}
	c, problems := counters.Parse("c.csv", strings.NewReader("DCGM_FI_DEV_POWER_USAGE, counter, My power.\nDCGM_FI_DEV_XID_ERRORS, gauge, x\nDCGM_FI_DEV_GPU_TEMP, gauge, t\n"), counters.Options{})
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	s := NewSampler(b, SamplerOptions{Node: "n", Interval: time.Second, Format: NewFormat(c, exposition.LabelHostnameLower)})
	snap := s.SampleOnce(time.Unix(1, 0))

	got := map[string]exposition.FieldSet{}
	for _, d := range snap.Devices {
		got[d.Device.UUID] = d.Reading.Fields()
	}
	served := exposition.RoleFields()
	served.AddAll(exposition.FieldsOf(exposition.PowerUsage, exposition.XIDErrors, exposition.GPUTemp))
	want := map[string]exposition.FieldSet{
		"GPU-m": served.Intersect(exposition.FieldsOf(exposition.PowerUsage, exposition.GPUTemp, exposition.XIDErrors, exposition.GPUUtil, exposition.FBUsed, exposition.FBFree)),
		"MIG-1": exposition.FieldsOf(exposition.FBUsed, exposition.FBFree, exposition.GREngineActive, exposition.PowerUsage, exposition.GPUTemp, exposition.XIDErrors),
		"GPU-o": exposition.FieldsOf(exposition.GPUUtil),
	}
	for uuid, w := range want {
		if got[uuid] != w {
			t.Errorf("%s fields %v, want %v", uuid, got[uuid], w)
		}
	}
	if v, _ := snap.Devices[1].Reading.Get(exposition.FBUsed); v != 2*mib {
		t.Errorf("instance memory %v, want its own", v)
	}
	if v, _ := snap.Devices[1].Reading.Get(exposition.PowerUsage); v != 200 {
		t.Errorf("instance power %v, want its GPU's", v)
	}
	body := string(snap.Exposition())
	for _, want := range []string{
		"# HELP DCGM_FI_DEV_POWER_USAGE My power.\n# TYPE DCGM_FI_DEV_POWER_USAGE counter\n",
		`DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-m",device="nvidia0",GPU_I_PROFILE="3g.40gb",GPU_I_ID="3",hostname="n"} 200`,
		`DCGM_FI_DEV_XID_ERRORS{gpu="0",UUID="GPU-m",device="nvidia0",GPU_I_PROFILE="3g.40gb",GPU_I_ID="3",hostname="n",err_code="13"} 13`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q in\n%s", want, body)
		}
	}
	if strings.Contains(body, `DCGM_FI_DEV_GPU_UTIL{gpu="0"`) || strings.Contains(body, "ECC") || strings.Contains(body, "SM_CLOCK") {
		t.Errorf("the GPU in MIG mode or an unselected field is served:\n%s", body)
	}
}

func TestFormatHostname(t *testing.T) {
	d := &Device{Index: 0, UUID: "GPU-a", Minor: -1}
	d.Labels[exposition.DriverVersionLabel] = "580.1"
	for _, tt := range []struct{ label, want string }{
		{exposition.LabelHostname, `{gpu="0",UUID="GPU-a",Hostname="n",DCGM_FI_DRIVER_VERSION="580.1"} 1`},
		{exposition.LabelHostnameLower, `{gpu="0",UUID="GPU-a",hostname="n",DCGM_FI_DRIVER_VERSION="580.1"} 1`},
		{"", `{gpu="0",UUID="GPU-a",DCGM_FI_DRIVER_VERSION="580.1"} 1`},
	} {
		snap := &Snapshot{Node: "n", format: NewFormat(nil, tt.label), Devices: []DeviceSample{{DeviceReading: utilReading(d, 1)}}}
		if body := string(snap.Exposition()); !strings.Contains(body, "DCGM_FI_DEV_GPU_UTIL"+tt.want) {
			t.Errorf("label %q: want %s in\n%s", tt.label, tt.want, body)
		}
	}
	if got := escapeHelp("a\\b\nc"); got != `a\\b\nc` {
		t.Errorf("escapeHelp = %q", got)
	}
}

func TestSharedByPods(t *testing.T) {
	o := func(ns, pod, container, replica string) podmap.Owner {
		return podmap.Owner{Namespace: ns, Pod: pod, Container: container, Resource: "nvidia.com/gpu", Replica: replica}
	}
	tests := []struct {
		name   string
		owners []podmap.Owner
		want   bool
	}{
		{"idle", nil, false},
		{"one pod", []podmap.Owner{o("inf", "a", "srv", "")}, false},
		{"two containers of one pod", []podmap.Owner{o("inf", "a", "srv", ""), o("inf", "a", "side", "")}, false},
		{"two replicas held by one pod", []podmap.Owner{o("inf", "a", "srv", "0"), o("inf", "a", "srv", "1")}, false},
		{"two pods", []podmap.Owner{o("inf", "a", "srv", "0"), o("inf", "b", "srv", "1")}, true},
		{"same pod name, two namespaces", []podmap.Owner{o("inf", "a", "srv", "0"), o("ml", "a", "srv", "1")}, true},
	}
	for _, tt := range tests {
		if got := sharedByPods(tt.owners); got != tt.want {
			t.Errorf("%s: shared %v, want %v", tt.name, got, tt.want)
		}
	}
}
