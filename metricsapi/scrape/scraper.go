package scrape

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
)

// Config configures a Scraper.
type Config struct {
	// Interval is the time between the starts of two rounds.
	Interval time.Duration
	// Timeout bounds one target's scrape (connect, headers, body); at most
	// Interval. Targets start spread over Interval − Timeout.
	Timeout time.Duration
	// MaxBodyBytes bounds the exposition size of one target.
	MaxBodyBytes int64
	// CAFile, if set, holds the PEM CA bundle that verifies https targets
	// (instead of the system roots).
	CAFile string
	// BearerTokenFile, if set, holds a token sent to https targets (never
	// over plain http); it is re-read as it changes (projected tokens).
	BearerTokenFile string
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	switch {
	case c.Interval <= 0:
		return fmt.Errorf("interval must be positive, got %v", c.Interval)
	case c.Timeout <= 0 || c.Timeout > c.Interval:
		return fmt.Errorf("timeout must be positive and at most the interval (%v), got %v", c.Interval, c.Timeout)
	case c.MaxBodyBytes <= 0:
		return fmt.Errorf("max body bytes must be positive, got %d", c.MaxBodyBytes)
	}
	return nil
}

// Scraper scrapes every target once per interval and appends what it reads
// to the store. A target that fails (unreachable, slow, oversized,
// malformed) is counted and logged and skipped for the round; the others are
// unaffected.
type Scraper struct {
	cfg     Config
	client  *http.Client
	targets TargetSource
	sink    Appender
	metrics *metrics

	workers sync.Pool // *worker
	synced  atomic.Bool

	// failing holds the targets whose last scrape failed, to log state
	// changes rather than every failure. Only the Run goroutine uses it.
	failing map[string]bool
}

// worker is the reusable memory of one scrape: body buffer and parser.
type worker struct {
	buf    bytes.Buffer
	parser *Parser
}

// New returns a Scraper of the targets into sink.
func New(cfg Config, targets TargetSource, sink Appender) (*Scraper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rt, err := newTransport(cfg)
	if err != nil {
		return nil, err
	}
	s := &Scraper{
		cfg:     cfg,
		client:  &http.Client{Transport: rt},
		targets: targets,
		sink:    sink,
		metrics: newMetrics(),
		failing: make(map[string]bool),
	}
	s.workers.New = func() any { return &worker{parser: NewParser()} }
	return s, nil
}

// newTransport builds a keep-alive transport (connections are reused from
// round to round: no TLS handshake per scrape) without compression (on a
// cluster network gunzip costs more CPU than the bytes it saves).
func newTransport(cfg Config) (http.RoundTripper, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate found", cfg.CAFile)
		}
		tlsConfig.RootCAs = pool
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		DisableCompression:    true,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       max(90*time.Second, 3*cfg.Interval),
	}
	if cfg.BearerTokenFile == "" {
		return tr, nil
	}
	tok := &fileToken{path: cfg.BearerTokenFile}
	if _, err := tok.get(); err != nil {
		return nil, fmt.Errorf("bearer token file: %w", err)
	}
	return &bearerOverTLS{token: tok, next: tr}, nil
}

// fileToken reads a bearer token file, again at most once a minute, so that
// a rotated (projected) token is picked up; a failed re-read keeps the last
// token.
type fileToken struct {
	path string

	mu     sync.Mutex
	token  string
	readAt time.Time
}

const tokenRereadInterval = time.Minute

func (f *fileToken) get() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.token != "" && time.Since(f.readAt) < tokenRereadInterval {
		return f.token, nil
	}
	b, err := os.ReadFile(f.path)
	if err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			f.token, f.readAt = t, time.Now()
			return t, nil
		}
		err = fmt.Errorf("%s is empty", f.path)
	}
	if f.token != "" {
		klog.ErrorS(err, "Re-reading the scrape bearer token failed; keeping the previous one", "path", f.path)
		f.readAt = time.Now()
		return f.token, nil
	}
	return "", err
}

// bearerOverTLS adds the bearer token to https requests only, so that a
// token never travels in clear text.
type bearerOverTLS struct {
	token *fileToken
	next  http.RoundTripper
}

func (b *bearerOverTLS) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		return b.next.RoundTrip(req)
	}
	tok, err := b.token.get()
	if err != nil {
		return nil, err
	}
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+tok)
	return b.next.RoundTrip(req)
}

// HasSynced reports whether one full round has finished: the readiness
// signal of the aggregator.
func (s *Scraper) HasSynced() bool { return s.synced.Load() }

// Run waits for the targets to sync, then scrapes a round at once and then
// one every interval (from the start of the last; at once if it took
// longer) until ctx is done.
func (s *Scraper) Run(ctx context.Context) {
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return s.targets.HasSynced(), nil
	})
	if err != nil {
		return
	}
	wait.NonSlidingUntilWithContext(ctx, s.round, s.cfg.Interval)
}

// round scrapes every target once, in parallel, each starting at its own
// offset within the round so that the load is spread and every target is
// scraped at a steady cadence.
func (s *Scraper) round(ctx context.Context) {
	start := time.Now()
	targets := dedupe(s.targets.Targets())
	errs := make([]error, len(targets))
	spread := s.cfg.Interval - s.cfg.Timeout
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			if d := offset(t.Name, spread); d > 0 {
				select {
				case <-ctx.Done():
					errs[i] = ctx.Err()
					return
				case <-time.After(d):
				}
			}
			errs[i] = s.scrapeOne(ctx, t)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	s.metrics.round(time.Since(start), targets)
	s.logChanges(targets, errs)
	s.synced.Store(true)
}

// dedupe drops repeated target names (the same URL listed twice), keeping
// the first.
func dedupe(ts []Target) []Target {
	seen := make(map[string]bool, len(ts))
	out := ts[:0:0]
	for _, t := range ts {
		if !seen[t.Name] {
			seen[t.Name] = true
			out = append(out, t)
		}
	}
	return out
}

// offset places a target within [0, spread), stable across rounds.
func offset(name string, spread time.Duration) time.Duration {
	if spread <= 0 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return time.Duration(h.Sum64() % uint64(spread))
}

// logChanges logs a target that starts or stops failing, and forgets
// targets that are gone. Every failure is logged at verbosity 4.
func (s *Scraper) logChanges(targets []Target, errs []error) {
	current := make(map[string]bool, len(targets))
	for i, t := range targets {
		current[t.Name] = true
		err := errs[i]
		switch {
		case err != nil && !s.failing[t.Name]:
			klog.ErrorS(err, "Scraping failed; skipping the target until it recovers", "target", t.Name, "url", t.URL)
			s.failing[t.Name] = true
		case err != nil:
			klog.V(4).InfoS("Scraping failed again", "target", t.Name, "err", err)
		case s.failing[t.Name]:
			klog.InfoS("Scraping recovered", "target", t.Name)
			delete(s.failing, t.Name)
		}
	}
	for name := range s.failing {
		if !current[name] {
			delete(s.failing, name)
		}
	}
}

// Error reasons of the self-metrics.
const (
	reasonConnect  = "connect"
	reasonTimeout  = "timeout"
	reasonStatus   = "http_status"
	reasonTooLarge = "body_too_large"
	reasonRead     = "read"
	reasonParse    = "parse"
	reasonStore    = "store"
)

// scrapeError is a failed scrape with its reason.
type scrapeError struct {
	reason string
	err    error
}

func (e *scrapeError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *scrapeError) Unwrap() error { return e.err }

func fail(reason string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		reason = reasonTimeout
	}
	return &scrapeError{reason: reason, err: err}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// scrapeOne fetches, parses and stores one target, and records its
// duration and any error.
func (s *Scraper) scrapeOne(ctx context.Context, t Target) error {
	start := time.Now()
	err := s.fetch(ctx, t)
	s.metrics.scraped(t.Name, time.Since(start), err)
	return err
}

func (s *Scraper) fetch(ctx context.Context, t Target) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return fail(reasonConnect, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := s.client.Do(req)
	if err != nil {
		return fail(reasonConnect, err)
	}
	defer func() {
		// Drain what is left (bounded) so that the connection is reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return fail(reasonStatus, fmt.Errorf("HTTP %s", resp.Status))
	}
	w := s.workers.Get().(*worker)
	defer s.workers.Put(w)
	w.buf.Reset()
	n, err := w.buf.ReadFrom(io.LimitReader(resp.Body, s.cfg.MaxBodyBytes+1))
	if err != nil {
		return fail(reasonRead, err)
	}
	if n > s.cfg.MaxBodyBytes {
		return fail(reasonTooLarge, fmt.Errorf("body exceeds %d bytes", s.cfg.MaxBodyBytes))
	}
	at := time.Now()
	samples, stats, err := w.parser.Parse(w.buf.Bytes(), at)
	if err != nil {
		return fail(reasonParse, err)
	}
	if stats.Invalid > 0 {
		klog.V(2).InfoS("Skipped invalid series", "target", t.Name, "count", stats.Invalid)
	}
	if _, err := s.sink.Append(t.Name, at, samples); err != nil {
		return fail(reasonStore, err)
	}
	s.metrics.parsed(t.Name, stats)
	return nil
}
