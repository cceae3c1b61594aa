//go:build e2e

package framework

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// HPASyncs is what kube-controller-manager's HPA controller counts of its
// own work (its /metrics), every HPA's together: each sync of an HPA is
// one reconciliation, counted when it ends.
type HPASyncs struct {
	// HPAs is how many HPAs it controls
	// (horizontal_pod_autoscaler_controller_num_horizontal_pod_autoscalers).
	HPAs int
	// Succeeded and Failed count its reconciliations
	// (horizontal_pod_autoscaler_controller_reconciliations_total) by
	// their error label: none, or another (a metric it could not get is
	// "internal").
	Succeeded, Failed int
}

// HPASyncs reads the HPA controller's counters from
// kube-controller-manager's /metrics.
func (cp *ControlPlane) HPASyncs(ctx context.Context) (HPASyncs, error) {
	var s HPASyncs
	url := loopbackURL("https", cp.ports.controllerManager) + "/metrics"
	families, err := ScrapeFamiliesAs(ctx, cp.selfSignedClient(), "", url)
	if err != nil {
		return s, err
	}
	const prefix = "horizontal_pod_autoscaler_controller_"
	for _, m := range families[prefix+"num_horizontal_pod_autoscalers"].GetMetric() {
		s.HPAs = int(m.GetGauge().GetValue())
	}
	reconciliations, ok := families[prefix+"reconciliations_total"]
	if !ok {
		return s, fmt.Errorf("%s has no %sreconciliations_total", url, prefix)
	}
	for _, m := range reconciliations.GetMetric() {
		n := int(m.GetCounter().GetValue())
		failed := false
		for _, l := range m.GetLabel() {
			if l.GetName() == "error" && l.GetValue() != "none" {
				failed = true
			}
		}
		if failed {
			s.Failed += n
		} else {
			s.Succeeded += n
		}
	}
	return s, nil
}

// HPARecorder records every distinct status an HPA takes, from a watch, so
// that no sync's outcome is missed between polls.
type HPARecorder struct {
	mu      sync.Mutex
	history []autoscalingv2.HorizontalPodAutoscalerStatus
}

// RecordHPA starts recording the statuses of the HPA namespace/name; it
// stops at the end of the test. It returns once the watch has synced.
func (cp *ControlPlane) RecordHPA(t testing.TB, namespace, name string) *HPARecorder {
	t.Helper()
	r := &HPARecorder{}
	factory := informers.NewSharedInformerFactoryWithOptions(cp.Client, 0,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	informer := factory.Autoscaling().V2().HorizontalPodAutoscalers().Informer()
	on := func(obj any) {
		h, ok := obj.(*autoscalingv2.HorizontalPodAutoscaler)
		if !ok {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if n := len(r.history); n == 0 || !apiequality.Semantic.DeepEqual(r.history[n-1], h.Status) {
			r.history = append(r.history, *h.Status.DeepCopy())
		}
	}
	runInformer(t, factory, informer, cache.ResourceEventHandlerFuncs{
		AddFunc:    on,
		UpdateFunc: func(_, obj any) { on(obj) },
	}, "the HPA watch of "+namespace+"/"+name)
	return r
}

// Statuses returns the recorded statuses, oldest first.
func (r *HPARecorder) Statuses() []autoscalingv2.HorizontalPodAutoscalerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.history)
}
