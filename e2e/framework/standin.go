//go:build e2e

package framework

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Stand-in pods: in this suite the aggregator and the agents run as host
// processes, not as pods, so what looks for their pods (doctor) finds
// none. A stand-in is a pod shaped like the chart's (its labels, a named
// port, a readiness probe), with host networking, bound to a test node:
// the node's fake runtime runs nothing, but its pod IP is the node's IP,
// and a Forwarder there relays the pod's port to the process's loopback
// port. The API server's pod proxy and the kubelet's readiness probe then
// reach the real process through the pod.

// NodeInternalIP returns the InternalIP the kubelet of node registered.
// The kube-apiserver's pod proxy refuses loopback addresses, and a
// kubelet refuses a loopback --node-ip, so it is the host's own address.
func (cp *ControlPlane) NodeInternalIP(t testing.TB, node string) string {
	t.Helper()
	n, err := cp.Client.CoreV1().Nodes().Get(t.Context(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading Node %s: %v", node, err)
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	t.Fatalf("Node %s has no InternalIP: %v", node, n.Status.Addresses)
	return ""
}

// Forwarder relays every TCP connection to its port on its address to a
// target address, byte for byte (TLS passes through): the path a pod's IP
// and port give to a process listening on loopback.
type Forwarder struct {
	// Port is where it listens.
	Port int
	// pick chooses the target of each new connection (false: none, the
	// connection is closed at once).
	pick func() (string, bool)
	ln   net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	down   bool // SetDown: connections are cut
	wg     sync.WaitGroup
}

// StartForwarder listens on a free port of ip and relays to target until
// the end of the test or Close.
func StartForwarder(t testing.TB, ip, target string) *Forwarder {
	t.Helper()
	return startForwarder(t, ip, target, func() (string, bool) { return target, true })
}

// startForwarder is StartForwarder with the target of each connection
// chosen by pick when it is accepted; what names the forwarder in errors.
func startForwarder(t testing.TB, ip, what string, pick func() (string, bool)) *Forwarder {
	t.Helper()
	var ln net.Listener
	for range 20 {
		ports, err := FreePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(ports[0]))); err == nil {
			break
		}
	}
	if ln == nil {
		t.Fatalf("no free port on %s for a forwarder to %s", ip, what)
	}
	f := &Forwarder{Port: ln.Addr().(*net.TCPAddr).Port, pick: pick, ln: ln, conns: map[net.Conn]bool{}}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(f.Close)
	return f
}

func (f *Forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go f.relay(c)
	}
}

// track adds (or removes) c from the open connections; false when the
// forwarder is closed.
func (f *Forwarder) track(c net.Conn, add bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if add {
		if f.closed || f.down {
			return false
		}
		f.conns[c] = true
	} else {
		delete(f.conns, c)
	}
	return true
}

func (f *Forwarder) relay(in net.Conn) {
	defer f.wg.Done()
	defer func() { _ = in.Close() }()
	target, ok := f.pick()
	if !ok {
		return // nowhere to go: the client sees the connection closed
	}
	out, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return // the process is down: the client sees the connection closed
	}
	defer func() { _ = out.Close() }()
	if !f.track(in, true) {
		return
	}
	defer f.track(in, false)
	if !f.track(out, true) {
		return
	}
	defer f.track(out, false)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	<-done
}

// SetDown cuts (true) every relayed connection and each new one as soon
// as it is accepted, as a network that drops the path would; false relays
// again.
func (f *Forwarder) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
	if down {
		for c := range f.conns {
			_ = c.Close()
		}
	}
}

// Close stops listening and cuts every relayed connection. Safe to call
// more than once.
func (f *Forwarder) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	_ = f.ln.Close()
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// StandIn describes a stand-in pod.
type StandIn struct {
	Namespace, Name string
	// Node is the node it is bound to (no scheduler involved).
	Node   string
	Labels map[string]string
	// ServiceAccount is its ServiceAccount ("" : default).
	ServiceAccount string
	// PortName names its container port Port: the Forwarder's port on the
	// node's IP.
	PortName string
	Port     int
	// Scheme and ReadyPath make the kubelet's readiness probe (an HTTP GET
	// through the port): the pod is Ready while the process answers.
	Scheme    corev1.URIScheme
	ReadyPath string
}

// standInProbePeriod is how often the kubelet probes a stand-in.
const standInProbePeriod = 1

// CreateStandInPod creates the pod s describes and waits until it is
// Running and Ready; it is deleted at the end of the test.
func (cp *ControlPlane) CreateStandInPod(t testing.TB, s StandIn) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, Labels: s.Labels},
		Spec: corev1.PodSpec{
			NodeName:                     s.Node,
			HostNetwork:                  true,
			ServiceAccountName:           s.ServiceAccount,
			AutomountServiceAccountToken: new(false),
			Containers: []corev1.Container{{
				Name:  "main",
				Image: "registry.invalid/gpu-metrics-server-stand-in:e2e",
				Ports: []corev1.ContainerPort{{Name: s.PortName, ContainerPort: int32(s.Port), HostPort: int32(s.Port), Protocol: corev1.ProtocolTCP}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
						Path: s.ReadyPath, Port: intstr.FromString(s.PortName), Scheme: s.Scheme,
					}},
					PeriodSeconds:    standInProbePeriod,
					TimeoutSeconds:   1,
					FailureThreshold: 1,
				},
			}},
		},
	}
	pods := cp.Client.CoreV1().Pods(s.Namespace)
	if _, err := pods.Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating stand-in pod %s/%s: %v", s.Namespace, s.Name, err)
	}
	t.Cleanup(func() { cp.DeleteStandInPod(t, s.Namespace, s.Name) })
	cp.WaitPodReady(t, s.Namespace, s.Name, true)
	got, err := pods.Get(t.Context(), s.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// WaitPodReady waits until the pod namespace/name is Running with its
// Ready condition ready (true) or not (false).
func (cp *ControlPlane) WaitPodReady(t testing.TB, namespace, name string, ready bool) {
	t.Helper()
	WaitFor(t, 60*time.Second, fmt.Sprintf("pod %s/%s Running, Ready=%v", namespace, name, ready), func(ctx context.Context) (bool, string, error) {
		p, err := cp.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		isReady := false
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				isReady = c.Status == corev1.ConditionTrue
			}
		}
		return p.Status.Phase == corev1.PodRunning && isReady == ready,
			fmt.Sprintf("phase %s, ready %v, pod IP %s", p.Status.Phase, isReady, p.Status.PodIP), nil
	})
}

// DeleteStandInPod deletes the pod at once (no grace period: it runs
// nothing) and waits until it is gone.
func (cp *ControlPlane) DeleteStandInPod(t testing.TB, namespace, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pods := cp.Client.CoreV1().Pods(namespace)
	if err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting pod %s/%s: %v", namespace, name, err)
		return
	}
	if err := waitUntil(ctx, time.Minute, "pod "+namespace+"/"+name+" to be gone", func(ctx context.Context) (bool, string, error) {
		_, err := pods.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		return false, fmt.Sprint(err), nil
	}); err != nil && !errors.Is(err, context.Canceled) {
		t.Error(err)
	}
}

// StandInEndpointSlice is the EndpointSlice named name that the
// EndpointSlice controller (not run in this suite) writes for a Service
// whose selector selects the stand-in pod: the pod's IP with its port
// portName, ready (and serving) as the kubelet reports the pod: ready
// false is a pod whose readiness probe fails, not terminating.
func StandInEndpointSlice(name, service string, pod *corev1.Pod, portName string, port int, ready bool) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: pod.Namespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: service,
				discoveryv1.LabelManagedBy:   "e2e.gpu-metrics-server",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{pod.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: new(ready), Serving: new(ready), Terminating: new(false)},
			NodeName:   new(pod.Spec.NodeName),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: new(portName), Port: new(int32(port)), Protocol: new(corev1.ProtocolTCP)}},
	}
}

// APIServiceNamespace and APIServiceName name the Service the
// custom.metrics.k8s.io APIServices of RegisterCustomMetrics point at.
const (
	APIServiceNamespace = apiServiceNamespace
	APIServiceName      = apiServiceName
)
