//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// The chart's pod labels, which doctor selects on by default.
var (
	aggregatorPodLabels = map[string]string{"app.kubernetes.io/name": "gpu-metrics-server", "app.kubernetes.io/component": "aggregator"}
	agentPodLabels      = map[string]string{"app.kubernetes.io/name": "gpu-metrics-server", "app.kubernetes.io/component": "agent"}
)

// doctorEnv is gpu-metrics-server as doctor sees it: the framework's
// processes, with stand-in pods (framework.StandIn) for the aggregator and
// each agent in the namespace of the APIServices' Service, which selects
// the aggregator's.
type doctorEnv struct {
	env *framework.GMS
	agg *framework.Aggregator
	// ns holds the test's workloads; server is where doctor looks for
	// gpu-metrics-server (--server-namespace).
	ns, server string
	// sa is the aggregator pod's ServiceAccount.
	sa string
	// agents are the agent stand-ins by node index.
	agents []framework.StandIn
	// scrapes are the paths from the aggregator to each agent, by node
	// index: a network the test can cut.
	scrapes []*framework.Forwarder
}

// startDoctorEnv starts two GPU nodes (one GPU each), their agents, the
// aggregator scraping them (each through a Forwarder the test can cut),
// registered as custom.metrics.k8s.io, and their stand-in pods.
func startDoctorEnv(t *testing.T) *doctorEnv {
	ns := cluster.NewNamespace(t, "doctor")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{1, 1}, AgentsOnly: true})
	d := &doctorEnv{env: env, ns: ns, server: framework.APIServiceNamespace, sa: ns + "-aggregator"}

	var urls []string
	for _, n := range env.Nodes {
		u, err := url.Parse(n.URL)
		if err != nil {
			t.Fatal(err)
		}
		fwd := framework.StartForwarder(t, "127.0.0.1", u.Host)
		d.scrapes = append(d.scrapes, fwd)
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d/metrics", fwd.Port))
	}
	d.agg = cluster.StartAggregator(t, framework.TempDir(t, "gms-e2e-doctor-"), urls, cluster.AggregatorFlags()...)
	cluster.RegisterCustomMetrics(t, d.agg.Port)

	d.grantAggregator(t)
	node := env.Nodes[0].Name
	fwd := framework.StartForwarder(t, cluster.NodeInternalIP(t, node), fmt.Sprintf("127.0.0.1:%d", d.agg.Port))
	agg := cluster.CreateStandInPod(t, framework.StandIn{
		Namespace: d.server, Name: ns + "-aggregator", Node: node, Labels: aggregatorPodLabels,
		ServiceAccount: d.sa, PortName: "https", Port: fwd.Port, Scheme: corev1.URISchemeHTTPS, ReadyPath: "/readyz",
	})
	d.selectAggregator(t, agg, fwd.Port)

	for i, n := range env.Nodes {
		u, err := url.Parse(n.URL)
		if err != nil {
			t.Fatal(err)
		}
		fwd := framework.StartForwarder(t, cluster.NodeInternalIP(t, n.Name), u.Host)
		s := framework.StandIn{
			Namespace: d.server, Name: fmt.Sprintf("%s-agent-%d", ns, i), Node: n.Name, Labels: agentPodLabels,
			PortName: "metrics", Port: fwd.Port, Scheme: corev1.URISchemeHTTP, ReadyPath: "/readyz",
		}
		cluster.CreateStandInPod(t, s)
		d.agents = append(d.agents, s)
	}
	return d
}

// grantAggregator creates the aggregator's ServiceAccount with what the
// chart grants it: pods and nodes to read, and system:auth-delegator.
func (d *doctorEnv) grantAggregator(t *testing.T) {
	ctx := t.Context()
	if _, err := cluster.Client.CoreV1().ServiceAccounts(d.server).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: d.sa},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cluster.Client.CoreV1().ServiceAccounts(d.server).Delete(context.Background(), d.sa, metav1.DeleteOptions{})
	})
	rbac := cluster.Client.RbacV1()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: d.sa},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"pods", "nodes"}, Verbs: []string{"get", "list", "watch"},
		}},
	}
	if _, err := rbac.ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rbac.ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{}) })
	d.bindAggregator(t, d.sa, d.sa)
	d.bindAggregator(t, d.sa+"-auth-delegator", "system:auth-delegator")
}

// bindAggregator binds the aggregator's ServiceAccount to the ClusterRole
// role, as the ClusterRoleBinding name.
func (d *doctorEnv) bindAggregator(t *testing.T, name, role string) {
	rbac := cluster.Client.RbacV1()
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: d.server, Name: d.sa}},
	}
	if _, err := rbac.ClusterRoleBindings().Create(t.Context(), binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := rbac.ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting ClusterRoleBinding %s: %v", name, err)
		}
	})
}

// selectAggregator makes the APIServices' Service select the aggregator's
// stand-in, as the chart's Service selects the aggregator pods, and lists
// the stand-in as its ready endpoint: what the EndpointSlice controller
// (not run in this suite; the Service stays an ExternalName the API server
// reaches the aggregator through) would write.
func (d *doctorEnv) selectAggregator(t *testing.T, agg *corev1.Pod, port int) {
	ctx := t.Context()
	services := cluster.Client.CoreV1().Services(d.server)
	svc, err := services.Get(ctx, framework.APIServiceName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Selector = aggregatorPodLabels
	if _, err := services.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("selecting the aggregator pod: %v", err)
	}
	slices := cluster.Client.DiscoveryV1().EndpointSlices(d.server)
	slice := framework.StandInEndpointSlice(d.ns+"-aggregator", framework.APIServiceName, agg, "https", port, true)
	if _, err := slices.Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slices.Delete(context.Background(), slice.Name, metav1.DeleteOptions{}) })
}

// waitDoctor runs `kubectl-gpu doctor` against the environment with args
// until want holds for its output and exit status.
func (d *doctorEnv) waitDoctor(t *testing.T, what string, want func(out string, code int) bool, args ...string) {
	t.Helper()
	last := "(no complete run)"
	framework.WaitFor(t, 60*time.Second, "doctor: "+what, func(ctx context.Context) (bool, string, error) {
		out, code, _ := runCLI(ctx, t, "kubectl-gpu", append([]string{"doctor", "--server-namespace=" + d.server, "-n", d.ns}, args...)...)
		if code >= 0 {
			last = fmt.Sprintf("exit %d:\n%s", code, out)
		}
		return want(out, code), last, nil
	})
	t.Logf("doctor: %s: %s", what, last)
}

// checkLines are doctor's check lines (not the fix, permission or summary
// lines).
func checkLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && (f[0] == "PASS" || f[0] == "WARN" || f[0] == "FAIL" || f[0] == "SKIP") {
			lines = append(lines, l)
		}
	}
	return lines
}

// allPass reports whether doctor's output has check lines, every one
// PASS, but for those of except (status topic, message excerpt), and
// exit status 0.
func allPass(out string, code int, except ...[3]string) bool {
	lines := checkLines(out)
	if code != 0 || len(lines) == 0 {
		return false
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "PASS") {
			continue
		}
		excepted := false
		for _, e := range except {
			excepted = excepted || hasLine(l, e[0], e[1], e[2])
		}
		if !excepted {
			return false
		}
	}
	return true
}

// failsWith reports whether doctor's output has the line (status, topic,
// message excerpt) and exit status 1.
func failsWith(status, topic, text string) func(string, int) bool {
	return func(out string, code int) bool { return code == 1 && hasLine(out, status, topic, text) }
}

// TestDoctor: doctor against the real API server, the aggregator's and the
// agents' real self-metrics (through the API server's pod proxy) and
// stand-in pods: all PASS on the healthy setup; each setup broken on
// purpose is pinpointed with its line and exit status 1, and all PASS
// again once repaired.
func TestDoctor(t *testing.T) {
	d := startDoctorEnv(t)
	cluster.CreateDeployment(t, framework.GPUDeployment(d.ns, "trainer", 1))
	pod := cluster.WaitPods(t, d.ns, "app=trainer", 1)[0]
	p, err := cluster.Client.CoreV1().Pods(d.ns).Get(t.Context(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podNode := -1
	for i, n := range d.env.Nodes {
		if n.Name == p.Spec.NodeName {
			podNode = i
		}
	}
	if podNode < 0 {
		t.Fatalf("pod %s runs on %q, not on a GPU node of the test", pod, p.Spec.NodeName)
	}
	served := [3]string{"PASS", "pod", fmt.Sprintf("pod %s/%s is served: gpu_utilization ", d.ns, pod)}
	healthy := func(out string, code int, except ...[3]string) bool {
		return allPass(out, code, except...) && hasLine(out, served[0], served[1], served[2])
	}

	// The aggregator authorizes /metrics (delegated to kube-apiserver),
	// and the pod proxy reads it as system:anonymous: doctor says it may
	// not check the scrape status, and why; nothing fails.
	refused := [3]string{"SKIP", "aggregator", fmt.Sprintf("not allowed to check the scrape status of %s/%s-aggregator (its /metrics, through the API server's pod proxy): pod %s/%s-aggregator refused the API server's pod proxy, which reads /metrics as system:anonymous", d.server, d.ns, d.server, d.ns)}
	d.waitDoctor(t, "all PASS but the aggregator's scrape status, refused to system:anonymous", func(out string, code int) bool {
		return healthy(out, code, refused) && hasLine(out, refused[0], refused[1], refused[2])
	}, "--pod", pod)

	// Allowed to read it, doctor reads the scrape status: all PASS.
	grantAnonymousMetrics(t)
	agents := len(d.env.Nodes)
	d.waitDoctor(t, "all PASS", func(out string, code int) bool {
		return healthy(out, code) && hasLine(out, "PASS", "aggregator", fmt.Sprintf("%s/%s-aggregator scrapes %d targets, no failed scrape", d.server, d.ns, agents)) &&
			hasLine(out, "PASS", "agent", fmt.Sprintf("node %s: agent %s is ready, reads 1 GPU(s), pod-resources up", d.env.Nodes[1].Name, d.agents[1].Name))
	}, "--pod", pod)
	repaired := func(what string) {
		t.Helper()
		d.waitDoctor(t, "all PASS once "+what+" is repaired", func(out string, code int) bool { return healthy(out, code) }, "--pod", pod)
	}

	// The APIServices point at another server's Service.
	for _, v := range framework.CustomMetricsVersions {
		cluster.PutAPIService(t, v, "gms-e2e-other", "other-metrics-adapter", 443)
	}
	d.waitDoctor(t, "the APIService points elsewhere", failsWith("FAIL", "apiservice", fmt.Sprintf(
		"APIService v1beta2.custom.metrics.k8s.io points at Service gms-e2e-other/other-metrics-adapter (owner: no Helm release or app labels), not at gpu-metrics-server's %s/%s", d.server, framework.APIServiceName)))
	for _, v := range framework.CustomMetricsVersions {
		cluster.PutAPIService(t, v, d.server, framework.APIServiceName, d.agg.Port)
	}
	for _, v := range framework.CustomMetricsVersions {
		cluster.WaitAPIServiceAvailable(t, v)
	}
	repaired("the APIService")

	// The aggregator's ServiceAccount lacks system:auth-delegator.
	delegator := d.sa + "-auth-delegator"
	if err := cluster.Client.RbacV1().ClusterRoleBindings().Delete(t.Context(), delegator, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	d.waitDoctor(t, "the aggregator's ServiceAccount lacks a permission", failsWith("FAIL", "rbac", fmt.Sprintf(
		"the aggregator's ServiceAccount %s/%s may not create tokenreviews.authentication.k8s.io (to authenticate its callers (system:auth-delegator))", d.server, d.sa)), "--pod", pod)
	d.bindAggregator(t, delegator, "system:auth-delegator")
	repaired("the ServiceAccount's permission")

	// No agent on one GPU node.
	missing := d.env.Nodes[1].Name
	cluster.DeleteStandInPod(t, d.server, d.agents[1].Name)
	d.waitDoctor(t, "no agent on "+missing, failsWith("FAIL", "agent", fmt.Sprintf("node %s has 1 allocatable GPUs but no agent pod", missing)), "--pod", pod)
	cluster.CreateStandInPod(t, d.agents[1])
	repaired("the agent pod")

	// One agent's kubelet socket is gone (the kubelet is down, its
	// pod-resources socket removed).
	n := d.env.Nodes[1]
	n.Node.RestartKubelet(t, func() {
		if err := os.Remove(filepath.Join(n.Node.Dir, "var-lib", strings.TrimPrefix(framework.PodResourcesSocket, "/var/lib/"))); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		d.waitDoctor(t, "the kubelet socket of "+n.Name+" gone", failsWith("FAIL", "agent", fmt.Sprintf(
			"node %s: agent %s: the kubelet's pod-resources API does not answer (pod_resources_up 0), so no GPU is attributed to a pod", n.Name, d.agents[1].Name)))
	})
	repaired("the kubelet")

	// The aggregator can no longer scrape the agent of the pod's node:
	// the pod's sample goes stale and is no longer served, while the
	// agent still serves it.
	d.scrapes[podNode].SetDown(true)
	d.waitDoctor(t, "the sample of "+pod+" stale", func(out string, code int) bool {
		return code == 1 && hasLine(out, "FAIL", "pod", fmt.Sprintf(
			"pod %s/%s has no metric: the agent on node %s serves its device, but the API does not: its sample is stale in the aggregator, or the aggregator does not scrape this agent", d.ns, pod, d.env.Nodes[podNode].Name)) &&
			hasLine(out, "WARN", "aggregator", fmt.Sprintf("%s/%s-aggregator scrapes %d targets; failed scrapes since it started: ", d.server, d.ns, agents))
	}, "--pod", pod)
}

// grantAnonymousMetrics lets system:anonymous get the non-resource URL
// /metrics until the end of the test: what lets the API server's pod
// proxy (which sends no credentials) read a server's /metrics that
// authorizes it with kube-apiserver, as the aggregator does.
func grantAnonymousMetrics(t *testing.T) {
	rbac := cluster.Client.RbacV1()
	name := "gms-e2e-anonymous-metrics"
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}},
	}
	if _, err := rbac.ClusterRoles().Create(t.Context(), role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rbac.ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "system:anonymous"}},
	}
	if _, err := rbac.ClusterRoleBindings().Create(t.Context(), binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rbac.ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{}) })
}
