package provider

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/metadata/fake"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// benchStore holds pods pods of namespace "bench", one GPU each, with a
// full 15 s window (a reading every 2 s), as of t0.
func benchStore(b *testing.B, pods int) *store.Store {
	b.Helper()
	st, err := store.New(store.Config{Window: 15 * time.Second, StaleAfter: 6 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	for i := 7; i >= 0; i-- {
		// One source per node of 8 pods, scraped at its own offset within
		// the 2 s interval, as the aggregator spreads them: the pods'
		// points leave the window at different times.
		for node := 0; node < pods/8; node++ {
			at := t0.Add(-time.Duration(2*i)*time.Second - time.Duration(node%250)*8*time.Millisecond)
			samples := make([]store.Sample, 8)
			for j := range samples {
				samples[j] = store.Sample{Namespace: "bench", Pod: fmt.Sprintf("worker-%d", node*8+j), Container: "main",
					Device: fmt.Sprintf("GPU-%d-%d", node, j), Time: at.Add(-500 * time.Millisecond),
					Present: store.FieldUtilization | store.FieldPower, Utilization: float64(j * 10), PowerWatts: 100}
			}
			if _, err := st.Append(fmt.Sprintf("node-%d", node), at, samples); err != nil {
				b.Fatal(err)
			}
		}
	}
	return st
}

// BenchmarkSelectorQuery is the HPA's query: gpu_utilization of the 1,000
// pods of a Deployment's selector, among 2,000 pods in the namespace. It
// reports the p99 latency besides the mean.
func BenchmarkSelectorQuery(b *testing.B) {
	const pods = 1000
	st := benchStore(b, pods)
	var static []StaticPod
	var objs []runtime.Object
	for i := 0; i < 2*pods; i++ {
		app := "gpu-app"
		if i >= pods {
			app = "other"
		}
		name := fmt.Sprintf("worker-%d", i)
		static = append(static, StaticPod{Namespace: "bench", Name: name, Labels: map[string]string{"app": app}})
		objs = append(objs, &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name, Labels: map[string]string{"app": app, "pod-template-hash": "7c9f5d8b6"}},
		})
	}
	scheme := fake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		b.Fatal(err)
	}
	informed, err := NewMetadataPodLister(fake.NewSimpleMetadataClient(scheme, objs...))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go informed.Run(ctx)
	testutil.Eventually(b, "the informer's first list", informed.HasSynced)
	sel := labels.SelectorFromSet(labels.Set{"app": "gpu-app"})
	for _, lister := range []struct {
		name string
		l    PodLister
	}{{"static", NewStaticPodLister(static)}, {"informer", informed}} {
		b.Run(lister.name, func(b *testing.B) {
			p := New(st, lister.l)
			p.now = func() time.Time { return t0 }
			var durations []time.Duration
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				list, err := p.GetMetricBySelector(ctx, "bench", sel, podInfo(GPUUtilization), labels.Everything())
				durations = append(durations, time.Since(start))
				if err != nil || len(list.Items) != pods {
					b.Fatalf("got %d items, %v; want %d", len(list.Items), err, pods)
				}
			}
			slices.Sort(durations)
			b.ReportMetric(float64(durations[len(durations)*99/100].Nanoseconds()), "p99-ns")
		})
	}
}

// BenchmarkAnswer is the HPA's 1,000-pod query answered as encoded JSON
// (what the API server writes), informer-backed: kept and served as is
// (hit); rebuilt after 1 pod in 16 changed (at 100 queries a second, what
// the spread scrapes of 1,000 pods change between two queries); rebuilt
// after every pod changed (one query per HPA sync); the second again with
// the 40,000 pods of 5,000 nodes in the store. ns/op includes the appends
// between queries; p50-ns and p99-ns are the answer's alone.
func BenchmarkAnswer(b *testing.B) {
	const pods = 1000
	for _, bc := range []struct {
		name  string
		every int // every how many pods one changes between queries; 0: none
		held  int // pods in the store, the first pods of them queried
	}{{"hit", 0, pods}, {"1-in-16-changed", 16, pods}, {"all-changed", 1, pods}, {"1-in-16-changed-of-40000", 16, 40000}} {
		b.Run(bc.name, func(b *testing.B) {
			st := benchStore(b, bc.held)
			p := New(st, informerLister(b, pods))
			now := t0
			p.now = func() time.Time { return now }
			sel := labels.SelectorFromSet(labels.Set{"app": "gpu-app"})
			batch := make([]store.Sample, 1)
			var durations []time.Duration
			b.ReportAllocs()
			round := 0
			for b.Loop() {
				if bc.every > 0 {
					// Spread appends: the pods round, round+every, ...
					// get a reading 1 ms later than the last.
					now = now.Add(time.Millisecond)
					for i := round % bc.every; i < pods; i += bc.every {
						batch[0] = store.Sample{Namespace: "bench", Pod: fmt.Sprintf("worker-%d", i), Device: fmt.Sprintf("GPU-%d-%d", i/8, i%8),
							Time: now, Present: store.FieldUtilization | store.FieldPower, Utilization: float64(round % 100), PowerWatts: 100}
						if _, err := st.Append(fmt.Sprintf("node-%d", i/8), now, batch); err != nil {
							b.Fatal(err)
						}
					}
					round++
				}
				start := time.Now()
				body, ok := p.Answer(VersionV1beta2, "bench", GPUUtilization, sel)
				durations = append(durations, time.Since(start))
				if !ok || len(body) < pods*100 {
					b.Fatalf("answer %v of %d bytes", ok, len(body))
				}
			}
			slices.Sort(durations)
			b.ReportMetric(float64(durations[len(durations)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(durations[len(durations)*99/100].Nanoseconds()), "p99-ns")
			st2 := p.AnswerStats()
			b.ReportMetric(float64(st2.Hits)/float64(st2.Hits+st2.Rebuilt), "hit-ratio")
		})
	}
}

// informerLister is a synced informer-backed lister of 2×pods pods of
// namespace "bench", the first half labelled app=gpu-app.
func informerLister(b *testing.B, pods int) *MetadataPodLister {
	b.Helper()
	var objs []runtime.Object
	for i := 0; i < 2*pods; i++ {
		app := "gpu-app"
		if i >= pods {
			app = "other"
		}
		objs = append(objs, &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("worker-%d", i), Labels: map[string]string{"app": app, "pod-template-hash": "7c9f5d8b6"}},
		})
	}
	scheme := fake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		b.Fatal(err)
	}
	l, err := NewMetadataPodLister(fake.NewSimpleMetadataClient(scheme, objs...))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go l.Run(ctx)
	testutil.Eventually(b, "the informer's first list", l.HasSynced)
	return l
}
