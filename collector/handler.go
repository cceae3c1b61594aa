package collector

import (
	"compress/gzip"
	"io"
	"net/http"
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
		var out io.Writer = w
		if acceptsGzip(r) {
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

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		if strings.TrimSpace(strings.SplitN(part, ";", 2)[0]) == "gzip" {
			return true
		}
	}
	return false
}
