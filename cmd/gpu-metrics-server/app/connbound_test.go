package app

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestConnBoundAdmit: at the bound, a new connection displaces the one
// that has waited longest without a request in progress; when all are
// busy, the new one is refused.
func TestConnBoundAdmit(t *testing.T) {
	for _, tt := range []struct {
		name      string
		max       int
		states    []http.ConnState // of the held connections, in order of arrival
		wantAdmit bool
		wantGone  int // index of the connection closed, -1: none
	}{
		{"below the bound", 3, []http.ConnState{http.StateActive, http.StateIdle}, true, -1},
		{"oldest idle goes", 3, []http.ConnState{http.StateIdle, http.StateIdle, http.StateIdle}, true, 0},
		{"busy ones stay", 3, []http.ConnState{http.StateActive, http.StateIdle, http.StateNew}, true, 1},
		{"never sent a request", 2, []http.ConnState{http.StateActive, http.StateNew}, true, 1},
		{"all busy", 2, []http.ConnState{http.StateActive, http.StateActive}, false, -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newConnBound(nil, tt.max)
			var held []net.Conn
			for _, s := range tt.states {
				c, peer := net.Pipe()
				defer peer.Close()
				if !b.admit(c) {
					t.Fatal("refused below the bound")
				}
				b.track(c, s)
				held = append(held, c)
			}
			c, peer := net.Pipe()
			defer peer.Close()
			if got := b.admit(c); got != tt.wantAdmit {
				t.Fatalf("admit = %v, want %v", got, tt.wantAdmit)
			}
			for i, hc := range held {
				// A closed pipe refuses deadlines.
				closed := hc.SetDeadline(time.Time{}) == io.ErrClosedPipe
				if closed != (i == tt.wantGone) {
					t.Errorf("connection %d (%v): closed %v", i, tt.states[i], closed)
				}
			}
			n, _ := b.held()
			if n > tt.max {
				t.Errorf("%d connections held, bound %d", n, tt.max)
			}
		})
	}
}

// TestConnBoundIdleFlood: with the bound held by connections that never
// send a request, and by idle keep-alive ones, a scrape still gets its
// answer, and no more than the bound are ever held.
func TestConnBoundIdleFlood(t *testing.T) {
	for _, tt := range []struct{ max, flood int }{{4, 4}, {4, 50}, {16, 200}} {
		t.Run(fmt.Sprintf("bound %d flood %d", tt.max, tt.flood), func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			bound := newConnBound(l, tt.max)
			srv := newHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") }), bound)
			go func() { _ = srv.Serve(bound) }()
			defer srv.Close()
			url := "http://" + l.Addr().String()
			// Idle keep-alive connections, then silent ones.
			for range tt.max / 2 {
				c := &http.Client{Transport: &http.Transport{}}
				resp, err := c.Get(url)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			for range tt.flood {
				c, err := net.Dial("tcp", l.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
			}
			for i := range 3 {
				c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
				resp, err := c.Get(url)
				if err != nil {
					t.Fatalf("scrape %d under the flood: %v", i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != "ok" {
					t.Fatalf("scrape %d: %q", i, body)
				}
			}
			if n, _ := bound.held(); n > tt.max {
				t.Errorf("%d connections held, bound %d", n, tt.max)
			}
		})
	}
}

// TestHTTPServerTimeouts: every timeout is set, so that no connection is
// held forever.
func TestHTTPServerTimeouts(t *testing.T) {
	srv := newHTTPServer(http.NotFoundHandler(), newConnBound(nil, 1))
	for name, d := range map[string]any{
		"ReadHeaderTimeout": srv.ReadHeaderTimeout, "ReadTimeout": srv.ReadTimeout,
		"WriteTimeout": srv.WriteTimeout, "IdleTimeout": srv.IdleTimeout,
	} {
		if d == any(time.Duration(0)) {
			t.Errorf("%s unset", name)
		}
	}
	if srv.ConnState == nil {
		t.Error("connections not tracked")
	}
}
