//go:build e2e

package framework

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// ServiceProxy stands in for kube-proxy in front of one Service (the suite
// runs none): it listens on an address of the host, which the Service
// (an ExternalName) names as a ClusterIP would be, and relays each new TCP
// connection, byte for byte, to one ready endpoint of the Service's
// EndpointSlices, which it reads from a watch as kube-proxy does. An
// endpoint stays in its rotation, dead process or not, until its slice
// says it is not ready.
//
// kube-proxy picks the endpoint of each connection at random; the stand-in
// takes the first ready one (slices by name, endpoints in their order),
// the worst draw every time: all new connections go to the first endpoint
// while it is listed, so a test that kills it knows its clients' next
// connections meet the dead endpoint until the slice drops it.
type ServiceProxy struct {
	// IP and Port are where it listens.
	IP   string
	Port int
	fwd  *Forwarder

	mu     sync.Mutex
	ready  []string       // host:port, in order
	routed map[string]int // endpoint → connections sent to it
}

// StartServiceProxy listens on a free port of ip and relays to the ready
// endpoints of the Service namespace/service's port portName, until the
// end of the test. It returns once its watch of the EndpointSlices has
// synced.
func (cp *ControlPlane) StartServiceProxy(t testing.TB, ip, namespace, service, portName string) *ServiceProxy {
	t.Helper()
	p := &ServiceProxy{IP: ip, routed: map[string]int{}}
	factory := informers.NewSharedInformerFactoryWithOptions(cp.Client, 0,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: service}).String()
		}))
	informer := factory.Discovery().V1().EndpointSlices()
	lister := informer.Lister()
	resync := func() {
		list, err := lister.List(labels.Everything())
		if err != nil {
			return // a lister of an informer's cache does not fail
		}
		p.setEndpoints(readyEndpoints(list, portName))
	}
	runInformer(t, factory, informer.Informer(), cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { resync() },
		UpdateFunc: func(_, _ any) { resync() },
		DeleteFunc: func(any) { resync() },
	}, "the EndpointSlice watch of "+namespace+"/"+service)
	p.fwd = startForwarder(t, ip, "Service "+namespace+"/"+service, p.pick)
	p.Port = p.fwd.Port
	return p
}

// readyEndpoints returns host:port of every ready endpoint of slices with
// the port portName: slices by name, endpoints in their order.
func readyEndpoints(list []*discoveryv1.EndpointSlice, portName string) []string {
	list = slices.Clone(list)
	slices.SortFunc(list, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	var out []string
	for _, s := range list {
		port := int32(-1)
		for _, p := range s.Ports {
			if p.Name != nil && *p.Name == portName && p.Port != nil {
				port = *p.Port
			}
		}
		if port < 0 {
			continue
		}
		for _, e := range s.Endpoints {
			// A nil ready condition means ready (discovery/v1).
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				out = append(out, net.JoinHostPort(a, strconv.Itoa(int(port))))
			}
		}
	}
	return out
}

func (p *ServiceProxy) setEndpoints(ready []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ready = ready
}

// pick chooses the endpoint of a new connection: the first ready one.
func (p *ServiceProxy) pick() (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ready) == 0 {
		return "", false
	}
	p.routed[p.ready[0]]++
	return p.ready[0], true
}

// Endpoints returns the ready endpoints (host:port) it relays to, in the
// order it picks them.
func (p *ServiceProxy) Endpoints() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ready)
}

// Routed returns how many connections it sent to each endpoint so far.
func (p *ServiceProxy) Routed() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.routed)
}

// Addr is host:port where it listens.
func (p *ServiceProxy) Addr() string {
	return net.JoinHostPort(p.IP, strconv.Itoa(p.Port))
}

// String describes its state for failure messages.
func (p *ServiceProxy) String() string {
	return fmt.Sprintf("Service proxy %s: endpoints %v, connections routed %v", p.Addr(), p.Endpoints(), p.Routed())
}
