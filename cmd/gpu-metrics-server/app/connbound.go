package app

import (
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// Timeouts of the agent's HTTP server (/metrics, /healthz, /readyz,
// /sim/set): a connection that sends no request, or reads its answer too
// slowly, or stays idle between keep-alive requests longer than a scraper's
// interval, is closed.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 15 * time.Second
	httpWriteTimeout      = 30 * time.Second
	httpIdleTimeout       = 90 * time.Second // above Prometheus' longest usual scrape interval (60 s)
)

// maxConnections bounds the connections the agent's HTTP server holds:
// half the process's file-descriptor limit, within 16-1024, so that a flood
// of connections cannot exhaust the descriptors the rest of the process
// needs (the kubelet's socket, /proc, NVML).
func maxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 256
	}
	return int(min(max(rl.Cur/2, 16), 1024))
}

// connBound is a listener that holds at most max connections. When a new
// one comes at the bound, it closes the connection that has waited longest
// without a request in progress (idle between keep-alive requests, or not
// yet sent its first request) to make room; when every connection is busy
// with a request, it closes the new one. A flood of idle connections thus
// never locks out a scraper: its connection displaces the oldest idle one.
// The server's ConnState must call track.
type connBound struct {
	net.Listener
	max int

	mu    sync.Mutex
	seq   uint64 // orders state changes: lower is older
	conns map[net.Conn]connState
	shed  int // connections closed to keep the bound
}

type connState struct {
	state http.ConnState
	since uint64
}

func newConnBound(l net.Listener, maxConns int) *connBound {
	return &connBound{Listener: l, max: maxConns, conns: make(map[net.Conn]connState)}
}

// Accept returns the next connection, making room for it at the bound.
func (b *connBound) Accept() (net.Conn, error) {
	for {
		c, err := b.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if b.admit(c) {
			return c, nil
		}
		_ = c.Close()
	}
}

// admit tracks c, closing the oldest waiting connection at the bound; it
// reports false when every held connection is busy.
func (b *connBound) admit(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.conns) >= b.max {
		var victim net.Conn
		var oldest uint64
		for vc, s := range b.conns {
			if s.state == http.StateActive {
				continue
			}
			if victim == nil || s.since < oldest {
				victim, oldest = vc, s.since
			}
		}
		b.shed++
		if victim == nil {
			klog.V(2).InfoS("Connection refused: every connection busy", "max", b.max, "remote", c.RemoteAddr().String(), "shed", b.shed)
			return false
		}
		klog.V(2).InfoS("Idle connection closed to make room", "max", b.max, "remote", victim.RemoteAddr().String(), "shed", b.shed)
		delete(b.conns, victim)
		_ = victim.Close()
	}
	b.seq++
	b.conns[c] = connState{http.StateNew, b.seq}
	return true
}

// track follows the server's connection states (http.Server.ConnState).
func (b *connBound) track(c net.Conn, state http.ConnState) {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = nc.NetConn() // TLS: the connection Accept returned
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.conns[c]; !ok {
		return
	}
	switch state {
	case http.StateClosed, http.StateHijacked:
		delete(b.conns, c)
	default:
		b.seq++
		b.conns[c] = connState{state, b.seq}
	}
}

// held returns the number of connections held and shed so far.
func (b *connBound) held() (held, shed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns), b.shed
}
