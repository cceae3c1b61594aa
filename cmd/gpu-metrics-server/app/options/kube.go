package options

import (
	"fmt"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	cliflag "k8s.io/component-base/cli/flag"
)

// KubeOptions say how to reach kube-apiserver: --kubeconfig, else the
// in-cluster configuration. Every subcommand that talks to the API builds
// its client configuration here.
type KubeOptions struct {
	Kubeconfig string

	// usage is the --kubeconfig help: what the subcommand uses the API for.
	usage string
}

// NewKubeOptions returns the defaults; usage is the --kubeconfig help.
func NewKubeOptions(usage string) *KubeOptions { return &KubeOptions{usage: usage} }

// AddFlags registers --kubeconfig.
func (o *KubeOptions) AddFlags(fss *cliflag.NamedFlagSets) {
	fss.FlagSet(sectionKube).StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, o.usage)
}

// Validate checks that a given kubeconfig exists.
func (o *KubeOptions) Validate() []error {
	if o.Kubeconfig != "" {
		if _, err := os.Stat(o.Kubeconfig); err != nil {
			return []error{flagErrorf("kubeconfig", "%v", err)}
		}
	}
	return nil
}

// inCluster reports whether the process runs in a pod, where the in-cluster
// configuration applies.
func inCluster() bool { return os.Getenv("KUBERNETES_SERVICE_HOST") != "" }

// Available reports whether there is an API server to reach at all: a
// --kubeconfig, or the pod's own cluster.
func (o *KubeOptions) Available() bool { return o.Kubeconfig != "" || inCluster() }

// RESTConfig loads --kubeconfig, else the in-cluster configuration, and
// names the client userAgent. The result is the caller's to change.
func (o *KubeOptions) RESTConfig(userAgent string) (*rest.Config, error) {
	var (
		c   *rest.Config
		err error
	)
	if o.Kubeconfig != "" {
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: o.Kubeconfig}
		// A context flag (for commands run by a person) would set
		// CurrentContext in these overrides.
		c, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", o.Kubeconfig, err)
		}
	} else {
		c, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig and no in-cluster configuration: %w", err)
		}
	}
	c.UserAgent = userAgent
	return c, nil
}
