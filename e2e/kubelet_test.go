//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
	"github.com/gpu-metrics-server/gpu-metrics-server/hack/deviceplugin/devices"
)

// TestRemovedPodFreesItsGPU: a deleted pod and a pod scaled away leave the
// kubelet's pod-resources list, and the agent drops their labels no later
// than its first mapping refresh that began after that; the GPU the deleted
// pod freed goes, through the kubelet's device manager, to the pod that
// replaces it, and the GPU of the pod scaled away is attributed to no pod.
func TestRemovedPodFreesItsGPU(t *testing.T) {
	ns := cluster.NewNamespace(t, "removed")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{2}, AgentsOnly: true})
	const name, selector = "batch", "app=batch"
	cluster.CreateDeployment(t, framework.GPUDeployment(ns, name, 2))
	pods := cluster.WaitPods(t, ns, selector, 2)
	held := map[string]framework.GPUSlot{}
	for _, pod := range pods {
		held[pod] = env.GPUOf(pod)
		waitAttributed(t, env, held[pod], pod)
	}

	deleted, kept := pods[0], pods[1]
	if err := cluster.Client.CoreV1().Pods(ns).Delete(t.Context(), deleted, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitLabelsGone(t, env, held[deleted], deleted)
	var replacement string
	framework.WaitFor(t, 60*time.Second, "the pod replacing "+deleted, func(ctx context.Context) (bool, string, error) {
		live, err := cluster.LivePods(ctx, ns, selector)
		if err != nil {
			return false, err.Error(), nil
		}
		for _, p := range live {
			if p != kept && p != deleted {
				replacement = p
			}
		}
		return replacement != "" && len(live) == 2, fmt.Sprintf("pods %v", live), nil
	})
	if got := env.GPUOf(replacement); got != held[deleted] {
		t.Fatalf("replacement %s got %+v, want the GPU %s freed (%+v)", replacement, got, deleted, held[deleted])
	}
	held[replacement] = held[deleted]
	waitAttributed(t, env, held[replacement], replacement)

	cluster.ScaleDeployment(t, ns, name, 1)
	left := cluster.WaitPods(t, ns, selector, 1)[0]
	gone := kept
	if left == kept {
		gone = replacement
	}
	waitLabelsGone(t, env, held[gone], gone)
	waitAttributed(t, env, held[gone], "")
	waitAttributed(t, env, held[left], left)
}

// TestKubeletRestartKeepsMapping restarts the kubelet of the node a pod
// runs on: the pod keeps its device (the kubelet restores its allocations
// from its checkpoint), the agent attributes the device to the pod in
// every scrape and the custom metrics API serves the pod's value in every
// read from before the kubelet stops until the agent has refreshed from
// the new kubelet, and the device plugin, registered again, lets the new
// kubelet admit a new pod.
//
// The aggregator here keeps a value for 30 s without a new sample, so that
// a loaded machine that delays its scrapes (its turns are skipped while a
// scrape runs long) cannot make a read miss the value: what the test
// proves is that the agent's mapping never drops the pod, which the
// scrapes of the agent check at the source, in every scrape.
func TestKubeletRestartKeepsMapping(t *testing.T) {
	ns := cluster.NewNamespace(t, "restart")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{
		GPUsPerNode:    []int{2},
		AggregatorArgs: []string{"--stale-after=30s"},
	})
	const name, selector = "steady", "app=steady"
	pod, before := busyPod(t, env, name, 40)
	gpuNode := env.Nodes[before.Node]
	agent := gpuNode.URL + "/metrics"

	// Read the API without pause while the kubelet restarts.
	var mu sync.Mutex
	var reads int
	var gaps []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			v, err := cluster.PodMetrics(ctx, "v1beta2", ns, selector, framework.MetricName)
			if ctx.Err() != nil {
				return
			}
			mu.Lock()
			reads++
			if err != nil || len(v) != 1 || v[pod] != 40 {
				gaps = append(gaps, fmt.Sprintf("%s: %v (%v)", time.Now().Format(time.StampMilli), v, err))
			}
			mu.Unlock()
		}
	}()
	// Scrape the agent without pause too: every scrape must attribute the
	// pod's GPU to the pod.
	var scrapes int
	var unattributed []string
	agentDone := make(chan struct{})
	go func() {
		defer close(agentDone)
		for ctx.Err() == nil {
			samples, err := framework.ScrapeSeries(ctx, agent, framework.GPUUtilSeries)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				continue // the agent does not stop; a failed scrape says nothing of its mapping
			}
			var owner []string
			for _, s := range samples {
				if s.Labels["UUID"] == before.UUID {
					owner = append(owner, s.Labels["pod"])
				}
			}
			mu.Lock()
			scrapes++
			if !slices.Equal(owner, []string{pod}) {
				unattributed = append(unattributed, fmt.Sprintf("%s: %v", time.Now().Format(time.StampMilli), owner))
			}
			mu.Unlock()
			// Paced (the mapping changes once a refresh, every second), so
			// as not to take the CPU the restart needs.
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		<-agentDone
	})
	waitReads := func(n int, what string) {
		t.Helper()
		framework.WaitFor(t, 60*time.Second, fmt.Sprintf("%d reads of the API %s", n, what), func(context.Context) (bool, string, error) {
			mu.Lock()
			defer mu.Unlock()
			return reads >= n, fmt.Sprintf("%d reads", reads), nil
		})
	}
	waitReads(1, "before the restart")
	st, err := framework.ScrapeAgent(t.Context(), agent, framework.GPUUtilSeries)
	if err != nil {
		t.Fatal(err)
	}
	errorsBefore := st.RefreshErrors

	// A kubelet restart takes the agent's pod-resources calls down for a
	// moment (seconds, on a real node); here it restarts at once, so wait
	// until the agent has seen it down.
	gpuNode.Node.RestartKubelet(t, func() {
		framework.WaitFor(t, 60*time.Second, "the agent to see the kubelet down", func(ctx context.Context) (bool, string, error) {
			st, err := framework.ScrapeAgent(ctx, agent, framework.GPUUtilSeries)
			if err != nil {
				return false, err.Error(), nil
			}
			return st.RefreshErrors > errorsBefore, fmt.Sprintf("%v failed calls", st.RefreshErrors), nil
		})
	})
	// The new kubelet lists the pod with the same device, once it has
	// synced with the API server.
	framework.WaitFor(t, 60*time.Second, "the restarted kubelet to list "+pod, func(ctx context.Context) (bool, string, error) {
		ids, err := gpuNode.Node.DeviceIDs(ctx, ns, pod)
		if err != nil {
			return false, err.Error(), nil
		}
		if ids == nil {
			return false, "not listed", nil
		}
		if got := ids[framework.GPUResource]; !slices.Equal(got, []string{before.DeviceID()}) {
			return false, "", fmt.Errorf("after the restart the kubelet lists %s with %v, want [%s]", pod, ids, before.DeviceID())
		}
		return true, "", nil
	})
	// The agent has refreshed from the new kubelet: a refresh that began
	// after the restart succeeded.
	st, err = framework.ScrapeAgent(t.Context(), agent, framework.GPUUtilSeries)
	if err != nil {
		t.Fatal(err)
	}
	restarted := st.Refreshes
	framework.WaitFor(t, 60*time.Second, "the agent to refresh from the new kubelet", func(ctx context.Context) (bool, string, error) {
		st, err = framework.ScrapeAgent(ctx, agent, framework.GPUUtilSeries)
		if err != nil {
			return false, err.Error(), nil
		}
		return st.Refreshes >= restarted+2 && st.KubeletUp, fmt.Sprintf("refreshes %d (%d at the restart), up %v", st.Refreshes, restarted, st.KubeletUp), nil
	})
	mu.Lock()
	n := reads
	mu.Unlock()
	waitReads(n+1, "after the agent refreshed")
	cancel()
	<-done
	<-agentDone
	mu.Lock()
	t.Logf("measured: %d reads of the API and %d scrapes of the agent through the kubelet restart", reads, scrapes)
	if len(gaps) > 0 {
		t.Errorf("%d of %d reads through the kubelet restart lacked %s=40:\n%v", len(gaps), reads, pod, gaps)
	}
	if scrapes == 0 {
		t.Error("no scrape of the agent succeeded through the kubelet restart")
	}
	if len(unattributed) > 0 {
		t.Errorf("%d of %d scrapes through the kubelet restart did not attribute GPU %s to %s alone:\n%v", len(unattributed), scrapes, before.UUID, pod, unattributed)
	}
	mu.Unlock()
	waitAttributed(t, env, before, pod)

	cluster.ScaleDeployment(t, ns, name, 2)
	pods := cluster.WaitPods(t, ns, selector, 2)
	other := pods[0]
	if other == pod {
		other = pods[1]
	}
	if s := env.GPUOf(other); s.Node != before.Node || s.Index == before.Index {
		t.Errorf("new pod %s got %+v, want the other GPU of %s", other, s, gpuNode.Name)
	}
	waitRunning(t, ns, other)
}

// TestMIGMixedStrategy: MIG instances (mixed strategy) under their
// nvidia.com/mig-<profile> names, allocated by the kubelet as MIG-<uuid>
// IDs, next to a whole GPU: the agent attributes each instance to its pod
// and the custom metrics API gives each pod its own instance's activity.
func TestMIGMixedStrategy(t *testing.T) {
	ns := cluster.NewNamespace(t, "mig")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{2}, MIG: [][]int{{0}}})
	workloads := []struct {
		name, resource string
		replicas       int32
	}{
		{"small", devices.MIGResourcePrefix + "1g.10gb", 2},
		{"big", devices.MIGResourcePrefix + "3g.40gb", 1},
		{"whole", devices.GPUResource, 1},
	}
	for _, w := range workloads {
		cluster.CreateDeployment(t, framework.DeviceDeployment(ns, w.name, w.replicas, w.resource))
	}
	want := map[string]float64{}
	instances := map[int]string{} // GPU instance → pod
	next := 10
	for _, w := range workloads {
		for _, pod := range cluster.WaitPods(t, ns, "app="+w.name, int(w.replicas)) {
			a := env.Allocation(pod)
			if a.Resource != w.resource || len(a.Devices) != 1 {
				t.Fatalf("%s holds %+v under %s, want one device of %s", pod, a.Devices, a.Resource, w.resource)
			}
			d := a.Devices[0]
			want[pod] = float64(next)
			if d.GPUInstance < 0 {
				env.SetUtilization(a.Node, strconv.Itoa(d.GPU), next)
				waitAttributed(t, env, framework.GPUSlot{Node: a.Node, Index: d.GPU, UUID: d.UUID}, pod)
			} else {
				if other, dup := instances[d.GPUInstance]; dup {
					t.Fatalf("%s and %s both hold MIG instance %d", pod, other, d.GPUInstance)
				}
				instances[d.GPUInstance] = pod
				env.SetInstanceUtilization(a.Node, d.GPU, d.GPUInstance, next)
				waitInstanceAttributed(t, env, a.Node, d, map[string]float64{pod: float64(next) / 100})
			}
			next += 10
		}
	}
	waitAllValues(t, ns, []string{"app=small", "app=big", "app=whole"}, want)
}

// TestTimeSlicedRenamedDevices: time-slicing with NVIDIA's renameByDefault
// on a node with a MIG GPU: two pods share a whole GPU as
// nvidia.com/gpu.shared (GPU-<uuid>::<n>) and get their own processes'
// shares (70 / 10); two pods share a MIG instance as
// nvidia.com/mig-3g.40gb.shared (MIG-<uuid>::<n>) and both get the
// instance's activity (an instance is attributed whole).
func TestTimeSlicedRenamedDevices(t *testing.T) {
	ns := cluster.NewNamespace(t, "renamed")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{2}, MIG: [][]int{{0}}, TimeSlices: 2, RenameShared: true})
	gpuShared := devices.GPUResource + devices.SharedSuffix
	migShared := devices.MIGResourcePrefix + "3g.40gb" + devices.SharedSuffix
	cluster.CreateDeployment(t, framework.DeviceDeployment(ns, "shared", 2, gpuShared))
	cluster.CreateDeployment(t, framework.DeviceDeployment(ns, "slices", 2, migShared))

	sameDevice := func(selector, resource string) ([]string, []devices.Device) {
		t.Helper()
		pods := cluster.WaitPods(t, ns, selector, 2)
		var devs []devices.Device
		for _, pod := range pods {
			a := env.Allocation(pod)
			if a.Resource != resource || len(a.Devices) != 1 {
				t.Fatalf("%s holds %+v under %s, want one device of %s", pod, a.Devices, a.Resource, resource)
			}
			devs = append(devs, a.Devices[0])
		}
		if devs[0].UUID != devs[1].UUID || devs[0].Replica == devs[1].Replica || devs[0].Replica == "" {
			t.Fatalf("%v do not share one device as two replicas: %+v", pods, devs)
		}
		return pods, devs
	}
	shared, _ := sameDevice("app=shared", gpuShared)
	sliced, sliceDevs := sameDevice("app=slices", migShared)

	env.SetPodShare(shared[0], 70)
	env.SetPodShare(shared[1], 10)
	env.SetInstanceUtilization(0, sliceDevs[0].GPU, sliceDevs[0].GPUInstance, 50)
	waitInstanceAttributed(t, env, 0, sliceDevs[0], map[string]float64{sliced[0]: 0.5, sliced[1]: 0.5})
	waitAllValues(t, ns, []string{"app=shared", "app=slices"},
		map[string]float64{shared[0]: 70, shared[1]: 10, sliced[0]: 50, sliced[1]: 50})
}

// waitAllValues waits until both custom.metrics.k8s.io versions give the
// pods of the selectors exactly the values of want.
func waitAllValues(t *testing.T, namespace string, selectors []string, want map[string]float64) {
	t.Helper()
	for _, version := range framework.CustomMetricsVersions {
		framework.WaitFor(t, 60*time.Second, version+" values "+fmt.Sprint(want), func(ctx context.Context) (bool, string, error) {
			got := map[string]float64{}
			for _, sel := range selectors {
				v, err := cluster.PodMetrics(ctx, version, namespace, sel, framework.MetricName)
				if err != nil {
					return false, err.Error(), nil
				}
				maps.Copy(got, v)
			}
			return maps.Equal(got, want), fmt.Sprint(got), nil
		})
	}
}

// busyPod runs a Deployment name of one pod with a GPU, sets that GPU to
// percent, waits until the API serves it, and returns the pod and its GPU.
func busyPod(t *testing.T, env *framework.GMS, name string, percent int) (string, framework.GPUSlot) {
	t.Helper()
	selector := "app=" + name
	cluster.CreateDeployment(t, framework.GPUDeployment(env.Namespace, name, 1))
	pod := cluster.WaitPods(t, env.Namespace, selector, 1)[0]
	slot := env.GPUOf(pod)
	env.SetPodUtilization(pod, percent)
	waitPodValues(t, env.Namespace, selector, func(v map[string]float64) bool { return v[pod] == float64(percent) })
	return pod, slot
}

// waitAttributed waits until the agent's utilization series of the GPU in
// slot names pod (with the test's namespace and the workload's
// container), or, with pod "", no pod at all.
func waitAttributed(t *testing.T, env *framework.GMS, slot framework.GPUSlot, pod string) {
	t.Helper()
	what := fmt.Sprintf("the agent to attribute GPU %d (%s) to %q", slot.Index, slot.UUID, pod)
	framework.WaitFor(t, 30*time.Second, what, func(ctx context.Context) (bool, string, error) {
		samples, err := framework.ScrapeSeries(ctx, env.Nodes[slot.Node].URL+"/metrics", framework.GPUUtilSeries)
		if err != nil {
			return false, err.Error(), nil
		}
		var seen []map[string]string
		for _, s := range samples {
			if s.Labels["UUID"] != slot.UUID {
				continue
			}
			seen = append(seen, s.Labels)
			l := s.Labels
			if pod == "" && l["pod"] == "" {
				return true, "", nil
			}
			if pod != "" && l["pod"] == pod && l["namespace"] == env.Namespace && l["container"] == framework.WorkloadContainer {
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("series %v", seen), nil
	})
}

// waitInstanceAttributed waits until the agent's graphics-engine series of
// MIG instance d on node carry exactly the pods of want, each with its
// value.
func waitInstanceAttributed(t *testing.T, env *framework.GMS, node int, d devices.Device, want map[string]float64) {
	t.Helper()
	what := fmt.Sprintf("the agent to attribute MIG instance %d of GPU %d to %v", d.GPUInstance, d.GPU, want)
	framework.WaitFor(t, 30*time.Second, what, func(ctx context.Context) (bool, string, error) {
		samples, err := framework.ScrapeSeries(ctx, env.Nodes[node].URL+"/metrics", "DCGM_FI_PROF_GR_ENGINE_ACTIVE")
		if err != nil {
			return false, err.Error(), nil
		}
		got := map[string]float64{}
		for _, s := range samples {
			l := s.Labels
			if l["gpu"] != strconv.Itoa(d.GPU) || l["GPU_I_ID"] != strconv.Itoa(d.GPUInstance) {
				continue
			}
			if l["namespace"] == env.Namespace && l["container"] == framework.WorkloadContainer {
				got[l["pod"]] = s.Value
			} else {
				got[fmt.Sprint(l)] = s.Value
			}
		}
		return maps.Equal(got, want), fmt.Sprint(got), nil
	})
}

// waitLabelsGone waits until the kubelet of the node of slot no longer
// lists pod, then until the agent has published a mapping from a refresh
// that began after that, and a sampling round has used it: that round's
// series must not name pod. Refreshes run one after another and each
// publishes its mapping before the next begins, so with R refreshes
// counted once the kubelet dropped the pod, refresh R+2 began after it
// and its mapping is published once R+3 are counted.
func waitLabelsGone(t *testing.T, env *framework.GMS, slot framework.GPUSlot, pod string) {
	t.Helper()
	node := env.Nodes[slot.Node]
	agent := node.URL + "/metrics"
	framework.WaitFor(t, 60*time.Second, "the kubelet of "+node.Name+" to stop listing "+pod, func(ctx context.Context) (bool, string, error) {
		ids, err := node.Node.DeviceIDs(ctx, env.Namespace, pod)
		if err != nil {
			return false, err.Error(), nil
		}
		return ids == nil, fmt.Sprintf("devices %v", ids), nil
	})
	st, err := framework.ScrapeAgent(t.Context(), agent, framework.GPUUtilSeries)
	if err != nil {
		t.Fatal(err)
	}
	dropped := st.Refreshes
	var published time.Time
	framework.WaitFor(t, 30*time.Second, "the agent's first refresh begun after the kubelet dropped "+pod, func(ctx context.Context) (bool, string, error) {
		st, err := framework.ScrapeAgent(ctx, agent, framework.GPUUtilSeries)
		if err != nil {
			return false, err.Error(), nil
		}
		published = time.Now()
		return st.Refreshes >= dropped+3, fmt.Sprintf("%d refreshes, %d when the kubelet dropped the pod", st.Refreshes, dropped), nil
	})
	framework.WaitFor(t, 30*time.Second, "a sampling round with that mapping", func(ctx context.Context) (bool, string, error) {
		st, err := framework.ScrapeAgent(ctx, agent, framework.GPUUtilSeries)
		if err != nil {
			return false, err.Error(), nil
		}
		if !st.Sampled.After(published) {
			return false, "sampled at " + st.Sampled.Format(time.StampMilli), nil
		}
		for _, s := range st.Series {
			if s.Labels["pod"] == pod && s.Labels["namespace"] == env.Namespace {
				return false, "", fmt.Errorf("%s still labels %v after the agent refreshed from a kubelet that no longer lists it", pod, s.Labels)
			}
		}
		return true, "", nil
	})
}

// waitRunning waits until the kubelet reports pod Running.
func waitRunning(t *testing.T, namespace, pod string) {
	t.Helper()
	framework.WaitFor(t, 60*time.Second, pod+" to be Running", func(ctx context.Context) (bool, string, error) {
		p, err := cluster.Client.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return p.Status.Phase == corev1.PodRunning, fmt.Sprintf("%s %s", p.Status.Phase, p.Status.Reason), nil
	})
}
