// Package counters reads dcgm-exporter's counters file: the CSV list of
// DCGM fields an exporter serves (its -f/--collectors flag, the ConfigMap
// gpu-operator's dcgmExporter.config names), and turns it into the agent's
// field selection.
//
// The format is dcgm-exporter's: one field per line,
//
//	DCGM_FIELD_NAME, type, help text
//
// with type gauge or counter for a value, or label for a device property
// written as a label on every series (DCGM_FI_DRIVER_VERSION); lines whose
// first non-blank character is '#' are comments, blank lines are skipped,
// spaces around a value are trimmed and values may be quoted as in RFC 4180.
// The type and help text of a line are what the agent serves for the field.
package counters

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// Set is a field selection: the device fields and label fields the agent
// reads and serves, with the type and help text of each as its line gave
// them.
type Set struct {
	// Fields are the device fields served: those listed, plus the fields
	// the aggregator reads (Added).
	Fields exposition.FieldSet
	// Labels are the label fields written on every device series.
	Labels exposition.LabelSet
	// Added are the fields the aggregator reads that the list left out:
	// they are served all the same.
	Added []exposition.Field
	// Skipped are the lines naming a field the agent cannot supply, left
	// out because the caller asked to skip them.
	Skipped []Problem
	// Source names where the list came from: a file name, or "built-in".
	Source   string
	families [exposition.NumFields]exposition.Family
}

// Family is field f's family as the list declares it: the table's name and
// unit, with the list's type and help text.
func (s *Set) Family(f exposition.Field) exposition.Family { return s.families[f] }

// Default is the built-in selection: dcgm-exporter's
// dcp-metrics-included.csv, the list gpu-operator deploys.
func Default() *Set {
	s := &Set{Fields: exposition.DefaultFields(), Labels: exposition.DefaultLabels(), Source: "built-in"}
	for f := range exposition.NumFields {
		s.families[f] = f.Family()
	}
	return s
}

// Problem is a line the agent cannot serve.
type Problem struct {
	// File and Line locate it (lines count from 1).
	File string
	Line int
	// Field is the field it names; "" for a line that does not parse.
	Field string
	// Reason says what is wrong.
	Reason string
	// Unsupported marks a field the agent cannot supply (rather than a
	// line that does not parse or does not fit): what SkipUnsupported
	// skips.
	Unsupported bool
}

func (p Problem) Error() string {
	if p.Field == "" {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Reason)
	}
	return fmt.Sprintf("%s:%d: %s: %s", p.File, p.Line, p.Field, p.Reason)
}

// Options tune Parse.
type Options struct {
	// SkipUnsupported leaves out the lines naming a field the agent cannot
	// supply (reported in Set.Skipped) instead of failing.
	SkipUnsupported bool
}

// maxFileBytes bounds a counters file: dcgm-exporter's largest is 5 KB.
const maxFileBytes = 1 << 20

// Parse reads the counters file named file from r. It returns every
// problem, one per line: lines that do not parse (the first only: the CSV
// reader cannot resume after a syntax error), fields listed twice, types
// that do not fit, and fields the agent cannot supply (unless
// o.SkipUnsupported). On any problem the Set is nil.
func Parse(file string, r io.Reader, o Options) (*Set, []Problem) {
	data, err := io.ReadAll(io.LimitReader(r, maxFileBytes+1))
	if err != nil {
		return nil, []Problem{{File: file, Reason: err.Error()}}
	}
	if len(data) > maxFileBytes {
		return nil, []Problem{{File: file, Line: bytes.Count(data, []byte{'\n'}) + 1, Reason: fmt.Sprintf("longer than %d bytes: not a counters file", maxFileBytes)}}
	}
	s := &Set{Source: file}
	for f := range exposition.NumFields {
		s.families[f] = f.Family()
	}
	var problems []Problem
	seen := map[string]int{}
	cr := csv.NewReader(bytes.NewReader(data))
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			line := 0
			if errors.As(err, &pe) {
				line = pe.StartLine
				err = pe.Err
			}
			problems = append(problems, Problem{File: file, Line: line, Reason: "malformed line: " + err.Error()})
			break
		}
		line, _ := cr.FieldPos(0)
		if first := strings.TrimSpace(rec[0]); len(rec) == 1 && first == "" || strings.HasPrefix(first, "#") {
			continue // a line of blanks, or a comment after blanks
		}
		if len(rec) != 3 {
			problems = append(problems, Problem{File: file, Line: line,
				Reason: fmt.Sprintf("malformed line: %d values, want 3 (DCGM field, type, help text)", len(rec))})
			continue
		}
		name, typ, help := strings.TrimSpace(rec[0]), strings.ToLower(strings.TrimSpace(rec[1])), strings.TrimSpace(rec[2])
		switch {
		case name == "":
			problems = append(problems, Problem{File: file, Line: line, Reason: "malformed line: no field name"})
			continue
		case !utf8.ValidString(name) || !utf8.ValidString(typ) || !utf8.ValidString(help):
			problems = append(problems, Problem{File: file, Line: line, Reason: "malformed line: not UTF-8"})
			continue
		}
		if first, ok := seen[name]; ok {
			problems = append(problems, Problem{File: file, Line: line, Field: name, Reason: fmt.Sprintf("listed again (first on line %d)", first)})
			continue
		}
		seen[name] = line
		reason, unsupported := s.add(name, typ, help)
		if reason == "" {
			continue
		}
		p := Problem{File: file, Line: line, Field: name, Reason: reason, Unsupported: unsupported}
		if unsupported && o.SkipUnsupported {
			s.Skipped = append(s.Skipped, p)
			continue
		}
		problems = append(problems, p)
	}
	if len(problems) > 0 {
		return nil, problems
	}
	for f := range exposition.NumFields {
		if f.Family().Role != exposition.RoleNone && !s.Fields.Has(f) {
			s.Fields.Add(f)
			s.Added = append(s.Added, f)
		}
	}
	return s, nil
}

// add records one line's field. It returns what is wrong with the line,
// "" when nothing is, and whether the field is one the agent cannot supply.
func (s *Set) add(name, typ, help string) (reason string, unsupported bool) {
	if l, ok := exposition.LabelFieldNamed(name); ok {
		if typ != "label" {
			return fmt.Sprintf("type %q: a DCGM string field is served as a label (type label)", typ), false
		}
		s.Labels.Add(l)
		return "", false
	}
	f, ok := exposition.FieldNamed(name)
	if !ok {
		return "not a field gpu-metrics-server reads through NVML (docs/metrics.md lists those it reads)", true
	}
	fam := &s.families[f]
	switch typ {
	case "gauge":
		fam.Type = exposition.Gauge
	case "counter":
		fam.Type = exposition.Counter
	case "label":
		return "type label: a numeric field is served as a gauge or a counter", false
	case "histogram", "summary":
		return fmt.Sprintf("type %s: a DCGM field is one value per device (use gauge or counter)", typ), false
	default:
		return fmt.Sprintf("unknown type %q (gauge, counter or label)", typ), false
	}
	fam.Help = help
	s.Fields.Add(f)
	return "", false
}
