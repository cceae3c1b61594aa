package store

import (
	"fmt"
	"math"
	"time"
)

// Metric is one of the per-pod values the store aggregates.
type Metric int

// The metrics the store can answer. Each reads, on every device of the pod,
// the readings of the highest precedence that has a fresh one (see Sample).
const (
	// Utilization is the mean, over the window, of the utilization of the
	// pod's devices, in percent (each device weighs the same). A device's
	// mean uses only the points of its highest precedence whose newest
	// point is fresh and within the window.
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
// devices lacks a fresh reading m needs (a partial sum or mean would
// misstate the pod).
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
		if !sr.fresh(staleBefore) {
			continue
		}
		fresh++
		var (
			r  reading
			ok bool
		)
		switch m {
		case Utilization:
			lv := sr.utilizationLevel(max(staleBefore, windowStart))
			if lv == nil {
				return Value{}, false
			}
			var dsum float64
			var n int
			for _, pt := range lv.points {
				if pt.received < windowStart {
					continue
				}
				dsum += pt.utilization
				n++
				oldest = min(oldest, pt.sampled)
				newest = max(newest, pt.sampled)
			}
			sum += dsum / float64(n)
			continue
		case MemoryUsedBytes:
			r, ok = sr.reading(FieldMemoryUsed, staleBefore)
		case MemoryUtilization:
			total, hasTotal := sr.reading(FieldMemoryTotal, staleBefore)
			if !hasTotal {
				return Value{}, false
			}
			sum2 += total.value
			newest = max(newest, total.sampled)
			r, ok = sr.reading(FieldMemoryUsed, staleBefore)
		case PowerWatts:
			r, ok = sr.reading(FieldPower, staleBefore)
		default:
			return Value{}, false
		}
		if !ok {
			return Value{}, false
		}
		sum += r.value
		newest = max(newest, r.sampled)
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

// fresh reports whether any level of the series received a reading at or
// after staleBefore.
func (sr *series) fresh(staleBefore int64) bool {
	for i := range sr.levels {
		if sr.levels[i].newestReceived >= staleBefore {
			return true
		}
	}
	return false
}

// utilizationLevel returns the highest level whose newest utilization point
// was received at or after cutoff, or nil.
func (sr *series) utilizationLevel(cutoff int64) *level {
	for i := range sr.levels {
		lv := &sr.levels[i]
		if n := len(lv.points); n > 0 && lv.points[n-1].received >= cutoff {
			return lv
		}
	}
	return nil
}

// reading returns field f (one of memory used, memory total, power) of the
// highest level holding one received at or after staleBefore, and false when
// there is none.
func (sr *series) reading(f Fields, staleBefore int64) (reading, bool) {
	for i := range sr.levels {
		lv := &sr.levels[i]
		if !lv.has.Has(f) {
			continue
		}
		var r *reading
		switch f {
		case FieldMemoryUsed:
			r = &lv.memUsed
		case FieldMemoryTotal:
			r = &lv.memTotal
		default:
			r = &lv.power
		}
		if r.received >= staleBefore {
			return *r, true
		}
	}
	return reading{}, false
}
