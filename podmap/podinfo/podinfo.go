// Package podinfo knows the UIDs of the pods on this node.
//
// The kubelet's pod-resources API names the pods holding each GPU by
// namespace and name; a GPU process's cgroup names its pod by UID. Informer
// joins the two: a metadata-only pod informer restricted to this node with
// the field selector spec.nodeName=<node>, so only object metadata of this
// node's pods crosses the wire and only their identity is held in memory.
// Its RBAC is list and watch on pods, the least privilege that answers the
// question (the kubelet's own pod list needs nodes/proxy, which grants far
// more). Its consumer (the collector's process attribution) defines the
// interface it satisfies.
package podinfo

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/kube"
)

// Informer answers which UID a pod of this node has, from a node-scoped,
// metadata-only pod informer. Until its first list completes it knows no
// pod. UID never blocks.
type Informer struct {
	informer cache.SharedIndexInformer
	node     string
}

// NewInformer watches the metadata of the pods scheduled to node through
// client. Call Run to start it.
func NewInformer(client metadata.Interface, node string) (*Informer, error) {
	if node == "" {
		return nil, fmt.Errorf("pod informer: empty node name")
	}
	inf, err := kube.NewPodMetadataInformer(client, kube.PodSelection{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String(),
	})
	if err != nil {
		return nil, err
	}
	return &Informer{informer: inf, node: node}, nil
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

// UID returns the UID of pod namespace/name, and false when the pod is not
// known (not on this node, or not seen yet).
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
