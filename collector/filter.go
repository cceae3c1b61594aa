package collector

import (
	"bytes"
	"net/url"
	"slices"
	"strings"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// FamilyFilter is a set of family names asked for with
// exposition.FamilyParam.
type FamilyFilter struct {
	// key is the sorted, unique names joined by newlines: the identity
	// of a filter, under which a filtered body is kept.
	key   string
	names map[string]struct{}
}

// FamilyFilterOf returns the filter query asks for, and false when it asks
// for none (the whole body). Empty names are ignored.
func FamilyFilterOf(query url.Values) (FamilyFilter, bool) {
	asked := query[exposition.FamilyParam]
	if len(asked) == 0 {
		return FamilyFilter{}, false
	}
	names := make([]string, 0, len(asked))
	for _, n := range asked {
		if n != "" {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return FamilyFilter{}, false
	}
	slices.Sort(names)
	names = slices.Compact(names)
	set := make(map[string]struct{}, len(names))
	for _, n := range names {
		set[n] = struct{}{}
	}
	return FamilyFilter{key: strings.Join(names, "\n"), names: set}, true
}

// keeps reports whether the filter names family.
func (f FamilyFilter) keeps(family []byte) bool {
	_, ok := f.names[string(family)] // no allocation: a map index
	return ok
}

// Append appends to dst the lines of body, a text exposition (version
// 0.0.4), that belong to the filter's families, and returns the extended
// slice. A family's lines are its "# HELP" and "# TYPE" comments and the
// samples after them, up to the next family's comment; a sample line
// before any such comment is kept when the filter names its metric. Other
// comment lines go with the family they are in (before any family: left
// out). A last line without a newline is kept as it is.
func (f FamilyFilter) Append(dst, body []byte) []byte {
	var family []byte // the current family's name; nil before any
	keep := false
	for len(body) > 0 {
		end := bytes.IndexByte(body, '\n') + 1
		if end == 0 {
			end = len(body)
		}
		line := body[:end]
		body = body[end:]
		if name, ok := commentFamily(line); ok {
			if !bytes.Equal(name, family) {
				family = name
				keep = f.keeps(name)
			}
		} else if family == nil {
			keep = len(line) > 0 && line[0] != '#' && f.keeps(metricName(line))
		}
		if keep {
			dst = append(dst, line...)
		}
	}
	return dst
}

// Body returns the filter's families of the concatenation of parts (each
// whole lines), in a new slice.
func (f FamilyFilter) Body(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	// The aggregator's families are about a fifth of an agent's body.
	dst := make([]byte, 0, n/4)
	for _, p := range parts {
		dst = f.Append(dst, p)
	}
	return dst
}

// commentFamily returns the family a "# HELP name ..." or "# TYPE name ..."
// line names.
func commentFamily(line []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(line, []byte("# HELP "))
	if !ok {
		if rest, ok = bytes.CutPrefix(line, []byte("# TYPE ")); !ok {
			return nil, false
		}
	}
	rest = bytes.TrimLeft(rest, " \t")
	if i := bytes.IndexAny(rest, " \t\r\n"); i >= 0 {
		rest = rest[:i]
	}
	return rest, len(rest) > 0
}

// metricName returns a sample line's metric name: up to its labels or
// value.
func metricName(line []byte) []byte {
	if i := bytes.IndexAny(line, "{ \t\r\n"); i >= 0 {
		return line[:i]
	}
	return line
}
