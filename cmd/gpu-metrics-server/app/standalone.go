package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/sim"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/provider"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/scrape"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/server"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

// standaloneOptions: the agent's flags, the store's and the API server's,
// and the simulated pods.
type standaloneOptions struct {
	// agent carries --kubeconfig too: in standalone it also serves pod
	// selectors and delegated authentication (none with --backend=sim
	// outside a cluster: loopback only, without authentication).
	agent      *agentOptions
	Serving    *server.Options
	Window     time.Duration
	StaleAfter time.Duration
	SimPods    []string

	simPods []simPod
}

// simPod is one --sim-pods entry.
type simPod struct {
	namespace, name string
	labels          map[string]string
}

func newStandaloneOptions() *standaloneOptions {
	a := newAgentOptions()
	a.ListenAddress = "127.0.0.1:9400"
	s := server.NewOptions()
	s.SecureServing.BindAddress = net.ParseIP("127.0.0.1")
	return &standaloneOptions{agent: a, Serving: s, Window: 15 * time.Second}
}

func (o *standaloneOptions) addFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	o.agent.addFlags(fs)
	o.Serving.AddFlags(fs)
	fs.DurationVar(&o.Window, "window", o.Window, "Window of the gpu_utilization mean.")
	fs.DurationVar(&o.StaleAfter, "stale-after", o.StaleAfter, "A pod whose newest sample is older is not served (default: 3 × --sample-interval).")
	fs.StringSliceVar(&o.SimPods, "sim-pods", o.SimPods, "With --backend=sim: simulated pods namespace/name holding the simulated GPUs in order (round robin, time-sliced when there are more pods than GPUs); each is labelled app=<name without a trailing -N>.")
}

var trailingIndex = regexp.MustCompile(`-[0-9]+$`)

func (o *standaloneOptions) complete(cmd *cobra.Command) {
	if !cmd.Flags().Changed("stale-after") {
		o.StaleAfter = 3 * o.agent.SampleInterval
	}
	if o.agent.Kubeconfig == "" && o.agent.Backend == "sim" && os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		o.Serving.InsecureLoopback = true
	}
	if o.agent.Kubeconfig != "" {
		if o.Serving.Authentication.RemoteKubeConfigFile == "" {
			o.Serving.Authentication.RemoteKubeConfigFile = o.agent.Kubeconfig
		}
		if o.Serving.Authorization.RemoteKubeConfigFile == "" {
			o.Serving.Authorization.RemoteKubeConfigFile = o.agent.Kubeconfig
		}
	}
	if o.Serving.InsecureLoopback {
		// No kube-apiserver to delegate to: skip the lookups the
		// delegating options would otherwise make at start.
		o.Serving.Authentication.SkipInClusterLookup = true
		o.Serving.Authentication.RemoteKubeConfigFileOptional = true
		o.Serving.Authorization.RemoteKubeConfigFileOptional = true
	}
}

func (o *standaloneOptions) validate() error {
	if err := o.agent.validate(); err != nil {
		return err
	}
	if ss := o.Serving.SecureServing; ss.BindPort == 0 && ss.Listener == nil {
		// --secure-port=0: any free port (the demo). Bind it now, so that
		// validation and the printed URLs see the real port.
		l, err := net.Listen("tcp", net.JoinHostPort(ss.BindAddress.String(), "0"))
		if err != nil {
			return flagErrorf("secure-port", "binding a free port: %v", err)
		}
		ss.Listener = l
		ss.BindPort = l.Addr().(*net.TCPAddr).Port
	}
	if errs := o.Serving.Validate(); len(errs) > 0 {
		return servingFlagError(errs[0])
	}
	if o.Window < o.agent.SampleInterval {
		return flagErrorf("window", "%v is shorter than --sample-interval (%v)", o.Window, o.agent.SampleInterval)
	}
	if err := o.storeConfig().Validate(); err != nil {
		return &FlagError{Flag: "window", Err: err}
	}
	if o.StaleAfter < 2*o.agent.SampleInterval {
		return flagErrorf("stale-after", "%v is shorter than twice --sample-interval (%v): pods would flap off the API between samples", o.StaleAfter, o.agent.SampleInterval)
	}
	if len(o.SimPods) > 0 && o.agent.Backend != "sim" {
		return flagErrorf("sim-pods", "only with --backend=sim")
	}
	if o.agent.Kubeconfig == "" && !o.Serving.InsecureLoopback && os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		return flagErrorf("kubeconfig", "required with --backend=nvml outside a cluster (pod selectors and authentication need a kube-apiserver)")
	}
	if o.agent.Kubeconfig != "" {
		if _, err := os.Stat(o.agent.Kubeconfig); err != nil {
			return flagErrorf("kubeconfig", "%v", err)
		}
	}
	o.simPods = nil
	seen := map[string]bool{}
	for _, p := range o.SimPods {
		ns, name, ok := strings.Cut(p, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return flagErrorf("sim-pods", "%q: want namespace/name", p)
		}
		if seen[p] {
			return flagErrorf("sim-pods", "%q listed twice", p)
		}
		seen[p] = true
		o.simPods = append(o.simPods, simPod{namespace: ns, name: name,
			labels: map[string]string{"app": trailingIndex.ReplaceAllString(name, "")}})
	}
	if len(o.simPods) > 0 && o.agent.SimGPUs == 0 {
		return flagErrorf("sim-pods", "no simulated GPUs to hold (--sim-gpus=0)")
	}
	return nil
}

// storeConfig: the store is fed once per sampling round.
func (o *standaloneOptions) storeConfig() store.Config {
	return store.Config{Window: o.Window, StaleAfter: o.StaleAfter, FeedInterval: o.agent.SampleInterval}
}

// NewStandaloneCommand runs agent and aggregator in one process.
func NewStandaloneCommand() *cobra.Command {
	o := newStandaloneOptions()
	cmd := &cobra.Command{
		Use:   "standalone",
		Short: "Agent and aggregator in one process: one node, or the demo with --backend=sim",
		Long: `standalone samples this node's GPUs and serves them both on /metrics (as the
agent does) and on custom.metrics.k8s.io (as the aggregator does), feeding
its own samples to the store directly. With --backend=sim and no kubeconfig
it is a self-contained demo: simulated pods (--sim-pods) hold the simulated
GPUs, and the custom metrics API answers on 127.0.0.1 without authentication.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.complete(cmd)
			if err := o.validate(); err != nil {
				return err
			}
			return runStandalone(cmd.Context(), o)
		},
	}
	o.addFlags(cmd)
	return cmd
}

func runStandalone(ctx context.Context, o *standaloneOptions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	st, err := store.New(o.storeConfig())
	if err != nil {
		return err
	}
	var pods provider.PodLister
	var background []func(context.Context)
	if o.Serving.InsecureLoopback {
		klog.InfoS("Serving the custom metrics API WITHOUT authentication: simulated GPUs, loopback only", "bindAddress", o.Serving.SecureServing.BindAddress.String())
		static := make([]provider.StaticPod, len(o.simPods))
		for i, p := range o.simPods {
			static[i] = provider.StaticPod{Namespace: p.namespace, Name: p.name, Labels: p.labels}
		}
		pods = provider.NewStaticPodLister(static)
	} else {
		kc, err := kubeClientConfig(o.agent.Kubeconfig)
		if err != nil {
			return err
		}
		kc = rest.CopyConfig(kc)
		kc.UserAgent = "gpu-metrics-server/standalone"
		meta, err := metadata.NewForConfig(kc)
		if err != nil {
			return err
		}
		l, err := provider.NewMetadataPodLister(meta)
		if err != nil {
			return err
		}
		pods = l
		background = append(background, l.Run)
	}

	agentOpts := *o.agent
	var owners func() podmap.Lookup
	if len(o.simPods) > 0 {
		m := podmap.NewMapping(simPodResources(o.simPods, agentOpts.NodeName, agentOpts.SimGPUs))
		owners = func() podmap.Lookup { return m }
		agentOpts.PodResourcesSocket = ""
	}
	// The store is fed the agent's own exposition of each snapshot, read
	// by the aggregator's parser: one set of rules (per-pod shares, MIG
	// activity, units) whichever way the samples arrive. The exposition
	// is rendered once per snapshot and cached for /metrics too.
	parser := scrape.NewParser()
	feed := func(snap *collector.Snapshot) {
		samples, _, err := parser.Parse(snap.Exposition(), time.Now())
		if err == nil {
			_, err = st.Append("standalone", time.Now(), samples)
		}
		if err != nil {
			klog.ErrorS(err, "Feeding the store")
		}
	}
	a, err := startAgent(ctx, &agentOpts, agentHooks{onSample: feed, owners: owners})
	if err != nil {
		return err
	}

	srv, err := server.New(server.Config{
		Options:     o.Serving,
		Metrics:     st,
		Pods:        pods,
		ReadyChecks: []server.ReadyCheck{{Name: "first-sample", HasSynced: st.HasSynced}},
		Collectors:  []prometheus.Collector{store.NewCollector(st)},
	})
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	for _, run := range background {
		wg.Go(func() { run(ctx) })
	}
	errc := make(chan error, 2)
	wg.Go(func() {
		errc <- serveHTTP(ctx, agentOpts.ListenAddress, agentOpts.WebConfigFile, a.mux, func(addr net.Addr) {
			klog.InfoS("Agent listening", "metrics", fmt.Sprintf("http://%s/metrics", addr))
			printDemoHints(o, addr)
		})
	})
	wg.Go(func() { errc <- srv.Run(ctx) })
	err = <-errc
	cancel()
	wg.Wait()
	return err
}

// simPodResources is the pod-resources answer a kubelet would give for the
// simulated pods: pod i holds GPU i mod gpus, as a time-slicing replica when
// pods outnumber GPUs.
func simPodResources(pods []simPod, node string, gpus int) *podresourcesv1.ListPodResourcesResponse {
	resp := &podresourcesv1.ListPodResourcesResponse{}
	for i, p := range pods {
		id := sim.UUID(node, i%gpus)
		if len(pods) > gpus {
			id = fmt.Sprintf("%s::%d", id, i/gpus)
		}
		resp.PodResources = append(resp.PodResources, &podresourcesv1.PodResources{
			Namespace: p.namespace, Name: p.name,
			Containers: []*podresourcesv1.ContainerResources{{
				Name:    "main",
				Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{id}}},
			}},
		})
	}
	return resp
}

// printDemoHints tells a person where to look.
func printDemoHints(o *standaloneOptions, agentAddr net.Addr) {
	scheme := "https"
	api := fmt.Sprintf("%s://%s/apis/custom.metrics.k8s.io/v1beta2", scheme,
		net.JoinHostPort(o.Serving.SecureServing.BindAddress.String(), fmt.Sprint(o.Serving.SecureServing.BindPort)))
	fmt.Printf("\ngpu-metrics-server standalone is running.\n\n")
	fmt.Printf("  GPU metrics (Prometheus text):  curl -s http://%s/metrics | grep DCGM_FI_DEV_GPU_UTIL\n", agentAddr)
	if len(o.simPods) > 0 {
		p := o.simPods[0]
		fmt.Printf("  HPA's view (custom metrics):    curl -sk '%s/namespaces/%s/pods/*/gpu_utilization?labelSelector=app%%3D%s'\n", api, p.namespace, p.labels["app"])
	} else {
		fmt.Printf("  Metrics served:                 curl -sk %s\n", api)
	}
	if o.agent.Backend == "sim" {
		fmt.Printf("  Drive a simulated GPU:          curl -s -X POST 'http://%s/sim/set?gpu=0&utilization=90'\n", agentAddr)
		fmt.Printf("                                  (gpu_utilization is the mean over the last %v)\n", o.Window)
	}
	fmt.Printf("\nCtrl-C stops it.\n\n")
}
