package store

import (
	"slices"
	"testing"
	"time"
)

// TestChangedAfterEachKindOfChange checks that a held state reports a
// change after exactly the changes that can alter an answer.
func TestChangedAfterEachKindOfChange(t *testing.T) {
	tests := []struct {
		name string
		// change runs after the states of ns/a and ns/missing were taken
		// at 1 s.
		change      func(t *testing.T, s *Store)
		wantChanged bool
	}{
		{"nothing", func(*testing.T, *Store) {}, false},
		{"another pod appended", func(t *testing.T, s *Store) {
			mustAppend(t, s, []appendStep{{"agent-b", 2, []Sample{util("ns", "b", "GPU-2", sec(2), 5)}}})
		}, false},
		{"a duplicate of the held pod's snapshot", func(t *testing.T, s *Store) {
			mustAppend(t, s, []appendStep{{"agent-a", 3, []Sample{util("ns", "a", "GPU-1", sec(1), 40)}}})
		}, false},
		{"the held pod appended", func(t *testing.T, s *Store) {
			mustAppend(t, s, []appendStep{{"agent-a", 3, []Sample{util("ns", "a", "GPU-1", sec(3), 50)}}})
		}, true},
		{"the held pod swept (stale)", func(t *testing.T, s *Store) {
			mustAppend(t, s, []appendStep{{"agent-b", 20, []Sample{util("ns", "b", "GPU-2", sec(20), 5)}}})
		}, true},
		{"the held pod swept and back", func(t *testing.T, s *Store) {
			mustAppend(t, s, []appendStep{
				{"agent-b", 20, []Sample{util("ns", "b", "GPU-2", sec(20), 5)}},
				{"agent-a", 21, []Sample{util("ns", "a", "GPU-1", sec(21), 60)}},
			})
		}, true},
		{"the missing pod appears", func(t *testing.T, s *Store) {
			mustAppend(t, s, []appendStep{{"agent-c", 2, []Sample{util("ns", "missing", "GPU-3", sec(2), 5)}}})
		}, true},
		{"a new pod elsewhere (conservative for the missing one)", func(t *testing.T, s *Store) {
			mustAppend(t, s, []appendStep{{"agent-c", 2, []Sample{util("other", "x", "GPU-3", sec(2), 5)}}})
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			mustAppend(t, s, []appendStep{
				{"agent-a", 1, []Sample{util("ns", "a", "GPU-1", sec(1), 40)}},
				{"agent-b", 1, []Sample{util("ns", "b", "GPU-2", sec(1), 5)}},
			})
			w := s.Watermark()
			states := s.PodStates("ns", []string{"a", "missing"}, nil)
			if !states[0].Held() || states[1].Held() {
				t.Fatalf("PodStates = %+v, want a held and missing not", states)
			}
			if s.Changed(states, w) {
				t.Fatal("Changed before any change")
			}
			tc.change(t, s)
			if got := s.Changed(states, w); got != tc.wantChanged {
				t.Errorf("Changed = %v, want %v", got, tc.wantChanged)
			}
			// Refreshed from the states held, the states are the ones
			// looked up afresh.
			names := []string{"a", "missing"}
			fresh := s.PodStates("ns", names, nil)
			if again := s.RefreshStates("ns", names, states, nil); !slices.Equal(again, fresh) {
				t.Errorf("RefreshStates = %+v, PodStates = %+v", again, fresh)
			}
		})
	}
}

// TestStateValueUntil checks that a state's value is what PodValue
// answers, that it holds until the time StateValue gives, and changes
// there: the oldest point leaves the window, or the pod goes stale, a
// nanosecond after the last instant it holds.
func TestStateValueUntil(t *testing.T) {
	// Readings every 2 s from 1 to 9: 10, 20, 30, 40, 50 (window 15 s,
	// stale-after 6 s).
	var steps []appendStep
	for i := range 5 {
		x := 1 + 2*float64(i)
		steps = append(steps, appendStep{"agent-a", x, []Sample{full("ns", "p", "GPU-1", sec(x), float64(10*(i+1)), 1000, 4000, 100)}})
	}
	tests := []struct {
		name      string
		metric    Metric
		now       float64
		wantUntil float64
	}{
		// The newest reading (9) is fresh up to 15 and stale after, before
		// any point leaves the window (the first, received at 1, after 16).
		{"utilization: stale first", Utilization, 10, 15},
		{"power: stale after 15", PowerWatts, 12, 15},
		{"memory at the edge", MemoryUsedBytes, 14.5, 15},
		{"memory at its last fresh instant", MemoryUsedBytes, 15, 15},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			mustAppend(t, s, steps)
			st := s.PodStates("ns", []string{"p"}, nil)[0]
			v, ok, until := s.StateValue(tc.metric, st, sec(tc.now))
			want, wantOK := s.PodValue(tc.metric, "ns", "p", sec(tc.now))
			if ok != wantOK || v != want {
				t.Fatalf("StateValue = %+v, %v; PodValue = %+v, %v", v, ok, want, wantOK)
			}
			if want := sec(tc.wantUntil).Add(time.Nanosecond); !until.Equal(want) {
				t.Errorf("until = %v, want %v", until.Sub(t0), want.Sub(t0))
			}
			// Unchanged on a grid up to until and at its last instant,
			// different at until.
			for x := tc.now; sec(x).Before(until); x += 0.25 {
				if got, gotOK := s.PodValue(tc.metric, "ns", "p", sec(x)); gotOK != ok || got != v {
					t.Errorf("at %v the value is %+v, %v: changed before until", x, got, gotOK)
				}
			}
			if got, gotOK := s.PodValue(tc.metric, "ns", "p", until.Add(-time.Nanosecond)); gotOK != ok || got != v {
				t.Errorf("the value changed just before until (%+v)", got)
			}
			if got, gotOK := s.PodValue(tc.metric, "ns", "p", until); gotOK == ok && got == v {
				t.Errorf("the value did not change at until (%+v)", got)
			}
		})
	}

	// A point leaving the window before anything goes stale: readings
	// every 2 s from 1 to 21; at 21.5 the window [6.5, 21.5] starts with
	// the point received at 7, which is in it up to 22 and leaves it
	// after.
	s := newStore(t)
	for i := range 11 {
		x := 1 + 2*float64(i)
		mustAppend(t, s, []appendStep{{"agent-a", x, []Sample{util("ns", "p", "GPU-1", sec(x), float64(10*i))}}})
	}
	st := s.PodStates("ns", []string{"p"}, nil)[0]
	v, ok, until := s.StateValue(Utilization, st, sec(21.5))
	if !ok || !until.Equal(sec(22).Add(time.Nanosecond)) {
		t.Fatalf("StateValue = %+v, %v until %v, want a value until 22 s + 1 ns", v, ok, until.Sub(t0))
	}
	if next, _ := s.PodValue(Utilization, "ns", "p", sec(22.001)); next == v {
		t.Errorf("the mean did not change after the oldest point left the window")
	}
}
