package options

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/provider"
)

// SimPodsOptions are the simulated pods holding the simulated GPUs, in
// place of the kubelet's answer (standalone's demo).
type SimPodsOptions struct {
	Pods []string

	agent *AgentOptions // the backend and the simulated GPUs
}

// NewSimPodsOptions returns the defaults for the simulated GPUs of agent.
func NewSimPodsOptions(agent *AgentOptions) *SimPodsOptions { return &SimPodsOptions{agent: agent} }

// AddFlags registers --sim-pods beside the other simulation flags.
func (o *SimPodsOptions) AddFlags(fss *cliflag.NamedFlagSets) {
	fss.FlagSet(sectionSimulation).StringSliceVar(&o.Pods, "sim-pods", o.Pods,
		"Simulated pods namespace/name holding the simulated GPUs in order (round robin, time-sliced when there are more pods than GPUs); each is labelled app=<name without a trailing -N>. "+
			"Default, when the kubelet's --pod-resources-socket is not there: the demo's pods, demo/gpu-app-<i> for each simulated GPU i.")
}

// Complete gives the simulated GPUs the demo's pods when --sim-pods is not
// given and no kubelet answers on --pod-resources-socket (nothing else
// would hold them).
func (o *SimPodsOptions) Complete(fs *pflag.FlagSet) {
	a := o.agent
	if a.Backend != "sim" || a.SimGPUs < 0 || a.SimGPUs > maxSimGPUs || fs.Changed("sim-pods") || kubeletSocketPresent(a.PodResourcesSocket) {
		return
	}
	o.Pods = DemoPods(a.SimGPUs)
}

// kubeletSocketPresent reports whether path names an existing socket.
func kubeletSocketPresent(path string) bool {
	if path == "" {
		return false
	}
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// DemoPods are the demo's pods: demo/gpu-app-<i> for each of gpus GPUs.
func DemoPods(gpus int) []string {
	pods := make([]string, 0, gpus)
	for i := range gpus {
		pods = append(pods, fmt.Sprintf("demo/gpu-app-%d", i))
	}
	return pods
}

// Validate reports an invalid --sim-pods.
func (o *SimPodsOptions) Validate() []error {
	if len(o.Pods) == 0 {
		return nil
	}
	if o.agent.Backend != "sim" {
		return []error{flagErrorf("sim-pods", "only with --backend=sim")}
	}
	if _, err := parseSimPods(o.Pods); err != nil {
		return []error{&FlagError{Flag: "sim-pods", Err: err}}
	}
	if o.agent.SimGPUs == 0 {
		return []error{flagErrorf("sim-pods", "no simulated GPUs to hold (--sim-gpus=0)")}
	}
	return nil
}

// Config is the simulated pods; none when the kubelet's answer is used.
func (o *SimPodsOptions) Config() ([]provider.StaticPod, error) { return parseSimPods(o.Pods) }

var trailingIndex = regexp.MustCompile(`-[0-9]+$`)

// parseSimPods parses namespace/name entries, each labelled app=<name
// without a trailing -N>.
func parseSimPods(entries []string) ([]provider.StaticPod, error) {
	var pods []provider.StaticPod
	seen := map[string]bool{}
	for _, p := range entries {
		ns, name, ok := strings.Cut(p, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("%q: want namespace/name", p)
		}
		if seen[p] {
			return nil, fmt.Errorf("%q listed twice", p)
		}
		seen[p] = true
		pods = append(pods, provider.StaticPod{Namespace: ns, Name: name,
			Labels: map[string]string{"app": trailingIndex.ReplaceAllString(name, "")}})
	}
	return pods, nil
}
