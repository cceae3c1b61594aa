//go:build e2e

package framework

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	listersv1 "k8s.io/client-go/listers/core/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

// RequestCounter stands in for Istio's sidecars in front of a Deployment:
// it serves, on /metrics, the counter istio_requests_total{namespace,pod}
// of every ready pod of the Deployment, the total rate the test sets being
// shared evenly among those pods, as a Service spreads requests over its
// endpoints. A pod's counter starts at 0 when it becomes ready and its
// series goes away with the pod.
type RequestCounter struct {
	namespace string
	pods      listersv1.PodLister
	selector  labels.Selector
	// URL is http://127.0.0.1:<port>/metrics, for Prometheus.
	URL string

	mu     sync.Mutex
	rate   float64 // requests per second, all pods together
	last   time.Time
	counts map[string]float64 // pod → requests so far
}

// StartRequestCounter serves the counters of the pods of namespace
// matching selector, at rate 0 until SetRate. It stops at the end of the
// test.
func (cp *ControlPlane) StartRequestCounter(t testing.TB, namespace, selector string) *RequestCounter {
	t.Helper()
	sel, err := labels.Parse(selector)
	if err != nil {
		t.Fatal(err)
	}
	factory := informers.NewSharedInformerFactoryWithOptions(cp.Client, 0, informers.WithNamespace(namespace))
	informer := factory.Core().V1().Pods()
	c := &RequestCounter{namespace: namespace, pods: informer.Lister(), selector: sel, last: time.Now(), counts: map[string]float64{}}
	inf := informer.Informer()
	stop := make(chan struct{})
	factory.Start(stop)
	t.Cleanup(func() {
		close(stop)
		factory.Shutdown()
	})
	WaitFor(t, testutil.DefaultTimeout, "the request counter's pod informer to sync", func(context.Context) (bool, string, error) {
		return inf.HasSynced(), "not synced", nil
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.URL = "http://" + ln.Addr().String() + "/metrics"
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return c
}

// SetRate sets the total request rate, per second, from now on.
func (c *RequestCounter) SetRate(perSecond float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advance(time.Now())
	c.rate = perSecond
}

// ready returns the names of the ready pods, sorted.
func (c *RequestCounter) ready() []string {
	pods, err := c.pods.List(c.selector)
	if err != nil {
		return nil
	}
	var names []string
	for _, p := range pods {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(p) {
			names = append(names, p.Name)
		}
	}
	slices.Sort(names)
	return names
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// advance counts the requests of the time since the last call, shared by
// the pods ready now. c.mu is held.
func (c *RequestCounter) advance(now time.Time) []string {
	pods := c.ready()
	if dt := now.Sub(c.last).Seconds(); dt > 0 && len(pods) > 0 {
		share := c.rate * dt / float64(len(pods))
		for _, p := range pods {
			c.counts[p] += share
		}
	}
	c.last = now
	for p := range c.counts {
		if !slices.Contains(pods, p) {
			delete(c.counts, p)
		}
	}
	return pods
}

// ServeHTTP serves the counters in the Prometheus text format.
func (c *RequestCounter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pods := c.advance(time.Now())
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintln(w, "# TYPE istio_requests_total counter")
	for _, p := range pods {
		fmt.Fprintf(w, "istio_requests_total{namespace=%q,pod=%q} %g\n", c.namespace, p, c.counts[p])
	}
}
