package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

// agentOptions are the agent's flags.
type agentOptions struct {
	Backend              string
	SimGPUs              int
	NodeName             string
	SampleInterval       time.Duration
	ListenAddress        string
	WebConfigFile        string
	PodResourcesSocket   string
	PodResourcesInterval time.Duration
	PodResourcesTimeout  time.Duration
	ResourceNames        []string
}

func newAgentOptions() *agentOptions {
	node := os.Getenv("NODE_NAME")
	if node == "" {
		node, _ = os.Hostname()
	}
	return &agentOptions{
		Backend:              "nvml",
		SimGPUs:              2,
		NodeName:             node,
		SampleInterval:       time.Second,
		ListenAddress:        ":9400",
		PodResourcesSocket:   "/var/lib/kubelet/pod-resources/kubelet.sock",
		PodResourcesInterval: 2 * time.Second,
		PodResourcesTimeout:  time.Second,
	}
}

func (o *agentOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Backend, "backend", o.Backend, "GPU backend: nvml (real GPUs through libnvidia-ml) or sim (simulated GPUs, for demos and tests).")
	fs.IntVar(&o.SimGPUs, "sim-gpus", o.SimGPUs, "Number of simulated GPUs with --backend=sim.")
	fs.StringVar(&o.NodeName, "node-name", o.NodeName, "Node name, exported as the hostname label (default $NODE_NAME, else the host name).")
	fs.DurationVar(&o.SampleInterval, "sample-interval", o.SampleInterval, "Interval between GPU sampling rounds.")
	fs.StringVar(&o.ListenAddress, "web.listen-address", o.ListenAddress, "Address to serve /metrics, /healthz and /readyz on.")
	fs.StringVar(&o.WebConfigFile, "web.config.file", o.WebConfigFile, "Path to an exporter-toolkit web configuration file (TLS, basic auth).")
	fs.StringVar(&o.PodResourcesSocket, "pod-resources-socket", o.PodResourcesSocket, "The kubelet's pod-resources socket; empty disables pod attribution.")
	fs.DurationVar(&o.PodResourcesInterval, "pod-resources-interval", o.PodResourcesInterval, "Interval between refreshes of the GPU-to-pod mapping.")
	fs.DurationVar(&o.PodResourcesTimeout, "pod-resources-timeout", o.PodResourcesTimeout, "Timeout of one call to the kubelet's pod-resources API.")
	fs.StringSliceVar(&o.ResourceNames, "resource-names", o.ResourceNames, "Extra extended-resource names that hold GPUs, besides nvidia.com/gpu, nvidia.com/gpu.shared and nvidia.com/mig-*.")
}

func (o *agentOptions) validate() error {
	switch o.Backend {
	case "nvml", "sim":
	default:
		return flagErrorf("backend", "%q is not a backend: use nvml or sim", o.Backend)
	}
	if o.Backend == "sim" && (o.SimGPUs < 0 || o.SimGPUs > 1024) {
		return flagErrorf("sim-gpus", "%d out of range 0-1024", o.SimGPUs)
	}
	if o.NodeName == "" {
		return flagErrorf("node-name", "empty, and neither $NODE_NAME nor the host name is set")
	}
	if o.SampleInterval <= 0 {
		return flagErrorf("sample-interval", "must be positive, got %v", o.SampleInterval)
	}
	if _, _, err := net.SplitHostPort(o.ListenAddress); err != nil {
		return flagErrorf("web.listen-address", "%v", err)
	}
	if o.WebConfigFile != "" {
		if err := web.Validate(o.WebConfigFile); err != nil {
			return flagErrorf("web.config.file", "%v", err)
		}
	}
	if o.PodResourcesSocket != "" {
		if o.PodResourcesInterval <= 0 {
			return flagErrorf("pod-resources-interval", "must be positive, got %v", o.PodResourcesInterval)
		}
		if o.PodResourcesTimeout <= 0 {
			return flagErrorf("pod-resources-timeout", "must be positive, got %v", o.PodResourcesTimeout)
		}
	}
	for _, n := range o.ResourceNames {
		if err := podmap.ValidateResourceName(n); err != nil {
			return flagErrorf("resource-names", "%v", err)
		}
	}
	return nil
}

// NewAgentCommand is the node agent.
func NewAgentCommand() *cobra.Command {
	o := newAgentOptions()
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Read this node's GPUs and serve them on /metrics, attributed to pods",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			return runAgent(cmd.Context(), o)
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}

// agent is a started agent: its sampler and the HTTP routes it serves.
type agent struct {
	sampler  *collector.Sampler
	registry *prometheus.Registry
	mux      *http.ServeMux
}

// maxSnapshotAge is how old a snapshot may be before /metrics stops serving
// it and /readyz fails.
func (o *agentOptions) maxSnapshotAge() time.Duration { return 3 * o.SampleInterval }

// startAgent opens the backend, starts the pod mapping and the sampler in
// the background (they stop with ctx) and returns the routes. onSample, when
// set, receives every snapshot.
func startAgent(ctx context.Context, o *agentOptions, onSample func(*collector.Snapshot)) (*agent, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versioncollector.NewCollector("gpu_metrics_server"),
	)
	mux := http.NewServeMux()

	var backend collector.Backend
	switch o.Backend {
	case "sim":
		sim := collector.NewSim(o.NodeName, o.SimGPUs)
		mux.Handle("/sim/set", collector.SimHandler(sim))
		backend = sim
		klog.InfoS("Using simulated GPUs", "gpus", o.SimGPUs, "node", o.NodeName)
	default:
		b, err := collector.NewNVML(nvml.New())
		if err != nil {
			return nil, err
		}
		backend = b
	}
	go func() {
		<-ctx.Done()
		if err := backend.Close(); err != nil {
			klog.ErrorS(err, "Closing GPU backend")
		}
	}()

	var owners func() podmap.Lookup
	if o.PodResourcesSocket != "" {
		r, err := podmap.NewRefresher(podmap.Options{
			Socket:             o.PodResourcesSocket,
			Interval:           o.PodResourcesInterval,
			Timeout:            o.PodResourcesTimeout,
			ExtraResourceNames: o.ResourceNames,
			Registerer:         reg,
		})
		if err != nil {
			return nil, fmt.Errorf("pod-resources client: %w", err)
		}
		go r.Run(ctx)
		owners = func() podmap.Lookup { return r.Current() }
	} else {
		klog.InfoS("Pod attribution disabled (--pod-resources-socket is empty)")
	}

	s := collector.NewSampler(backend, collector.SamplerOptions{
		Node:       o.NodeName,
		Interval:   o.SampleInterval,
		Owners:     owners,
		Registerer: reg,
		OnSample:   onSample,
	})
	go s.Run(ctx)

	maxAge := o.maxSnapshotAge()
	mux.Handle("/metrics", collector.MetricsHandler(s, reg, maxAge))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() || s.Fresh(time.Now(), maxAge) == nil {
			http.Error(w, "no fresh GPU sample yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return &agent{sampler: s, registry: reg, mux: mux}, nil
}

func runAgent(ctx context.Context, o *agentOptions) error {
	a, err := startAgent(ctx, o, nil)
	if err != nil {
		return err
	}
	return serveHTTP(ctx, o.ListenAddress, o.WebConfigFile, a.mux, func(addr net.Addr) {
		klog.InfoS("Agent listening", "metrics", fmt.Sprintf("http://%s/metrics", addr))
	})
}

// serveHTTP serves h on addr (TLS and basic auth through an
// exporter-toolkit web config file when given) until ctx ends, then shuts
// down gracefully. listening is called with the bound address.
func serveHTTP(ctx context.Context, addr, webConfig string, h http.Handler, listening func(net.Addr)) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	if listening != nil {
		listening(l.Addr())
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	logger := slog.New(logr.ToSlogHandler(klog.Background()))
	flags := &web.FlagConfig{WebConfigFile: &webConfig}
	errc := make(chan error, 1)
	go func() { errc <- web.Serve(l, srv, flags, logger) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	klog.InfoS("Shutting down HTTP server", "address", l.Addr().String())
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
