package scrape

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// client fetches expositions over HTTP/1.1 keep-alive connections, one per
// target, each used by one scrape at a time. Between scrapes a connection
// is only a socket: unlike net/http's Transport, which keeps two goroutines
// and 8 KiB of buffers per idle connection, it keeps no goroutine and no
// buffer, which at thousands of targets is most of the scraper's memory.
// The request is fixed (GET, no body, no compression, no redirects, no
// proxy), which is all a scrape needs.
type client struct {
	dialer  net.Dialer
	tls     *tls.Config
	ca      *fileCA    // nil: the system roots
	token   *fileToken // nil: no bearer token
	timeout time.Duration
	readers sync.Pool // *bufio.Reader
}

// readBufferSize is the buffer a response's status line and headers are
// read through; a body is read straight into the scrape's buffer when that
// has room for more (bufio reads past its buffer for large reads).
const readBufferSize = 2048

func newClient(cfg Config) (*client, error) {
	c := &client{
		dialer:  net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second},
		tls:     &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName},
		timeout: cfg.Timeout,
	}
	if cfg.CAFile != "" {
		c.ca = &fileCA{path: cfg.CAFile, interval: caRereadInterval}
		if _, err := c.ca.get(time.Now()); err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
	}
	c.readers.New = func() any { return bufio.NewReaderSize(nil, readBufferSize) }
	if cfg.BearerTokenFile != "" {
		c.token = &fileToken{path: cfg.BearerTokenFile}
		if _, err := c.token.get(); err != nil {
			return nil, fmt.Errorf("bearer token file: %w", err)
		}
	}
	return c, nil
}

// caRereadInterval is how often the CA file is read again.
const caRereadInterval = time.Minute

// fileCA is the CA bundle of Config.CAFile, read again at most every
// interval, so that a CA replaced in its file (a Secret re-rendered by
// `helm template`, a renewed cert-manager CA, both synced by the kubelet)
// is trusted without a restart; a failed re-read keeps the last bundle.
type fileCA struct {
	path     string
	interval time.Duration

	mu     sync.Mutex
	pool   *x509.CertPool
	data   []byte // the PEM pool was made of
	readAt time.Time
}

func (f *fileCA) get(now time.Time) (*x509.CertPool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pool != nil && now.Sub(f.readAt) < f.interval {
		return f.pool, nil
	}
	data, err := os.ReadFile(f.path)
	if err == nil && f.pool != nil && bytes.Equal(data, f.data) {
		f.readAt = now
		return f.pool, nil
	}
	if err == nil {
		pool := x509.NewCertPool()
		if pool.AppendCertsFromPEM(data) {
			f.pool, f.data, f.readAt = pool, data, now
			return pool, nil
		}
		err = fmt.Errorf("%s: no PEM certificate found", f.path)
	}
	if f.pool != nil {
		klog.ErrorS(err, "Re-reading the scrape CA file failed; keeping the previous CAs", "path", f.path)
		f.readAt = now
		return f.pool, nil
	}
	return nil, err
}

// endpoint is a target's parsed URL and its connection, kept between
// scrapes. Only the scrape holding the target (targetState.busy) uses it,
// and forgetting the target closes it under mu.
type endpoint struct {
	mu     sync.Mutex
	url    string // the URL the fields below were parsed from
	https  bool
	addr   string // host:port to dial
	server string // TLS server name
	path   string // request target: path and query
	host   string // Host header
	conn   net.Conn
	closed bool // the target is gone: no connection is kept any more
}

// prepare parses rawURL if it changed (dropping the old connection). Only
// the scrape holding the target calls it.
func (e *endpoint) prepare(rawURL string) error {
	if e.url == rawURL {
		return nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: scheme must be http or https", rawURL)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if c := e.take(); c != nil {
		_ = c.Close()
	}
	e.url, e.https = rawURL, u.Scheme == "https"
	e.addr, e.server, e.host = net.JoinHostPort(u.Hostname(), port), u.Hostname(), u.Host
	e.path = u.RequestURI()
	return nil
}

// take returns the kept connection, if any, for a scrape to use.
func (e *endpoint) take() net.Conn {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.conn
	e.conn = nil
	return c
}

// keep stores a connection for the next scrape, or closes it if the
// target is gone.
func (e *endpoint) keep(c net.Conn) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || e.conn != nil {
		_ = c.Close()
		return
	}
	e.conn = c
}

// close drops the kept connection; with the target gone, none is kept
// again.
func (e *endpoint) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	if e.conn != nil {
		_ = e.conn.Close()
		e.conn = nil
	}
}

// request is the scrape's request: GET, no compression (on a cluster
// network gunzip costs more CPU than the bytes it saves: BenchmarkGunzipNode
// against BenchmarkParse/node), the bearer token over TLS only so that it
// never travels in clear text.
func (c *client) request(e *endpoint) ([]byte, error) {
	var b strings.Builder
	b.Grow(160 + len(e.path) + len(e.host))
	b.WriteString("GET ")
	b.WriteString(e.path)
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(e.host)
	b.WriteString("\r\nUser-Agent: gpu-metrics-server\r\nAccept: text/plain;version=0.0.4\r\n")
	if e.https && c.token != nil {
		tok, err := c.token.get()
		if err != nil {
			return nil, err
		}
		b.WriteString("Authorization: Bearer ")
		b.WriteString(tok)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String()), nil
}

// dial opens a connection to the endpoint, with the TLS handshake done for
// https.
func (c *client) dial(ctx context.Context, e *endpoint) (net.Conn, error) {
	conn, err := c.dialer.DialContext(ctx, "tcp", e.addr)
	if err != nil || !e.https {
		return conn, err
	}
	cfg := c.tls.Clone()
	if c.ca != nil {
		if cfg.RootCAs, err = c.ca.get(time.Now()); err != nil {
			_ = conn.Close()
			return nil, err
		}
	}
	if cfg.ServerName == "" {
		// No fixed name (Config.ServerName): the host dialed.
		cfg.ServerName = e.server
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return tc, nil
}

// get fetches the endpoint's exposition within the client's timeout and
// ctx, on the kept connection if there is one (a kept connection the
// target closed meanwhile is replaced once), and hands the body of a 200
// answer to read with its declared length (-1: unknown) once the headers
// are in: a scrape waiting for a slow target holds no body buffer. read
// must read the body to its end or fail. The connection is kept for the
// next scrape when the response ended cleanly.
func (c *client) get(ctx context.Context, e *endpoint, read func(body io.Reader, length int64) error) error {
	req, err := c.request(e)
	if err != nil {
		return fail(reasonConnect, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	for attempt := 0; ; attempt++ {
		conn := e.take()
		reused := conn != nil
		if conn == nil {
			if conn, err = c.dial(ctx, e); err != nil {
				return fail(reasonConnect, err)
			}
		}
		retry, err := c.exchange(ctx, conn, deadline, req, e, read)
		if err == nil || !(retry && reused && attempt == 0) {
			return err
		}
	}
}

// exchange sends req on conn and hands the response's body to read. It
// reports whether the failure is one a fresh connection may not have: the
// target closed the kept connection before answering.
func (c *client) exchange(ctx context.Context, conn net.Conn, deadline time.Time, req []byte, e *endpoint, read func(io.Reader, int64) error) (retry bool, err error) {
	keep := false
	_ = conn.SetDeadline(deadline)
	// Cancelling ctx (the round's end) interrupts a blocked read or write.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	br := c.readers.Get().(*bufio.Reader)
	br.Reset(conn)
	defer func() {
		br.Reset(nil)
		c.readers.Put(br)
		if stop() && keep {
			_ = conn.SetDeadline(time.Time{})
			e.keep(conn)
			return
		}
		_ = conn.Close()
	}()
	if _, err := conn.Write(req); err != nil {
		return closedByPeer(err), fail(reasonConnect, err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return closedByPeer(err), fail(reasonConnect, err)
	}
	// A failed answer's body is left unread and its connection closed:
	// closing the body would read it to its end first, all of an
	// oversized or endless one until the timeout.
	if resp.StatusCode != http.StatusOK {
		return false, fail(reasonStatus, fmt.Errorf("HTTP %s", resp.Status))
	}
	if err := read(resp.Body, resp.ContentLength); err != nil {
		return false, err
	}
	if err := resp.Body.Close(); err != nil {
		return false, fail(reasonRead, err)
	}
	// The body was read to its end: the connection is reusable unless
	// the target said otherwise or sent more than one response.
	keep = !resp.Close && br.Buffered() == 0
	return false, nil
}

// closedByPeer reports whether err says the target closed the connection
// (an idle keep-alive connection it timed out) before answering.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
