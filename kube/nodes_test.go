package kube

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	metadatafake "k8s.io/client-go/metadata/fake"
)

// TestNodeMetadataInformer checks that the node cache keeps each node's
// identity and labels only.
func TestNodeMetadataInformer(t *testing.T) {
	scheme := metadatafake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	node := func(name string) *metav1.PartialObjectMetadata {
		m := fullMeta("", name)
		return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"}, ObjectMeta: m}
	}
	inf, err := NewNodeMetadataInformer(metadatafake.NewSimpleMetadataClient(scheme, node("n1"), node("n2")))
	if err != nil {
		t.Fatal(err)
	}
	run(t, inf)
	if got := inf.GetStore().ListKeys(); !sameKeys(got, []string{"n1", "n2"}) {
		t.Errorf("cached nodes %q, want n1 and n2", got)
	}
	for _, obj := range inf.GetStore().List() {
		m := obj.(*metav1.PartialObjectMetadata)
		want := metav1.ObjectMeta{Name: m.Name, UID: types.UID("uid-" + m.Name), ResourceVersion: m.ResourceVersion, Labels: map[string]string{"app": "gpu"}}
		if !reflect.DeepEqual(m.ObjectMeta, want) {
			t.Errorf("cached %s: %+v, want %+v", m.Name, m.ObjectMeta, want)
		}
	}
}
