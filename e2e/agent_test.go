//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// TestAgentAttributesFakedPods checks the harness's half of the contract
// with the agent: the pods the controller manager creates, given GPUs by
// the pod faker through the fake kubelet's pod-resources socket, appear on
// the agent's /metrics with their pod, namespace and container labels,
// and a simulated utilization step shows on the pod's series.
func TestAgentAttributesFakedPods(t *testing.T) {
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
