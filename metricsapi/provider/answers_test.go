package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata/fake"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// changingLister is a PodLister whose pods a test changes, bumping the
// generation as an informer's handler would.
type changingLister struct {
	mu    sync.Mutex
	names map[string][]string // by namespace
	gen   atomic.Uint64
	lists atomic.Int64 // ListPods calls
}

func (l *changingLister) ListPods(namespace string, _ labels.Selector) ([]string, error) {
	l.lists.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.names[namespace]), nil
}
func (l *changingLister) HasSynced() bool          { return true }
func (l *changingLister) Generation(string) uint64 { return l.gen.Load() }
func (l *changingLister) set(namespace string, names ...string) {
	l.mu.Lock()
	l.names[namespace] = names
	l.mu.Unlock()
	l.gen.Add(1)
}

// utilSample is pod ns/name's one GPU at u, sampled and received at at.
func utilSample(ns, name string, at time.Time, u float64) store.Sample {
	return store.Sample{Namespace: ns, Pod: name, Device: "GPU-" + name, Time: at, Present: store.FieldUtilization, Utilization: u}
}

// answerFixture is a store of pods p0..p9 of namespace "ml", one GPU each
// at 10×i %, appended every 2 s up to t0, a lister of them and a provider
// at t0.
func answerFixture(t *testing.T) (*Provider, *store.Store, *changingLister, *time.Time) {
	t.Helper()
	st, err := store.New(store.Config{Window: 15 * time.Second, StaleAfter: 6 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range 10 {
		names = append(names, fmt.Sprintf("p%d", i))
	}
	for r := 4; r >= 0; r-- {
		at := t0.Add(-time.Duration(2*r) * time.Second)
		for i, n := range names {
			if _, err := st.Append("node-"+n, at, []store.Sample{utilSample("ml", n, at, float64(10*i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	l := &changingLister{names: map[string][]string{"ml": names}}
	p := New(st, l)
	now := t0
	p.now = func() time.Time { return now }
	return p, st, l, &now
}

// fresh is what a provider without kept answers answers now.
func fresh(t *testing.T, p *Provider, version string) []byte {
	t.Helper()
	q := New(p.src, p.pods)
	q.now = p.now
	body, ok := q.Answer(version, "ml", GPUUtilization, labels.Everything())
	if !ok {
		t.Fatal("no answer")
	}
	return body
}

// TestAnswerInvalidation checks, change by change, that a kept answer is
// served again while nothing it depends on changed, and rebuilt (reusing
// the items that did not change) as soon as something did, always equal
// to an answer built from scratch.
func TestAnswerInvalidation(t *testing.T) {
	tests := []struct {
		name string
		// change happens after the first answer; it may move the clock.
		change      func(t *testing.T, st *store.Store, l *changingLister, now *time.Time)
		wantHit     bool
		wantEncoded uint64 // items encoded anew by the rebuild
		wantItems   int
	}{
		{"nothing", func(*testing.T, *store.Store, *changingLister, *time.Time) {}, true, 0, 10},
		{"a pod outside the answer appended", func(t *testing.T, st *store.Store, _ *changingLister, _ *time.Time) {
			mustAppend(t, st, "node-x", t0, utilSample("other", "x", t0, 1))
		}, true, 0, 10},
		{"a pod of the answer appended", func(t *testing.T, st *store.Store, _ *changingLister, _ *time.Time) {
			mustAppend(t, st, "node-p3", t0.Add(time.Second), utilSample("ml", "p3", t0.Add(time.Second), 99))
		}, false, 1, 10},
		{"a pod added to the namespace", func(t *testing.T, st *store.Store, l *changingLister, _ *time.Time) {
			mustAppend(t, st, "node-new", t0, utilSample("ml", "new", t0, 5))
			l.set("ml", "p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "new")
		}, false, 1, 11},
		{"a pod removed from the namespace", func(_ *testing.T, _ *store.Store, l *changingLister, _ *time.Time) {
			l.set("ml", "p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8")
		}, false, 0, 9},
		{"a listed pod without samples gets some", func(t *testing.T, st *store.Store, _ *changingLister, _ *time.Time) {
			// Listed before (no item), then held, the namespace's pods
			// unchanged: only the store tells.
			mustAppend(t, st, "node-late", t0, utilSample("ml", "late", t0, 7))
		}, false, 1, 11},
		{"time: still within every value", func(_ *testing.T, _ *store.Store, _ *changingLister, now *time.Time) {
			*now = now.Add(500 * time.Millisecond)
		}, true, 0, 10},
		{"a pod of the answer appended, time still within every value", func(t *testing.T, st *store.Store, _ *changingLister, now *time.Time) {
			// The other pods' values are taken from the kept answer.
			*now = now.Add(time.Second)
			mustAppend(t, st, "node-p3", *now, utilSample("ml", "p3", *now, 99))
		}, false, 1, 10},
		{"a pod of the answer appended, the others gone stale", func(t *testing.T, st *store.Store, _ *changingLister, now *time.Time) {
			// The kept answer no longer holds: every value computed again.
			*now = now.Add(6500 * time.Millisecond)
			mustAppend(t, st, "node-p3", *now, utilSample("ml", "p3", *now, 99))
		}, false, 1, 1},
		{"time: the pods go stale", func(_ *testing.T, _ *store.Store, _ *changingLister, now *time.Time) {
			// The newest readings were received at t0: stale after
			// t0+6s (before the oldest, t0-8s, leaves the window).
			*now = now.Add(6500 * time.Millisecond)
		}, false, 0, 0},
	}
	for _, version := range []string{VersionV1beta1, VersionV1beta2} {
		for _, tc := range tests {
			t.Run(version+"/"+tc.name, func(t *testing.T) {
				p, st, l, now := answerFixture(t)
				if tc.name == "a listed pod without samples gets some" {
					l.set("ml", "p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "late")
				}
				first, ok := p.Answer(version, "ml", GPUUtilization, labels.Everything())
				if !ok {
					t.Fatal("no answer")
				}
				before := p.AnswerStats()
				tc.change(t, st, l, now)
				body, ok := p.Answer(version, "ml", GPUUtilization, labels.Everything())
				if !ok {
					t.Fatal("no second answer")
				}
				after := p.AnswerStats()
				if hit := after.Hits == before.Hits+1; hit != tc.wantHit {
					t.Errorf("hit = %v, want %v (stats %+v then %+v)", hit, tc.wantHit, before, after)
				}
				if tc.wantHit && string(body) != string(first) {
					t.Errorf("a hit served another body")
				}
				if !tc.wantHit && after.Encoded-before.Encoded != tc.wantEncoded {
					t.Errorf("rebuild encoded %d items, want %d (reused %d)", after.Encoded-before.Encoded, tc.wantEncoded, after.Reused-before.Reused)
				}
				if want := fresh(t, p, version); string(body) != string(want) {
					t.Errorf("answer differs from one built from scratch:\n%s\n%s", body, want)
				}
				var list struct {
					Items []json.RawMessage `json:"items"`
				}
				if err := json.Unmarshal(body, &list); err != nil || len(list.Items) != tc.wantItems {
					t.Errorf("answer has %d items (%v), want %d", len(list.Items), err, tc.wantItems)
				}
			})
		}
	}
}

// TestAnswerPerPodUntil: pods appended at different times have values
// that change with time at different times (a point leaving the window, a
// reading going stale); every rebuilt answer, reusing the values that
// still hold, equals one built from scratch, across 20 s of appends to
// one pod after another every half second.
func TestAnswerPerPodUntil(t *testing.T) {
	for _, version := range []string{VersionV1beta1, VersionV1beta2} {
		t.Run(version, func(t *testing.T) {
			p, st, _, now := answerFixture(t)
			for step := range 40 {
				if _, ok := p.Answer(version, "ml", GPUUtilization, labels.Everything()); !ok && step == 0 {
					t.Fatal("no answer")
				}
				*now = now.Add(500 * time.Millisecond)
				// Pods p0..p4 get fresh readings in turn; p5..p9 go
				// stale at t0+6s.
				n := fmt.Sprintf("p%d", step%5)
				mustAppend(t, st, "node-"+n, *now, utilSample("ml", n, *now, float64(step%7*10)))
				body, _ := p.Answer(version, "ml", GPUUtilization, labels.Everything())
				if want := fresh(t, p, version); string(body) != string(want) {
					t.Fatalf("step %d (%v): answer differs from one built from scratch:\n%s\n%s", step, now.Sub(t0), body, want)
				}
			}
		})
	}
}

func mustAppend(t *testing.T, st *store.Store, source string, at time.Time, samples ...store.Sample) {
	t.Helper()
	if _, err := st.Append(source, at, samples); err != nil {
		t.Fatal(err)
	}
}

// TestAnswerReusesListing checks that a rebuild within one lister
// generation does not list the pods again.
func TestAnswerReusesListing(t *testing.T) {
	p, st, l, _ := answerFixture(t)
	p.Answer(VersionV1beta2, "ml", GPUUtilization, labels.Everything())
	mustAppend(t, st, "node-p3", t0.Add(time.Second), utilSample("ml", "p3", t0.Add(time.Second), 99))
	p.Answer(VersionV1beta2, "ml", GPUUtilization, labels.Everything())
	if n := l.lists.Load(); n != 1 {
		t.Errorf("ListPods called %d times, want once", n)
	}
	l.set("ml", "p1")
	p.Answer(VersionV1beta2, "ml", GPUUtilization, labels.Everything())
	if n := l.lists.Load(); n != 2 {
		t.Errorf("ListPods called %d times after a change of the namespace, want twice", n)
	}
}

// TestAnswersBounded checks that the kept answers stay within their
// count, dropping the least recently used.
func TestAnswersBounded(t *testing.T) {
	p, _, _, now := answerFixture(t)
	for i := range maxAnswers + 50 {
		sel := labels.SelectorFromSet(labels.Set{"n": fmt.Sprint(i)})
		*now = t0.Add(time.Duration(i) * time.Microsecond)
		p.Answer(VersionV1beta2, "ml", GPUUtilization, sel)
	}
	st := p.AnswerStats()
	if st.Kept != maxAnswers {
		t.Errorf("%d answers kept, want the bound %d", st.Kept, maxAnswers)
	}
	if p.answers.get(answerKey{VersionV1beta2, "ml", GPUUtilization, "n=0"}) != nil {
		t.Error("the least recently used answer was kept")
	}
	// Idle answers go at the next insertion.
	*now = t0.Add(answerIdle + time.Hour)
	p.Answer(VersionV1beta2, "ml", GPUUtilization, labels.Everything())
	if st := p.AnswerStats(); st.Kept != 1 {
		t.Errorf("%d answers kept after they all idled, want 1", st.Kept)
	}
}

// TestAnswersRaceAppends runs queries against appends under -race and
// checks that the last answer equals one built from scratch.
func TestAnswersRaceAppends(t *testing.T) {
	p, st, _, _ := answerFixture(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				body, ok := p.Answer(VersionV1beta2, "ml", GPUUtilization, labels.Everything())
				var list struct {
					Items []json.RawMessage `json:"items"`
				}
				if !ok || json.Unmarshal(body, &list) != nil || len(list.Items) != 10 {
					t.Errorf("bad answer: %v %s", ok, body)
					return
				}
			}
		})
	}
	for r := range 200 {
		i := r % 10
		at := t0.Add(time.Duration(r) * time.Millisecond)
		mustAppend(t, st, fmt.Sprintf("node-p%d", i), at, utilSample("ml", fmt.Sprintf("p%d", i), at, float64(r%100)))
	}
	close(stop)
	wg.Wait()
	body, _ := p.Answer(VersionV1beta2, "ml", GPUUtilization, labels.Everything())
	if want := fresh(t, p, VersionV1beta2); string(body) != string(want) {
		t.Errorf("last answer differs from one built from scratch:\n%s\n%s", body, want)
	}
}

// TestMetadataPodListerGenerations checks that adding, relabelling and
// deleting a pod bump its namespace's generation, and that other updates
// and other namespaces do not.
func TestMetadataPodListerGenerations(t *testing.T) {
	scheme := fake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	pod := func(ns, name string, l map[string]string) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l},
		}
	}
	client := fake.NewSimpleMetadataClient(scheme, pod("ml", "a", map[string]string{"app": "x"}))
	l, err := NewMetadataPodLister(client)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)
	testutil.Eventually(t, "the informer's first list", l.HasSynced)
	testutil.Eventually(t, "the first add to count", func() bool { return l.Generation("ml") == 1 })
	pods := client.Resource(schema.GroupVersionResource{Version: "v1", Resource: "pods"})
	steps := []struct {
		name    string
		do      func() error
		wantGen uint64
	}{
		{"add", func() error {
			_, err := pods.Namespace("ml").(fake.MetadataClient).CreateFake(pod("ml", "b", map[string]string{"app": "x"}), metav1.CreateOptions{})
			return err
		}, 2},
		{"relabel", func() error {
			_, err := pods.Namespace("ml").(fake.MetadataClient).UpdateFake(pod("ml", "b", map[string]string{"app": "y"}), metav1.UpdateOptions{})
			return err
		}, 3},
		{"delete", func() error { return pods.Namespace("ml").Delete(ctx, "b", metav1.DeleteOptions{}) }, 4},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		testutil.Eventually(t, s.name+" to bump the generation", func() bool { return l.Generation("ml") == s.wantGen })
	}
	// An update that keeps the labels: no bump. The annotation change
	// reaches the informer (it is an update event) but not the
	// generation; an add elsewhere proves the handler ran past it.
	a := pod("ml", "a", map[string]string{"app": "x"})
	a.Annotations = map[string]string{"touched": "yes"}
	if _, err := pods.Namespace("ml").(fake.MetadataClient).UpdateFake(a, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Namespace("web").(fake.MetadataClient).CreateFake(pod("web", "c", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the add in web to count", func() bool { return l.Generation("web") == 1 })
	if g := l.Generation("ml"); g != 4 {
		t.Errorf("generation of ml = %d after an update keeping the labels, want 4", g)
	}
}
