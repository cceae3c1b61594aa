//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// aggregatorReplica is one aggregator process behind the APIServices'
// Service, with its stand-in pod and the EndpointSlice listing it.
type aggregatorReplica struct {
	agg   *framework.Aggregator
	pod   *corev1.Pod
	port  int    // the pod's port: a Forwarder on the node's IP
	slice string // its EndpointSlice's name
}

// endpoint is the replica's address in the EndpointSlice (host:port).
func (r *aggregatorReplica) endpoint() string {
	return fmt.Sprintf("%s:%d", r.pod.Status.PodIP, r.port)
}

// startAggregatorReplicas starts n aggregators scraping the agents of env,
// each with a stand-in pod (the chart's aggregator labels, a readiness
// probe on /readyz through the pod's port) on the first GPU node, and
// writes for each the EndpointSlice the EndpointSlice controller would
// write for the APIServices' Service (the chart's selects those pods).
func startAggregatorReplicas(t *testing.T, env *framework.GMS, n int) []*aggregatorReplica {
	server := framework.APIServiceNamespace
	cluster.CreateNamespace(t, server)
	cluster.WaitDefaultServiceAccount(t, server)
	var urls []string
	for _, node := range env.Nodes {
		urls = append(urls, node.URL+"/metrics")
	}
	node := env.Nodes[0].Name
	ip := cluster.NodeInternalIP(t, node)
	endpointSlices := cluster.Client.DiscoveryV1().EndpointSlices(server)
	var out []*aggregatorReplica
	for i := range n {
		name := fmt.Sprintf("%s-aggregator-%d", env.Namespace, i)
		agg := cluster.StartAggregator(t, framework.TempDir(t, fmt.Sprintf("gms-e2e-replica-%d-", i)), urls, cluster.AggregatorFlags()...)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("---- last %d lines of aggregator %d ----\n%s", framework.LogTailLines, i, agg.Process.Tail(framework.LogTailLines))
			}
		})
		fwd := framework.StartForwarder(t, ip, fmt.Sprintf("127.0.0.1:%d", agg.Port))
		pod := cluster.CreateStandInPod(t, framework.StandIn{
			Namespace: server, Name: name, Node: node, Labels: aggregatorPodLabels,
			PortName: "https", Port: fwd.Port, Scheme: corev1.URISchemeHTTPS, ReadyPath: "/readyz",
		})
		r := &aggregatorReplica{agg: agg, pod: pod, port: fwd.Port, slice: name}
		slice := framework.StandInEndpointSlice(r.slice, framework.APIServiceName, pod, "https", r.port, true)
		if _, err := endpointSlices.Create(t.Context(), slice, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = endpointSlices.Delete(context.Background(), slice.Name, metav1.DeleteOptions{}) })
		out = append(out, r)
	}
	return out
}

// setEndpointReady writes the replica's EndpointSlice with its endpoint
// ready or not, as the EndpointSlice controller does when the kubelet
// reports the pod's readiness.
func (r *aggregatorReplica) setEndpointReady(t *testing.T, ready bool) {
	t.Helper()
	endpointSlices := cluster.Client.DiscoveryV1().EndpointSlices(r.pod.Namespace)
	old, err := endpointSlices.Get(t.Context(), r.slice, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	slice := framework.StandInEndpointSlice(r.slice, framework.APIServiceName, r.pod, "https", r.port, ready)
	slice.ResourceVersion = old.ResourceVersion
	if _, err := endpointSlices.Update(t.Context(), slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// hpaSyncs reads the HPA controller's counters, failing the test if it
// cannot.
func hpaSyncs(t *testing.T) framework.HPASyncs {
	t.Helper()
	s, err := cluster.HPASyncs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// apiServiceFlippedSince reports, for the log, whether each
// custom.metrics.k8s.io APIService's Available condition changed at or
// after since (its lastTransitionTime has whole seconds).
func apiServiceFlippedSince(t *testing.T, since time.Time) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, v := range framework.CustomMetricsVersions {
		obj, err := cluster.APIServices(t).Get(t.Context(), v+".custom.metrics.k8s.io", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
		for _, c := range conds {
			cond, _ := c.(map[string]any)
			if cond["type"] != "Available" {
				continue
			}
			at, err := time.Parse(time.RFC3339, fmt.Sprint(cond["lastTransitionTime"]))
			out[v] = err == nil && !at.Before(since.Truncate(time.Second))
		}
	}
	return out
}

// TestAggregatorReplicaKilled: two aggregator replicas (both scraping the
// node's agent) behind the custom.metrics.k8s.io Service, as the chart
// runs them: each a stand-in pod with a readiness probe and an endpoint in
// the Service's EndpointSlices, and a kube-proxy stand-in
// (framework.ServiceProxy) at the address the Service names. Two pods at
// 50 % under an HPA (AverageValue 50, 1–4 replicas): the HPA holds 2.
//
// The replica that carries the API server's connections gets SIGKILL.
// Until its endpoint leaves the slice, the kube-proxy stand-in sends every
// new connection to it (kube-proxy's worst draw), so the HPA's syncs find
// no metric: it reports FailedGetPodsMetric and keeps 2 replicas; no
// status of the HPA ever holds another desired count or another average
// than 50. The kubelet then sees the pod unready, its endpoint is marked
// not ready (the EndpointSlice controller's step, written by the test),
// the proxy drops it, and once the API server serves the group through the
// survivor again, at most one further HPA sync fails (one in flight then)
// before one gets the metric: the HPA recovers within one sync. A load step
// afterwards scales 2 → 4 on the survivor's values.
func TestAggregatorReplicaKilled(t *testing.T) {
	ns := cluster.NewNamespace(t, "replicakill")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{4}, AgentsOnly: true})
	replicas := startAggregatorReplicas(t, env, 2)
	victim, survivor := replicas[0], replicas[1]

	server, service := framework.APIServiceNamespace, framework.APIServiceName
	proxy := cluster.StartServiceProxy(t, cluster.NodeInternalIP(t, env.Nodes[0].Name), server, service, "https")
	framework.WaitFor(t, 30*time.Second, "the Service proxy to list both replicas", func(context.Context) (bool, string, error) {
		return slices.Equal(proxy.Endpoints(), []string{victim.endpoint(), survivor.endpoint()}), proxy.String(), nil
	})
	cluster.CreateExternalNameService(t, server, service, proxy.IP, proxy.Port)
	for _, v := range framework.CustomMetricsVersions {
		cluster.PutAPIService(t, v, server, service, proxy.Port)
	}
	for _, v := range framework.CustomMetricsVersions {
		cluster.WaitAPIServiceAvailable(t, v)
	}

	const name, selector, load = "steady", "app=steady", 50
	env.SetAllUtilization(load)
	cluster.CreateDeployment(t, framework.GPUDeployment(ns, name, 2))
	pods := cluster.WaitPods(t, ns, selector, 2)
	for _, p := range pods {
		env.GPUOf(p)
	}
	waitPodValues(t, ns, selector, func(v map[string]float64) bool {
		return len(v) == 2 && v[pods[0]] == load && v[pods[1]] == load
	})
	replicaCounts := cluster.RecordReplicas(t, ns, name)
	statuses := cluster.RecordHPA(t, ns, name)
	cluster.CreateHPA(t, framework.GPUHPA(ns, name, 1, 4, autoscalingv2.MetricTarget{
		Type:         autoscalingv2.AverageValueMetricType,
		AverageValue: new(resource.MustParse("50")),
	}))
	cluster.WaitHPAMetric(t, ns, name, load)
	// The HPA controller's counters are every HPA's: count this one's
	// syncs only once the other tests' HPAs are gone.
	framework.WaitFor(t, framework.ScaleTimeout, "the HPA controller to control this HPA alone", func(ctx context.Context) (bool, string, error) {
		s, err := cluster.HPASyncs(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		return s.HPAs == 1, fmt.Sprintf("%+v", s), nil
	})
	if proxy.Routed()[victim.endpoint()] == 0 {
		t.Fatalf("no connection went to the first replica before the kill: %v", proxy)
	}

	before := hpaSyncs(t)
	killed := time.Now()
	victim.agg.Process.Kill()

	// The HPA finds no metric, and says so.
	noticed := framework.WaitFor(t, framework.ScaleTimeout, "the HPA to report the missing metric", func(ctx context.Context) (bool, string, error) {
		h, err := cluster.GetHPA(ctx, ns, name)
		if err != nil {
			return false, err.Error(), nil
		}
		c := framework.HPACondition(h, autoscalingv2.ScalingActive)
		return c != nil && c.Status == corev1.ConditionFalse && c.Reason == "FailedGetPodsMetric", framework.DescribeHPA(h), nil
	})
	// The kubelet's probe fails: the pod is unready; its endpoint is
	// marked so, and the proxy drops it.
	cluster.WaitPodReady(t, server, victim.pod.Name, false)
	unready := time.Now()
	victim.setEndpointReady(t, false)
	dropped := framework.WaitFor(t, 30*time.Second, "the Service proxy to drop the dead replica", func(context.Context) (bool, string, error) {
		return slices.Equal(proxy.Endpoints(), []string{survivor.endpoint()}), proxy.String(), nil
	})
	routedToVictim := proxy.Routed()[victim.endpoint()]
	// The API server serves the group through the survivor: what the
	// HPA's next sync needs.
	for _, v := range framework.CustomMetricsVersions {
		cluster.WaitAPIServiceAvailable(t, v)
	}
	routed := time.Now()
	atRoute := hpaSyncs(t)
	flipped := apiServiceFlippedSince(t, killed)

	var after framework.HPASyncs
	back := framework.WaitFor(t, framework.ScaleTimeout, "an HPA sync with the metric after the route is back", func(ctx context.Context) (bool, string, error) {
		s, err := cluster.HPASyncs(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		after = s
		return s.Succeeded > atRoute.Succeeded, fmt.Sprintf("at the route %+v, now %+v", atRoute, s), nil
	})
	cluster.WaitHPAMetric(t, ns, name, load)
	if after.HPAs != 1 {
		t.Errorf("the HPA controller controlled %d HPAs while this one's syncs were counted, want 1", after.HPAs)
	}
	if n := after.Failed - atRoute.Failed; n > 1 {
		t.Errorf("%d HPA syncs failed after the route was back (at most the one in flight then may), want at most 1: at the route %+v, at the first good sync %+v", n, atRoute, after)
	}
	if n := proxy.Routed()[victim.endpoint()]; n != routedToVictim {
		t.Errorf("the Service proxy sent %d connections to the dead replica after dropping it", n-routedToVictim)
	}

	// No decision on missing or wrong data: every status the HPA took
	// once it had settled at 2 replicas on 50 wanted 2 replicas and, when
	// it had the metric, measured 50.
	failedSyncs, settled := 0, false
	for _, s := range statuses.Statuses() {
		h := &autoscalingv2.HorizontalPodAutoscaler{Status: s}
		if avg, ok := framework.HPAAverage(h); !settled {
			settled = ok && avg == load && s.DesiredReplicas == 2
			continue
		}
		if c := framework.HPACondition(h, autoscalingv2.ScalingActive); c != nil && c.Reason == "FailedGetPodsMetric" {
			failedSyncs++
		}
		if avg, ok := framework.HPAAverage(h); s.DesiredReplicas != 2 || (ok && avg != load) {
			t.Errorf("an HPA status across the kill: %s; want desired 2 and gpu_utilization %d or none", framework.DescribeHPA(h), load)
		}
	}
	if failedSyncs == 0 {
		t.Errorf("no HPA status reported FailedGetPodsMetric across the kill: %v", statuses.Statuses())
	}
	if got := replicaCounts.Values(); !slices.Equal(got, []int32{2}) {
		t.Errorf("replicas went %v across the kill, want [2]", got)
	}
	if exited, err := survivor.agg.Process.Exited(); exited {
		t.Fatalf("the surviving aggregator exited: %v", err)
	}
	t.Logf("measured: aggregator replica killed (-9): HPA reported FailedGetPodsMetric after %v; pod unready after %v; endpoint dropped by the Service proxy after %v; API serving through the survivor after %v; first good HPA sync %v after that (%d failed after the route, %d failed syncs in all: %+v → %+v); %d connections went to the dead replica; APIServices turned unavailable and back meanwhile: %v",
		noticed.Sub(killed).Round(100*time.Millisecond), unready.Sub(killed).Round(100*time.Millisecond),
		dropped.Sub(killed).Round(100*time.Millisecond), routed.Sub(killed).Round(100*time.Millisecond),
		back.Sub(routed).Round(100*time.Millisecond), after.Failed-atRoute.Failed, after.Failed-before.Failed, before, after,
		routedToVictim, flipped)

	// The HPA scales on the survivor's values.
	step := env.SetAllUtilization(100)
	scaled := waitReplicas(t, ns, name, func(n int32) bool { return n == 4 })
	pods = cluster.WaitPods(t, ns, selector, 4)
	for _, p := range pods {
		env.GPUOf(p)
	}
	waitPodValues(t, ns, selector, func(v map[string]float64) bool {
		if len(v) != 4 {
			return false
		}
		for _, x := range v {
			if x != 100 {
				return false
			}
		}
		return true
	})
	cluster.WaitHPAMetric(t, ns, name, 100)
	if got := replicaCounts.Values(); !slices.Equal(got, []int32{2, 4}) {
		t.Errorf("replicas went %v, want [2 4]", got)
	}
	if proxy.Routed()[survivor.endpoint()] == 0 {
		t.Errorf("no connection went to the surviving replica: %v", proxy)
	}
	t.Logf("measured: after the kill, utilization 50→100 scaled 2 → 4 after %v", scaled.Sub(step).Round(100*time.Millisecond))
}
