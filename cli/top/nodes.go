package top

import (
	"context"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/kubeapi"
)

// The node-only metrics the aggregator serves (metricsapi/provider's
// names); the others are the pods' names, over all of a node's GPUs.
const (
	metricUtilizationMax = "gpu_utilization_max"
	metricCount          = "gpu_count"
)

// NodeQuery says which nodes to list.
type NodeQuery struct {
	// Selector selects nodes by label; nil or empty: all.
	Selector labels.Selector
}

// NodeRow is one node: its GPU resources and the pods holding GPUs on it
// from the Kubernetes API, and the values the custom metrics API serves
// for it. A value the API does not serve is nil.
type NodeRow struct {
	Name string `json:"name"`
	// Allocatable is the number of GPU resources the node offers
	// (nvidia.com/gpu, .shared, mig-*), Resources their names.
	Allocatable int      `json:"allocatable"`
	Resources   []string `json:"resources,omitempty"`
	// Pods is the number of pods on the node holding GPUs (as top pods
	// counts them: not finished).
	Pods int `json:"pods"`

	// GPUs is gpu_count: the GPUs reporting a fresh sample;
	// UtilizationMaxPercent the busiest GPU's utilization.
	GPUs                  *float64 `json:"gpus,omitempty"`
	UtilizationMaxPercent *float64 `json:"utilizationMaxPercent,omitempty"`
	Values
}

func (r *NodeRow) served() bool {
	return r.GPUs != nil || r.UtilizationMaxPercent != nil || r.Values.served()
}

// extra gives the field of a node-only metric.
func (r *NodeRow) extra(metric string) **float64 {
	switch metric {
	case metricUtilizationMax:
		return &r.UtilizationMaxPercent
	case metricCount:
		return &r.GPUs
	}
	return nil
}

// Nodes lists the nodes q selects that offer GPUs or have GPU values
// served, each with its values, sorted by name. Errors are worded for a
// person (kubeapi.Explain); no custom metrics API is
// kubeapi.ErrNoCustomMetricsAPI.
func Nodes(ctx context.Context, c *kubeapi.Clients, q NodeQuery) ([]NodeRow, error) {
	if err := kubeapi.CheckCustomMetricsAPI(c.Discovery); err != nil {
		return nil, err
	}
	sel := q.Selector
	if sel == nil {
		sel = labels.Everything()
	}
	nodes, err := c.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, kubeapi.Explain(err, "list", "", "nodes", "")
	}
	rows := map[string]*NodeRow{}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		row := &NodeRow{Name: n.Name}
		for name, qty := range n.Status.Allocatable {
			if kubeapi.IsGPUResource(name) && qty.Value() > 0 {
				row.Allocatable += int(qty.Value())
				row.Resources = append(row.Resources, string(name))
			}
		}
		sort.Strings(row.Resources)
		rows[n.Name] = row
	}
	pods, err := c.Kube.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, kubeapi.Explain(err, "list", "", "pods", metav1.NamespaceAll)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if row := rows[p.Spec.NodeName]; row != nil && holdsGPU(p) {
			row.Pods++
		}
	}
	if err := addNodeValues(c, sel, rows); err != nil {
		return nil, err
	}
	out := make([]NodeRow, 0, len(rows))
	for _, r := range rows {
		if r.Allocatable > 0 || r.served() {
			out = append(out, *r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// addNodeValues reads the node metrics of the nodes matching sel into
// rows (a node served but not listed is left out: it left the cluster, or
// the selector's answer changed between the two reads).
func addNodeValues(c *kubeapi.Clients, sel labels.Selector, rows map[string]*NodeRow) error {
	for _, metric := range []string{metricUtilization, metricUtilizationMax, metricMemoryUsed, metricMemoryUtilization, metricPower, metricCount} {
		list, err := c.Metrics.RootScopedMetrics().GetForObjects(schema.GroupKind{Kind: "Node"}, sel, metric, labels.Everything())
		if apierrors.IsNotFound(err) {
			continue // a server that does not serve this metric
		}
		if err != nil {
			return kubeapi.Explain(err, "get", kubeapi.CustomMetricsGroup, "nodes/"+metric, "")
		}
		for i := range list.Items {
			if row := rows[list.Items[i].DescribedObject.Name]; row != nil {
				row.set(metric, &list.Items[i], row.extra)
			}
		}
	}
	return nil
}

// SortNodes orders rows by key as SortPods orders pods: the busiest first
// for gpu (mean utilization), memory and power (nodes without the value
// last), by name for name.
func SortNodes(rows []NodeRow, key string) {
	sortRows(rows, key, func(r *NodeRow) *Values { return &r.Values }, func(a, b *NodeRow) bool { return a.Name < b.Name })
}
