package doctor

import (
	"context"
	"fmt"
	"sort"
	"strings"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/kubeapi"
)

// servedMetrics are the names of the pod metrics the custom metrics API
// lists, from discovery.
func (d *Doctor) servedMetrics() (map[string]bool, error) {
	out := map[string]bool{}
	for _, v := range apiServiceVersions {
		list, err := d.Kube.Discovery().ServerResourcesForGroupVersion(kubeapi.CustomMetricsGroup + "/" + v)
		if err != nil {
			continue
		}
		for _, res := range list.APIResources {
			if m, ok := strings.CutPrefix(res.Name, "pods/"); ok {
				out[m] = true
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("discovery lists no resource of %s", kubeapi.CustomMetricsGroup)
}

// closest is the name of names nearest to s: one s starts, else the
// nearest by edit distance, ignoring case.
func closest(s string, names map[string]bool) string {
	s = strings.ToLower(s)
	best, bestD := "", -1
	for n := range names {
		dist := editDistance(s, n)
		if strings.HasPrefix(n, s) {
			dist = 0
		}
		if bestD < 0 || dist < bestD || dist == bestD && n < best {
			best, bestD = n, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// hpaMetric is a custom metric an HPA names.
type hpaMetric struct {
	source     autoscalingv2.MetricSourceType
	name       string
	targetType autoscalingv2.MetricTargetType
	// describedKind is the Object metric's object kind.
	describedKind string
}

func gpuMetrics(hpa *autoscalingv2.HorizontalPodAutoscaler) []hpaMetric {
	var out []hpaMetric
	for _, m := range hpa.Spec.Metrics {
		switch {
		case m.Type == autoscalingv2.PodsMetricSourceType && m.Pods != nil:
			out = append(out, hpaMetric{m.Type, m.Pods.Metric.Name, m.Pods.Target.Type, ""})
		case m.Type == autoscalingv2.ObjectMetricSourceType && m.Object != nil:
			out = append(out, hpaMetric{m.Type, m.Object.Metric.Name, m.Object.Target.Type, m.Object.DescribedObject.Kind})
		}
	}
	var gpu []hpaMetric
	for _, m := range out {
		if strings.Contains(strings.ToLower(m.name), "gpu") {
			gpu = append(gpu, m)
		}
	}
	return gpu
}

// checkHPAs: check 5, every HPA naming a GPU metric names one that exists,
// with a target type that fits, and scales.
func (d *Doctor) checkHPAs(ctx context.Context, cfg Config, r *report, st *state) {
	const name = "hpa"
	var hpas []autoscalingv2.HorizontalPodAutoscaler
	if cfg.HPA != "" {
		h, err := d.Kube.AutoscalingV2().HorizontalPodAutoscalers(cfg.Namespace).Get(ctx, cfg.HPA, metav1.GetOptions{})
		if err != nil {
			r.failed(name, kubeapi.Explain(err, "get", "autoscaling", "horizontalpodautoscalers", cfg.Namespace), "HPA "+cfg.HPA)
			return
		}
		hpas = []autoscalingv2.HorizontalPodAutoscaler{*h}
	} else {
		list, err := d.Kube.AutoscalingV2().HorizontalPodAutoscalers(cfg.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			r.failed(name, kubeapi.Explain(err, "list", "autoscaling", "horizontalpodautoscalers", cfg.Namespace), "the HPAs")
			return
		}
		hpas = list.Items
	}
	served, servedErr := d.servedMetrics()
	checked := 0
	for i := range hpas {
		h := &hpas[i]
		metrics := gpuMetrics(h)
		if len(metrics) == 0 {
			continue
		}
		checked++
		d.checkHPA(ctx, h, metrics, served, servedErr, r)
	}
	if checked == 0 && cfg.HPA == "" {
		where := "any namespace"
		if cfg.Namespace != "" {
			where = "namespace " + cfg.Namespace
		}
		r.pass(name, "no HPA in %s names a GPU metric", where)
	}
}

func (d *Doctor) checkHPA(ctx context.Context, h *autoscalingv2.HorizontalPodAutoscaler, metrics []hpaMetric, served map[string]bool, servedErr error, r *report) {
	const name = "hpa"
	id := h.Namespace + "/" + h.Name
	bad := false
	for _, m := range metrics {
		switch {
		case servedErr != nil:
			r.fail(name, "the apiservice checks above say why the custom metrics API lists nothing",
				"HPA %s: cannot tell whether %s exists: %v", id, m.name, servedErr)
			bad = true
		case !served[m.name]:
			r.fail(name, fmt.Sprintf("kubectl -n %s edit hpa %s: metric name %q", h.Namespace, h.Name, closest(m.name, served)),
				"HPA %s names metric %s, which the custom metrics API does not serve (did you mean %s?)", id, m.name, closest(m.name, served))
			bad = true
		case m.source == autoscalingv2.PodsMetricSourceType && m.targetType != autoscalingv2.AverageValueMetricType:
			r.fail(name, "a Pods metric takes target type AverageValue (averageValue: \"60\" for 60 %)",
				"HPA %s: Pods metric %s has target type %s", id, m.name, m.targetType)
			bad = true
		case m.source == autoscalingv2.ObjectMetricSourceType && m.describedKind != "Pod":
			r.fail(name, "use a Pods metric: gpu-metrics-server serves its metrics for pods",
				"HPA %s: Object metric %s describes a %s; the metric exists only for pods", id, m.name, m.describedKind)
			bad = true
		}
	}
	var conds []string
	for _, c := range h.Status.Conditions {
		if (c.Type == autoscalingv2.ScalingActive || c.Type == autoscalingv2.AbleToScale) && c.Status == corev1.ConditionFalse {
			conds = append(conds, fmt.Sprintf("%s=False (%s: %s)", c.Type, c.Reason, c.Message))
		}
	}
	if len(conds) > 0 {
		msg := fmt.Sprintf("HPA %s does not scale: %s", id, strings.Join(conds, "; "))
		if ev := d.lastMetricEvent(ctx, h); ev != "" {
			msg += "; last event: " + ev
		}
		r.fail(name, fmt.Sprintf("kubectl -n %s describe hpa %s; the pod checks (--hpa %s) say which pod lacks a value and why", h.Namespace, h.Name, h.Name), "%s", msg)
		return
	}
	if bad {
		return
	}
	names := make([]string, 0, len(metrics))
	for _, m := range metrics {
		names = append(names, m.name)
	}
	sort.Strings(names)
	r.pass(name, "HPA %s scales on %s, which the API serves", id, strings.Join(names, ", "))
}

// metricEventReasons are the HPA controller's events about reading metrics.
var metricEventReasons = map[string]bool{
	"FailedGetPodsMetric": true, "FailedGetObjectMetric": true, "FailedComputeMetricsReplicas": true,
}

// lastMetricEvent is the newest metric failure event of the HPA.
func (d *Doctor) lastMetricEvent(ctx context.Context, h *autoscalingv2.HorizontalPodAutoscaler) string {
	events, err := d.Kube.CoreV1().Events(h.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name=" + h.Name,
	})
	if err != nil {
		return ""
	}
	var last *corev1.Event
	for i := range events.Items {
		e := &events.Items[i]
		if e.InvolvedObject.Name != h.Name || !metricEventReasons[e.Reason] {
			continue
		}
		if last == nil || e.LastTimestamp.After(last.LastTimestamp.Time) {
			last = e
		}
	}
	if last == nil {
		return ""
	}
	return last.Reason + ": " + last.Message
}
