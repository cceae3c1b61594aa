package collector

import (
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/counters"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// Format is how snapshots are rendered: the fields and label fields a
// counters file selects, with its types and help texts, and the node
// label's name. The zero Format is not usable: build one with NewFormat.
type Format struct {
	fields exposition.FieldSet
	labels exposition.LabelSet
	// families are the device fields' families, HELP texts escaped.
	families [exposition.NumFields]exposition.Family
	// hostname is the node label's name; "" leaves the label out.
	hostname string
}

// NewFormat is the format of selection c (nil: counters.Default()) with the
// node label named hostnameLabel ("" leaves it out).
func NewFormat(c *counters.Set, hostnameLabel string) *Format {
	if c == nil {
		c = counters.Default()
	}
	f := &Format{fields: c.Fields, labels: c.Labels, hostname: hostnameLabel}
	for fld := range exposition.NumFields {
		fam := c.Family(fld)
		fam.Help = escapeHelp(fam.Help)
		f.families[fld] = fam
	}
	return f
}

// Fields are the device fields the format serves.
func (f *Format) Fields() exposition.FieldSet { return f.fields }

// Labels are the label fields the format writes.
func (f *Format) Labels() exposition.LabelSet { return f.labels }

// defaultFormat renders snapshots built without a sampler (tests): the
// built-in selection, the node label as dcgm-exporter's releases name it.
var defaultFormat = NewFormat(nil, exposition.LabelHostname)

// escapeHelp escapes a HELP text as the text format requires: backslash
// and line feed.
func escapeHelp(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, c)
		}
	}
	return string(b)
}
