//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// TestSeedHPAScalesUpAndDown is the seed user's HPA, verbatim in intent: a
// Pods metric gpu_utilization with `type: Value` and `averageValue: "60"`,
// 1 to 3 replicas. At 100 % the Deployment scales 1 → 2 → 3; at 10 % it
// scales back down to 1.
func TestSeedHPAScalesUpAndDown(t *testing.T) {
	ns := cluster.NewNamespace(t, "seed")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{4}})
	const name, selector = "trainer", "app=trainer"
	env.SetAllUtilization(10)

	cluster.CreateDeployment(t, framework.GPUDeployment(ns, name, 1))
	replicas := cluster.RecordReplicas(t, ns, name)
	hpa := framework.GPUHPA(ns, name, 1, 3, autoscalingv2.MetricTarget{
		// Pods metrics always compare the average; the seed writes the
		// type as Value and the API server accepts it.
		Type:         autoscalingv2.ValueMetricType,
		AverageValue: new(resource.MustParse("60")),
	})
	hpa.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{
		ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: new(int32(0))},
	}
	cluster.CreateHPA(t, hpa)
	pods := cluster.WaitPods(t, ns, selector, 1)
	env.GPUOf(pods[0])
	cluster.WaitHPAMetric(t, ns, name, 10)

	step := env.SetAllUtilization(100)
	seen := waitPodValues(t, ns, selector, func(v map[string]float64) bool { return v[pods[0]] == 100 })
	firstScale := waitReplicas(t, ns, name, func(n int32) bool { return n >= 2 })
	t.Logf("measured: utilization step 10→100: value on the API after %v, first scale after %v",
		seen.Sub(step).Round(100*time.Millisecond), firstScale.Sub(step).Round(100*time.Millisecond))
	waitReplicas(t, ns, name, func(n int32) bool { return n == 3 })
	if got, want := replicas.Values(), []int32{1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("Deployment replicas went %v, want %v", got, want)
	}
	cluster.WaitPods(t, ns, selector, 3)
	cluster.WaitHPAMetric(t, ns, name, 100)

	step = env.SetAllUtilization(10)
	downAt := waitReplicas(t, ns, name, func(n int32) bool { return n == 1 })
	t.Logf("measured: utilization step 100→10: scaled down to 1 after %v", downAt.Sub(step).Round(100*time.Millisecond))
	if got := replicas.Values(); got[len(got)-1] != 1 || slices.Max(got) != 3 {
		t.Errorf("Deployment replicas went %v, want 1 → 2 → 3 → … → 1", got)
	}
	cluster.WaitHPAMetric(t, ns, name, 10)
}

// TestAverageValueTarget scales on `type: AverageValue` 25 with one pod at
// 100 % and the others idle, like the seed's request-rate example
// (20 / 5 = 4): the Deployment settles at 100 / 25 = 4 replicas.
func TestAverageValueTarget(t *testing.T) {
	ns := cluster.NewNamespace(t, "average")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{8}})
	const name, selector = "inference", "app=inference"
	env.SetAllUtilization(0)

	cluster.CreateDeployment(t, framework.GPUDeployment(ns, name, 1))
	pods := cluster.WaitPods(t, ns, selector, 1)
	env.GPUOf(pods[0])
	waitPodValues(t, ns, selector, func(v map[string]float64) bool { return len(v) == 1 && v[pods[0]] == 0 })
	cluster.CreateHPA(t, framework.GPUHPA(ns, name, 1, 8, autoscalingv2.MetricTarget{
		Type:         autoscalingv2.AverageValueMetricType,
		AverageValue: new(resource.MustParse("25")),
	}))
	cluster.WaitHPAMetric(t, ns, name, 0)

	step := env.SetPodUtilization(pods[0], 100)
	seen := waitPodValues(t, ns, selector, func(v map[string]float64) bool { return v[pods[0]] == 100 })
	firstScale := waitReplicas(t, ns, name, func(n int32) bool { return n > 1 })
	t.Logf("measured: one pod 0→100 against AverageValue 25: value on the API after %v, first scale after %v",
		seen.Sub(step).Round(100*time.Millisecond), firstScale.Sub(step).Round(100*time.Millisecond))

	// Settled: the HPA itself measured 4 pods averaging 25 and wants 4.
	framework.WaitFor(t, framework.ScaleTimeout, "the HPA to settle at 4 replicas averaging 25", func(ctx context.Context) (bool, string, error) {
		h, err := cluster.GetHPA(ctx, ns, name)
		if err != nil {
			return false, err.Error(), nil
		}
		avg, ok := framework.HPAAverage(h)
		return ok && avg == 25 && h.Status.CurrentReplicas == 4 && h.Status.DesiredReplicas == 4, framework.DescribeHPA(h), nil
	})
	if n, err := cluster.DeploymentReplicas(t.Context(), ns, name); err != nil || n != 4 {
		t.Errorf("Deployment replicas %d (%v), want 4", n, err)
	}
}

// TestCustomMetricsAPIVersions reads the same values through both
// custom.metrics.k8s.io versions the aggregator registers.
func TestCustomMetricsAPIVersions(t *testing.T) {
	ns := cluster.NewNamespace(t, "versions")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{2}})
	const name, selector = "pair", "app=pair"
	cluster.CreateDeployment(t, framework.GPUDeployment(ns, name, 2))
	pods := cluster.WaitPods(t, ns, selector, 2)
	want := map[string]float64{pods[0]: 30, pods[1]: 70}
	for pod, v := range want {
		env.SetPodUtilization(pod, int(v))
	}
	for _, version := range framework.CustomMetricsVersions {
		framework.WaitFor(t, 30*time.Second, version+" values "+fmt.Sprint(want), func(ctx context.Context) (bool, string, error) {
			got, err := cluster.PodMetrics(ctx, version, ns, selector, framework.MetricName)
			if err != nil {
				return false, err.Error(), nil
			}
			return maps.Equal(got, want), fmt.Sprint(got), nil
		})
	}
	// A selector matching nothing gives no values, not invented ones.
	for _, version := range framework.CustomMetricsVersions {
		got, err := cluster.PodMetrics(t.Context(), version, ns, "app=nothing", framework.MetricName)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 0 {
			t.Errorf("%s: values for a selector matching no pod: %v", version, got)
		}
	}
}

// TestStoppedAgentMetricsGoStale stops the agent of one node: within the
// stale window its pod's value disappears from the API (the other node's
// stays), and the HPA reports that it cannot get the metric instead of
// acting on the last number.
func TestStoppedAgentMetricsGoStale(t *testing.T) {
	ns := cluster.NewNamespace(t, "stale")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{1, 1}})
	env.SetAllUtilization(50)

	// One GPU per node: the scheduler puts the second workload's pod on
	// the node the first one left free.
	cluster.CreateDeployment(t, framework.GPUDeployment(ns, "victim", 1))
	victim := cluster.WaitPods(t, ns, "app=victim", 1)[0]
	victimNode := env.GPUOf(victim).Node
	cluster.CreateDeployment(t, framework.GPUDeployment(ns, "bystander", 1))
	bystander := cluster.WaitPods(t, ns, "app=bystander", 1)[0]
	if s := env.GPUOf(bystander); s.Node == victimNode {
		t.Fatalf("bystander pod on the victim's node %s", env.Nodes[victimNode].Name)
	}
	replicas := cluster.RecordReplicas(t, ns, "victim")
	cluster.CreateHPA(t, framework.GPUHPA(ns, "victim", 1, 2, autoscalingv2.MetricTarget{
		Type:         autoscalingv2.AverageValueMetricType,
		AverageValue: new(resource.MustParse("50")),
	}))
	cluster.WaitHPAMetric(t, ns, "victim", 50)
	waitPodValues(t, ns, "app=bystander", func(v map[string]float64) bool { return v[bystander] == 50 })

	stopped := time.Now()
	env.Nodes[victimNode].Agent.Stop()
	gone := waitPodValues(t, ns, "app=victim", func(v map[string]float64) bool {
		_, ok := v[victim]
		return !ok
	})
	t.Logf("measured: agent stopped: value gone from the API after %v (stale-after %v, scrape interval %v)",
		gone.Sub(stopped).Round(100*time.Millisecond), framework.StaleAfter, framework.ScrapeInterval)
	if v, err := cluster.PodMetrics(t.Context(), "v1beta2", ns, "app=bystander", framework.MetricName); err != nil || v[bystander] != 50 {
		t.Errorf("the other node's pod: values %v (%v), want %s=50", v, err, bystander)
	}

	framework.WaitFor(t, framework.ScaleTimeout, "the HPA to report the missing metric", func(ctx context.Context) (bool, string, error) {
		h, err := cluster.GetHPA(ctx, ns, "victim")
		if err != nil {
			return false, err.Error(), nil
		}
		c := framework.HPACondition(h, autoscalingv2.ScalingActive)
		return c != nil && c.Status == corev1.ConditionFalse && c.Reason == "FailedGetPodsMetric", framework.DescribeHPA(h), nil
	})
	if got := replicas.Values(); !slices.Equal(got, []int32{1}) {
		t.Errorf("victim replicas went %v while its metric was missing, want [1]", got)
	}
}

// waitReplicas waits until the Deployment's replicas satisfy ok and
// returns when they first did.
func waitReplicas(t *testing.T, namespace, name string, ok func(int32) bool) time.Time {
	t.Helper()
	return framework.WaitFor(t, framework.ScaleTimeout, "Deployment "+name+"'s replicas", func(ctx context.Context) (bool, string, error) {
		n, err := cluster.DeploymentReplicas(ctx, namespace, name)
		if err != nil {
			return false, err.Error(), nil
		}
		state := fmt.Sprintf("replicas=%d", n)
		if h, err := cluster.GetHPA(ctx, namespace, name); err == nil {
			state += "; HPA " + framework.DescribeHPA(h)
		}
		return ok(n), state, nil
	})
}

// waitPodValues polls the v1beta2 API until the values of the pods
// matching selector satisfy ok, and returns when they first did.
func waitPodValues(t *testing.T, namespace, selector string, ok func(map[string]float64) bool) time.Time {
	t.Helper()
	return framework.WaitFor(t, 30*time.Second, "gpu_utilization of "+selector+" on the API", func(ctx context.Context) (bool, string, error) {
		v, err := cluster.PodMetrics(ctx, "v1beta2", namespace, selector, framework.MetricName)
		if err != nil {
			return false, err.Error(), nil
		}
		return ok(v), fmt.Sprint(v), nil
	})
}
