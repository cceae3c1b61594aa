// Package podinfo knows the UIDs of the pods on this node.
//
// The kubelet's pod-resources API names the pods holding each GPU by
// namespace and name; a GPU process's cgroup names its pod by UID. Index
// joins the two. Informer is the Index the agent uses: a metadata-only pod
// informer restricted to this node with the field selector
// spec.nodeName=<node>, so only object metadata of this node's pods crosses
// the wire and is held in memory. Its RBAC is list and watch on pods, the
// least privilege that answers the question (the kubelet's own pod list
// needs nodes/proxy, which grants far more).
package podinfo

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// Index answers which UID a pod has. Implementations never block.
type Index interface {
	// UID returns the UID of pod namespace/name, and false when the pod is
	// not known (not on this node, or not seen yet).
	UID(namespace, name string) (uid string, ok bool)
}

// Static is an Index over a fixed set of pods, keyed by "namespace/name".
type Static map[string]string

// UID implements Index.
func (s Static) UID(namespace, name string) (string, bool) {
	uid, ok := s[namespace+"/"+name]
	return uid, ok
}

// Informer is an Index kept current by a node-scoped, metadata-only pod
// informer. Until its first list completes it knows no pod.
type Informer struct {
	informer cache.SharedIndexInformer
	node     string
}

var _ Index = (*Informer)(nil)

// NewInformer watches the metadata of the pods scheduled to node through
// client. Call Run to start it.
func NewInformer(client metadata.Interface, node string) (*Informer, error) {
	if node == "" {
		return nil, fmt.Errorf("pod informer: empty node name")
	}
	selector := fields.OneTermEqualSelector("spec.nodeName", node).String()
	inf := metadatainformer.NewFilteredMetadataInformer(client, corev1.SchemeGroupVersion.WithResource("pods"),
		metav1.NamespaceAll, 0, cache.Indexers{}, func(o *metav1.ListOptions) { o.FieldSelector = selector }).Informer()
	// Keep only what the index needs: labels, annotations, owner
	// references and managed fields of every pod would be most of the
	// informer's memory.
	if err := inf.SetTransform(trim); err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	return &Informer{informer: inf, node: node}, nil
}

// trim reduces a pod's metadata to its identity.
func trim(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		// Deletion tombstones and anything unexpected pass through.
		return obj, nil
	}
	return &metav1.PartialObjectMetadata{
		TypeMeta: m.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:            m.Name,
			Namespace:       m.Namespace,
			UID:             m.UID,
			ResourceVersion: m.ResourceVersion,
		},
	}, nil
}

// Run runs the informer until ctx ends. It logs once when the first list
// has completed.
func (i *Informer) Run(ctx context.Context) {
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), i.informer.HasSynced) {
			klog.InfoS("Pod informer synced", "node", i.node, "pods", len(i.informer.GetStore().ListKeys()))
		}
	}()
	i.informer.RunWithContext(ctx)
}

// UID implements Index.
func (i *Informer) UID(namespace, name string) (string, bool) {
	obj, ok, err := i.informer.GetStore().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return "", false
	}
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok || m.UID == "" {
		return "", false
	}
	return string(m.UID), true
}
