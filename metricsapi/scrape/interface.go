// Package scrape reads the agents' (and optionally dcgm-exporter's)
// Prometheus exposition every interval, in parallel, and hands the samples
// of each target to the store. It also finds the targets: agent pods
// through the Kubernetes API, or a static list of URLs.
package scrape

import (
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// Appender takes the samples of one scrape of one target: the store.
type Appender interface {
	// Append stores the samples of one scrape of the target, received at
	// at. A series the target leaves out expires in the store.
	Append(source string, at time.Time, samples []store.Sample) (store.AppendResult, error)
	// AppendNodes stores the node samples of the same scrape (every
	// device of the target's node, held or idle).
	AppendNodes(source string, at time.Time, samples []store.Sample) (store.AppendResult, error)
}

// Target is one endpoint to scrape.
type Target struct {
	// Name identifies the target across rounds: the source name in the
	// store and the target label of the self-metrics.
	Name string
	// URL is the exposition's full URL.
	URL string
	// Node is the node the target runs on (a discovered pod's node), the
	// node its devices are on; "" (a static URL) leaves the node to the
	// series' Hostname or hostname label.
	Node string
}

// TargetSource lists the targets of a scrape round.
type TargetSource interface {
	// Targets returns the current targets. It is called once per round and
	// must not block.
	Targets() []Target
	// HasSynced reports whether the list is complete (discovery has done
	// its initial listing); the first round waits for it.
	HasSynced() bool
}
