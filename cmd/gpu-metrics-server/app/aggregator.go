package app

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/delegate"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/provider"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/scrape"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/server"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// NewAggregatorCommand is the cluster aggregator: it scrapes the agents and
// serves custom.metrics.k8s.io.
func NewAggregatorCommand() *cobra.Command {
	o := options.NewAggregator()
	return newCommand(&cobra.Command{
		Use:   "aggregator",
		Short: "Scrape the agents and serve per-pod GPU metrics on custom.metrics.k8s.io",
	}, o, func(ctx context.Context) error { return runAggregator(ctx, o) })
}

func runAggregator(ctx context.Context, o *options.Aggregator) error {
	kc, err := o.Kube.RESTConfig("gpu-metrics-server/aggregator")
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(kc)
	if err != nil {
		return err
	}
	meta, err := metadata.NewForConfig(kc)
	if err != nil {
		return err
	}

	st, err := store.New(o.Store.Config())
	if err != nil {
		return err
	}
	pods, err := provider.NewMetadataPodLister(meta)
	if err != nil {
		return err
	}
	nodes, err := provider.NewMetadataNodeLister(meta)
	if err != nil {
		return err
	}
	background := []func(context.Context){pods.Run, nodes.Run}

	static, err := o.Scrape.StaticTargets()
	if err != nil {
		return err
	}
	sources := scrape.Sources{static}
	for _, dc := range o.Scrape.Discovery() {
		d, err := scrape.NewPodDiscovery(kube, dc)
		if err != nil {
			return err
		}
		sources = append(sources, d)
		background = append(background, d.Run)
	}
	scraper, err := scrape.New(o.Scrape.Config(), sources, st)
	if err != nil {
		return err
	}
	background = append(background, scraper.Run)

	collectors := []prometheus.Collector{scraper}
	var dlg server.Delegate
	if o.Delegate.Enabled() {
		d, loops, err := newDelegate(o.Delegate, kc, kube)
		if err != nil {
			return err
		}
		dlg = d
		collectors = append(collectors, d)
		background = append(background, loops...)
	}

	srv, err := newAPIServer(o.Serving, st, pods, nodes, server.ReadyCheck{Name: "first-scrape-round", HasSynced: scraper.HasSynced}, dlg, collectors...)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	wait := runInBackground(ctx, background)
	s := o.Scrape
	klog.InfoS("Aggregator starting", "agentNamespace", s.AgentNamespace, "agentSelector", s.AgentSelector,
		"agentURLs", len(s.AgentURLs), "dcgmExporterSelector", s.DCGMSelector,
		"scrapeInterval", s.Interval, "window", o.Store.Window, "staleAfter", o.Store.StaleAfter, "delegateTo", o.Delegate.To)
	err = srv.Run(ctx)
	cancel()
	wait()
	return err
}

// newDelegate builds the delegate of --delegate-to: it presents the
// aggregator's own credentials (kc) unless --delegate-bearer-token-file is
// given, and resolves a Service target through kube. loops are its
// background loops: the Service's informer and the discovery refresh. A
// delegate that cannot be reached is not an error here: it is reported
// down once running.
func newDelegate(o *options.DelegateOptions, kc *rest.Config, kube kubernetes.Interface) (*delegate.Delegator, []func(context.Context), error) {
	cfg, tc, err := o.Config()
	if err != nil {
		return nil, nil, err
	}
	var loops []func(context.Context)
	if svc := cfg.Target.Service; svc != nil {
		tc.Services = delegate.NewServiceResolver(kube, *svc)
		loops = append(loops, tc.Services.Run)
	}
	tc.Credentials = kc
	if tc.InsecureSkipTLSVerify {
		klog.InfoS("The custom metrics delegate's serving certificate is NOT verified (--delegate-insecure-skip-tls-verify): "+
			"whoever answers at its address receives this server's credentials", "delegate", cfg.Target)
	}
	if cfg.Transport, err = delegate.NewTransport(tc); err != nil {
		return nil, nil, err
	}
	d, err := delegate.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	return d, append(loops, d.Run), nil
}
