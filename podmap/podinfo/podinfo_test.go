package podinfo

import (
	"context"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

func podMeta(namespace, name, uid string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: name, UID: types.UID(uid),
			Labels:      map[string]string{"app": "big"},
			Annotations: map[string]string{"note": "dropped by the transform"},
		},
	}
}

func TestInformer(t *testing.T) {
	scheme := fake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	client := fake.NewSimpleMetadataClient(scheme, podMeta("ml", "train-0", "uid-a"))
	// Record the list and watch options the informer sends: the fake
	// ignores field selectors, the API server does not.
	var mu sync.Mutex
	var selectors []string
	record := func(action clienttesting.Action) (bool, runtime.Object, error) {
		var fs string
		switch a := action.(type) {
		case clienttesting.ListAction:
			fs = a.GetListRestrictions().Fields.String()
		case clienttesting.WatchAction:
			fs = a.GetWatchRestrictions().Fields.String()
		}
		mu.Lock()
		selectors = append(selectors, fs)
		mu.Unlock()
		return false, nil, nil
	}
	client.PrependReactor("list", "pods", record)
	client.PrependWatchReactor("pods", func(action clienttesting.Action) (bool, watch.Interface, error) {
		_, _, err := record(action)
		return false, nil, err
	})

	inf, err := NewInformer(client, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { inf.Run(ctx); close(done) }()
	defer func() { cancel(); testutil.Receive(t, "Run to return", done) }()

	testutil.Eventually(t, "ml/train-0 in the index", func() bool { _, ok := inf.UID("ml", "train-0"); return ok })
	if uid, _ := inf.UID("ml", "train-0"); uid != "uid-a" {
		t.Errorf("UID = %q, want uid-a", uid)
	}
	if _, ok := inf.UID("ml", "train-1"); ok {
		t.Error("unknown pod found")
	}

	// A pod is added, another deleted: the index follows the watch.
	podsGVR := corev1.SchemeGroupVersion.WithResource("pods")
	if _, err := client.Resource(podsGVR).Namespace("inf").(fake.MetadataClient).CreateFake(podMeta("inf", "a", "uid-b"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.Resource(podsGVR).Namespace("ml").Delete(ctx, "train-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "inf/a added and ml/train-0 gone", func() bool {
		_, added := inf.UID("inf", "a")
		_, stale := inf.UID("ml", "train-0")
		return added && !stale
	})

	// The transform keeps only the pod's identity.
	obj, ok, err := inf.informer.GetStore().GetByKey("inf/a")
	if err != nil || !ok {
		t.Fatalf("store: %v %v", ok, err)
	}
	if m := obj.(*metav1.PartialObjectMetadata); m.Labels != nil || m.Annotations != nil || m.UID != "uid-b" {
		t.Errorf("stored metadata not trimmed: %+v", m.ObjectMeta)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(selectors) < 2 {
		t.Fatalf("list and watch not both seen: %q", selectors)
	}
	for _, s := range selectors {
		if s != "spec.nodeName=node-a" {
			t.Errorf("field selector %q, want spec.nodeName=node-a", s)
		}
	}
}

func TestInformerNeedsNode(t *testing.T) {
	if _, err := NewInformer(fake.NewSimpleMetadataClient(fake.NewTestScheme()), ""); err == nil {
		t.Fatal("empty node name accepted")
	}
}
