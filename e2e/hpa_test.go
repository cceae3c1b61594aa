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
)

// scaleTimeout bounds each scaling step: several HPA sync periods plus the
// default scale-up/down rate limits (one step per 15 s).
const scaleTimeout = 90 * time.Second

// TestSeedHPAScalesUpAndDown is the seed user's HPA, verbatim in intent: a
// Pods metric gpu_utilization with `type: Value` and `averageValue: "60"`,
// 1 to 3 replicas. At 100 % the Deployment scales 1 → 2 → 3; at 10 % it
// scales back down to 1.
func TestSeedHPAScalesUpAndDown(t *testing.T) {
	ns := newNamespace(t, "seed")
	env := startGMS(t, ns, 4)
	const name, selector = "trainer", "app=trainer"
	env.setAllUtilization(10)

	createDeployment(t, gpuDeployment(ns, name, 1))
	replicas := recordReplicas(t, ns, name)
	hpa := gpuHPA(ns, name, 1, 3, autoscalingv2.MetricTarget{
		// Pods metrics always compare the average; the seed writes the
		// type as Value and the API server accepts it.
		Type:         autoscalingv2.ValueMetricType,
		AverageValue: new(resource.MustParse("60")),
	})
	hpa.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{
		ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: new(int32(0))},
	}
	createHPA(t, hpa)
	pods := waitPods(t, ns, selector, 1)
	env.gpuOf(pods[0])
	waitHPAMetric(t, ns, name, 10)

	step := env.setAllUtilization(100)
	seen := waitPodValues(t, ns, selector, func(v map[string]float64) bool { return v[pods[0]] == 100 })
	firstScale := waitReplicas(t, ns, name, func(n int32) bool { return n >= 2 })
	t.Logf("measured: utilization step 10→100: value on the API after %v, first scale after %v",
		seen.Sub(step).Round(100*time.Millisecond), firstScale.Sub(step).Round(100*time.Millisecond))
	waitReplicas(t, ns, name, func(n int32) bool { return n == 3 })
	if got, want := replicas.values(), []int32{1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("Deployment replicas went %v, want %v", got, want)
	}
	waitPods(t, ns, selector, 3)
	waitHPAMetric(t, ns, name, 100)

	step = env.setAllUtilization(10)
	downAt := waitReplicas(t, ns, name, func(n int32) bool { return n == 1 })
	t.Logf("measured: utilization step 100→10: scaled down to 1 after %v", downAt.Sub(step).Round(100*time.Millisecond))
	if got := replicas.values(); got[len(got)-1] != 1 || slices.Max(got) != 3 {
		t.Errorf("Deployment replicas went %v, want 1 → 2 → 3 → … → 1", got)
	}
	waitHPAMetric(t, ns, name, 10)
}

// TestAverageValueTarget scales on `type: AverageValue` 25 with one pod at
// 100 % and the others idle, like the seed's request-rate example
// (20 / 5 = 4): the Deployment settles at 100 / 25 = 4 replicas.
func TestAverageValueTarget(t *testing.T) {
	ns := newNamespace(t, "average")
	env := startGMS(t, ns, 8)
	const name, selector = "inference", "app=inference"
	env.setAllUtilization(0)

	createDeployment(t, gpuDeployment(ns, name, 1))
	pods := waitPods(t, ns, selector, 1)
	env.gpuOf(pods[0])
	waitPodValues(t, ns, selector, func(v map[string]float64) bool { return len(v) == 1 && v[pods[0]] == 0 })
	createHPA(t, gpuHPA(ns, name, 1, 8, autoscalingv2.MetricTarget{
		Type:         autoscalingv2.AverageValueMetricType,
		AverageValue: new(resource.MustParse("25")),
	}))
	waitHPAMetric(t, ns, name, 0)

	step := env.setPodUtilization(pods[0], 100)
	seen := waitPodValues(t, ns, selector, func(v map[string]float64) bool { return v[pods[0]] == 100 })
	firstScale := waitReplicas(t, ns, name, func(n int32) bool { return n > 1 })
	t.Logf("measured: one pod 0→100 against AverageValue 25: value on the API after %v, first scale after %v",
		seen.Sub(step).Round(100*time.Millisecond), firstScale.Sub(step).Round(100*time.Millisecond))

	// Settled: the HPA itself measured 4 pods averaging 25 and wants 4.
	waitFor(t, scaleTimeout, "the HPA to settle at 4 replicas averaging 25", func(ctx context.Context) (bool, string, error) {
		h, err := getHPA(ctx, ns, name)
		if err != nil {
			return false, err.Error(), nil
		}
		avg, ok := hpaAverage(h)
		return ok && avg == 25 && h.Status.CurrentReplicas == 4 && h.Status.DesiredReplicas == 4, describeHPA(h), nil
	})
	if n, err := deploymentReplicas(t.Context(), ns, name); err != nil || n != 4 {
		t.Errorf("Deployment replicas %d (%v), want 4", n, err)
	}
}

// TestCustomMetricsAPIVersions reads the same values through both
// custom.metrics.k8s.io versions the aggregator registers.
func TestCustomMetricsAPIVersions(t *testing.T) {
	ns := newNamespace(t, "versions")
	env := startGMS(t, ns, 2)
	const name, selector = "pair", "app=pair"
	createDeployment(t, gpuDeployment(ns, name, 2))
	pods := waitPods(t, ns, selector, 2)
	want := map[string]float64{pods[0]: 30, pods[1]: 70}
	for pod, v := range want {
		env.setPodUtilization(pod, int(v))
	}
	for _, version := range customMetricsVersions {
		waitFor(t, 30*time.Second, version+" values "+fmt.Sprint(want), func(ctx context.Context) (bool, string, error) {
			got, err := podMetrics(ctx, version, ns, selector, metricName)
			if err != nil {
				return false, err.Error(), nil
			}
			return maps.Equal(got, want), fmt.Sprint(got), nil
		})
	}
	// A selector matching nothing gives no values, not invented ones.
	for _, version := range customMetricsVersions {
		got, err := podMetrics(t.Context(), version, ns, "app=nothing", metricName)
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
	ns := newNamespace(t, "stale")
	env := startGMS(t, ns, 1, 1)
	env.setAllUtilization(50)

	// The faker fills nodes in order: the first pod lands on node 0.
	createDeployment(t, gpuDeployment(ns, "victim", 1))
	victim := waitPods(t, ns, "app=victim", 1)[0]
	if s := env.gpuOf(victim); s.node != 0 {
		t.Fatalf("victim pod on node %d, want 0", s.node)
	}
	createDeployment(t, gpuDeployment(ns, "bystander", 1))
	bystander := waitPods(t, ns, "app=bystander", 1)[0]
	if s := env.gpuOf(bystander); s.node != 1 {
		t.Fatalf("bystander pod on node %d, want 1", s.node)
	}
	replicas := recordReplicas(t, ns, "victim")
	createHPA(t, gpuHPA(ns, "victim", 1, 2, autoscalingv2.MetricTarget{
		Type:         autoscalingv2.AverageValueMetricType,
		AverageValue: new(resource.MustParse("50")),
	}))
	waitHPAMetric(t, ns, "victim", 50)
	waitPodValues(t, ns, "app=bystander", func(v map[string]float64) bool { return v[bystander] == 50 })

	stopped := time.Now()
	env.nodes[0].agent.stop()
	gone := waitPodValues(t, ns, "app=victim", func(v map[string]float64) bool {
		_, ok := v[victim]
		return !ok
	})
	t.Logf("measured: agent stopped: value gone from the API after %v (stale-after %v, scrape interval %v)",
		gone.Sub(stopped).Round(100*time.Millisecond), staleAfter, scrapeInterval)
	if v, err := podMetrics(t.Context(), "v1beta2", ns, "app=bystander", metricName); err != nil || v[bystander] != 50 {
		t.Errorf("the other node's pod: values %v (%v), want %s=50", v, err, bystander)
	}

	waitFor(t, scaleTimeout, "the HPA to report the missing metric", func(ctx context.Context) (bool, string, error) {
		h, err := getHPA(ctx, ns, "victim")
		if err != nil {
			return false, err.Error(), nil
		}
		c := hpaCondition(h, autoscalingv2.ScalingActive)
		return c != nil && c.Status == corev1.ConditionFalse && c.Reason == "FailedGetPodsMetric", describeHPA(h), nil
	})
	if got := replicas.values(); !slices.Equal(got, []int32{1}) {
		t.Errorf("victim replicas went %v while its metric was missing, want [1]", got)
	}
}

// waitReplicas waits until the Deployment's replicas satisfy ok and
// returns when they first did.
func waitReplicas(t *testing.T, namespace, name string, ok func(int32) bool) time.Time {
	t.Helper()
	return waitFor(t, scaleTimeout, "Deployment "+name+"'s replicas", func(ctx context.Context) (bool, string, error) {
		n, err := deploymentReplicas(ctx, namespace, name)
		if err != nil {
			return false, err.Error(), nil
		}
		state := fmt.Sprintf("replicas=%d", n)
		if h, err := getHPA(ctx, namespace, name); err == nil {
			state += "; HPA " + describeHPA(h)
		}
		return ok(n), state, nil
	})
}

// waitPodValues polls the v1beta2 API until the values of the pods
// matching selector satisfy ok, and returns when they first did.
func waitPodValues(t *testing.T, namespace, selector string, ok func(map[string]float64) bool) time.Time {
	t.Helper()
	return waitFor(t, 30*time.Second, "gpu_utilization of "+selector+" on the API", func(ctx context.Context) (bool, string, error) {
		v, err := podMetrics(ctx, "v1beta2", namespace, selector, metricName)
		if err != nil {
			return false, err.Error(), nil
		}
		return ok(v), fmt.Sprint(v), nil
	})
}

// waitHPAMetric waits until the HPA is active and its own status shows the
// per-pod average it acted on equal to want.
func waitHPAMetric(t *testing.T, namespace, name string, want float64) {
	t.Helper()
	waitFor(t, scaleTimeout, fmt.Sprintf("HPA %s to measure an average of %v", name, want), func(ctx context.Context) (bool, string, error) {
		h, err := getHPA(ctx, namespace, name)
		if err != nil {
			return false, err.Error(), nil
		}
		avg, ok := hpaAverage(h)
		c := hpaCondition(h, autoscalingv2.ScalingActive)
		return ok && avg == want && c != nil && c.Status == corev1.ConditionTrue, describeHPA(h), nil
	})
}

// hpaAverage returns the gpu_utilization average in the HPA's status.
func hpaAverage(h *autoscalingv2.HorizontalPodAutoscaler) (float64, bool) {
	for _, m := range h.Status.CurrentMetrics {
		if m.Type == autoscalingv2.PodsMetricSourceType && m.Pods != nil && m.Pods.Metric.Name == metricName && m.Pods.Current.AverageValue != nil {
			return m.Pods.Current.AverageValue.AsApproximateFloat64(), true
		}
	}
	return 0, false
}
