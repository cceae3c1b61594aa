package store

import (
	"math"
	"time"
)

// PodState is one pod's readings as of one instant: an immutable view
// that stays the pod's state until an append or the sweep replaces it. It
// lets a reader keep what it computed from a pod (an encoded answer) and
// check cheaply whether the pod changed since. The zero PodState is a pod
// the store did not hold.
type PodState struct {
	e *entry
	v *view
}

// Held reports whether the store held the pod.
func (st PodState) Held() bool { return st.v != nil }

// StateWatermark is what PodStates and Changed need to tell, for the pods
// a reader found missing, whether the store started holding any of them:
// the count of pods the store has started to hold.
type StateWatermark uint64

// Watermark returns the current watermark; take it before PodStates.
func (s *Store) Watermark() StateWatermark { return StateWatermark(s.pods.added.Load()) }

// PodStates appends to dst the current state of each named pod of
// namespace, in the order of names (the zero PodState for a pod not held).
func (s *Store) PodStates(namespace string, names []string, dst []PodState) []PodState {
	for _, name := range names {
		dst = append(dst, s.podState(namespace, name))
	}
	return dst
}

// RefreshStates is PodStates for the names an earlier PodStates (or
// RefreshStates) returned prev for, prev[i] being names[i]'s: a pod held
// then, whose entry the store still holds, is read from that entry
// without a lookup in the index (at 40,000 pods, most of a 1,000-pod
// query's cost); the others are looked up.
func (s *Store) RefreshStates(namespace string, names []string, prev, dst []PodState) []PodState {
	for i, name := range names {
		if e := prev[i].e; e != nil && !e.removed.Load() {
			var st PodState
			if v := e.view.Load(); v != nil {
				st = PodState{e, v}
			}
			dst = append(dst, st)
			continue
		}
		dst = append(dst, s.podState(namespace, name))
	}
	return dst
}

func (s *Store) podState(namespace, name string) PodState {
	k := objectKey{namespace, name}
	if e := s.pods.shard(k).get(k); e != nil {
		if v := e.view.Load(); v != nil {
			return PodState{e, v}
		}
	}
	return PodState{}
}

// Changed reports whether any of states is no longer its pod's state: the
// pod was appended to or swept, or, for a pod not held, the store started
// holding a pod since w (any pod: a cheap, conservative test).
func (s *Store) Changed(states []PodState, w StateWatermark) bool {
	missing := false
	for _, st := range states {
		if st.e == nil {
			missing = true
			continue
		}
		if st.e.view.Load() != st.v {
			return true
		}
	}
	return missing && s.Watermark() != w
}

// StateValue returns the value of m in st as of now, as PodValue would for
// a pod in that state, and until when, the state unchanged, the value stays
// the same (a point leaves the window, a reading goes stale): it holds at
// every time before until, and may differ from until on.
func (s *Store) StateValue(m Metric, st PodState, now time.Time) (v Value, ok bool, until time.Time) {
	if st.v == nil {
		return Value{}, false, time.Unix(0, math.MaxInt64)
	}
	t := now.UnixNano()
	v, ok = s.aggregate(m, st.v, t)
	return v, ok, time.Unix(0, s.nextChange(st.v, t))
}

// nextChange returns the earliest time after now at which a query of v
// may answer differently than at now: a level or reading going stale, a
// point leaving the window. A reading received at r is fresh up to and
// including r + stale-after and stale a nanosecond later; a point is in
// the window up to and including r + window.
func (s *Store) nextChange(v *view, now int64) int64 {
	next := int64(math.MaxInt64)
	// last is the last instant at which something still holds: what a
	// query answers changes at last+1.
	consider := func(last int64) {
		if last >= now && last < math.MaxInt64 {
			next = min(next, last+1)
		}
	}
	for _, dv := range v.devices {
		for i := range dv.levels {
			lv := &dv.levels[i]
			consider(lv.newestReceived + s.staleAfter)
			for _, r := range []*reading{&lv.memUsed, &lv.memTotal, &lv.power} {
				if r.received != 0 {
					consider(r.received + s.staleAfter)
				}
			}
			for _, p := range lv.points {
				if p.received+s.window >= now {
					consider(p.received + s.window)
					break
				}
			}
		}
	}
	return next
}
