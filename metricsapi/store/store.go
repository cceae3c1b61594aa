package store

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"
)

// MaxWindowFeeds is the largest number of feeds of one source a window may
// span (Window / the feed interval) for the store to hold it in full. The
// store keeps up to twice as many utilization points per device and
// precedence, a margin for feeds that come early (jitter, a restarted
// source), so that memory stays bounded by pods × devices × 2 ×
// MaxWindowFeeds even when a source feeds far faster than expected.
const MaxWindowFeeds = 128

// maxPoints bounds the utilization points a series keeps per precedence.
const maxPoints = 2 * MaxWindowFeeds

// Config configures a Store.
type Config struct {
	// Window is how far back the utilization mean reaches.
	Window time.Duration
	// StaleAfter is how long after it was received a reading stops being
	// served, and a device (and a pod with no fresher device) with it.
	StaleAfter time.Duration
	// FeedInterval is the expected time between two feeds of one source
	// (the scrape interval, or the sample interval of an in-process feed).
	// When set, Validate rejects a Window spanning more than
	// MaxWindowFeeds feeds, which the store could not hold in full; zero
	// skips that check.
	FeedInterval time.Duration
	// StepUp, in percentage points, restarts a device's utilization
	// window when the load steps up to a new level: when its two newest
	// points both lie above the window's earlier points (at least three)
	// by more than StepUp and by more than three times those points' own
	// range. The mean then covers the new level only, instead of taking
	// most of the window to reach it; the points before the step leave the
	// window. Noise around one level, however wide, does not restart it
	// (the margin grows with the points' range), nor does one point alone.
	// Only rises count: the HPA scales up at its next sync but scales down
	// only after its stabilization window (five minutes by default), so a
	// faster fall would buy nothing and would follow every dip of the load.
	// Zero keeps the plain window mean.
	StepUp float64
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	switch {
	case c.Window <= 0:
		return fmt.Errorf("window must be positive, got %v", c.Window)
	case c.StaleAfter <= 0:
		return fmt.Errorf("stale-after must be positive, got %v", c.StaleAfter)
	case c.FeedInterval < 0:
		return fmt.Errorf("feed interval must not be negative, got %v", c.FeedInterval)
	case !(c.StepUp >= 0 && c.StepUp <= 100):
		return fmt.Errorf("step-up must be 0-100 percentage points, got %v", c.StepUp)
	case c.FeedInterval > 0 && c.FeedInterval <= math.MaxInt64/MaxWindowFeeds && c.Window > MaxWindowFeeds*c.FeedInterval:
		return fmt.Errorf("window %v spans more than %d feeds of %v, more than the store holds: use a window of at most %v or a longer feed interval",
			c.Window, MaxWindowFeeds, c.FeedInterval, MaxWindowFeeds*c.FeedInterval)
	}
	return nil
}

// Store holds per-pod, per-device sample windows. It is safe for concurrent
// use: appends from many scrapes and queries from many requests.
//
// A query takes no lock: every pod's state is an immutable view that an
// append (or the sweep) replaces in one atomic step, so a query reads
// either the view before an append or the one after it, never waits for
// one, and never blocks a writer. Writers of one pod are serialised by the
// pod's own lock; writers of different pods do not meet.
type Store struct {
	window     int64 // nanoseconds
	staleAfter int64 // nanoseconds
	stepUp     float64

	pods objects
	// nodes holds each node's devices, held or idle (AppendNodes), keyed
	// by the node's name with an empty namespace.
	nodes objects

	lastSweep atomic.Int64 // receipt clock, nanoseconds

	fed        atomic.Bool
	appended   atomic.Uint64
	duplicates atomic.Uint64
	rejected   atomic.Uint64

	nodeAppended, nodeDuplicates, nodeRejected atomic.Uint64
}

// New returns an empty store.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Store{
		window:     int64(cfg.Window),
		staleAfter: int64(cfg.StaleAfter),
		stepUp:     cfg.StepUp,
	}, nil
}

// limits is what an append needs of the store's configuration.
type limits struct {
	window, staleAfter int64 // nanoseconds
	stepUp             float64
}

func (s *Store) limits() limits {
	return limits{window: s.window, staleAfter: s.staleAfter, stepUp: s.stepUp}
}

// AppendResult counts what one Append did with its samples.
type AppendResult struct {
	// Stored is the number of readings stored.
	Stored int
	// Duplicates is the number of readings skipped because one at least as
	// new was already stored for the same pod, device and precedence.
	Duplicates int
	// Rejected is the number of samples skipped because a required field
	// (namespace, pod, device, time) was empty.
	Rejected int
}

// ErrEmptySource is returned by Append for an empty source name.
var ErrEmptySource = errors.New("store: empty source name")

// Append stores the samples one source (named by sourceName, which must not
// be empty) delivered at receipt time at (the store's clock). A reading the
// source omits keeps being served until it is stale-after old, as if the
// source had failed: one round missing a field or a device neither wipes a
// pod's window nor takes the pod off the API, and no reading older than
// stale-after is ever served. The samples slice is not retained.
//
// The samples of one pod are published together when they are adjacent
// in samples (the parser gives them so): a query sees all of them or none.
func (s *Store) Append(sourceName string, at time.Time, samples []Sample) (AppendResult, error) {
	if sourceName == "" {
		return AppendResult{}, ErrEmptySource
	}
	now := at.UnixNano()
	var res AppendResult
	for i := 0; i < len(samples); {
		smp := &samples[i]
		if smp.Namespace == "" || smp.Pod == "" || smp.Device == "" || smp.Time.IsZero() {
			res.Rejected++
			i++
			continue
		}
		// The run of valid samples of this pod.
		j := i + 1
		for j < len(samples) && samples[j].Namespace == smp.Namespace && samples[j].Pod == smp.Pod && valid(&samples[j]) {
			j++
		}
		stored, dups := s.pods.update(objectKey{smp.Namespace, smp.Pod}, samples[i:j], now, s.limits())
		res.Stored += stored
		res.Duplicates += dups
		i = j
	}
	s.maybeSweep(now)

	s.fed.Store(true)
	s.appended.Add(uint64(res.Stored))
	s.duplicates.Add(uint64(res.Duplicates))
	s.rejected.Add(uint64(res.Rejected))
	return res, nil
}

// AppendNodes stores node samples (see Sample.Node): the whole-device
// readings of every device of a node, held by a pod or idle, as one source
// delivered them at receipt time at. They keep windows, precedence and
// staleness exactly as the pods' samples do (see Append), in their own
// index: node values are answered by NodeValue and NodeValues. A sample
// without a node, a device or a time is rejected.
func (s *Store) AppendNodes(sourceName string, at time.Time, samples []Sample) (AppendResult, error) {
	if sourceName == "" {
		return AppendResult{}, ErrEmptySource
	}
	now := at.UnixNano()
	var res AppendResult
	for i := 0; i < len(samples); {
		smp := &samples[i]
		if !validNode(smp) {
			res.Rejected++
			i++
			continue
		}
		j := i + 1
		for j < len(samples) && samples[j].Node == smp.Node && validNode(&samples[j]) {
			j++
		}
		stored, dups := s.nodes.update(objectKey{name: smp.Node}, samples[i:j], now, s.limits())
		res.Stored += stored
		res.Duplicates += dups
		i = j
	}
	s.maybeSweep(now)
	s.nodeAppended.Add(uint64(res.Stored))
	s.nodeDuplicates.Add(uint64(res.Duplicates))
	s.nodeRejected.Add(uint64(res.Rejected))
	return res, nil
}

func validNode(smp *Sample) bool {
	return smp.Node != "" && smp.Device != "" && !smp.Time.IsZero()
}

func valid(smp *Sample) bool {
	return smp.Namespace != "" && smp.Pod != "" && smp.Device != "" && !smp.Time.IsZero()
}

// maybeSweep sweeps when the last sweep is at least stale-after old (on
// the receipt clock); one caller sweeps, the others go on.
func (s *Store) maybeSweep(now int64) {
	last := s.lastSweep.Load()
	if now-last < s.staleAfter || !s.lastSweep.CompareAndSwap(last, now) {
		return
	}
	s.pods.sweep(now, s.staleAfter)
	s.nodes.sweep(now, s.staleAfter)
}

// HasSynced reports whether anything was ever appended: the readiness signal
// for a store fed in-process.
func (s *Store) HasSynced() bool { return s.fed.Load() }

// Stats is a snapshot of the store's size and counters.
type Stats struct {
	// Pods and Series are the pods and (pod, device) series held now.
	Pods, Series int64
	// Nodes and NodeSeries are the nodes and (node, device) series held
	// now.
	Nodes, NodeSeries int64
	// Appended, Duplicates and Rejected count Append's results since start.
	Appended, Duplicates, Rejected uint64
	// NodeAppended, NodeDuplicates and NodeRejected count AppendNodes'.
	NodeAppended, NodeDuplicates, NodeRejected uint64
}

// Stats returns the store's current size and counters.
func (s *Store) Stats() Stats {
	return Stats{
		Pods:       s.pods.held.Load(),
		Series:     s.pods.series.Load(),
		Nodes:      s.nodes.held.Load(),
		NodeSeries: s.nodes.series.Load(),
		Appended:   s.appended.Load(),
		Duplicates: s.duplicates.Load(),
		Rejected:   s.rejected.Load(),

		NodeAppended:   s.nodeAppended.Load(),
		NodeDuplicates: s.nodeDuplicates.Load(),
		NodeRejected:   s.nodeRejected.Load(),
	}
}
