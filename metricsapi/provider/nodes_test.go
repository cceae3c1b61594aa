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

func nodeInfo(metric string) cmprovider.CustomMetricInfo {
	return cmprovider.CustomMetricInfo{GroupResource: schema.GroupResource{Resource: "nodes"}, Metric: metric}
}

// nodeFixture is fixture's provider serving nodes too: node n1 has two
// GPUs (one busy at 40 then 80, one idle at 0; 1000 and 0 MiB used of
// 8000 each; 200 and 50 W), n2 one GPU at 30 %, n3 went stale, n4 has no
// GPU sample at all.
func nodeFixture(t testing.TB) *Provider {
	t.Helper()
	p, st := fixture(t)
	dev := func(node, dev string, at time.Time, u, usedMiB, watts float64) store.Sample {
		return store.Sample{Node: node, Device: dev, Time: at.Add(-300 * time.Millisecond), Precedence: store.PrecedenceAgent,
			Present:     store.FieldUtilization | store.FieldMemoryUsed | store.FieldMemoryTotal | store.FieldPower,
			Utilization: u, MemoryUsedBytes: usedMiB * (1 << 20), MemoryTotalBytes: 8000 * (1 << 20), PowerWatts: watts}
	}
	if _, err := st.AppendNodes("agent-3", t0.Add(-12*time.Second), []store.Sample{dev("n3", "GPU-9", t0.Add(-12*time.Second), 99, 1, 1)}); err != nil {
		t.Fatal(err)
	}
	for i, u := range []float64{40, 80} {
		at := t0.Add(-time.Duration(2*(1-i)) * time.Second)
		if _, err := st.AppendNodes("agent-1", at, []store.Sample{dev("n1", "GPU-1", at, u, 1000, 200), dev("n1", "GPU-2", at, 0, 0, 50)}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.AppendNodes("agent-2", at, []store.Sample{dev("n2", "GPU-5", at, 30, 4000, 100)}); err != nil {
			t.Fatal(err)
		}
	}
	p.ServeNodes(st, NewStaticNodeLister([]StaticNode{
		{Name: "n1", Labels: map[string]string{"gpu": "h100", "zone": "a"}},
		{Name: "n2", Labels: map[string]string{"gpu": "h100", "zone": "b"}},
		{Name: "n3", Labels: map[string]string{"gpu": "h100"}},
		{Name: "n4", Labels: map[string]string{"gpu": "none"}},
	}))
	return p
}

func TestListAllMetricsWithNodes(t *testing.T) {
	p := nodeFixture(t)
	var nodes []string
	for _, m := range p.ListAllMetrics() {
		if m.GroupResource.Resource == "nodes" {
			if m.Namespaced {
				t.Errorf("listed %v namespaced, want root-scoped", m)
			}
			nodes = append(nodes, m.Metric)
		}
		if _, err := p.GetMetricBySelector(context.Background(), map[bool]string{true: "ml"}[m.Namespaced], labels.Everything(), m, labels.Everything()); err != nil {
			t.Errorf("listed metric %v not served: %v", m, err)
		}
	}
	want := []string{"gpu_utilization", "gpu_utilization_max", "gpu_memory_used_bytes", "gpu_memory_utilization", "gpu_power_usage_watts", "gpu_count"}
	if !slices.Equal(nodes, want) {
		t.Errorf("node metrics %v, want %v", nodes, want)
	}
}

func TestNodesBySelectorAndName(t *testing.T) {
	p := nodeFixture(t)
	type item struct {
		node   string
		milli  int64
		window int64
	}
	tests := []struct {
		name     string
		selector string
		metric   string
		want     []item
	}{
		// n1: GPU-1 mean 60, GPU-2 0; n2: 30. n3 stale, n4 no GPU.
		{"utilization", "gpu", "gpu_utilization", []item{{"n1", 30_000, 2}, {"n2", 30_000, 2}}},
		{"utilization max", "gpu", "gpu_utilization_max", []item{{"n1", 60_000, 2}, {"n2", 30_000, 2}}},
		{"memory used", "", "gpu_memory_used_bytes", []item{{"n1", 1000 << 20 * 1000, 0}, {"n2", 4000 << 20 * 1000, 0}}},
		{"memory utilization", "", "gpu_memory_utilization", []item{{"n1", 6_250, 0}, {"n2", 50_000, 0}}},
		{"power", "", "gpu_power_usage_watts", []item{{"n1", 250_000, 0}, {"n2", 100_000, 0}}},
		{"count", "", "gpu_count", []item{{"n1", 2_000, 0}, {"n2", 1_000, 0}}},
		{"label selector", "zone=b", "gpu_count", []item{{"n2", 1_000, 0}}},
		{"set selector", "gpu in (h100),zone notin (b)", "gpu_count", []item{{"n1", 2_000, 0}}},
		{"no GPU node selected", "gpu=none", "gpu_count", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := labels.Parse(tc.selector)
			if err != nil {
				t.Fatal(err)
			}
			list, err := p.GetMetricBySelector(context.Background(), "", sel, nodeInfo(tc.metric), labels.Everything())
			if err != nil {
				t.Fatal(err)
			}
			if len(list.Items) != len(tc.want) {
				t.Fatalf("got %d items %+v, want %v", len(list.Items), list.Items, tc.want)
			}
			for i, v := range list.Items {
				w := tc.want[i]
				if d := v.DescribedObject; d.Kind != "Node" || d.APIVersion != "v1" || d.Name != w.node || d.Namespace != "" {
					t.Errorf("item %d describes %+v, want node %s", i, v.DescribedObject, w.node)
				}
				if got := v.Value.MilliValue(); got != w.milli || v.Metric.Name != tc.metric {
					t.Errorf("%s %s = %s (%d m), want %d m", w.node, v.Metric.Name, v.Value.String(), got, w.milli)
				}
				if v.WindowSeconds == nil || *v.WindowSeconds != w.window {
					t.Errorf("%s windowSeconds %v, want %d", w.node, v.WindowSeconds, w.window)
				}
				// By name: the same value.
				one, err := p.GetMetricByName(context.Background(), types.NamespacedName{Name: w.node}, nodeInfo(tc.metric), labels.Everything())
				if err != nil || one.Value.Cmp(v.Value) != 0 || one.DescribedObject != v.DescribedObject || !one.Timestamp.Equal(&v.Timestamp) {
					t.Errorf("GetMetricByName(%s) = %+v, %v; want %+v", w.node, one, err, v)
				}
			}
		})
	}
	for _, n := range []string{"n3", "n4", "zz"} {
		_, err := p.GetMetricByName(context.Background(), types.NamespacedName{Name: n}, nodeInfo("gpu_count"), labels.Everything())
		if !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), "gpu_count") {
			t.Errorf("node %s without a fresh sample: err = %v, want NotFound naming the metric", n, err)
		}
	}
}

func TestRejectedNodeRequests(t *testing.T) {
	p := nodeFixture(t)
	withLabel, err := labels.Parse("gpu=0")
	if err != nil {
		t.Fatal(err)
	}
	namespacedNodes := nodeInfo("gpu_utilization")
	namespacedNodes.Namespaced = true
	tests := []struct {
		name        string
		info        cmprovider.CustomMetricInfo
		metricSel   labels.Selector
		wantCode    int32
		wantMessage string
	}{
		{"unknown metric", nodeInfo("gpu_temperature"), labels.Everything(), 404, "gpu_temperature"},
		{"a node-only metric of pods", podInfo("gpu_count"), labels.Everything(), 404, "gpu_count"},
		{"namespaced nodes", namespacedNodes, labels.Everything(), 404, "gpu_utilization"},
		{"metric label selector", nodeInfo("gpu_utilization"), withLabel, 400, "select nodes with labelSelector"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := map[bool]string{true: "ml"}[tc.info.Namespaced]
			_, errSel := p.GetMetricBySelector(context.Background(), ns, labels.Everything(), tc.info, tc.metricSel)
			_, errName := p.GetMetricByName(context.Background(), types.NamespacedName{Namespace: ns, Name: "n1"}, tc.info, tc.metricSel)
			for _, err := range []error{errSel, errName} {
				var status apierrors.APIStatus
				if !errors.As(err, &status) || status.Status().Code != tc.wantCode || !strings.Contains(err.Error(), tc.wantMessage) {
					t.Errorf("err = %v, want HTTP %d mentioning %q", err, tc.wantCode, tc.wantMessage)
				}
			}
		})
	}
}

func TestMetadataNodeLister(t *testing.T) {
	scheme := fake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	node := func(name string, l map[string]string) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l, Annotations: map[string]string{"note": "dropped"}},
		}
	}
	client := fake.NewSimpleMetadataClient(scheme,
		node("gpu-b", map[string]string{"gpu": "h100"}),
		node("gpu-a", map[string]string{"gpu": "a100"}),
		node("cpu-0", map[string]string{"pool": "cpu"}),
	)
	l, err := NewMetadataNodeLister(client)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)
	testutil.Eventually(t, "the informer's first list", l.HasSynced)
	for _, tc := range []struct {
		selector string
		want     []string
	}{
		{"gpu", []string{"gpu-a", "gpu-b"}},
		{"gpu=h100", []string{"gpu-b"}},
		{"!gpu", []string{"cpu-0"}},
		{"", []string{"cpu-0", "gpu-a", "gpu-b"}},
		{"pool=none", nil},
	} {
		sel, err := labels.Parse(tc.selector)
		if err != nil {
			t.Fatal(err)
		}
		got, err := l.ListNodes(sel)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ListNodes(%q) = %v, %v; want %v", tc.selector, got, err, tc.want)
		}
	}
}
