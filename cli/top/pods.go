// Package top lists the pods holding GPUs, and the GPU nodes, with the
// values the custom metrics API serves for them, as `kubectl top pods` and
// `kubectl top nodes` do for CPU.
package top

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/kubeapi"
)

// The pod metrics the aggregator serves (metricsapi/provider's names).
const (
	metricUtilization       = "gpu_utilization"
	metricMemoryUsed        = "gpu_memory_used_bytes"
	metricMemoryUtilization = "gpu_memory_utilization"
	metricPower             = "gpu_power_usage_watts"
)

// Sort keys of --sort-by.
const (
	SortGPU    = "gpu"
	SortMemory = "memory"
	SortPower  = "power"
	SortName   = "name"
)

// SortKeys are the accepted --sort-by values.
var SortKeys = []string{SortGPU, SortMemory, SortPower, SortName}

// PodQuery says which pods to list.
type PodQuery struct {
	// Namespace is the namespace listed unless AllNamespaces.
	Namespace     string
	AllNamespaces bool
	// Selector selects pods by label; nil or empty: all.
	Selector labels.Selector
}

// PodRow is one pod: its GPUs from its spec and the values the API serves.
// A value the API does not serve is nil.
type PodRow struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Node      string `json:"node,omitempty"`
	// GPUs is the number of GPU resources the pod's containers hold.
	GPUs int `json:"gpus"`
	// Sharing is "shared" (nvidia.com/gpu.shared), "mig" (nvidia.com/mig-*)
	// or empty (whole GPUs, or a sharing the pod spec does not show).
	Sharing string `json:"sharing,omitempty"`
	// Resources are the extended resource names holding the GPUs.
	Resources []string `json:"resources,omitempty"`

	Values
}

// Values are the values the API serves for a pod or a node; one it does
// not serve is nil.
type Values struct {
	UtilizationPercent       *float64 `json:"utilizationPercent,omitempty"`
	MemoryUsedBytes          *float64 `json:"memoryUsedBytes,omitempty"`
	MemoryUtilizationPercent *float64 `json:"memoryUtilizationPercent,omitempty"`
	PowerWatts               *float64 `json:"powerWatts,omitempty"`
	// Timestamp is the time of the newest sample served; nil: none.
	Timestamp     *metav1.Time `json:"timestamp,omitempty"`
	WindowSeconds *int64       `json:"windowSeconds,omitempty"`
}

// served reports whether the API serves any of the values.
func (v *Values) served() bool {
	return v.UtilizationPercent != nil || v.MemoryUsedBytes != nil || v.MemoryUtilizationPercent != nil || v.PowerWatts != nil
}

// set records mv, a value of metric, into the field it fills: the one
// extra returns for a metric that is none of the four (nil: drop it).
// The timestamp is the newest of the values'.
func (v *Values) set(metric string, mv *cmv1beta2.MetricValue, extra func(string) **float64) {
	x := float64(mv.Value.MilliValue()) / 1000 // exact for the API's milli-units
	var field **float64
	switch metric {
	case metricUtilization:
		field = &v.UtilizationPercent
		if mv.WindowSeconds != nil {
			w := *mv.WindowSeconds
			v.WindowSeconds = &w
		}
	case metricMemoryUsed:
		field = &v.MemoryUsedBytes
	case metricMemoryUtilization:
		field = &v.MemoryUtilizationPercent
	case metricPower:
		field = &v.PowerWatts
	default:
		if extra != nil {
			field = extra(metric)
		}
	}
	if field == nil {
		return
	}
	*field = &x
	if t := mv.Timestamp; v.Timestamp == nil || t.After(v.Timestamp.Time) {
		v.Timestamp = &t
	}
}

// gpuSpec fills the row's GPU count, sharing and resources from the pod's
// container limits (extended resources have requests equal to limits).
func gpuSpec(row *PodRow, pod *corev1.Pod) {
	seen := map[string]bool{}
	for _, c := range pod.Spec.Containers {
		for name, q := range c.Resources.Limits {
			if !kubeapi.IsGPUResource(name) {
				continue
			}
			row.GPUs += int(q.Value())
			n := string(name)
			switch {
			case strings.HasPrefix(n, "nvidia.com/mig-"):
				row.Sharing = "mig"
			case n == "nvidia.com/gpu.shared" && row.Sharing == "":
				row.Sharing = "shared"
			}
			if !seen[n] {
				seen[n] = true
				row.Resources = append(row.Resources, n)
			}
		}
	}
	sort.Strings(row.Resources)
}

// holdsGPU reports whether a pod that is running or about to holds GPUs.
func holdsGPU(pod *corev1.Pod) bool {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return false
	}
	for _, c := range pod.Spec.Containers {
		for name := range c.Resources.Limits {
			if kubeapi.IsGPUResource(name) {
				return true
			}
		}
	}
	return false
}

// Pods lists the pods q selects that hold GPUs or have GPU values served,
// each with its values, sorted by namespace and name. Errors are worded for
// a person (kubeapi.Explain); no custom metrics API is
// kubeapi.ErrNoCustomMetricsAPI.
func Pods(ctx context.Context, c *kubeapi.Clients, q PodQuery) ([]PodRow, error) {
	if err := kubeapi.CheckCustomMetricsAPI(c.Discovery); err != nil {
		return nil, err
	}
	sel := q.Selector
	if sel == nil {
		sel = labels.Everything()
	}
	ns := q.Namespace
	if q.AllNamespaces {
		ns = metav1.NamespaceAll
	}
	list, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, kubeapi.Explain(err, "list", "", "pods", ns)
	}
	rows := map[string]*PodRow{}
	all := map[string]*corev1.Pod{}
	var namespaces []string
	nsSeen := map[string]bool{}
	addNS := func(n string) {
		if !nsSeen[n] {
			nsSeen[n] = true
			namespaces = append(namespaces, n)
		}
	}
	if !q.AllNamespaces {
		addNS(q.Namespace)
	}
	for i := range list.Items {
		pod := &list.Items[i]
		all[pod.Namespace+"/"+pod.Name] = pod
		if !holdsGPU(pod) {
			continue
		}
		row := &PodRow{Namespace: pod.Namespace, Name: pod.Name, Node: pod.Spec.NodeName}
		gpuSpec(row, pod)
		rows[pod.Namespace+"/"+pod.Name] = row
		addNS(pod.Namespace)
	}
	sort.Strings(namespaces)
	for _, n := range namespaces {
		if err := addValues(c, n, sel, rows, all); err != nil {
			return nil, err
		}
	}
	out := make([]PodRow, 0, len(rows))
	for _, r := range rows {
		if r.GPUs > 0 || r.served() {
			out = append(out, *r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return lessName(&out[i], &out[j]) })
	return out, nil
}

// addValues reads the four pod metrics of namespace ns's pods matching sel
// into rows, adding a row for a pod served whose GPU resource is not
// recognised (its node from all, the pods listed).
func addValues(c *kubeapi.Clients, ns string, sel labels.Selector, rows map[string]*PodRow, all map[string]*corev1.Pod) error {
	for _, metric := range []string{metricUtilization, metricMemoryUsed, metricMemoryUtilization, metricPower} {
		list, err := c.Metrics.NamespacedMetrics(ns).GetForObjects(schema.GroupKind{Kind: "Pod"}, sel, metric, labels.Everything())
		if apierrors.IsNotFound(err) {
			continue // a server that does not serve this metric
		}
		if err != nil {
			return kubeapi.Explain(err, "get", kubeapi.CustomMetricsGroup, "pods/"+metric, ns)
		}
		for i := range list.Items {
			mv := &list.Items[i]
			key := ns + "/" + mv.DescribedObject.Name
			row, ok := rows[key]
			if !ok {
				row = &PodRow{Namespace: ns, Name: mv.DescribedObject.Name}
				if pod, ok := all[key]; ok {
					row.Node = pod.Spec.NodeName
				}
				rows[key] = row
			}
			row.set(metric, mv, nil)
		}
	}
	return nil
}

func lessName(a, b *PodRow) bool {
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// SortPods orders rows by key: the busiest first for gpu, memory and power
// (pods without the value last), by namespace and name for name. Ties keep
// namespace and name order.
func SortPods(rows []PodRow, key string) {
	sortRows(rows, key, func(r *PodRow) *Values { return &r.Values }, lessName)
}

// sortRows orders rows by key (see SortPods); values gives a row's values,
// less the name order.
func sortRows[R any](rows []R, key string, values func(*R) *Values, less func(a, b *R) bool) {
	var value func(*R) *float64
	switch key {
	case SortGPU:
		value = func(r *R) *float64 { return values(r).UtilizationPercent }
	case SortMemory:
		value = func(r *R) *float64 { return values(r).MemoryUsedBytes }
	case SortPower:
		value = func(r *R) *float64 { return values(r).PowerWatts }
	default:
		sort.SliceStable(rows, func(i, j int) bool { return less(&rows[i], &rows[j]) })
		return
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := value(&rows[i]), value(&rows[j])
		switch {
		case a != nil && b != nil && *a != *b:
			return *a > *b
		case (a == nil) != (b == nil):
			return a != nil
		}
		return less(&rows[i], &rows[j])
	})
}

// CheckSortKey validates a --sort-by value.
func CheckSortKey(key string) error {
	for _, k := range SortKeys {
		if key == k {
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", key, strings.Join(SortKeys, ", "))
}

// age is how old a sample of time t is at now, never negative.
func age(t *metav1.Time, now time.Time) (time.Duration, bool) {
	if t == nil {
		return 0, false
	}
	d := now.Sub(t.Time)
	if d < 0 {
		d = 0
	}
	return d, true
}
