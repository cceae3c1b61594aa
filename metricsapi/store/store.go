package store

import (
	"errors"
	"fmt"
	"math"
	"sync"
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
	case c.FeedInterval > 0 && c.FeedInterval <= math.MaxInt64/MaxWindowFeeds && c.Window > MaxWindowFeeds*c.FeedInterval:
		return fmt.Errorf("window %v spans more than %d feeds of %v, more than the store holds: use a window of at most %v or a longer feed interval",
			c.Window, MaxWindowFeeds, c.FeedInterval, MaxWindowFeeds*c.FeedInterval)
	}
	return nil
}

// Store holds per-pod, per-device sample windows. It is safe for concurrent
// use: appends from many scrapes and queries from many requests.
type Store struct {
	window     int64 // nanoseconds
	staleAfter int64 // nanoseconds

	mu        sync.RWMutex
	pods      map[podKey]*pod
	lastSweep int64 // receipt clock, nanoseconds

	fed        atomic.Bool
	seriesHeld atomic.Int64
	podsHeld   atomic.Int64
	appended   atomic.Uint64
	duplicates atomic.Uint64
	rejected   atomic.Uint64
}

type podKey struct{ namespace, name string }

// pod is one pod's devices; a pod rarely holds more than a few, so a slice
// beats a map.
type pod struct {
	devices []*series
}

// series is one pod's view of one device: the readings of each precedence
// that reported it.
type series struct {
	device string
	levels []level // highest precedence first; rarely more than two
}

// level is what the sources of one precedence reported of a series.
type level struct {
	precedence uint8
	// newestSampled is the newest reading's Sample.Time (unix nanoseconds):
	// readings not after it are duplicates. newestReceived is its receipt:
	// the level is stale when that is.
	newestSampled, newestReceived int64

	has                      Fields // the readings below that were ever set
	memUsed, memTotal, power reading
	points                   []point // utilization readings in the window, oldest first
}

// reading is the newest value of one field at one precedence.
type reading struct {
	value             float64
	sampled, received int64
}

type point struct {
	received, sampled int64
	utilization       float64
}

// New returns an empty store.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Store{
		window:     int64(cfg.Window),
		staleAfter: int64(cfg.StaleAfter),
		pods:       make(map[podKey]*pod),
	}, nil
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
func (s *Store) Append(sourceName string, at time.Time, samples []Sample) (AppendResult, error) {
	if sourceName == "" {
		return AppendResult{}, ErrEmptySource
	}
	now := at.UnixNano()
	var res AppendResult

	s.mu.Lock()
	for i := range samples {
		smp := &samples[i]
		if smp.Namespace == "" || smp.Pod == "" || smp.Device == "" || smp.Time.IsZero() {
			res.Rejected++
			continue
		}
		key := podKey{smp.Namespace, smp.Pod}
		p := s.pods[key]
		if p == nil {
			p = &pod{}
			s.pods[key] = p
		}
		sr := p.find(smp.Device)
		if sr == nil {
			sr = &series{device: smp.Device}
			p.devices = append(p.devices, sr)
			s.seriesHeld.Add(1)
			if len(p.devices) == 1 {
				s.podsHeld.Add(1)
			}
		}
		lv := sr.level(smp.Precedence)
		sampled := smp.Time.UnixNano()
		if sampled <= lv.newestSampled {
			res.Duplicates++
			continue
		}
		lv.store(smp, sampled, now, s.window, s.staleAfter)
		res.Stored++
	}
	if now-s.lastSweep >= s.staleAfter {
		s.sweep(now)
	}
	s.mu.Unlock()

	s.fed.Store(true)
	s.appended.Add(uint64(res.Stored))
	s.duplicates.Add(uint64(res.Duplicates))
	s.rejected.Add(uint64(res.Rejected))
	return res, nil
}

// level returns the series' level of precedence prec, adding it (with no
// reading yet) in order.
func (sr *series) level(prec uint8) *level {
	i := 0
	for ; i < len(sr.levels); i++ {
		if sr.levels[i].precedence == prec {
			return &sr.levels[i]
		}
		if sr.levels[i].precedence < prec {
			break
		}
	}
	sr.levels = append(sr.levels, level{})
	copy(sr.levels[i+1:], sr.levels[i:])
	sr.levels[i] = level{precedence: prec, newestSampled: math.MinInt64, newestReceived: math.MinInt64}
	return &sr.levels[i]
}

// store records a new reading: each field it carries replaces that field's
// value; the others keep theirs (and their age). A level that had gone stale
// starts a new window: points from before the gap are not mixed with the new
// ones, whenever the sweep runs.
func (lv *level) store(smp *Sample, sampled, received, window, staleAfter int64) {
	if lv.newestReceived < received-staleAfter {
		lv.points = lv.points[:0]
	}
	lv.newestSampled, lv.newestReceived = sampled, received
	set := func(f Fields, r *reading, v float64) {
		if smp.Present.Has(f) {
			*r = reading{value: v, sampled: sampled, received: received}
			lv.has |= f
		}
	}
	set(FieldMemoryUsed, &lv.memUsed, smp.MemoryUsedBytes)
	set(FieldMemoryTotal, &lv.memTotal, smp.MemoryTotalBytes)
	set(FieldPower, &lv.power, smp.PowerWatts)
	lv.trim(received - window)
	if !smp.Present.Has(FieldUtilization) {
		return
	}
	if len(lv.points) == maxPoints {
		lv.points = append(lv.points[:0], lv.points[1:]...)
	}
	lv.points = append(lv.points, point{received: received, sampled: sampled, utilization: smp.Utilization})
}

// trim drops the points received before cutoff.
func (lv *level) trim(cutoff int64) {
	n := 0
	for n < len(lv.points) && lv.points[n].received < cutoff {
		n++
	}
	if n > 0 {
		lv.points = append(lv.points[:0], lv.points[n:]...)
	}
}

func (p *pod) find(device string) *series {
	for _, sr := range p.devices {
		if sr.device == device {
			return sr
		}
	}
	return nil
}

// remove deletes the pod's i-th series, and the pod when it holds no more.
// Callers hold s.mu for writing.
func (s *Store) remove(key podKey, p *pod, i int) {
	last := len(p.devices) - 1
	p.devices[i] = p.devices[last]
	p.devices[last] = nil
	p.devices = p.devices[:last]
	s.seriesHeld.Add(-1)
	if len(p.devices) == 0 {
		delete(s.pods, key)
		s.podsHeld.Add(-1)
	}
}

// sweep drops the levels whose newest reading is stale, the series and pods
// left with none, and the points older than the window, so that memory
// follows what is being served. Callers hold s.mu for writing.
func (s *Store) sweep(now int64) {
	s.lastSweep = now
	staleBefore := now - s.staleAfter
	for key, p := range s.pods {
		for i := 0; i < len(p.devices); {
			sr := p.devices[i]
			if !sr.sweep(staleBefore, now-s.window) {
				s.remove(key, p, i)
				continue
			}
			i++
		}
	}
}

// sweep drops the series' stale levels and trims the others' points; it
// reports whether any level is left.
func (sr *series) sweep(staleBefore, windowStart int64) bool {
	n := 0
	for i := range sr.levels {
		if sr.levels[i].newestReceived < staleBefore {
			continue
		}
		sr.levels[n] = sr.levels[i]
		sr.levels[n].trim(windowStart)
		n++
	}
	clear(sr.levels[n:]) // drop references to the points of dropped levels
	sr.levels = sr.levels[:n]
	return n > 0
}

// HasSynced reports whether anything was ever appended: the readiness signal
// for a store fed in-process.
func (s *Store) HasSynced() bool { return s.fed.Load() }

// Stats is a snapshot of the store's size and counters.
type Stats struct {
	// Pods and Series are the pods and (pod, device) series held now.
	Pods, Series int64
	// Appended, Duplicates and Rejected count Append's results since start.
	Appended, Duplicates, Rejected uint64
}

// Stats returns the store's current size and counters.
func (s *Store) Stats() Stats {
	return Stats{
		Pods:       s.podsHeld.Load(),
		Series:     s.seriesHeld.Load(),
		Appended:   s.appended.Load(),
		Duplicates: s.duplicates.Load(),
		Rejected:   s.rejected.Load(),
	}
}
