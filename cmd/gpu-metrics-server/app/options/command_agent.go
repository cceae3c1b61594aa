package options

import (
	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
)

// Agent are the agent subcommand's options.
type Agent struct {
	Agent *AgentOptions
	Kube  *KubeOptions
}

// NewAgent returns the agent's defaults.
func NewAgent() *Agent {
	return &Agent{
		Agent: NewAgentOptions(),
		Kube: NewKubeOptions("Kubeconfig for the pod informer of process attribution " +
			"(default: in-cluster when $KUBERNETES_SERVICE_HOST is set, else none: attribution off with nvml)."),
	}
}

// Flags are the agent's flags in help sections.
func (o *Agent) Flags() cliflag.NamedFlagSets { return flagSets(o.Agent, o.Kube) }

// Complete derives the pod-resources timeout's default.
func (o *Agent) Complete(fs *pflag.FlagSet) { o.Agent.Complete(fs) }

// Validate reports every invalid flag.
func (o *Agent) Validate() []error { return validate(o.Agent, o.Kube) }
