package collector

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"k8s.io/klog/v2"
)

// MaxScrapesInFlight bounds the /metrics requests served at once; further
// ones wait for a slot (or for their client to give up). Serving is a copy
// of cached bytes, so the bound caps goroutines writing, not memory, which
// the cached body already makes independent of the number of clients.
const MaxScrapesInFlight = 8

// MetricsHandler serves /metrics (GET and HEAD): the latest snapshot's
// device series (cached bytes, no GPU access) followed by the self-metrics
// gathered from g and, when set, o.Runtime's. A snapshot older than
// o.MaxAge is not served: a stuck sampling loop shows as missing series
// and a failing /readyz, never as frozen values.
//
// The body is built once per snapshot, and gzipped at most once, on the
// first scrape that asks for gzip: memory does not grow with the number of
// concurrent clients. The self-metrics of g are gathered when the body is
// built, so they are as old as the snapshot, at most one sampling interval
// (the body is rebuilt after an interval even when no new snapshot came).
// o.Runtime's (the Go runtime's and the process's own, which read several
// /proc files each) are gathered at most once per o.RuntimeEvery.
//
// A request naming families (exposition.FamilyParam) gets only those,
// from the same body; the filtered body of the last filter asked for is
// kept with it (and gzipped at most once), so that every aggregator asking
// for the families it reads costs one filtering per snapshot.
func MetricsHandler(s *Sampler, g prometheus.Gatherer, o HandlerOptions) http.Handler {
	return newMetricsHandler(s, g, o, MaxScrapesInFlight)
}

// HandlerOptions configures MetricsHandler.
type HandlerOptions struct {
	// MaxAge is the oldest snapshot served.
	MaxAge time.Duration
	// Runtime, when set, gathers the process's runtime self-metrics
	// (collectors.NewGoCollector, collectors.NewProcessCollector): values
	// that matter at a Prometheus scrape interval, not at every sampling
	// round, and cost more to gather than the rest of a body.
	Runtime prometheus.Gatherer
	// RuntimeEvery is how often Runtime is gathered at most; 0 gathers it
	// with every body.
	RuntimeEvery time.Duration
}

// metricsHandler is MetricsHandler's state.
type metricsHandler struct {
	s       *Sampler
	g       prometheus.Gatherer
	maxAge  time.Duration
	refresh time.Duration    // rebuild the body at least this often
	now     func() time.Time // time.Now; tests fix it

	runtime      prometheus.Gatherer
	runtimeEvery time.Duration
	runtimeText  []byte    // runtime's families, encoded; under mu
	runtimeAt    time.Time // when runtimeText was gathered; under mu

	slots   chan struct{} // one per request in flight
	waiting atomic.Int64  // requests waiting for a slot

	mu   sync.Mutex // serialises building a body
	body atomic.Pointer[metricsBody]

	builds, compressions, runtimeGathers atomic.Int64 // for tests
}

func newMetricsHandler(s *Sampler, g prometheus.Gatherer, o HandlerOptions, inFlight int) *metricsHandler {
	return &metricsHandler{
		s: s, g: g, maxAge: o.MaxAge,
		refresh:      max(s.opts.Interval, time.Second),
		now:          time.Now,
		slots:        make(chan struct{}, inFlight),
		runtime:      o.Runtime,
		runtimeEvery: o.RuntimeEvery,
	}
}

// metricsBody is what /metrics serves for one snapshot (nil: none fresh)
// and one gathering of the self-metrics.
type metricsBody struct {
	snap    *Snapshot
	built   time.Time
	trailer []byte // the self-metrics

	gzOnce sync.Once
	gz     []byte
	h      *metricsHandler // counts compressions

	// filtered is the body of the last family filter asked for
	// (exposition.FamilyParam): one per snapshot for the aggregators,
	// which all ask for the same families.
	filtered atomic.Pointer[filteredBody]
}

// filteredBody is a metricsBody's families of one filter.
type filteredBody struct {
	key    string // FamilyFilter.key
	b      []byte
	gzOnce sync.Once
	gz     []byte
}

var exposed = expfmt.NewFormat(expfmt.TypeTextPlain)

func (h *metricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	select {
	case h.slots <- struct{}{}:
	default:
		h.waiting.Add(1)
		select {
		case h.slots <- struct{}{}:
			h.waiting.Add(-1)
		case <-r.Context().Done():
			h.waiting.Add(-1)
			return // the client went away
		}
	}
	defer func() { <-h.slots }()

	b := h.current()
	w.Header().Set("Content-Type", string(exposed))
	w.Header().Add("Vary", "Accept-Encoding")
	if f, ok := FamilyFilterOf(r.URL.Query()); ok {
		fb := b.filter(f)
		body := fb.b
		if AcceptsGzip(r) {
			fb.gzOnce.Do(func() { fb.gz = h.compress(fb.b) })
			body = fb.gz
			w.Header().Set("Content-Encoding", "gzip")
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
		return
	}
	if AcceptsGzip(r) {
		gz := b.gzipped()
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", strconv.Itoa(len(gz)))
		_, _ = w.Write(gz)
		return
	}
	var exp []byte
	if b.snap != nil {
		exp = b.snap.Exposition()
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(exp)+len(b.trailer)))
	if _, err := w.Write(exp); err != nil {
		return
	}
	_, _ = w.Write(b.trailer)
}

// current returns the body for the latest fresh snapshot, building it on
// first use.
func (h *metricsHandler) current() *metricsBody {
	now := h.now()
	snap := h.s.Fresh(now, h.maxAge)
	valid := func(b *metricsBody) bool {
		return b != nil && b.snap == snap && now.Sub(b.built) < h.refresh && !now.Before(b.built)
	}
	if b := h.body.Load(); valid(b) {
		return b
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if b := h.body.Load(); valid(b) {
		return b
	}
	b := &metricsBody{snap: snap, built: now, trailer: h.gather(now), h: h}
	h.builds.Add(1)
	h.body.Store(b)
	return b
}

// gather renders the self-metrics: g's, then the runtime's, gathered again
// when older than runtimeEvery (or from another clock: now before them).
// Called under mu.
func (h *metricsHandler) gather(now time.Time) []byte {
	own := encode(nil, "", h.g)
	if h.runtime == nil {
		return own
	}
	if h.runtimeText == nil || now.Sub(h.runtimeAt) >= h.runtimeEvery || now.Before(h.runtimeAt) {
		h.runtimeText = encode(h.runtimeText[:0], "runtime ", h.runtime)
		h.runtimeAt = now
		h.runtimeGathers.Add(1)
	}
	return append(own, h.runtimeText...)
}

// encode appends g's families in the text format to b; what describes
// names the gatherer in its error logs.
func encode(b []byte, what string, g prometheus.Gatherer) []byte {
	mfs, err := g.Gather()
	if err != nil {
		// Gather returns what it could alongside the error.
		klog.ErrorS(err, "Gathering "+what+"self-metrics")
	}
	buf := bytes.NewBuffer(b)
	enc := expfmt.NewEncoder(buf, exposed)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			klog.ErrorS(err, "Encoding "+what+"self-metrics", "family", mf.GetName())
			break
		}
	}
	return buf.Bytes()
}

// gzipped returns the body compressed, compressing it on first use.
func (b *metricsBody) gzipped() []byte {
	b.gzOnce.Do(func() {
		var exp []byte
		if b.snap != nil {
			exp = b.snap.Exposition()
		}
		b.gz = b.h.compress(exp, b.trailer)
	})
	return b.gz
}

// filter returns the body's families of f, built on first use (and again
// when another filter was asked for since).
func (b *metricsBody) filter(f FamilyFilter) *filteredBody {
	if fb := b.filtered.Load(); fb != nil && fb.key == f.key {
		return fb
	}
	var exp []byte
	if b.snap != nil {
		exp = b.snap.Exposition()
	}
	fb := &filteredBody{key: f.key, b: f.Body(exp, b.trailer)}
	b.filtered.Store(fb)
	return fb
}

// compress gzips the concatenation of parts.
func (h *metricsHandler) compress(parts ...[]byte) []byte {
	h.compressions.Add(1)
	var buf bytes.Buffer
	gz := gzipWriters.Get().(*gzip.Writer)
	gz.Reset(&buf)
	for _, p := range parts {
		// Writes to a bytes.Buffer do not fail.
		_, _ = gz.Write(p)
	}
	_ = gz.Close()
	gz.Reset(io.Discard) // drop the reference to buf
	gzipWriters.Put(gz)
	return buf.Bytes()
}

// gzipWriters reuses compressors: a new gzip.Writer allocates about 800 KB
// of tables.
var gzipWriters = sync.Pool{New: func() any {
	gz, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return gz
}}

// AcceptsGzip reports whether the request's Accept-Encoding lets the
// response be gzipped: a gzip entry, or else a "*" entry, with a q-value
// above 0 (RFC 9110, 12.5.3). A q-value that does not parse makes its entry
// unacceptable. Responses that depend on it should send Vary:
// Accept-Encoding.
func AcceptsGzip(r *http.Request) bool {
	gzipQ, anyQ := -1.0, -1.0
	for _, h := range r.Header.Values("Accept-Encoding") {
		for entry := range strings.SplitSeq(h, ",") {
			coding, params, _ := strings.Cut(entry, ";")
			q := qValue(params)
			switch strings.ToLower(strings.TrimSpace(coding)) {
			case "gzip", "x-gzip":
				if gzipQ < 0 {
					gzipQ = q
				}
			case "*":
				if anyQ < 0 {
					anyQ = q
				}
			}
		}
	}
	if gzipQ >= 0 {
		return gzipQ > 0
	}
	return anyQ > 0
}

// qValue returns the q parameter among an Accept-Encoding entry's
// parameters: 1 when there is none, 0 when it is not a number from 0 to 1.
func qValue(params string) float64 {
	for p := range strings.SplitSeq(params, ";") {
		name, value, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		q, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil || !(q >= 0 && q <= 1) {
			return 0
		}
		return q
	}
	return 1
}
