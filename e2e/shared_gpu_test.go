//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestSharedGPUPerPodShares: two pods time-slice one GPU, one running at 70 %
// and the other at 10 %. dcgm-exporter would give both the device's 80 %;
// the custom metrics API gives each its own share, through the real
// aggregation layer.
func TestSharedGPUPerPodShares(t *testing.T) {
	ns := newNamespace(t, "shared")
	env := startSharedGMS(t, ns, 2, 1)
	const name, selector = "inference", "app=inference"
	createDeployment(t, gpuDeployment(ns, name, 2))
	pods := waitPods(t, ns, selector, 2)
	a, b := pods[0], pods[1]
	if sa, sb := env.gpuOf(a), env.gpuOf(b); sa.uuid != sb.uuid || sa.replica == sb.replica {
		t.Fatalf("pods do not share one GPU: %+v, %+v", sa, sb)
	}
	env.setPodShare(a, 70)
	env.setPodShare(b, 10)

	for _, version := range customMetricsVersions {
		waitFor(t, 60*time.Second, version+": per-pod shares 70 / 10", func(ctx context.Context) (bool, string, error) {
			v, err := podMetrics(ctx, version, ns, selector, "gpu_utilization")
			if err != nil {
				return false, err.Error(), nil
			}
			return v[a] == 70 && v[b] == 10, fmt.Sprintf("%v", v), nil
		})
	}
	// The device series still says what the GPU did as a whole, for both
	// pods, as dcgm-exporter's would.
	waitFor(t, 30*time.Second, "device series at 80 for both pods", func(ctx context.Context) (bool, string, error) {
		ss, err := scrapeSeries(ctx, env.nodes[0].url+"/metrics", gpuUtilSeries)
		if err != nil {
			return false, err.Error(), nil
		}
		byPod := map[string]float64{}
		for _, s := range ss {
			if s.labels["namespace"] == ns {
				byPod[s.labels["pod"]] = s.value
			}
		}
		return byPod[a] == 80 && byPod[b] == 80, fmt.Sprintf("%v", byPod), nil
	})
}
