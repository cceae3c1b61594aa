package scrape

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"slices"
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
	// Interval.
	Timeout time.Duration
	// Spread is the span over which a round's scrapes start: each target
	// at its own offset in [0, Spread), stable from round to round, so
	// that a round is no burst and every target is scraped every Interval.
	// At most Interval (the aggregator uses Interval); zero starts every
	// target at once.
	Spread time.Duration
	// MaxBodyBytes bounds the exposition size of one target.
	MaxBodyBytes int64
	// CAFile, if set, holds the PEM CA bundle that verifies https targets
	// (instead of the system roots).
	CAFile string
	// BearerTokenFile, if set, holds a token sent to https targets (never
	// over plain http); it is re-read as it changes (projected tokens).
	BearerTokenFile string
	// ServerName, if set, is the name https targets' certificates are
	// verified against (and sent as SNI) instead of the host dialed, as
	// Prometheus's tls_config.server_name: agent pods are scraped by pod
	// IP, which no stable certificate can name.
	ServerName string
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	switch {
	case c.Interval <= 0:
		return fmt.Errorf("interval must be positive, got %v", c.Interval)
	case c.Timeout <= 0 || c.Timeout > c.Interval:
		return fmt.Errorf("timeout must be positive and at most the interval (%v), got %v", c.Interval, c.Timeout)
	case c.Spread < 0 || c.Spread > c.Interval:
		return fmt.Errorf("spread must be between zero and the interval (%v), got %v", c.Interval, c.Spread)
	case c.MaxBodyBytes <= 0:
		return fmt.Errorf("max body bytes must be positive, got %d", c.MaxBodyBytes)
	}
	return nil
}

// Scraper scrapes every target once per interval and appends what it reads
// to the store. A target that fails (unreachable, slow, oversized,
// malformed) is counted and logged and skipped for the round; the others are
// unaffected.
//
// A round starts every interval and places each target's scrape at the
// target's own offset within Spread; it does not wait for its scrapes, so a
// slow target delays no other and no later round. A target whose previous
// scrape is still running when its turn comes again is skipped for that
// round (and counted), so that it never has two scrapes at once.
type Scraper struct {
	cfg     Config
	client  *client
	targets TargetSource
	sink    Appender
	metrics *metrics

	workers sync.Pool // *worker
	synced  atomic.Bool

	// states holds the per-target state of the targets of the last round.
	mu     sync.Mutex
	states map[string]*targetState
}

// targetState is what the scraper keeps of one target between rounds.
type targetState struct {
	// busy is set while a scrape of the target runs.
	busy atomic.Bool
	// forgotten is set when the target left the list; its self-metrics
	// series go once no scrape of it runs.
	forgotten atomic.Bool

	mu sync.Mutex
	// failing is whether the last scrape failed, to log state changes
	// rather than every failure.
	failing bool

	// ep is the target's URL and kept connection.
	ep endpoint
	// lastSize is the size of the target's last body: the buffer a body
	// of unknown length is read into starts at it.
	lastSize atomic.Int64
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
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	s := &Scraper{
		cfg:     cfg,
		client:  c,
		targets: targets,
		sink:    sink,
		metrics: newMetrics(),
		states:  make(map[string]*targetState),
	}
	s.workers.New = func() any { return &worker{parser: NewParser()} }
	return s, nil
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

// HasSynced reports whether one full round has finished: the readiness
// signal of the aggregator.
func (s *Scraper) HasSynced() bool { return s.synced.Load() }

// Run waits for the targets to sync, then starts a round at once and then
// one every interval until ctx is done.
func (s *Scraper) Run(ctx context.Context) {
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return s.targets.HasSynced(), nil
	})
	if err != nil {
		return
	}
	// startRound returns once its last scrape has started, within the
	// interval: the next round starts on time.
	wait.NonSlidingUntilWithContext(ctx, func(ctx context.Context) { s.startRound(ctx) }, s.cfg.Interval)
}

// round scrapes every target once, each starting at its offset within the
// round, and returns when every scrape has ended.
func (s *Scraper) round(ctx context.Context) {
	<-s.startRound(ctx)
}

// startRound starts the round's scrapes, each at its target's offset from
// now, and returns when the last has started (or ctx ended), with a channel
// closed once every scrape of the round has ended and the round is
// recorded.
func (s *Scraper) startRound(ctx context.Context) <-chan struct{} {
	start := time.Now()
	targets := dedupe(s.targets.Targets())
	states := s.track(targets)
	s.metrics.targets.Set(float64(len(targets)))
	slots := make([]time.Duration, len(targets))
	order := make([]int, len(targets))
	for i, t := range targets {
		slots[i], order[i] = offset(t.Name, s.cfg.Spread), i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(slots[a], slots[b]) })

	// lag is, per scrape, how long after its slot it ended: the round
	// keeps every target's cadence while it stays under the interval.
	lag := make([]time.Duration, len(targets))
	ran := make([]bool, len(targets))
	var wg sync.WaitGroup
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	for _, i := range order {
		due := start.Add(slots[i])
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
			case <-timer.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		st := states[i]
		if !st.busy.CompareAndSwap(false, true) {
			s.metrics.skipped.Inc()
			continue
		}
		t := targets[i]
		ran[i] = true
		wg.Go(func() {
			err := s.scrapeOne(ctx, t, st)
			lag[i] = time.Since(due)
			s.settle(t, st, err)
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		wg.Wait()
		if ctx.Err() != nil {
			return
		}
		var slowest time.Duration
		for i := range lag {
			if ran[i] {
				slowest = max(slowest, lag[i])
			}
		}
		s.metrics.rounds.Observe(slowest.Seconds())
		s.synced.Store(true)
	}()
	return done
}

// track returns the state of each target, creating it for a new one, and
// forgets the targets gone: their self-metrics series go once no scrape of
// them runs.
func (s *Scraper) track(targets []Target) []*targetState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*targetState, len(targets))
	current := make(map[string]*targetState, len(targets))
	for i, t := range targets {
		st := s.states[t.Name]
		if st == nil {
			st = &targetState{}
		}
		current[t.Name], out[i] = st, st
	}
	for name, st := range s.states {
		if current[name] != nil {
			continue
		}
		st.forgotten.Store(true)
		st.ep.close()
		if !st.busy.Load() {
			s.metrics.forget(name)
		}
	}
	s.states = current
	return out
}

// settle ends a target's scrape: it logs a target that starts or stops
// failing (every failure at verbosity 4), frees the target for its next
// scrape, and drops the self-metrics of a target forgotten meanwhile.
func (s *Scraper) settle(t Target, st *targetState, err error) {
	st.mu.Lock()
	switch {
	case err != nil && !st.failing:
		klog.ErrorS(err, "Scraping failed; skipping the target until it recovers", "target", t.Name, "url", t.URL)
		st.failing = true
	case err != nil:
		klog.V(4).InfoS("Scraping failed again", "target", t.Name, "err", err)
	case st.failing:
		klog.InfoS("Scraping recovered", "target", t.Name)
		st.failing = false
	}
	st.mu.Unlock()
	st.busy.Store(false)
	if st.forgotten.Load() {
		s.metrics.forget(t.Name)
	}
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

// spreadSlots is how many start times a round has at most: targets are
// placed on a grid of spread/spreadSlots, so that one timer wake-up starts
// every target of a slot (at 1,000 targets and a 2 s spread, 10 every 20 ms)
// instead of one wake-up per target.
const spreadSlots = 100

// offset places a target within [0, spread), stable across rounds and
// restarts, and spread evenly over targets (an FNV-1a hash of its name), on
// a grid of spreadSlots start times.
func offset(name string, spread time.Duration) time.Duration {
	if spread <= 0 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	step := spread / spreadSlots
	if step <= 0 {
		return time.Duration(h.Sum64() % uint64(spread))
	}
	return time.Duration(h.Sum64()%spreadSlots) * step
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
func (s *Scraper) scrapeOne(ctx context.Context, t Target, st *targetState) error {
	start := time.Now()
	err := s.fetch(ctx, t, st)
	s.metrics.scraped(t.Name, time.Since(start), err)
	return err
}

func (s *Scraper) fetch(ctx context.Context, t Target, st *targetState) error {
	if err := st.ep.prepare(t.URL); err != nil {
		return fail(reasonConnect, err)
	}
	return s.client.get(ctx, &st.ep, func(body io.Reader, length int64) error {
		limit := s.cfg.MaxBodyBytes
		if length > limit {
			return fail(reasonTooLarge, fmt.Errorf("body exceeds %d bytes", limit))
		}
		w := s.workers.Get().(*worker)
		defer s.workers.Put(w)
		w.buf.Reset()
		// Room for the whole body at once (its declared length, or the
		// last one's and some): no doubling past it.
		if length < 0 {
			length = st.lastSize.Load() + 4096
		}
		w.buf.Grow(int(min(length, limit)) + bytes.MinRead)
		n, err := w.buf.ReadFrom(io.LimitReader(body, limit+1))
		if err != nil {
			return fail(reasonRead, err)
		}
		if n > limit {
			return fail(reasonTooLarge, fmt.Errorf("body exceeds %d bytes", limit))
		}
		st.lastSize.Store(n)
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
		// A target's devices are on its node, whatever its Hostname
		// label says (dcgm-exporter writes its own pod's name there).
		nodes := w.parser.NodeSamples()
		if t.Node != "" {
			for i := range nodes {
				nodes[i].Node = t.Node
			}
		}
		if _, err := s.sink.AppendNodes(t.Name, at, nodes); err != nil {
			return fail(reasonStore, err)
		}
		s.metrics.parsed(t.Name, stats)
		return nil
	})
}
