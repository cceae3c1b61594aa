package store

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

// TestQueriesSeeWholeAppends checks, under -race, that a query sees each
// pod's append whole or not at all while writers publish: every append
// sets both of a pod's GPUs to the same memory reading, so the pod's sum
// is always even unless a query mixed two appends.
func TestQueriesSeeWholeAppends(t *testing.T) {
	s := newStore(t)
	const (
		pods   = 16
		rounds = 400
	)
	mem := func(name string, gpu int, at time.Time, v float64) Sample {
		return Sample{Namespace: "ns", Pod: name, Device: fmt.Sprintf("GPU-%s-%d", name, gpu), Time: at,
			Present: FieldMemoryUsed | FieldUtilization, MemoryUsedBytes: v, Utilization: 50}
	}
	names := make([]string, pods)
	for i := range names {
		names[i] = fmt.Sprintf("p%d", i)
	}
	var writers sync.WaitGroup
	for w := range 4 {
		writers.Go(func() {
			for r := 1; r <= rounds; r++ {
				at := sec(float64(r) / 100)
				for i := w; i < pods; i += 4 {
					if _, err := s.Append(fmt.Sprintf("node-%d", i), at, []Sample{mem(names[i], 0, at, float64(r)), mem(names[i], 1, at, float64(r))}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	done := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			var dst []PodValue
			for {
				select {
				case <-done:
					return
				default:
				}
				dst = s.PodValues(MemoryUsedBytes, "ns", names, sec(rounds/100), dst[:0])
				for _, v := range dst {
					if int64(v.Value.Value)%2 != 0 {
						t.Errorf("pod %s: memory %v mixes two appends", v.Name, v.Value.Value)
						return
					}
				}
			}
		})
	}
	writers.Wait()
	close(done)
	readers.Wait()
	got := s.PodValues(MemoryUsedBytes, "ns", names, sec(rounds/100), nil)
	if len(got) != pods {
		t.Fatalf("%d pods served, want %d", len(got), pods)
	}
	for _, v := range got {
		if v.Value.Value != 2*rounds {
			t.Errorf("pod %s: memory %v, want %d", v.Name, v.Value.Value, 2*rounds)
		}
	}
}

// TestQueryDoesNotWaitForWriters checks that a query returns while a
// writer holds the pod's lock (a scrape in the middle of its append).
func TestQueryDoesNotWaitForWriters(t *testing.T) {
	s := newStore(t)
	mustAppend(t, s, []appendStep{{"agent-a", 1, []Sample{util("ns", "p", "GPU-1", sec(1), 40)}}})
	e := s.pods.shard(objectKey{"ns", "p"}).get(objectKey{"ns", "p"})
	e.mu.Lock()
	defer e.mu.Unlock()
	got := make(chan []PodValue)
	go func() { got <- s.PodValues(Utilization, "ns", []string{"p"}, sec(1), nil) }()
	v := testutil.Receive(t, "the query while a writer holds the pod", got)
	if len(v) != 1 || v[0].Value.Value != 40 {
		t.Errorf("PodValues = %+v, want p at 40", v)
	}
}

// TestViewsAreImmutable checks that a published view answers the same
// after later appends, which share its points' backing array, and after
// the sweep.
func TestViewsAreImmutable(t *testing.T) {
	s := newStore(t)
	for i := 0; i < 8; i++ {
		x := 1 + 2*float64(i)
		mustAppend(t, s, []appendStep{{"agent-a", x, []Sample{util("ns", "p", "GPU-1", sec(x), float64(10*i))}}})
	}
	old := s.pods.load(objectKey{"ns", "p"})
	before, ok := s.aggregate(Utilization, old, sec(15).UnixNano())
	if !ok {
		t.Fatal("no value before the later appends")
	}
	for i := 8; i < 40; i++ {
		x := 1 + 2*float64(i)
		mustAppend(t, s, []appendStep{{"agent-a", x, []Sample{util("ns", "p", "GPU-1", sec(x), float64(1000+i))}}})
	}
	if after, ok := s.aggregate(Utilization, old, sec(15).UnixNano()); !ok || after != before {
		t.Errorf("an old view answers %+v, %v after later appends; it answered %+v", after, ok, before)
	}
	if cur := s.pods.load(objectKey{"ns", "p"}); cur == old {
		t.Error("appends did not publish a new view")
	}
}

// TestSweepRacesAppends runs the sweep (every 2 s of the receipt clock,
// which advances 0.1 s per round) against appends of the same pods, under
// -race, and checks that the counters match what the store holds.
func TestSweepRacesAppends(t *testing.T) {
	s, err := New(Config{Window: 4 * time.Second, StaleAfter: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for r := range 300 {
				at := sec(float64(r) / 10)
				// Pods come and go: each writer reports a moving set.
				var samples []Sample
				for i := range 4 {
					samples = append(samples, util("ns", fmt.Sprintf("w%d-p%d", w, (r/20+i)%8), "GPU-1", at, 50))
				}
				if _, err := s.Append(fmt.Sprintf("node-%d", w), at, samples); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// One last sweep at a time when everything is stale.
	if _, err := s.Append("late", sec(100), nil); err != nil {
		t.Fatal(err)
	}
	var pods, series int64
	s.pods.each(func(_ objectKey, e *entry) {
		if v := e.view.Load(); v != nil {
			pods++
			series += int64(len(v.devices))
		}
	})
	if st := s.Stats(); st.Pods != pods || st.Series != series || pods != 0 {
		t.Errorf("Stats = %+v; the store holds %d pods and %d series, want none", st, pods, series)
	}
}
