package collector

import (
	"compress/gzip"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"k8s.io/klog/v2"
)

// MetricsHandler serves /metrics: the latest snapshot's device series
// (cached bytes, no GPU access) followed by the self-metrics gathered from g.
// A snapshot older than maxAge is not served: a stuck sampling loop shows as
// missing series and a failing /readyz, never as frozen values.
func MetricsHandler(s *Sampler, g prometheus.Gatherer, maxAge time.Duration) http.Handler {
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", string(format))
		w.Header().Add("Vary", "Accept-Encoding")
		var out io.Writer = w
		if AcceptsGzip(r) {
			w.Header().Set("Content-Encoding", "gzip")
			gz := gzipWriters.Get().(*gzip.Writer)
			gz.Reset(w)
			defer func() {
				_ = gz.Close()
				gz.Reset(io.Discard) // drop the reference to w
				gzipWriters.Put(gz)
			}()
			out = gz
		}
		if snap := s.Fresh(time.Now(), maxAge); snap != nil {
			if _, err := out.Write(snap.Exposition()); err != nil {
				return
			}
		}
		mfs, err := g.Gather()
		if err != nil {
			// Gather returns what it could alongside the error.
			klog.ErrorS(err, "Gathering self-metrics")
		}
		enc := expfmt.NewEncoder(out, format)
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				return
			}
		}
	})
}

// gzipWriters reuses compressors across scrapes: a new gzip.Writer
// allocates about 800 KB of tables.
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
