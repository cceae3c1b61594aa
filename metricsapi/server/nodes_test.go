package server

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	cmv1beta1 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta1"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"
	cmclient "k8s.io/metrics/pkg/client/custom_metrics"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/provider"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// TestNodeMetricsAPI checks the node metrics through the API server and
// the custom metrics client, in both API versions: root-scoped, by name
// and by label selector over nodes.
func TestNodeMetricsAPI(t *testing.T) {
	st, pods, _ := fixture(t)
	now := time.Now().Truncate(time.Second)
	dev := func(node, dev string, u, watts float64) store.Sample {
		return store.Sample{Node: node, Device: dev, Time: now, Precedence: store.PrecedenceAgent,
			Present: store.FieldUtilization | store.FieldPower, Utilization: u, PowerWatts: watts}
	}
	if _, err := st.AppendNodes("agent", now, []store.Sample{dev("gpu-1", "GPU-a", 90, 300), dev("gpu-1", "GPU-b", 10, 60), dev("gpu-2", "GPU-c", 50, 200)}); err != nil {
		t.Fatal(err)
	}
	nodes := provider.NewStaticNodeLister([]provider.StaticNode{
		{Name: "gpu-1", Labels: map[string]string{"pool": "train"}},
		{Name: "gpu-2", Labels: map[string]string{"pool": "serve"}},
		{Name: "cpu-1", Labels: map[string]string{"pool": "train"}},
	})
	ts := startServer(t, Config{Metrics: st, Pods: pods, NodeMetrics: st, Nodes: nodes}, false)
	ts.ready.Store(true)
	mapper := meta.NewDefaultRESTMapper([]schema.GroupVersion{{Version: "v1"}})
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, meta.RESTScopeNamespace)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "Node"}, meta.RESTScopeRoot)
	nodeKind := schema.GroupKind{Kind: "Node"}

	for _, gv := range []schema.GroupVersion{cmv1beta1.SchemeGroupVersion, cmv1beta2.SchemeGroupVersion} {
		t.Run(gv.Version, func(t *testing.T) {
			c, err := cmclient.NewForVersionForConfig(ts.rest, mapper, gv)
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				metric string
				node   string
				milli  int64
			}{
				{"gpu_utilization", "gpu-1", 50_000},
				{"gpu_utilization_max", "gpu-1", 90_000},
				{"gpu_power_usage_watts", "gpu-1", 360_000},
				{"gpu_count", "gpu-1", 2_000},
				{"gpu_count", "gpu-2", 1_000},
			} {
				v, err := c.RootScopedMetrics().GetForObject(nodeKind, tc.node, tc.metric, labels.Everything())
				if err != nil || v.Value.MilliValue() != tc.milli || v.DescribedObject.Kind != "Node" || v.DescribedObject.Name != tc.node || !v.Timestamp.Time.Equal(now) {
					t.Errorf("%s of %s = %+v, %v; want %d m of Node %s at %v", tc.metric, tc.node, v, err, tc.milli, tc.node, now)
				}
			}
			list, err := c.RootScopedMetrics().GetForObjects(nodeKind, labels.SelectorFromSet(labels.Set{"pool": "train"}), "gpu_count", labels.Everything())
			if err != nil || len(list.Items) != 1 || list.Items[0].DescribedObject.Name != "gpu-1" || list.Items[0].Value.MilliValue() != 2000 {
				t.Errorf("gpu_count of pool=train = %+v, %v; want gpu-1's 2 only (cpu-1 has no GPU)", list, err)
			}
			if _, err := c.RootScopedMetrics().GetForObject(nodeKind, "gpu-1", "gpu_memory_used_bytes", labels.Everything()); err == nil {
				t.Error("memory used served for a node whose devices report none")
			}
			if _, err := c.RootScopedMetrics().GetForObject(nodeKind, "cpu-1", "gpu_count", labels.Everything()); err == nil {
				t.Error("a node without GPU samples was served")
			}
		})
	}
	code, body := ts.get(t, "/apis/custom.metrics.k8s.io/v1beta2")
	if code != http.StatusOK || !strings.Contains(body, `"nodes/gpu_utilization_max"`) || !strings.Contains(body, `"pods/gpu_utilization"`) {
		t.Errorf("discovery (HTTP %d) lacks the node or pod metrics:\n%s", code, body)
	}
	if code, body := ts.get(t, "/readyz?verbose"); code != http.StatusOK || !strings.Contains(body, "node-lister ok") {
		t.Errorf("/readyz (HTTP %d) lacks the node lister's check:\n%s", code, body)
	}
}
