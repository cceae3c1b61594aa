// Package fakeadapter runs a real custom metrics API server
// (sigs.k8s.io/custom-metrics-apiserver, the library prometheus-adapter
// and most adapters are built on) on loopback with scripted metrics: the
// delegate of the tests of package delegate and of the API server. It
// authenticates bearer tokens from a fixed table, authorizes resource
// requests for a fixed set of users, and records every request that
// reaches it, before authentication. It can hang, and can play an adapter
// built before custom.metrics.k8s.io/v1beta2 (404 on every v1beta2 path).
package fakeadapter

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/apiserver"
	cmprovider "sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

// Options configure an Adapter.
type Options struct {
	// Tokens maps bearer tokens to user names; any other request is
	// anonymous (system:anonymous).
	Tokens map[string]string
	// Allowed are the users allowed every resource request; the others
	// get 403. Non-resource requests (discovery, health) are allowed to
	// everyone.
	Allowed []string
	// DNSNames are names its serving certificate is valid for besides
	// localhost and 127.0.0.1.
	DNSNames []string
	// V1beta1Only answers 404 to every custom.metrics.k8s.io/v1beta2 path,
	// as an adapter built before that version does.
	V1beta1Only bool
}

// Request is a request that reached the adapter.
type Request struct {
	// User is who its bearer token names (system:anonymous without
	// one).
	User   string
	Path   string
	Query  string
	Header http.Header
}

// Adapter is a running fake adapter.
type Adapter struct {
	// URL is https://127.0.0.1:<port>.
	URL string
	// CAFile verifies its serving certificate.
	CAFile string

	opts Options

	// stamp is the timestamp of every value: answers to the same
	// question are byte for byte the same.
	stamp metav1.Time

	mu       sync.Mutex
	metrics  map[cmprovider.CustomMetricInfo]map[types.NamespacedName]float64
	requests []Request
	hang     chan struct{} // non-nil while requests hang
}

// Start runs an adapter until the end of the test.
func Start(t testing.TB, opts Options) *Adapter {
	t.Helper()
	a := &Adapter{
		opts:    opts,
		stamp:   metav1.NewTime(time.Now().Truncate(time.Second)),
		metrics: map[cmprovider.CustomMetricInfo]map[types.NamespacedName]float64{},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	a.URL = "https://127.0.0.1:" + strconv.Itoa(port)

	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("localhost", []net.IP{net.IPv4(127, 0, 0, 1)}, opts.DNSNames)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for f, b := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The bundle holds the serving certificate and the CA that signed it.
	a.CAFile = certFile

	rc := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	serving := genericoptions.NewSecureServingOptions()
	serving.Listener = ln
	serving.BindPort = port
	serving.ServerCert.CertKey = genericoptions.CertKey{CertFile: certFile, KeyFile: keyFile}
	if err := serving.WithLoopback().ApplyTo(&rc.SecureServing, &rc.LoopbackClientConfig); err != nil {
		t.Fatal(err)
	}
	rc.Authentication.Authenticator = authenticator.RequestFunc(func(r *http.Request) (*authenticator.Response, bool, error) {
		return &authenticator.Response{User: a.userOf(r)}, true, nil
	})
	rc.Authorization.Authorizer = authorizer.AuthorizerFunc(func(_ context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
		if !attrs.IsResourceRequest() || slices.Contains(opts.Allowed, attrs.GetUser().GetName()) {
			return authorizer.DecisionAllow, "", nil
		}
		return authorizer.DecisionDeny, "not in the fake adapter's allowed users", nil
	})
	rc.BuildHandlerChainFunc = func(h http.Handler, c *genericapiserver.Config) http.Handler {
		return a.front(genericapiserver.DefaultBuildHandlerChain(h, c))
	}
	srv, err := (&apiserver.Config{GenericConfig: &rc.Config}).Complete(nil).New("fake-adapter", (*provider)(a), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A connection a test's client left mid-request (a delegate timeout on
	// a loaded machine) must not hold the stop for the library's default
	// of a minute, which is also Receive's deadline: the fake is cut off
	// after a few seconds instead.
	srv.GenericAPIServer.ShutdownTimeout = 5 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.GenericAPIServer.PrepareRun().RunWithContext(ctx) }()
	t.Cleanup(func() {
		a.Release()
		cancel()
		if err := testutil.Receive(t, "the fake adapter to stop", done); err != nil {
			t.Errorf("fake adapter: %v", err)
		}
	})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 5 * time.Second}
	testutil.Eventually(t, "the fake adapter to serve", func() bool {
		resp, err := client.Get(a.URL + "/healthz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return true
	})
	return a
}

// userOf names the user of r's bearer token.
func (a *Adapter) userOf(r *http.Request) user.Info {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		if name, ok := a.opts.Tokens[tok]; ok {
			return &user.DefaultInfo{Name: name, Groups: []string{user.AllAuthenticated}}
		}
	}
	return &user.DefaultInfo{Name: user.Anonymous, Groups: []string{user.AllUnauthenticated}}
}

// front records every custom metrics request, plays the older adapter,
// and hangs, in front of the whole handler chain.
func (a *Adapter) front(next http.Handler) http.Handler {
	const group = "/apis/" + custom_metrics.GroupName
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, group) {
			next.ServeHTTP(w, r)
			return
		}
		a.mu.Lock()
		a.requests = append(a.requests, Request{User: a.userOf(r).GetName(), Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone()})
		hang := a.hang
		a.mu.Unlock()
		if hang != nil {
			select {
			case <-hang:
			case <-r.Context().Done():
				return
			}
		}
		if a.opts.V1beta1Only && (r.URL.Path == group+"/v1beta2" || strings.HasPrefix(r.URL.Path, group+"/v1beta2/")) {
			http.NotFound(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Set sets the value of metric info for one object (namespace empty for a
// root-scoped one), which the adapter then lists and serves.
func (a *Adapter) Set(info cmprovider.CustomMetricInfo, namespace, name string, v float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.metrics[info] == nil {
		a.metrics[info] = map[types.NamespacedName]float64{}
	}
	a.metrics[info][types.NamespacedName{Namespace: namespace, Name: name}] = v
}

// Requests returns the custom metrics requests that reached the adapter,
// oldest first.
func (a *Adapter) Requests() []Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.requests)
}

// Hang makes every custom metrics request wait until Release (or its
// caller gives up).
func (a *Adapter) Hang() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.hang == nil {
		a.hang = make(chan struct{})
	}
}

// Release lets the hanging requests go on and ends the hang.
func (a *Adapter) Release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.hang != nil {
		close(a.hang)
		a.hang = nil
	}
}

// provider serves the adapter's scripted metrics.
type provider Adapter

var _ cmprovider.CustomMetricsProvider = (*provider)(nil)

func (p *provider) ListAllMetrics() []cmprovider.CustomMetricInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]cmprovider.CustomMetricInfo, 0, len(p.metrics))
	for info := range p.metrics {
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b cmprovider.CustomMetricInfo) int { return strings.Compare(a.String(), b.String()) })
	return out
}

func (p *provider) GetMetricByName(_ context.Context, name types.NamespacedName, info cmprovider.CustomMetricInfo, sel labels.Selector) (*custom_metrics.MetricValue, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.metrics[info][name]
	if !ok {
		return nil, cmprovider.NewMetricNotFoundForError(info.GroupResource, info.Metric, name.Name)
	}
	mv := value(info, name, v, sel, p.stamp)
	return &mv, nil
}

func (p *provider) GetMetricBySelector(_ context.Context, namespace string, _ labels.Selector, info cmprovider.CustomMetricInfo, sel labels.Selector) (*custom_metrics.MetricValueList, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	objs, ok := p.metrics[info]
	if !ok {
		return nil, cmprovider.NewMetricNotFoundError(info.GroupResource, info.Metric)
	}
	list := &custom_metrics.MetricValueList{}
	for name, v := range objs {
		if name.Namespace == namespace {
			list.Items = append(list.Items, value(info, name, v, sel, p.stamp))
		}
	}
	slices.SortFunc(list.Items, func(a, b custom_metrics.MetricValue) int {
		return strings.Compare(a.DescribedObject.Name, b.DescribedObject.Name)
	})
	return list, nil
}

// kinds names the kind of the resources the tests use.
var kinds = map[string]string{"pods": "Pod", "namespaces": "Namespace", "nodes": "Node", "deployments": "Deployment", "services": "Service"}

func value(info cmprovider.CustomMetricInfo, name types.NamespacedName, v float64, sel labels.Selector, stamp metav1.Time) custom_metrics.MetricValue {
	kind := kinds[info.GroupResource.Resource]
	if kind == "" {
		kind = info.GroupResource.Resource
	}
	mv := custom_metrics.MetricValue{
		DescribedObject: custom_metrics.ObjectReference{Kind: kind, Namespace: name.Namespace, Name: name.Name, APIVersion: "v1"},
		Metric:          custom_metrics.MetricIdentifier{Name: info.Metric},
		Timestamp:       stamp,
		Value:           *resource.NewMilliQuantity(int64(v*1000), resource.DecimalSI),
	}
	if sel != nil && !sel.Empty() {
		if ls, err := metav1.ParseToLabelSelector(sel.String()); err == nil {
			mv.Metric.Selector = ls
		}
	}
	return mv
}
