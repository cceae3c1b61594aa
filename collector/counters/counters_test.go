package counters

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// defaultFile is the built-in list written as a counters file, in
// dcgm-exporter's layout: comments, aligned columns, the label line.
func defaultFile() string {
	var b strings.Builder
	b.WriteString("# Format\n# DCGM FIELD, Prometheus metric type, help message\n\n")
	for f := range exposition.NumFields {
		if f.InDefault() {
			fam := f.Family()
			fmt.Fprintf(&b, "%-40s %s, %s\n", fam.Name+",", fam.Type, fam.Help)
		} else {
			fmt.Fprintf(&b, "# %s, %s, %s\n", f.Name(), f.Family().Type, f.Family().Help)
		}
	}
	for l := range exposition.NumLabelFields {
		prefix := "# "
		if l.InDefault() {
			prefix = ""
		}
		fmt.Fprintf(&b, "%s%s, label, %s\n", prefix, l.Name(), l.Help())
	}
	return b.String()
}

func TestParseDefaultFile(t *testing.T) {
	s, problems := Parse("default.csv", strings.NewReader(defaultFile()), Options{})
	if len(problems) > 0 {
		t.Fatalf("problems: %v", problems)
	}
	d := Default()
	if s.Fields != d.Fields || s.Labels != d.Labels || len(s.Added) != 0 || len(s.Skipped) != 0 {
		t.Errorf("parsed %v %b added %v skipped %v; want the built-in %v %b", s.Fields, s.Labels, s.Added, s.Skipped, d.Fields, d.Labels)
	}
	for f := range exposition.NumFields {
		if s.Family(f) != d.Family(f) || d.Family(f) != f.Family() {
			t.Errorf("%s: parsed %+v, built-in %+v, table %+v", f.Name(), s.Family(f), d.Family(f), f.Family())
		}
	}
	// dcgm-exporter's default list: 25 values and the driver version.
	n := 0
	for f := range exposition.NumFields {
		if d.Fields.Has(f) {
			n++
		}
	}
	if n != 25 || !d.Labels.Has(exposition.DriverVersionLabel) {
		t.Errorf("built-in list has %d fields (want 25) and labels %b", n, d.Labels)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		skip    bool
		fields  []exposition.Field
		labels  []exposition.LabelField
		added   []exposition.Field
		skipped []string // "line:field"
		// problems are "line:field:" prefixes of the problems, in order.
		problems []string
		check    func(t *testing.T, s *Set)
	}{
		{
			name:   "spacing, comments, quoting and type case as dcgm-exporter's files",
			in:     "# comment\n\nDCGM_FI_DEV_SM_CLOCK ,  gauge, SM clock.\n   # indented comment\nDCGM_FI_DEV_XID_ERRORS,Counter,\"Last XID, quoted\"\nDCGM_FI_DRIVER_VERSION, label, Driver Version\n   \n",
			fields: []exposition.Field{exposition.SMClock, exposition.XIDErrors},
			labels: []exposition.LabelField{exposition.DriverVersionLabel},
			added:  roleFields(),
			check: func(t *testing.T, s *Set) {
				if fam := s.Family(exposition.XIDErrors); fam.Type != exposition.Counter || fam.Help != "Last XID, quoted" {
					t.Errorf("XID family %+v: want the file's type and help", fam)
				}
				if fam := s.Family(exposition.SMClock); fam.Help != "SM clock." || fam.Name != "DCGM_FI_DEV_SM_CLOCK" || fam.Unit != exposition.MHz {
					t.Errorf("SM clock family %+v", fam)
				}
			},
		},
		{
			name:   "the aggregator's fields are served even when left out",
			in:     "DCGM_FI_DEV_GPU_UTIL, gauge, u\n",
			fields: []exposition.Field{exposition.GPUUtil},
			added:  without(roleFields(), exposition.GPUUtil),
		},
		{
			name:     "unknown and unsupplied fields, one problem each",
			in:       "DCGM_FI_DEV_SM_CLOCK, gauge, c\nDCGM_FI_DEV_NOPE, gauge, x\nDCGM_EXP_XID_ERRORS_COUNT, counter, x\nDCGM_FI_DEV_PSTATE, gauge, p\n",
			problems: []string{"2:DCGM_FI_DEV_NOPE:", "3:DCGM_EXP_XID_ERRORS_COUNT:", "4:DCGM_FI_DEV_PSTATE:"},
		},
		{
			name:    "skipped when asked",
			in:      "DCGM_FI_DEV_SM_CLOCK, gauge, c\nDCGM_FI_DEV_NOPE, gauge, x\nDCGM_EXP_XID_ERRORS_COUNT, counter, x\n",
			skip:    true,
			fields:  []exposition.Field{exposition.SMClock},
			added:   roleFields(),
			skipped: []string{"2:DCGM_FI_DEV_NOPE", "3:DCGM_EXP_XID_ERRORS_COUNT"},
		},
		{
			name:     "skipping does not hide malformed lines",
			in:       "DCGM_FI_DEV_NOPE, gauge, x\nDCGM_FI_DEV_SM_CLOCK, gauge\nDCGM_FI_DEV_MEM_CLOCK, gauge, a, b\n, gauge, x\n",
			skip:     true,
			problems: []string{"2::", "3::", "4::"},
		},
		{
			name:     "types that do not fit",
			in:       "DCGM_FI_DEV_SM_CLOCK, histogram, c\nDCGM_FI_DEV_MEM_CLOCK, label, c\nDCGM_FI_DRIVER_VERSION, gauge, d\nDCGM_FI_DEV_GPU_TEMP, gague, t\nDCGM_FI_DEV_FB_USED, summary, f\n",
			skip:     true,
			problems: []string{"1:DCGM_FI_DEV_SM_CLOCK:", "2:DCGM_FI_DEV_MEM_CLOCK:", "3:DCGM_FI_DRIVER_VERSION:", "4:DCGM_FI_DEV_GPU_TEMP:", "5:DCGM_FI_DEV_FB_USED:"},
		},
		{
			name:     "a field listed twice",
			in:       "DCGM_FI_DEV_SM_CLOCK, gauge, c\n\nDCGM_FI_DEV_SM_CLOCK, counter, c\n",
			problems: []string{"3:DCGM_FI_DEV_SM_CLOCK:"},
		},
		{
			name:     "broken quoting stops at its line",
			in:       "DCGM_FI_DEV_SM_CLOCK, gauge, c\nDCGM_FI_DEV_MEM_CLOCK, gauge, \"open\nDCGM_FI_DEV_GPU_TEMP, gauge, t\n",
			problems: []string{"2::"},
		},
		{
			name:     "bare quote",
			in:       "DCGM_FI_DEV_SM_CLOCK, gauge, say \"hi\"\n",
			problems: []string{"1::"},
		},
		{
			name:     "not UTF-8",
			in:       "DCGM_FI_DEV_SM_CLOCK, gauge, \xff\n",
			problems: []string{"1::"},
		},
		{
			name:  "empty file: only what the aggregator reads",
			in:    "# nothing\n",
			added: roleFields(),
		},
		{
			name:   "a quoted help text may span lines",
			in:     "DCGM_FI_DEV_SM_CLOCK, gauge, \"two\nlines\"\nDCGM_FI_DEV_MEM_CLOCK, gauge, m\n",
			fields: []exposition.Field{exposition.SMClock, exposition.MemClock},
			added:  roleFields(),
			check: func(t *testing.T, s *Set) {
				if s.Family(exposition.SMClock).Help != "two\nlines" {
					t.Errorf("help %q", s.Family(exposition.SMClock).Help)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, problems := Parse("c.csv", strings.NewReader(tt.in), Options{SkipUnsupported: tt.skip})
			var got []string
			for _, p := range problems {
				got = append(got, fmt.Sprintf("%d:%s:", p.Line, p.Field))
				if !strings.HasPrefix(p.Error(), fmt.Sprintf("c.csv:%d: ", p.Line)) || p.Reason == "" {
					t.Errorf("problem %q does not name file and line", p.Error())
				}
			}
			if !slices.Equal(got, tt.problems) {
				t.Fatalf("problems %v, want %v (%v)", got, tt.problems, problems)
			}
			if len(tt.problems) > 0 {
				if s != nil {
					t.Error("a set despite problems")
				}
				return
			}
			var want exposition.FieldSet
			for _, f := range append(slices.Clone(tt.fields), tt.added...) {
				want.Add(f)
			}
			var wantLabels exposition.LabelSet
			for _, l := range tt.labels {
				wantLabels.Add(l)
			}
			if s.Fields != want || s.Labels != wantLabels || !slices.Equal(s.Added, tt.added) {
				t.Errorf("fields %v labels %b added %v; want %v %b %v", s.Fields, s.Labels, s.Added, want, wantLabels, tt.added)
			}
			var skipped []string
			for _, p := range s.Skipped {
				skipped = append(skipped, fmt.Sprintf("%d:%s", p.Line, p.Field))
				if !p.Unsupported {
					t.Errorf("skipped %v is not an unsupported field", p)
				}
			}
			if !slices.Equal(skipped, tt.skipped) {
				t.Errorf("skipped %v, want %v", skipped, tt.skipped)
			}
			if s.Source != "c.csv" {
				t.Errorf("source %q", s.Source)
			}
			if tt.check != nil {
				tt.check(t, s)
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	big := strings.Repeat("# padding\n", maxFileBytes/10+1)
	if s, problems := Parse("big.csv", strings.NewReader(big), Options{}); s != nil || len(problems) != 1 {
		t.Fatalf("set %v problems %v, want one problem", s, problems)
	}
}

func roleFields() []exposition.Field {
	var out []exposition.Field
	for f := range exposition.NumFields {
		if exposition.RoleFields().Has(f) {
			out = append(out, f)
		}
	}
	return out
}

func without(fs []exposition.Field, f exposition.Field) []exposition.Field {
	return slices.DeleteFunc(slices.Clone(fs), func(x exposition.Field) bool { return x == f })
}

// FuzzParse checks that any input gives either problems that name the file
// and a line, or a set that holds at least the aggregator's fields and
// whose families keep the table's names and units.
func FuzzParse(f *testing.F) {
	f.Add(defaultFile(), false)
	for _, s := range []string{
		"DCGM_FI_DEV_SM_CLOCK, gauge, c\n", "a,b\n", "\"x\ny\", gauge, h\n", "# c\n\n", "DCGM_FI_DRIVER_VERSION, label, d\r\n",
		"DCGM_FI_DEV_NOPE, gauge, x\n", ",,\n", "\"", "DCGM_FI_DEV_FB_USED, counter, \"a\"\"b\"\n",
	} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, in string, skip bool) {
		s, problems := Parse("f.csv", strings.NewReader(in), Options{SkipUnsupported: skip})
		if (s == nil) == (len(problems) == 0) {
			t.Fatalf("set %v with problems %v", s, problems)
		}
		for _, p := range problems {
			if p.Line < 1 || !strings.HasPrefix(p.Error(), fmt.Sprintf("f.csv:%d: ", p.Line)) || (skip && p.Unsupported) {
				t.Fatalf("problem %+v", p)
			}
		}
		if s == nil {
			return
		}
		if !s.Fields.Contains(exposition.RoleFields()) {
			t.Fatalf("fields %v lack the aggregator's", s.Fields)
		}
		for fld := range exposition.NumFields {
			got, want := s.Family(fld), fld.Family()
			if got.Name != want.Name || got.Unit != want.Unit || got.Role != want.Role {
				t.Fatalf("%s: family %+v", want.Name, got)
			}
		}
	})
}
