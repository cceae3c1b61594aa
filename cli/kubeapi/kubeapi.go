// Package kubeapi holds what the commands a person runs (top, doctor) share
// to talk to kube-apiserver: the clients, built once from a rest.Config, and
// errors worded as kubectl words them.
package kubeapi

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/metrics/pkg/client/custom_metrics"
)

// CustomMetricsGroup is the API group the aggregator serves.
const CustomMetricsGroup = "custom.metrics.k8s.io"

// Clients are the clients of one cluster.
type Clients struct {
	Kube      kubernetes.Interface
	Discovery discovery.DiscoveryInterface
	Metrics   custom_metrics.CustomMetricsClient
}

// NewClients builds the clients of the cluster c points at. Nothing is
// dialled yet.
func NewClients(c *rest.Config) (*Clients, error) {
	kube, err := kubernetes.NewForConfig(c)
	if err != nil {
		return nil, err
	}
	disc := kube.Discovery()
	return &Clients{
		Kube:      kube,
		Discovery: disc,
		Metrics:   custom_metrics.NewForConfig(c, Mapper(), custom_metrics.NewAvailableAPIsGetter(disc)),
	}, nil
}

// Mapper maps the only kinds the commands ask metrics of, Pod and Node, to
// their resources without a discovery round trip.
func Mapper() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper([]schema.GroupVersion{{Version: "v1"}})
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "Node"}, meta.RESTScopeRoot)
	return m
}

// ErrNoCustomMetricsAPI means no APIService serves custom.metrics.k8s.io.
var ErrNoCustomMetricsAPI = errors.New("the custom metrics API (" + CustomMetricsGroup + ") is not registered in this cluster: no APIService serves it")

// CheckCustomMetricsAPI returns ErrNoCustomMetricsAPI when discovery lists no
// custom.metrics.k8s.io group, or the error of discovery itself.
func CheckCustomMetricsAPI(d discovery.DiscoveryInterface) error {
	groups, err := d.ServerGroups()
	if err != nil {
		return Explain(err, "get", "", "discovery (/apis)", "")
	}
	for _, g := range groups.Groups {
		if g.Name == CustomMetricsGroup {
			return nil
		}
	}
	return ErrNoCustomMetricsAPI
}

// Forbidden is an API request RBAC refused: Verb on Resource in Group, in
// Namespace ("" for cluster scope).
type Forbidden struct {
	Verb, Group, Resource, Namespace string
	Err                              error
}

// Permission is the missing permission, as `kubectl auth can-i` takes it.
func (f *Forbidden) Permission() string {
	s := f.Verb + " " + f.resource()
	if f.Namespace != "" {
		s += fmt.Sprintf(" in namespace %q", f.Namespace)
	}
	return s
}

func (f *Forbidden) Error() string {
	where := ""
	if f.Namespace != "" {
		where = fmt.Sprintf(" in namespace %q", f.Namespace)
	}
	return fmt.Sprintf("forbidden: RBAC does not allow you to %s %s%s (missing verb %q on resource %q)", f.Verb, f.resource(), where, f.Verb, f.resource())
}

func (f *Forbidden) resource() string {
	if f.Group == "" {
		return f.Resource
	}
	return f.Resource + "." + f.Group
}

func (f *Forbidden) Unwrap() error { return f.Err }

// Unavailable is an API the aggregation layer could not reach (HTTP 503).
type Unavailable struct {
	Group string
	Err   error
}

func (u *Unavailable) Error() string {
	return fmt.Sprintf("the %s API is registered but not available: %v", u.Group, u.Err)
}

func (u *Unavailable) Unwrap() error { return u.Err }

// Explain turns a failed request (verb on resource of group, in namespace)
// into an error a person can act on: a *Forbidden naming the missing
// permission, an *Unavailable for an aggregated API that does not answer,
// else err with the request it failed.
func Explain(err error, verb, group, resource, namespace string) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsForbidden(err):
		return &Forbidden{Verb: verb, Group: group, Resource: resource, Namespace: namespace, Err: err}
	case apierrors.IsServiceUnavailable(err) && group != "":
		return &Unavailable{Group: group, Err: err}
	}
	where := ""
	if namespace != "" {
		where = fmt.Sprintf(" in namespace %q", namespace)
	}
	r := resource
	if group != "" {
		r += "." + group
	}
	return fmt.Errorf("%s %s%s: %w", verb, r, where, err)
}

// IsGPUResource reports whether a container or node resource is GPUs:
// NVIDIA's device plugin names (nvidia.com/gpu, nvidia.com/gpu.shared,
// nvidia.com/mig-<profile>) and any other extended resource naming a GPU.
func IsGPUResource(name corev1.ResourceName) bool {
	n := string(name)
	return strings.HasPrefix(n, "nvidia.com/gpu") || strings.HasPrefix(n, "nvidia.com/mig-") ||
		(strings.Contains(n, "/") && strings.Contains(strings.ToLower(n), "gpu"))
}
