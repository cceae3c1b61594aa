package doctor

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/kubeapi"
)

// state is what one check found that a later one uses.
type state struct {
	// aggregators are the aggregator pods; aggregatorsRead: listed.
	aggregators     []corev1.Pod
	aggregatorsRead bool
	// agents are the agent pods by node.
	agents     map[string]*corev1.Pod
	agentsRead bool
	// agentMetrics are the agents' parsed self-metrics by node.
	agentMetrics map[string]*selfMetrics
}

// APIServiceResource is the APIService resource (kube-aggregator), read
// with the dynamic client.
var APIServiceResource = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// apiServiceVersions are the custom metrics API versions the aggregator
// serves, newest first.
var apiServiceVersions = []string{"v1beta2", "v1beta1"}

// listAggregators lists the aggregator pods once.
func (d *Doctor) listAggregators(ctx context.Context, cfg Config, st *state) error {
	if st.aggregatorsRead {
		return nil
	}
	pods, err := d.Kube.CoreV1().Pods(cfg.ServerNamespace).List(ctx, metav1.ListOptions{LabelSelector: cfg.AggregatorSelector.String()})
	if err != nil {
		return kubeapi.Explain(err, "list", "", "pods", cfg.ServerNamespace)
	}
	st.aggregators, st.aggregatorsRead = pods.Items, true
	return nil
}

// ourServices are the Services of ServerNamespace selecting an aggregator
// pod, by name.
func (d *Doctor) ourServices(ctx context.Context, cfg Config, st *state) (map[string]bool, error) {
	if err := d.listAggregators(ctx, cfg, st); err != nil {
		return nil, err
	}
	svcs, err := d.Kube.CoreV1().Services(cfg.ServerNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, kubeapi.Explain(err, "list", "", "services", cfg.ServerNamespace)
	}
	ours := map[string]bool{}
	for _, s := range svcs.Items {
		if len(s.Spec.Selector) == 0 {
			continue
		}
		sel := labels.SelectorFromSet(s.Spec.Selector)
		for _, p := range st.aggregators {
			if sel.Matches(labels.Set(p.Labels)) {
				ours[s.Name] = true
			}
		}
	}
	return ours, nil
}

// owner describes who made an object, from the labels and annotations Helm
// and the common tools leave.
func owner(u *unstructured.Unstructured) string {
	var parts []string
	if n := u.GetAnnotations()["meta.helm.sh/release-name"]; n != "" {
		parts = append(parts, fmt.Sprintf("Helm release %s/%s", u.GetAnnotations()["meta.helm.sh/release-namespace"], n))
	}
	for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app"} {
		if v := u.GetLabels()[k]; v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	if len(parts) == 0 {
		return "no Helm release or app labels"
	}
	return strings.Join(parts, ", ")
}

// checkAPIServices: check 1, the custom.metrics.k8s.io APIServices exist,
// point at our Service and are Available.
func (d *Doctor) checkAPIServices(ctx context.Context, cfg Config, r *report, st *state) {
	const name = "apiservice"
	ours, err := d.ourServices(ctx, cfg, st)
	if r.denied(name, err, "which Service is gpu-metrics-server's") {
		ours = nil // still check existence and availability
	} else if err != nil {
		r.failed(name, err, "the aggregator's Services")
		return
	}
	for _, v := range apiServiceVersions {
		apiName := v + "." + kubeapi.CustomMetricsGroup
		u, err := d.Dynamic.Resource(APIServiceResource).Get(ctx, apiName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			r.fail(name, "install gpu-metrics-server with its APIServices (helm: apiService.create=true), or kubectl apply -f deploy/manifests/gpu-metrics-server.yaml",
				"APIService %s does not exist: kube-apiserver serves no %s %s", apiName, kubeapi.CustomMetricsGroup, v)
			continue
		}
		if err != nil {
			r.failed(name, kubeapi.Explain(err, "get", APIServiceResource.Group, "apiservices", ""), "APIService "+apiName)
			continue
		}
		svcNS, _, _ := unstructured.NestedString(u.Object, "spec", "service", "namespace")
		svcName, _, _ := unstructured.NestedString(u.Object, "spec", "service", "name")
		if svcName == "" {
			r.fail(name, fmt.Sprintf("kubectl delete apiservice %s, then reinstall gpu-metrics-server's", apiName),
				"APIService %s is served locally by kube-apiserver (no spec.service), not by gpu-metrics-server", apiName)
			continue
		}
		if len(ours) > 0 && (svcNS != cfg.ServerNamespace || !ours[svcName]) {
			var names []string
			for n := range ours {
				names = append(names, cfg.ServerNamespace+"/"+n)
			}
			sort.Strings(names)
			r.fail(name, fmt.Sprintf("only one server can own %s: remove the other server's APIServices (kubectl delete apiservice %s), then install gpu-metrics-server's (helm: apiService.create=true)", kubeapi.CustomMetricsGroup, apiName),
				"APIService %s points at Service %s/%s (owner: %s), not at gpu-metrics-server's %s", apiName, svcNS, svcName, owner(u), strings.Join(names, " or "))
			continue
		}
		status, reason, message := availability(u)
		if status != "True" {
			r.fail(name, "the aggregator checks below say why kube-apiserver cannot reach it (pods not ready, no endpoints, TLS)",
				"APIService %s (Service %s/%s) is not Available: %s: %s", apiName, svcNS, svcName, reason, message)
			continue
		}
		if len(ours) == 0 {
			// No aggregator pod found (see the aggregator check), or not
			// allowed to look: whose Service this is stays unknown.
			r.warn(name, "the aggregator check below says why no aggregator pod was found",
				"APIService %s points at Service %s/%s (owner: %s) and is Available, but no Service of an aggregator pod in %s is known to compare it with",
				apiName, svcNS, svcName, owner(u), cfg.ServerNamespace)
			continue
		}
		r.pass(name, "APIService %s points at Service %s/%s and is Available", apiName, svcNS, svcName)
	}
}

// availability is the Available condition of an APIService.
func availability(u *unstructured.Unstructured) (status, reason, message string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != "Available" {
			continue
		}
		s, _ := m["status"].(string)
		reason, _ := m["reason"].(string)
		message, _ := m["message"].(string)
		return s, reason, message
	}
	return "Unknown", "NoCondition", "no Available condition yet"
}
