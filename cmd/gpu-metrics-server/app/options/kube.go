package options

import (
	"errors"
	"fmt"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	cliflag "k8s.io/component-base/cli/flag"
)

// KubeOptions say how to reach kube-apiserver. Every subcommand that talks
// to the API builds its client configuration here.
//
// The servers (agent, aggregator) take --kubeconfig, else the in-cluster
// configuration. The commands a person runs (top, doctor; NewUserKubeOptions)
// resolve the configuration as kubectl does: --kubeconfig, else
// $KUBECONFIG, else ~/.kube/config, else in-cluster, with --context
// choosing the context.
type KubeOptions struct {
	Kubeconfig string
	// Context is the kubeconfig context (user commands only; empty: the
	// current context).
	Context string

	// usage is the --kubeconfig help: what the subcommand uses the API for.
	usage string
	// user: kubectl's resolution rules and --context.
	user bool
}

// NewKubeOptions returns the servers' defaults; usage is the --kubeconfig
// help.
func NewKubeOptions(usage string) *KubeOptions { return &KubeOptions{usage: usage} }

// NewUserKubeOptions returns the options of a command a person runs: kubectl's
// rules and --context.
func NewUserKubeOptions() *KubeOptions {
	return &KubeOptions{
		usage: "Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster, as kubectl).",
		user:  true,
	}
}

// AddFlags registers --kubeconfig (and --context for user commands).
func (o *KubeOptions) AddFlags(fss *cliflag.NamedFlagSets) {
	fs := fss.FlagSet(sectionKube)
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, o.usage)
	if o.user {
		fs.StringVar(&o.Context, "context", o.Context, "The name of the kubeconfig context to use.")
	}
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

// RESTConfig loads the configuration and names the client userAgent. The
// result is the caller's to change.
func (o *KubeOptions) RESTConfig(userAgent string) (*rest.Config, error) {
	var (
		c   *rest.Config
		err error
	)
	switch {
	case o.user:
		c, err = o.userConfig()
		if err != nil {
			return nil, err
		}
	case o.Kubeconfig != "":
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: o.Kubeconfig}
		c, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", o.Kubeconfig, err)
		}
	default:
		c, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig and no in-cluster configuration: %w", err)
		}
	}
	c.UserAgent = userAgent
	return c, nil
}

// userConfig resolves the configuration as kubectl does. clientcmd falls
// back to the in-cluster configuration when no kubeconfig is found.
func (o *KubeOptions) userConfig() (*rest.Config, error) {
	c, err := o.clientConfig().ClientConfig()
	if err != nil {
		return nil, noConfig(err)
	}
	return c, nil
}

// clientConfig is kubectl's resolution of the configuration.
func (o *KubeOptions) clientConfig() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.Kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.Context}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
}

// noConfig words clientcmd's "no configuration" for a person.
func noConfig(err error) error {
	if errors.Is(err, clientcmd.ErrEmptyConfig) || clientcmd.IsEmptyConfig(err) {
		return errors.New("no Kubernetes configuration: no --kubeconfig, $KUBECONFIG or ~/.kube/config, and not running in a cluster")
	}
	return err
}

// Namespace is the namespace a user command works in by default, as
// kubectl's: the context's namespace, the pod's own in a cluster, else
// "default".
func (o *KubeOptions) Namespace() (string, error) {
	ns, _, err := o.clientConfig().Namespace()
	if err != nil {
		return "", noConfig(err)
	}
	return ns, nil
}
