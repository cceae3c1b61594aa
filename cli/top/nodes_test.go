package top

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/kubeapi"
)

func node(name, pool string, alloc corev1.ResourceList) corev1.Node {
	return corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pool": pool}},
		Status:     corev1.NodeStatus{Allocatable: alloc},
	}
}

// servedNode is one node's served values; nil leaves a metric out.
type servedNode struct {
	name                   string
	age                    time.Duration
	util, max, mem, memPct *float64
	power, count           *float64
}

// nodeFixture is fixture's pods on these nodes: gpu-node-1 (8 GPUs, two
// pods holding GPUs, a finished one not counted), gpu-node-2 (time-sliced:
// infer-1; odd's resource is no GPU's), gpu-node-3 (MIG: no utilization
// served), gpu-node-4 (GPUs but no agent: nothing served), cpu-node (no
// GPU: not listed).
func nodeFixture() *fakeAPI {
	api := fixture()
	api.nodes = []corev1.Node{
		node("gpu-node-1", "train", gpuRes("nvidia.com/gpu", 8)),
		node("gpu-node-2", "serve", gpuRes("nvidia.com/gpu.shared", 4)),
		node("gpu-node-3", "serve", corev1.ResourceList{"nvidia.com/mig-1g.10gb": resource.MustParse("7"), corev1.ResourceCPU: resource.MustParse("64")}),
		node("gpu-node-4", "train", gpuRes("nvidia.com/gpu", 2)),
		node("cpu-node", "web", corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("16")}),
	}
	vals := []servedNode{
		{"gpu-node-1", 2 * time.Second, f(40.5), f(99.9), f(110 << 30), f(17.2), f(1400.5), f(8)},
		{"gpu-node-2", time.Second, f(12), f(12), f(2 << 30), f(2.5), f(80), f(1)},
		{"gpu-node-3", 3 * time.Second, nil, nil, f(5 << 30), f(6.25), f(98.4), f(1)},
	}
	api.nodeValues = map[string][]cmv1beta2.MetricValue{}
	window := int64(15)
	for _, v := range vals {
		for metric, x := range map[string]*float64{metricUtilization: v.util, metricUtilizationMax: v.max, metricMemoryUsed: v.mem,
			metricMemoryUtilization: v.memPct, metricPower: v.power, metricCount: v.count} {
			if x == nil {
				continue
			}
			q := resource.NewMilliQuantity(int64(*x*1000), resource.DecimalSI)
			switch metric {
			case metricMemoryUsed:
				q = resource.NewQuantity(int64(*x), resource.BinarySI)
			case metricCount:
				q = resource.NewQuantity(int64(*x), resource.DecimalSI)
			}
			mv := cmv1beta2.MetricValue{
				DescribedObject: corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: v.name},
				Metric:          cmv1beta2.MetricIdentifier{Name: metric},
				Timestamp:       metav1.NewTime(now.Add(-v.age)),
				Value:           *q,
			}
			if metric == metricUtilization || metric == metricUtilizationMax {
				mv.WindowSeconds = &window
			}
			api.nodeValues[metric] = append(api.nodeValues[metric], mv)
		}
	}
	return api
}

// TestNodesOutput: every output format over the fixture, against golden
// files.
func TestNodesOutput(t *testing.T) {
	tests := []struct {
		name     string
		query    NodeQuery
		sortBy   string
		printer  Printer
		wantRows int
	}{
		{"table", NodeQuery{}, SortName, Printer{}, 4},
		{"wide", NodeQuery{}, SortName, Printer{Output: OutputWide}, 4},
		{"json", NodeQuery{}, SortName, Printer{Output: OutputJSON}, 4},
		{"no-headers", NodeQuery{}, SortName, Printer{NoHeaders: true}, 4},
		{"sort-gpu", NodeQuery{}, SortGPU, Printer{}, 4},
		{"sort-memory", NodeQuery{}, SortMemory, Printer{}, 4},
		{"sort-power", NodeQuery{}, SortPower, Printer{}, 4},
		{"selector", NodeQuery{Selector: labels.SelectorFromSet(labels.Set{"pool": "serve"})}, SortName, Printer{}, 2},
		{"empty-json", NodeQuery{Selector: labels.SelectorFromSet(labels.Set{"pool": "none"})}, SortName, Printer{Output: OutputJSON}, 0},
		{"bars", NodeQuery{}, SortGPU, Printer{Bars: true}, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := Nodes(context.Background(), nodeFixture().clients(t), tc.query)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != tc.wantRows {
				t.Errorf("%d rows, want %d", len(rows), tc.wantRows)
			}
			SortNodes(rows, tc.sortBy)
			var out bytes.Buffer
			tc.printer.Out = &out
			if err := tc.printer.PrintNodes(rows, now); err != nil {
				t.Fatal(err)
			}
			golden(t, "nodes-"+tc.name, out.Bytes())
		})
	}
}

// TestNodesValues: a row carries exactly what the API serves, and the
// node's GPU resources and GPU pods from the Kubernetes API.
func TestNodesValues(t *testing.T) {
	rows, err := Nodes(context.Background(), nodeFixture().clients(t), NodeQuery{})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]NodeRow{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	n1 := byName["gpu-node-1"]
	// train-0 and bert-0 hold GPUs there; done finished.
	if n1.Allocatable != 8 || n1.Pods != 2 || *n1.GPUs != 8 || *n1.UtilizationPercent != 40.5 || *n1.UtilizationMaxPercent != 99.9 ||
		*n1.MemoryUsedBytes != 110<<30 || *n1.PowerWatts != 1400.5 || *n1.WindowSeconds != 15 || !n1.Timestamp.Time.Equal(now.Add(-2*time.Second)) {
		t.Errorf("gpu-node-1 = %+v", n1)
	}
	if n3 := byName["gpu-node-3"]; n3.UtilizationPercent != nil || n3.UtilizationMaxPercent != nil || n3.PowerWatts == nil ||
		n3.Allocatable != 7 || n3.Pods != 1 || len(n3.Resources) != 1 || n3.Resources[0] != "nvidia.com/mig-1g.10gb" {
		t.Errorf("gpu-node-3 = %+v, want MIG: power, no utilization, 7 allocatable, 1 pod", n3)
	}
	if n4 := byName["gpu-node-4"]; n4.served() || n4.Timestamp != nil || n4.Allocatable != 2 || n4.Pods != 0 {
		t.Errorf("gpu-node-4 = %+v, want 2 allocatable GPUs and nothing served", n4)
	}
	if _, ok := byName["cpu-node"]; ok {
		t.Error("cpu-node is listed: it has no GPU")
	}
}

// TestNodesErrors: the errors say what is wrong in kubectl's words.
func TestNodesErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*fakeAPI)
		want   string
	}{
		{"no APIService", func(f *fakeAPI) { f.noAPIService = true },
			"the custom metrics API (custom.metrics.k8s.io) is not registered in this cluster: no APIService serves it"},
		{"nodes forbidden", func(f *fakeAPI) { f.forbidNodes = true },
			`forbidden: RBAC does not allow you to list nodes (missing verb "list" on resource "nodes")`},
		{"pods forbidden", func(f *fakeAPI) { f.forbidPods = true },
			`forbidden: RBAC does not allow you to list pods (missing verb "list" on resource "pods")`},
		{"metrics forbidden", func(f *fakeAPI) { f.forbidMetrics = true },
			`forbidden: RBAC does not allow you to get nodes/gpu_utilization.custom.metrics.k8s.io (missing verb "get" on resource "nodes/gpu_utilization.custom.metrics.k8s.io")`},
		{"unavailable", func(f *fakeAPI) { f.unavailable = true },
			"the custom.metrics.k8s.io API is registered but not available: service gpu-metrics-server/gpu-metrics-server has no ready endpoints"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := nodeFixture()
			tc.mutate(api)
			_, err := Nodes(context.Background(), api.clients(t), NodeQuery{})
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != tc.want {
				t.Errorf("error\n%q, want\n%q", err, tc.want)
			}
			var fb *kubeapi.Forbidden
			if errors.As(err, &fb) && fb.Permission() == "" {
				t.Errorf("Forbidden without a permission: %#v", err)
			}
		})
	}
}

// TestWatchNodes: --watch of top nodes redraws as top pods does.
func TestWatchNodes(t *testing.T) {
	rows, err := Nodes(context.Background(), nodeFixture().clients(t), NodeQuery{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	fetch := func(context.Context) ([]NodeRow, error) {
		calls++
		if calls == 2 {
			cancel()
		}
		return rows[:2], nil
	}
	var out bytes.Buffer
	if err := WatchNodes(ctx, time.Millisecond, true, "Every 1ms: top nodes", fetch, Printer{Out: &out, Bars: true}, &bytes.Buffer{}, func() time.Time { return now }); err != nil {
		t.Fatal(err)
	}
	golden(t, "watch-nodes-terminal", out.Bytes())
}
