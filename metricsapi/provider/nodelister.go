package provider

import (
	"context"
	"fmt"
	"maps"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	"github.com/gpu-metrics-server/gpu-metrics-server/kube"
)

// StaticNode is a node known without a Kubernetes API (standalone mode).
type StaticNode struct {
	Name   string
	Labels map[string]string
}

// StaticNodeLister resolves selectors against a fixed list of nodes.
type StaticNodeLister struct {
	nodes []StaticNode
}

// NewStaticNodeLister returns a lister of nodes. The nodes are copied.
func NewStaticNodeLister(nodes []StaticNode) *StaticNodeLister {
	l := &StaticNodeLister{}
	for _, n := range nodes {
		n.Labels = maps.Clone(n.Labels)
		l.nodes = append(l.nodes, n)
	}
	return l
}

// ListNodes implements NodeLister.
func (l *StaticNodeLister) ListNodes(selector labels.Selector) ([]string, error) {
	var names []string
	for _, n := range l.nodes {
		if selector.Matches(labels.Set(n.Labels)) {
			names = append(names, n.Name)
		}
	}
	return names, nil
}

// HasSynced is always true.
func (l *StaticNodeLister) HasSynced() bool { return true }

// MetadataNodeLister resolves selectors against a metadata-only informer
// of the cluster's nodes (names and labels), so that a query never calls
// the Kubernetes API.
type MetadataNodeLister struct {
	informer cache.SharedIndexInformer
}

// NewMetadataNodeLister prepares the informer; Run starts it.
func NewMetadataNodeLister(client metadata.Interface) (*MetadataNodeLister, error) {
	inf, err := kube.NewNodeMetadataInformer(client)
	if err != nil {
		return nil, err
	}
	return &MetadataNodeLister{informer: inf}, nil
}

// Run runs the informer until ctx is done.
func (l *MetadataNodeLister) Run(ctx context.Context) { l.informer.RunWithContext(ctx) }

// HasSynced reports whether the informer has listed the nodes once.
func (l *MetadataNodeLister) HasSynced() bool { return l.informer.HasSynced() }

// ListNodes implements NodeLister.
func (l *MetadataNodeLister) ListNodes(selector labels.Selector) ([]string, error) {
	var names []string
	var bad any
	for _, o := range l.informer.GetStore().List() {
		m, ok := o.(*metav1.PartialObjectMetadata)
		if !ok {
			bad = o
			continue
		}
		if selector.Matches(labels.Set(m.Labels)) {
			names = append(names, m.Name)
		}
	}
	if bad != nil {
		return nil, fmt.Errorf("node cache holds a %T", bad)
	}
	slices.Sort(names)
	return names, nil
}
