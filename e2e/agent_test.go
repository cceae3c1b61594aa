//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

// TestAgentAttributesKubeletPods: the pods the controller manager creates,
// the scheduler places on the GPU node and its kubelet runs with the GPUs
// its device manager allocated, appear on the agent's /metrics with their
// pod, namespace and container labels, and a simulated utilization step
// shows on the pod's series.
func TestAgentAttributesKubeletPods(t *testing.T) {
	ns := cluster.NewNamespace(t, "agent")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{3}, AgentsOnly: true})
	const name, selector = "workers", "app=workers"
	cluster.CreateDeployment(t, framework.GPUDeployment(ns, name, 2))
	pods := cluster.WaitPods(t, ns, selector, 2)
	env.SetAllUtilization(0)
	env.SetPodUtilization(pods[1], 42)

	node := env.Nodes[0]
	for i, pod := range pods {
		gpu := env.GPUOf(pod)
		want := 0.0
		if i == 1 {
			want = 42
		}
		framework.WaitFor(t, 30*time.Second, fmt.Sprintf("the agent to attribute GPU %d to %s at %v%%", gpu.Index, pod, want), func(ctx context.Context) (bool, string, error) {
			samples, err := framework.ScrapeSeries(ctx, node.URL+"/metrics", framework.GPUUtilSeries)
			if err != nil {
				return false, err.Error(), nil
			}
			for _, s := range samples {
				if s.Labels["UUID"] != gpu.UUID {
					continue
				}
				l := s.Labels
				ok := l["pod"] == pod && l["namespace"] == ns && l["container"] == framework.WorkloadContainer && s.Value == want
				return ok, fmt.Sprintf("%v = %v", l, s.Value), nil
			}
			return false, "no series for " + gpu.UUID, nil
		})
	}
}

// TestFaultyKubelet covers what a real kubelet cannot be made to do, on a
// fake kubelet (podmap/fakekubelet) with the pod faker: a pod-resources API
// that hangs past the agent's timeout leaves the last mapping in use (the
// pod keeps its labels and its value on the API), and one that answers a
// device ID in no known form labels nothing with it (the agent counts it)
// while the pod keeps its value.
func TestFaultyKubelet(t *testing.T) {
	ns := cluster.NewNamespace(t, "faulty")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{2}, FakeKubelets: true})
	const name, selector = "held", "app=held"
	pod, slot := busyPod(t, env, name, 30)
	node := env.Nodes[slot.Node]
	agent := node.URL + "/metrics"

	st, err := framework.ScrapeAgent(t.Context(), agent, framework.GPUUtilSeries)
	if err != nil {
		t.Fatal(err)
	}
	failed := st.RefreshErrors
	node.Kubelet.SetDelay(time.Hour) // every call hangs until the agent gives up
	framework.WaitFor(t, 60*time.Second, "two pod-resources calls to time out", func(ctx context.Context) (bool, string, error) {
		st, err = framework.ScrapeAgent(ctx, agent, framework.GPUUtilSeries)
		if err != nil {
			return false, err.Error(), nil
		}
		return st.RefreshErrors >= failed+2 && !st.KubeletUp, fmt.Sprintf("%v failed calls, up %v", st.RefreshErrors, st.KubeletUp), nil
	})
	waitAttributed(t, env, slot, pod)
	if v, err := cluster.PodMetrics(t.Context(), "v1beta2", ns, selector, framework.MetricName); err != nil || v[pod] != 30 {
		t.Errorf("while the kubelet hangs the API gives %v (%v), want %s=30", v, err, pod)
	}
	node.Kubelet.SetDelay(0)

	node.Kubelet.SetGarbage([]string{"not-a-gpu-id"})
	framework.WaitFor(t, 60*time.Second, "the agent to count the unknown device ID", func(ctx context.Context) (bool, string, error) {
		families, err := framework.ScrapeFamilies(ctx, agent)
		if err != nil {
			return false, err.Error(), nil
		}
		var unknown float64
		for _, m := range families["gpu_metrics_server_pod_resources_unknown_device_ids_total"].GetMetric() {
			unknown = m.GetCounter().GetValue()
		}
		return unknown == 1, fmt.Sprintf("unknown device IDs %v", unknown), nil
	})
	samples, err := framework.ScrapeSeries(t.Context(), agent, framework.GPUUtilSeries)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range samples {
		if s.Labels["pod"] == fakekubelet.GarbagePod {
			t.Errorf("a series labelled with the pod holding an unknown device ID: %v", s.Labels)
		}
	}
	waitAttributed(t, env, slot, pod)
	if v, err := cluster.PodMetrics(t.Context(), "v1beta2", ns, selector, framework.MetricName); err != nil || len(v) != 1 || v[pod] != 30 {
		t.Errorf("with a garbage answer the API gives %v (%v), want only %s=30", v, err, pod)
	}
}
