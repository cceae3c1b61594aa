package scrape

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// ParseStats counts what one Parse read.
type ParseStats struct {
	// Series is the number of lines of the families the parser reads.
	Series int
	// Samples is the number of samples produced.
	Samples int
	// NodeSamples is the number of node samples produced (NodeSamples).
	NodeSamples int
	// Unattributed counts device lines no pod holds (no pod/namespace).
	Unattributed int
	// Invalid counts device lines skipped for a missing UUID or an
	// implausible value (NaN, infinite, negative, a utilization over 100 %).
	Invalid int
	// SnapshotTime reports whether the exposition carried the agent's
	// snapshot timestamp (otherwise samples carry the receipt time).
	SnapshotTime bool
	// Fallback reports whether the body used syntax outside the fast path
	// (quoted names) and was parsed by the reference parser.
	Fallback bool
}

// Parser reads the Prometheus text exposition of an agent or of
// dcgm-exporter and turns the series the API needs into store samples:
// DCGM_FI_DEV_GPU_UTIL (or DCGM_FI_PROF_GR_ENGINE_ACTIVE where a MIG
// instance has no utilization), DCGM_FI_DEV_FB_USED/FREE/RESERVED,
// DCGM_FI_DEV_POWER_USAGE, attributed by the pod/namespace/container labels
// (or their exported_* variants), and the agent's
// gpu_metrics_server_sample_timestamp_seconds as the samples' time.
//
// It gives one sample per pod and device (a GPU, or a MIG instance: UUID
// plus GPU_I_ID), however many containers or time-slicing replicas of the
// pod hold it; the sample's Container joins their names (sorted, comma
// separated). An exposition carrying the snapshot timestamp is the agent's:
// its samples get store.PrecedenceAgent, which outranks dcgm-exporter's
// (store.PrecedenceExporter) where both report a device.
//
// A fast scanner reads the common syntax and skips every other series
// without parsing it (a line's family name is looked up before anything
// else of the line is read); a body using the newer quoted-name syntax goes
// to expfmt's parser instead. On any input expfmt accepts, both give the same
// samples (FuzzParse checks it); the fast scanner is laxer only about
// series it does not read.
//
// A Parser is not safe for concurrent use; it reuses its memory from one
// Parse to the next.
type Parser struct {
	acc  accumulator
	line int
	lbl  lineLabels
	sets labelSetCache
	// badType holds, per role, the error of a TYPE line declaring a type
	// without a plain value; it fails the parse once a series of the
	// family appears (a family declared but empty is harmless).
	badType [exposition.NumRoles]error
}

// NewParser returns a Parser.
func NewParser() *Parser { return &Parser{} }

// errFallback makes the fast scanner hand the body to the reference parser.
var errFallback = errors.New("syntax outside the fast path")

// NodeSamples returns the node samples of the last successful Parse (see
// nodeAccumulator): one per physical GPU of the exposition, held or idle,
// with its whole-device readings, Sample.Node set from the series'
// Hostname (or hostname) label, empty where they carry none. They are
// valid until the next call of Parse.
func (p *Parser) NodeSamples() []store.Sample { return p.acc.nodes.samples }

// Parse parses one exposition body received at at. The samples are valid
// until the next call of Parse.
func (p *Parser) Parse(body []byte, at time.Time) ([]store.Sample, ParseStats, error) {
	p.acc.reset()
	err := p.parseFast(body)
	if errors.Is(err, errFallback) {
		p.acc.reset()
		p.acc.stats.Fallback = true
		err = parseReference(body, &p.acc)
	}
	if err == nil && p.acc.badTimestamp {
		err = fmt.Errorf("invalid %s value", exposition.SampleTimestamp.Name())
	}
	if err != nil {
		p.acc.nodes.reset()
		return nil, p.acc.stats, err
	}
	samples := p.acc.finish(at)
	return samples, p.acc.stats, nil
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

func isNameStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == ':'
}

func isLabelStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// Character classes of the scanner's inner loops, one table lookup a byte.
const (
	className  = 1 << iota // isNameStart or isDigit: a metric name's rest
	classLabel             // isLabelStart or isDigit: a label name's rest
)

var charClass = func() (t [256]uint8) {
	for c := range 256 {
		if isNameStart(byte(c)) || isDigit(byte(c)) {
			t[c] |= className
		}
		if isLabelStart(byte(c)) || isDigit(byte(c)) {
			t[c] |= classLabel
		}
	}
	return t
}()

// parseFast scans body line by line.
func (p *Parser) parseFast(b []byte) error {
	p.line = 0
	p.badType = [exposition.NumRoles]error{}
	p.sets.reset()
	// The cache refers to the body: let it go with the parse.
	defer p.sets.reset()
	// skip is the name of the last series skipped: a family's lines come
	// together, and the next line of the same name is skipped on a
	// comparison of its start.
	var skip []byte
	for len(b) > 0 {
		p.line++
		end := bytes.IndexByte(b, '\n')
		var line []byte
		if end < 0 {
			line, b = b, nil
		} else {
			line, b = b[:end], b[end+1:]
		}
		i := 0
		for i < len(line) && isBlank(line[i]) {
			i++
		}
		if i == len(line) {
			continue
		}
		switch c := line[i]; {
		case c == '#':
			if err := p.comment(line[i+1:]); err != nil {
				return err
			}
		case c == '{' || c == '"':
			return errFallback
		case isNameStart(c):
			if n := len(skip); n > 0 && len(line)-i >= n && bytes.Equal(line[i:i+n], skip) &&
				(i+n == len(line) || charClass[line[i+n]]&className == 0 && line[i+n] != '"') {
				continue
			}
			j := i + 1
			for j < len(line) && charClass[line[j]]&className != 0 {
				j++
			}
			if j < len(line) && line[j] == '"' {
				return errFallback
			}
			f, ok := exposition.RoleOf(line[i:j])
			if !ok {
				skip = line[i:j]
				continue
			}
			if err := p.series(f, line[j:]); err != nil {
				return err
			}
		default:
			return p.errorf("invalid metric name")
		}
	}
	return nil
}

func (p *Parser) errorf(format string, args ...any) error {
	return fmt.Errorf("line %d: %s", p.line, fmt.Sprintf(format, args...))
}

// comment checks a "# TYPE" line of a family the parser reads: its type
// must be one that carries a plain value, or the family must stay empty.
// Other comments are skipped.
func (p *Parser) comment(b []byte) error {
	i := skipBlanks(b, 0)
	j := i
	for j < len(b) && !isBlank(b[j]) {
		j++
	}
	if string(b[i:j]) != "TYPE" {
		return nil
	}
	i = skipBlanks(b, j)
	if i == len(b) {
		return nil
	}
	if b[i] == '"' {
		return errFallback
	}
	j = i
	for j < len(b) && (isNameStart(b[j]) || (j > i && isDigit(b[j]))) {
		j++
	}
	if j < len(b) && b[j] == '"' {
		return errFallback
	}
	f, ok := exposition.RoleOf(b[i:j])
	if !ok || j == len(b) {
		return nil
	}
	if !isBlank(b[j]) {
		return p.errorf("invalid metric name in comment")
	}
	i = skipBlanks(b, j)
	if i == len(b) {
		return nil
	}
	p.badType[f] = checkType(f.Family().Name, string(bytes.ReplaceAll(b[i:], []byte{'\\'}, nil)))
	return nil
}

// checkType accepts the types whose samples carry one plain value, spelled
// in any case as expfmt accepts them.
func checkType(name, typ string) error {
	switch strings.ToUpper(typ) {
	case "GAUGE", "COUNTER", "UNTYPED":
		return nil
	}
	return fmt.Errorf("%s has type %q, want gauge", name, typ)
}

func skipBlanks(b []byte, i int) int {
	for i < len(b) && isBlank(b[i]) {
		i++
	}
	return i
}

// series parses the rest of a line of the family read as f after the metric
// name: the optional label set, the value and the optional timestamp.
func (p *Parser) series(f role, b []byte) error {
	if err := p.badType[f]; err != nil {
		return p.errorf("%v", err)
	}
	lbl, slots := &p.lbl, (*seriesSlots)(nil)
	p.lbl = lineLabels{}
	i := skipBlanks(b, 0)
	if i < len(b) && b[i] == '{' {
		set, h, n := p.sets.find(b[i:])
		if set == nil {
			end, err := p.labelSet(f, b, i+1)
			if err != nil {
				return err
			}
			if end-i != n {
				h = p.sets.hash(b[i:end])
			}
			set = p.sets.add(b[i:end], h, &p.lbl)
			i = end
		} else {
			i += len(set.text)
		}
		lbl, slots = &set.lbl, &set.slots
		i = skipBlanks(b, i)
	}
	j := i
	for j < len(b) && !isBlank(b[j]) {
		j++
	}
	v, err := parseFloat(b[i:j])
	if err != nil {
		return p.errorf("expected float as value, got %q", b[i:j])
	}
	if j < len(b) {
		// A timestamp (milliseconds), then nothing.
		i = skipBlanks(b, j)
		j = i
		for j < len(b) && !isBlank(b[j]) {
			j++
		}
		if _, err := strconv.ParseInt(string(b[i:j]), 10, 64); err != nil {
			return p.errorf("expected integer as timestamp, got %q", b[i:j])
		}
		if j < len(b) {
			return p.errorf("spurious string after timestamp: %q", b[j:])
		}
	}
	p.acc.add(f, lbl, v, slots)
	return nil
}

// labelSetCache holds, within one parse, the label sets of the lines read:
// the agent and dcgm-exporter repeat a device's label set, byte for byte,
// in every family, so that each is parsed once per body. A line whose
// label set has the same text as one parsed before takes its labels, and
// the accumulator's slots for them, from the cache. Only label sets parsed
// without error are kept, and a set's labels depend on its text alone, so
// a line gives what parsing it again would give.
type labelSetCache struct {
	seed  maphash.Seed
	index map[uint64]int32 // hash of a set's text -> sets
	sets  []cachedSet
	// last is the index of the set of the last line read: the families
	// list the same sets in the same order, so the next line's is most
	// likely the set after it, which find tries first, without hashing.
	last int
}

// cachedSet is one label set parsed in this parse.
type cachedSet struct {
	text  []byte // in the body, from '{' to '}'
	lbl   lineLabels
	slots seriesSlots
}

func (c *labelSetCache) reset() {
	if c.index == nil {
		c.seed = maphash.MakeSeed()
		c.index = make(map[uint64]int32)
	}
	clear(c.index)
	clear(c.sets) // drop the references to the body and the strings
	c.sets = c.sets[:0]
	c.last = -1
}

func (c *labelSetCache) hash(text []byte) uint64 { return maphash.Bytes(c.seed, text) }

// find returns the cached set that b, a line's rest from its '{', starts
// with, if any, with the length and hash of the text it looked up: b up to
// its last '}', where a label set ends unless the line is malformed (a
// length of 0: b has no '}').
func (c *labelSetCache) find(b []byte) (set *cachedSet, h uint64, n int) {
	end := bytes.LastIndexByte(b, '}')
	if end < 0 {
		return nil, 0, 0
	}
	text := b[:end+1]
	if next := c.last + 1; next < len(c.sets) && bytes.Equal(c.sets[next].text, text) {
		c.last = next
		return &c.sets[next], 0, len(text)
	} else if next == len(c.sets) && next > 0 && bytes.Equal(c.sets[0].text, text) {
		c.last = 0
		return &c.sets[0], 0, len(text)
	}
	h = c.hash(text)
	if k, ok := c.index[h]; ok && bytes.Equal(c.sets[k].text, text) {
		c.last = int(k)
		return &c.sets[k], h, len(text)
	}
	return nil, h, len(text)
}

// add caches the label set text, parsed into l, of hash h. A text whose
// hash another set has is kept but not found again.
func (c *labelSetCache) add(text []byte, h uint64, l *lineLabels) *cachedSet {
	c.sets = append(c.sets, cachedSet{text: text, lbl: *l})
	c.last = len(c.sets) - 1
	if _, taken := c.index[h]; !taken {
		c.index[h] = int32(len(c.sets) - 1)
	}
	return &c.sets[len(c.sets)-1]
}

// labelSet parses a label set from b[i:], just after its '{', keeping the
// labels the parser reads, and returns the index after the closing '}'.
func (p *Parser) labelSet(f role, b []byte, i int) (int, error) {
	var seen uint16
	for {
		i = skipBlanks(b, i)
		if i == len(b) {
			return 0, p.errorf("unexpected end of label set")
		}
		if b[i] == '}' {
			return i + 1, nil
		}
		if b[i] == '"' {
			return 0, errFallback
		}
		if !isLabelStart(b[i]) {
			return 0, p.errorf("invalid label name for metric %q", f.Family().Name)
		}
		j := i + 1
		for j < len(b) && charClass[b[j]]&classLabel != 0 {
			j++
		}
		if j < len(b) && b[j] == '"' {
			return 0, errFallback
		}
		name := b[i:j]
		i = skipBlanks(b, j)
		if i == len(b) || b[i] != '=' {
			return 0, p.errorf("expected '=' after label name %q", name)
		}
		i = skipBlanks(b, i+1)
		if i == len(b) || b[i] != '"' {
			return 0, p.errorf("expected '\"' at start of label value of %q", name)
		}
		l, keep := labelOf(name)
		if keep {
			if seen&(1<<l) != 0 {
				return 0, p.errorf("duplicate label names for metric %q", f.Family().Name)
			}
			seen |= 1 << l
		}
		var err error
		if i, err = p.labelValue(b, i+1, l, keep); err != nil {
			return 0, err
		}
		i = skipBlanks(b, i)
		if i == len(b) {
			return 0, p.errorf("unexpected end of label set")
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return i + 1, nil
		default:
			return 0, p.errorf("unexpected %q after label value", b[i])
		}
	}
}

// labelValue reads a quoted label value from b[i:], just after its opening
// quote, storing it as label l when keep is set, and returns the index after
// the closing quote.
func (p *Parser) labelValue(b []byte, i int, l label, keep bool) (int, error) {
	// The common case: no escape before the closing quote.
	if n := bytes.IndexByte(b[i:], '"'); n >= 0 && bytes.IndexByte(b[i:i+n], '\\') < 0 {
		if keep {
			if err := p.keepValue(l, b[i:i+n]); err != nil {
				return 0, err
			}
		}
		return i + n + 1, nil
	}
	start, escaped := i, false
	for ; i < len(b); i++ {
		switch b[i] {
		case '\\':
			escaped = true
			i++
			if i == len(b) {
				return 0, p.errorf("unexpected end of label value")
			}
			if c := b[i]; c != '\\' && c != '"' && c != 'n' {
				return 0, p.errorf("invalid escape sequence '\\%c'", c)
			}
			continue
		case '"':
		default:
			continue
		}
		if !keep {
			return i + 1, nil
		}
		v := b[start:i]
		if escaped {
			v = unescape(v)
		}
		if err := p.keepValue(l, v); err != nil {
			return 0, err
		}
		return i + 1, nil
	}
	return 0, p.errorf("unexpected end of label value")
}

// keepValue stores v, unescaped, as label l, once it is checked to be
// UTF-8. A value interned in this parse was checked already: every string
// the fast scanner interns is a checked value or made of such values.
func (p *Parser) keepValue(l label, v []byte) error {
	if s, ok := p.acc.strs[string(v)]; ok {
		p.lbl[l] = s
		return nil
	}
	if !utf8.Valid(v) {
		return p.errorf("invalid label value %q", v)
	}
	p.lbl[l] = p.acc.intern(v)
	return nil
}

// unescape resolves the \\, \" and \n escapes of a label value already
// checked by labelValue.
func unescape(v []byte) []byte {
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\\' {
			i++
			c = v[i]
			if c == 'n' {
				c = '\n'
			}
		}
		out = append(out, c)
	}
	return out
}

// parseFloat parses a sample value as expfmt does: Go's float syntax without
// hexadecimal exponents or digit separators.
func parseFloat(b []byte) (float64, error) {
	// Most values are small integers: up to 15 digits, exact in a
	// float64, as strconv would give them.
	if len(b) > 0 && len(b) <= 15 {
		var n uint64
		i := 0
		for ; i < len(b) && isDigit(b[i]); i++ {
			n = n*10 + uint64(b[i]-'0')
		}
		if i == len(b) {
			return float64(n), nil
		}
	}
	if bytes.ContainsAny(b, "pP_") {
		return 0, errors.New("unsupported character in float")
	}
	return strconv.ParseFloat(string(b), 64)
}
