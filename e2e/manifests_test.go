//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// manifestsDir, below the checkout's root, holds the chart rendered for
// `kubectl apply -f` (issue 6).
var manifestsDir = filepath.Join("deploy", "manifests")

// rbacKinds are applied for real (not only dry-run) so that the
// permissions they grant can be checked.
var rbacKinds = sets.New("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")

// reviewResources are the create-only review APIs that answer a question
// and store nothing; a read-only identity may still create them
// (system:basic-user grants the self reviews to everyone, and an extension
// API server needs the token and access reviews to delegate
// authentication and authorization).
var reviewResources = sets.New(
	"authentication.k8s.io/tokenreviews",
	"authentication.k8s.io/selfsubjectreviews",
	"authorization.k8s.io/subjectaccessreviews",
	"authorization.k8s.io/selfsubjectaccessreviews",
	"authorization.k8s.io/selfsubjectrulesreviews",
)

// readVerbs are the verbs that change nothing.
var readVerbs = sets.New("get", "list", "watch")

// TestDeployManifests checks every file of deploy/manifests against the
// real API server: each object is accepted by a server-side dry run with
// strict field validation, and the RBAC it grants is least-privilege (the
// aggregator can read pods and what delegated authentication needs; no
// service account can read secrets or write anything).
func TestDeployManifests(t *testing.T) {
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, manifestsDir)
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no *.yaml in %s: the rendered manifests (make manifests) must be checked in", dir)
	}
	served := servedGroupVersions(t)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			objs := decodeManifests(t, file)
			var checked, unserved []*unstructured.Unstructured
			for _, o := range objs {
				if served.Has(o.GetAPIVersion()) {
					checked = append(checked, o)
				} else {
					unserved = append(unserved, o)
				}
			}
			for _, o := range unserved {
				// cert-manager's kinds (the cert-manager variant): their
				// CRDs are not part of this control plane.
				t.Logf("not validated by the server (%s is not served here): %s %s/%s", o.GetAPIVersion(), o.GetKind(), o.GetNamespace(), o.GetName())
			}

			// Namespaces and RBAC for real: a dry run of the namespaced
			// objects needs their namespace, and permissions are only
			// checkable once granted.
			var real []*unstructured.Unstructured
			for _, o := range checked {
				if rbacKinds.Has(o.GetKind()) {
					real = append(real, o)
				}
			}
			if len(real) > 0 {
				kubectlApply(t, real, "apply", "--validate=strict", "-f", "-")
			}

			out := kubectlApply(t, checked, "apply", "--dry-run=server", "--validate=strict", "-f", "-")
			accepted := strings.Count(out, "(server dry run)")
			if accepted != len(checked) {
				t.Errorf("the server accepted %d of %d objects:\n%s", accepted, len(checked), out)
			}

			checkRBAC(t, checked)
		})
	}
}

// servedGroupVersions returns the group/versions the API server serves, as
// apiVersion strings.
func servedGroupVersions(t *testing.T) sets.Set[string] {
	t.Helper()
	groups, err := cluster.Client.Discovery().ServerGroups()
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	served := sets.New[string]()
	for _, g := range groups.Groups {
		for _, v := range g.Versions {
			served.Insert(v.GroupVersion)
		}
	}
	return served
}

// decodeManifests reads every object of a multi-document YAML file, in
// order, expanding Lists.
func decodeManifests(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decodeObjects(t, path, data)
}

// decodeObjects decodes every object of multi-document YAML (from path),
// in order, expanding Lists.
func decodeObjects(t *testing.T, path string, data []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s: %v", path, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			for i := range list.Items {
				objs = append(objs, &list.Items[i])
			}
			continue
		}
		if u.GetKind() == "" || u.GetAPIVersion() == "" || u.GetName() == "" {
			t.Fatalf("%s: an object without kind, apiVersion or name: %v", path, m)
		}
		objs = append(objs, u)
	}
	if len(objs) == 0 {
		t.Fatalf("%s holds no object", path)
	}
	return objs
}

// kubectlApply feeds objs to kubectl as one List on stdin.
func kubectlApply(t *testing.T, objs []*unstructured.Unstructured, args ...string) string {
	t.Helper()
	list := map[string]any{"apiVersion": "v1", "kind": "List", "items": objs}
	data, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cluster.Kubectl(t.Context(), data, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkRBAC proves the service accounts of the manifests least-privilege.
func checkRBAC(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	var accounts []string
	aggregator := ""
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount":
			accounts = append(accounts, serviceAccountUser(o.GetNamespace(), o.GetName()))
		case "Deployment":
			sa, _, _ := unstructured.NestedString(o.Object, "spec", "template", "spec", "serviceAccountName")
			aggregator = serviceAccountUser(o.GetNamespace(), sa)
		}
	}
	if len(accounts) == 0 {
		t.Fatal("the manifests define no ServiceAccount")
	}
	if !slices.Contains(accounts, aggregator) {
		t.Fatalf("the aggregator Deployment runs as %q, which the manifests do not define (service accounts: %v)", aggregator, accounts)
	}

	// What the aggregator needs.
	for _, q := range []canI{
		{verb: "list", resource: "pods", allNamespaces: true},
		{verb: "watch", resource: "pods", allNamespaces: true},
		{verb: "get", resource: "configmaps/extension-apiserver-authentication", namespace: "kube-system"},
		{verb: "create", resource: "tokenreviews.authentication.k8s.io"},
		{verb: "create", resource: "subjectaccessreviews.authorization.k8s.io"},
	} {
		if !q.ask(t, aggregator) {
			t.Errorf("%s cannot %s, which the aggregator needs", aggregator, q)
		}
	}
	// The HPA controller can read the custom metrics API. kubectl auth can-i
	// cannot ask this while no server serves custom.metrics.k8s.io (it
	// drops the group of a resource it cannot discover), so ask the
	// authorizer directly.
	hpaController := serviceAccountUser("kube-system", "horizontal-pod-autoscaler")
	review, err := cluster.Client.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   hpaController,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: "get", Group: "custom.metrics.k8s.io", Resource: "pods", Subresource: framework.MetricName, Name: "*", Namespace: "default",
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !review.Status.Allowed {
		t.Errorf("%s cannot get pods/*/%s in custom.metrics.k8s.io: %s %s", hpaController, framework.MetricName, review.Status.Reason, review.Status.EvaluationError)
	}

	for _, user := range accounts {
		for _, q := range []canI{
			{verb: "get", resource: "secrets", allNamespaces: true},
			{verb: "list", resource: "secrets", allNamespaces: true},
			{verb: "create", resource: "pods", allNamespaces: true},
			{verb: "delete", resource: "pods", allNamespaces: true},
			{verb: "patch", resource: "deployments.apps", allNamespaces: true},
			{verb: "update", resource: "configmaps", namespace: "kube-system"},
			{verb: "create", resource: "apiservices.apiregistration.k8s.io"},
		} {
			if q.ask(t, user) {
				t.Errorf("%s can %s", user, q)
			}
		}
		checkReadOnly(t, user, objs)
	}
}

// canI is one `kubectl auth can-i` question.
type canI struct {
	verb, resource string
	namespace      string
	allNamespaces  bool
}

func (q canI) String() string {
	switch {
	case q.allNamespaces:
		return fmt.Sprintf("%s %s in all namespaces", q.verb, q.resource)
	case q.namespace != "":
		return fmt.Sprintf("%s %s in %s", q.verb, q.resource, q.namespace)
	}
	return q.verb + " " + q.resource
}

// ask runs `kubectl auth can-i` as user; kubectl exits 0 for yes and 1
// for no, printing the answer.
func (q canI) ask(t *testing.T, user string) bool {
	t.Helper()
	args := []string{"auth", "can-i", q.verb, q.resource, "--as=" + user}
	switch {
	case q.allNamespaces:
		args = append(args, "--all-namespaces")
	case q.namespace != "":
		args = append(args, "--namespace="+q.namespace)
	}
	out, err := cluster.Kubectl(t.Context(), nil, args...)
	answer := strings.TrimSpace(out)
	switch {
	case answer == "yes" && err == nil:
		return true
	case answer == "no":
		return false
	}
	t.Fatalf("kubectl auth can-i: answer %q, error %v", answer, err)
	return false
}

// checkReadOnly reviews every rule user holds (a SelfSubjectRulesReview
// while impersonating it) in each namespace the manifests touch plus
// kube-system and default: none may grant a verb beyond get/list/watch,
// except create on the review APIs.
func checkReadOnly(t *testing.T, user string, objs []*unstructured.Unstructured) {
	t.Helper()
	cfg := rest.CopyConfig(cluster.RESTConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	namespaces := sets.New("kube-system", "default")
	for _, o := range objs {
		if o.GetNamespace() != "" {
			namespaces.Insert(o.GetNamespace())
		}
	}
	for _, ns := range sets.List(namespaces) {
		review, err := client.AuthorizationV1().SelfSubjectRulesReviews().Create(t.Context(), &authorizationv1.SelfSubjectRulesReview{
			Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("rules review of %s in %s: %v", user, ns, err)
		}
		if review.Status.Incomplete {
			t.Errorf("rules review of %s in %s is incomplete: %s", user, ns, review.Status.EvaluationError)
		}
		for _, r := range review.Status.ResourceRules {
			if writes := writeVerbs(r); len(writes) > 0 {
				t.Errorf("%s may %v %v in group %v (namespace %s): not read-only", user, writes, r.Resources, r.APIGroups, ns)
			}
		}
		for _, r := range review.Status.NonResourceRules {
			for _, verb := range r.Verbs {
				if verb != "get" {
					t.Errorf("%s may %s %v (namespace %s): not read-only", user, verb, r.NonResourceURLs, ns)
				}
			}
		}
	}
}

// writeVerbs returns the verbs of a rule that may change something, not
// counting create on the review APIs.
func writeVerbs(r authorizationv1.ResourceRule) []string {
	var writes []string
	for _, verb := range r.Verbs {
		if readVerbs.Has(verb) {
			continue
		}
		if verb == "create" && onlyReviews(r) {
			continue
		}
		writes = append(writes, verb)
	}
	return writes
}

// onlyReviews reports whether every group/resource of the rule is a review
// API.
func onlyReviews(r authorizationv1.ResourceRule) bool {
	for _, g := range r.APIGroups {
		for _, res := range r.Resources {
			if !reviewResources.Has(g + "/" + res) {
				return false
			}
		}
	}
	return len(r.APIGroups) > 0 && len(r.Resources) > 0
}

func serviceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}
