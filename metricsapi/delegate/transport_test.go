package delegate

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	wait "github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/delegate/fakeadapter"
)

func TestClusterAddress(t *testing.T) {
	ports := []corev1.ServicePort{{Name: "https", Port: 443}, {Name: "alt", Port: 6443}}
	for _, tc := range []struct {
		name string
		spec corev1.ServiceSpec
		port int32
		want string // "" for an error
	}{
		{"cluster IP", corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.20", Ports: ports}, 443, "10.96.0.20:443"},
		{"second port", corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.20", Ports: ports}, 6443, "10.96.0.20:6443"},
		{"IPv6", corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "fd00::20", Ports: ports}, 443, "[fd00::20]:443"},
		{"node port", corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.0.21", Ports: ports}, 443, "10.96.0.21:443"},
		{"load balancer", corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.96.0.22", Ports: ports}, 443, "10.96.0.22:443"},
		{"external name", corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "adapter.example.com"}, 8443, "adapter.example.com:8443"},
		{"headless", corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: corev1.ClusterIPNone, Ports: ports}, 443, ""},
		{"no such port", corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.20", Ports: ports}, 80, ""},
		{"unknown type", corev1.ServiceSpec{Type: "Magic", ClusterIP: "10.96.0.20", Ports: ports}, 443, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := clusterAddress(&corev1.Service{Spec: tc.spec}, tc.port)
			if tc.want == "" {
				if err == nil {
					t.Errorf("= %q, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("= %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestServiceTarget: a namespace/service:port target reaches the server the
// Service routes to (here an ExternalName for localhost, as in the e2e
// cluster), verifies its certificate against <service>.<namespace>.svc, and
// follows the Service when it changes.
func TestServiceTarget(t *testing.T) {
	a := fakeadapter.Start(t, fakeadapter.Options{
		DNSNames: []string{"prometheus-adapter.monitoring.svc"},
		Tokens:   map[string]string{ourToken: ourUser},
		Allowed:  []string{ourUser},
	})
	seedAdapter(a)
	_, portText, err := net.SplitHostPort(strings.TrimPrefix(a.URL, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "monitoring", Name: "prometheus-adapter"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost"},
	}
	client := fake.NewClientset(svc)
	target, err := ParseTarget("monitoring/prometheus-adapter:" + portText)
	if err != nil {
		t.Fatal(err)
	}
	resolver := NewServiceResolver(client, *target.Service)
	if _, err := resolver.Resolve(); err == nil || !strings.Contains(err.Error(), "not known yet") {
		t.Errorf("Resolve before the informer synced: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { resolver.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); wait.Receive(t, "the resolver to stop", done) })
	wait.Eventually(t, "the resolver's informer to sync", resolver.HasSynced)
	if got, err := resolver.Resolve(); err != nil || got != "localhost:"+portText {
		t.Fatalf("Resolve = %q, %v", got, err)
	}

	tr, err := NewTransport(TransportConfig{Target: target, Credentials: &rest.Config{BearerToken: ourToken}, CAFile: a.CAFile, Services: resolver})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Target: target, Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	d.Refresh(t.Context())
	if !d.Up() {
		t.Fatal("the delegate behind the Service is not up")
	}
	if reqs := a.Requests(); len(reqs) == 0 || reqs[0].User != ourUser {
		t.Errorf("the delegate saw %+v, want our credentials from the client configuration", reqs)
	}

	// The Service goes away: new connections fail, naming it.
	if err := client.CoreV1().Services("monitoring").Delete(t.Context(), "prometheus-adapter", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Eventually(t, "the resolver to see the Service deleted", func() bool {
		_, err := resolver.Resolve()
		return err != nil && strings.Contains(err.Error(), "monitoring/prometheus-adapter:"+portText)
	})
	if _, err := resolver.dial(t.Context(), "tcp", "prometheus-adapter.monitoring.svc:"+portText); err == nil {
		t.Error("dialled a deleted Service")
	}
}

// TestTransportCredentials: the token file wins over the client
// configuration's credentials; without either the delegate sees anonymous
// requests.
func TestTransportCredentials(t *testing.T) {
	a := fakeadapter.Start(t, fakeadapter.Options{
		Tokens:  map[string]string{ourToken: ourUser, "kubeconfig-token": "kubeconfig-user"},
		Allowed: []string{ourUser},
	})
	target, err := ParseTarget(a.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  TransportConfig
		user string
	}{
		{"client configuration", TransportConfig{Credentials: &rest.Config{BearerToken: "kubeconfig-token"}}, "kubeconfig-user"},
		{"token file", TransportConfig{Credentials: &rest.Config{BearerToken: "kubeconfig-token"}, BearerTokenFile: writeFile(t, "token", ourToken+"\n")}, ourUser},
		{"none", TransportConfig{}, "system:anonymous"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Target, tc.cfg.CAFile = target, a.CAFile
			tr, err := NewTransport(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			before := len(a.Requests())
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.URL+group+"/v1beta2", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if reqs := a.Requests()[before:]; len(reqs) != 1 || reqs[0].User != tc.user {
				t.Errorf("the delegate saw %+v, want user %s", reqs, tc.user)
			}
		})
	}
	// A certificate the CA does not vouch for: the TLS handshake fails.
	tr, err := NewTransport(TransportConfig{Target: target})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.URL+group+"/v1beta2", nil)
	if resp, err := tr.RoundTrip(req); err == nil {
		_ = resp.Body.Close()
		t.Error("the system roots accepted the fake adapter's self-signed certificate")
	}
}
