package options

import (
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/labels"
	cliflag "k8s.io/component-base/cli/flag"
)

// sectionDoctor holds doctor's flags.
const sectionDoctor = "checks"

// DoctorOptions say what doctor checks and where gpu-metrics-server runs.
type DoctorOptions struct {
	Namespace          string
	Pod, HPA           string
	Output             string
	ServerNamespace    string
	AggregatorSelector string
	AgentSelector      string
	StaleAfter         time.Duration
}

// NewDoctorOptions returns the defaults: the chart's namespace and labels.
func NewDoctorOptions() *DoctorOptions {
	return &DoctorOptions{
		ServerNamespace:    "gpu-metrics-server",
		AggregatorSelector: "app.kubernetes.io/name=gpu-metrics-server,app.kubernetes.io/component=aggregator",
		AgentSelector:      defaultAgentSelector,
		StaleAfter:         6 * time.Second,
	}
}

// AddFlags registers doctor's flags.
func (o *DoctorOptions) AddFlags(fss *cliflag.NamedFlagSets) {
	fs := fss.FlagSet(sectionDoctor)
	fs.StringVarP(&o.Namespace, "namespace", "n", o.Namespace, "Namespace of --pod or --hpa, and of the HPAs checked (default: with --pod or --hpa the kubeconfig context's namespace, else every namespace's HPAs).")
	fs.StringVar(&o.Pod, "pod", o.Pod, "Explain why this pod has or lacks each GPU metric.")
	fs.StringVar(&o.HPA, "hpa", o.HPA, "Check this HPA and explain each pod of its target.")
	fs.StringVarP(&o.Output, "output", "o", o.Output, "Output format: json. Default: one line per check.")
	fs.StringVar(&o.ServerNamespace, "server-namespace", o.ServerNamespace, "Namespace gpu-metrics-server runs in.")
	fs.StringVar(&o.AggregatorSelector, "aggregator-selector", o.AggregatorSelector, "Label selector of the aggregator pods.")
	fs.StringVar(&o.AgentSelector, "agent-selector", o.AgentSelector, "Label selector of the agent pods.")
	fs.DurationVar(&o.StaleAfter, "stale-after", o.StaleAfter, "An agent's newest sample older than this is stale (the aggregator's --stale-after).")
}

// Validate checks the output format, the selectors, and that --pod and
// --hpa are not both given.
func (o *DoctorOptions) Validate() []error {
	var errs errorList
	if o.Output != "" && o.Output != "json" {
		errs.add(flagErrorf("output", "%q is not json", o.Output))
	}
	if o.Pod != "" && o.HPA != "" {
		errs.add(flagErrorf("hpa", "give --pod or --hpa, not both"))
	}
	for flag, s := range map[string]string{"aggregator-selector": o.AggregatorSelector, "agent-selector": o.AgentSelector} {
		if _, err := labels.Parse(s); err != nil {
			errs.add(&FlagError{Flag: flag, Err: err})
		}
	}
	if o.ServerNamespace == "" {
		errs.add(flagErrorf("server-namespace", "must not be empty"))
	}
	if o.StaleAfter <= 0 {
		errs.add(flagErrorf("stale-after", "%v is not positive", o.StaleAfter))
	}
	return errs
}

// Selectors are the parsed --aggregator-selector and --agent-selector
// (Validate has checked them).
func (o *DoctorOptions) Selectors() (aggregator, agent labels.Selector) {
	aggregator, _ = labels.Parse(o.AggregatorSelector)
	agent, _ = labels.Parse(o.AgentSelector)
	return aggregator, agent
}

// Doctor are the doctor subcommand's options.
type Doctor struct {
	Doctor *DoctorOptions
	Kube   *KubeOptions
}

// NewDoctor returns doctor's defaults.
func NewDoctor() *Doctor { return &Doctor{Doctor: NewDoctorOptions(), Kube: NewUserKubeOptions()} }

// Flags are doctor's flags, then the Kubernetes API's.
func (o *Doctor) Flags() cliflag.NamedFlagSets { return flagSets(o.Doctor, o.Kube) }

// Complete has nothing to derive.
func (o *Doctor) Complete(*pflag.FlagSet) {}

// Validate reports every invalid flag.
func (o *Doctor) Validate() []error { return validate(o.Doctor, o.Kube) }
