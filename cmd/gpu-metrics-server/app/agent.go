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

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/nvml"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/sim"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/cgroup"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/podinfo"
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
	SimMIG               []int
	ProcessAttribution   bool
	HostProc             string
	Kubeconfig           string
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
		ProcessAttribution:   true,
		HostProc:             "/proc",
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
	fs.IntSliceVar(&o.SimMIG, "sim-mig", o.SimMIG, "Indexes of simulated GPUs in MIG mode (each split 3g.40gb + 2g.20gb + 1g.10gb + 1g.10gb), with --backend=sim.")
	fs.BoolVar(&o.ProcessAttribution, "process-attribution", o.ProcessAttribution, "Attribute shared GPUs to pods per process (needs the host's PIDs: hostPID: true or --host-proc, and read access to pods); false gives every pod holding a GPU the GPU's values.")
	fs.StringVar(&o.HostProc, "host-proc", o.HostProc, "The host's /proc, where the PIDs of GPU processes are looked up (/proc with hostPID: true).")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Kubeconfig for the pod informer of process attribution (default: in-cluster when $KUBERNETES_SERVICE_HOST is set, else none: attribution off with nvml).")
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
	if err := checkInterval(o.SampleInterval); err != nil {
		return &FlagError{Flag: "sample-interval", Err: err}
	}
	if err := checkListenAddress(o.ListenAddress); err != nil {
		return &FlagError{Flag: "web.listen-address", Err: err}
	}
	if o.WebConfigFile != "" {
		if err := web.Validate(o.WebConfigFile); err != nil {
			return flagErrorf("web.config.file", "%v", err)
		}
	}
	if o.PodResourcesSocket != "" {
		if err := checkInterval(o.PodResourcesInterval); err != nil {
			return &FlagError{Flag: "pod-resources-interval", Err: err}
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
	for _, i := range o.SimMIG {
		if o.Backend != "sim" {
			return flagErrorf("sim-mig", "only with --backend=sim")
		}
		if i < 0 || i >= o.SimGPUs {
			return flagErrorf("sim-mig", "GPU %d out of range: %d simulated GPUs", i, o.SimGPUs)
		}
	}
	if o.ProcessAttribution && o.Backend == "nvml" {
		if fi, err := os.Stat(o.HostProc); err != nil || !fi.IsDir() {
			return flagErrorf("host-proc", "%q is not a readable directory", o.HostProc)
		}
	}
	if o.Kubeconfig != "" {
		if _, err := os.Stat(o.Kubeconfig); err != nil {
			return flagErrorf("kubeconfig", "%v", err)
		}
	}
	return nil
}

// kubeConfig is --kubeconfig, else the in-cluster configuration when
// running in a pod, else nil: no Kubernetes API access.
func (o *agentOptions) kubeConfig() (*rest.Config, error) {
	if o.Kubeconfig == "" && os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		return nil, nil
	}
	return kubeClientConfig(o.Kubeconfig)
}

// attribution sets up per-process attribution of shared GPUs (nil: off):
// the pod informer when the agent can reach the API server, and with nvml
// the cgroup resolver on --host-proc. The simulation's processes name
// their pods, so it needs neither.
func (o *agentOptions) attribution(ctx context.Context) (*collector.Attribution, error) {
	if !o.ProcessAttribution {
		klog.InfoS("Per-process attribution off (--process-attribution=false): every pod holding a GPU is given the GPU's values")
		return nil, nil
	}
	var a collector.Attribution
	cfg, err := o.kubeConfig()
	switch {
	case err != nil && o.Kubeconfig != "":
		return nil, fmt.Errorf("--kubeconfig: %w", err)
	case err != nil:
		klog.ErrorS(err, "No in-cluster Kubernetes configuration for the pod informer")
	case cfg != nil:
		cfg = rest.CopyConfig(cfg)
		cfg.UserAgent = "gpu-metrics-server/agent"
		client, err := metadata.NewForConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("pod informer client: %w", err)
		}
		inf, err := podinfo.NewInformer(client, o.NodeName)
		if err != nil {
			return nil, err
		}
		go inf.Run(ctx)
		a.Pods = inf
	}
	if o.Backend == "sim" {
		if a.Pods == nil {
			klog.InfoS("Simulated pod processes are matched by namespace and name; no pod_uid labels without Kubernetes API access")
		}
		return &a, nil
	}
	if a.Pods == nil {
		klog.InfoS("Per-process attribution off: no Kubernetes API access (not in a cluster and no --kubeconfig) to learn pod UIDs; every pod holding a GPU is given the GPU's values")
		return nil, nil
	}
	a.Resolver = cgroup.NewResolver(o.HostProc)
	klog.InfoS("Per-process attribution on", "hostProc", o.HostProc, "node", o.NodeName)
	return &a, nil
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

// agentHooks let the standalone mode reuse the agent: onSample, when set,
// receives every snapshot; owners, when set, replaces the kubelet mapping.
type agentHooks struct {
	onSample func(*collector.Snapshot)
	owners   func() podmap.Lookup
}

// startAgent opens the backend, starts the pod mapping and the sampler in
// the background (they stop with ctx) and returns the routes.
func startAgent(ctx context.Context, o *agentOptions, hooks agentHooks) (*agent, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versioncollector.NewCollector("gpu_metrics_server"),
	)
	mux := http.NewServeMux()

	attribution, err := o.attribution(ctx)
	if err != nil {
		return nil, err
	}
	var backend collector.Backend
	switch o.Backend {
	case "sim":
		simulated, err := sim.New(o.NodeName, o.SimGPUs, o.SimMIG)
		if err != nil {
			return nil, err
		}
		mux.Handle("/sim/set", sim.Handler(simulated))
		backend = simulated
		klog.InfoS("Using simulated GPUs", "gpus", o.SimGPUs, "mig", o.SimMIG, "node", o.NodeName)
	default:
		b, err := nvml.New(nvml.Options{Processes: attribution != nil})
		if err != nil {
			return nil, err
		}
		backend = b
	}
	closeBackend := func() {
		if err := backend.Close(); err != nil {
			klog.ErrorS(err, "Closing GPU backend")
		}
	}

	owners := hooks.owners
	if owners == nil && o.PodResourcesSocket != "" {
		r, err := podmap.NewRefresher(podmap.Options{
			Socket:             o.PodResourcesSocket,
			Interval:           o.PodResourcesInterval,
			Timeout:            o.PodResourcesTimeout,
			ExtraResourceNames: o.ResourceNames,
			Registerer:         reg,
		})
		if err != nil {
			closeBackend()
			return nil, fmt.Errorf("pod-resources client: %w", err)
		}
		go r.Run(ctx)
		owners = func() podmap.Lookup { return r.Current() }
	} else if owners == nil {
		klog.InfoS("Pod attribution disabled (--pod-resources-socket is empty)")
	}

	s := collector.NewSampler(backend, collector.SamplerOptions{
		Node:        o.NodeName,
		Interval:    o.SampleInterval,
		Owners:      owners,
		Registerer:  reg,
		OnSample:    hooks.onSample,
		Attribution: attribution,
	})
	go func() {
		s.Run(ctx)
		// The sampler is the backend's only caller: close the backend (NVML
		// shutdown, GPM buffers) only once its last round has returned.
		closeBackend()
	}()

	maxAge := o.maxSnapshotAge()
	mux.Handle("/metrics", collector.MetricsHandler(s, reg, maxAge))
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
	return &agent{sampler: s, registry: reg, mux: mux}, nil
}

func runAgent(ctx context.Context, o *agentOptions) error {
	a, err := startAgent(ctx, o, agentHooks{})
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
