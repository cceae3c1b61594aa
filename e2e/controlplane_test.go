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
	"github.com/gpu-metrics-server/gpu-metrics-server/hack/deviceplugin/devices"
)

// TestControlPlane proves the harness without the project's binary:
// kubectl talks to the API server; the controller manager turns a
// Deployment into pods; the scheduler places those that fit on the GPU
// node, whose kubelet runs them (fake runtime) with devices its device
// manager allocated from the test device plugin, reported on its
// pod-resources socket, and leaves the one that does not fit Pending (the
// node without GPUs takes none); and the HPA controller evaluates a
// gpu_utilization HPA, reporting that no custom metrics API answers (none
// is registered in this test).
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
	gpuNode := cluster.StartNode(t, framework.NodeOptions{Name: ns + "-gpu", GPUs: 2})
	cluster.DeleteWorkloadsAtEnd(t, ns)
	manifest := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke, namespace: %[1]s}
spec:
  replicas: 3
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

	// Two GPUs: two pods run on the GPU node, the third finds no node.
	var running []string
	framework.WaitFor(t, 2*time.Minute, "2 pods Running on "+gpuNode.Name+" and 1 unschedulable", func(ctx context.Context) (bool, string, error) {
		pods, err := cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=smoke"})
		if err != nil {
			return false, err.Error(), nil
		}
		running = nil
		unschedulable := 0
		var states []string
		for _, p := range pods.Items {
			states = append(states, fmt.Sprintf("%s=%s@%s", p.Name, p.Status.Phase, p.Spec.NodeName))
			if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName == gpuNode.Name {
				running = append(running, p.Name)
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable &&
					p.Spec.NodeName == "" && strings.Contains(c.Message, "Insufficient "+framework.GPUResource) {
					unschedulable++
				}
			}
		}
		return len(pods.Items) == 3 && len(running) == 2 && unschedulable == 1, strings.Join(states, " "), nil
	})

	// Each running pod holds its own GPU, as the kubelet reports it.
	held := map[string]string{}
	for _, pod := range running {
		framework.WaitFor(t, 30*time.Second, "the kubelet to list the device of "+pod, func(ctx context.Context) (bool, string, error) {
			ids, err := gpuNode.DeviceIDs(ctx, ns, pod)
			if err != nil {
				return false, err.Error(), nil
			}
			got := ids[framework.GPUResource]
			if len(got) != 1 {
				return false, fmt.Sprintf("devices %v", ids), nil
			}
			if _, _, ok := devices.Find(gpuNode.Resources, got[0]); !ok {
				return false, "", fmt.Errorf("%s holds %s, which the device plugin does not advertise", pod, got[0])
			}
			if other, dup := held[got[0]]; dup {
				return false, "", fmt.Errorf("%s and %s both hold %s", pod, other, got[0])
			}
			held[got[0]] = pod
			return true, "", nil
		})
	}

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
	if replicas != 3 {
		t.Errorf("Deployment replicas %d, want 3 (unchanged without metrics)", replicas)
	}
	out, err = cluster.Kubectl(t.Context(), nil, "get", "hpa", "-n", ns, "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "horizontalpodautoscaler.autoscaling/smoke" {
		t.Errorf("kubectl get hpa: %q", out)
	}
}
