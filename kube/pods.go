// Package kube is the Kubernetes client plumbing shared by the agent and the
// aggregator: pod informers whose caches hold only what their users read.
// It imports nothing of this module.
package kube

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
)

// PodsResource is the resource the informers watch.
var PodsResource = corev1.SchemeGroupVersion.WithResource("pods")

// PodSelection picks the pods an informer lists and watches, and what of
// each its cache keeps.
type PodSelection struct {
	// Namespace limits the informer to one namespace; "" means all.
	Namespace string
	// LabelSelector and FieldSelector are sent with every list and watch,
	// so that pods outside them never cross the wire; "" selects all.
	LabelSelector string
	FieldSelector string
	// KeepLabels keeps each pod's labels (selector resolution); otherwise
	// the cache holds its identity only: namespace, name, UID and resource
	// version.
	KeepLabels bool
}

// validate parses the selectors.
func (s PodSelection) validate() error {
	if _, err := labels.Parse(s.LabelSelector); err != nil {
		return fmt.Errorf("pod informer: label selector %q: %w", s.LabelSelector, err)
	}
	if _, err := fields.ParseSelector(s.FieldSelector); err != nil {
		return fmt.Errorf("pod informer: field selector %q: %w", s.FieldSelector, err)
	}
	return nil
}

func (s PodSelection) tweak(o *metav1.ListOptions) {
	o.LabelSelector = s.LabelSelector
	o.FieldSelector = s.FieldSelector
}

// namespaceIndex lets listers answer per-namespace lists without a scan.
var namespaceIndex = cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}

// NewPodMetadataInformer returns a metadata-only informer of the selected
// pods (*metav1.PartialObjectMetadata), indexed by namespace, whose cache
// keeps what s says and drops the rest (annotations, owner references,
// managed fields: most of an informer's memory). Run it with RunWithContext.
func NewPodMetadataInformer(client metadata.Interface, s PodSelection) (cache.SharedIndexInformer, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	inf := metadatainformer.NewFilteredMetadataInformer(client, PodsResource, s.Namespace, 0, namespaceIndex, s.tweak).Informer()
	if err := inf.SetTransform(s.trimMetadata); err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	return inf, nil
}

// NewPodInformer returns an informer of the selected pods (*corev1.Pod),
// indexed by namespace, for users that need a pod's status: its cache keeps
// the metadata s says, the node name, the phase and the pod IP, and nothing
// else. Run it
// with RunWithContext.
func NewPodInformer(client kubernetes.Interface, s PodSelection) (cache.SharedIndexInformer, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	inf := coreinformers.NewFilteredPodInformer(client, s.Namespace, 0, namespaceIndex, s.tweak)
	if err := inf.SetTransform(s.trimPod); err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	return inf, nil
}

// trim keeps a pod's identity, and its labels if s asks for them.
func (s PodSelection) trim(m metav1.ObjectMeta) metav1.ObjectMeta {
	t := metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion}
	if s.KeepLabels {
		t.Labels = m.Labels
	}
	return t
}

// trimMetadata is the metadata informer's transform. Deletion tombstones
// and anything unexpected pass through.
func (s PodSelection) trimMetadata(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	return &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: s.trim(m.ObjectMeta)}, nil
}

// trimPod is the typed informer's transform.
func (s PodSelection) trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: s.trim(p.ObjectMeta),
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName},
		Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP},
	}, nil
}
