package kube

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	kubefake "k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

// fullMeta is a pod's metadata with everything the informers must drop.
func fullMeta(namespace, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Namespace: namespace, Name: name, UID: types.UID("uid-" + name), ResourceVersion: "7",
		Labels:          map[string]string{"app": "gpu"},
		Annotations:     map[string]string{"note": strings.Repeat("x", 64)},
		OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "rs"}},
		ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		Finalizers:      []string{"f"},
	}
}

// restrictions records the namespace and selectors of every list and watch
// a fake client receives.
type restrictions struct {
	mu  sync.Mutex
	got []string
}

func (r *restrictions) record(action clienttesting.Action) {
	var l, f string
	switch a := action.(type) {
	case clienttesting.ListAction:
		l, f = a.GetListRestrictions().Labels.String(), a.GetListRestrictions().Fields.String()
	case clienttesting.WatchAction:
		l, f = a.GetWatchRestrictions().Labels.String(), a.GetWatchRestrictions().Fields.String()
	default:
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, action.GetVerb()+" ns="+action.GetNamespace()+" labels="+l+" fields="+f)
}

func (r *restrictions) reactor(action clienttesting.Action) (bool, runtime.Object, error) {
	r.record(action)
	return false, nil, nil
}

func (r *restrictions) watchReactor(action clienttesting.Action) (bool, watch.Interface, error) {
	r.record(action)
	return false, nil, nil
}

// verbs returns the verbs recorded so far.
func (r *restrictions) verbs() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := map[string]bool{}
	for _, g := range r.got {
		verb, _, _ := strings.Cut(g, " ")
		v[verb] = true
	}
	return v
}

// check waits for a list and a watch (the informer starts its watch after
// its first list) and asserts that each request carried want.
func (r *restrictions) check(t *testing.T, want string) {
	t.Helper()
	testutil.Eventually(t, "a list and a watch", func() bool { v := r.verbs(); return v["list"] && v["watch"] })
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.got {
		if verb, rest, _ := strings.Cut(g, " "); rest != want {
			t.Errorf("%s sent %q, want %q", verb, rest, want)
		}
	}
}

// run runs inf until the test ends and waits for its first list.
func run(t *testing.T, inf cache.SharedIndexInformer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { inf.RunWithContext(ctx); close(done) }()
	t.Cleanup(func() { cancel(); testutil.Receive(t, "the informer to stop", done) })
	testutil.Eventually(t, "the informer's first list", inf.HasSynced)
}

func TestPodMetadataInformer(t *testing.T) {
	tests := []struct {
		name       string
		sel        PodSelection
		wantKeys   []string
		wantLabels bool
		wantSent   string
	}{
		{
			name:     "node-scoped identity",
			sel:      PodSelection{FieldSelector: "spec.nodeName=n1"},
			wantKeys: []string{"a/p1", "b/p2"}, // the fake ignores field selectors
			wantSent: "ns= labels= fields=spec.nodeName=n1",
		},
		{
			name:     "one namespace with labels",
			sel:      PodSelection{Namespace: "a", LabelSelector: "app=gpu", KeepLabels: true},
			wantKeys: []string{"a/p1"}, wantLabels: true,
			wantSent: "ns=a labels=app=gpu fields=",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scheme := metadatafake.NewTestScheme()
			if err := metav1.AddMetaToScheme(scheme); err != nil {
				t.Fatal(err)
			}
			pod := func(ns, name string) *metav1.PartialObjectMetadata {
				return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: fullMeta(ns, name)}
			}
			client := metadatafake.NewSimpleMetadataClient(scheme, pod("a", "p1"), pod("b", "p2"))
			var sent restrictions
			client.PrependReactor("list", "pods", sent.reactor)
			client.PrependWatchReactor("pods", sent.watchReactor)

			inf, err := NewPodMetadataInformer(client, tt.sel)
			if err != nil {
				t.Fatal(err)
			}
			run(t, inf)
			sent.check(t, tt.wantSent)
			if got := inf.GetStore().ListKeys(); !sameKeys(got, tt.wantKeys) {
				t.Errorf("cached pods %q, want %q", got, tt.wantKeys)
			}
			for _, obj := range inf.GetStore().List() {
				m := obj.(*metav1.PartialObjectMetadata)
				want := metav1.ObjectMeta{Namespace: m.Namespace, Name: m.Name, UID: types.UID("uid-" + m.Name), ResourceVersion: m.ResourceVersion}
				if tt.wantLabels {
					want.Labels = map[string]string{"app": "gpu"}
				}
				if !reflect.DeepEqual(m.ObjectMeta, want) {
					t.Errorf("cached %s/%s: %+v, want %+v", m.Namespace, m.Name, m.ObjectMeta, want)
				}
			}
		})
	}
}

func TestPodInformer(t *testing.T) {
	pod := func(name string, phase corev1.PodPhase, ip string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: fullMeta("gms", name),
			Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "agent", Image: "x"}}},
			Status:     corev1.PodStatus{Phase: phase, PodIP: ip, HostIP: "10.0.0.1", Conditions: []corev1.PodCondition{{Type: corev1.PodReady}}},
		}
	}
	client := kubefake.NewClientset(pod("agent-a", corev1.PodRunning, "10.1.2.3"), pod("agent-b", corev1.PodPending, ""))
	var sent restrictions
	client.PrependReactor("list", "pods", sent.reactor)
	client.PrependWatchReactor("pods", sent.watchReactor)

	inf, err := NewPodInformer(client, PodSelection{Namespace: "gms", LabelSelector: "app=gpu"})
	if err != nil {
		t.Fatal(err)
	}
	run(t, inf)
	sent.check(t, "ns=gms labels=app=gpu fields=")
	want := map[string]corev1.PodStatus{
		"agent-a": {Phase: corev1.PodRunning, PodIP: "10.1.2.3"},
		"agent-b": {Phase: corev1.PodPending},
	}
	objs := inf.GetStore().List()
	if len(objs) != len(want) {
		t.Fatalf("cached %d pods, want %d", len(objs), len(want))
	}
	for _, obj := range objs {
		p := obj.(*corev1.Pod)
		wantMeta := metav1.ObjectMeta{Namespace: "gms", Name: p.Name, UID: types.UID("uid-" + p.Name), ResourceVersion: p.ResourceVersion}
		if !reflect.DeepEqual(p.ObjectMeta, wantMeta) || !reflect.DeepEqual(p.Spec, corev1.PodSpec{NodeName: "n1"}) || !reflect.DeepEqual(p.Status, want[p.Name]) {
			t.Errorf("cached %s: meta %+v spec %+v status %+v; want identity, node n1, phase %q and IP %q only",
				p.Name, p.ObjectMeta, p.Spec, p.Status, want[p.Name].Phase, want[p.Name].PodIP)
		}
	}
}

// TestTransformsPassTombstones checks that the transforms leave what is
// not a pod of their type (a deletion tombstone) alone.
func TestTransformsPassTombstones(t *testing.T) {
	tomb := cache.DeletedFinalStateUnknown{Key: "a/p", Obj: &corev1.Pod{ObjectMeta: fullMeta("a", "p")}}
	for name, transform := range map[string]cache.TransformFunc{
		"metadata": PodSelection{}.trimMetadata,
		"typed":    PodSelection{}.trimPod,
		"node":     trimNode,
	} {
		if got, err := transform(tomb); err != nil || !reflect.DeepEqual(got, tomb) {
			t.Errorf("%s transform(tombstone) = %v, %v; want it unchanged", name, got, err)
		}
	}
}

func TestBadSelections(t *testing.T) {
	tests := []struct {
		name string
		sel  PodSelection
		want string
	}{
		{"label selector", PodSelection{LabelSelector: "a in ("}, "label selector"},
		{"field selector", PodSelection{FieldSelector: "spec.nodeName"}, "field selector"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewPodMetadataInformer(metadatafake.NewSimpleMetadataClient(metadatafake.NewTestScheme()), tt.sel); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewPodMetadataInformer: %v, want an error naming the %s", err, tt.want)
			}
			if _, err := NewPodInformer(kubefake.NewClientset(), tt.sel); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewPodInformer: %v, want an error naming the %s", err, tt.want)
			}
		})
	}
}

func sameKeys(got, want []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(got)), want)
}
