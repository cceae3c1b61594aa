package podmap

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

func benchUUID(gpu int) string {
	return fmt.Sprintf("GPU-%08x-0000-4000-8000-%012x", gpu, gpu)
}

// benchPods is a full node: pods time-sliced round-robin over gpus GPUs,
// each with a GPU container and a sidecar holding none.
func benchPods(pods, gpus int) []*podresourcesv1.PodResources {
	out := make([]*podresourcesv1.PodResources, pods)
	for i := range out {
		id := benchUUID(i%gpus) + "::" + strconv.Itoa(i/gpus)
		out[i] = pod(fmt.Sprintf("team-%d", i%5), fmt.Sprintf("inference-%03d", i),
			container("model", devices(resGPU, id)),
			container("proxy"),
		)
	}
	return out
}

// benchKeys are the agent's keys for gpus GPUs.
func benchKeys(gpus int) []DeviceKey {
	keys := make([]DeviceKey, gpus)
	for i := range keys {
		keys[i] = DeviceKey{UUID: benchUUID(i), Minor: i, GPUInstance: -1}
	}
	return keys
}

// BenchmarkNewMapping builds the mapping for 110 pods on 8 GPUs.
func BenchmarkNewMapping(b *testing.B) {
	resp := &podresourcesv1.ListPodResourcesResponse{PodResources: benchPods(110, 8)}
	b.ReportAllocs()
	for b.Loop() {
		NewMapping(resp)
	}
}

// BenchmarkOwners is the per-device, per-sample lookup the collector does.
func BenchmarkOwners(b *testing.B) {
	m := NewMapping(&podresourcesv1.ListPodResourcesResponse{PodResources: benchPods(110, 8)})
	for name, k := range map[string]DeviceKey{
		"shared GPU": benchKeys(8)[3],
		"idle GPU":   keyIdle,
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m.Owners(k)
			}
		})
	}
}

// BenchmarkRefresh is one refresh against a real gRPC peer: List over the
// unix socket and indexing of 110 pods on 8 GPUs.
func BenchmarkRefresh(b *testing.B) {
	path := socketPath(b)
	fake := startFake(b, path)
	fake.SetPods(benchPods(110, 8))
	fake.SetAllocatableUnimplemented(true)
	r, err := NewRefresher(Options{Socket: path, Interval: time.Hour, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.conn.Close() })
	ctx := context.Background()
	r.refresh(ctx)
	if !isUp(r) {
		b.Fatal("the first refresh failed")
	}
	b.ReportAllocs()
	for b.Loop() {
		r.refresh(ctx)
	}
	if !isUp(r) || r.Current().Devices() != 8 {
		b.Fatalf("up = %v, Devices() = %d after the loop", isUp(r), r.Current().Devices())
	}
}

// BenchmarkCurrentWhileKubeletHangs reads the mapping the way the collector
// does while a List call is stuck in a kubelet that takes 5 s to answer.
func BenchmarkCurrentWhileKubeletHangs(b *testing.B) {
	path := socketPath(b)
	fake := startFake(b, path)
	fake.SetPods(benchPods(110, 8))
	r := startRefresher(b, Options{Socket: path, Interval: 10 * time.Millisecond, Timeout: 10 * time.Second})
	testutil.Eventually(b, "the first refresh", up(r))
	fake.SetDelay(5 * time.Second)
	waitListCalls(b, fake, 1) // a call is now hanging
	keys := benchKeys(8)
	b.ReportAllocs()
	for b.Loop() {
		m := r.Current()
		for _, k := range keys {
			m.Owners(k)
		}
	}
}
