package delegate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// TransportConfig says how the delegate is reached and who this server is
// to it.
type TransportConfig struct {
	Target Target
	// Credentials is this server's own client configuration for the
	// Kubernetes API (--kubeconfig, else in-cluster): its credentials,
	// and only those, are presented to the delegate (in a pod, the
	// ServiceAccount's token, re-read as the kubelet rotates it).
	// Ignored when BearerTokenFile is set.
	Credentials *rest.Config
	// BearerTokenFile replaces those credentials by the token in the
	// file, re-read as it changes.
	BearerTokenFile string
	// CAFile verifies the delegate's serving certificate (default: the
	// system roots); InsecureSkipTLSVerify verifies nothing.
	CAFile                string
	InsecureSkipTLSVerify bool
	// Services resolves a Service target at each new connection, as
	// kube-apiserver resolves an APIService's Service; required for a
	// Service target.
	Services *ServiceResolver
}

// NewTransport returns the round tripper of the delegated requests:
// client-go's transport (TLS, HTTP/2, keep-alive, credentials that
// rotate), with no caller-supplied header ever added.
func NewTransport(c TransportConfig) (http.RoundTripper, error) {
	if c.Target.URL == nil {
		return nil, errors.New("delegate: no target")
	}
	rc := &rest.Config{
		Host:      c.Target.URL.Scheme + "://" + c.Target.URL.Host,
		UserAgent: userAgent,
		TLSClientConfig: rest.TLSClientConfig{
			CAFile:   c.CAFile,
			Insecure: c.InsecureSkipTLSVerify,
		},
	}
	switch {
	case c.BearerTokenFile != "":
		rc.BearerTokenFile = c.BearerTokenFile
	case c.Credentials != nil:
		k := c.Credentials
		rc.BearerToken, rc.BearerTokenFile = k.BearerToken, k.BearerTokenFile
		rc.CertFile, rc.KeyFile, rc.CertData, rc.KeyData = k.CertFile, k.KeyFile, k.CertData, k.KeyData
		rc.ExecProvider = k.ExecProvider
	}
	if !hasCredentials(rc) {
		klog.InfoS("No credentials for the custom metrics delegate: it sees anonymous requests (set --delegate-bearer-token-file)", "delegate", c.Target)
	}
	if c.Target.Service != nil {
		if c.Services == nil {
			return nil, fmt.Errorf("delegate %s: a Service target needs a resolver", c.Target)
		}
		rc.Dial = c.Services.dial
		// The Service's address is where kube-apiserver would go: no
		// HTTP proxy from the environment in between.
		rc.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	}
	return rest.TransportFor(rc)
}

func hasCredentials(rc *rest.Config) bool {
	return rc.BearerToken != "" || rc.BearerTokenFile != "" || rc.CertFile != "" || len(rc.CertData) > 0 || rc.ExecProvider != nil
}

// ServiceResolver finds the address of a Service target the way
// kube-apiserver finds an APIService's (the ClusterIP and Service port, or the ExternalName), from an informer on that one Service (RBAC: get, list and
// watch on services, resourceNames [the Service]).
type ServiceResolver struct {
	ref      ServiceRef
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	lister   listersv1.ServiceLister
	dialer   net.Dialer
}

// NewServiceResolver returns a resolver of ref; it knows the Service once
// Run has synced its informer.
func NewServiceResolver(client kubernetes.Interface, ref ServiceRef) *ServiceResolver {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(ref.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ref.Name).String()
		}))
	services := factory.Core().V1().Services()
	return &ServiceResolver{
		ref:      ref,
		factory:  factory,
		informer: services.Informer(),
		lister:   services.Lister(),
		dialer:   net.Dialer{KeepAlive: 30 * time.Second},
	}
}

// Run runs the informer until ctx ends.
func (s *ServiceResolver) Run(ctx context.Context) {
	s.factory.Start(ctx.Done())
	<-ctx.Done()
	s.factory.Shutdown()
}

// HasSynced reports whether the Service (or its absence) is known.
func (s *ServiceResolver) HasSynced() bool { return s.informer.HasSynced() }

// Resolve returns the address a connection to the Service goes to.
func (s *ServiceResolver) Resolve() (string, error) {
	if !s.HasSynced() {
		return "", fmt.Errorf("the Service %s is not known yet", s.ref)
	}
	svc, err := s.lister.Services(s.ref.Namespace).Get(s.ref.Name)
	if err != nil {
		return "", fmt.Errorf("resolving the Service %s: %w", s.ref, err)
	}
	addr, err := clusterAddress(svc, s.ref.Port)
	if err != nil {
		return "", fmt.Errorf("resolving the Service %s: %w", s.ref, err)
	}
	return addr, nil
}

// clusterAddress is where kube-apiserver sends an APIService's requests
// for svc's port (k8s.io/apiserver/pkg/util/proxy.ResolveCluster, which
// this package does not import for its streaming dependencies): the
// ClusterIP and the Service port, or the ExternalName and the port.
func clusterAddress(svc *corev1.Service, port int32) (string, error) {
	p := strconv.Itoa(int(port))
	switch svc.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeNodePort:
		if svc.Spec.ClusterIP == corev1.ClusterIPNone || svc.Spec.ClusterIP == "" {
			return "", fmt.Errorf("cannot route to a Service with ClusterIP %q", svc.Spec.ClusterIP)
		}
		if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Port == port }) {
			return "", fmt.Errorf("the Service has no port %d", port)
		}
		return net.JoinHostPort(svc.Spec.ClusterIP, p), nil
	case corev1.ServiceTypeExternalName:
		return net.JoinHostPort(svc.Spec.ExternalName, p), nil
	default:
		return "", fmt.Errorf("unsupported Service type %q", svc.Spec.Type)
	}
}

// dial connects to the Service's current address, whatever address the
// transport asks for (the target URL's <service>.<namespace>.svc, which
// the serving certificate is verified against).
func (s *ServiceResolver) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	addr, err := s.Resolve()
	if err != nil {
		return nil, err
	}
	return s.dialer.DialContext(ctx, network, addr)
}
