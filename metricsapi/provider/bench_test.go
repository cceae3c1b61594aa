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
		at := t0.Add(-time.Duration(2*i) * time.Second)
		// One source per node of 8 pods.
		for node := 0; node < pods/8; node++ {
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
