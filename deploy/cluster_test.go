//go:build chart

package deploy

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// clusterEnv names the kubeconfig of a throwaway cluster for TestOnCluster.
const clusterEnv = "GMS_TEST_KUBECONFIG"

// cluster runs kubectl and helm against the cluster of GMS_TEST_KUBECONFIG.
type cluster struct {
	t          *testing.T
	kubeconfig string
}

func (c cluster) run(stdin []byte, name string, args ...string) (string, error) {
	c.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), err
}

func (c cluster) kubectl(stdin []byte, args ...string) (string, error) {
	c.t.Helper()
	return c.run(stdin, "kubectl", args...)
}

func (c cluster) mustKubectl(stdin []byte, args ...string) string {
	c.t.Helper()
	out, err := c.kubectl(stdin, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

func (c cluster) helm(args ...string) (string, error) {
	c.t.Helper()
	return c.run(nil, helmPath(c.t), args...)
}

// namespace creates a namespace named prefix plus a random suffix, with the
// given labels, deleted at the end; it returns the name. The suffix lets the
// test run again on a cluster where deleted namespaces linger.
func (c cluster) namespace(prefix string, labels ...string) string {
	c.t.Helper()
	name := prefix + "-" + rand.Text()[:8]
	name = strings.ToLower(name)
	c.mustKubectl(nil, "create", "namespace", name)
	c.t.Cleanup(func() { _, _ = c.kubectl(nil, "delete", "namespace", name, "--wait=false") })
	if len(labels) > 0 {
		c.mustKubectl(nil, append([]string{"label", "namespace", name}, labels...)...)
	}
	return name
}

// TestOnCluster checks the chart and the plain manifests against a real
// kube-apiserver: server-side dry runs, kubectl's strict client-side
// validation, the RBAC as the API server evaluates it, and the chart's
// lookups (APIService conflict, certificate reuse, Pod Security notes).
// It creates namespaces, RBAC objects (deleted after) and, when no server
// owns custom.metrics.k8s.io yet, a stand-in foreign APIService for a
// moment: GMS_TEST_KUBECONFIG must name a throwaway cluster, such as the e2e
// control plane. Where a server is already registered (the e2e aggregator)
// the test uses it as the foreign owner and leaves it alone.
func TestOnCluster(t *testing.T) {
	kubeconfig := os.Getenv(clusterEnv)
	if kubeconfig == "" {
		t.Skipf("%s is not set: the cluster checks need a throwaway kube-apiserver (offline checks ran in the other tests)", clusterEnv)
	}
	c := cluster{t, kubeconfig}
	if out, err := c.kubectl(nil, "get", "--raw", "/readyz"); err != nil || strings.TrimSpace(out) != "ok" {
		t.Fatalf("cluster of %s is not ready: %q %v", clusterEnv, out, err)
	}

	t.Run("plain manifests", func(t *testing.T) { testManifestsOnCluster(t, cluster{t, kubeconfig}) })
	t.Run("chart dry-run=server", func(t *testing.T) { testChartDryRun(t, cluster{t, kubeconfig}) })
	t.Run("RBAC", func(t *testing.T) { testRBACOnCluster(t, cluster{t, kubeconfig}) })
	t.Run("lookups", func(t *testing.T) { testLookups(t, cluster{t, kubeconfig}) })
}

// testManifestsOnCluster: kubectl accepts both flavours with strict
// client-side validation and with a server-side dry run (cert-manager's
// objects left out: the cluster has no cert-manager CRDs).
func testManifestsOnCluster(t *testing.T, c cluster) {
	for i, file := range []string{"manifests/gpu-metrics-server.yaml", "manifests/gpu-metrics-server-cert-manager.yaml"} {
		objs := readObjects(t, file)
		if i == 0 {
			// A server-side dry run cannot create objects in a namespace
			// that is only dry-run created: create it for real (both
			// flavours use the same one). It is left in place: without a
			// namespace controller (the e2e control plane has none) a
			// deleted namespace stays Terminating and could not be used
			// again.
			c.mustKubectl(objs[0].Doc, "apply", "-f", "-")
		}
		var stream bytes.Buffer
		for _, o := range objs[1:] {
			if strings.HasPrefix(o.APIVersion, "cert-manager.io/") {
				continue
			}
			stream.WriteString("---\n")
			stream.Write(o.Doc)
		}
		c.mustKubectl(stream.Bytes(), "apply", "--dry-run=client", "--validate=strict", "-f", "-")
		c.mustKubectl(stream.Bytes(), "apply", "--dry-run=server", "--validate=strict", "-f", "-")
	}
}

// testChartDryRun: the API server accepts the chart rendered with each value
// set of the offline tests, but those that render cert-manager or
// prometheus-operator objects, whose CRDs the cluster lacks.
func testChartDryRun(t *testing.T, c cluster) {
	ns := c.namespace("gms-dry-run")
	for _, cc := range chartCases(t) {
		if cc.tlsMode == "cert-manager" || slices.Contains(cc.set, "agent.tls.source=certManager") || slices.Contains(cc.set, "agent.serviceMonitor.enabled=true") {
			continue
		}
		args := []string{"template", "gms-dry-run", chartDir, "--namespace", ns}
		for _, s := range cc.set {
			args = append(args, "--set", s)
		}
		out, err := c.helm(args...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.kubectl([]byte(out), "apply", "--dry-run=server", "--validate=strict", "-f", "-"); err != nil {
			t.Errorf("%s: %v", cc.name, err)
		}
	}
}

// testRBACOnCluster applies the chart's ServiceAccounts and RBAC for real and
// asks the API server what each account may do: the aggregator reads pods
// and nothing else of the cluster's data, the agent nothing, and neither can
// write anything.
func testRBACOnCluster(t *testing.T, c cluster) {
	ns := c.namespace("gms-rbac")
	rel := ns
	// The HPA controller's binding goes to a stand-in account: the real one
	// may already read custom metrics through its built-in role.
	hpa := "system:serviceaccount:" + ns + ":hpa-stand-in"
	out, err := c.helm("template", rel, chartDir, "--namespace", ns, "--set",
		"rbac.hpaController.subjects[0].kind=ServiceAccount,rbac.hpaController.subjects[0].name=hpa-stand-in,rbac.hpaController.subjects[0].namespace="+ns)
	if err != nil {
		t.Fatal(err)
	}
	r := release{rel, ns, splitObjects(t, []byte(out))}
	var rbac bytes.Buffer
	for _, o := range r.objs {
		if o.key() == keySA || strings.HasPrefix(o.APIVersion, "rbac.authorization.k8s.io/") {
			rbac.WriteString("---\n")
			rbac.Write(o.Doc)
		}
	}
	c.mustKubectl(rbac.Bytes(), "apply", "-f", "-")
	t.Cleanup(func() {
		_, _ = c.kubectl(rbac.Bytes(), "delete", "--ignore-not-found", "-f", "-")
	})

	aggregator := "system:serviceaccount:" + ns + ":" + r.aggregator()
	agent := "system:serviceaccount:" + ns + ":" + r.agent()
	canI := func(as, verb, resource string, extra ...string) bool {
		t.Helper()
		out, _ := c.kubectl(nil, append([]string{"auth", "can-i", verb, resource, "--as=" + as}, extra...)...)
		switch strings.TrimSpace(out) {
		case "yes":
			return true
		case "no":
			return false
		}
		t.Fatalf("kubectl auth can-i %s %s as %s: %q", verb, resource, as, out)
		return false
	}
	cases := []struct {
		as, verb, resource string
		extra              []string
		want               bool
	}{
		{aggregator, "list", "pods", []string{"--all-namespaces"}, true},
		{aggregator, "watch", "pods", []string{"--all-namespaces"}, true},
		{aggregator, "get", "configmaps/extension-apiserver-authentication", []string{"-n", "kube-system"}, true},
		{aggregator, "create", "tokenreviews.authentication.k8s.io", nil, true},
		{aggregator, "create", "subjectaccessreviews.authorization.k8s.io", nil, true},
		{aggregator, "get", "secrets", []string{"-n", ns}, false},
		{aggregator, "list", "secrets", []string{"--all-namespaces"}, false},
		{aggregator, "get", "configmaps", []string{"-n", ns}, false},
		{aggregator, "list", "nodes", nil, false},
		{aggregator, "delete", "pods", []string{"-n", ns}, false},
		{aggregator, "patch", "pods", []string{"--all-namespaces"}, false},
		{aggregator, "create", "deployments.apps", []string{"-n", ns}, false},
		{aggregator, "update", "apiservices.apiregistration.k8s.io", nil, false},
		{agent, "list", "pods", []string{"-n", ns}, false},
		{agent, "get", "secrets", []string{"-n", ns}, false},
	}
	for _, cc := range cases {
		if got := canI(cc.as, cc.verb, cc.resource, cc.extra...); got != cc.want {
			t.Errorf("%s can %s %s %v: %v, want %v", cc.as, cc.verb, cc.resource, cc.extra, got, cc.want)
		}
	}
	// kubectl auth can-i cannot name a resource of a group the cluster does
	// not serve yet: ask with a SubjectAccessReview.
	for _, cc := range []struct {
		user string
		want bool
	}{{hpa, true}, {agent, false}, {aggregator, false}} {
		sar := fmt.Sprintf(`{"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {"user": %q,
			"resourceAttributes": {"group": "custom.metrics.k8s.io", "resource": "pods", "name": "*", "subresource": "gpu_utilization", "verb": "get", "namespace": "default"}}}`, cc.user)
		allowed := strings.TrimSpace(c.mustKubectl([]byte(sar), "create", "-f", "-", "-o", "jsonpath={.status.allowed}"))
		if (allowed == "true") != cc.want {
			t.Errorf("%s may read pods/*/gpu_utilization on custom.metrics.k8s.io: %q, want %v", cc.user, allowed, cc.want)
		}
	}

	// Everything the aggregator may do, in its namespace and in kube-system:
	// only reads, but the review APIs (they create nothing).
	reviews := regexp.MustCompile(`^(self)?(subjectaccessreviews|tokenreviews|localsubjectaccessreviews|selfsubjectrulesreviews|selfsubjectreviews)\.`)
	row := regexp.MustCompile(`^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$`)
	for _, n := range []string{ns, "kube-system"} {
		list := c.mustKubectl(nil, "auth", "can-i", "--list", "--as="+aggregator, "-n", n)
		for _, line := range strings.Split(list, "\n")[1:] {
			m := row.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			for _, v := range strings.Fields(m[4]) {
				if v != "get" && v != "list" && v != "watch" && !(v == "create" && reviews.MatchString(m[1])) {
					t.Errorf("in %s the aggregator may %s %q: %s", n, v, m[1], line)
				}
			}
		}
	}
}

// testLookups runs the chart's lookups against the cluster: a foreign owner
// of custom.metrics.k8s.io stops the install with an explanation (and is
// explained in NOTES when apiService.create=false), the generated
// certificate is kept across renders once it exists, and a namespace whose
// Pod Security level forbids the agent is pointed out.
func testLookups(t *testing.T, c cluster) {
	ns := c.namespace("gms-lookups", "pod-security.kubernetes.io/enforce=baseline")
	rel := ns

	// The other server: the one already registered (the e2e harness's
	// aggregator, say), else a stand-in prometheus-adapter registered for
	// the test.
	owner := strings.TrimSpace(c.mustKubectl(nil, "get", "apiservice", "v1beta1.custom.metrics.k8s.io", "--ignore-not-found",
		"-o", "jsonpath={.spec.service.namespace}/{.spec.service.name}"))
	preexisting := owner != ""
	if !preexisting {
		owner = "monitoring/prometheus-adapter"
		foreign := []byte(`apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.custom.metrics.k8s.io
spec:
  group: custom.metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  insecureSkipTLSVerify: true
  service: {name: prometheus-adapter, namespace: monitoring, port: 443}
`)
		c.mustKubectl(foreign, "apply", "-f", "-")
		t.Cleanup(func() { _, _ = c.kubectl(foreign, "delete", "--ignore-not-found", "-f", "-") })
	}

	_, err := c.helm("template", rel, chartDir, "--namespace", ns, "--dry-run=server")
	if err == nil {
		t.Error("the chart rendered an APIService over another server's")
	} else if msg := err.Error(); !strings.Contains(msg, "already served by another server") || !strings.Contains(msg, owner) {
		t.Errorf("conflict error does not name the other server %s:\n%s", owner, msg)
	}
	notes, err := c.helm("install", rel, chartDir, "--namespace", ns, "--dry-run=server", "--set", "apiService.create=false")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CONFLICT", "v1beta1.custom.metrics.k8s.io -> " + owner, `enforces the "baseline" Pod Security level`} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, notes)
		}
	}

	// The first render generates the CA and certificate; once that Secret
	// exists, the next render (an upgrade) keeps it, and so does the
	// APIServices' caBundle (rendered only when no other server owns them).
	template := []string{"template", rel, chartDir, "--namespace", ns, "--dry-run=server"}
	if preexisting {
		template = append(template, "--set", "apiService.create=false")
	} else {
		_, _ = c.kubectl(nil, "delete", "apiservice", "v1beta1.custom.metrics.k8s.io")
	}
	secretOf := func(out string) *corev1.Secret {
		t.Helper()
		return decode[corev1.Secret](t, splitObjects(t, []byte(out)), keySecret, release{rel, ns, nil}.aggregator()+"-tls")
	}
	first, err := c.helm(template...)
	if err != nil {
		t.Fatal(err)
	}
	sec := secretOf(first)
	doc, err := yaml.Marshal(sec)
	if err != nil {
		t.Fatal(err)
	}
	c.mustKubectl(doc, "apply", "-f", "-")
	second, err := c.helm(template...)
	if err != nil {
		t.Fatal(err)
	}
	again := secretOf(second)
	for _, k := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if !bytes.Equal(sec.Data[k], again.Data[k]) {
			t.Errorf("%s changed between renders although the Secret exists", k)
		}
	}
	as := decodeAll[apiService](t, splitObjects(t, []byte(second)), keyAPIService)
	if rendered := len(as) != 0; rendered == preexisting {
		t.Errorf("%d APIServices rendered; another server registered: %v", len(as), preexisting)
	}
	for _, a := range as {
		if !bytes.Equal(a.Spec.CABundle, sec.Data["ca.crt"]) {
			t.Errorf("APIService %s caBundle is not the existing CA", a.Metadata.Name)
		}
	}
}
