package app

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/counters"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

// agentHooks let standalone reuse the node agent: onSample, when set,
// receives every snapshot; owners, when set, replaces the kubelet mapping;
// auth, when set, guards /metrics (--authn-authz).
type agentHooks struct {
	onSample func(*collector.Snapshot)
	owners   func() podmap.Lookup
	auth     *metricsAuth
}

// logCounters says, once at start, which field list the agent serves, the
// fields of it skipped (--collectors-skip-unsupported), and the fields it
// serves beyond it because the aggregator reads them.
func logCounters(c *counters.Set) {
	klog.InfoS("Fields served", "list", c.Source, "fields", c.Fields.String())
	for _, p := range c.Skipped {
		klog.InfoS("Skipping a field of the counters file that the agent cannot read through NVML", "file", p.File, "line", p.Line, "field", p.Field)
	}
	for _, f := range c.Added {
		klog.InfoS("Serving a field the counters file leaves out: the aggregator reads it", "field", f.Name(), "file", c.Source)
	}
}

// runtimeMetricsEvery is how often the agent's go_* and process_* metrics
// are gathered at most: gathering them (the process collector reads five
// /proc files) cost more than the rest of a /metrics body, and a value 10 s
// old serves any Prometheus scrape interval.
const runtimeMetricsEvery = 10 * time.Second

// newNodeAgent is the node agent, shared by agent and standalone: it opens
// the GPU backend and prepares the pod mapping and the sampler. It returns
// the routes to serve (/metrics, /healthz, /readyz, and the simulation's
// /sim/set) and the loops to run in the background; the sampler's loop
// closes the backend when it ends.
func newNodeAgent(o *options.AgentOptions, kube *options.KubeOptions, hooks agentHooks) (http.Handler, []func(context.Context), error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(versioncollector.NewCollector("gpu_metrics_server"))
	// The Go runtime's and the process's metrics, gathered apart and at
	// most every runtimeMetricsEvery (collector.HandlerOptions).
	runtimeReg := prometheus.NewRegistry()
	runtimeReg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	mux := http.NewServeMux()
	var background []func(context.Context)

	attribution, runInformer, err := newAttribution(o, kube)
	if err != nil {
		return nil, nil, err
	}
	if runInformer != nil {
		background = append(background, runInformer)
	}
	logCounters(o.Counters())
	backend, control, err := openBackend(o, attribution != nil, reg)
	if err != nil {
		return nil, nil, err
	}
	if control != nil {
		mux.Handle("/sim/set", control)
	}
	closeBackend := func() {
		if err := backend.Close(); err != nil {
			klog.ErrorS(err, "Closing GPU backend")
		}
	}

	owners := hooks.owners
	switch {
	case owners != nil:
	case o.PodResourcesSocket != "":
		r, err := podmap.NewRefresher(o.PodResources(reg))
		if err != nil {
			closeBackend()
			return nil, nil, fmt.Errorf("pod-resources client: %w", err)
		}
		background = append(background, r.Run)
		owners = func() podmap.Lookup { return r.Current() }
	default:
		klog.InfoS("Pod attribution disabled (--pod-resources-socket is empty)")
	}

	so := o.Sampler(reg)
	so.Owners, so.OnSample, so.Attribution = owners, hooks.onSample, attribution
	s := collector.NewSampler(backend, so)
	background = append(background, func(ctx context.Context) {
		s.Run(ctx)
		// The sampler is the backend's only caller: close the backend (NVML
		// shutdown, GPM buffers) only once its last round has returned.
		closeBackend()
	})

	maxAge := o.MaxSnapshotAge()
	var metrics http.Handler = collector.MetricsHandler(s, reg, collector.HandlerOptions{
		MaxAge: maxAge, Runtime: runtimeReg, RuntimeEvery: runtimeMetricsEvery,
	})
	if hooks.auth != nil {
		hooks.auth.register(reg)
		metrics = hooks.auth.wrap(metrics)
	}
	mux.Handle("/metrics", metrics)
	// Liveness: a sampling loop stuck far longer than readiness tolerates
	// (a hung NVML call) is worth a restart; before the first sample and
	// while rounds come, the process is alive.
	hung := max(30*time.Second, 10*o.SampleInterval)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if s.Ready() && s.Fresh(time.Now(), hung) == nil {
			http.Error(w, fmt.Sprintf("no GPU sample for over %v: the sampling loop is stuck", hung), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() || s.Fresh(time.Now(), maxAge) == nil {
			http.Error(w, "no fresh GPU sample yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	landing, err := landingPage(control != nil)
	if err != nil {
		closeBackend()
		return nil, nil, err
	}
	mux.Handle("/", landing)
	return mux, background, nil
}

// landingPage is the agent's page at / (exporter-toolkit's, as
// node_exporter serves): what it is and links to its endpoints. Other
// paths are not found.
func landingPage(simulated bool) (http.Handler, error) {
	links := []web.LandingLinks{
		{Address: "/metrics", Text: "Metrics", Description: "GPU metrics (dcgm-exporter compatible) and self-metrics"},
		{Address: "/healthz", Text: "Health", Description: "liveness"},
		{Address: "/readyz", Text: "Readiness", Description: "ready once a fresh GPU sample is served"},
	}
	desc := "GPU metrics of this node, attributed to pods"
	if simulated {
		desc += " (simulated GPUs: POST /sim/set from loopback drives them)"
	}
	return web.NewLandingPage(web.LandingConfig{
		Name:        "gpu-metrics-server agent",
		Description: desc,
		Version:     version.Info(),
		Links:       links,
		Profiling:   "false",
	})
}
