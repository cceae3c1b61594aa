package store

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// maxPoints bounds the utilization points one pod keeps per device, whatever
// the feed rate, so that memory stays bounded by pods × devices × maxPoints
// even when a source feeds faster than expected (64 covers a 15 s window fed
// at 4 Hz).
const maxPoints = 64

// Config configures a Store.
type Config struct {
	// Window is how far back the utilization mean reaches.
	Window time.Duration
	// StaleAfter is how long after its newest reading was received a
	// device (and a pod with no fresher device) stops being served.
	StaleAfter time.Duration
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	if c.Window <= 0 {
		return fmt.Errorf("window must be positive, got %v", c.Window)
	}
	if c.StaleAfter <= 0 {
		return fmt.Errorf("stale-after must be positive, got %v", c.StaleAfter)
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
	sources   map[string]*source
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

// series is one pod's view of one device.
type series struct {
	device string
	// owner is the source that delivered the newest reading; gen is that
	// source's append generation at the time.
	owner *source
	gen   uint64

	latest         Sample // the newest reading (Namespace/Pod/Container cleared)
	latestSampled  int64  // latest.Time in unix nanoseconds
	latestReceived int64  // receipt clock of the newest reading

	points []point // utilization readings in the window, oldest first
}

type point struct {
	received, sampled int64
	utilization       float64
}

// source is one feeder (a scrape target, or the standalone sampler). Each
// Append is its complete current view, so series it delivered last time but
// not this time are gone.
type source struct {
	name         string
	gen          uint64
	lastReceived int64
	refs, spare  []seriesRef
}

type seriesRef struct {
	key podKey
	s   *series
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
		sources:    make(map[string]*source),
	}, nil
}

// AppendResult counts what one Append did with its samples.
type AppendResult struct {
	// Stored is the number of readings stored.
	Stored int
	// Duplicates is the number of readings skipped because one at least as
	// new was already stored for the same pod and device.
	Duplicates int
	// Rejected is the number of samples skipped because a required field
	// (namespace, pod, device, time) was empty.
	Rejected int
}

// ErrEmptySource is returned by Append for an empty source name.
var ErrEmptySource = errors.New("store: empty source name")

// Append stores the samples one source delivered at receipt time at (the
// store's clock). samples must be the source's complete current view: a pod
// and device this source delivered before but omits now is removed at once
// (unless another source has delivered it since). The samples slice is not
// retained.
func (s *Store) Append(sourceName string, at time.Time, samples []Sample) (AppendResult, error) {
	if sourceName == "" {
		return AppendResult{}, ErrEmptySource
	}
	now := at.UnixNano()
	var res AppendResult

	s.mu.Lock()
	src := s.sources[sourceName]
	if src == nil {
		src = &source{name: sourceName}
		s.sources[sourceName] = src
	}
	src.gen++
	src.lastReceived = now
	refs := src.spare[:0]
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
		if sr.owner != src || sr.gen != src.gen {
			sr.owner, sr.gen = src, src.gen
			refs = append(refs, seriesRef{key, sr})
		}
		sampled := smp.Time.UnixNano()
		if sampled <= sr.latestSampled {
			res.Duplicates++
			continue
		}
		sr.store(smp, sampled, now, s.window)
		res.Stored++
	}
	// Series this source delivered last time and not now are gone, unless
	// another source took them over.
	for _, r := range src.refs {
		if r.s.owner == src && r.s.gen != src.gen {
			s.remove(r.key, r.s)
		}
	}
	src.spare = src.refs
	clear(src.spare) // drop pointers to removed series
	src.refs = refs
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

// store records a new reading in the series.
func (sr *series) store(smp *Sample, sampled, received, window int64) {
	sr.latest = Sample{
		Present:          smp.Present,
		Utilization:      smp.Utilization,
		MemoryUsedBytes:  smp.MemoryUsedBytes,
		MemoryTotalBytes: smp.MemoryTotalBytes,
		PowerWatts:       smp.PowerWatts,
		Time:             smp.Time,
	}
	sr.latestSampled = sampled
	sr.latestReceived = received
	sr.trim(received - window)
	if !smp.Present.Has(FieldUtilization) {
		return
	}
	if len(sr.points) == maxPoints {
		sr.points = append(sr.points[:0], sr.points[1:]...)
	}
	sr.points = append(sr.points, point{received: received, sampled: sampled, utilization: smp.Utilization})
}

// trim drops the points received before cutoff.
func (sr *series) trim(cutoff int64) {
	n := 0
	for n < len(sr.points) && sr.points[n].received < cutoff {
		n++
	}
	if n > 0 {
		sr.points = append(sr.points[:0], sr.points[n:]...)
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

// remove deletes the series (by identity) from the pod, and the pod when it
// holds no more series. Callers hold s.mu.
func (s *Store) remove(key podKey, sr *series) {
	p := s.pods[key]
	if p == nil {
		return
	}
	for i, d := range p.devices {
		if d != sr {
			continue
		}
		last := len(p.devices) - 1
		p.devices[i] = p.devices[last]
		p.devices[last] = nil
		p.devices = p.devices[:last]
		s.seriesHeld.Add(-1)
		if len(p.devices) == 0 {
			delete(s.pods, key)
			s.podsHeld.Add(-1)
		}
		return
	}
}

// sweep drops stale series, empty pods and sources that have gone quiet, and
// trims windows, so that memory follows what is being served. Callers hold
// s.mu for writing.
func (s *Store) sweep(now int64) {
	s.lastSweep = now
	staleBefore := now - s.staleAfter
	for key, p := range s.pods {
		for i := 0; i < len(p.devices); {
			sr := p.devices[i]
			if sr.latestReceived < staleBefore {
				s.remove(key, sr)
				if s.pods[key] == nil {
					break
				}
				continue
			}
			sr.trim(now - s.window)
			i++
		}
	}
	for name, src := range s.sources {
		if src.lastReceived < staleBefore {
			delete(s.sources, name)
		}
	}
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
