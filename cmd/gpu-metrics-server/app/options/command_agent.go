package options

import (
	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"
)

// Agent are the agent subcommand's options.
type Agent struct {
	Agent *AgentOptions
	Auth  *MetricsAuthOptions
	Kube  *KubeOptions
}

// NewAgent returns the agent's defaults.
func NewAgent() *Agent {
	return &Agent{
		Agent: NewAgentOptions(),
		Auth:  NewMetricsAuthOptions(),
		Kube: NewKubeOptions("Kubeconfig for the pod informer of process attribution " +
			"(default: in-cluster when $KUBERNETES_SERVICE_HOST is set, else none: attribution off with nvml)."),
	}
}

// Flags are the agent's flags in help sections.
func (o *Agent) Flags() cliflag.NamedFlagSets { return flagSets(o.Agent, o.Auth, o.Kube) }

// Complete derives the pod-resources timeout's default.
func (o *Agent) Complete(fs *pflag.FlagSet) { o.Agent.Complete(fs) }

// Validate reports every invalid flag; --authn-authz=kubernetes needs an
// API server to review tokens with.
func (o *Agent) Validate() []error {
	errs := validate(o.Agent, o.Auth, o.Kube)
	if o.Auth.Enabled() && !o.Kube.Available() {
		errs = append(errs, flagErrorf("authn-authz", "%s needs the Kubernetes API: set --kubeconfig or run in a pod", AuthnAuthzKubernetes))
	}
	return errs
}
