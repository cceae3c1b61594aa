package podmap

import (
	"fmt"
	"testing"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

// TestMappingCut: however many containers the kubelet lists on a device,
// the mapping holds at most MaxOwnersPerDevice of them, the first in its
// order, and counts the rest.
func TestMappingCut(t *testing.T) {
	for _, tt := range []struct {
		name         string
		onA, onB     int // containers on GPU A (time-sliced replicas) and B
		wantA, wantB int
		wantCut      int
	}{
		{"none", 0, 0, 0, 0, 0},
		{"at the bound", MaxOwnersPerDevice, 1, MaxOwnersPerDevice, 1, 0},
		{"one over", MaxOwnersPerDevice + 1, 0, MaxOwnersPerDevice, 0, 1},
		{"a node listing 60,000 pods", 50_000, 10_000, MaxOwnersPerDevice, MaxOwnersPerDevice, 60_000 - 2*MaxOwnersPerDevice},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var pods []*podresourcesv1.PodResources
			for i := range tt.onA {
				pods = append(pods, fakekubelet.GPUPod("ns", fmt.Sprintf("a-%06d", i), "c", resShared, fmt.Sprintf("%s::%d", uuidA, i)))
			}
			for i := range tt.onB {
				pods = append(pods, fakekubelet.GPUPod("ns", fmt.Sprintf("b-%06d", i), "c", resGPU, uuidB))
			}
			m := NewMapping(&podresourcesv1.ListPodResourcesResponse{PodResources: pods})
			a, b := m.Owners(keyA), m.Owners(keyB)
			if len(a) != tt.wantA || len(b) != tt.wantB {
				t.Errorf("owners: %d on A, %d on B; want %d, %d", len(a), len(b), tt.wantA, tt.wantB)
			}
			if got := m.Cut(); got != tt.wantCut {
				t.Errorf("Cut() = %d, want %d", got, tt.wantCut)
			}
			if len(a) > 0 && a[0].Pod != "a-000000" {
				t.Errorf("first owner of A %q: the cut is not in the mapping's order", a[0].Pod)
			}
		})
	}
}
