package podmap

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

func listErrors(r *Refresher, code codes.Code) float64 {
	return promtest.ToFloat64(r.metrics.errors.WithLabelValues("List", code.String()))
}

func TestRefresherScenarios(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			path := socketPath(t)
			fake := startFake(t, path)
			fake.SetPods(sc.pods)
			r := startRefresher(t, Options{Socket: path, ExtraResourceNames: sc.extra})
			testutil.Eventually(t, "the first refresh", up(r))
			waitRefreshDone(t, fake)

			checkMapping(t, r.Current(), sc)
			for name, tc := range map[string]struct {
				c    prometheus.Collector
				want int
			}{
				"up":             {r.metrics.up, 1},
				"mapped devices": {r.metrics.mappedDevices, sc.devices},
				"unknown IDs":    {r.metrics.unknownIDs, len(sc.unknown)},
				"skipped":        {r.metrics.skipped, sc.skipped},
			} {
				if got := promtest.ToFloat64(tc.c); got != float64(tc.want) {
					t.Errorf("%s metric = %v, want %d", name, got, tc.want)
				}
			}
		})
	}
}

func TestRefresherSocketAppearsLater(t *testing.T) {
	path := socketPath(t)
	var seen transitions
	r := startRefresher(t, Options{Socket: path}, func(r *Refresher) { r.onTransition = seen.add })
	testutil.Eventually(t, "a failed List", func() bool { return listErrors(r, codes.Unavailable) >= 2 })
	if isUp(r) {
		t.Error("up with no socket")
	}
	if got := r.Current().Owners(keyA); got != nil {
		t.Errorf("Owners before any answer = %+v, want nil", got)
	}

	// The kubelet may answer once before it is given the pod.
	fake := startFake(t, path)
	fake.SetPods([]*podresourcesv1.PodResources{fakekubelet.GPUPod("ns", "late", "c", resGPU, uuidA)})
	want := []Owner{owner("ns", "late", "c", resGPU, "")}
	testutil.Eventually(t, "the kubelet's answer", func() bool { return slices.Equal(r.Current().Owners(keyA), want) })
	if !isUp(r) {
		t.Error("not up after the kubelet answered")
	}
	if got, want := seen.all(), []transition{outageBegan, connected}; !slices.Equal(got, want) {
		t.Errorf("transitions %v, want %v", got, want)
	}
}

func TestRefresherKeepsMappingThroughKubeletRestart(t *testing.T) {
	path := socketPath(t)
	fake := startFake(t, path)
	fake.SetPods([]*podresourcesv1.PodResources{
		fakekubelet.GPUPod("ns", "stays", "c", resGPU, uuidA),
		fakekubelet.GPUPod("ns", "ends", "c", resGPU, uuidB),
	})
	r := startRefresher(t, Options{Socket: path})
	testutil.Eventually(t, "the first refresh", up(r))

	fake.Stop()
	testutil.Eventually(t, "the outage to be noticed", func() bool { return !isUp(r) })
	// No refresh publishes a mapping from the first failed one on; two
	// more failures mean the refreshes before them have returned.
	during := r.Current()
	failed := listErrors(r, codes.Unavailable)
	testutil.Eventually(t, "more failed refreshes", func() bool { return listErrors(r, codes.Unavailable) >= failed+2 })
	if got := r.Current(); got != during {
		t.Errorf("the mapping changed during the outage")
	}
	if got := r.Current().Owners(keyB); !slices.Equal(got, []Owner{owner("ns", "ends", "c", resGPU, "")}) {
		t.Errorf("during the outage Owners(B) = %+v, want the last known owner", got)
	}
	if got := promtest.ToFloat64(r.metrics.up); got != 0 {
		t.Errorf("up metric during the outage = %v, want 0", got)
	}
	if got := promtest.ToFloat64(r.metrics.mappedDevices); got != 2 {
		t.Errorf("mapped devices during the outage = %v, want 2 (the mapping in use)", got)
	}

	// The kubelet comes back; the pod on B ended while it was down.
	fake = startFake(t, path)
	fake.SetPods([]*podresourcesv1.PodResources{
		fakekubelet.GPUPod("ns", "stays", "c", resGPU, uuidA),
		fakekubelet.GPUPod("ns", "new", "c", resGPU, uuidB),
	})
	testutil.Eventually(t, "the restarted kubelet's answer", func() bool {
		got := r.Current().Owners(keyB)
		return len(got) == 1 && got[0].Pod == "new"
	})
	waitRefreshDone(t, fake)
	if !isUp(r) {
		t.Error("not up after recovery")
	}
	if got := r.Current().Owners(keyA); !slices.Equal(got, []Owner{owner("ns", "stays", "c", resGPU, "")}) {
		t.Errorf("after recovery Owners(A) = %+v", got)
	}
}

// TestRefresherWaitsForRestartedKubeletToListPods: a kubelet that has just
// restarted lists no pod until it has synced with the API server; the
// mapping in use stays until it lists one.
func TestRefresherWaitsForRestartedKubeletToListPods(t *testing.T) {
	path := socketPath(t)
	fake := startFake(t, path)
	fake.SetPods([]*podresourcesv1.PodResources{fakekubelet.GPUPod("ns", "stays", "c", resGPU, uuidA)})
	var mu sync.Mutex
	var atRecovery []Owner
	recovered := false
	r := startRefresher(t, Options{Socket: path}, func(r *Refresher) {
		r.onTransition = func(tr transition) {
			if tr == outageEnded {
				mu.Lock()
				defer mu.Unlock()
				atRecovery, recovered = r.Current().Owners(keyA), true
			}
		}
	})
	testutil.Eventually(t, "the first refresh", up(r))

	fake.Stop()
	testutil.Eventually(t, "the outage to be noticed", func() bool { return !isUp(r) })
	fake = startFake(t, path) // lists no pod yet
	testutil.Eventually(t, "the restarted kubelet's first answer", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return recovered
	})
	want := []Owner{owner("ns", "stays", "c", resGPU, "")}
	mu.Lock()
	if !slices.Equal(atRecovery, want) {
		t.Errorf("after the first empty answer Owners(A) = %+v, want the last known %+v", atRecovery, want)
	}
	mu.Unlock()

	fake.SetPods([]*podresourcesv1.PodResources{fakekubelet.GPUPod("ns", "other", "c", resGPU, uuidB)})
	testutil.Eventually(t, "the synced kubelet's answer", func() bool { return r.Current().Owners(keyB) != nil })
	if got := r.Current().Owners(keyA); got != nil {
		t.Errorf("Owners(A) = %+v once the kubelet listed its pods, want none", got)
	}
}

// TestRefresherBelievesLastingEmptyAnswers: after an outage, answers that
// keep listing no pod are believed after maxUnsyncedAnswers of them.
func TestRefresherBelievesLastingEmptyAnswers(t *testing.T) {
	path := socketPath(t)
	fake := startFake(t, path)
	fake.SetPods([]*podresourcesv1.PodResources{fakekubelet.GPUPod("ns", "ends", "c", resGPU, uuidA)})
	r := startRefresher(t, Options{Socket: path})
	testutil.Eventually(t, "the first refresh", up(r))

	fake.Stop()
	testutil.Eventually(t, "the outage to be noticed", func() bool { return !isUp(r) })
	fake = startFake(t, path)
	testutil.Eventually(t, "the ended pod to drop out", func() bool { return r.Current().Owners(keyA) == nil })
	if calls := fake.ListCalls(); calls <= maxUnsyncedAnswers {
		t.Errorf("the mapping was dropped after %d empty answers, want more than %d", calls, maxUnsyncedAnswers)
	}
}

func TestRefresherDropsEndedPods(t *testing.T) {
	path := socketPath(t)
	fake := startFake(t, path)
	fake.SetPods([]*podresourcesv1.PodResources{fakekubelet.GPUPod("ns", "job", "c", resGPU, uuidA)})
	r := startRefresher(t, Options{Socket: path})
	testutil.Eventually(t, "the pod to be mapped", func() bool { return r.Current().Owners(keyA) != nil })

	fake.SetPods(nil)
	testutil.Eventually(t, "the ended pod to drop out", func() bool { return r.Current().Owners(keyA) == nil })
	waitRefreshDone(t, fake)
	if !isUp(r) {
		t.Error("not up after a successful refresh")
	}
	if got := promtest.ToFloat64(r.metrics.mappedDevices); got != 0 {
		t.Errorf("mapped devices = %v, want 0", got)
	}
}

func TestRefresherHungKubelet(t *testing.T) {
	path := socketPath(t)
	fake := startFake(t, path)
	fake.SetPods([]*podresourcesv1.PodResources{fakekubelet.GPUPod("ns", "p", "c", resGPU, uuidA)})
	r := startRefresher(t, Options{Socket: path, Timeout: 100 * time.Millisecond})
	testutil.Eventually(t, "the first refresh", up(r))
	want := r.Current().Owners(keyA)

	// Calls may already have timed out under load. From now on at most the
	// call in flight answers; once two more time out, the refresh of the
	// first of them has returned and none can succeed.
	fake.SetDelay(time.Hour)
	timedOut := listErrors(r, codes.DeadlineExceeded)
	testutil.Eventually(t, "two timed-out Lists", func() bool { return listErrors(r, codes.DeadlineExceeded) >= timedOut+2 })
	if isUp(r) {
		t.Error("up while every call times out")
	}
	// Current reads an atomic pointer: it answers while a call hangs.
	if got := r.Current().Owners(keyA); !slices.Equal(got, want) {
		t.Errorf("Owners while the kubelet hangs = %+v, want the last known %+v", got, want)
	}

	fake.SetDelay(0)
	testutil.Eventually(t, "recovery", up(r))
}

func TestRefresherErrorCodes(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code codes.Code
	}{
		{"gRPC status", status.Error(codes.PermissionDenied, "not allowed"), codes.PermissionDenied},
		{"plain error", errors.New("boom"), codes.Unknown},
		{"internal", status.Error(codes.Internal, "kubelet bug"), codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := socketPath(t)
			fake := startFake(t, path)
			fake.SetPods([]*podresourcesv1.PodResources{fakekubelet.GPUPod("ns", "p", "c", resGPU, uuidA)})
			fake.SetError(tt.err)
			r := startRefresher(t, Options{Socket: path})
			testutil.Eventually(t, "a failed List", func() bool { return listErrors(r, tt.code) >= 1 })
			if isUp(r) || r.Current().Owners(keyA) != nil {
				t.Errorf("up = %v, Owners = %+v with a failing kubelet; want false, nil", isUp(r), r.Current().Owners(keyA))
			}
			fake.SetError(nil)
			testutil.Eventually(t, "recovery", up(r))
			if r.Current().Owners(keyA) == nil {
				t.Error("no owners after recovery")
			}
		})
	}
}

func TestRefresherUnknownIDsCountedOnce(t *testing.T) {
	path := socketPath(t)
	fake := startFake(t, path)
	fake.SetPods([]*podresourcesv1.PodResources{fakekubelet.GPUPod("ns", "good", "c", resGPU, uuidA)})
	fake.SetGarbage([]string{"", "GPU-", "nvidia0/gi/vgpu", "GPU-\u00e9", "GPU-zz::1", "GPU-zz::1", uuidB})
	r := startRefresher(t, Options{Socket: path})
	testutil.Eventually(t, "the first refresh", up(r))
	waitListCalls(t, fake, 3)

	if got := promtest.ToFloat64(r.metrics.unknownIDs); got != 5 {
		t.Errorf("unknown IDs = %v after several refreshes, want 5 (each distinct ID once)", got)
	}
	if got := r.Current().Owners(keyA); !slices.Equal(got, []Owner{owner("ns", "good", "c", resGPU, "")}) {
		t.Errorf("Owners(A) = %+v", got)
	}
	// A valid ID next to garbage is still mapped.
	garbageOwner := owner(fakekubelet.GarbageNamespace, fakekubelet.GarbagePod, fakekubelet.GarbageContainer, fakekubelet.GarbageResource, "")
	if got := r.Current().Owners(keyB); !slices.Equal(got, []Owner{garbageOwner}) {
		t.Errorf("Owners(B) = %+v, want %+v", got, garbageOwner)
	}

	fake.SetGarbage([]string{"GPU-zz::1", "card7"})
	testutil.Eventually(t, "the new unknown ID", func() bool { return promtest.ToFloat64(r.metrics.unknownIDs) == 6 })
}

// TestRefresherReportsEachOutageOnce checks that each change of the
// kubelet's availability is reported (and logged) once, however many
// refreshes fail during an outage.
func TestRefresherReportsEachOutageOnce(t *testing.T) {
	path := socketPath(t)
	fake := startFake(t, path)
	var seen transitions
	r := startRefresher(t, Options{Socket: path}, func(r *Refresher) { r.onTransition = seen.add })
	testutil.Eventually(t, "the first refresh", func() bool { return seen.count(connected) == 1 })
	for i := range 2 {
		fake.Stop()
		failed := listErrors(r, codes.Unavailable)
		testutil.Eventually(t, "several failed refreshes", func() bool { return listErrors(r, codes.Unavailable) >= failed+3 })
		fake = startFake(t, path)
		testutil.Eventually(t, "recovery", func() bool { return seen.count(outageEnded) == i+1 })
	}
	want := []transition{connected, outageBegan, outageEnded, outageBegan, outageEnded}
	if got := seen.all(); !slices.Equal(got, want) {
		t.Errorf("transitions %v, want %v", got, want)
	}
}

func TestRefresherAllocatable(t *testing.T) {
	path := socketPath(t)
	fake := startFake(t, path)
	fake.SetAllocatable([]*podresourcesv1.ContainerDevices{
		devices(resGPU, uuidA+"::0", uuidA+"::1", uuidB),
		devices(resMIG1g, migA, "bogus"),
		devices(resOther, "card0"),
	})
	r := startRefresher(t, Options{Socket: path})
	testutil.Eventually(t, "the allocatable count", func() bool { return promtest.CollectAndCount(r.metrics.allocatable) == 1 })
	waitRefreshDone(t, fake)
	if got := promtest.ToFloat64(r.metrics.allocatable.WithLabelValues()); got != 3 {
		t.Errorf("allocatable devices = %v, want 3", got)
	}
	if got := promtest.ToFloat64(r.metrics.unknownIDs); got != 1 {
		t.Errorf("unknown IDs = %v, want 1 (bogus)", got)
	}
}

func TestRefresherAllocatableUnimplemented(t *testing.T) {
	path := socketPath(t)
	fake := startFake(t, path)
	fake.SetAllocatableUnimplemented(true)
	r := startRefresher(t, Options{Socket: path})
	testutil.Eventually(t, "the first refresh", up(r))
	waitListCalls(t, fake, 3)
	if got := fake.AllocatableCalls(); got != 1 {
		t.Errorf("GetAllocatableResources called %d times, want once", got)
	}
	if got := promtest.CollectAndCount(r.metrics.allocatable); got != 0 {
		t.Errorf("allocatable gauge has %d series without an answer, want 0", got)
	}
	if got := promtest.ToFloat64(r.metrics.errors.WithLabelValues("GetAllocatableResources", "Unimplemented")); got != 1 {
		t.Errorf("Unimplemented errors = %v, want 1", got)
	}
}

func TestRefresherMetricsRegistered(t *testing.T) {
	path := socketPath(t)
	fake := startFake(t, path)
	fake.SetAllocatable([]*podresourcesv1.ContainerDevices{devices(resGPU, uuidA)})
	fake.SetGarbage([]string{"bogus"})
	reg := prometheus.NewPedanticRegistry()
	r := startRefresher(t, Options{Socket: path, Registerer: reg})
	testutil.Eventually(t, "the allocatable count", func() bool { return promtest.CollectAndCount(r.metrics.allocatable) == 1 })
	fake.SetError(status.Error(codes.Unavailable, "down"))
	testutil.Eventually(t, "a failed refresh", func() bool { return !isUp(r) })

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range families {
		got = append(got, f.GetName())
	}
	want := []string{
		"gpu_metrics_server_pod_resources_allocatable_devices",
		"gpu_metrics_server_pod_resources_cut_owners",
		"gpu_metrics_server_pod_resources_mapped_devices",
		"gpu_metrics_server_pod_resources_refresh_duration_seconds",
		"gpu_metrics_server_pod_resources_refresh_errors_total",
		"gpu_metrics_server_pod_resources_skipped_containers",
		"gpu_metrics_server_pod_resources_unknown_device_ids_total",
		"gpu_metrics_server_pod_resources_up",
	}
	if !slices.Equal(got, want) {
		t.Errorf("registered families = %q, want %q", got, want)
	}
}

func TestNewRefresherRejectsBadOptions(t *testing.T) {
	taken := prometheus.NewRegistry()
	first, err := NewRefresher(Options{Socket: "/x.sock", Interval: time.Second, Timeout: time.Second, Registerer: taken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = first.conn.Close() })
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"no socket", Options{Interval: time.Second, Timeout: time.Second}, "socket path is empty"},
		{"zero interval", Options{Socket: "/x.sock", Timeout: time.Second}, "interval 0s"},
		{"negative timeout", Options{Socket: "/x.sock", Interval: time.Second, Timeout: -time.Second}, "timeout -1s"},
		{"bad resource name", Options{Socket: "/x.sock", Interval: time.Second, Timeout: time.Second, ExtraResourceNames: []string{"gpu"}}, `resource name "gpu"`},
		{"metrics already registered", Options{Socket: "/x.sock", Interval: time.Second, Timeout: time.Second, Registerer: taken}, "registering pod-resources metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRefresher(tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewRefresher = %v, %v; want an error containing %q", r, err, tt.want)
			}
		})
	}
}

func TestNewRefresherRelativeSocket(t *testing.T) {
	path := socketPath(t)
	fake := startFake(t, path)
	fake.SetPods([]*podresourcesv1.PodResources{fakekubelet.GPUPod("ns", "p", "c", resGPU, uuidA)})
	t.Chdir(filepath.Dir(fake.Path()))
	r := startRefresher(t, Options{Socket: "kubelet.sock"})
	testutil.Eventually(t, "the first refresh", up(r))
}

func TestRefresherRunTwice(t *testing.T) {
	path := socketPath(t)
	startFake(t, path)
	r := startRefresher(t, Options{Socket: path})
	testutil.Eventually(t, "the first refresh", up(r))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Run(ctx) // returns at once: the first Run owns the connection
	if !isUp(r) {
		t.Error("a second Run disturbed the first")
	}
}
