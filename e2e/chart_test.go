//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// chartRelease is the release TestHelmChart installs: its cluster-wide
// objects are named "gms-e2e-gpu-metrics-server-…", apart from the
// rendered manifests' (TestDeployManifests).
const chartRelease = "gms-e2e"

// TestHelmChart installs the chart with helm into the cluster, a GPU node
// (labelled nvidia.com/gpu.present, as GPU feature discovery does) beside
// the node without GPUs: the agent DaemonSet gets a pod on the GPU node
// and none on the other, the aggregator's two replicas land on different
// nodes (the chart's anti-affinity), its PodDisruptionBudget covers them,
// and both APIServices route to the chart's Service with the chart's CA.
// The fake container runtime runs no process, so the pods never become
// Ready and the APIServices stay unavailable: serving is what the other
// tests prove with the suite's own aggregator. Then helm uninstall removes
// every object the release created, and their pods go.
func TestHelmChart(t *testing.T) {
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ns := cluster.NewNamespace(t, "chart")
	gpuNode := cluster.StartNode(t, framework.NodeOptions{
		Name:   ns + "-gpu",
		Labels: map[string]string{framework.GPUPresentLabel: "true"},
		GPUs:   1,
	})
	// Cleanups run last first: uninstall, then wait for the pods to go,
	// then stop the node.
	cluster.DeleteWorkloadsAtEnd(t, ns)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := cluster.Helm(ctx, "uninstall", chartRelease, "--namespace", ns, "--ignore-not-found"); err != nil {
			t.Error(err)
		}
	})

	cluster.HelmT(t, "install", chartRelease, filepath.Join(root, "deploy", "helm", "gpu-metrics-server"),
		"--namespace", ns, "--set", "agent.backend=sim")
	manifest := cluster.HelmT(t, "get", "manifest", chartRelease, "--namespace", ns)
	objs := decodeObjects(t, "helm get manifest", []byte(manifest))
	one := func(kind string) *unstructured.Unstructured {
		t.Helper()
		var found []*unstructured.Unstructured
		for _, o := range objs {
			if o.GetKind() == kind {
				found = append(found, o)
			}
		}
		if len(found) != 1 {
			t.Fatalf("the release has %d %s objects, want 1", len(found), kind)
		}
		return found[0]
	}
	selectorOf := func(o *unstructured.Unstructured, path ...string) string {
		t.Helper()
		m, _, err := unstructured.NestedStringMap(o.Object, path...)
		if err != nil || len(m) == 0 {
			t.Fatalf("%s %s has no selector at %v (%v)", o.GetKind(), o.GetName(), path, err)
		}
		return labels.SelectorFromSet(m).String()
	}

	// The agent: one pod, on the GPU node.
	ds := one("DaemonSet")
	agentSelector := selectorOf(ds, "spec", "selector", "matchLabels")
	framework.WaitFor(t, 2*time.Minute, "the agent DaemonSet to run one pod, on "+gpuNode.Name, func(ctx context.Context) (bool, string, error) {
		d, err := cluster.Client.AppsV1().DaemonSets(ns).Get(ctx, ds.GetName(), metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		pods, state, err := podsOn(ctx, ns, agentSelector)
		if err != nil {
			return false, err.Error(), nil
		}
		st := d.Status
		ok := st.DesiredNumberScheduled == 1 && st.CurrentNumberScheduled == 1 && len(pods) == 1 && pods[0].Spec.NodeName == gpuNode.Name && pods[0].Status.Phase == corev1.PodRunning
		return ok, fmt.Sprintf("desired %d scheduled %d; pods %s", st.DesiredNumberScheduled, st.CurrentNumberScheduled, state), nil
	})

	// The aggregator: two replicas on different nodes.
	deploy := one("Deployment")
	aggregatorSelector := selectorOf(deploy, "spec", "selector", "matchLabels")
	var aggregatorPods []string
	framework.WaitFor(t, 2*time.Minute, "the aggregator's 2 replicas to run on different nodes", func(ctx context.Context) (bool, string, error) {
		pods, state, err := podsOn(ctx, ns, aggregatorSelector)
		if err != nil {
			return false, err.Error(), nil
		}
		nodes := map[string]bool{}
		aggregatorPods = nil
		for _, p := range pods {
			if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName != "" {
				nodes[p.Spec.NodeName] = true
				aggregatorPods = append(aggregatorPods, p.Name)
			}
		}
		return len(pods) == 2 && len(nodes) == 2, "pods " + state, nil
	})
	slices.Sort(aggregatorPods)
	// Spread by the chart's anti-affinity (the default "soft" preset), not
	// by chance: the Deployment the cluster runs asks for it, per node,
	// against its own pods.
	d, err := cluster.Client.AppsV1().Deployments(ns).Get(t.Context(), deploy.GetName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var antiAffinity []string
	if a := d.Spec.Template.Spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, w := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			s, err := metav1.LabelSelectorAsSelector(w.PodAffinityTerm.LabelSelector)
			if err != nil {
				t.Fatal(err)
			}
			antiAffinity = append(antiAffinity, fmt.Sprintf("%s %s", w.PodAffinityTerm.TopologyKey, s))
		}
	}
	if want := []string{corev1.LabelHostname + " " + aggregatorSelector}; !slices.Equal(antiAffinity, want) {
		t.Errorf("the aggregator Deployment's preferred pod anti-affinity is %q, want %q", antiAffinity, want)
	}

	// Its PodDisruptionBudget selects exactly those pods.
	pdb, err := cluster.Client.PolicyV1().PodDisruptionBudgets(ns).Get(t.Context(), one("PodDisruptionBudget").GetName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget %s: maxUnavailable %v, want 1", pdb.Name, pdb.Spec.MaxUnavailable)
	}
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	covered, _, err := podsOn(t.Context(), ns, sel.String())
	if err != nil {
		t.Fatal(err)
	}
	var coveredNames []string
	for _, p := range covered {
		coveredNames = append(coveredNames, p.Name)
	}
	slices.Sort(coveredNames)
	if !slices.Equal(coveredNames, aggregatorPods) {
		t.Errorf("PodDisruptionBudget %s selects %v, want the aggregator's pods %v", pdb.Name, coveredNames, aggregatorPods)
	}

	// The APIServices route to the chart's Service, trusting the chart's CA.
	var service *unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Service" && strings.HasSuffix(o.GetName(), "-aggregator") {
			service = o
		}
	}
	if service == nil {
		t.Fatal("the release has no aggregator Service")
	}
	if got := selectorOf(service, "spec", "selector"); got != aggregatorSelector {
		t.Errorf("Service %s selects %s, want the aggregator's pods (%s)", service.GetName(), got, aggregatorSelector)
	}
	caBundle, _, _ := unstructured.NestedString(one("Secret").Object, "data", "ca.crt")
	for _, version := range framework.CustomMetricsVersions {
		out, err := cluster.Kubectl(t.Context(), nil, "get", "apiservice", version+".custom.metrics.k8s.io", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var apiService struct {
			Spec struct {
				Service struct {
					Namespace, Name string
					Port            int
				}
				CABundle string `json:"caBundle"`
			}
			Status struct {
				Conditions []metav1.Condition
			}
		}
		if err := json.Unmarshal([]byte(out), &apiService); err != nil {
			t.Fatal(err)
		}
		svc := apiService.Spec.Service
		if svc.Namespace != ns || svc.Name != service.GetName() || svc.Port != 443 {
			t.Errorf("APIService %s routes to %s/%s:%d, want %s/%s:443", version, svc.Namespace, svc.Name, svc.Port, ns, service.GetName())
		}
		if caBundle == "" || apiService.Spec.CABundle != caBundle {
			t.Errorf("APIService %s trusts a CA bundle other than the chart Secret's ca.crt", version)
		}
		for _, c := range apiService.Status.Conditions {
			if c.Type == "Available" {
				t.Logf("APIService %s: Available=%s (%s): the aggregator's pods run no process (fake runtime) and are never Ready", version, c.Status, c.Reason)
			}
		}
	}

	// helm uninstall removes everything the release created.
	cluster.HelmT(t, "uninstall", chartRelease, "--namespace", ns, "--wait")
	framework.WaitFor(t, 2*time.Minute, "every object of the release to be gone", func(ctx context.Context) (bool, string, error) {
		out, err := cluster.Kubectl(ctx, []byte(manifest), "get", "--namespace", ns, "-f", "-", "--ignore-not-found", "-o", "name")
		if err != nil {
			return false, err.Error(), nil
		}
		left := strings.Fields(out)
		return len(left) == 0, fmt.Sprintf("left: %v", left), nil
	})
	framework.WaitFor(t, 2*time.Minute, "the release's pods to be gone", func(ctx context.Context) (bool, string, error) {
		pods, state, err := podsOn(ctx, ns, "app.kubernetes.io/instance="+chartRelease)
		if err != nil {
			return false, err.Error(), nil
		}
		return len(pods) == 0, "pods " + state, nil
	})
	if out := cluster.HelmT(t, "list", "--namespace", ns, "--all", "--short"); strings.TrimSpace(out) != "" {
		t.Errorf("helm still lists releases after uninstall: %q", out)
	}
}

// podsOn returns the pods of namespace matching selector, and a summary
// (name=phase@node) for messages.
func podsOn(ctx context.Context, namespace, selector string) ([]corev1.Pod, string, error) {
	list, err := cluster.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, "", err
	}
	var states []string
	for _, p := range list.Items {
		states = append(states, fmt.Sprintf("%s=%s@%s", p.Name, p.Status.Phase, p.Spec.NodeName))
	}
	return list.Items, strings.Join(states, " "), nil
}
