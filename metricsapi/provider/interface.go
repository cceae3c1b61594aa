// Package provider implements the custom.metrics.k8s.io provider of
// sigs.k8s.io/custom-metrics-apiserver on top of the sample store: it
// resolves the request's label selector to pod (or node) names through a
// pod (or node) lister and turns the store's per-pod (per-node) aggregates
// into MetricValues.
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

// NodeSource answers per-node aggregated values over all of a node's
// devices, held or idle: the store.
type NodeSource interface {
	// NodeValue returns the node's value of m as of now, false if it has
	// none.
	NodeValue(m store.Metric, name string, now time.Time) (store.Value, bool)
	// NodeValues appends to dst the values of m of those named nodes that
	// have one, in the order of names.
	NodeValues(m store.Metric, names []string, now time.Time, dst []store.PodValue) []store.PodValue
}

// NodeLister resolves a label selector to node names.
type NodeLister interface {
	// ListNodes returns the names of the nodes whose labels match
	// selector. It reads a local cache and must not block.
	ListNodes(selector labels.Selector) ([]string, error)
	// HasSynced reports whether the cache is complete.
	HasSynced() bool
}
