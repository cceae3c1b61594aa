package collector

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

// SamplerOptions configures a Sampler.
type SamplerOptions struct {
	// Node is the node name, exported as the node label.
	Node string
	// Format is how the snapshots render: the fields served (the sampler
	// drops the others from every reading) and the label names. Nil:
	// NewFormat(nil, exposition.LabelHostname).
	Format *Format
	// Interval between sampling rounds.
	Interval time.Duration
	// Owners returns the current device-to-container lookup (it must not
	// block); nil when the agent runs without pod attribution.
	Owners func() podmap.Lookup
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

	expositionSize atomic.Int64 // the last rendered exposition's length
}

// NewSampler returns a sampler over b; call Run to start it.
func NewSampler(b Backend, o SamplerOptions) *Sampler {
	if o.Format == nil {
		o.Format = defaultFormat
	}
	s := &Sampler{
		backend: b,
		opts:    o,
		metrics: newSamplerMetrics(o.Registerer),
	}
	if o.Attribution != nil {
		s.attr = newAttributor(*o.Attribution, o.Registerer)
	}
	return s
}

// Run samples at once and then every interval, measured from the start of
// each round, until ctx ends.
func (s *Sampler) Run(ctx context.Context) {
	wait.NonSlidingUntilWithContext(ctx, func(context.Context) { s.SampleOnce(time.Now()) }, s.opts.Interval)
}

// SampleOnce runs one round stamped now, publishes and returns it.
func (s *Sampler) SampleOnce(now time.Time) *Snapshot {
	start := time.Now()
	var owners podmap.Lookup
	if s.opts.Owners != nil {
		owners = s.opts.Owners()
	}
	if ps, ok := s.backend.(ProcessSelector); ok && s.attr != nil {
		ps.SelectProcesses(func(d *Device) bool { return owners != nil && sharedByPods(owners.Owners(d.Key())) })
	}
	readings, errs := s.backend.Sample(now)

	snap := &Snapshot{
		Time:    now,
		Devices: make([]DeviceSample, len(readings)),
		Errors:  errs,
		Node:    s.opts.Node,
		format:  s.opts.Format,

		sizeHint: &s.expositionSize,
	}
	layoutMIG(readings)
	for i, r := range readings {
		r.Reading.Restrict(s.opts.Format.fields)
		snap.Devices[i].DeviceReading = r
		if owners != nil {
			snap.Devices[i].Owners = owners.Owners(r.Device.Key())
		}
	}
	if s.attr != nil {
		s.attr.attribute(snap)
	}
	snap.Duration = time.Since(start)
	s.metrics.observe(snap)
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

// sharedByPods reports whether owners (ordered by namespace and pod) hold
// the device for more than one pod: the devices whose values per-process
// attribution splits.
func sharedByPods(owners []podmap.Owner) bool {
	for i := 1; i < len(owners); i++ {
		if owners[i].Namespace != owners[0].Namespace || owners[i].Pod != owners[0].Pod {
			return true
		}
	}
	return false
}

// layoutMIG gives each MIG instance its GPU's whole-GPU fields from the
// same round, as dcgm-exporter reports a GPU in MIG mode: one entity per
// instance, carrying the GPU's clocks, power, temperatures and error
// counters beside its own memory and activity.
func layoutMIG(readings []DeviceReading) {
	var gpus map[string]*Reading
	for i := range readings {
		mig := readings[i].Device.MIG
		if mig == nil {
			continue
		}
		if gpus == nil {
			gpus = make(map[string]*Reading)
			for j := range readings {
				if readings[j].Device.MIGInstances {
					gpus[readings[j].Device.UUID] = &readings[j].Reading
				}
			}
		}
		if gpu := gpus[mig.ParentUUID]; gpu != nil {
			readings[i].Reading.inherit(gpu)
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
