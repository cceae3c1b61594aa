package app

import (
	"context"
	"fmt"

	"k8s.io/client-go/metadata"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/cgroup"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/podinfo"
)

// newAttribution sets up per-process attribution of shared GPUs (nil: off):
// the pod informer when the agent can reach the API server (run, to run in
// the background; nil without one), and with nvml the cgroup resolver on
// --host-proc. The simulation's processes name their pods, so it needs
// neither.
func newAttribution(o *options.AgentOptions, kube *options.KubeOptions) (a *collector.Attribution, run func(context.Context), err error) {
	if !o.ProcessAttribution {
		klog.InfoS("Per-process attribution off (--process-attribution=false): every pod holding a GPU is given the GPU's values")
		return nil, nil, nil
	}
	a = &collector.Attribution{}
	if kube.Available() {
		cfg, err := kube.RESTConfig("gpu-metrics-server/agent")
		switch {
		case err != nil && kube.Kubeconfig != "":
			return nil, nil, err
		case err != nil:
			klog.ErrorS(err, "No in-cluster Kubernetes configuration for the pod informer")
		default:
			client, err := metadata.NewForConfig(cfg)
			if err != nil {
				return nil, nil, fmt.Errorf("pod informer client: %w", err)
			}
			inf, err := podinfo.NewInformer(client, o.NodeName)
			if err != nil {
				return nil, nil, err
			}
			a.Pods, run = inf, inf.Run
		}
	}
	if o.Backend == "sim" {
		if a.Pods == nil {
			klog.InfoS("Simulated pod processes are matched by namespace and name; no pod_uid labels without Kubernetes API access")
		}
		return a, run, nil
	}
	if a.Pods == nil {
		klog.InfoS("Per-process attribution off: no Kubernetes API access (not in a cluster and no --kubeconfig) to learn pod UIDs; every pod holding a GPU is given the GPU's values")
		return nil, nil, nil
	}
	a.Resolver = cgroup.NewResolver(o.HostProc)
	klog.InfoS("Per-process attribution on", "hostProc", o.HostProc, "node", o.NodeName)
	return a, run, nil
}
