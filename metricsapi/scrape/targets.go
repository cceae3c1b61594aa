package scrape

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/kube"
)

// StaticTargets is a fixed list of targets.
type StaticTargets []Target

// NewStaticTargets returns targets for absolute http(s) URLs, each named by
// its URL as given; one without a path is scraped at /metrics.
func NewStaticTargets(urls []string) (StaticTargets, error) {
	t := make(StaticTargets, 0, len(urls))
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, err
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("%q: scheme must be http or https", raw)
		}
		if u.Host == "" {
			return nil, fmt.Errorf("%q: no host", raw)
		}
		if u.Path == "" && u.RawPath == "" {
			// A URL without a path means the exposition's usual one: an
			// agent answers 404 at /.
			u.Path = "/metrics"
		}
		t = append(t, Target{Name: raw, URL: u.String()})
	}
	return t, nil
}

// AskingFor returns the targets with families asked for
// (exposition.FamilyParam) in each URL that has no query of its own: the
// agents serve just those, other expositions ignore the parameter. Names
// stay the URLs as given.
func (s StaticTargets) AskingFor(families []string) StaticTargets {
	q := familyQuery(families)
	out := make(StaticTargets, len(s))
	for i, t := range s {
		if q != "" && !strings.Contains(t.URL, "?") {
			t.URL += "?" + q
		}
		out[i] = t
	}
	return out
}

// familyQuery is the query asking for families ("" for none).
func familyQuery(families []string) string {
	if len(families) == 0 {
		return ""
	}
	return url.Values{exposition.FamilyParam: families}.Encode()
}

// Targets returns the list.
func (s StaticTargets) Targets() []Target { return s }

// HasSynced is always true.
func (s StaticTargets) HasSynced() bool { return true }

// Sources combines target sources.
type Sources []TargetSource

// Targets concatenates the sources' targets.
func (s Sources) Targets() []Target {
	var all []Target
	for _, src := range s {
		all = append(all, src.Targets()...)
	}
	return all
}

// HasSynced reports whether every source has synced.
func (s Sources) HasSynced() bool {
	for _, src := range s {
		if !src.HasSynced() {
			return false
		}
	}
	return true
}

// DiscoveryConfig says which pods to scrape and how.
type DiscoveryConfig struct {
	// Kind prefixes the target names ("agent", "dcgm-exporter"), giving
	// "<kind>/<namespace>/<pod>".
	Kind string
	// Namespace and Selector pick the pods.
	Namespace string
	Selector  string
	// Scheme ("http" or "https") and Port of the exposition; the path is
	// /metrics.
	Scheme string
	Port   int
	// Families, when set, are the only families asked for
	// (exposition.FamilyParam): the agents serve just those; other
	// expositions ignore the parameter.
	Families []string
}

// PodDiscovery lists the running pods matching a selector in a namespace,
// through a pod informer limited to them, and makes them targets.
type PodDiscovery struct {
	cfg      DiscoveryConfig
	path     string // path and query of the targets' URLs
	informer cache.SharedIndexInformer
}

// NewPodDiscovery validates cfg and prepares the informer; Run starts it.
func NewPodDiscovery(client kubernetes.Interface, cfg DiscoveryConfig) (*PodDiscovery, error) {
	if cfg.Namespace == "" {
		return nil, fmt.Errorf("%s discovery: empty namespace", cfg.Kind)
	}
	if cfg.Scheme != "http" && cfg.Scheme != "https" {
		return nil, fmt.Errorf("%s discovery: scheme must be http or https, got %q", cfg.Kind, cfg.Scheme)
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("%s discovery: port %d out of range", cfg.Kind, cfg.Port)
	}
	inf, err := kube.NewPodInformer(client, kube.PodSelection{Namespace: cfg.Namespace, LabelSelector: cfg.Selector})
	if err != nil {
		return nil, fmt.Errorf("%s discovery: %w", cfg.Kind, err)
	}
	path := "/metrics"
	if q := familyQuery(cfg.Families); q != "" {
		path += "?" + q
	}
	return &PodDiscovery{cfg: cfg, path: path, informer: inf}, nil
}

// Run runs the informer until ctx is done.
func (d *PodDiscovery) Run(ctx context.Context) { d.informer.RunWithContext(ctx) }

// HasSynced reports whether the informer has listed the pods once.
func (d *PodDiscovery) HasSynced() bool { return d.informer.HasSynced() }

// Targets returns one target per running pod with an IP.
func (d *PodDiscovery) Targets() []Target {
	objs := d.informer.GetStore().List()
	t := make([]Target, 0, len(objs))
	port := strconv.Itoa(d.cfg.Port)
	for _, o := range objs {
		p, ok := o.(*corev1.Pod)
		if !ok || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			continue
		}
		t = append(t, Target{
			Name: d.cfg.Kind + "/" + p.Namespace + "/" + p.Name,
			URL:  d.cfg.Scheme + "://" + net.JoinHostPort(p.Status.PodIP, port) + d.path,
			Node: p.Spec.NodeName,
		})
	}
	return t
}
