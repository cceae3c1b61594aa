package app

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/nvml"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/sim"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/provider"
)

// This file holds every use the commands make of the GPU backends'
// constructors and of the simulation's identities.

// openBackend opens the GPU backend --backend names, reading the selected
// fields and, when processes is set, per-process samples; its self-metrics
// go to reg. The simulation comes with its control handler (POST
// /sim/set), which answers loopback clients only; nvml with none.
func openBackend(o *options.AgentOptions, processes bool, reg prometheus.Registerer) (collector.Backend, http.Handler, error) {
	if o.Backend == "sim" {
		simulated, err := sim.New(o.NodeName, o.SimGPUs, o.SimMIG)
		if err != nil {
			return nil, nil, err
		}
		if o.SimUtilization != 0 {
			if err := simulated.Set(sim.AllGPUs, sim.Update{Utilization: &o.SimUtilization}); err != nil {
				return nil, nil, err
			}
		}
		klog.InfoS("Using simulated GPUs", "gpus", o.SimGPUs, "mig", o.SimMIG, "utilization", o.SimUtilization, "node", o.NodeName)
		klog.InfoS("The simulation's control, POST /sim/set, answers loopback clients only (in a cluster: kubectl port-forward)")
		return simulated, loopbackOnly(sim.Handler(simulated)), nil
	}
	c := o.Counters()
	b, err := nvml.New(nvml.Options{Processes: processes, Fields: c.Fields, Labels: c.Labels, Registerer: reg, SlowInterval: o.SlowSampleInterval})
	if err != nil {
		return nil, nil, err
	}
	return b, nil, nil
}

// simPodResources is the pod-resources answer a kubelet would give for the
// simulated pods: pod i holds GPU i mod gpus, as a time-slicing replica when
// pods outnumber GPUs.
func simPodResources(pods []provider.StaticPod, node string, gpus int) *podresourcesv1.ListPodResourcesResponse {
	resp := &podresourcesv1.ListPodResourcesResponse{}
	for i, p := range pods {
		id := sim.UUID(node, i%gpus)
		if len(pods) > gpus {
			id = fmt.Sprintf("%s::%d", id, i/gpus)
		}
		resp.PodResources = append(resp.PodResources, &podresourcesv1.PodResources{
			Namespace: p.Namespace, Name: p.Name,
			Containers: []*podresourcesv1.ContainerResources{{
				Name:    "main",
				Devices: []*podresourcesv1.ContainerDevices{{ResourceName: "nvidia.com/gpu", DeviceIds: []string{id}}},
			}},
		})
	}
	return resp
}

// loopbackOnly serves h to clients on a loopback address only: whatever
// address the agent listens on, the simulation's control (which drives
// what the HPA sees) is not open to the network. Others get 403.
func loopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		ip, perr := netip.ParseAddr(host)
		if err != nil || perr != nil || !ip.Unmap().IsLoopback() {
			http.Error(w, "the simulation's control answers loopback clients only", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
