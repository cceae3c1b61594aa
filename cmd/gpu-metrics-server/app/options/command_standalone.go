package options

import (
	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
)

// Standalone are the standalone subcommand's options: the agent's, the
// simulated pods, and the aggregator's store and serving options.
type Standalone struct {
	Agent   *AgentOptions
	SimPods *SimPodsOptions
	Store   *StoreOptions
	Kube    *KubeOptions
	Serving *ServingOptions
}

// NewStandalone returns standalone's defaults: loopback addresses, the store
// fed once per sampling round.
func NewStandalone() *Standalone {
	a := NewAgentOptions()
	a.ListenAddress = "127.0.0.1:9400"
	return &Standalone{
		Agent:   a,
		SimPods: NewSimPodsOptions(a),
		Store:   NewStoreOptions(&a.SampleInterval, "sample-interval"),
		Kube: NewKubeOptions("Kubeconfig of the cluster whose pods hold the GPUs: the pod informer of process attribution and of pod selectors, " +
			"and the default of --authentication-kubeconfig and --authorization-kubeconfig (default: in-cluster; " +
			"none with --backend=sim outside a cluster: the custom metrics API is then served on loopback without authentication)."),
		Serving: NewLoopbackServingOptions(),
	}
}

// Flags are standalone's flags in help sections.
func (o *Standalone) Flags() cliflag.NamedFlagSets { return flagSets(o.groups()...) }

// groups are standalone's option groups, ours first.
func (o *Standalone) groups() []group {
	return []group{o.Agent, o.SimPods, o.Store, o.Kube, o.Serving}
}

// Complete derives --stale-after, the simulated pods and the serving mode:
// with --backend=sim and no Kubernetes API, the custom metrics API is
// served on loopback without authentication (the demo).
func (o *Standalone) Complete(fs *pflag.FlagSet) {
	o.Agent.Complete(fs)
	o.Store.Complete(fs)
	o.SimPods.Complete(fs)
	o.Serving.InsecureLoopback = o.Agent.Backend == "sim" && !o.Kube.Available()
	o.Serving.Complete(o.Kube)
}

// Validate reports every invalid flag.
func (o *Standalone) Validate() []error {
	errs := validate(o.groups()...)
	if o.Agent.Backend == "nvml" && !o.Kube.Available() {
		errs = append(errs, flagErrorf("kubeconfig", "required with --backend=nvml outside a cluster (pod selectors and authentication need a kube-apiserver)"))
	}
	return errs
}
