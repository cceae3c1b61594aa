package collector

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

// SamplerOptions configures a Sampler.
type SamplerOptions struct {
	// Node is the node name, exported as the hostname label.
	Node string
	// Interval between sampling rounds.
	Interval time.Duration
	// Owners returns the current device-to-container lookup (it must not
	// block); nil when the agent runs without pod attribution.
	Owners func() podmap.Lookup
	// HistoryLength is how many rounds of utilization are kept per device
	// (default 60).
	HistoryLength int
	// Registerer receives the sampler's self-metrics; nil for none.
	Registerer prometheus.Registerer
	// OnSample, when set, is called with each published snapshot, from the
	// sampling goroutine. It must not block.
	OnSample func(*Snapshot)
	// Attribution turns on per-process attribution of devices several pods
	// hold; nil leaves every device in device-level attribution.
	Attribution *Attribution
}

// Sampler calls a Backend on a fixed interval and publishes each round as an
// immutable Snapshot. It is the only caller of the backend.
type Sampler struct {
	backend Backend
	opts    SamplerOptions
	latest  atomic.Pointer[Snapshot]
	ready   atomic.Bool
	metrics *samplerMetrics
	attr    *attributor // nil without attribution

	mu      sync.Mutex
	history map[string]*utilRing
}

// NewSampler returns a sampler over b; call Run to start it.
func NewSampler(b Backend, o SamplerOptions) *Sampler {
	if o.HistoryLength <= 0 {
		o.HistoryLength = 60
	}
	s := &Sampler{
		backend: b,
		opts:    o,
		metrics: newSamplerMetrics(o.Registerer),
		history: map[string]*utilRing{},
	}
	if o.Attribution != nil {
		s.attr = newAttributor(*o.Attribution, o.Registerer)
	}
	return s
}

// Run samples at once and then every interval until ctx ends.
func (s *Sampler) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		s.SampleOnce(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SampleOnce runs one round stamped now, publishes and returns it.
func (s *Sampler) SampleOnce(now time.Time) *Snapshot {
	start := time.Now()
	readings, errs := s.backend.Sample(now)

	var owners podmap.Lookup
	if s.opts.Owners != nil {
		owners = s.opts.Owners()
	}
	snap := &Snapshot{
		Time:       now,
		Devices:    make([]DeviceSample, len(readings)),
		Errors:     errs,
		Node:       s.opts.Node,
		PodsMapped: owners != nil,
	}
	for i, r := range readings {
		snap.Devices[i].DeviceReading = r
		if owners != nil {
			snap.Devices[i].Owners = owners.Owners(r.Device.Key())
		}
	}
	if s.attr != nil {
		s.attr.attribute(snap)
	}
	snap.Duration = time.Since(start)
	s.record(snap)
	s.latest.Store(snap)
	if len(readings) > 0 || len(errs) == 0 {
		if !s.ready.Swap(true) {
			klog.InfoS("First GPU sample taken", "backend", s.backend.Name(), "devices", len(readings), "duration", snap.Duration)
		}
	}
	if s.opts.OnSample != nil {
		s.opts.OnSample(snap)
	}
	return snap
}

func (s *Sampler) record(snap *Snapshot) {
	s.metrics.observe(snap)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range snap.Devices {
		d := &snap.Devices[i]
		if !d.Reading.Has(FieldGPUUtil) {
			continue
		}
		r := s.history[d.Device.UUID]
		if r == nil {
			r = &utilRing{points: make([]utilPoint, s.opts.HistoryLength)}
			s.history[d.Device.UUID] = r
		}
		r.add(utilPoint{at: snap.Time, util: d.Reading.GPUUtil})
	}
	for _, e := range snap.Errors {
		if e.Lost {
			delete(s.history, e.Device)
		}
	}
}

// Latest returns the newest snapshot, or nil before the first round.
func (s *Sampler) Latest() *Snapshot { return s.latest.Load() }

// Ready reports whether a round has succeeded: at least one device read, or
// no device present and none failing.
func (s *Sampler) Ready() bool { return s.ready.Load() }

// Fresh returns the newest snapshot if it is at most maxAge old at now, or
// nil: a stuck sampling loop must not keep serving old values.
func (s *Sampler) Fresh(now time.Time, maxAge time.Duration) *Snapshot {
	snap := s.latest.Load()
	if snap == nil || now.Sub(snap.Time) > maxAge {
		return nil
	}
	return snap
}

// MeanUtilization is the mean GPU utilization of device uuid over the
// rounds taken within window before now, and how many rounds that was.
func (s *Sampler) MeanUtilization(uuid string, window time.Duration, now time.Time) (mean float64, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.history[uuid]
	if r == nil {
		return 0, 0
	}
	return r.mean(now.Add(-window))
}

type utilPoint struct {
	at   time.Time
	util float64
}

// utilRing is a fixed-size ring of utilization points, oldest overwritten.
type utilRing struct {
	points []utilPoint
	next   int
	full   bool
}

func (r *utilRing) add(p utilPoint) {
	r.points[r.next] = p
	r.next = (r.next + 1) % len(r.points)
	if r.next == 0 {
		r.full = true
	}
}

func (r *utilRing) mean(since time.Time) (float64, int) {
	n := r.next
	if r.full {
		n = len(r.points)
	}
	var sum float64
	var count int
	for i := 0; i < n; i++ {
		if p := r.points[i]; p.at.After(since) {
			sum += p.util
			count++
		}
	}
	if count == 0 {
		return 0, 0
	}
	return sum / float64(count), count
}
