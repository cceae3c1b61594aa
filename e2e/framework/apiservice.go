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
	cert, err := cp.ca.issue(dir, "custom-metrics-serving", certSpec{
		commonName: apiServiceName,
		dnsNames:   []string{apiServiceName + "." + apiServiceNamespace + ".svc", "localhost"},
		ips:        []net.IP{net.IPv4(127, 0, 0, 1)},
		server:     true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// RegisterCustomMetrics routes custom.metrics.k8s.io to the server on the
// loopback port (which serves ServingCert): an ExternalName Service for
// localhost (no kube-proxy, and Endpoints may not hold loopback addresses)
// and one APIService per version, trusting the cluster CA. It waits until
// the API server reports both Available and serves them; both are removed
// at the end of the test.
func (cp *ControlPlane) RegisterCustomMetrics(t testing.TB, port int) {
	t.Helper()
	ctx := t.Context()
	_, err := cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: apiServiceNamespace},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", apiServiceNamespace, err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: apiServiceName, Namespace: apiServiceNamespace},
		Spec: corev1.ServiceSpec{
			Type:         corev1.ServiceTypeExternalName,
			ExternalName: "localhost",
			Ports: []corev1.ServicePort{{
				Name: "https", Port: int32(port), TargetPort: intstr.FromInt(port),
			}},
		},
	}
	services := cp.Client.CoreV1().Services(apiServiceNamespace)
	if _, err := services.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the aggregator's Service: %v", err)
	}
	t.Cleanup(func() {
		if err := services.Delete(context.Background(), apiServiceName, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting the aggregator's Service: %v", err)
		}
	})

	dyn, err := dynamic.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	apiServices := dyn.Resource(apiServiceGVR)
	for i, version := range CustomMetricsVersions {
		name := version + ".custom.metrics.k8s.io"
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiregistration.k8s.io/v1",
			"kind":       "APIService",
			"metadata":   map[string]any{"name": name},
			"spec": map[string]any{
				"group":                "custom.metrics.k8s.io",
				"version":              version,
				"groupPriorityMinimum": int64(100),
				"versionPriority":      int64(100 + 100*i),
				"caBundle":             cp.ca.certPEM,
				"service": map[string]any{
					"namespace": apiServiceNamespace,
					"name":      apiServiceName,
					"port":      int64(port),
				},
			},
		}}
		if _, err := apiServices.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating APIService %s: %v", name, err)
		}
		t.Cleanup(func() {
			if err := apiServices.Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
				t.Errorf("deleting APIService %s: %v", name, err)
			}
		})
	}

	for _, version := range CustomMetricsVersions {
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
}
