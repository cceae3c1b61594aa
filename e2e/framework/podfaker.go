//go:build e2e

package framework

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

// fakerResync bounds how long a failed status patch or a missed event
// waits before the faker reconciles again.
const fakerResync = time.Second

// PodResourcesSetter is what the faker needs of a fake kubelet.
type PodResourcesSetter interface {
	SetPods(pods []*podresourcesv1.PodResources)
}

// GPUSlot is one simulated GPU of one node.
type GPUSlot struct {
	Node  int // index into the faker's nodes
	Index int // the GPU's index on its agent (the gpu label)
	UUID  string
	// Replica is the time-slicing replica ("" for a GPU held whole): the
	// kubelet hands out "<uuid>::<replica>", as the NVIDIA device plugin
	// does with time-slicing on.
	Replica string
}

// DeviceID is the ID the kubelet reports for the slot.
func (s GPUSlot) DeviceID() string {
	if s.Replica == "" {
		return s.UUID
	}
	return s.UUID + "::" + s.Replica
}

// PodFaker stands in for the scheduler and the kubelets for one namespace:
// it marks each Pending pod Running through the status subresource, and
// gives each live pod a free simulated GPU (first free GPU of the first
// node with one), publishing the assignment on that node's fake kubelet.
// A pod that finds no free GPU stays unassigned until one frees up.
type PodFaker struct {
	t         testing.TB
	client    kubernetes.Interface
	namespace string
	kubelets  []PodResourcesSetter
	slots     []GPUSlot // in assignment order

	pods    listersv1.PodLister
	factory informers.SharedInformerFactory
	kick    chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}

	mu       sync.Mutex
	assigned map[string]GPUSlot // pod name → GPU
	waiting  map[string]bool    // pods without a GPU, reported once
}

// StartPodFaker starts faking pods of namespace on the given nodes; slots
// lists the GPUs of all nodes in assignment order. It stops at the end of
// the test.
func StartPodFaker(t testing.TB, client kubernetes.Interface, namespace string, kubelets []PodResourcesSetter, slots []GPUSlot) *PodFaker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &PodFaker{
		t:         t,
		client:    client,
		namespace: namespace,
		kubelets:  kubelets,
		slots:     slots,
		kick:      make(chan struct{}, 1),
		cancel:    cancel,
		done:      make(chan struct{}),
		assigned:  map[string]GPUSlot{},
		waiting:   map[string]bool{},
	}
	f.factory = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace))
	podInformer := f.factory.Core().V1().Pods()
	f.pods = podInformer.Lister()
	kick := func(any) {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    kick,
		UpdateFunc: func(_, obj any) { kick(obj) },
		DeleteFunc: kick,
	}); err != nil {
		cancel()
		t.Fatalf("pod faker: %v", err)
	}
	f.factory.Start(ctx.Done())
	synced := false
	t.Cleanup(func() {
		if !synced {
			cancel()
			f.factory.Shutdown()
		}
	})
	WaitFor(t, testutil.DefaultTimeout, "the pod faker's pod informer to sync", func(context.Context) (bool, string, error) {
		return podInformer.Informer().HasSynced(), "not synced", nil
	})
	synced = true
	go f.loop(ctx)
	t.Cleanup(f.stop)
	return f
}

// stop ends the faker and waits for its loop, so that nothing logs after
// the test.
func (f *PodFaker) stop() {
	f.cancel()
	<-f.done
	f.factory.Shutdown()
}

func (f *PodFaker) loop(ctx context.Context) {
	defer close(f.done)
	tick := time.NewTicker(fakerResync)
	defer tick.Stop()
	for {
		f.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
		case <-tick.C:
		}
	}
}

// reconcile brings pods and GPU assignments in line with the cached pods.
func (f *PodFaker) reconcile(ctx context.Context) {
	pods, err := f.pods.List(labels.Everything())
	if err != nil {
		f.t.Logf("pod faker: listing pods: %v", err)
		return
	}
	slices.SortFunc(pods, func(a, b *corev1.Pod) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})

	live := map[string]*corev1.Pod{}
	for _, p := range pods {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			continue
		}
		live[p.Name] = p
		if p.Status.Phase == corev1.PodPending || p.Status.Phase == "" {
			if err := f.markRunning(ctx, p); err != nil && ctx.Err() == nil {
				f.t.Logf("pod faker: marking %s/%s Running (retried): %v", p.Namespace, p.Name, err)
			}
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	changed := map[int]bool{}
	for name, s := range f.assigned {
		if _, ok := live[name]; !ok {
			delete(f.assigned, name)
			changed[s.Node] = true
			f.t.Logf("pod faker: %s released GPU %d (%s) on node %d", name, s.Index, s.UUID, s.Node)
		}
	}
	for name := range f.waiting {
		if _, ok := live[name]; !ok {
			delete(f.waiting, name)
		}
	}
	for _, p := range pods {
		if _, ok := live[p.Name]; !ok {
			continue
		}
		if _, ok := f.assigned[p.Name]; ok {
			continue
		}
		s, ok := f.freeSlot()
		if !ok {
			if !f.waiting[p.Name] {
				f.waiting[p.Name] = true
				f.t.Logf("pod faker: no free simulated GPU for %s/%s; it gets none until one frees up", p.Namespace, p.Name)
			}
			continue
		}
		delete(f.waiting, p.Name)
		f.assigned[p.Name] = s
		changed[s.Node] = true
		f.t.Logf("pod faker: %s got GPU %d (%s) on node %d", p.Name, s.Index, s.UUID, s.Node)
	}
	for node := range changed {
		f.publish(node)
	}
}

// markRunning moves a pod to Running, as a kubelet would once its
// containers started.
func (f *PodFaker) markRunning(ctx context.Context, p *corev1.Pod) error {
	now := metav1.Now()
	patch := map[string]any{
		"status": map[string]any{
			"phase":     corev1.PodRunning,
			"startTime": now,
			"conditions": []map[string]any{
				{"type": corev1.PodReady, "status": corev1.ConditionTrue, "lastTransitionTime": now},
				{"type": corev1.ContainersReady, "status": corev1.ConditionTrue, "lastTransitionTime": now},
			},
		},
	}
	data, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = f.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.StrategicMergePatchType, data, metav1.PatchOptions{}, "status")
	return err
}

// freeSlot returns the first unassigned GPU. f.mu is held.
func (f *PodFaker) freeSlot() (GPUSlot, bool) {
	used := map[GPUSlot]bool{}
	for _, s := range f.assigned {
		used[s] = true
	}
	for _, s := range f.slots {
		if !used[s] {
			return s, true
		}
	}
	return GPUSlot{}, false
}

// publish hands a node's fake kubelet the pods that hold its GPUs. f.mu is
// held.
func (f *PodFaker) publish(node int) {
	names := make([]string, 0, len(f.assigned))
	for name, s := range f.assigned {
		if s.Node == node {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	resources := make([]*podresourcesv1.PodResources, 0, len(names))
	for _, name := range names {
		resources = append(resources, fakekubelet.GPUPod(f.namespace, name, WorkloadContainer, GPUResource, f.assigned[name].DeviceID()))
	}
	f.kubelets[node].SetPods(resources)
}

// Assignment returns the GPU a pod holds.
func (f *PodFaker) Assignment(pod string) (GPUSlot, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.assigned[pod]
	return s, ok
}
