package store

import (
	"fmt"
	"math"
	"time"
)

// Metric is one of the per-pod values the store aggregates.
type Metric int

// The metrics the store can answer.
const (
	// Utilization is the mean, over the window, of the utilization of the
	// pod's devices, in percent (each device weighs the same).
	Utilization Metric = iota
	// MemoryUsedBytes is the sum of the frame buffer in use on the pod's
	// devices, at their newest reading.
	MemoryUsedBytes
	// MemoryUtilization is used / total frame buffer of the pod's devices
	// in percent, at their newest reading.
	MemoryUtilization
	// PowerWatts is the sum of the power draw of the pod's devices, at
	// their newest reading.
	PowerWatts
)

func (m Metric) String() string {
	switch m {
	case Utilization:
		return "utilization"
	case MemoryUsedBytes:
		return "memory_used_bytes"
	case MemoryUtilization:
		return "memory_utilization"
	case PowerWatts:
		return "power_watts"
	}
	return fmt.Sprintf("Metric(%d)", int(m))
}

// Value is one pod's aggregated value.
type Value struct {
	// Value is in the metric's unit.
	Value float64
	// Time is the real time of the newest reading that went into Value.
	Time time.Time
	// Window is the span between the oldest and the newest reading that
	// went into Value: zero for a value read from one instant.
	Window time.Duration
}

// PodValue is a Value for a named pod.
type PodValue struct {
	Name string
	Value
}

// PodValue returns the pod's value of m as of now (the store's clock), and
// false when the pod has no complete, fresh value: it holds no device with a
// reading received within the stale-after period, or one of its fresh
// devices lacks the readings m needs (a partial sum or mean would misstate
// the pod).
func (s *Store) PodValue(m Metric, namespace, name string, now time.Time) (Value, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := s.pods[podKey{namespace, name}]
	if p == nil {
		return Value{}, false
	}
	return s.aggregate(m, p, now.UnixNano())
}

// PodValues appends to dst the values of m for those of the named pods of
// namespace that have one (see PodValue), in the order of names, and returns
// the extended slice.
func (s *Store) PodValues(m Metric, namespace string, names []string, now time.Time, dst []PodValue) []PodValue {
	t := now.UnixNano()
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, name := range names {
		p := s.pods[podKey{namespace, name}]
		if p == nil {
			continue
		}
		if v, ok := s.aggregate(m, p, t); ok {
			dst = append(dst, PodValue{Name: name, Value: v})
		}
	}
	return dst
}

// aggregate computes m over the fresh devices of p. Callers hold s.mu.
func (s *Store) aggregate(m Metric, p *pod, now int64) (Value, bool) {
	staleBefore := now - s.staleAfter
	windowStart := now - s.window
	var (
		fresh     int
		sum, sum2 float64
		newest    int64
		oldest    = int64(math.MaxInt64)
	)
	for _, sr := range p.devices {
		if sr.latestReceived < staleBefore {
			continue
		}
		fresh++
		switch m {
		case Utilization:
			var dsum float64
			var n int
			for _, pt := range sr.points {
				if pt.received < windowStart {
					continue
				}
				dsum += pt.utilization
				n++
				if pt.sampled < oldest {
					oldest = pt.sampled
				}
				if pt.sampled > newest {
					newest = pt.sampled
				}
			}
			if n == 0 {
				return Value{}, false
			}
			sum += dsum / float64(n)
			continue
		case MemoryUsedBytes:
			if !sr.latest.Present.Has(FieldMemoryUsed) {
				return Value{}, false
			}
			sum += sr.latest.MemoryUsedBytes
		case MemoryUtilization:
			if !sr.latest.Present.Has(FieldMemoryUsed | FieldMemoryTotal) {
				return Value{}, false
			}
			sum += sr.latest.MemoryUsedBytes
			sum2 += sr.latest.MemoryTotalBytes
		case PowerWatts:
			if !sr.latest.Present.Has(FieldPower) {
				return Value{}, false
			}
			sum += sr.latest.PowerWatts
		default:
			return Value{}, false
		}
		if sr.latestSampled > newest {
			newest = sr.latestSampled
		}
	}
	if fresh == 0 {
		return Value{}, false
	}
	v := Value{Time: time.Unix(0, newest)}
	switch m {
	case Utilization:
		v.Value = sum / float64(fresh)
		v.Window = time.Duration(newest - oldest)
	case MemoryUtilization:
		if sum2 <= 0 {
			return Value{}, false
		}
		v.Value = 100 * sum / sum2
	default:
		v.Value = sum
	}
	if math.IsNaN(v.Value) || math.IsInf(v.Value, 0) {
		return Value{}, false
	}
	return v, true
}
