// Package server builds and runs the custom.metrics.k8s.io API server
// (sigs.k8s.io/custom-metrics-apiserver) around the provider: serving TLS,
// delegated authentication and authorization, health and readiness
// endpoints, the self-metrics on /metrics of the same port, and, when
// configured, the forwarding of the metrics the provider does not serve to
// another adapter (Config.Delegate).
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/endpoints/discovery"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/healthz"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"
	openapicommon "k8s.io/kube-openapi/pkg/common"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	cmv1beta1 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta1"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/apiserver"
	cmoptions "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd/options"
	generatedcore "sigs.k8s.io/custom-metrics-apiserver/pkg/generated/openapi/core"
	generatedcustommetrics "sigs.k8s.io/custom-metrics-apiserver/pkg/generated/openapi/custommetrics"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/provider"
)

// DefaultSecurePort is the default --secure-port: unprivileged, so that the
// server runs as non-root.
const DefaultSecurePort = 6443

const serverName = "gpu-metrics-server"

// Options are the serving, authentication, authorization, audit and feature
// options of the API server (custom-metrics-apiserver's flags).
type Options struct {
	*cmoptions.CustomMetricsAdapterServerOptions

	// InsecureLoopback turns delegated authentication and authorization
	// off: every request is served. It is accepted only when the server
	// listens on a loopback address (the standalone demo). Not a flag.
	InsecureLoopback bool
}

// NewOptions returns the defaults: port 6443, a self-signed certificate
// kept in memory unless --tls-cert-file/--tls-private-key-file or --cert-dir
// are given, delegated authentication and authorization.
func NewOptions() *Options {
	o := cmoptions.NewCustomMetricsAdapterServerOptions()
	o.SecureServing.BindPort = DefaultSecurePort
	o.SecureServing.Required = true
	o.SecureServing.ServerCert.CertDirectory = ""
	o.SecureServing.ServerCert.PairName = serverName
	return &Options{CustomMetricsAdapterServerOptions: o}
}

// AddFlags adds the options' flags to fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) { o.CustomMetricsAdapterServerOptions.AddFlags(fs) }

// Validate reports every invalid option.
func (o *Options) Validate() []error {
	errs := o.CustomMetricsAdapterServerOptions.Validate()
	if o.InsecureLoopback {
		if ip := o.bindIP(); ip == nil || !ip.IsLoopback() {
			errs = append(errs, fmt.Errorf("serving without authentication requires a loopback --bind-address, got %v", ip))
		}
	}
	return errs
}

func (o *Options) bindIP() net.IP {
	if l := o.SecureServing.Listener; l != nil {
		if a, ok := l.Addr().(*net.TCPAddr); ok {
			return a.IP
		}
		return nil
	}
	return o.SecureServing.BindAddress
}

// ReadyCheck is one condition of readiness (/readyz).
type ReadyCheck struct {
	// Name names the check in /readyz?verbose.
	Name string
	// HasSynced reports whether the condition holds.
	HasSynced func() bool
}

// Config is what the server serves.
type Config struct {
	Options *Options
	// Metrics answers the per-pod values (the store).
	Metrics provider.MetricsSource
	// Pods resolves label selectors; its HasSynced is a readiness check.
	Pods provider.PodLister
	// NodeMetrics and Nodes, when both are set, serve the node metrics
	// (root-scoped nodes/<name>/<metric>): NodeMetrics answers the
	// per-node values (the store), Nodes resolves label selectors over
	// nodes and its HasSynced is a readiness check.
	NodeMetrics provider.NodeSource
	Nodes       provider.NodeLister
	// ReadyChecks are further readiness conditions: the first scrape round
	// (aggregator) or the first feed (standalone).
	ReadyChecks []ReadyCheck
	// Collectors are self-metrics served on /metrics besides the
	// provider's (the store's, the scraper's).
	Collectors []prometheus.Collector
	// Delegate, if set, answers the custom metrics requests the provider
	// does not serve (metricsapi/delegate).
	Delegate Delegate
}

// Delegate takes the custom metrics requests the provider does not serve
// (metricsapi/delegate.Delegator).
type Delegate interface {
	// Handler wraps the API handler: it passes the requests for ours'
	// metrics, and everything that is no metric request, to local. It is
	// installed inside authentication and authorization, so that nothing
	// reaches it before the caller may read what it asks for.
	Handler(local http.Handler, ours cmprovider.CustomMetricsProvider) http.Handler
}

// Server is a configured custom metrics API server.
type Server struct {
	generic    *genericapiserver.GenericAPIServer
	collectors []prometheus.Collector
	provider   *provider.Provider
}

// New validates cfg and builds the server; it listens once Run is called
// (the port is bound already when New returns).
func New(cfg Config) (*Server, error) {
	if cfg.Options == nil || cfg.Metrics == nil || cfg.Pods == nil {
		return nil, errors.New("server: options, metrics source and pod lister are required")
	}
	o := cfg.Options
	if errs := o.Validate(); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	p := provider.New(cfg.Metrics, cfg.Pods)
	if (cfg.NodeMetrics == nil) != (cfg.Nodes == nil) {
		return nil, errors.New("server: node metrics need both a node metrics source and a node lister")
	}
	if cfg.Nodes != nil {
		p.ServeNodes(cfg.NodeMetrics, cfg.Nodes)
	}

	rc := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	if err := o.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil, []net.IP{net.IPv4(127, 0, 0, 1)}); err != nil {
		return nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	if err := o.SecureServing.ApplyTo(&rc.SecureServing, &rc.LoopbackClientConfig); err != nil {
		return nil, err
	}
	if o.InsecureLoopback {
		klog.InfoS("Delegated authentication and authorization are OFF: every request to this loopback address is served",
			"address", o.SecureServing.Listener.Addr().String())
		// Every request is anonymous and allowed, so that the chain's
		// filters that need a user (impersonation, audit) have one:
		// without, an Impersonate-User header made a 500.
		rc.Authentication.Authenticator = authenticator.RequestFunc(func(*http.Request) (*authenticator.Response, bool, error) {
			return &authenticator.Response{User: &user.DefaultInfo{Name: user.Anonymous, Groups: []string{user.AllUnauthenticated}}}, true, nil
		})
		rc.Authorization.Authorizer = authorizerfactory.NewAlwaysAllowAuthorizer()
	} else {
		if err := o.Authentication.ApplyTo(&rc.Authentication, rc.SecureServing, nil); err != nil {
			return nil, fmt.Errorf("authentication: %w", err)
		}
		if err := o.Authorization.ApplyTo(&rc.Authorization); err != nil {
			return nil, fmt.Errorf("authorization: %w", err)
		}
	}
	if err := o.Audit.ApplyTo(&rc.Config); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := o.Features.ApplyTo(&rc.Config, nil, nil); err != nil {
		return nil, err
	}
	defs := func(ref openapicommon.ReferenceCallback) map[string]openapicommon.OpenAPIDefinition {
		all := generatedcore.GetOpenAPIDefinitions(ref)
		for k, v := range generatedcustommetrics.GetOpenAPIDefinitions(ref) {
			all[k] = v
		}
		return all
	}
	namer := openapinamer.NewDefinitionNamer(apiserver.Scheme)
	rc.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(defs, namer)
	rc.OpenAPIConfig.Info.Title, rc.OpenAPIConfig.Info.Version = serverName, "1.0.0"
	rc.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(defs, namer)
	rc.OpenAPIV3Config.Info.Title, rc.OpenAPIV3Config.Info.Version = serverName, "1.0.0"
	rc.EnableMetrics = true
	rc.BuildHandlerChainFunc = func(h http.Handler, c *genericapiserver.Config) http.Handler {
		// The HPA's query from the kept answers; the rest to the library.
		api := checkMetricLabelSelector(serveAnswers(h, p))
		if cfg.Delegate != nil {
			// Inside the chain: the caller is authenticated and
			// authorized before anything is forwarded.
			api = cfg.Delegate.Handler(api, p)
		}
		return genericapiserver.DefaultBuildHandlerChain(api, c)
	}

	srv, err := (&apiserver.Config{GenericConfig: &rc.Config}).Complete(nil).New(serverName, p, nil)
	if err != nil {
		return nil, err
	}
	if err := preferV1beta2(srv.GenericAPIServer); err != nil {
		return nil, err
	}
	checks := []healthz.HealthChecker{readyCheck(ReadyCheck{Name: "pod-lister", HasSynced: cfg.Pods.HasSynced})}
	if cfg.Nodes != nil {
		checks = append(checks, readyCheck(ReadyCheck{Name: "node-lister", HasSynced: cfg.Nodes.HasSynced}))
	}
	for _, c := range cfg.ReadyChecks {
		checks = append(checks, readyCheck(c))
	}
	if err := srv.GenericAPIServer.AddReadyzChecks(checks...); err != nil {
		return nil, err
	}
	return &Server{generic: srv.GenericAPIServer, collectors: append([]prometheus.Collector{p}, cfg.Collectors...), provider: p}, nil
}

// preferV1beta2 corrects the legacy discovery of the custom metrics group:
// the library lists a single version, the first of the scheme's priority
// (v1beta1); list both, v1beta2 preferred, as the APIService objects do.
func preferV1beta2(s *genericapiserver.GenericAPIServer) error {
	v2 := metav1.GroupVersionForDiscovery{GroupVersion: cmv1beta2.SchemeGroupVersion.String(), Version: cmv1beta2.SchemeGroupVersion.Version}
	v1 := metav1.GroupVersionForDiscovery{GroupVersion: cmv1beta1.SchemeGroupVersion.String(), Version: cmv1beta1.SchemeGroupVersion.Version}
	group := metav1.APIGroup{Name: custom_metrics.GroupName, Versions: []metav1.GroupVersionForDiscovery{v2, v1}, PreferredVersion: v2}
	s.DiscoveryGroupManager.AddGroup(group)
	c := s.Handler.GoRestfulContainer
	root := "/apis/" + custom_metrics.GroupName
	for _, ws := range c.RegisteredWebServices() {
		if ws.RootPath() == root {
			if err := c.Remove(ws); err != nil {
				return err
			}
		}
	}
	c.Add(discovery.NewAPIGroupHandler(s.Serializer, group).WebService())
	return nil
}

func readyCheck(c ReadyCheck) healthz.HealthChecker {
	return healthz.NamedCheck(c.Name, func(*http.Request) error {
		if !c.HasSynced() {
			return fmt.Errorf("%s has not synced yet", c.Name)
		}
		return nil
	})
}

// checkMetricLabelSelector answers 400 to a custom metrics request whose
// namespace is no valid namespace name ("..", a NUL, 100 KB: the library
// would answer an empty list) or whose metricLabelSelector does not parse
// (the library would answer 500).
func checkMetricLabelSelector(next http.Handler) http.Handler {
	prefix := "/apis/" + custom_metrics.GroupName + "/"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, prefix) {
			if ns, ok := pathNamespace(r.URL.Path); ok {
				if errs := validation.ValidateNamespaceName(ns, false); len(errs) > 0 {
					gv := schema.GroupVersion{Group: custom_metrics.GroupName, Version: "v1beta2"}
					msg := fmt.Sprintf("invalid namespace %.64q: %s", ns, strings.Join(errs, "; "))
					responsewriters.ErrorNegotiated(apierrors.NewBadRequest(msg), apiserver.Codecs, gv, w, r)
					return
				}
			}
			if sel := r.URL.Query().Get("metricLabelSelector"); sel != "" {
				if _, err := labels.Parse(sel); err != nil {
					gv := schema.GroupVersion{Group: custom_metrics.GroupName, Version: "v1beta2"}
					responsewriters.ErrorNegotiated(apierrors.NewBadRequest(fmt.Sprintf("invalid metricLabelSelector %q: %v", sel, err)),
						apiserver.Codecs, gv, w, r)
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// pathNamespace returns the namespace a custom metrics path names
// (.../namespaces/<ns>/...), if any.
func pathNamespace(path string) (string, bool) {
	parts := strings.Split(path, "/")
	// "", "apis", group, version, "namespaces", ns, ...
	if len(parts) > 5 && parts[4] == "namespaces" {
		return parts[5], true
	}
	return "", false
}

// Run serves until ctx is done, with the self-metrics registered in the
// API server's metrics registry meanwhile.
func (s *Server) Run(ctx context.Context) error {
	reg := legacyregistry.Registerer()
	for i, c := range s.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range s.collectors[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("registering self-metrics: %w", err)
		}
	}
	defer func() {
		for _, c := range s.collectors {
			reg.Unregister(c)
		}
	}()
	return s.generic.PrepareRun().RunWithContext(ctx)
}
