//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// TestSharedGPUPerPodShares: two pods time-slice one GPU, one running at 70 %
// and the other at 10 %. dcgm-exporter would give both the device's 80 %;
// the custom metrics API gives each its own share, through the real
// aggregation layer.
func TestSharedGPUPerPodShares(t *testing.T) {
	ns := cluster.NewNamespace(t, "shared")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{1}, TimeSlices: 2})
	const name, selector = "inference", "app=inference"
	cluster.CreateDeployment(t, framework.GPUDeployment(ns, name, 2))
	pods := cluster.WaitPods(t, ns, selector, 2)
	a, b := pods[0], pods[1]
	if sa, sb := env.GPUOf(a), env.GPUOf(b); sa.UUID != sb.UUID || sa.Replica == sb.Replica {
		t.Fatalf("pods do not share one GPU: %+v, %+v", sa, sb)
	}
	env.SetPodShare(a, 70)
	env.SetPodShare(b, 10)

	for _, version := range framework.CustomMetricsVersions {
		framework.WaitFor(t, 60*time.Second, version+": per-pod shares 70 / 10", func(ctx context.Context) (bool, string, error) {
			v, err := cluster.PodMetrics(ctx, version, ns, selector, "gpu_utilization")
			if err != nil {
				return false, err.Error(), nil
			}
			return v[a] == 70 && v[b] == 10, fmt.Sprintf("%v", v), nil
		})
	}
	// The device series still says what the GPU did as a whole, for both
	// pods, as dcgm-exporter's would.
	framework.WaitFor(t, 30*time.Second, "device series at 80 for both pods", func(ctx context.Context) (bool, string, error) {
		ss, err := framework.ScrapeSeries(ctx, env.Nodes[0].URL+"/metrics", framework.GPUUtilSeries)
		if err != nil {
			return false, err.Error(), nil
		}
		byPod := map[string]float64{}
		for _, s := range ss {
			if s.Labels["namespace"] == ns {
				byPod[s.Labels["pod"]] = s.Value
			}
		}
		return byPod[a] == 80 && byPod[b] == 80, fmt.Sprintf("%v", byPod), nil
	})
}
