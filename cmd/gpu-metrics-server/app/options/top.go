package options

import (
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/labels"
	cliflag "k8s.io/component-base/cli/flag"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/top"
)

// sectionTop holds the flags of `top`'s listing.
const sectionTop = "listing"

// TopOptions say which pods or nodes `top` lists and how it prints them.
type TopOptions struct {
	Namespace     string
	AllNamespaces bool
	Selector      string
	SortBy        string
	NoHeaders     bool
	Output        string
	Watch         bool
	Interval      time.Duration

	// pods: the namespace and sort flags apply (top pods, not top nodes).
	pods bool
}

// NewTopOptions returns the defaults of `top pods` (pods) or `top nodes`.
func NewTopOptions(pods bool) *TopOptions {
	return &TopOptions{SortBy: top.SortName, Interval: 2 * time.Second, pods: pods}
}

// AddFlags registers the listing flags, with kubectl's names and shorthands.
func (o *TopOptions) AddFlags(fss *cliflag.NamedFlagSets) {
	fs := fss.FlagSet(sectionTop)
	if o.pods {
		fs.StringVarP(&o.Namespace, "namespace", "n", o.Namespace, "The namespace to list (default: the kubeconfig context's namespace).")
		fs.BoolVarP(&o.AllNamespaces, "all-namespaces", "A", o.AllNamespaces, "List the pods of every namespace.")
	}
	fs.StringVarP(&o.Selector, "selector", "l", o.Selector, "Label selector (=, ==, !=, in, notin, exists) of the objects listed.")
	fs.StringVar(&o.SortBy, "sort-by", o.SortBy, "Order of the rows: "+strings.Join(top.SortKeys, ", ")+" (gpu, memory, power: highest first).")
	fs.BoolVar(&o.NoHeaders, "no-headers", o.NoHeaders, "Leave the header row out.")
	fs.StringVarP(&o.Output, "output", "o", o.Output, "Output format: wide (more columns) or json. Default: a table.")
	fs.BoolVarP(&o.Watch, "watch", "w", o.Watch, "Print again every --interval: in place with a utilization bar per row on a terminal, as plain lines otherwise.")
	fs.DurationVar(&o.Interval, "interval", o.Interval, "Refresh period of --watch.")
}

// Complete has nothing to derive: the default namespace comes from the
// kubeconfig when the command runs.
func (o *TopOptions) Complete(*pflag.FlagSet) {}

// ParsedSelector is --selector parsed (Validate has checked it).
func (o *TopOptions) ParsedSelector() labels.Selector {
	s, err := labels.Parse(o.Selector)
	if err != nil {
		return labels.Everything()
	}
	return s
}

// Validate checks the sort key, the output format, the selector and the
// interval.
func (o *TopOptions) Validate() []error {
	var errs errorList
	if err := top.CheckSortKey(o.SortBy); err != nil {
		errs.add(&FlagError{Flag: "sort-by", Err: err})
	}
	switch o.Output {
	case top.OutputTable, top.OutputWide, top.OutputJSON:
	default:
		errs.add(flagErrorf("output", "%q is not one of wide, json", o.Output))
	}
	if _, err := labels.Parse(o.Selector); err != nil {
		errs.add(&FlagError{Flag: "selector", Err: err})
	}
	if err := checkInterval(o.Interval); err != nil {
		errs.add(&FlagError{Flag: "interval", Err: err})
	}
	return errs
}

// Top are the options of `top pods` and `top nodes`.
type Top struct {
	Kube *KubeOptions
	Top  *TopOptions
}

// NewTop returns the defaults of `top pods` (pods) or `top nodes`.
func NewTop(pods bool) *Top {
	return &Top{Kube: NewUserKubeOptions(), Top: NewTopOptions(pods)}
}

// Flags are the listing flags, then the Kubernetes API's.
func (o *Top) Flags() cliflag.NamedFlagSets { return flagSets(o.Top, o.Kube) }

// Complete fills nothing: see TopOptions.Complete.
func (o *Top) Complete(fs *pflag.FlagSet) { o.Top.Complete(fs) }

// Validate reports every invalid flag.
func (o *Top) Validate() []error { return validate(o.Top, o.Kube) }
