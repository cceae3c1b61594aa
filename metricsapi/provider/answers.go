package provider

import (
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/metrics/pkg/apis/custom_metrics"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// StateSource is a MetricsSource whose pods' states can be held and checked
// for change (the store): it lets the provider reuse an answer until its
// pods change.
type StateSource interface {
	MetricsSource
	// Watermark is taken before PodStates, for Changed.
	Watermark() store.StateWatermark
	// PodStates appends the named pods' current states.
	PodStates(namespace string, names []string, dst []store.PodState) []store.PodState
	// RefreshStates is PodStates for the names prev was taken for,
	// cheaper.
	RefreshStates(namespace string, names []string, prev, dst []store.PodState) []store.PodState
	// Changed reports whether any state is no longer its pod's.
	Changed(states []store.PodState, w store.StateWatermark) bool
	// StateValue returns a state's value as of now, and until when it
	// holds.
	StateValue(m store.Metric, st store.PodState, now time.Time) (store.Value, bool, time.Time)
}

// Generations is implemented by a PodLister that tells when the answer of
// ListPods may have changed for a namespace.
type Generations interface {
	// Generation returns a number that changes whenever a pod of the
	// namespace is added, deleted or relabelled.
	Generation(namespace string) uint64
}

// Encoded answers: the HPA's query (one metric of the pods of a namespace
// matching a label selector) answered as the JSON the API server would
// write for it, kept per (API version, namespace, metric, selector) and
// served again until one of its pods changes (an append, the sweep, a
// pod added, deleted or relabelled in the namespace) or a value would
// change with time (a point leaving the window, a reading going stale).
// An answer rebuilt after a change computes again only the values of the
// pods that changed and re-encodes only the pods whose value changed. The
// kept answers are bounded in number and bytes.
const (
	// maxAnswers bounds the answers kept; past it the least recently used
	// go.
	maxAnswers = 1024
	// maxAnswerBytes bounds the bytes of the answers kept.
	maxAnswerBytes = 64 << 20
	// answerIdle is how long an answer nobody asks for is kept.
	answerIdle = 5 * time.Minute
)

// The API versions an answer can be encoded for.
const (
	VersionV1beta1 = "v1beta1"
	VersionV1beta2 = "v1beta2"
)

type answerKey struct {
	version, namespace, metric, selector string
}

// answer is one encoded answer and what tells whether it still holds. It
// is immutable once built but for its last use.
type answer struct {
	key  answerKey
	body []byte

	gen    uint64 // the lister's generation of the namespace when built
	hasGen bool   // the lister has generations: names may be reused
	w      store.StateWatermark
	states []store.PodState
	until  time.Time // a value changes with time: the earliest of untils

	names []string
	// vals and ok are each name's value, untils (unix nanoseconds) until
	// when it holds in its state; ends the end of its item in body (items
	// of pods without a value take no bytes).
	vals   []store.Value
	ok     []bool
	untils []int64
	ends   []int

	used atomic.Int64 // unix nanoseconds of the last use
}

func (a *answer) size() int {
	return len(a.body) + len(a.names)*(16+8+48+1+8+8+24)
}

// answers holds the kept answers.
type answers struct {
	mu    sync.Mutex
	m     map[answerKey]*answer
	bytes int

	hits, rebuilt, reused, encoded atomic.Uint64
}

func (c *answers) get(k answerKey) *answer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

// put keeps a (replacing the answer of its key), evicting answers idle too
// long and, past the bounds, the least recently used.
func (c *answers) put(a *answer, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[answerKey]*answer)
	}
	if old := c.m[a.key]; old != nil {
		c.bytes -= old.size()
	}
	c.m[a.key] = a
	c.bytes += a.size()
	idleBefore := now.Add(-answerIdle).UnixNano()
	for k, x := range c.m {
		if x.used.Load() < idleBefore {
			c.bytes -= x.size()
			delete(c.m, k)
		}
	}
	for len(c.m) > maxAnswers || c.bytes > maxAnswerBytes {
		var lru *answer
		for _, x := range c.m {
			if x != a && (lru == nil || x.used.Load() < lru.used.Load()) {
				lru = x
			}
		}
		if lru == nil {
			break
		}
		c.bytes -= lru.size()
		delete(c.m, lru.key)
	}
}

// AnswerStats counts what the answer cache did.
type AnswerStats struct {
	// Hits are queries answered with a kept answer as it was; Rebuilt
	// the others (first asked, or changed since).
	Hits, Rebuilt uint64
	// Reused and Encoded count the items of the rebuilt answers: taken as
	// they were from the previous answer of the query, or encoded anew.
	Reused, Encoded uint64
	// Kept and Bytes are the answers kept now and their size.
	Kept, Bytes int
}

// AnswerStats returns the answer cache's counters.
func (p *Provider) AnswerStats() AnswerStats {
	c := &p.answers
	c.mu.Lock()
	kept, bytes := len(c.m), c.bytes
	c.mu.Unlock()
	return AnswerStats{Hits: c.hits.Load(), Rebuilt: c.rebuilt.Load(), Reused: c.reused.Load(), Encoded: c.encoded.Load(), Kept: kept, Bytes: bytes}
}

// Answer returns the JSON encoding, in API version (VersionV1beta1 or
// VersionV1beta2), of the MetricValueList GetMetricBySelector returns for
// metric of the namespace's pods matching selector, exactly as the API
// server would write it; each item's timestamp is observed as the
// library's freshness metric. ok is false when the provider cannot answer
// so (its source keeps no states, an unknown metric or version, the
// lister failed): the caller serves the request the usual way. The body
// must not be modified.
func (p *Provider) Answer(version, namespace, metric string, selector labels.Selector) (body []byte, ok bool) {
	start := time.Now()
	a := p.answer(version, namespace, metric, selector)
	if a == nil {
		return nil, false
	}
	p.observe(metric, "selector", start)
	// Outside the provider's time, as in the library's handler.
	p.observeFreshness(a)
	return a.body, true
}

// answer returns the kept answer if it holds, or a rebuilt one, or nil.
func (p *Provider) answer(version, namespace, metric string, selector labels.Selector) *answer {
	def, known := metrics[metric]
	src, states := p.src.(StateSource)
	if !known || !states || (version != VersionV1beta1 && version != VersionV1beta2) {
		return nil
	}
	key := answerKey{version, namespace, metric, selector.String()}
	now := p.now()
	gens, hasGen := p.pods.(Generations)
	var gen uint64
	if hasGen {
		gen = gens.Generation(namespace)
	}
	prev := p.answers.get(key)
	if prev != nil && hasGen && prev.gen == gen && now.Before(prev.until) && !src.Changed(prev.states, prev.w) {
		prev.used.Store(now.UnixNano())
		p.answers.hits.Add(1)
		return prev
	}
	a := &answer{key: key, gen: gen, hasGen: hasGen}
	samePods := prev != nil && hasGen && prev.gen == gen
	if samePods {
		a.names = prev.names
	} else {
		names, err := p.pods.ListPods(namespace, selector)
		if err != nil {
			return nil
		}
		a.names = names
	}
	a.w = src.Watermark()
	if samePods {
		a.states = src.RefreshStates(namespace, a.names, prev.states, make([]store.PodState, 0, len(a.names)))
	} else {
		a.states = src.PodStates(namespace, a.names, make([]store.PodState, 0, len(a.names)))
	}
	a.vals, a.ok, a.ends = make([]store.Value, len(a.names)), make([]bool, len(a.names)), make([]int, len(a.names))
	a.untils = make([]int64, len(a.names))
	a.until = time.Unix(0, 1<<63-1)
	// The previous answer's items by name, when its names differ.
	var prevAt map[string]int
	if prev != nil && !sameNames(prev.names, a.names) {
		prevAt = make(map[string]int, len(prev.names))
		for i, n := range prev.names {
			prevAt[n] = i
		}
	}
	enc := encoders[version]
	buf := make([]byte, 0, max(len(enc.prefix)+len(enc.suffix), prevLen(prev)))
	buf = append(buf, enc.prefix...)
	first := true
	var reused, encoded uint64
	// A pod in the same state as in the previous answer has the same
	// value until that value changes with time (a point leaving the
	// window, a reading going stale): only the pods that changed, or
	// whose value aged, are computed again.
	for i, name := range a.names {
		j, found := prevIndex(prev, prevAt, i, name)
		var (
			v     store.Value
			ok    bool
			until time.Time
		)
		if found && prev.states[j] == a.states[i] && now.UnixNano() < prev.untils[j] {
			v, ok, until = prev.vals[j], prev.ok[j], time.Unix(0, prev.untils[j])
		} else {
			v, ok, until = src.StateValue(def.metric, a.states[i], now)
		}
		a.untils[i] = until.UnixNano()
		if until.Before(a.until) {
			a.until = until
		}
		a.ok[i] = ok
		if !ok {
			a.ends[i] = len(buf)
			continue
		}
		a.vals[i] = v
		if !first {
			buf = append(buf, ',')
		}
		first = false
		if found && prev.ok[j] && prev.vals[j] == v {
			buf = append(buf, prev.item(j)...)
			reused++
		} else {
			buf = enc.item(buf, def, metric, namespace, name, v)
			encoded++
		}
		a.ends[i] = len(buf)
	}
	buf = append(buf, enc.suffix...)
	a.body = buf
	a.used.Store(now.UnixNano())
	p.answers.put(a, now)
	p.answers.rebuilt.Add(1)
	p.answers.reused.Add(reused)
	p.answers.encoded.Add(encoded)
	return a
}

func prevLen(a *answer) int {
	if a == nil {
		return 0
	}
	return len(a.body) + 256
}

func sameNames(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// prevIndex finds name, the i-th name of the new answer, in prev.
func prevIndex(prev *answer, at map[string]int, i int, name string) (int, bool) {
	switch {
	case prev == nil:
		return 0, false
	case at == nil:
		return i, true
	}
	j, ok := at[name]
	return j, ok
}

// item returns the bytes of the i-th name's item (which has a value).
func (a *answer) item(i int) []byte {
	start := len(encoders[a.key.version].prefix)
	for j := i - 1; j >= 0; j-- {
		if a.ok[j] {
			start = a.ends[j] + 1 // past the comma
			break
		}
	}
	return a.body[start:a.ends[i]]
}

// observeFreshness observes the age of each item's timestamp, as the
// library does for every answer it writes.
func (p *Provider) observeFreshness(a *answer) {
	for i, ok := range a.ok {
		if ok {
			p.freshness.Observe(metav1.NewTime(a.vals[i].Time))
		}
	}
}

// encoder writes a MetricValueList of one API version as the API server's
// JSON serializer does (encoding/json of the versioned types).
type encoder struct {
	prefix, suffix string
	item           func(buf []byte, def metricDef, metric, namespace, name string, v store.Value) []byte
}

var encoders = map[string]encoder{
	VersionV1beta1: {
		prefix: `{"kind":"MetricValueList","apiVersion":"` + custom_metrics.GroupName + `/v1beta1","metadata":{},"items":[`,
		suffix: "]}\n",
		item: func(buf []byte, def metricDef, metric, namespace, name string, v store.Value) []byte {
			buf = appendObject(buf, namespace, name)
			buf = append(buf, `,"metricName":`...)
			buf = appendJSONString(buf, metric)
			buf = appendStampWindow(buf, v, `,"window":`)
			buf = appendQuantity(buf, def, v)
			return append(buf, `,"selector":null}`...)
		},
	},
	VersionV1beta2: {
		prefix: `{"kind":"MetricValueList","apiVersion":"` + custom_metrics.GroupName + `/v1beta2","metadata":{},"items":[`,
		suffix: "]}\n",
		item: func(buf []byte, def metricDef, metric, namespace, name string, v store.Value) []byte {
			buf = appendObject(buf, namespace, name)
			buf = append(buf, `,"metric":{"name":`...)
			buf = appendJSONString(buf, metric)
			buf = append(buf, `,"selector":null}`...)
			buf = appendStampWindow(buf, v, `,"windowSeconds":`)
			buf = appendQuantity(buf, def, v)
			return append(buf, '}')
		},
	},
}

// appendObject opens an item with its describedObject, a pod.
func appendObject(buf []byte, namespace, name string) []byte {
	buf = append(buf, `{"describedObject":{"kind":"Pod","namespace":`...)
	buf = appendJSONString(buf, namespace)
	buf = append(buf, `,"name":`...)
	buf = appendJSONString(buf, name)
	return append(buf, `,"apiVersion":"v1"}`...)
}

// appendStampWindow writes the timestamp as metav1.Time does, then the
// window under its key.
func appendStampWindow(buf []byte, v store.Value, windowKey string) []byte {
	buf = append(buf, `,"timestamp":`...)
	if v.Time.IsZero() {
		buf = append(buf, "null"...)
	} else {
		buf = append(buf, '"')
		buf = v.Time.UTC().AppendFormat(buf, time.RFC3339)
		buf = append(buf, '"')
	}
	buf = append(buf, windowKey...)
	return strconv.AppendInt(buf, windowSeconds(v), 10)
}

func appendQuantity(buf []byte, def metricDef, v store.Value) []byte {
	q := def.quantity(v.Value)
	buf = append(buf, `,"value":"`...)
	buf = append(buf, q.String()...)
	return append(buf, '"')
}

// appendJSONString writes s as encoding/json does: names and namespaces
// are plain ASCII, written as they are; anything else goes through
// encoding/json.
func appendJSONString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always marshals
			return append(buf, b...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}
