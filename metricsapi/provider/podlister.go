package provider

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	"github.com/gpu-metrics-server/gpu-metrics-server/kube"
)

// StaticPod is a pod known without a Kubernetes API (standalone mode).
type StaticPod struct {
	Namespace, Name string
	Labels          map[string]string
}

// StaticPodLister resolves selectors against a fixed list of pods.
type StaticPodLister struct {
	byNamespace map[string][]StaticPod
}

// NewStaticPodLister returns a lister of pods. The pods are copied.
func NewStaticPodLister(pods []StaticPod) *StaticPodLister {
	l := &StaticPodLister{byNamespace: make(map[string][]StaticPod)}
	for _, p := range pods {
		p.Labels = maps.Clone(p.Labels)
		l.byNamespace[p.Namespace] = append(l.byNamespace[p.Namespace], p)
	}
	return l
}

// ListPods implements PodLister.
func (l *StaticPodLister) ListPods(namespace string, selector labels.Selector) ([]string, error) {
	var names []string
	for _, p := range l.byNamespace[namespace] {
		if selector.Matches(labels.Set(p.Labels)) {
			names = append(names, p.Name)
		}
	}
	return names, nil
}

// HasSynced is always true.
func (l *StaticPodLister) HasSynced() bool { return true }

// Generation implements Generations: the pods never change.
func (l *StaticPodLister) Generation(string) uint64 { return 0 }

// MetadataPodLister resolves selectors against a metadata-only informer of
// every pod of the cluster (names and labels; the rest is dropped from the
// cache), so that a query never calls the Kubernetes API.
type MetadataPodLister struct {
	informer cache.SharedIndexInformer
	lister   cache.GenericLister
	// gens holds, per namespace, a count of the pods added, deleted or
	// relabelled (*atomic.Uint64), bumped by the informer's handler just
	// after its cache changed.
	gens sync.Map
}

// NewMetadataPodLister prepares the informer; Run starts it.
func NewMetadataPodLister(client metadata.Interface) (*MetadataPodLister, error) {
	inf, err := kube.NewPodMetadataInformer(client, kube.PodSelection{KeepLabels: true})
	if err != nil {
		return nil, err
	}
	l := &MetadataPodLister{informer: inf, lister: cache.NewGenericLister(inf.GetIndexer(), kube.PodsResource.GroupResource())}
	_, err = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: l.touch,
		UpdateFunc: func(oldObj, newObj any) {
			o, okOld := oldObj.(*metav1.PartialObjectMetadata)
			n, okNew := newObj.(*metav1.PartialObjectMetadata)
			if !okOld || !okNew || !maps.Equal(o.Labels, n.Labels) {
				l.touch(newObj)
			}
		},
		DeleteFunc: l.touch,
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// touch bumps the generation of obj's namespace.
func (l *MetadataPodLister) touch(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	ns, _, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return
	}
	g, _ := l.gens.LoadOrStore(ns, new(atomic.Uint64))
	g.(*atomic.Uint64).Add(1)
}

// Generation implements Generations. Between a change of the cache and
// the handler's bump, an answer kept from before the change is still
// served: answers lag the cache by that moment, as the cache lags the API.
func (l *MetadataPodLister) Generation(namespace string) uint64 {
	if g, ok := l.gens.Load(namespace); ok {
		return g.(*atomic.Uint64).Load()
	}
	return 0
}

// Run runs the informer until ctx is done.
func (l *MetadataPodLister) Run(ctx context.Context) { l.informer.RunWithContext(ctx) }

// HasSynced reports whether the informer has listed the pods once.
func (l *MetadataPodLister) HasSynced() bool { return l.informer.HasSynced() }

// ListPods implements PodLister.
func (l *MetadataPodLister) ListPods(namespace string, selector labels.Selector) ([]string, error) {
	objs, err := l.lister.ByNamespace(namespace).List(selector)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(objs))
	for _, o := range objs {
		m, ok := o.(*metav1.PartialObjectMetadata)
		if !ok {
			return nil, fmt.Errorf("pod cache holds a %T", o)
		}
		names = append(names, m.Name)
	}
	slices.Sort(names)
	return names, nil
}
