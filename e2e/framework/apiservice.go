//go:build e2e

package framework

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
)

const (
	// apiServiceNamespace and apiServiceName name the ExternalName Service
	// the custom.metrics.k8s.io APIServices route through.
	apiServiceNamespace = "gms-e2e-system"
	apiServiceName      = "gpu-metrics-server"
)

// CustomMetricsVersions are the custom.metrics.k8s.io versions the
// aggregator serves, each registered as an APIService.
var CustomMetricsVersions = []string{"v1beta1", "v1beta2"}

var apiServiceGVR = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// ServingCert issues, into dir, the serving certificate of the Service the
// APIServices route to, signed by the cluster CA.
func (cp *ControlPlane) ServingCert(t testing.TB, dir string) KeyPair {
	t.Helper()
	return cp.ServingCertFor(t, dir, apiServiceNamespace, apiServiceName)
}

// ServingCertFor issues, into dir, a serving certificate for the Service
// namespace/name (<name>.<namespace>.svc, as kube-apiserver verifies an
// APIService's server), localhost and 127.0.0.1, signed by the cluster CA.
func (cp *ControlPlane) ServingCertFor(t testing.TB, dir, namespace, name string) KeyPair {
	t.Helper()
	cert, err := cp.ca.issue(dir, "serving-"+namespace+"-"+name, certSpec{
		commonName: name,
		dnsNames:   []string{name + "." + namespace + ".svc", "localhost"},
		ips:        []net.IP{net.IPv4(127, 0, 0, 1)},
		server:     true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// CAFile is the cluster CA's certificate (PEM), which signs the serving
// certificates of ServingCertFor.
func (cp *ControlPlane) CAFile() string { return cp.ca.certFile }

// RegisterCustomMetrics routes custom.metrics.k8s.io to the server on the
// loopback port (which serves ServingCert): an ExternalName Service for
// localhost (no kube-proxy, and Endpoints may not hold loopback addresses)
// and one APIService per version, trusting the cluster CA. It waits until
// the API server reports both Available and serves them; both are removed
// at the end of the test.
func (cp *ControlPlane) RegisterCustomMetrics(t testing.TB, port int) {
	t.Helper()
	cp.CreateNamespace(t, apiServiceNamespace)
	cp.CreateLoopbackService(t, apiServiceNamespace, apiServiceName, port)
	for _, version := range CustomMetricsVersions {
		cp.PutAPIService(t, version, apiServiceNamespace, apiServiceName, port)
	}
	for _, version := range CustomMetricsVersions {
		cp.WaitAPIServiceAvailable(t, version)
	}
}

// CreateNamespace creates the namespace name unless it exists; it is left
// in place (without a namespace controller a deleted namespace would stay
// Terminating).
func (cp *ControlPlane) CreateNamespace(t testing.TB, name string) {
	t.Helper()
	_, err := cp.Client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// CreateLoopbackService creates the Service namespace/name of type
// ExternalName for localhost on port: kube-apiserver (and a delegating
// aggregator) reach a server on that loopback port through it. It is
// deleted at the end of the test.
func (cp *ControlPlane) CreateLoopbackService(t testing.TB, namespace, name string, port int) {
	t.Helper()
	cp.CreateExternalNameService(t, namespace, name, "localhost", port)
}

// CreateExternalNameService creates the Service namespace/name of type
// ExternalName for host (a name or an IPv4 address) on port, the way
// kube-apiserver (without endpoint routing) reaches an APIService's server
// at host:port. It is deleted at the end of the test.
func (cp *ControlPlane) CreateExternalNameService(t testing.TB, namespace, name, host string, port int) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.ServiceSpec{
			Type:         corev1.ServiceTypeExternalName,
			ExternalName: host,
			Ports: []corev1.ServicePort{{
				Name: "https", Port: int32(port), TargetPort: intstr.FromInt(port),
			}},
		},
	}
	services := cp.Client.CoreV1().Services(namespace)
	if _, err := services.Create(t.Context(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating Service %s/%s: %v", namespace, name, err)
	}
	t.Cleanup(func() {
		if err := services.Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting Service %s/%s: %v", namespace, name, err)
		}
	})
}

// apiServiceObject is the APIService of a custom.metrics.k8s.io version
// routed to the Service namespace/service on port, trusting the cluster
// CA; v1beta2 is preferred.
func (cp *ControlPlane) apiServiceObject(version, namespace, service string, port int) *unstructured.Unstructured {
	priority := int64(100)
	if version == "v1beta2" {
		priority = 200
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata":   map[string]any{"name": version + ".custom.metrics.k8s.io"},
		"spec": map[string]any{
			"group":                "custom.metrics.k8s.io",
			"version":              version,
			"groupPriorityMinimum": int64(100),
			"versionPriority":      priority,
			"caBundle":             cp.ca.certPEM,
			"service": map[string]any{
				"namespace": namespace,
				"name":      service,
				"port":      int64(port),
			},
		},
	}}
}

// APIServices is a dynamic client of the cluster's APIService objects.
func (cp *ControlPlane) APIServices(t testing.TB) dynamic.ResourceInterface {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	return dyn.Resource(apiServiceGVR)
}

// PutAPIService routes a custom.metrics.k8s.io version to the Service
// namespace/service on port. An APIService of that version already there
// is deleted first and the new one created, as the chart's takeover hook
// does (Helm's before-hook-creation). The APIService is deleted at the
// end of the test.
func (cp *ControlPlane) PutAPIService(t testing.TB, version, namespace, service string, port int) {
	t.Helper()
	apiServices := cp.APIServices(t)
	name := version + ".custom.metrics.k8s.io"
	if err := apiServices.Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("deleting APIService %s: %v", name, err)
	}
	WaitFor(t, 30*time.Second, "APIService "+name+" to be gone", func(ctx context.Context) (bool, string, error) {
		_, err := apiServices.Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err), nil
	})
	if _, err := apiServices.Create(t.Context(), cp.apiServiceObject(version, namespace, service, port), metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating APIService %s: %v", name, err)
	}
	t.Cleanup(func() {
		cp.DeleteAPIService(t, version)
	})
}

// DeleteAPIService deletes the APIService of a custom.metrics.k8s.io
// version, if there is one.
func (cp *ControlPlane) DeleteAPIService(t testing.TB, version string) {
	t.Helper()
	name := version + ".custom.metrics.k8s.io"
	if err := cp.APIServices(t).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting APIService %s: %v", name, err)
	}
}

// WaitAPIServiceAvailable waits until the API server reports the
// APIService of a custom.metrics.k8s.io version Available and serves its
// discovery.
func (cp *ControlPlane) WaitAPIServiceAvailable(t testing.TB, version string) {
	t.Helper()
	apiServices := cp.APIServices(t)
	name := version + ".custom.metrics.k8s.io"
	WaitFor(t, 60*time.Second, "APIService "+name+" to be Available", func(ctx context.Context) (bool, string, error) {
		obj, err := apiServices.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
		for _, c := range conds {
			cond, _ := c.(map[string]any)
			if cond["type"] == "Available" {
				return cond["status"] == "True", fmt.Sprintf("Available=%v %v: %v", cond["status"], cond["reason"], cond["message"]), nil
			}
		}
		return false, "no Available condition yet", nil
	})
	WaitFor(t, 30*time.Second, "the API server to serve "+name, func(ctx context.Context) (bool, string, error) {
		_, err := cp.Kubectl(ctx, nil, "get", "--raw", "/apis/custom.metrics.k8s.io/"+version)
		if err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
}
