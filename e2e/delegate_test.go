//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

const (
	// requestRate is the metric prometheus-adapter serves with it.
	requestRate = "requests_per_second"
	// totalRate is the request rate the test sends to podinfo, all pods
	// together. The seed sent 20/s against averageValue 5 (20 / 5 = 4
	// replicas), which puts the HPA exactly on the boundary between 4 and
	// 5 where Prometheus' rate extrapolation tips it either way; 17.5/s
	// wants ceil(3.5) = 4 from any replica count.
	totalRate = 17.5
	// directRate is the load while prometheus-adapter still owns the
	// APIService: enough to scale podinfo up, never to 4 replicas (while
	// new pods' series catch up, the summed rates overshoot by at most
	// half: ceil(15 / 5) = 3), so that the way to 4 is through the
	// aggregator.
	directRate = 10.0
	// rateScaleTimeout bounds a step of the request-rate HPA: the rule's
	// 2-minute rate() window must fill or drain first.
	rateScaleTimeout = 6 * time.Minute
)

// TestSeedAdapterDelegation is the seed user's cluster: prometheus-adapter
// serves requests_per_second (Istio's istio_requests_total through the
// seed's rule) and their request-rate HPA scales podinfo on it. Then the
// APIServices move to the aggregator, started with --delegate-to at
// prometheus-adapter's Service, and with the real controller manager:
//  1. the request-rate HPA keeps scaling, up and down, through the
//     aggregator;
//  2. the seed's gpu_utilization HPA scales at the same time;
//  3. both API versions serve both metrics, and discovery lists both;
//  4. with prometheus-adapter stopped, the GPU HPA keeps scaling while the
//     request-rate HPA reports it cannot get its metric, and nothing else
//     breaks; started again, it recovers without restarting the
//     aggregator;
//  5. a caller without RBAC for custom metrics is refused before anything
//     is forwarded: prometheus-adapter's audit log never sees its request.
func TestSeedAdapterDelegation(t *testing.T) {
	dir := framework.TempDir(t, "gms-e2e-delegate-")

	// The seed's demo: podinfo in namespace "test", its traffic counted by
	// "Istio" (the request counter), scraped by Prometheus every second.
	web := cluster.NewNamespace(t, "test")
	framework.StartPodFaker(t, cluster.Client, web, nil, nil)
	cluster.CreateDeployment(t, framework.WebDeployment(web, "podinfo", 1))
	podinfoReplicas := cluster.RecordReplicas(t, web, "podinfo")
	counter := cluster.StartRequestCounter(t, web, "app=podinfo")
	prom := framework.StartPrometheus(t, dir, "istio", []string{counter.URL}, time.Second)
	cluster.WaitPods(t, web, "app=podinfo", 1)
	framework.WaitFor(t, 60*time.Second, "Prometheus to hold podinfo's istio_requests_total", func(ctx context.Context) (bool, string, error) {
		n, err := prom.Scalar(ctx, fmt.Sprintf(`count(istio_requests_total{namespace=%q})`, web))
		if err != nil {
			return false, err.Error(), nil
		}
		return n == 1, fmt.Sprintf("%v series", n), nil
	})

	// Where prometheus-adapter will run: its Service's namespace and port
	// are known before it starts, so that the aggregator can be started
	// first and find nothing there.
	mon := cluster.NewNamespace(t, "monitoring")
	ports, err := framework.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	adapterPort := ports[0]
	adapterCert := cluster.ServingCertFor(t, dir, mon, "prometheus-adapter")
	adapterOpts := framework.AdapterOptions{
		PrometheusURL: prom.URL, Rules: framework.SeedRequestRateRules, RelistInterval: time.Minute,
		Port: adapterPort, Cert: &adapterCert, Audit: true,
	}

	// The aggregator with agents and the seed's GPU workload. Its
	// credentials towards the delegate: a ServiceAccount granted only get
	// on custom.metrics.k8s.io, as the chart grants it.
	gpu := cluster.NewNamespace(t, "seed-gpu")
	const delegateSA = "gpu-metrics-server-aggregator"
	cluster.GrantCustomMetricsGet(t, gpu, delegateSA)
	tokenFile := filepath.Join(dir, "delegate-token")
	if err := os.WriteFile(tokenFile, []byte(cluster.ServiceAccountToken(t, gpu, delegateSA)), 0o600); err != nil {
		t.Fatal(err)
	}
	delegateTo := mon + "/prometheus-adapter:" + strconv.Itoa(adapterPort)
	env := framework.StartGMS(t, cluster, gpu, framework.GMSOptions{
		GPUsPerNode: []int{4},
		AggregatorArgs: []string{
			"--delegate-to=" + delegateTo,
			"--delegate-ca-file=" + cluster.CAFile(),
			"--delegate-bearer-token-file=" + tokenFile,
			"--delegate-discovery-interval=1s",
		},
		Unregistered: true,
	})
	agg := env.Aggregator
	// Started with nothing at --delegate-to: ready all the same (StartGMS
	// waited on /readyz), and it says the delegate is down.
	waitDelegate(t, agg, "the aggregator to report the absent delegate down", func(s delegateStats) bool { return s.failures > 0 && s.up == 0 })

	// prometheus-adapter owns custom.metrics.k8s.io, registered as its
	// chart registers it (v1beta1 only).
	adapter := cluster.StartPrometheusAdapter(t, dir, adapterOpts)
	cluster.CreateLoopbackService(t, mon, "prometheus-adapter", adapterPort)
	cluster.PutAPIService(t, "v1beta1", mon, "prometheus-adapter", adapterPort)
	cluster.WaitAPIServiceAvailable(t, "v1beta1")

	// The seed's request-rate HPA, verbatim but for the scale-down
	// stabilization (0 instead of 5 minutes, as in the GPU scenarios).
	rateHPA := framework.PodsMetricHPA(web, "podinfo", requestRate, 1, 20, autoscalingv2.MetricTarget{
		Type: autoscalingv2.ValueMetricType, AverageValue: new(resource.MustParse("5")),
	})
	rateHPA.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{
		ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: new(int32(0))},
	}
	cluster.CreateHPA(t, rateHPA)
	waitHPA(t, web, "podinfo", "the request-rate HPA to read 0 req/s from prometheus-adapter", framework.ScaleTimeout, func(h *autoscalingv2.HorizontalPodAutoscaler) bool {
		avg, ok := framework.HPAMetricAverage(h, requestRate)
		return ok && avg == 0 && scalingActive(h)
	})

	// Load: the HPA scales podinfo up on prometheus-adapter alone.
	step := time.Now()
	counter.SetRate(directRate)
	up := waitDeployment(t, web, "podinfo", "podinfo to scale up on prometheus-adapter's requests_per_second", rateScaleTimeout, func(n int32) bool { return n >= 2 })
	t.Logf("measured: prometheus-adapter alone, 0 → %v req/s: first scale after %v", directRate, since(step, up))
	waitDelegate(t, agg, "the aggregator to see prometheus-adapter up", func(s delegateStats) bool { return s.up == 1 })

	// The move: the APIServices now route to the aggregator (v1beta1 is
	// replaced as the chart's takeover replaces it; v1beta2 is new).
	cluster.RegisterCustomMetrics(t, agg.Port)
	const trainer, trainerSel = "trainer", "app=trainer"
	env.SetAllUtilization(10)
	cluster.CreateDeployment(t, framework.GPUDeployment(gpu, trainer, 1))
	trainerReplicas := cluster.RecordReplicas(t, gpu, trainer)
	gpuHPA := framework.GPUHPA(gpu, trainer, 1, 3, autoscalingv2.MetricTarget{
		Type: autoscalingv2.ValueMetricType, AverageValue: new(resource.MustParse("60")),
	})
	gpuHPA.Spec.Behavior = rateHPA.Spec.Behavior
	cluster.CreateHPA(t, gpuHPA)
	cluster.WaitHPAMetric(t, gpu, trainer, 10)

	// 1 and 2: both HPAs scale up at the same time through the
	// aggregator, podinfo to 4 on the seed's full load.
	if n, err := cluster.DeploymentReplicas(t.Context(), web, "podinfo"); err != nil || n >= 4 {
		t.Fatalf("podinfo at %d replicas (%v) before the full load", n, err)
	}
	step = time.Now()
	counter.SetRate(totalRate)
	env.SetAllUtilization(100)
	gpuUp := waitDeployment(t, gpu, trainer, "the GPU HPA to scale trainer to 3", framework.ScaleTimeout, func(n int32) bool { return n == 3 })
	rateUp := waitHPA(t, web, "podinfo", "the request-rate HPA to settle at 4 replicas through the aggregator", rateScaleTimeout, func(h *autoscalingv2.HorizontalPodAutoscaler) bool {
		_, ok := framework.HPAMetricAverage(h, requestRate)
		return ok && scalingActive(h) && h.Status.CurrentReplicas == 4 && h.Status.DesiredReplicas == 4
	})
	t.Logf("measured: through the aggregator, %v → %v req/s and GPUs 10 → 100 %%: trainer at 3 after %v, podinfo settled at 4 after %v",
		directRate, totalRate, since(step, gpuUp), since(step, rateUp))
	podinfoPods := cluster.WaitPods(t, web, "app=podinfo", 4)
	trainerPods := cluster.WaitPods(t, gpu, trainerSel, 3)

	// 3: both versions serve both metrics; discovery lists both.
	for _, version := range framework.CustomMetricsVersions {
		framework.WaitFor(t, 60*time.Second, version+" requests_per_second of every podinfo pod", func(ctx context.Context) (bool, string, error) {
			v, err := cluster.PodMetrics(ctx, version, web, "app=podinfo", requestRate)
			if err != nil {
				return false, err.Error(), nil
			}
			for _, p := range podinfoPods {
				if v[p] <= 0 {
					return false, fmt.Sprint(v), nil
				}
			}
			return len(v) == len(podinfoPods), fmt.Sprint(v), nil
		})
		framework.WaitFor(t, 60*time.Second, version+" gpu_utilization of every trainer pod", func(ctx context.Context) (bool, string, error) {
			v, err := cluster.PodMetrics(ctx, version, gpu, trainerSel, framework.MetricName)
			if err != nil {
				return false, err.Error(), nil
			}
			for _, p := range trainerPods {
				if v[p] != 100 {
					return false, fmt.Sprint(v), nil
				}
			}
			return len(v) == len(trainerPods), fmt.Sprint(v), nil
		})
		names := discoveredMetrics(t, version)
		for _, want := range []string{"pods/gpu_utilization", "pods/" + requestRate, "namespaces/" + requestRate} {
			if !slices.Contains(names, want) {
				t.Errorf("discovery of %s lists %v, without %s", version, names, want)
			}
		}
	}

	// 1 and 2, down: no more requests, GPUs idle.
	step = time.Now()
	counter.SetRate(0)
	env.SetAllUtilization(10)
	gpuDown := waitDeployment(t, gpu, trainer, "the GPU HPA to scale trainer back to 1", framework.ScaleTimeout, func(n int32) bool { return n == 1 })
	rateDown := waitDeployment(t, web, "podinfo", "the request-rate HPA to scale podinfo back to 1 through the aggregator", rateScaleTimeout, func(n int32) bool { return n == 1 })
	t.Logf("measured: no load, GPUs 100 → 10 %%: trainer at 1 after %v, podinfo at 1 after %v", since(step, gpuDown), since(step, rateDown))
	if got := podinfoReplicas.Values(); slices.Max(got) < 4 || got[len(got)-1] != 1 {
		t.Errorf("podinfo replicas went %v, want up to 4 and back to 1", got)
	}
	if got := trainerReplicas.Values(); len(got) < 4 || !slices.Equal(got[:3], []int32{1, 2, 3}) || got[len(got)-1] != 1 {
		t.Errorf("trainer replicas went %v, want 1 → 2 → 3 → … → 1", got)
	}

	// 4: prometheus-adapter stops.
	aggPid := agg.Process.Pid()
	step = time.Now()
	adapter.Process.Stop()
	failed := waitHPA(t, web, "podinfo", "the request-rate HPA to report it cannot get its metric", framework.ScaleTimeout, func(h *autoscalingv2.HorizontalPodAutoscaler) bool {
		c := framework.HPACondition(h, autoscalingv2.ScalingActive)
		return c != nil && c.Status == corev1.ConditionFalse && c.Reason == "FailedGetPodsMetric"
	})
	waitDelegate(t, agg, "the aggregator to report prometheus-adapter down", func(s delegateStats) bool { return s.up == 0 })
	gpuStep := env.SetAllUtilization(100)
	gpuUp = waitDeployment(t, gpu, trainer, "the GPU HPA to scale trainer to 3 with prometheus-adapter down", framework.ScaleTimeout, func(n int32) bool { return n == 3 })
	t.Logf("measured: prometheus-adapter stopped: the request-rate HPA reported FailedGetPodsMetric after %v; GPUs 10 → 100 %% meanwhile: trainer at 3 after %v",
		since(step, failed), since(gpuStep, gpuUp))
	cluster.WaitHPAMetric(t, gpu, trainer, 100)
	for _, version := range framework.CustomMetricsVersions {
		names := discoveredMetrics(t, version)
		if !slices.Contains(names, "pods/gpu_utilization") || !slices.Contains(names, "pods/"+requestRate) {
			t.Errorf("discovery of %s with the delegate down lists %v, want ours and its last known", version, names)
		}
		_, err := cluster.Kubectl(t.Context(), nil, "get", "--raw", "/apis/custom.metrics.k8s.io/"+version+"/namespaces/"+web+"/pods/*/"+requestRate)
		if err == nil || !strings.Contains(err.Error(), delegateTo) {
			t.Errorf("%s requests_per_second with the delegate down: %v, want 503 naming %s", version, err, delegateTo)
		}
	}
	if code, body := agg.Get(t, cluster.HTTPClient(), "/readyz", nil); code != http.StatusOK {
		t.Errorf("the aggregator is not ready with the delegate down: %d %s", code, body)
	}

	// 4, back: prometheus-adapter starts again on its port.
	adapterOpts.Name = "prometheus-adapter-restarted"
	step = time.Now()
	adapter = cluster.StartPrometheusAdapter(t, dir, adapterOpts)
	back := waitHPA(t, web, "podinfo", "the request-rate HPA to read its metric again", framework.ScaleTimeout, func(h *autoscalingv2.HorizontalPodAutoscaler) bool {
		_, ok := framework.HPAMetricAverage(h, requestRate)
		return ok && scalingActive(h)
	})
	t.Logf("measured: prometheus-adapter restarted: the request-rate HPA active again %v after the start (the adapter took part of it to be ready)", since(step, back))
	waitDelegate(t, agg, "the aggregator to see prometheus-adapter up again", func(s delegateStats) bool { return s.up == 1 })
	if exited, err := agg.Process.Exited(); exited || agg.Process.Pid() != aggPid {
		t.Errorf("the aggregator was restarted or exited (%v)", err)
	}

	// 5: a caller without RBAC for custom metrics.
	nobody := cluster.ServiceAccountToken(t, web, "nobody")
	probe := "probe-" + strings.ToLower(rand.Text()[:10])
	barrier := "barrier-" + strings.ToLower(rand.Text()[:10])
	metricPath := func(pod string) string {
		return "/apis/custom.metrics.k8s.io/v1beta2/namespaces/" + web + "/pods/" + pod + "/" + requestRate
	}
	// Through kube-apiserver, which authorizes before it proxies.
	if _, err := cluster.Kubectl(t.Context(), nil, "--as=system:serviceaccount:"+web+":nobody", "get", "--raw", metricPath(probe)); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("through kube-apiserver: %v, want Forbidden", err)
	}
	// Straight to the aggregator: its own authorization refuses the
	// token, and a forged front-proxy header is not trusted.
	plain := cluster.AnonymousClient(t, 10*time.Second, 0)
	if code, body := agg.Get(t, plain, metricPath(probe), map[string]string{"Authorization": "Bearer " + nobody}); code != http.StatusForbidden {
		t.Errorf("the ServiceAccount without RBAC: %d %s, want 403", code, body)
	}
	if code, body := agg.Get(t, plain, metricPath(probe), map[string]string{"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"}); code != http.StatusForbidden && code != http.StatusUnauthorized {
		t.Errorf("a forged X-Remote-User: %d %s, want 401 or 403", code, body)
	}
	// Then an authorized request (the admin): it reaches
	// prometheus-adapter, as the aggregator's ServiceAccount. Its
	// RequestReceived event is written before the adapter handles it, so
	// once it is in the log, an earlier request would be too.
	if code, body := agg.Get(t, cluster.HTTPClient(), metricPath(barrier), nil); code == 0 || code == http.StatusForbidden {
		t.Errorf("the authorized request: %d %s, want prometheus-adapter's answer", code, body)
	}
	var seen []framework.AuditEvent
	framework.WaitFor(t, 30*time.Second, "prometheus-adapter's audit log to show the authorized request", func(context.Context) (bool, string, error) {
		events, err := adapter.AuditEvents()
		if err != nil {
			return false, err.Error(), nil
		}
		seen = events
		return slices.ContainsFunc(events, func(e framework.AuditEvent) bool { return strings.Contains(e.RequestURI, barrier) }), fmt.Sprintf("%d events", len(events)), nil
	})
	for _, e := range seen {
		if strings.Contains(e.RequestURI, probe) {
			t.Errorf("the unauthorized caller's request reached prometheus-adapter: %+v", e)
		}
		if strings.Contains(e.RequestURI, barrier) && e.User.Username != "system:serviceaccount:"+gpu+":"+delegateSA {
			t.Errorf("prometheus-adapter saw the forwarded request as %q, want the aggregator's ServiceAccount", e.User.Username)
		}
	}
}

// since is the time from step to at, rounded for the log.
func since(step, at time.Time) time.Duration { return at.Sub(step).Round(100 * time.Millisecond) }

// scalingActive reports whether the HPA computed a scale from its metrics.
func scalingActive(h *autoscalingv2.HorizontalPodAutoscaler) bool {
	c := framework.HPACondition(h, autoscalingv2.ScalingActive)
	return c != nil && c.Status == corev1.ConditionTrue
}

// waitHPA waits until the HPA's status satisfies ok and returns when it
// first did.
func waitHPA(t *testing.T, namespace, name, what string, timeout time.Duration, ok func(*autoscalingv2.HorizontalPodAutoscaler) bool) time.Time {
	t.Helper()
	return framework.WaitFor(t, timeout, what, func(ctx context.Context) (bool, string, error) {
		h, err := cluster.GetHPA(ctx, namespace, name)
		if err != nil {
			return false, err.Error(), nil
		}
		return ok(h), describeHPA(h), nil
	})
}

// describeHPA is framework.DescribeHPA with every metric's average.
func describeHPA(h *autoscalingv2.HorizontalPodAutoscaler) string {
	s := framework.DescribeHPA(h)
	if avg, ok := framework.HPAMetricAverage(h, requestRate); ok {
		s += fmt.Sprintf(" %s=%v", requestRate, avg)
	}
	return s
}

// waitDeployment waits until the Deployment's replicas satisfy ok and
// returns when they first did.
func waitDeployment(t *testing.T, namespace, name, what string, timeout time.Duration, ok func(int32) bool) time.Time {
	t.Helper()
	return framework.WaitFor(t, timeout, what, func(ctx context.Context) (bool, string, error) {
		n, err := cluster.DeploymentReplicas(ctx, namespace, name)
		if err != nil {
			return false, err.Error(), nil
		}
		state := fmt.Sprintf("replicas=%d", n)
		if h, err := cluster.GetHPA(ctx, namespace, name); err == nil {
			state += "; HPA " + describeHPA(h)
		}
		return ok(n), state, nil
	})
}

// discoveredMetrics returns the resources kube-apiserver's proxy to the
// custom metrics server lists for version.
func discoveredMetrics(t *testing.T, version string) []string {
	t.Helper()
	out, err := cluster.Kubectl(t.Context(), nil, "get", "--raw", "/apis/custom.metrics.k8s.io/"+version)
	if err != nil {
		t.Fatal(err)
	}
	var list metav1.APIResourceList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("discovery of %s: %v: %s", version, err, out)
	}
	var names []string
	for _, r := range list.APIResources {
		names = append(names, r.Name)
	}
	return names
}

// delegateStats is what the aggregator's self-metrics say about its
// delegate.
type delegateStats struct {
	up, failures float64
}

// waitDelegate waits until the aggregator's delegate self-metrics satisfy
// ok.
func waitDelegate(t *testing.T, agg *framework.Aggregator, what string, ok func(delegateStats) bool) {
	t.Helper()
	framework.WaitFor(t, 60*time.Second, what, func(ctx context.Context) (bool, string, error) {
		code, body := agg.Get(t, cluster.HTTPClient(), "/metrics", nil)
		if code != http.StatusOK {
			return false, fmt.Sprintf("/metrics: %d", code), nil
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			return false, err.Error(), nil
		}
		var s delegateStats
		if m := mfs["gpu_metrics_server_delegate_up"].GetMetric(); len(m) == 1 {
			s.up = m[0].GetGauge().GetValue()
		}
		for _, m := range mfs["gpu_metrics_server_delegate_discovery_refreshes_total"].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "failure" {
					s.failures = m.GetCounter().GetValue()
				}
			}
		}
		return ok(s), fmt.Sprintf("%+v", s), nil
	})
}
