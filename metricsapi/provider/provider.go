package provider

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	cmmetrics "sigs.k8s.io/custom-metrics-apiserver/pkg/apiserver/metrics"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// The metric names served for pods.
const (
	GPUUtilization       = "gpu_utilization"
	GPUMemoryUsedBytes   = "gpu_memory_used_bytes"
	GPUMemoryUtilization = "gpu_memory_utilization"
	GPUPowerUsageWatts   = "gpu_power_usage_watts"
)

// The metric names served for nodes only (besides the pods' names above,
// which a node serves over all of its devices, held or idle).
const (
	// GPUUtilizationMax is the busiest device's window mean.
	GPUUtilizationMax = "gpu_utilization_max"
	// GPUCount is the number of the node's GPUs with a fresh reading.
	GPUCount = "gpu_count"
)

// metricDef maps a served metric to the store's aggregate and its unit.
type metricDef struct {
	metric   store.Metric
	quantity func(float64) resource.Quantity
}

// milli keeps three decimals: percent and watts.
func milli(v float64) resource.Quantity {
	return *resource.NewMilliQuantity(int64(math.Round(v*1000)), resource.DecimalSI)
}

func byteCount(v float64) resource.Quantity {
	return *resource.NewQuantity(int64(math.Round(v)), resource.BinarySI)
}

var metrics = map[string]metricDef{
	GPUUtilization:       {store.Utilization, milli},
	GPUMemoryUsedBytes:   {store.MemoryUsedBytes, byteCount},
	GPUMemoryUtilization: {store.MemoryUtilization, milli},
	GPUPowerUsageWatts:   {store.PowerWatts, milli},
}

func count(v float64) resource.Quantity {
	return *resource.NewQuantity(int64(math.Round(v)), resource.DecimalSI)
}

// nodeMetrics are the metrics served for nodes: the aggregates over all of
// a node's devices, held or idle.
var nodeMetrics = map[string]metricDef{
	GPUUtilization:       {store.Utilization, milli},
	GPUUtilizationMax:    {store.UtilizationMax, milli},
	GPUMemoryUsedBytes:   {store.MemoryUsedBytes, byteCount},
	GPUMemoryUtilization: {store.MemoryUtilization, milli},
	GPUPowerUsageWatts:   {store.PowerWatts, milli},
	GPUCount:             {store.Devices, count},
}

// nodeMetricNames lists nodeMetrics in the order ListAllMetrics gives.
var nodeMetricNames = []string{GPUUtilization, GPUUtilizationMax, GPUMemoryUsedBytes, GPUMemoryUtilization, GPUPowerUsageWatts, GPUCount}

var (
	podsResource  = schema.GroupResource{Resource: "pods"}
	nodesResource = schema.GroupResource{Resource: "nodes"}
)

// Provider serves the pods' GPU metrics. It only reads the store and the
// pod lister's cache: no request waits on a scrape or the Kubernetes API.
type Provider struct {
	src   MetricsSource
	pods  PodLister
	now   func() time.Time
	query *prometheus.HistogramVec

	// answers are the encoded answers kept (see Answer).
	answers answers
	// freshness is the library's freshness metric, which Answer observes
	// as the library's handler does.
	freshness cmmetrics.FreshnessObserver

	// nodeSrc and nodes serve the node metrics; nil: none (see
	// ServeNodes).
	nodeSrc NodeSource
	nodes   NodeLister
}

var _ cmprovider.CustomMetricsProvider = (*Provider)(nil)

// New returns a Provider of src's values, resolving selectors with pods.
func New(src MetricsSource, pods PodLister) *Provider {
	return &Provider{
		src:       src,
		pods:      pods,
		now:       time.Now,
		query:     newQueryDuration(),
		freshness: cmmetrics.NewFreshnessObserver(custom_metrics.GroupName),
	}
}

// ServeNodes makes p serve the node metrics too (root-scoped, as
// nodes/<name>/<metric> and nodes/*/<metric>?labelSelector=...): src's
// values, selectors resolved with nodes. Call it before p serves.
func (p *Provider) ServeNodes(src NodeSource, nodes NodeLister) {
	p.nodeSrc, p.nodes = src, nodes
}

// ListAllMetrics lists exactly the metrics served: the four pod metrics,
// and the node metrics when p serves them.
func (p *Provider) ListAllMetrics() []cmprovider.CustomMetricInfo {
	infos := make([]cmprovider.CustomMetricInfo, 0, len(metrics)+len(nodeMetrics))
	for _, name := range []string{GPUUtilization, GPUMemoryUsedBytes, GPUMemoryUtilization, GPUPowerUsageWatts} {
		infos = append(infos, cmprovider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: name})
	}
	if p.nodeSrc != nil {
		for _, name := range nodeMetricNames {
			infos = append(infos, cmprovider.CustomMetricInfo{GroupResource: nodesResource, Metric: name})
		}
	}
	return infos
}

// lookup validates a request and returns its metric.
func (p *Provider) lookup(info cmprovider.CustomMetricInfo, metricSelector labels.Selector) (metricDef, error) {
	var (
		def metricDef
		ok  bool
	)
	switch {
	case info.GroupResource == podsResource && info.Namespaced:
		def, ok = metrics[info.Metric]
	case info.GroupResource == nodesResource && !info.Namespaced && p.nodeSrc != nil:
		def, ok = nodeMetrics[info.Metric]
	}
	if !ok {
		return metricDef{}, cmprovider.NewMetricNotFoundError(info.GroupResource, info.Metric)
	}
	if metricSelector != nil && !metricSelector.Empty() {
		return metricDef{}, apierrors.NewBadRequest(fmt.Sprintf(
			"metricLabelSelector %q is not supported: %s is a per-%s value without metric labels; select %s with labelSelector",
			metricSelector.String(), info.Metric, strings.TrimSuffix(info.GroupResource.Resource, "s"), info.GroupResource.Resource))
	}
	return def, nil
}

// GetMetricByName returns one pod's (or node's) value, or NotFound when it
// has no fresh GPU sample.
func (p *Provider) GetMetricByName(_ context.Context, name types.NamespacedName, info cmprovider.CustomMetricInfo, metricSelector labels.Selector) (*custom_metrics.MetricValue, error) {
	start := time.Now()
	def, err := p.lookup(info, metricSelector)
	if err != nil {
		return nil, err
	}
	defer p.observe(info.Metric, "name", start)
	var (
		v    store.Value
		ok   bool
		kind = "Pod"
	)
	if info.GroupResource == nodesResource {
		v, ok = p.nodeSrc.NodeValue(def.metric, name.Name, p.now())
		kind = "Node"
	} else {
		v, ok = p.src.PodValue(def.metric, name.Namespace, name.Name, p.now())
	}
	if !ok {
		return nil, cmprovider.NewMetricNotFoundForError(info.GroupResource, info.Metric, name.Name)
	}
	mv := metricValue(def, kind, info.Metric, name.Namespace, name.Name, v, new(int64))
	return &mv, nil
}

// GetMetricBySelector returns the values of the namespace's pods matching
// selector; pods without a fresh GPU sample are left out (the HPA treats
// them as missing).
func (p *Provider) GetMetricBySelector(_ context.Context, namespace string, selector labels.Selector, info cmprovider.CustomMetricInfo, metricSelector labels.Selector) (*custom_metrics.MetricValueList, error) {
	start := time.Now()
	def, err := p.lookup(info, metricSelector)
	if err != nil {
		return nil, err
	}
	defer p.observe(info.Metric, "selector", start)
	if info.GroupResource == nodesResource {
		return p.nodesBySelector(def, info.Metric, selector)
	}
	names, err := p.pods.ListPods(namespace, selector)
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("listing pods: %w", err))
	}
	values := p.src.PodValues(def.metric, namespace, names, p.now(), make([]store.PodValue, 0, len(names)))
	list := &custom_metrics.MetricValueList{Items: make([]custom_metrics.MetricValue, len(values))}
	windows := make([]int64, len(values)) // one allocation for all the pointers
	for i, v := range values {
		list.Items[i] = metricValue(def, "Pod", info.Metric, namespace, v.Name, v.Value, &windows[i])
	}
	return list, nil
}

// nodesBySelector returns the values of the nodes matching selector;
// nodes without a fresh GPU sample (no GPU, no agent) are left out.
func (p *Provider) nodesBySelector(def metricDef, metric string, selector labels.Selector) (*custom_metrics.MetricValueList, error) {
	names, err := p.nodes.ListNodes(selector)
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("listing nodes: %w", err))
	}
	values := p.nodeSrc.NodeValues(def.metric, names, p.now(), make([]store.PodValue, 0, len(names)))
	list := &custom_metrics.MetricValueList{Items: make([]custom_metrics.MetricValue, len(values))}
	windows := make([]int64, len(values))
	for i, v := range values {
		list.Items[i] = metricValue(def, "Node", metric, "", v.Name, v.Value, &windows[i])
	}
	return list, nil
}

// metricValue builds the MetricValue of an object of kind (Pod, Node);
// window receives windowSeconds.
func metricValue(def metricDef, kind, metric, namespace, name string, v store.Value, window *int64) custom_metrics.MetricValue {
	*window = windowSeconds(v)
	return custom_metrics.MetricValue{
		DescribedObject: custom_metrics.ObjectReference{Kind: kind, APIVersion: "v1", Namespace: namespace, Name: name},
		Metric:          custom_metrics.MetricIdentifier{Name: metric},
		Timestamp:       metav1.NewTime(v.Time),
		WindowSeconds:   window,
		Value:           def.quantity(v.Value),
	}
}

// windowSeconds is the value's windowSeconds: its window, rounded.
func windowSeconds(v store.Value) int64 { return int64(math.Round(v.Window.Seconds())) }
