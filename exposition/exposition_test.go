package exposition

import (
	"math"
	"os"
	"regexp"
	"strings"
	"testing"
)

// allFamilies is every row of both tables.
func allFamilies() []Family {
	var out []Family
	for f := range NumFields {
		out = append(out, f.Family())
	}
	for a := range NumAgentFamilies {
		out = append(out, a.Family())
	}
	return out
}

// TestTable checks the rows: valid, unique names; a help text; the agent's
// own families under its prefix; each role read from exactly one family,
// a gauge.
func TestTable(t *testing.T) {
	name := regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	seen := map[string]bool{}
	var roles [NumRoles]int
	for _, fam := range allFamilies() {
		if !name.MatchString(fam.Name) || fam.Help == "" || len(fam.Name) < minNameLen {
			t.Errorf("row %+v: invalid name or no help", fam)
		}
		if seen[fam.Name] {
			t.Errorf("%s: two rows", fam.Name)
		}
		seen[fam.Name] = true
		roles[fam.Role]++
		// The aggregator reads gauges only: the counters an agent
		// restarts from a lower value (energy, violation times) reach
		// no value it serves.
		if fam.Role != RoleNone && fam.Type != Gauge {
			t.Errorf("%s: the aggregator reads it (role %d) but it is no gauge", fam.Name, fam.Role)
		}
	}
	for r := RoleNone + 1; r < NumRoles; r++ {
		if roles[r] != 1 {
			t.Errorf("role %d is read from %d families, want 1", r, roles[r])
		}
		if fam := r.Family(); fam.Role != r {
			t.Errorf("role %d: Family() = %+v", r, fam)
		}
	}
	for a := range NumAgentFamilies {
		if n := a.Name(); len(n) < 19 || n[:19] != "gpu_metrics_server_" {
			t.Errorf("agent family %q lacks the gpu_metrics_server_ prefix", n)
		}
	}
	for f := range NumFields {
		if n := f.Name(); len(n) < 8 || n[:8] != "DCGM_FI_" {
			t.Errorf("device field %q is not a DCGM field", n)
		}
	}
}

func TestRoleOf(t *testing.T) {
	for _, fam := range allFamilies() {
		r, ok := RoleOf([]byte(fam.Name))
		if r != fam.Role || ok != (fam.Role != RoleNone) {
			t.Errorf("RoleOf(%q) = %d, %v; want %d", fam.Name, r, ok, fam.Role)
		}
	}
	for _, name := range []string{"", "DCGM_FI_DEV_GPU_UTI", "DCGM_FI_DEV_GPU_UTILX", "dcgm_fi_dev_gpu_util", "go_goroutines",
		"gpu_metrics_server_sample_timestamp_seconds_total", string(make([]byte, 300))} {
		if r, ok := RoleOf([]byte(name)); ok || r != RoleNone {
			t.Errorf("RoleOf(%q) = %d, %v; want none", name, r, ok)
		}
	}
	name := []byte(GPUUtil.Name())
	if n := testing.AllocsPerRun(100, func() { RoleOf(name) }); n != 0 {
		t.Errorf("RoleOf allocates %v times", n)
	}
}

// FuzzRoleOf compares the lookup with a plain map of the tables.
func FuzzRoleOf(f *testing.F) {
	want := map[string]Role{}
	for _, fam := range allFamilies() {
		if fam.Role != RoleNone {
			want[fam.Name] = fam.Role
		}
		f.Add(fam.Name)
	}
	f.Fuzz(func(t *testing.T, name string) {
		r, ok := RoleOf([]byte(name))
		w, wok := want[name]
		if r != w || ok != wok {
			t.Fatalf("RoleOf(%q) = %d, %v; want %d, %v", name, r, ok, w, wok)
		}
	})
}

func TestUnits(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		unit           Unit
		base, in, back float64 // base → unit (FromBase) → base (ToBase)
		max            float64
		name           string
	}{
		{MiB, 1536 << 20, 1536, 1536 << 20, inf, "MiB"},
		{MiB, 1<<20 + 1<<19, 1, 1 << 20, inf, "MiB"}, // whole MiB, rounded down
		{MiB, 0, 0, 0, inf, "MiB"},
		{Percent, 87.5, 87.5, 87.5, 100, "%"},
		{Ratio, 0.375, 0.375, 0.375, 1, "ratio"},
		{Bytes, 3 << 30, 3 << 30, 3 << 30, inf, "bytes"},
		{Millijoules, 123456789012, 123456789012, 123456789012, inf, "mJ"},
		{Watts, 301.25, 301.25, 301.25, inf, "W"},
		{Seconds, 1700000000.123, 1700000000.123, 1700000000.123, inf, "s"},
		{Count, 2, 2, 2, inf, "count"},
	}
	for _, tt := range tests {
		if got := tt.unit.FromBase(tt.base); got != tt.in {
			t.Errorf("%s.FromBase(%v) = %v, want %v", tt.name, tt.base, got, tt.in)
		}
		if got := tt.unit.ToBase(tt.in); got != tt.back {
			t.Errorf("%s.ToBase(%v) = %v, want %v", tt.name, tt.in, got, tt.back)
		}
		if tt.unit.Max() != tt.max || tt.unit.String() != tt.name {
			t.Errorf("unit %d: max %v name %q, want %v %q", tt.unit, tt.unit.Max(), tt.unit.String(), tt.max, tt.name)
		}
	}
	if Gauge.String() != "gauge" || Counter.String() != "counter" {
		t.Errorf("types %s %s", Gauge, Counter)
	}
}

func TestFieldSet(t *testing.T) {
	var s FieldSet
	if s.Has(GPUUtil) || s.String() != "{}" {
		t.Fatalf("zero set %v", s)
	}
	s.Add(GPUUtil)
	s.Add(SMActive)
	mem := FieldsOf(FBUsed, FBFree)
	tests := []struct {
		name string
		got  bool
		want bool
	}{
		{"has added", s.Has(GPUUtil) && s.Has(SMActive), true},
		{"has other", s.Has(FBUsed), false},
		{"intersects disjoint", s.Intersects(mem), false},
		{"intersects shared", s.Intersects(FieldsOf(FBUsed, GPUUtil)), true},
		{"contains subset", s.Contains(FieldsOf(GPUUtil)), true},
		{"contains partly", s.Contains(FieldsOf(GPUUtil, FBUsed)), false},
		{"contains empty", s.Contains(FieldSet{}), true},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	s.AddAll(mem)
	if !s.Contains(mem) || s != FieldsOf(SMActive, FBFree, GPUUtil, FBUsed) {
		t.Errorf("after AddAll: %v", s)
	}
	if got, want := s.String(), "{DCGM_FI_DEV_GPU_UTIL DCGM_FI_DEV_FB_FREE DCGM_FI_DEV_FB_USED DCGM_FI_PROF_SM_ACTIVE}"; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
}

func BenchmarkRoleOf(b *testing.B) {
	var names [][]byte
	for _, fam := range allFamilies() {
		names = append(names, []byte(fam.Name))
	}
	names = append(names, []byte("go_gc_duration_seconds"), []byte("process_resident_memory_bytes"))
	b.ReportAllocs()
	for b.Loop() {
		for _, n := range names {
			RoleOf(n)
		}
	}
}

// TestFieldColumns checks the columns beyond the family: every field and
// label field has an NVML source and is found by its name; label fields are
// in the order of their names (dcgm-exporter writes them so); the fields
// the aggregator reads are in the built-in list; fields of a whole GPU are
// neither the aggregator's utilization nor memory (a MIG instance must not
// report its GPU's).
func TestFieldColumns(t *testing.T) {
	for f := range NumFields {
		if f.Source() == "" {
			t.Errorf("%s: no NVML source", f.Name())
		}
		if g, ok := FieldNamed(f.Name()); !ok || g != f {
			t.Errorf("FieldNamed(%q) = %v, %v", f.Name(), g, ok)
		}
		if f.Family().Role != RoleNone && (!f.InDefault() || f.Scope() != PerDevice) && f.Family().Role != RolePower {
			t.Errorf("%s: read by the aggregator but not in the default list or not per device", f.Name())
		}
		if ProfilingFields().Has(f) && f.Scope() != PerDevice {
			t.Errorf("%s: profiling field of the whole GPU", f.Name())
		}
	}
	for l := range NumLabelFields {
		if l.Source() == "" || l.Help() == "" {
			t.Errorf("%s: no source or help", l.Name())
		}
		if g, ok := LabelFieldNamed(l.Name()); !ok || g != l {
			t.Errorf("LabelFieldNamed(%q) = %v, %v", l.Name(), g, ok)
		}
		if l > 0 && (l-1).Name() >= l.Name() {
			t.Errorf("label fields out of name order: %s before %s", (l - 1).Name(), l.Name())
		}
		if _, ok := FieldNamed(l.Name()); ok {
			t.Errorf("%s is both a field and a label", l.Name())
		}
	}
	if _, ok := FieldNamed("DCGM_FI_DEV_NOPE"); ok {
		t.Error("FieldNamed found an unknown name")
	}
	if _, ok := LabelFieldNamed("DCGM_FI_DEV_NOPE"); ok {
		t.Error("LabelFieldNamed found an unknown name")
	}
	if d := DefaultLabels(); !d.Has(DriverVersionLabel) || d.Has(SerialLabel) {
		t.Errorf("default labels %b", d)
	}
	if !DefaultFields().Contains(RoleFields()) {
		t.Error("the default list lacks fields the aggregator reads")
	}
}

// TestDocsListEveryField: docs/metrics.md has a row for every device field
// and label field, with its NVML source.
func TestDocsListEveryField(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(doc), "\n") {
		if name, _, ok := strings.Cut(strings.TrimPrefix(line, "| `"), "`"); ok && strings.HasPrefix(line, "| `") && rows[name] == "" {
			rows[name] = line // the fields table comes first
		}
	}
	check := func(name, source string) {
		if row, ok := rows[name]; !ok || !strings.Contains(row, source) {
			t.Errorf("docs/metrics.md has no row for %s with its source %q", name, source)
		}
	}
	for f := range NumFields {
		check(f.Name(), f.Source())
	}
	for l := range NumLabelFields {
		check(l.Name(), l.Source())
	}
}

// TestSmokeListsEveryField: hack/gpu-smoke.sh reads every field and label
// field on a real GPU: its counters file lists each with its type.
func TestSmokeListsEveryField(t *testing.T) {
	script, err := os.ReadFile("../hack/gpu-smoke.sh")
	if err != nil {
		t.Fatal(err)
	}
	for f := range NumFields {
		if line := f.Name() + ", " + f.Family().Type.String() + ","; !strings.Contains(string(script), "\n"+line) {
			t.Errorf("hack/gpu-smoke.sh does not list %q", line)
		}
	}
	for l := range NumLabelFields {
		if line := l.Name() + ", label,"; !strings.Contains(string(script), "\n"+line) {
			t.Errorf("hack/gpu-smoke.sh does not list %q", line)
		}
	}
}

// TestReadFamilies: one family per role, each one RoleOf finds: what the
// aggregator asks the agents for is what its parser reads.
func TestReadFamilies(t *testing.T) {
	names := ReadFamilies()
	if len(names) != int(NumRoles)-1 {
		t.Fatalf("%d families, want one per role (%d)", len(names), NumRoles-1)
	}
	seen := map[Role]bool{}
	for _, n := range names {
		r, ok := RoleOf([]byte(n))
		if !ok || seen[r] {
			t.Errorf("%s: role %d, found %v, seen before %v", n, r, ok, seen[r])
		}
		seen[r] = true
	}
}
