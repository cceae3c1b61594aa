package provider

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata/fake"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func podInfo(metric string) cmprovider.CustomMetricInfo {
	return cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "pods"}, Namespaced: true, Metric: metric}
}

// fixture: in namespace "ml", pods a (2 GPUs), b (1 GPU), c (stale: its
// agent stopped 10 s ago), d (no GPU); and "other/a".
func fixture(t testing.TB) (*Provider, *store.Store) {
	t.Helper()
	st, err := store.New(store.Config{Window: 15 * time.Second, StaleAfter: 6 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	gpu := func(ns, pod, dev string, at time.Time, u, usedMiB, watts float64) store.Sample {
		return store.Sample{Namespace: ns, Pod: pod, Container: "main", Device: dev, Time: at.Add(-300 * time.Millisecond),
			Present:     store.FieldUtilization | store.FieldMemoryUsed | store.FieldMemoryTotal | store.FieldPower,
			Utilization: u, MemoryUsedBytes: usedMiB * (1 << 20), MemoryTotalBytes: 8000 * (1 << 20), PowerWatts: watts}
	}
	// Node 1 answers at t0-12s (c's last), then node 2 every 2 s up to t0.
	if _, err := st.Append("node-1", t0.Add(-12*time.Second), []store.Sample{gpu("ml", "c", "GPU-9", t0.Add(-12*time.Second), 99, 1, 1)}); err != nil {
		t.Fatal(err)
	}
	for i := 5; i >= 0; i-- {
		at := t0.Add(-time.Duration(2*i) * time.Second)
		// a's two GPUs: 40 and 80 steady; b's rises 10 per scrape (0..50).
		if _, err := st.Append("node-2", at, []store.Sample{
			gpu("ml", "a", "GPU-1", at, 40, 1000, 100.5),
			gpu("ml", "a", "GPU-2", at, 80, 3000, 200.25),
			gpu("ml", "b", "GPU-3", at, float64(10*(5-i)), 2000, 50),
			gpu("other", "a", "GPU-4", at, 7, 7, 7),
		}); err != nil {
			t.Fatal(err)
		}
	}
	pods := NewStaticPodLister([]StaticPod{
		{Namespace: "ml", Name: "a", Labels: map[string]string{"app": "train", "tier": "gpu"}},
		{Namespace: "ml", Name: "b", Labels: map[string]string{"app": "train"}},
		{Namespace: "ml", Name: "c", Labels: map[string]string{"app": "train"}},
		{Namespace: "ml", Name: "d", Labels: map[string]string{"app": "train"}},
		{Namespace: "other", Name: "a", Labels: map[string]string{"app": "train"}},
	})
	p := New(st, pods)
	p.now = func() time.Time { return t0 }
	return p, st
}

func TestListAllMetrics(t *testing.T) {
	p, _ := fixture(t)
	var got []string
	for _, m := range p.ListAllMetrics() {
		if m.GroupResource != (schema.GroupResource{Resource: "pods"}) || !m.Namespaced {
			t.Errorf("listed %v, want namespaced pods metrics only", m)
		}
		got = append(got, m.Metric)
	}
	want := []string{"gpu_utilization", "gpu_memory_used_bytes", "gpu_memory_utilization", "gpu_power_usage_watts"}
	if !slices.Equal(got, want) {
		t.Errorf("ListAllMetrics = %v, want %v", got, want)
	}
	// Everything listed is served.
	for _, m := range p.ListAllMetrics() {
		if _, err := p.GetMetricBySelector(context.Background(), "ml", labels.Everything(), m, labels.Everything()); err != nil {
			t.Errorf("listed metric %s not served: %v", m.Metric, err)
		}
	}
}

func TestGetMetricBySelector(t *testing.T) {
	p, _ := fixture(t)
	type item struct {
		pod    string
		milli  int64
		window int64
	}
	tests := []struct {
		name      string
		namespace string
		selector  string
		metric    string
		want      []item
	}{
		// a: mean of 40 and 80; b: 0..50 over 10 s. c stale, d no GPU.
		{"utilization", "ml", "app=train", "gpu_utilization", []item{{"a", 60_000, 10}, {"b", 25_000, 10}}},
		{"memory used", "ml", "app=train", "gpu_memory_used_bytes", []item{{"a", 4000 << 20 * 1000, 0}, {"b", 2000 << 20 * 1000, 0}}},
		{"memory utilization", "ml", "app=train", "gpu_memory_utilization", []item{{"a", 25_000, 0}, {"b", 25_000, 0}}},
		{"power", "ml", "app=train", "gpu_power_usage_watts", []item{{"a", 300_750, 0}, {"b", 50_000, 0}}},
		{"set selector", "ml", "app in (train),tier=gpu", "gpu_utilization", []item{{"a", 60_000, 10}}},
		{"negated selector", "ml", "!tier", "gpu_utilization", []item{{"b", 25_000, 10}}},
		{"no match", "ml", "app=serve", "gpu_utilization", nil},
		{"other namespace", "other", "app=train", "gpu_utilization", []item{{"a", 7_000, 10}}},
		{"empty namespace", "nobody", "", "gpu_utilization", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := labels.Parse(tc.selector)
			if err != nil {
				t.Fatal(err)
			}
			list, err := p.GetMetricBySelector(context.Background(), tc.namespace, sel, podInfo(tc.metric), labels.Everything())
			if err != nil {
				t.Fatal(err)
			}
			if len(list.Items) != len(tc.want) {
				t.Fatalf("got %d items %+v, want %v", len(list.Items), list.Items, tc.want)
			}
			for i, v := range list.Items {
				w := tc.want[i]
				if v.DescribedObject.Name != w.pod || v.DescribedObject.Namespace != tc.namespace || v.DescribedObject.Kind != "Pod" {
					t.Errorf("item %d describes %+v, want pod %s/%s", i, v.DescribedObject, tc.namespace, w.pod)
				}
				if v.Metric.Name != tc.metric {
					t.Errorf("item %d metric %q, want %q", i, v.Metric.Name, tc.metric)
				}
				if got := v.Value.MilliValue(); got != w.milli {
					t.Errorf("%s/%s = %s (%d m), want %d m", tc.namespace, w.pod, v.Value.String(), got, w.milli)
				}
				// The newest sample's real time, not the request time.
				if want := t0.Add(-300 * time.Millisecond); !v.Timestamp.Time.Equal(want) {
					t.Errorf("timestamp %v, want the newest sample's %v", v.Timestamp.Time, want)
				}
				if v.WindowSeconds == nil || *v.WindowSeconds != w.window {
					t.Errorf("windowSeconds %v, want %d", v.WindowSeconds, w.window)
				}
			}
		})
	}
}

func TestGetMetricByName(t *testing.T) {
	p, _ := fixture(t)
	v, err := p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "ml", Name: "b"}, podInfo("gpu_utilization"), labels.Everything())
	if err != nil {
		t.Fatal(err)
	}
	if v.Value.MilliValue() != 25_000 || v.DescribedObject.Name != "b" {
		t.Errorf("GetMetricByName = %+v, want b at 25", v)
	}
	for _, pod := range []string{"c", "d", "zz"} {
		_, err := p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "ml", Name: pod}, podInfo("gpu_utilization"), labels.Everything())
		if !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), "gpu_utilization") {
			t.Errorf("pod %s without a fresh sample: err = %v, want NotFound naming the metric", pod, err)
		}
	}
}

func TestRejectedRequests(t *testing.T) {
	p, _ := fixture(t)
	nodes := cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "nodes"}, Metric: "gpu_utilization"}
	rootPods := cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "pods"}, Metric: "gpu_utilization"}
	withLabel, err := labels.Parse("gpu=0")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		info        cmprovider.CustomMetricInfo
		metricSel   labels.Selector
		wantCode    int32
		wantMessage string
	}{
		{"unknown metric", podInfo("gpu_temperature"), labels.Everything(), 404, "gpu_temperature"},
		{"not pods", nodes, labels.Everything(), 404, "gpu_utilization"},
		{"root-scoped pods", rootPods, labels.Everything(), 404, "gpu_utilization"},
		{"metric label selector", podInfo("gpu_utilization"), withLabel, 400, `metricLabelSelector "gpu=0" is not supported`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, errSel := p.GetMetricBySelector(context.Background(), "ml", labels.Everything(), tc.info, tc.metricSel)
			_, errName := p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: "ml", Name: "a"}, tc.info, tc.metricSel)
			for _, err := range []error{errSel, errName} {
				var status apierrors.APIStatus
				if !errors.As(err, &status) || status.Status().Code != tc.wantCode || !strings.Contains(err.Error(), tc.wantMessage) {
					t.Errorf("err = %v, want HTTP %d mentioning %q", err, tc.wantCode, tc.wantMessage)
				}
			}
		})
	}
}

func TestMetadataPodLister(t *testing.T) {
	scheme := fake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	pod := func(ns, name string, l map[string]string) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l, Annotations: map[string]string{"note": "dropped"}},
		}
	}
	client := fake.NewSimpleMetadataClient(scheme,
		pod("ml", "train-1", map[string]string{"app": "train"}),
		pod("ml", "train-0", map[string]string{"app": "train", "tier": "gpu"}),
		pod("ml", "serve-0", map[string]string{"app": "serve"}),
		pod("web", "train-9", map[string]string{"app": "train"}),
	)
	l, err := NewMetadataPodLister(client)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)
	testutil.Eventually(t, "the informer's first list", l.HasSynced)
	tests := []struct {
		ns, selector string
		want         []string
	}{
		{"ml", "app=train", []string{"train-0", "train-1"}},
		{"ml", "app=train,tier=gpu", []string{"train-0"}},
		{"ml", "app notin (train)", []string{"serve-0"}},
		{"ml", "", []string{"serve-0", "train-0", "train-1"}},
		{"web", "app=train", []string{"train-9"}},
		{"none", "app=train", []string{}},
	}
	for _, tc := range tests {
		sel, err := labels.Parse(tc.selector)
		if err != nil {
			t.Fatal(err)
		}
		got, err := l.ListPods(tc.ns, sel)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ListPods(%s, %q) = %v, %v; want %v", tc.ns, tc.selector, got, err, tc.want)
		}
	}
	for _, o := range l.informer.GetStore().List() {
		if m := o.(*metav1.PartialObjectMetadata); m.Annotations != nil {
			t.Errorf("cache kept annotations of %s", m.Name)
		}
	}
}
