package app

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/provider"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/server"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// newAPIServer builds the custom metrics API server of aggregator and
// standalone over the store st: pods and nodes resolve selectors (the
// node metrics are served from st's node samples), ready is the
// readiness condition besides the pod lister's, dlg (nil: none) takes the
// metrics the store does not serve, and the store's self-metrics are
// served with collectors. The serving configuration is built now (a free
// port bound where --secure-port=0 picks one).
func newAPIServer(serving *options.ServingOptions, st *store.Store, pods provider.PodLister, nodes provider.NodeLister, ready server.ReadyCheck, dlg server.Delegate, collectors ...prometheus.Collector) (*server.Server, error) {
	opts, err := serving.Config()
	if err != nil {
		return nil, err
	}
	return server.New(server.Config{
		Options:     opts,
		Metrics:     st,
		Pods:        pods,
		NodeMetrics: st,
		Nodes:       nodes,
		ReadyChecks: []server.ReadyCheck{ready},
		Collectors:  append([]prometheus.Collector{store.NewCollector(st)}, collectors...),
		Delegate:    dlg,
	})
}
