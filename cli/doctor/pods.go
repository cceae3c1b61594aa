package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/kubeapi"
)

// PodMetrics are the metrics served per pod, the first being the one an
// HPA usually scales on.
var PodMetrics = []string{"gpu_utilization", "gpu_memory_used_bytes", "gpu_memory_utilization", "gpu_power_usage_watts"}

// checkPods: check 4, for --pod or every pod of --hpa's target, why it has
// or lacks each metric.
func (d *Doctor) checkPods(ctx context.Context, cfg Config, r *report, st *state) {
	const name = "pod"
	var pods []corev1.Pod
	if cfg.Pod != "" {
		p, err := d.Kube.CoreV1().Pods(cfg.Namespace).Get(ctx, cfg.Pod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			r.fail(name, "", "pod %s/%s does not exist", cfg.Namespace, cfg.Pod)
			return
		}
		if err != nil {
			r.failed(name, kubeapi.Explain(err, "get", "", "pods", cfg.Namespace), "pod "+cfg.Pod)
			return
		}
		pods = []corev1.Pod{*p}
	} else {
		sel, target, err := d.hpaSelector(ctx, cfg.Namespace, cfg.HPA)
		if err != nil {
			r.failed(name, err, "the pods of HPA "+cfg.HPA)
			return
		}
		list, err := d.Kube.CoreV1().Pods(cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
		if err != nil {
			r.failed(name, kubeapi.Explain(err, "list", "", "pods", cfg.Namespace), "the pods of "+target)
			return
		}
		if len(list.Items) == 0 {
			r.fail(name, "", "%s (HPA %s/%s) has no pod", target, cfg.Namespace, cfg.HPA)
			return
		}
		pods = list.Items
	}
	if err := d.listAgents(ctx, cfg, st); err != nil && !r.denied(name, err, "which node runs an agent") {
		r.failed(name, err, "the agent pods")
	}
	for i := range pods {
		d.checkPod(ctx, &pods[i], r, st)
	}
}

// hpaSelector is the label selector of the pods of HPA name's target.
func (d *Doctor) hpaSelector(ctx context.Context, ns, name string) (labels.Selector, string, error) {
	hpa, err := d.Kube.AutoscalingV2().HorizontalPodAutoscalers(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, "", kubeapi.Explain(err, "get", "autoscaling", "horizontalpodautoscalers", ns)
	}
	ref := hpa.Spec.ScaleTargetRef
	target := ref.Kind + " " + ref.Name
	var sel *metav1.LabelSelector
	apps := d.Kube.AppsV1()
	switch ref.Kind {
	case "Deployment":
		o, err := apps.Deployments(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, target, kubeapi.Explain(err, "get", "apps", "deployments", ns)
		}
		sel = o.Spec.Selector
	case "StatefulSet":
		o, err := apps.StatefulSets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, target, kubeapi.Explain(err, "get", "apps", "statefulsets", ns)
		}
		sel = o.Spec.Selector
	case "ReplicaSet":
		o, err := apps.ReplicaSets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, target, kubeapi.Explain(err, "get", "apps", "replicasets", ns)
		}
		sel = o.Spec.Selector
	default:
		return nil, target, fmt.Errorf("cannot find the pods of a %s (only Deployment, StatefulSet, ReplicaSet); use --pod", ref.Kind)
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return s, target, err
}

// requestsGPU reports whether a container of the pod holds GPUs.
func requestsGPU(p *corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		for res := range c.Resources.Limits {
			if kubeapi.IsGPUResource(res) {
				return true
			}
		}
	}
	return false
}

// checkPod explains one pod's metrics: the values served, else the first
// link of the chain that is missing.
func (d *Doctor) checkPod(ctx context.Context, p *corev1.Pod, r *report, st *state) {
	const name = "pod"
	id := p.Namespace + "/" + p.Name
	var served, missing []string
	var freshness string
	for _, metric := range PodMetrics {
		mv, err := d.Metrics.NamespacedMetrics(p.Namespace).GetForObject(schema.GroupKind{Kind: "Pod"}, p.Name, metric, labels.Everything())
		if err != nil {
			err = kubeapi.Explain(err, "get", kubeapi.CustomMetricsGroup, "pods/"+metric, p.Namespace)
			var f *kubeapi.Forbidden
			if errors.As(err, &f) {
				r.denied(name, err, "the metrics of pod "+id)
				return
			}
			if !apierrors.IsNotFound(errors.Unwrap(err)) && !apierrors.IsNotFound(err) {
				r.fail(name, "the apiservice and aggregator checks say why the API does not answer", "pod %s: reading %s: %v", id, metric, err)
				return
			}
			missing = append(missing, metric)
			continue
		}
		served = append(served, metric+" "+mv.Value.String())
		if freshness == "" {
			freshness = fmt.Sprintf(" (sample %v old, window %ds)", d.Now().Sub(mv.Timestamp.Time).Round(time.Second), windowOf(mv.WindowSeconds))
		}
	}
	if len(served) > 0 {
		msg := fmt.Sprintf("pod %s is served: %s%s", id, strings.Join(served, ", "), freshness)
		if len(missing) > 0 {
			msg += "; not served: " + strings.Join(missing, ", ") + " (its GPUs do not report them)"
		}
		r.pass(name, "%s", msg)
		return
	}
	if p.Spec.NodeName == "" {
		why := "no PodScheduled condition yet"
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
				why = strings.TrimSpace(c.Reason + ": " + c.Message)
			}
		}
		r.fail(name, fmt.Sprintf("kubectl -n %s describe pod %s: the scheduler's events say what it lacks", p.Namespace, p.Name),
			"pod %s has no metric: it is not scheduled (%s)", id, why)
		return
	}
	if !requestsGPU(p) {
		r.fail(name, "request a GPU in the container's resources.limits (nvidia.com/gpu: 1, or a shared or MIG resource)",
			"pod %s has no metric: it requests no GPU (no nvidia.com/gpu, nvidia.com/gpu.shared or nvidia.com/mig-* limit)", id)
		return
	}
	node := p.Spec.NodeName
	switch {
	case st.agentsRead && st.agents[node] == nil:
		r.fail(name, "the agent checks above show why the node runs no agent",
			"pod %s has no metric: its node %s runs no agent", id, node)
	case st.agentMetrics[node] != nil && st.agentMetrics[node].podDevices(p.Namespace, p.Name) == 0:
		r.fail(name, "the agent learns which pod holds a GPU from the kubelet's pod-resources API: check the agent's pod_resources status above and that the pod's GPU comes from the device plugin",
			"pod %s has no metric: the agent on node %s sees no device for it (the kubelet's pod-resources API does not list it)", id, node)
	case st.agentMetrics[node] != nil:
		r.fail(name, "the aggregator checks above say whether it scrapes this agent; a sample older than --stale-after is not served",
			"pod %s has no metric: the agent on node %s serves its device, but the API does not: its sample is stale in the aggregator, or the aggregator does not scrape this agent", id, node)
	default:
		r.fail(name, "the agent and aggregator checks above narrow it down",
			"pod %s has no metric (the agent on node %s could not be read to say why)", id, node)
	}
}

func windowOf(w *int64) int64 {
	if w == nil {
		return 0
	}
	return *w
}
