//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestAgentAttributesFakedPods checks the harness's half of the contract
// with the agent: the pods the controller manager creates, given GPUs by
// the pod faker through the fake kubelet's pod-resources socket, appear on
// the agent's /metrics with their pod, namespace and container labels,
// and a simulated utilization step shows on the pod's series.
func TestAgentAttributesFakedPods(t *testing.T) {
	ns := newNamespace(t, "agent")
	env := startAgents(t, ns, 3)
	const name, selector = "workers", "app=workers"
	createDeployment(t, gpuDeployment(ns, name, 2))
	pods := waitPods(t, ns, selector, 2)
	env.setAllUtilization(0)
	env.setPodUtilization(pods[1], 42)

	node := env.nodes[0]
	for i, pod := range pods {
		gpu := env.gpuOf(pod)
		want := 0.0
		if i == 1 {
			want = 42
		}
		waitFor(t, 30*time.Second, fmt.Sprintf("the agent to attribute GPU %d to %s at %v%%", gpu.index, pod, want), func(ctx context.Context) (bool, string, error) {
			samples, err := scrapeSeries(ctx, node.url+"/metrics", gpuUtilSeries)
			if err != nil {
				return false, err.Error(), nil
			}
			for _, s := range samples {
				if s.labels["UUID"] != gpu.uuid {
					continue
				}
				l := s.labels
				ok := l["pod"] == pod && l["namespace"] == ns && l["container"] == workloadContainer && s.value == want
				return ok, fmt.Sprintf("%v = %v", l, s.value), nil
			}
			return false, "no series for " + gpu.uuid, nil
		})
	}
}
