package podmap

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

// holdStep is one outcome of a refresh, fed to the Refresher in order:
// the kubelet unavailable (down), or an answer listing pods.
type holdStep struct {
	down bool
	pods []*podresourcesv1.PodResources
}

func downStep() holdStep { return holdStep{down: true} }

func answer(pods ...*podresourcesv1.PodResources) holdStep { return holdStep{pods: pods} }

func emptyAnswers(n int) []holdStep {
	steps := make([]holdStep, n)
	for i := range steps {
		steps[i] = answer()
	}
	return steps
}

func steps(parts ...[]holdStep) []holdStep { return slices.Concat(parts...) }

// TestRefresherHoldIsBounded feeds the refresh outcomes of each case, one
// at a time and without a kubelet or a clock, to the code a refresh runs
// after its List, and checks who owns GPU A after every step. It pins the
// bound docs/architecture.md states: after an outage, a kubelet that keeps
// listing no pod (its pods really ended) is believed at its
// (maxUnsyncedAnswers+1)-th answer in a row; without an outage an empty
// answer is believed at once.
func TestRefresherHoldIsBounded(t *testing.T) {
	stays := fakekubelet.GPUPod("ns", "stays", "c", resGPU, uuidA)
	other := fakekubelet.GPUPod("ns", "other", "c", resGPU, uuidB)
	ownedByStays := []Owner{owner("ns", "stays", "c", resGPU, "")}
	up := answer(stays)

	for _, tc := range []struct {
		name  string
		steps []holdStep
		// owned is the number of steps after which GPU A still belongs to
		// "stays"; from then on it belongs to no pod.
		owned int
	}{
		{
			name:  "pods deleted without an outage: dropped at the first empty answer",
			steps: steps([]holdStep{up}, emptyAnswers(3)),
			owned: 1,
		},
		{
			name:  "restarted kubelet lists the pod again: held throughout",
			steps: steps([]holdStep{up, downStep()}, emptyAnswers(maxUnsyncedAnswers), []holdStep{up}, emptyAnswers(1)),
			owned: 2 + maxUnsyncedAnswers + 1,
		},
		{
			name:  "every pod deleted during the outage: dropped at the bound",
			steps: steps([]holdStep{up, downStep(), downStep()}, emptyAnswers(maxUnsyncedAnswers+3)),
			owned: 3 + maxUnsyncedAnswers,
		},
		{
			name:  "after an outage an answer listing another pod replaces the mapping at once",
			steps: steps([]holdStep{up, downStep(), answer(other)}, emptyAnswers(2)),
			owned: 2,
		},
		{
			name:  "a second outage while held starts the count again",
			steps: steps([]holdStep{up, downStep()}, emptyAnswers(maxUnsyncedAnswers-1), []holdStep{downStep()}, emptyAnswers(maxUnsyncedAnswers+1)),
			owned: 2 + maxUnsyncedAnswers - 1 + 1 + maxUnsyncedAnswers,
		},
		{
			name:  "the hold ends with the first answer listing a pod",
			steps: steps([]holdStep{up, downStep()}, emptyAnswers(2), []holdStep{up}, emptyAnswers(1)),
			owned: 2 + 2 + 1,
		},
		{
			name:  "an outage before the first answer holds nothing",
			steps: steps([]holdStep{downStep()}, emptyAnswers(2)),
			owned: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// NewRefresher does not dial; publish never calls the kubelet.
			r, err := NewRefresher(Options{Socket: filepath.Join(t.TempDir(), "none.sock"), Interval: time.Second, Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.conn.Close() })
			for i, s := range tc.steps {
				if s.down {
					r.setDown(errors.New("kubelet unavailable"))
				} else {
					r.publish(buildMapping(s.pods, r.resources), len(s.pods))
				}
				var want []Owner
				if i < tc.owned {
					want = ownedByStays
				}
				got := r.Current().Owners(keyA)
				if !slices.Equal(got, want) {
					t.Fatalf("after step %d (%s): Owners(A) = %+v, want %+v", i+1, describe(s), got, want)
				}
			}
		})
	}
}

func describe(s holdStep) string {
	if s.down {
		return "kubelet down"
	}
	return fmt.Sprintf("answer listing %d pods", len(s.pods))
}
