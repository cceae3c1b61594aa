package doctor

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/kubeapi"
)

// Self-metrics the checks read.
const (
	metricScrapeTargets  = "gpu_metrics_server_scrape_targets"
	metricScrapeErrors   = "gpu_metrics_server_scrape_errors_total"
	metricPodResourcesUp = "gpu_metrics_server_pod_resources_up"
	metricDevices        = "gpu_metrics_server_devices"
	metricSampleTime     = "gpu_metrics_server_sample_timestamp_seconds"
	metricDelegateUp     = "gpu_metrics_server_delegate_up"
	metricDelegateFound  = "gpu_metrics_server_delegate_discovered_metrics"
	metricDelegateReqs   = "gpu_metrics_server_delegate_requests_total"
)

// podReady reports whether the pod is Ready, else why not.
func podReady(p *corev1.Pod) (bool, string) {
	if p.DeletionTimestamp != nil {
		return false, "terminating"
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true, ""
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			return false, strings.TrimSpace(fmt.Sprintf("container %s is waiting: %s %s", cs.Name, w.Reason, w.Message))
		}
		if t := cs.State.Terminated; t != nil {
			return false, fmt.Sprintf("container %s terminated: %s (exit %d)", cs.Name, t.Reason, t.ExitCode)
		}
	}
	if p.Spec.NodeName == "" {
		return false, "not scheduled"
	}
	return false, fmt.Sprintf("phase %s, not Ready (readiness probe failing?)", p.Status.Phase)
}

// checkAggregator: check 2, the aggregator pods are ready, its Service has
// endpoints, and its self-metrics show targets scraped.
func (d *Doctor) checkAggregator(ctx context.Context, cfg Config, r *report, st *state) {
	const name = "aggregator"
	if err := d.listAggregators(ctx, cfg, st); err != nil {
		r.failed(name, err, "the aggregator pods")
		return
	}
	if len(st.aggregators) == 0 {
		r.fail(name, "install gpu-metrics-server (helm: aggregator.enabled=true), or give the namespace and selector it runs with (--server-namespace, --aggregator-selector)",
			"no aggregator pod in namespace %s matches %s", cfg.ServerNamespace, cfg.AggregatorSelector)
		return
	}
	for i := range st.aggregators {
		p := &st.aggregators[i]
		ok, why := podReady(p)
		if !ok {
			r.fail(name, fmt.Sprintf("kubectl -n %s describe pod %s; kubectl -n %s logs %s", p.Namespace, p.Name, p.Namespace, p.Name),
				"pod %s/%s is not ready: %s", p.Namespace, p.Name, why)
			continue
		}
		r.pass(name, "pod %s/%s is ready on node %s", p.Namespace, p.Name, p.Spec.NodeName)
		d.checkAggregatorMetrics(ctx, p, r)
	}
	ours, err := d.ourServices(ctx, cfg, st)
	if err != nil {
		r.failed(name, err, "the aggregator's Service")
		return
	}
	names := make([]string, 0, len(ours))
	for n := range ours {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		r.fail(name, "the chart's aggregator Service selects the aggregator pods; reinstall it", "no Service in namespace %s selects the aggregator pods", cfg.ServerNamespace)
	}
	for _, svc := range names {
		slices, err := d.Kube.DiscoveryV1().EndpointSlices(cfg.ServerNamespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
		if err != nil {
			r.failed(name, kubeapi.Explain(err, "list", "discovery.k8s.io", "endpointslices", cfg.ServerNamespace), "the endpoints of Service "+svc)
			continue
		}
		var ready []string
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready == nil || *e.Conditions.Ready {
					ready = append(ready, e.Addresses...)
				}
			}
		}
		if len(ready) == 0 {
			r.fail(name, "kube-apiserver reaches the aggregator through this Service: make an aggregator pod ready (see above)",
				"Service %s/%s has no ready endpoint", cfg.ServerNamespace, svc)
			continue
		}
		sort.Strings(ready)
		r.pass(name, "Service %s/%s has ready endpoints %s", cfg.ServerNamespace, svc, strings.Join(ready, ", "))
	}
}

// checkAggregatorMetrics reads a ready aggregator's scrape status.
func (d *Doctor) checkAggregatorMetrics(ctx context.Context, p *corev1.Pod, r *report) {
	const name = "aggregator"
	port := containerPort(p, "https")
	b, err := d.SelfMetrics(ctx, p, "https", port)
	what := fmt.Sprintf("the scrape status of %s/%s (its /metrics, through the API server's pod proxy)", p.Namespace, p.Name)
	if r.denied(name, err, what) || r.refused(name, err, what) {
		return
	}
	var m *selfMetrics
	if err == nil {
		m, err = parseSelfMetrics(b)
	}
	if err != nil {
		r.warn(name, fmt.Sprintf("its scrape status is in its /metrics: kubectl get --raw /api/v1/namespaces/%s/pods/https:%s:%s/proxy/metrics", p.Namespace, p.Name, port),
			"could not read the scrape status of %s/%s: %v", p.Namespace, p.Name, err)
		return
	}
	checkDelegate(p, m, r)
	targets, ok := m.value(metricScrapeTargets)
	if !ok || targets == 0 {
		r.fail(name, "check --agent-namespace and --agent-selector against the agent pods (the agent checks below)",
			"%s/%s scrapes no target: it finds no agent", p.Namespace, p.Name)
		return
	}
	var failing []string
	for t, n := range m.byLabel(metricScrapeErrors, "target") {
		if n > 0 {
			failing = append(failing, fmt.Sprintf("%s (%.0f)", t, n))
		}
	}
	sort.Strings(failing)
	if len(failing) > 0 {
		r.warn(name, "the agent checks below show which agents are down",
			"%s/%s scrapes %.0f targets; failed scrapes since it started: %s", p.Namespace, p.Name, targets, strings.Join(failing, ", "))
		return
	}
	r.pass(name, "%s/%s scrapes %.0f targets, no failed scrape", p.Namespace, p.Name, targets)
}

// gpuNodes are the nodes with allocatable GPUs, with their count.
func gpuNodes(nodes []corev1.Node) map[string]int64 {
	out := map[string]int64{}
	for _, n := range nodes {
		var gpus int64
		for res, q := range n.Status.Allocatable {
			if kubeapi.IsGPUResource(res) {
				gpus += q.Value()
			}
		}
		if gpus > 0 {
			out[n.Name] = gpus
		}
	}
	return out
}

// listAgents lists the agent pods once, by node.
func (d *Doctor) listAgents(ctx context.Context, cfg Config, st *state) error {
	if st.agentsRead {
		return nil
	}
	pods, err := d.Kube.CoreV1().Pods(cfg.ServerNamespace).List(ctx, metav1.ListOptions{LabelSelector: cfg.AgentSelector.String()})
	if err != nil {
		return kubeapi.Explain(err, "list", "", "pods", cfg.ServerNamespace)
	}
	st.agents = map[string]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName != "" {
			st.agents[p.Spec.NodeName] = p
		}
	}
	st.agentsRead = true
	st.agentMetrics = map[string]*selfMetrics{}
	return nil
}

// checkAgents: check 3, every GPU node runs a ready agent that reads its
// GPUs, reaches the kubelet's pod-resources API and has a fresh sample.
func (d *Doctor) checkAgents(ctx context.Context, cfg Config, r *report, st *state) {
	const name = "agent"
	nodes, err := d.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		r.failed(name, kubeapi.Explain(err, "list", "", "nodes", ""), "which nodes have GPUs")
		return
	}
	if err := d.listAgents(ctx, cfg, st); err != nil {
		r.failed(name, err, "the agent pods")
		return
	}
	gpus := gpuNodes(nodes.Items)
	if len(gpus) == 0 {
		r.warn(name, "install NVIDIA's device plugin (or the gpu-operator) on the GPU nodes", "no node has allocatable GPUs")
		return
	}
	names := make([]string, 0, len(gpus))
	for n := range gpus {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, node := range names {
		p := st.agents[node]
		if p == nil {
			r.fail(name, fmt.Sprintf("the agent DaemonSet in %s must admit node %s: its nodeSelector, affinity and tolerations (kubectl -n %s describe daemonset)", cfg.ServerNamespace, node, cfg.ServerNamespace),
				"node %s has %d allocatable GPUs but no agent pod", node, gpus[node])
			continue
		}
		if ok, why := podReady(p); !ok {
			r.fail(name, fmt.Sprintf("kubectl -n %s describe pod %s; kubectl -n %s logs %s", p.Namespace, p.Name, p.Namespace, p.Name),
				"node %s: agent %s is not ready: %s", node, p.Name, why)
			continue
		}
		d.checkAgentMetrics(ctx, cfg, node, p, r, st)
	}
}

// checkAgentMetrics reads a ready agent's NVML, pod-resources and sample
// status.
func (d *Doctor) checkAgentMetrics(ctx context.Context, cfg Config, node string, p *corev1.Pod, r *report, st *state) {
	const name = "agent"
	b, err := d.SelfMetrics(ctx, p, "http", containerPort(p, "metrics"))
	what := fmt.Sprintf("node %s: the status of agent %s (its /metrics, through the API server's pod proxy)", node, p.Name)
	if r.denied(name, err, what) || r.refused(name, err, what) {
		return
	}
	var m *selfMetrics
	if err == nil {
		m, err = parseSelfMetrics(b)
	}
	if err != nil {
		r.warn(name, "an agent serving /metrics with TLS or basic auth (--web.config.file) cannot be read through the pod proxy; read it directly",
			"node %s: could not read the status of agent %s: %v", node, p.Name, err)
		return
	}
	st.agentMetrics[node] = m
	var problems []string
	fix := ""
	if n, ok := m.value(metricDevices); ok && n == 0 {
		problems = append(problems, "it reads no GPU through NVML")
		fix = "the agent's log says why NVML fails (driver, container toolkit, NVIDIA_VISIBLE_DEVICES=all)"
	}
	if up, ok := m.value(metricPodResourcesUp); ok && up == 0 {
		problems = append(problems, "the kubelet's pod-resources API does not answer (pod_resources_up 0), so no GPU is attributed to a pod")
		fix = "mount the kubelet's pod-resources directory (/var/lib/kubelet/pod-resources) into the agent and check --pod-resources-socket"
	}
	ts, ok := m.value(metricSampleTime)
	var age time.Duration
	if ok {
		age = d.Now().Sub(time.Unix(0, int64(ts*float64(time.Second))))
	}
	switch {
	case !ok:
		problems = append(problems, "it serves no fresh sample (sampling is stuck or failing)")
		if fix == "" {
			fix = "the agent's log and /readyz say why sampling fails"
		}
	case age > cfg.StaleAfter:
		problems = append(problems, fmt.Sprintf("its newest sample is %v old (stale after %v)", age.Round(time.Second), cfg.StaleAfter))
		if fix == "" {
			fix = "the agent's log says why sampling stopped"
		}
	}
	if len(problems) > 0 {
		r.fail(name, fix, "node %s: agent %s: %s", node, p.Name, strings.Join(problems, "; "))
		return
	}
	devices, _ := m.value(metricDevices)
	r.pass(name, "node %s: agent %s is ready, reads %.0f GPU(s), pod-resources up, newest sample %v old", node, p.Name, devices, age.Round(time.Second))
}

// checkDelegate reports, for an aggregator run with --delegate-to, whether
// the delegate (the adapter that served the group before) answers.
func checkDelegate(p *corev1.Pod, m *selfMetrics, r *report) {
	const name = "aggregator"
	up, ok := m.value(metricDelegateUp)
	if !ok {
		return // no --delegate-to
	}
	var failed []string
	for outcome, n := range m.byLabel(metricDelegateReqs, "outcome") {
		if n > 0 && outcome != "success" && outcome != "client_error" && outcome != "canceled" {
			failed = append(failed, fmt.Sprintf("%s %.0f", outcome, n))
		}
	}
	sort.Strings(failed)
	if up == 0 {
		r.fail(name, "the delegate's Service and pods must be up (--delegate-to names them); the aggregator's log has the error",
			"%s/%s: the delegate (--delegate-to) does not answer: its last discovery refresh failed, so the metrics it served are not served", p.Namespace, p.Name)
		return
	}
	found, _ := m.value(metricDelegateFound)
	if len(failed) > 0 {
		r.warn(name, "the aggregator's log names the failed forwards",
			"%s/%s: the delegate answers (%.0f metrics discovered), but forwarded requests failed since it started: %s", p.Namespace, p.Name, found, strings.Join(failed, ", "))
		return
	}
	r.pass(name, "%s/%s: the delegate answers (%.0f metrics discovered)", p.Namespace, p.Name, found)
}
