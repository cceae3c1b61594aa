package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/provider"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/scrape"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/server"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// aggregatorOptions are the aggregator's flags.
type aggregatorOptions struct {
	Serving    *server.Options
	Kubeconfig string

	AgentNamespace string
	AgentSelector  string
	AgentPort      int
	AgentScheme    string
	AgentURLs      []string

	DCGMNamespace string
	DCGMSelector  string
	DCGMPort      int

	ScrapeInterval  time.Duration
	ScrapeTimeout   time.Duration
	MaxBodyBytes    byteSize
	CAFile          string
	BearerTokenFile string

	Window     time.Duration
	StaleAfter time.Duration
}

func newAggregatorOptions() *aggregatorOptions {
	return &aggregatorOptions{
		Serving:        server.NewOptions(),
		AgentNamespace: os.Getenv("POD_NAMESPACE"),
		AgentSelector:  "app.kubernetes.io/name=gpu-metrics-server,app.kubernetes.io/component=agent",
		AgentPort:      9400,
		AgentScheme:    "http",
		DCGMPort:       9400,
		ScrapeInterval: 2 * time.Second,
		MaxBodyBytes:   4 << 20,
		Window:         15 * time.Second,
	}
}

func (o *aggregatorOptions) addFlags(fs *pflag.FlagSet) {
	o.Serving.AddFlags(fs)
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Kubeconfig of the cluster to discover agents and resolve pod selectors in (default: in-cluster); also the default of --authentication-kubeconfig and --authorization-kubeconfig.")
	fs.StringVar(&o.AgentNamespace, "agent-namespace", o.AgentNamespace, "Namespace of the agent pods to scrape (default $POD_NAMESPACE).")
	fs.StringVar(&o.AgentSelector, "agent-selector", o.AgentSelector, "Label selector of the agent pods to scrape; empty disables agent discovery.")
	fs.IntVar(&o.AgentPort, "agent-port", o.AgentPort, "Port of the agents' /metrics.")
	fs.StringVar(&o.AgentScheme, "agent-scheme", o.AgentScheme, "Scheme of the agents' /metrics: http or https.")
	fs.StringSliceVar(&o.AgentURLs, "agent-urls", o.AgentURLs, "Static exposition URLs to scrape besides (or instead of) discovered agents, comma separated.")
	fs.StringVar(&o.DCGMNamespace, "dcgm-exporter-namespace", o.DCGMNamespace, "Namespace of existing dcgm-exporter pods to scrape too.")
	fs.StringVar(&o.DCGMSelector, "dcgm-exporter-selector", o.DCGMSelector, "Label selector of existing dcgm-exporter pods to scrape too; empty: off.")
	fs.IntVar(&o.DCGMPort, "dcgm-exporter-port", o.DCGMPort, "Port of dcgm-exporter's /metrics (http).")
	fs.DurationVar(&o.ScrapeInterval, "scrape-interval", o.ScrapeInterval, "Interval between scrape rounds.")
	fs.DurationVar(&o.ScrapeTimeout, "scrape-timeout", o.ScrapeTimeout, "Timeout of one target's scrape (default: the interval minus 10%).")
	fs.Var(&o.MaxBodyBytes, "scrape-max-body-bytes", "Largest exposition accepted from one target, e.g. 4MiB.")
	fs.StringVar(&o.CAFile, "scrape-ca-file", o.CAFile, "PEM CA bundle verifying https targets (default: the system roots).")
	fs.StringVar(&o.BearerTokenFile, "scrape-bearer-token-file", o.BearerTokenFile, "File holding a bearer token sent to https targets (never over http); re-read as it rotates.")
	fs.DurationVar(&o.Window, "window", o.Window, "Window of the gpu_utilization mean.")
	fs.DurationVar(&o.StaleAfter, "stale-after", o.StaleAfter, "A pod whose newest sample was received longer ago is not served (default: 3 × the scrape interval).")
}

// complete fills the defaults that depend on other flags.
func (o *aggregatorOptions) complete(fs *pflag.FlagSet) {
	if !fs.Changed("scrape-timeout") {
		o.ScrapeTimeout = o.ScrapeInterval - o.ScrapeInterval/10
	}
	if !fs.Changed("stale-after") {
		o.StaleAfter = 3 * o.ScrapeInterval
	}
	if o.Kubeconfig != "" {
		if o.Serving.Authentication.RemoteKubeConfigFile == "" {
			o.Serving.Authentication.RemoteKubeConfigFile = o.Kubeconfig
		}
		if o.Serving.Authorization.RemoteKubeConfigFile == "" {
			o.Serving.Authorization.RemoteKubeConfigFile = o.Kubeconfig
		}
	}
}

func (o *aggregatorOptions) agentDiscovery() bool {
	return o.AgentNamespace != "" && o.AgentSelector != ""
}

// validate checks every flag; the first invalid one is returned as a
// *FlagError.
func (o *aggregatorOptions) validate() error {
	if errs := o.Serving.Validate(); len(errs) > 0 {
		return servingFlagError(errs[0])
	}
	if o.Kubeconfig != "" {
		if _, err := os.Stat(o.Kubeconfig); err != nil {
			return flagErrorf("kubeconfig", "%v", err)
		}
	}
	if !o.agentDiscovery() && len(o.AgentURLs) == 0 && o.DCGMSelector == "" {
		return flagErrorf("agent-namespace", "nothing to scrape: set --agent-namespace (or $POD_NAMESPACE) with --agent-selector, --agent-urls, or --dcgm-exporter-selector")
	}
	if _, err := labels.Parse(o.AgentSelector); err != nil {
		return flagErrorf("agent-selector", "%v", err)
	}
	if o.AgentPort < 1 || o.AgentPort > 65535 {
		return flagErrorf("agent-port", "%d out of range 1-65535", o.AgentPort)
	}
	if o.AgentScheme != "http" && o.AgentScheme != "https" {
		return flagErrorf("agent-scheme", "%q: use http or https", o.AgentScheme)
	}
	if _, err := scrape.NewStaticTargets(o.AgentURLs); err != nil {
		return flagErrorf("agent-urls", "%v", err)
	}
	if o.DCGMSelector != "" {
		if _, err := labels.Parse(o.DCGMSelector); err != nil {
			return flagErrorf("dcgm-exporter-selector", "%v", err)
		}
		if o.DCGMNamespace == "" {
			return flagErrorf("dcgm-exporter-namespace", "required with --dcgm-exporter-selector")
		}
	}
	if o.DCGMPort < 1 || o.DCGMPort > 65535 {
		return flagErrorf("dcgm-exporter-port", "%d out of range 1-65535", o.DCGMPort)
	}
	if err := checkInterval(o.ScrapeInterval); err != nil {
		return &FlagError{Flag: "scrape-interval", Err: err}
	}
	if o.ScrapeTimeout <= 0 || o.ScrapeTimeout > o.ScrapeInterval {
		return flagErrorf("scrape-timeout", "must be positive and at most --scrape-interval (%v), got %v", o.ScrapeInterval, o.ScrapeTimeout)
	}
	if o.MaxBodyBytes <= 0 {
		return flagErrorf("scrape-max-body-bytes", "must be positive")
	}
	for _, f := range []struct{ flag, path string }{{"scrape-ca-file", o.CAFile}, {"scrape-bearer-token-file", o.BearerTokenFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.ReadFile(f.path); err != nil {
			return flagErrorf(f.flag, "%v", err)
		}
	}
	if o.Window < o.ScrapeInterval {
		return flagErrorf("window", "%v is shorter than --scrape-interval (%v): it would hold no sample at times", o.Window, o.ScrapeInterval)
	}
	if err := o.storeConfig().Validate(); err != nil {
		return &FlagError{Flag: "window", Err: err}
	}
	if o.StaleAfter < 2*o.ScrapeInterval {
		return flagErrorf("stale-after", "%v is shorter than twice --scrape-interval (%v): pods would flap off the API between scrapes", o.StaleAfter, o.ScrapeInterval)
	}
	return nil
}

// flagInMessage finds the flag a serving option's error names.
var flagInMessage = regexp.MustCompile(`--([a-z0-9][a-z0-9-]*)`)

// servingFlagError turns a custom-metrics-apiserver option error into a
// FlagError naming the flag its message mentions.
func servingFlagError(err error) *FlagError {
	flag := "secure-port"
	if m := flagInMessage.FindStringSubmatch(err.Error()); m != nil {
		flag = m[1]
	}
	return &FlagError{Flag: flag, Err: err}
}

func (o *aggregatorOptions) storeConfig() store.Config {
	return store.Config{Window: o.Window, StaleAfter: o.StaleAfter, FeedInterval: o.ScrapeInterval}
}

func (o *aggregatorOptions) scrapeConfig() scrape.Config {
	return scrape.Config{
		Interval: o.ScrapeInterval, Timeout: o.ScrapeTimeout, MaxBodyBytes: int64(o.MaxBodyBytes),
		CAFile: o.CAFile, BearerTokenFile: o.BearerTokenFile,
	}
}

// NewAggregatorCommand is the cluster aggregator: it scrapes the agents and
// serves custom.metrics.k8s.io.
func NewAggregatorCommand() *cobra.Command {
	o := newAggregatorOptions()
	cmd := &cobra.Command{
		Use:   "aggregator",
		Short: "Scrape the agents and serve per-pod GPU metrics on custom.metrics.k8s.io",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.complete(cmd.Flags())
			if err := o.validate(); err != nil {
				return err
			}
			return runAggregator(cmd.Context(), o)
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}

// kubeClientConfig loads --kubeconfig, or the in-cluster configuration.
func kubeClientConfig(path string) (*rest.Config, error) {
	if path != "" {
		return clientcmd.BuildConfigFromFlags("", path)
	}
	c, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("no --kubeconfig and no in-cluster configuration: %w", err)
	}
	return c, nil
}

// runner is something to run in the background until ctx is done.
type runner interface{ Run(ctx context.Context) }

func runAggregator(ctx context.Context, o *aggregatorOptions) error {
	kc, err := kubeClientConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	kc = rest.CopyConfig(kc)
	kc.UserAgent = "gpu-metrics-server/aggregator"
	kube, err := kubernetes.NewForConfig(kc)
	if err != nil {
		return err
	}
	meta, err := metadata.NewForConfig(kc)
	if err != nil {
		return err
	}

	st, err := store.New(o.storeConfig())
	if err != nil {
		return err
	}
	pods, err := provider.NewMetadataPodLister(meta)
	if err != nil {
		return err
	}
	background := []runner{pods}

	static, err := scrape.NewStaticTargets(o.AgentURLs)
	if err != nil {
		return err
	}
	sources := scrape.Sources{static}
	if o.agentDiscovery() {
		d, err := scrape.NewPodDiscovery(kube, scrape.DiscoveryConfig{
			Kind: "agent", Namespace: o.AgentNamespace, Selector: o.AgentSelector, Scheme: o.AgentScheme, Port: o.AgentPort,
		})
		if err != nil {
			return err
		}
		sources = append(sources, d)
		background = append(background, d)
	}
	if o.DCGMSelector != "" {
		d, err := scrape.NewPodDiscovery(kube, scrape.DiscoveryConfig{
			Kind: "dcgm-exporter", Namespace: o.DCGMNamespace, Selector: o.DCGMSelector, Scheme: "http", Port: o.DCGMPort,
		})
		if err != nil {
			return err
		}
		sources = append(sources, d)
		background = append(background, d)
	}
	scraper, err := scrape.New(o.scrapeConfig(), sources, st)
	if err != nil {
		return err
	}
	background = append(background, scraper)

	srv, err := server.New(server.Config{
		Options:     o.Serving,
		Metrics:     st,
		Pods:        pods,
		ReadyChecks: []server.ReadyCheck{{Name: "first-scrape-round", HasSynced: scraper.HasSynced}},
		Collectors:  []prometheus.Collector{store.NewCollector(st), scraper},
	})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, r := range background {
		wg.Go(func() { r.Run(ctx) })
	}
	klog.InfoS("Aggregator starting", "agentNamespace", o.AgentNamespace, "agentSelector", o.AgentSelector,
		"agentURLs", len(o.AgentURLs), "dcgmExporterSelector", o.DCGMSelector,
		"scrapeInterval", o.ScrapeInterval, "window", o.Window, "staleAfter", o.StaleAfter)
	err = srv.Run(ctx)
	cancel()
	wg.Wait()
	return err
}

// byteSize is a pflag value for sizes such as 4MiB, 512KiB, 4Mi, 1MB or
// 1048576.
type byteSize int64

var byteUnits = []struct {
	suffix string
	factor int64
}{
	// Longest suffixes first, so that "MiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30},
	{"kB", 1000}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

func (b *byteSize) String() string {
	v := int64(*b)
	switch {
	case v != 0 && v%(1<<20) == 0:
		return strconv.FormatInt(v>>20, 10) + "MiB"
	case v != 0 && v%(1<<10) == 0:
		return strconv.FormatInt(v>>10, 10) + "KiB"
	}
	return strconv.FormatInt(v, 10)
}

func (b *byteSize) Set(s string) error {
	num, factor := strings.TrimSpace(s), int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, factor = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not a size such as 4MiB", s)
	}
	if n < 0 || n > (1<<62)/factor {
		return errors.New("size out of range")
	}
	*b = byteSize(n * factor)
	return nil
}

func (b *byteSize) Type() string { return "size" }
