package options

import (
	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
)

// Aggregator are the aggregator subcommand's options.
type Aggregator struct {
	Scrape   *ScrapeOptions
	Store    *StoreOptions
	Delegate *DelegateOptions
	Kube     *KubeOptions
	Serving  *ServingOptions
}

// NewAggregator returns the aggregator's defaults: the store is fed once per
// scrape round.
func NewAggregator() *Aggregator {
	s := NewScrapeOptions()
	return &Aggregator{
		Scrape:   s,
		Store:    NewStoreOptions(&s.Interval, "scrape-interval"),
		Delegate: NewDelegateOptions(),
		Kube: NewKubeOptions("Kubeconfig of the cluster to discover agents and resolve pod selectors in (default: in-cluster); " +
			"also the default of --authentication-kubeconfig and --authorization-kubeconfig."),
		Serving: NewServingOptions(),
	}
}

// Flags are the aggregator's flags in help sections, ours before
// custom-metrics-apiserver's.
func (o *Aggregator) Flags() cliflag.NamedFlagSets { return flagSets(o.groups()...) }

// groups are the aggregator's option groups, ours first.
func (o *Aggregator) groups() []group {
	return []group{o.Scrape, o.Store, o.Delegate, o.Kube, o.Serving}
}

// Complete derives the scrape timeout, --stale-after and the delegated
// authentication's kubeconfigs from the flags given, and notes the
// delegation flags given.
func (o *Aggregator) Complete(fs *pflag.FlagSet) {
	o.Scrape.Complete(fs)
	o.Store.Complete(fs)
	o.Delegate.Complete(fs)
	o.Serving.Complete(o.Kube)
}

// Validate reports every invalid flag.
func (o *Aggregator) Validate() []error { return validate(o.groups()...) }
