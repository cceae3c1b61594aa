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
	// point is fresh and within the window, and of those only the points
	// since the device's load last stepped up (Config.StepUp).
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
	// UtilizationMax is the largest of the devices' window means (see
	// Utilization): the busiest device. The API serves it for nodes.
	UtilizationMax
	// Devices is the number of devices with a fresh reading. The API
	// serves it for nodes.
	Devices
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
	case UtilizationMax:
		return "utilization_max"
	case Devices:
		return "devices"
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
	v := s.pods.load(objectKey{namespace, name})
	if v == nil {
		return Value{}, false
	}
	return s.aggregate(m, v, now.UnixNano())
}

// PodValues appends to dst the values of m for those of the named pods of
// namespace that have one (see PodValue), in the order of names, and returns
// the extended slice.
func (s *Store) PodValues(m Metric, namespace string, names []string, now time.Time, dst []PodValue) []PodValue {
	t := now.UnixNano()
	for _, name := range names {
		v := s.pods.load(objectKey{namespace, name})
		if v == nil {
			continue
		}
		if val, ok := s.aggregate(m, v, t); ok {
			dst = append(dst, PodValue{Name: name, Value: val})
		}
	}
	return dst
}

// NodeValue returns the node's value of m as of now over all of its
// devices (see AppendNodes), held or idle, and false when it has none, as
// PodValue does for a pod.
func (s *Store) NodeValue(m Metric, name string, now time.Time) (Value, bool) {
	v := s.nodes.load(objectKey{name: name})
	if v == nil {
		return Value{}, false
	}
	return s.aggregate(m, v, now.UnixNano())
}

// NodeValues appends to dst the values of m for those of the named nodes
// that have one (see NodeValue), in the order of names, and returns the
// extended slice. PodValue.Name is the node's name.
func (s *Store) NodeValues(m Metric, names []string, now time.Time, dst []PodValue) []PodValue {
	t := now.UnixNano()
	for _, name := range names {
		v := s.nodes.load(objectKey{name: name})
		if v == nil {
			continue
		}
		if val, ok := s.aggregate(m, v, t); ok {
			dst = append(dst, PodValue{Name: name, Value: val})
		}
	}
	return dst
}

// aggregate computes m over the fresh devices of v. Its cost is a few
// steps per device: the utilization mean comes from the points' running
// sums, not from a walk over the window.
func (s *Store) aggregate(m Metric, v *view, now int64) (Value, bool) {
	staleBefore := now - s.staleAfter
	windowStart := now - s.window
	var (
		fresh     int
		sum, sum2 float64
		top       = math.Inf(-1)
		newest    int64
		oldest    = int64(math.MaxInt64)
	)
	for i := range v.devices {
		dv := &v.devices[i]
		if !dv.fresh(staleBefore) {
			continue
		}
		fresh++
		var (
			r  reading
			ok bool
		)
		switch m {
		case Utilization, UtilizationMax:
			lv := dv.utilizationLevel(max(staleBefore, windowStart))
			if lv == nil {
				return Value{}, false
			}
			mean, first, last := lv.windowMean(windowStart)
			sum += mean
			top = max(top, mean)
			oldest = min(oldest, first)
			newest = max(newest, last)
			continue
		case MemoryUsedBytes:
			r, ok = dv.reading(FieldMemoryUsed, staleBefore)
		case MemoryUtilization:
			total, hasTotal := dv.reading(FieldMemoryTotal, staleBefore)
			if !hasTotal {
				return Value{}, false
			}
			sum2 += total.value
			newest = max(newest, total.sampled)
			r, ok = dv.reading(FieldMemoryUsed, staleBefore)
		case PowerWatts:
			r, ok = dv.reading(FieldPower, staleBefore)
		case Devices:
			newest = max(newest, dv.newestSampled(staleBefore))
			continue
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
	val := Value{Time: time.Unix(0, newest)}
	switch m {
	case Utilization:
		val.Value = sum / float64(fresh)
		val.Window = time.Duration(newest - oldest)
	case UtilizationMax:
		val.Value = top
		val.Window = time.Duration(newest - oldest)
	case Devices:
		val.Value = float64(fresh)
	case MemoryUtilization:
		if sum2 <= 0 {
			return Value{}, false
		}
		val.Value = 100 * sum / sum2
	default:
		val.Value = sum
	}
	if math.IsNaN(val.Value) || math.IsInf(val.Value, 0) {
		return Value{}, false
	}
	return val, true
}

// windowMean returns the mean of the level's points received at or after
// windowStart, and the sample times of the first and the last of them.
// The level has such a point (utilizationLevel chose it); the points
// before it are the few that left the window since the level's last
// append.
func (lv *levelView) windowMean(windowStart int64) (mean float64, first, last int64) {
	pts := lv.points
	sum := lv.sum
	i := 0
	for pts[i].received < windowStart {
		sum -= pts[i].utilization
		i++
	}
	n := len(pts) - 1
	return sum / float64(n-i+1), pts[i].sampled, pts[n].sampled
}

// fresh reports whether any level of the device received a reading at or
// after staleBefore.
func (dv *deviceView) fresh(staleBefore int64) bool {
	for i := range dv.levels {
		if dv.levels[i].newestReceived >= staleBefore {
			return true
		}
	}
	return false
}

// newestSampled returns the newest sample time of the device's levels
// received at or after staleBefore.
func (dv *deviceView) newestSampled(staleBefore int64) int64 {
	newest := int64(math.MinInt64)
	for i := range dv.levels {
		if lv := &dv.levels[i]; lv.newestReceived >= staleBefore {
			newest = max(newest, lv.newestSampled)
		}
	}
	return newest
}

// utilizationLevel returns the highest level whose newest utilization point
// was received at or after cutoff, or nil.
func (dv *deviceView) utilizationLevel(cutoff int64) *levelView {
	for i := range dv.levels {
		lv := &dv.levels[i]
		if n := len(lv.points); n > 0 && lv.points[n-1].received >= cutoff {
			return lv
		}
	}
	return nil
}

// reading returns field f (one of memory used, memory total, power) of the
// highest level holding one received at or after staleBefore, and false when
// there is none.
func (dv *deviceView) reading(f Fields, staleBefore int64) (reading, bool) {
	for i := range dv.levels {
		lv := &dv.levels[i]
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
