//go:build e2e && benchcompare

package bench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// benchLabel groups the pods (and Deployments) one query of the benchmark
// selects: bench=<group>.
const benchLabel = "bench"

// createGroup creates a Deployment of replicas GPU pods labelled
// bench=group (and app=name) and returns its selector.
func createGroup(t *testing.T, namespace, name, group string, replicas int32) string {
	t.Helper()
	d := framework.GPUDeployment(namespace, name, replicas)
	d.Labels[benchLabel] = group
	d.Spec.Template.Labels[benchLabel] = group
	cluster.CreateDeployment(t, d)
	return benchLabel + "=" + group
}

// scaleDeployment sets a Deployment's replicas.
func scaleDeployment(ctx context.Context, namespace, name string, replicas int32) error {
	patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, replicas)
	_, err := cluster.Client.AppsV1().Deployments(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// waitAssigned waits until n live pods match selector and the faker has
// given each a GPU, and returns their GPUs by pod name.
func waitAssigned(t *testing.T, faker *framework.PodFaker, namespace, selector string, n int, timeout time.Duration) map[string]framework.GPUSlot {
	t.Helper()
	var out map[string]framework.GPUSlot
	framework.WaitFor(t, timeout, fmt.Sprintf("%d pods with %s, each with a GPU", n, selector), func(ctx context.Context) (bool, string, error) {
		names, err := cluster.LivePods(ctx, namespace, selector)
		if err != nil {
			return false, err.Error(), nil
		}
		out = make(map[string]framework.GPUSlot, len(names))
		for _, name := range names {
			if s, ok := faker.Assignment(name); ok {
				out[name] = s
			}
		}
		return len(names) == n && len(out) == n, fmt.Sprintf("%d pods, %d with a GPU", len(names), len(out)), nil
	})
	return out
}

// stepHPA is the HPA of the reaction measurement: gpu_utilization
// AverageValue 50 on one pod, up to 2 replicas.
func stepHPA(namespace, name string) *autoscalingv2.HorizontalPodAutoscaler {
	return framework.GPUHPA(namespace, name, 1, 2, autoscalingv2.MetricTarget{
		Type:         autoscalingv2.AverageValueMetricType,
		AverageValue: new(resource.MustParse("50")),
	})
}

// scaleWatch records when each Deployment of a group first went above one
// replica, from a watch.
type scaleWatch struct {
	mu    sync.Mutex
	first map[string]time.Time
}

// watchScaleUps starts recording the Deployments labelled bench=group; it
// stops at the end of the test.
func watchScaleUps(t *testing.T, namespace, group string) *scaleWatch {
	t.Helper()
	w := &scaleWatch{first: map[string]time.Time{}}
	inGroup := func(o *metav1.ListOptions) { o.LabelSelector = benchLabel + "=" + group }
	cluster.WatchDeployments(t, namespace, inGroup, func(d *appsv1.Deployment) {
		if d.Spec.Replicas == nil || *d.Spec.Replicas <= 1 {
			return
		}
		now := time.Now()
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, seen := w.first[d.Name]; !seen {
			w.first[d.Name] = now
		}
	})
	return w
}

// scaledAt returns when the Deployment first went above one replica.
func (w *scaleWatch) scaledAt(name string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.first[name]
	return at, ok
}
