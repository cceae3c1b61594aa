package options

import (
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	cliflag "k8s.io/component-base/cli/flag"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/scrape"
)

// ScrapeOptions are the aggregator's targets (discovered agents, existing
// dcgm-exporter pods, static URLs) and how it scrapes them.
type ScrapeOptions struct {
	AgentNamespace string
	AgentSelector  string
	AgentPort      int
	AgentScheme    string
	AgentURLs      []string

	DCGMNamespace string
	DCGMSelector  string
	DCGMPort      int

	Interval        time.Duration
	Timeout         time.Duration
	MaxBodyBytes    ByteSize
	CAFile          string
	BearerTokenFile string
	ServerName      string

	timeoutSet bool // --scrape-timeout given, not derived
}

// NewScrapeOptions returns the defaults; the agents are looked for in
// $POD_NAMESPACE.
func NewScrapeOptions() *ScrapeOptions {
	return &ScrapeOptions{
		AgentNamespace: os.Getenv("POD_NAMESPACE"),
		AgentSelector:  defaultAgentSelector,
		AgentPort:      9400,
		AgentScheme:    "http",
		DCGMPort:       9400,
		Interval:       2 * time.Second,
		MaxBodyBytes:   4 << 20,
	}
}

// AddFlags registers the target flags and the scrape flags.
func (o *ScrapeOptions) AddFlags(fss *cliflag.NamedFlagSets) {
	fs := fss.FlagSet(sectionTargets)
	fs.StringVar(&o.AgentNamespace, "agent-namespace", o.AgentNamespace, "Namespace of the agent pods to scrape (default $POD_NAMESPACE).")
	fs.StringVar(&o.AgentSelector, "agent-selector", o.AgentSelector, "Label selector of the agent pods to scrape; empty disables agent discovery.")
	fs.IntVar(&o.AgentPort, "agent-port", o.AgentPort, "Port of the agents' /metrics.")
	fs.StringVar(&o.AgentScheme, "agent-scheme", o.AgentScheme, "Scheme of the agents' /metrics: http or https.")
	fs.StringSliceVar(&o.AgentURLs, "agent-urls", o.AgentURLs, "Static exposition URLs to scrape besides (or instead of) discovered agents, comma separated; one without a path is scraped at /metrics.")
	fs.StringVar(&o.DCGMNamespace, "dcgm-exporter-namespace", o.DCGMNamespace, "Namespace of existing dcgm-exporter pods to scrape too.")
	fs.StringVar(&o.DCGMSelector, "dcgm-exporter-selector", o.DCGMSelector, "Label selector of existing dcgm-exporter pods to scrape too; empty: off.")
	fs.IntVar(&o.DCGMPort, "dcgm-exporter-port", o.DCGMPort, "Port of dcgm-exporter's /metrics (http).")

	fs = fss.FlagSet(sectionScrape)
	fs.DurationVar(&o.Interval, "scrape-interval", o.Interval, "Interval between scrape rounds.")
	fs.DurationVar(&o.Timeout, "scrape-timeout", o.Timeout, "Timeout of one target's scrape (default: the interval minus 10%).")
	fs.Var(&o.MaxBodyBytes, "scrape-max-body-bytes", "Largest exposition accepted from one target, e.g. 4MiB.")
	fs.StringVar(&o.CAFile, "scrape-ca-file", o.CAFile, "PEM CA bundle verifying https targets (default: the system roots); re-read every minute, so a rotated CA needs no restart.")
	fs.StringVar(&o.BearerTokenFile, "scrape-bearer-token-file", o.BearerTokenFile, "File holding a bearer token sent to https targets (never over http); re-read as it rotates.")
	fs.StringVar(&o.ServerName, "scrape-server-name", o.ServerName, "DNS name the https targets' certificates are verified against instead of the address dialed (agent pods are scraped by pod IP), as Prometheus's tls_config.server_name.")
}

// Complete derives --scrape-timeout from the interval unless given.
func (o *ScrapeOptions) Complete(fs *pflag.FlagSet) {
	o.timeoutSet = fs.Changed("scrape-timeout")
	if !o.timeoutSet {
		o.Timeout = o.Interval - o.Interval/10
	}
}

// agentDiscovery reports whether agent pods are discovered.
func (o *ScrapeOptions) agentDiscovery() bool {
	return o.AgentNamespace != "" && o.AgentSelector != ""
}

// Validate reports every invalid target or scrape flag.
func (o *ScrapeOptions) Validate() []error {
	var errs errorList
	if !o.agentDiscovery() && len(o.AgentURLs) == 0 && o.DCGMSelector == "" {
		errs.add(flagErrorf("agent-namespace", "nothing to scrape: set --agent-namespace (or $POD_NAMESPACE) with --agent-selector, --agent-urls, or --dcgm-exporter-selector"))
	}
	if _, err := labels.Parse(o.AgentSelector); err != nil {
		errs.add(flagErrorf("agent-selector", "%v", err))
	}
	errs.add(checkPort("agent-port", o.AgentPort))
	if o.AgentScheme != "http" && o.AgentScheme != "https" {
		errs.add(flagErrorf("agent-scheme", "%q: use http or https", o.AgentScheme))
	}
	if _, err := scrape.NewStaticTargets(o.AgentURLs); err != nil {
		errs.add(flagErrorf("agent-urls", "%v", err))
	}
	if o.DCGMSelector != "" {
		if _, err := labels.Parse(o.DCGMSelector); err != nil {
			errs.add(flagErrorf("dcgm-exporter-selector", "%v", err))
		}
		if o.DCGMNamespace == "" {
			errs.add(flagErrorf("dcgm-exporter-namespace", "required with --dcgm-exporter-selector"))
		}
	}
	errs.add(checkPort("dcgm-exporter-port", o.DCGMPort))

	intervalErr := checkInterval(o.Interval)
	if intervalErr != nil {
		errs.add(&FlagError{Flag: "scrape-interval", Err: intervalErr})
	}
	switch {
	case !o.timeoutSet && intervalErr != nil:
		// Derived from an invalid interval: nothing of its own to report.
	case o.Timeout <= 0:
		errs.add(flagErrorf("scrape-timeout", "must be positive, got %v", o.Timeout))
	case intervalErr == nil && o.Timeout > o.Interval:
		errs.add(flagErrorf("scrape-timeout", "must be at most --scrape-interval (%v), got %v", o.Interval, o.Timeout))
	}
	if o.MaxBodyBytes <= 0 {
		errs.add(flagErrorf("scrape-max-body-bytes", "must be positive"))
	}
	errs.add(o.checkServerName())
	for _, f := range []struct{ flag, path string }{{"scrape-ca-file", o.CAFile}, {"scrape-bearer-token-file", o.BearerTokenFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.ReadFile(f.path); err != nil {
			errs.add(flagErrorf(f.flag, "%v", err))
		}
	}
	return errs
}

// checkServerName validates --scrape-server-name: a DNS name (an agent's
// certificate names the agents, not the pod IPs they are dialed by), and
// some target scraped over https for it to verify.
func (o *ScrapeOptions) checkServerName() error {
	name := o.ServerName
	if name == "" {
		return nil
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return flagErrorf("scrape-server-name", "%q is an IP address; name the DNS name the targets' certificates carry", name)
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return flagErrorf("scrape-server-name", "%q is not a DNS name: %s", name, strings.Join(errs, "; "))
	}
	https := o.agentDiscovery() && o.AgentScheme == "https"
	for _, u := range o.AgentURLs {
		https = https || strings.HasPrefix(strings.ToLower(u), "https://")
	}
	if !https {
		return flagErrorf("scrape-server-name", "applies to https targets, and none is scraped over https: set --agent-scheme=https or give https --agent-urls")
	}
	return nil
}

// Config is the scraper's configuration.
func (o *ScrapeOptions) Config() scrape.Config {
	return scrape.Config{
		// Each target starts at its own offset over the whole interval.
		Interval: o.Interval, Timeout: o.Timeout, Spread: o.Interval, MaxBodyBytes: int64(o.MaxBodyBytes),
		CAFile: o.CAFile, BearerTokenFile: o.BearerTokenFile, ServerName: o.ServerName,
	}
}

// StaticTargets are the --agent-urls.
func (o *ScrapeOptions) StaticTargets() (scrape.StaticTargets, error) {
	t, err := scrape.NewStaticTargets(o.AgentURLs)
	if err != nil {
		return nil, err
	}
	// Only what the aggregator reads, where the URL asks for nothing else.
	return t.AskingFor(exposition.ReadFamilies()), nil
}

// Discovery says which pods to discover: the agents, existing
// dcgm-exporters, both or neither.
func (o *ScrapeOptions) Discovery() []scrape.DiscoveryConfig {
	var d []scrape.DiscoveryConfig
	if o.agentDiscovery() {
		d = append(d, scrape.DiscoveryConfig{
			Kind: "agent", Namespace: o.AgentNamespace, Selector: o.AgentSelector, Scheme: o.AgentScheme, Port: o.AgentPort,
			// Only what the aggregator reads: a fifth of the body.
			Families: exposition.ReadFamilies(),
		})
	}
	if o.DCGMSelector != "" {
		d = append(d, scrape.DiscoveryConfig{
			Kind: "dcgm-exporter", Namespace: o.DCGMNamespace, Selector: o.DCGMSelector, Scheme: "http", Port: o.DCGMPort,
		})
	}
	return d
}

// defaultAgentSelector selects the chart's agent pods.
const defaultAgentSelector = "app.kubernetes.io/name=gpu-metrics-server,app.kubernetes.io/component=agent"
