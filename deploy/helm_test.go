//go:build chart

package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	chartDir       = "helm/gpu-metrics-server"
	defaultRelease = "gpu-metrics-server"
	defaultNS      = "gpu-metrics-server"
)

// helmPath returns the helm binary the tests run: $HELM, else the one
// hack/build-helm.sh caches for the version hack/tools/helm/go.mod requires.
func helmPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("HELM"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("HELM=%s is not an executable: %v", p, err)
		}
		return p
	}
	gomod, err := os.ReadFile("../hack/tools/helm/go.mod")
	if err != nil {
		t.Fatalf("reading the helm tools module: %v", err)
	}
	m := regexp.MustCompile(`(?m)^require helm\.sh/helm/v3 (v\S+)$`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("hack/tools/helm/go.mod has no 'require helm.sh/helm/v3 <version>' line")
	}
	dir := os.Getenv("GMS_TOOLS_DIR")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatalf("no home directory to find the helm cache in: %v", err)
		}
		dir = filepath.Join(home, ".cache", "gpu-metrics-server", "tools")
	}
	p := filepath.Join(dir, "helm-"+string(m[1]), "helm")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("helm %s not found at %s (%v): run hack/build-helm.sh first, or set HELM", m[1], p, err)
	}
	return p
}

// runHelm runs helm and returns its standard output; a failure's error holds
// its standard error.
func runHelm(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmPath(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// object is one rendered Kubernetes object.
type object struct {
	APIVersion string
	Kind       string
	Name       string
	Namespace  string
	Doc        []byte
}

// key names an object's type as "apiVersion/Kind".
func (o object) key() string { return o.APIVersion + "/" + o.Kind }

// objects is a rendered set of objects.
type objects []object

// splitObjects splits a YAML stream into objects; documents holding only
// comments are skipped.
func splitObjects(t testing.TB, stream []byte) objects {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var out objects
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("splitting YAML: %v", err)
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("decoding document %q: %v", doc, err)
		}
		if head.Kind == "" && head.APIVersion == "" {
			continue
		}
		out = append(out, object{head.APIVersion, head.Kind, head.Metadata.Name, head.Metadata.Namespace, doc})
	}
}

// find returns the objects of one type ("apiVersion/Kind").
func (objs objects) find(key string) objects {
	var out objects
	for _, o := range objs {
		if o.key() == key {
			out = append(out, o)
		}
	}
	return out
}

// decode decodes the one object of a type and name into a typed value,
// strictly; it fails the test if there is no such object.
func decode[T any](t testing.TB, objs objects, key, name string) *T {
	t.Helper()
	for _, o := range objs.find(key) {
		if o.Name == name {
			v := new(T)
			if err := yaml.UnmarshalStrict(o.Doc, v); err != nil {
				t.Fatalf("%s %s: %v", key, name, err)
			}
			return v
		}
	}
	t.Fatalf("no %s named %q rendered", key, name)
	return nil
}

// decodeAll decodes every object of a type, strictly.
func decodeAll[T any](t testing.TB, objs objects, key string) []*T {
	t.Helper()
	var out []*T
	for _, o := range objs.find(key) {
		v := new(T)
		if err := yaml.UnmarshalStrict(o.Doc, v); err != nil {
			t.Fatalf("%s %s: %v", key, o.Name, err)
		}
		out = append(out, v)
	}
	return out
}

// apiService mirrors apiregistration.k8s.io/v1 APIService (k8s.io/kube-aggregator
// is not a dependency of this module); strict decoding into it catches a
// misspelt or misplaced field.
type apiService struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Service *struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
			Port      *int32 `json:"port"`
		} `json:"service"`
		Group                 string `json:"group"`
		Version               string `json:"version"`
		InsecureSkipTLSVerify bool   `json:"insecureSkipTLSVerify"`
		CABundle              []byte `json:"caBundle"`
		GroupPriorityMinimum  int32  `json:"groupPriorityMinimum"`
		VersionPriority       int32  `json:"versionPriority"`
	} `json:"spec"`
}

// typedKinds decode into the real API types; untypedKinds (CRDs of other
// projects) are only parsed. Any other kind fails the test, so that a new
// template cannot slip past the strict check.
var typedKinds = map[string]func() any{
	"v1/Namespace":                                    func() any { return new(corev1.Namespace) },
	"v1/ServiceAccount":                               func() any { return new(corev1.ServiceAccount) },
	"v1/Service":                                      func() any { return new(corev1.Service) },
	"v1/Secret":                                       func() any { return new(corev1.Secret) },
	"v1/ConfigMap":                                    func() any { return new(corev1.ConfigMap) },
	"apps/v1/DaemonSet":                               func() any { return new(appsv1.DaemonSet) },
	"apps/v1/Deployment":                              func() any { return new(appsv1.Deployment) },
	"policy/v1/PodDisruptionBudget":                   func() any { return new(policyv1.PodDisruptionBudget) },
	"networking.k8s.io/v1/NetworkPolicy":              func() any { return new(networkingv1.NetworkPolicy) },
	"rbac.authorization.k8s.io/v1/ClusterRole":        func() any { return new(rbacv1.ClusterRole) },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() any { return new(rbacv1.ClusterRoleBinding) },
	"rbac.authorization.k8s.io/v1/Role":               func() any { return new(rbacv1.Role) },
	"rbac.authorization.k8s.io/v1/RoleBinding":        func() any { return new(rbacv1.RoleBinding) },
	"autoscaling/v2/HorizontalPodAutoscaler":          func() any { return new(autoscalingv2.HorizontalPodAutoscaler) },
	"apiregistration.k8s.io/v1/APIService":            func() any { return new(apiService) },
	"cert-manager.io/v1/Issuer":                       nil,
	"cert-manager.io/v1/Certificate":                  nil,
	"monitoring.coreos.com/v1/ServiceMonitor":         nil,
	"source.toolkit.fluxcd.io/v1/HelmRepository":      nil,
	"helm.toolkit.fluxcd.io/v2/HelmRelease":           nil,
}

// checkStrict decodes every object strictly into its API type: the offline
// stand-in for `kubectl apply --validate=strict`, which needs a server.
func checkStrict(t *testing.T, objs objects) {
	t.Helper()
	for _, o := range objs {
		newT, known := typedKinds[o.key()]
		if !known {
			t.Errorf("%s %s: no decoder for this type; add it to typedKinds", o.key(), o.Name)
			continue
		}
		if o.Name == "" {
			t.Errorf("%s without a name", o.key())
		}
		if newT == nil {
			continue
		}
		if err := yaml.UnmarshalStrict(o.Doc, newT()); err != nil {
			t.Errorf("%s %s does not decode strictly: %v", o.key(), o.Name, err)
		}
	}
}
