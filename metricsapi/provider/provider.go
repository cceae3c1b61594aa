package provider

import (
	"context"
	"fmt"
	"math"
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

var podsResource = schema.GroupResource{Resource: "pods"}

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

// ListAllMetrics lists exactly the metrics served: the four pod metrics.
func (p *Provider) ListAllMetrics() []cmprovider.CustomMetricInfo {
	infos := make([]cmprovider.CustomMetricInfo, 0, len(metrics))
	for _, name := range []string{GPUUtilization, GPUMemoryUsedBytes, GPUMemoryUtilization, GPUPowerUsageWatts} {
		infos = append(infos, cmprovider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: name})
	}
	return infos
}

// lookup validates a request and returns its metric.
func lookup(info cmprovider.CustomMetricInfo, metricSelector labels.Selector) (metricDef, error) {
	def, ok := metrics[info.Metric]
	if !ok || info.GroupResource != podsResource || !info.Namespaced {
		return metricDef{}, cmprovider.NewMetricNotFoundError(info.GroupResource, info.Metric)
	}
	if metricSelector != nil && !metricSelector.Empty() {
		return metricDef{}, apierrors.NewBadRequest(fmt.Sprintf(
			"metricLabelSelector %q is not supported: %s is a per-pod value without metric labels; select pods with labelSelector",
			metricSelector.String(), info.Metric))
	}
	return def, nil
}

// GetMetricByName returns one pod's value, or NotFound when the pod has no
// fresh GPU sample.
func (p *Provider) GetMetricByName(_ context.Context, name types.NamespacedName, info cmprovider.CustomMetricInfo, metricSelector labels.Selector) (*custom_metrics.MetricValue, error) {
	start := time.Now()
	def, err := lookup(info, metricSelector)
	if err != nil {
		return nil, err
	}
	defer p.observe(info.Metric, "name", start)
	v, ok := p.src.PodValue(def.metric, name.Namespace, name.Name, p.now())
	if !ok {
		return nil, cmprovider.NewMetricNotFoundForError(info.GroupResource, info.Metric, name.Name)
	}
	mv := metricValue(def, info.Metric, name.Namespace, name.Name, v, new(int64))
	return &mv, nil
}

// GetMetricBySelector returns the values of the namespace's pods matching
// selector; pods without a fresh GPU sample are left out (the HPA treats
// them as missing).
func (p *Provider) GetMetricBySelector(_ context.Context, namespace string, selector labels.Selector, info cmprovider.CustomMetricInfo, metricSelector labels.Selector) (*custom_metrics.MetricValueList, error) {
	start := time.Now()
	def, err := lookup(info, metricSelector)
	if err != nil {
		return nil, err
	}
	defer p.observe(info.Metric, "selector", start)
	names, err := p.pods.ListPods(namespace, selector)
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("listing pods: %w", err))
	}
	values := p.src.PodValues(def.metric, namespace, names, p.now(), make([]store.PodValue, 0, len(names)))
	list := &custom_metrics.MetricValueList{Items: make([]custom_metrics.MetricValue, len(values))}
	windows := make([]int64, len(values)) // one allocation for all the pointers
	for i, v := range values {
		list.Items[i] = metricValue(def, info.Metric, namespace, v.Name, v.Value, &windows[i])
	}
	return list, nil
}

// metricValue builds a pod's MetricValue; window receives windowSeconds.
func metricValue(def metricDef, metric, namespace, name string, v store.Value, window *int64) custom_metrics.MetricValue {
	*window = windowSeconds(v)
	return custom_metrics.MetricValue{
		DescribedObject: custom_metrics.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: namespace, Name: name},
		Metric:          custom_metrics.MetricIdentifier{Name: metric},
		Timestamp:       metav1.NewTime(v.Time),
		WindowSeconds:   window,
		Value:           def.quantity(v.Value),
	}
}

// windowSeconds is the value's windowSeconds: its window, rounded.
func windowSeconds(v store.Value) int64 { return int64(math.Round(v.Window.Seconds())) }
