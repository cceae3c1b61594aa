package kube

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
)

// NodesResource is the resource the node informer watches.
var NodesResource = corev1.SchemeGroupVersion.WithResource("nodes")

// NewNodeMetadataInformer returns a metadata-only informer of every node
// (*metav1.PartialObjectMetadata) whose cache keeps each node's name, UID,
// resource version and labels (selector resolution) and drops the rest
// (annotations, managed fields). Run it with RunWithContext.
func NewNodeMetadataInformer(client metadata.Interface) (cache.SharedIndexInformer, error) {
	inf := metadatainformer.NewFilteredMetadataInformer(client, NodesResource, metav1.NamespaceAll, 0, cache.Indexers{}, nil).Informer()
	if err := inf.SetTransform(trimNode); err != nil {
		return nil, fmt.Errorf("node informer: %w", err)
	}
	return inf, nil
}

// trimNode is the node informer's transform. Deletion tombstones and
// anything unexpected pass through.
func trimNode(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	return &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: m.Name, UID: m.UID, ResourceVersion: m.ResourceVersion, Labels: m.Labels,
	}}, nil
}
