package testutil

import (
	"bytes"
	"net/http"
	"strconv"
	"time"
)

// HostileBody serves n bytes of comment lines (n < 0: endlessly), with a
// declared Content-Length when declare is set (else chunked), until the
// client hangs up: an oversized or endless scrape target.
func HostileBody(n int64, declare bool) http.HandlerFunc {
	chunk := bytes.Repeat([]byte("# hostile hostile hostile hostile hostile hostile hostile\n"), 1024)
	return func(w http.ResponseWriter, r *http.Request) {
		if declare {
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		} else {
			w.(http.Flusher).Flush() // before any length is known
		}
		for sent := int64(0); n < 0 || sent < n; {
			if r.Context().Err() != nil {
				return
			}
			c := chunk
			if n >= 0 && n-sent < int64(len(c)) {
				c = c[:n-sent]
			}
			if _, err := w.Write(c); err != nil {
				return
			}
			sent += int64(len(c))
		}
	}
}

// OneBytePerSecond serves a body declared as a million bytes, one byte a
// second, until the client hangs up: a scrape target that never finishes.
func OneBytePerSecond(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "1000000")
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if _, err := w.Write([]byte("#")); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}
