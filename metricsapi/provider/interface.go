// Package provider implements the custom.metrics.k8s.io provider of
// sigs.k8s.io/custom-metrics-apiserver on top of the sample store: it
// resolves the request's label selector to pod names through a pod lister
// and turns the store's per-pod aggregates into MetricValues.
package provider

import (
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// MetricsSource answers per-pod aggregated values: the store.
type MetricsSource interface {
	// PodValue returns the pod's value of m as of now, false if it has none.
	PodValue(m store.Metric, namespace, name string, now time.Time) (store.Value, bool)
	// PodValues appends to dst the values of m of those named pods that
	// have one, in the order of names.
	PodValues(m store.Metric, namespace string, names []string, now time.Time, dst []store.PodValue) []store.PodValue
}

// PodLister resolves a label selector to the names of a namespace's pods.
type PodLister interface {
	// ListPods returns the names of the pods of namespace whose labels
	// match selector. It reads a local cache and must not block.
	ListPods(namespace string, selector labels.Selector) ([]string, error)
	// HasSynced reports whether the cache is complete.
	HasSynced() bool
}
