//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// TestControlPlane proves the harness without the project's binary:
// kubectl talks to the API server, the controller manager turns a
// Deployment into pods, the pod faker runs them, and the HPA controller
// evaluates a gpu_utilization HPA, reporting that no custom metrics API
// answers (none is registered in this test).
func TestControlPlane(t *testing.T) {
	out, err := cluster.Kubectl(t.Context(), nil, "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var version struct {
		ServerVersion struct {
			GitVersion string `json:"gitVersion"`
		} `json:"serverVersion"`
	}
	if err := json.Unmarshal([]byte(out), &version); err != nil {
		t.Fatalf("decoding kubectl version: %v\n%s", err, out)
	}
	if !strings.HasPrefix(version.ServerVersion.GitVersion, "v1.") {
		t.Fatalf("server version %q, want a v1.x release", version.ServerVersion.GitVersion)
	}
	t.Logf("API server %s", version.ServerVersion.GitVersion)

	ns := cluster.NewNamespace(t, "smoke")
	manifest := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke, namespace: %[1]s}
spec:
  replicas: 2
  selector: {matchLabels: {app: smoke}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      containers:
      - name: %[2]s
        image: registry.invalid/gpu-workload:e2e
        resources: {limits: {%[3]s: 1}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: smoke, namespace: %[1]s}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: smoke}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Pods
    pods:
      metric: {name: %[4]s}
      target: {type: Value, averageValue: "60"}
`, ns, framework.WorkloadContainer, framework.GPUResource, framework.MetricName)
	if _, err := cluster.Kubectl(t.Context(), []byte(manifest), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}

	// No GPU nodes: the faker only runs the pods.
	framework.StartPodFaker(t, cluster.Client, ns, nil, nil)
	framework.WaitFor(t, 60*time.Second, "2 Running pods", func(ctx context.Context) (bool, string, error) {
		pods, err := cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=smoke"})
		if err != nil {
			return false, err.Error(), nil
		}
		running := 0
		var phases []string
		for _, p := range pods.Items {
			phases = append(phases, p.Name+"="+string(p.Status.Phase))
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return running == 2 && len(pods.Items) == 2, strings.Join(phases, " "), nil
	})

	framework.WaitFor(t, 60*time.Second, "the HPA controller to report the missing custom metrics API", func(ctx context.Context) (bool, string, error) {
		h, err := cluster.GetHPA(ctx, ns, "smoke")
		if err != nil {
			return false, err.Error(), nil
		}
		c := framework.HPACondition(h, autoscalingv2.ScalingActive)
		return c != nil && c.Status == corev1.ConditionFalse && c.Reason == "FailedGetPodsMetric", framework.DescribeHPA(h), nil
	})

	// The HPA acts on nothing it cannot measure.
	replicas, err := cluster.DeploymentReplicas(t.Context(), ns, "smoke")
	if err != nil {
		t.Fatal(err)
	}
	if replicas != 2 {
		t.Errorf("Deployment replicas %d, want 2 (unchanged without metrics)", replicas)
	}
	out, err = cluster.Kubectl(t.Context(), nil, "get", "hpa", "-n", ns, "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "horizontalpodautoscaler.autoscaling/smoke" {
		t.Errorf("kubectl get hpa: %q", out)
	}
}
