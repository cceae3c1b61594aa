package store

import (
	"hash/maphash"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
)

// objects maps the objects the store holds readings for (pods) to their
// entries. Lookups take no lock: the index is split into shards, each an
// immutable map that a writer adding or removing an object (rare: pod
// churn) replaces with a copy; the writers of one object serialise on its
// entry's lock, and a query reads the entry's published view.
//
// It is written for any object that owns device series, so that another
// kind (a node and all of its devices, held or idle) can get its own
// objects next to the pods' with the same windows, sweep and queries.
type objects struct {
	shards [numShards]shard
	held   atomic.Int64  // objects with at least one series
	series atomic.Int64  // (object, device) series
	added  atomic.Uint64 // objects that started holding a series, ever
}

// numShards splits the index so that adding an object copies a small map.
const numShards = 256

type shard struct {
	mu sync.Mutex // serialises the writers of the index
	m  atomic.Pointer[map[objectKey]*entry]
}

var shardSeed = maphash.MakeSeed()

func (o *objects) shard(k objectKey) *shard {
	var h maphash.Hash
	h.SetSeed(shardSeed)
	h.WriteString(k.namespace)
	h.WriteByte(0)
	h.WriteString(k.name)
	return &o.shards[h.Sum64()%numShards]
}

// get returns the object's entry, nil when it has none.
func (sh *shard) get(k objectKey) *entry {
	if m := sh.m.Load(); m != nil {
		return (*m)[k]
	}
	return nil
}

// getOrAdd returns the object's entry, adding one if it has none.
func (sh *shard) getOrAdd(k objectKey) *entry {
	if e := sh.get(k); e != nil {
		return e
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var next map[objectKey]*entry
	if m := sh.m.Load(); m != nil {
		if e := (*m)[k]; e != nil {
			return e
		}
		next = maps.Clone(*m)
	} else {
		next = make(map[objectKey]*entry)
	}
	e := &entry{}
	next[k] = e
	sh.m.Store(&next)
	return e
}

// remove takes e, the entry of k, out of the index.
func (sh *shard) remove(k objectKey, e *entry) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := sh.m.Load()
	if m == nil || (*m)[k] != e {
		return
	}
	next := maps.Clone(*m)
	delete(next, k)
	sh.m.Store(&next)
}

// each calls f for every entry of the index as it is when each shard is
// visited.
func (o *objects) each(f func(objectKey, *entry)) {
	for i := range o.shards {
		if m := o.shards[i].m.Load(); m != nil {
			for k, e := range *m {
				f(k, e)
			}
		}
	}
}

type objectKey struct{ namespace, name string }

// entry is one object's slot. Readers load view; writers lock mu, build a
// new view from the current one and store it.
type entry struct {
	mu sync.Mutex
	// removed is set, under mu, when the sweep takes the entry out of the
	// index; a writer that finds it set starts over with a new entry, and
	// a reader holding the entry (RefreshStates) looks the object up again.
	removed atomic.Bool
	view    atomic.Pointer[view]
}

// view is the immutable state of one object: what a query reads. A new
// view shares what did not change with the one it replaces (device
// views, and the points' backing arrays, see levelView.points).
type view struct {
	devices []deviceView
}

// deviceView is one object's view of one device: the readings of each
// precedence that reported it.
type deviceView struct {
	device string
	levels []levelView // highest precedence first; rarely more than two
}

// levelView is what the sources of one precedence reported of a device.
type levelView struct {
	precedence uint8
	// has holds the readings below that were ever set.
	has Fields
	// newestSampled is the newest reading's Sample.Time (unix
	// nanoseconds): readings not after it are duplicates. newestReceived
	// is its receipt: the level is stale when that is.
	newestSampled, newestReceived int64
	memUsed, memTotal, power      reading
	// points are the utilization readings in the window, oldest first,
	// sampled strictly increasing. Their backing array is shared with
	// older views, which never read past their own length: a writer only
	// appends past the newest view's end and copies the points into a new
	// array for any other change.
	points []point
	// sum is the sum of the points' utilization, kept as they come and go
	// so that a query does not walk the window.
	sum float64
}

// reading is the newest value of one field at one precedence.
type reading struct {
	value             float64
	sampled, received int64
}

// point is one utilization reading.
type point struct {
	received, sampled int64
	utilization       float64
}

// load returns the object's current view, nil when it has none.
func (o *objects) load(k objectKey) *view {
	if e := o.shard(k).get(k); e != nil {
		return e.view.Load()
	}
	return nil
}

// update stores the samples of one object (all of key) received at now,
// publishes the new view if any was stored, and returns how many were
// stored and how many were duplicates.
func (o *objects) update(key objectKey, samples []Sample, now int64, lim limits) (stored, dups int) {
	sh := o.shard(key)
	for {
		e := sh.getOrAdd(key)
		e.mu.Lock()
		if e.removed.Load() {
			e.mu.Unlock()
			continue
		}
		cur := e.view.Load()
		next, newSeries := cur.with(samples, now, lim, &stored, &dups)
		if next != cur {
			e.view.Store(next)
			o.series.Add(int64(newSeries))
			if cur == nil {
				o.held.Add(1)
				// After the view: a reader that sees the new count sees
				// the object (see Store.Changed).
				o.added.Add(1)
			}
		}
		e.mu.Unlock()
		return stored, dups
	}
}

// with returns the view with samples stored, received at now, or v itself
// when none was (all duplicates), and the number of new device series.
func (v *view) with(samples []Sample, now int64, lim limits, stored, dups *int) (*view, int) {
	var next *view
	newSeries := 0
	for i := range samples {
		smp := &samples[i]
		cur := v
		if next != nil {
			cur = next
		}
		var devices []deviceView
		if cur != nil {
			devices = cur.devices
		}
		d := slices.IndexFunc(devices, func(dv deviceView) bool { return dv.device == smp.Device })
		li, found := -1, false
		if d >= 0 {
			li, found = devices[d].levelIndex(smp.Precedence)
		}
		sampled := smp.Time.UnixNano()
		if found && sampled <= devices[d].levels[li].newestSampled {
			*dups++
			continue
		}
		if d < 0 {
			d, li = len(devices), 0
			newSeries++
		}
		next = cur.copyFor(d, li, found, smp)
		next.devices[d].levels[li].store(smp, sampled, now, lim)
		*stored++
	}
	if next == nil {
		return v, 0
	}
	return next, newSeries
}

// copyFor returns a copy of v (nil: an empty view) in which device d
// (len(devices): a new one, named by smp) has a level for smp's
// precedence at index li (a new one unless found), for a writer to change.
// The copy takes one allocation for the common shapes (one device with
// one or two levels); other devices' levels are shared, being immutable.
func (v *view) copyFor(d, li int, found bool, smp *Sample) *view {
	var devices []deviceView
	if v != nil {
		devices = v.devices
	}
	nd := max(len(devices), d+1)
	var old []levelView
	if d < len(devices) {
		old = devices[d].levels
	}
	nl := len(old)
	if !found {
		nl++
	}
	var (
		next   *view
		levels []levelView
	)
	switch {
	case nd == 1 && nl == 1:
		a := &struct {
			v view
			d [1]deviceView
			l [1]levelView
		}{}
		next, levels = &a.v, a.l[:]
		next.devices = a.d[:]
	case nd == 1 && nl == 2:
		a := &struct {
			v view
			d [1]deviceView
			l [2]levelView
		}{}
		next, levels = &a.v, a.l[:]
		next.devices = a.d[:]
	default:
		next, levels = &view{devices: make([]deviceView, nd)}, make([]levelView, nl)
	}
	copy(next.devices, devices)
	if d == len(devices) {
		next.devices[d] = deviceView{device: smp.Device}
	}
	if found {
		copy(levels, old)
	} else {
		copy(levels, old[:li])
		levels[li] = levelView{precedence: smp.Precedence, newestSampled: math.MinInt64, newestReceived: math.MinInt64}
		copy(levels[li+1:], old[li:])
	}
	next.devices[d].levels = levels
	return next
}

// levelIndex returns the index of the level of precedence prec, or where it
// belongs and false.
func (dv *deviceView) levelIndex(prec uint8) (int, bool) {
	for i := range dv.levels {
		switch p := dv.levels[i].precedence; {
		case p == prec:
			return i, true
		case p < prec:
			return i, false
		}
	}
	return len(dv.levels), false
}

// store records a new reading in a level copied for a new view: each field
// it carries replaces that field's value; the others keep theirs (and their
// age). A level that had gone stale starts a new window: points from before
// the gap are not mixed with the new ones, whenever the sweep runs. So does
// a level whose load stepped up (see steppedUp): the points before the
// step leave the window.
func (lv *levelView) store(smp *Sample, sampled, received int64, lim limits) {
	if lv.newestReceived < received-lim.staleAfter {
		lv.points, lv.sum = nil, 0
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
	lv.trim(received - lim.window)
	if smp.Present.Has(FieldUtilization) {
		pts, dropped := appendPoint(lv.points, point{received: received, sampled: sampled, utilization: smp.Utilization})
		lv.points = pts
		lv.sum += smp.Utilization
		lv.resum(dropped)
		if lim.stepUp > 0 && steppedUp(lv.points, lim.stepUp) {
			n := len(lv.points) - stepPoints
			var gone float64
			for _, p := range lv.points[:n] {
				gone += p.utilization
			}
			lv.points = lv.points[n:]
			lv.resum(gone)
		}
	}
}

// The step test (Config.StepUp): the newest stepPoints points against at
// least stepBefore points before them in the window, by a margin of
// stepRange times their range.
const (
	stepPoints = 2
	stepBefore = 3
	stepRange  = 3
)

// steppedUp reports whether the newest stepPoints utilization points of
// pts all lie above the window's earlier points (at least stepBefore of
// them) by more than minChange and by more than stepRange times those
// points' range: the load rose to a new level, rather than the points
// being noise around the old one. A margin of the earlier points' own
// range makes the test scale with the load's noise: a load that swings
// widely must rise further, and one point alone never counts.
func steppedUp(pts []point, minChange float64) bool {
	n := len(pts) - stepPoints
	if n < stepBefore {
		return false
	}
	lo, hi := pts[0].utilization, pts[0].utilization
	for _, p := range pts[1:n] {
		lo, hi = min(lo, p.utilization), max(hi, p.utilization)
	}
	floor := hi + max(minChange, stepRange*(hi-lo))
	for _, p := range pts[n:] {
		if p.utilization <= floor {
			return false
		}
	}
	return true
}

// trimPoints drops the points received before cutoff (a reslice: the
// backing array is shared) and returns what is left and the utilization
// dropped.
func trimPoints(pts []point, cutoff int64) ([]point, float64) {
	n := 0
	var dropped float64
	for n < len(pts) && pts[n].received < cutoff {
		dropped += pts[n].utilization
		n++
	}
	if n == len(pts) {
		return nil, dropped
	}
	return pts[n:], dropped
}

// appendPoint appends p, keeping at most maxPoints, and returns the points
// and the utilization dropped. It writes in place only past the end of
// pts, which no published view reads; otherwise the points move to a new
// array with room for half as many appends again.
func appendPoint(pts []point, p point) ([]point, float64) {
	var dropped float64
	if len(pts) == maxPoints {
		dropped = pts[0].utilization
		pts = pts[1:]
	}
	if len(pts) < cap(pts) {
		return append(pts, p), dropped
	}
	n := len(pts) + 1
	fresh := make([]point, len(pts), min(n+n/2+2, maxPoints))
	copy(fresh, pts)
	return append(fresh, p), dropped
}

// trim drops the level's points received before cutoff.
func (lv *levelView) trim(cutoff int64) {
	pts, dropped := trimPoints(lv.points, cutoff)
	lv.points = pts
	lv.resum(dropped)
}

// resum takes dropped off the running sum; with no point left, or after a
// long run of them, the sum starts over from the points, so that rounding
// never accumulates.
func (lv *levelView) resum(dropped float64) {
	lv.sum -= dropped
	if len(lv.points) == 0 || dropped != 0 && len(lv.points) <= 16 {
		lv.sum = 0
		for _, p := range lv.points {
			lv.sum += p.utilization
		}
	}
}

// sweep drops, from every object, the levels whose newest reading is
// stale at now, and the devices and objects left with none, so that memory
// follows what is being served. (Points older than the window leave at the
// level's next append, or with the level when it goes stale.) A view is
// replaced only where something went.
func (o *objects) sweep(now, staleAfter int64) {
	staleBefore := now - staleAfter
	o.each(func(k objectKey, e *entry) {
		cur := e.view.Load()
		if cur == nil || !cur.hasStale(staleBefore) {
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		cur = e.view.Load()
		if cur == nil {
			return
		}
		next, gone := cur.withoutStale(staleBefore)
		if next == cur {
			return
		}
		o.series.Add(-int64(gone))
		if next == nil {
			e.removed.Store(true)
			e.view.Store(nil)
			o.shard(k).remove(k, e)
			o.held.Add(-1)
			return
		}
		e.view.Store(next)
	})
}

// hasStale reports whether a level of v has no reading received at or
// after staleBefore.
func (v *view) hasStale(staleBefore int64) bool {
	for _, dv := range v.devices {
		for _, lv := range dv.levels {
			if lv.newestReceived < staleBefore {
				return true
			}
		}
	}
	return false
}

// withoutStale returns the view without its stale levels: v itself when
// none is, nil when no device is left; and the number of devices gone.
func (v *view) withoutStale(staleBefore int64) (*view, int) {
	if !v.hasStale(staleBefore) {
		return v, 0
	}
	devices := make([]deviceView, 0, len(v.devices))
	for _, dv := range v.devices {
		levels := make([]levelView, 0, len(dv.levels))
		for _, lv := range dv.levels {
			if lv.newestReceived >= staleBefore {
				levels = append(levels, lv)
			}
		}
		if len(levels) > 0 {
			devices = append(devices, deviceView{device: dv.device, levels: levels})
		}
	}
	gone := len(v.devices) - len(devices)
	if len(devices) == 0 {
		return nil, gone
	}
	return &view{devices: devices}, gone
}
