package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"
	cmfake "k8s.io/metrics/pkg/client/custom_metrics/fake"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var now = time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)

const serverNS = "gpu-metrics-server"

// golden compares got with testdata/name.golden (rewritten with -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	testutil.Golden(t, name, got, *update)
}

// cluster is a healthy installation, made of objects the tests break.
type cluster struct {
	objects     []runtime.Object
	apiServices []*unstructured.Unstructured
	// agentMetrics are the agents' /metrics by pod name; aggregatorMetrics
	// the aggregator's.
	agentMetrics      map[string]string
	aggregatorMetrics string
	// served are the pods whose metrics the API serves.
	served map[string]bool
	// denied are the SubjectAccessReviews answered no: "user verb resource".
	denied map[string]bool
	// forbid are the user's refused requests: "verb resource".
	forbid map[string]bool
	// proxyForbidden: the user may not use the pod proxy.
	proxyForbidden bool
	// podRefuses: the pods refuse the proxy's anonymous reads of /metrics
	// (the user may use the proxy).
	podRefuses bool
	// down: kube-apiserver does not answer.
	down bool
	// metricNames are the pod metrics discovery lists.
	metricNames []string
}

func ready() corev1.PodStatus {
	return corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
}

func pod(ns, name, node string, lbls map[string]string, port corev1.ContainerPort, limits corev1.ResourceList) *corev1.Pod {
	c := corev1.Container{Name: "main", Resources: corev1.ResourceRequirements{Limits: limits}}
	if port.ContainerPort != 0 {
		c.Ports = []corev1.ContainerPort{port}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{c}},
		Status:     ready(),
	}
}

var (
	aggregatorLabels = map[string]string{"app.kubernetes.io/name": "gpu-metrics-server", "app.kubernetes.io/component": "aggregator"}
	agentLabels      = map[string]string{"app.kubernetes.io/name": "gpu-metrics-server", "app.kubernetes.io/component": "agent"}
)

func gpus(name string, n int64) corev1.ResourceList {
	return corev1.ResourceList{corev1.ResourceName(name): *resource.NewQuantity(n, resource.DecimalSI)}
}

func node(name string, alloc corev1.ResourceList) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Allocatable: alloc}}
}

func apiService(version, svcNS, svcName string, available bool) *unstructured.Unstructured {
	status := "True"
	if !available {
		status = "False"
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": version + ".custom.metrics.k8s.io"},
		"spec": map[string]any{
			"group": "custom.metrics.k8s.io", "version": version,
			"service": map[string]any{"namespace": svcNS, "name": svcName},
		},
		"status": map[string]any{"conditions": []any{map[string]any{
			"type": "Available", "status": status, "reason": map[bool]string{true: "Passed", false: "FailedDiscoveryCheck"}[available],
			"message": map[bool]string{true: "all checks passed", false: "failing or missing response from https://10.0.0.5:6443: connection refused"}[available],
		}}},
	}}
}

func agentText(devices int, podResourcesUp int, sampleAge time.Duration, holders ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# TYPE gpu_metrics_server_devices gauge\ngpu_metrics_server_devices %d\n", devices)
	fmt.Fprintf(&b, "# TYPE gpu_metrics_server_pod_resources_up gauge\ngpu_metrics_server_pod_resources_up %d\n", podResourcesUp)
	if sampleAge >= 0 {
		fmt.Fprintf(&b, "# TYPE gpu_metrics_server_sample_timestamp_seconds gauge\ngpu_metrics_server_sample_timestamp_seconds %d\n", now.Add(-sampleAge).Unix())
	}
	b.WriteString("# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n")
	for i, h := range holders {
		ns, name, _ := strings.Cut(h, "/")
		fmt.Fprintf(&b, "DCGM_FI_DEV_GPU_UTIL{gpu=\"%d\",UUID=\"GPU-%d\",namespace=%q,pod=%q,container=\"main\"} 50\n", i, i, ns, name)
	}
	return b.String()
}

const healthyAggregatorMetrics = `# TYPE gpu_metrics_server_scrape_targets gauge
gpu_metrics_server_scrape_targets 2
# TYPE gpu_metrics_server_scrape_errors_total counter
gpu_metrics_server_scrape_errors_total{target="http://10.0.1.1:9400/metrics",reason="connect"} 0
`

func healthy() *cluster {
	minReplicas := int32(1)
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "train"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{Kind: "Deployment", Name: "train", APIVersion: "apps/v1"},
			MinReplicas:    &minReplicas, MaxReplicas: 4,
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.PodsMetricSourceType, Pods: &autoscalingv2.PodsMetricSource{
				Metric: autoscalingv2.MetricIdentifier{Name: "gpu_utilization"},
				Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: resource.NewQuantity(60, resource.DecimalSI)},
			}}},
		},
		Status: autoscalingv2.HorizontalPodAutoscalerStatus{Conditions: []autoscalingv2.HorizontalPodAutoscalerCondition{
			{Type: autoscalingv2.AbleToScale, Status: corev1.ConditionTrue, Reason: "ReadyForNewScale"},
			{Type: autoscalingv2.ScalingActive, Status: corev1.ConditionTrue, Reason: "ValidMetricFound"},
		}},
	}
	aggregator := pod(serverNS, "gms-aggregator-0", "cpu-1", aggregatorLabels, corev1.ContainerPort{Name: "https", ContainerPort: 6443}, nil)
	aggregator.Spec.ServiceAccountName = "gms-aggregator"
	yes := true
	return &cluster{
		objects: []runtime.Object{
			node("gpu-1", gpus("nvidia.com/gpu", 2)),
			node("gpu-2", gpus("nvidia.com/gpu.shared", 4)),
			node("cpu-1", corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8")}),
			aggregator,
			pod(serverNS, "gms-agent-a", "gpu-1", agentLabels, corev1.ContainerPort{Name: "metrics", ContainerPort: 9400}, nil),
			pod(serverNS, "gms-agent-b", "gpu-2", agentLabels, corev1.ContainerPort{Name: "metrics", ContainerPort: 9400}, nil),
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: serverNS, Name: "gpu-metrics-server"}, Spec: corev1.ServiceSpec{Selector: aggregatorLabels}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: serverNS, Name: "gms-agent"}, Spec: corev1.ServiceSpec{Selector: agentLabels}},
			&discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Namespace: serverNS, Name: "gpu-metrics-server-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "gpu-metrics-server"}},
				Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}}},
			},
			&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "train"},
				Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "train"}}}},
			pod("demo", "train-0", "gpu-1", map[string]string{"app": "train"}, corev1.ContainerPort{}, gpus("nvidia.com/gpu", 1)),
			pod("demo", "train-1", "gpu-2", map[string]string{"app": "train"}, corev1.ContainerPort{}, gpus("nvidia.com/gpu.shared", 1)),
			hpa,
		},
		apiServices: []*unstructured.Unstructured{
			apiService("v1beta2", serverNS, "gpu-metrics-server", true),
			apiService("v1beta1", serverNS, "gpu-metrics-server", true),
		},
		agentMetrics: map[string]string{
			"gms-agent-a": agentText(2, 1, time.Second, "demo/train-0"),
			"gms-agent-b": agentText(1, 1, 2*time.Second, "demo/train-1"),
		},
		aggregatorMetrics: healthyAggregatorMetrics,
		served:            map[string]bool{"demo/train-0": true, "demo/train-1": true},
		denied:            map[string]bool{},
		forbid:            map[string]bool{},
		metricNames:       PodMetrics,
	}
}

// remove drops the object of that kind and name.
func (c *cluster) remove(kind, name string) {
	out := c.objects[:0]
	for _, o := range c.objects {
		m, _ := o.(metav1.Object)
		if m.GetName() == name && fmt.Sprintf("%T", o) == kind {
			continue
		}
		out = append(out, o)
	}
	c.objects = out
}

// get returns the object of that kind (Go type) and name.
func (c *cluster) get(kind, name string) runtime.Object {
	for _, o := range c.objects {
		if o.(metav1.Object).GetName() == name && fmt.Sprintf("%T", o) == kind {
			return o
		}
	}
	panic("no object " + name)
}

// doctor builds the Doctor of the cluster: fake clientsets, and the pods'
// /metrics served by an httptest kube-apiserver pod proxy.
func (c *cluster) doctor(t *testing.T) *Doctor {
	t.Helper()
	kube := kubefake.NewClientset(c.objects...)
	kube.Resources = []*metav1.APIResourceList{{GroupVersion: "custom.metrics.k8s.io/v1beta2"}}
	for _, m := range c.metricNames {
		kube.Resources[0].APIResources = append(kube.Resources[0].APIResources, metav1.APIResource{Name: "pods/" + m, Namespaced: true, Kind: "MetricValueList"})
	}
	if c.down {
		kube.PrependReactor("get", "version", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New("dial tcp 10.0.0.1:6443: connect: connection refused")
		})
	}
	kube.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview).DeepCopy()
		ra := sar.Spec.ResourceAttributes
		res := ra.Resource
		if ra.Group != "" {
			res += "." + ra.Group
		}
		sar.Status.Allowed = !c.denied[sar.Spec.User+" "+ra.Verb+" "+res]
		return true, sar, nil
	})
	// Prepended last: the user's refusals come first.
	for key := range c.forbid {
		verb, res, _ := strings.Cut(key, " ")
		kube.PrependReactor(verb, res, func(a k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(a.GetResource().GroupResource(), "", errors.New("RBAC: access denied"))
		})
	}
	scheme := runtime.NewScheme()
	objs := make([]runtime.Object, 0, len(c.apiServices))
	for _, a := range c.apiServices {
		objs = append(objs, a)
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{APIServiceResource: "APIServiceList"}, objs...)
	metrics := &cmfake.FakeCustomMetricsClient{}
	metrics.AddReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		g := a.(cmfake.GetForActionImpl)
		if !c.served[g.GetNamespace()+"/"+g.GetName()] {
			return true, nil, apierrors.NewNotFound(schema.GroupResource{Group: "custom.metrics.k8s.io", Resource: "pods"}, g.GetMetricName())
		}
		w := int64(15)
		return true, &cmv1beta2.MetricValueList{Items: []cmv1beta2.MetricValue{{
			DescribedObject: corev1.ObjectReference{Kind: "Pod", Namespace: g.GetNamespace(), Name: g.GetName()},
			Metric:          cmv1beta2.MetricIdentifier{Name: g.GetMetricName()},
			Timestamp:       metav1.NewTime(now.Add(-2 * time.Second)),
			WindowSeconds:   &w,
			Value:           *resource.NewQuantity(57, resource.DecimalSI),
		}}}, nil
	})
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// /api/v1/namespaces/<ns>/pods/<scheme>:<name>:<port>/proxy/metrics
		parts := strings.Split(r.URL.Path, "/")
		if r.URL.Path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" {
			var ssar authorizationv1.SelfSubjectAccessReview
			if err := json.NewDecoder(r.Body).Decode(&ssar); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			a := ssar.Spec.ResourceAttributes
			ssar.Status.Allowed = !c.proxyForbidden && a != nil && a.Verb == "get" && a.Resource == "pods" && a.Subresource == "proxy" && a.Name != ""
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(&ssar)
			return
		}
		if c.podRefuses {
			// What a delegating API server answers system:anonymous.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"details":{},"message":"forbidden: User \"system:anonymous\" cannot get path \"/metrics\""}`)
			return
		}
		if c.proxyForbidden {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"pods \"x\" is forbidden"}`)
			return
		}
		if len(parts) != 9 || parts[8] != "metrics" {
			http.NotFound(w, r)
			return
		}
		target := strings.Split(parts[6], ":")
		body, ok := c.agentMetrics[target[1]]
		if target[1] == "gms-aggregator-0" && target[0] == "https" && target[2] == "6443" {
			body, ok = c.aggregatorMetrics, true
		} else if target[0] != "http" || target[2] != "9400" {
			ok = false
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, body)
	}))
	t.Cleanup(proxy.Close)
	proxyClient, err := kubernetes.NewForConfig(&rest.Config{Host: proxy.URL, ContentConfig: rest.ContentConfig{ContentType: "application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	return &Doctor{Kube: kube, Dynamic: dyn, Metrics: metrics, SelfMetrics: ProxySelfMetrics(proxyClient), Now: func() time.Time { return now }}
}

func config() Config {
	return Config{
		ServerNamespace:    serverNS,
		AggregatorSelector: labels.SelectorFromSet(aggregatorLabels),
		AgentSelector:      labels.SelectorFromSet(agentLabels),
		StaleAfter:         6 * time.Second,
	}
}

func run(t *testing.T, c *cluster, cfg Config) []Check {
	t.Helper()
	checks, err := c.doctor(t).Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return checks
}

// TestHealthy: every check passes on a healthy installation, printed as
// text and JSON (golden files), exit status 0.
func TestHealthy(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
	}{
		{"healthy", func(*Config) {}},
		{"healthy-hpa", func(c *Config) { c.Namespace, c.HPA = "demo", "train" }},
		{"healthy-pod", func(c *Config) { c.Namespace, c.Pod = "demo", "train-0" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config()
			tc.cfg(&cfg)
			checks := run(t, healthy(), cfg)
			for _, c := range checks {
				if c.Status != Pass {
					t.Errorf("%s %s: %s (fix: %s)", c.Status, c.Name, c.Message, c.Fix)
				}
			}
			if ExitCode(checks) != 0 {
				t.Errorf("exit code %d, want 0", ExitCode(checks))
			}
			var text, js bytes.Buffer
			if err := Print(&text, checks); err != nil {
				t.Fatal(err)
			}
			if err := PrintJSON(&js, checks); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, text.Bytes())
			golden(t, tc.name+"-json", js.Bytes())
		})
	}
}

// TestBroken: each broken setup is pinpointed by the right line, with the
// right exit status.
func TestBroken(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *cluster, cfg *Config)
		// want: a check with this status and topic whose message contains
		// every fragment.
		status   Status
		topic    string
		want     []string
		exitCode int
	}{
		{"APIService points at another Service", func(c *cluster, _ *Config) {
			a := apiService("v1beta2", "monitoring", "prometheus-adapter", true)
			a.SetLabels(map[string]string{"app.kubernetes.io/name": "prometheus-adapter"})
			a.SetAnnotations(map[string]string{"meta.helm.sh/release-name": "prom-adapter", "meta.helm.sh/release-namespace": "monitoring"})
			c.apiServices[0] = a
		}, Fail, "apiservice", []string{"v1beta2.custom.metrics.k8s.io points at Service monitoring/prometheus-adapter", "Helm release monitoring/prom-adapter", "not at gpu-metrics-server's gpu-metrics-server/gpu-metrics-server"}, 1},
		{"no aggregator pod", func(c *cluster, _ *Config) { c.remove("*v1.Pod", "gms-aggregator-0") },
			Fail, "aggregator", []string{"no aggregator pod in namespace gpu-metrics-server matches"}, 1},
		{"no aggregator pod: whose Service is unknown", func(c *cluster, _ *Config) { c.remove("*v1.Pod", "gms-aggregator-0") },
			Warn, "apiservice", []string{"points at Service gpu-metrics-server/gpu-metrics-server (owner: no Helm release or app labels) and is Available, but no Service of an aggregator pod"}, 1},
		{"APIService missing", func(c *cluster, _ *Config) { c.apiServices = c.apiServices[1:] },
			Fail, "apiservice", []string{"APIService v1beta2.custom.metrics.k8s.io does not exist"}, 1},
		{"APIService not available", func(c *cluster, _ *Config) {
			c.apiServices[0] = apiService("v1beta2", serverNS, "gpu-metrics-server", false)
		}, Fail, "apiservice", []string{"is not Available: FailedDiscoveryCheck: failing or missing response"}, 1},
		{"aggregator not ready", func(c *cluster, _ *Config) {
			p := c.get("*v1.Pod", "gms-aggregator-0").(*corev1.Pod)
			p.Status = corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "aggregator",
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 5m0s"}}}}}
		}, Fail, "aggregator", []string{"pod gpu-metrics-server/gms-aggregator-0 is not ready: container aggregator is waiting: CrashLoopBackOff"}, 1},
		{"no endpoints", func(c *cluster, _ *Config) { c.remove("*v1.EndpointSlice", "gpu-metrics-server-abc") },
			Fail, "aggregator", []string{"Service gpu-metrics-server/gpu-metrics-server has no ready endpoint"}, 1},
		{"aggregator scrapes nothing", func(c *cluster, _ *Config) { c.aggregatorMetrics = "gpu_metrics_server_scrape_targets 0\n" },
			Fail, "aggregator", []string{"scrapes no target"}, 1},
		{"delegate down", func(c *cluster, _ *Config) {
			c.aggregatorMetrics += "gpu_metrics_server_delegate_up 0\ngpu_metrics_server_delegate_discovered_metrics{version=\"v1beta1\"} 0\n"
		}, Fail, "aggregator", []string{"the delegate (--delegate-to) does not answer"}, 1},
		{"delegate answers", func(c *cluster, _ *Config) {
			c.aggregatorMetrics += "gpu_metrics_server_delegate_up 1\ngpu_metrics_server_delegate_discovered_metrics{version=\"v1beta1\"} 12\n" +
				"gpu_metrics_server_delegate_requests_total{outcome=\"success\"} 40\ngpu_metrics_server_delegate_requests_total{outcome=\"unreachable\"} 0\n"
		}, Pass, "aggregator", []string{"gms-aggregator-0: the delegate answers (12 metrics discovered)"}, 0},
		{"delegate answers, some forwards failed", func(c *cluster, _ *Config) {
			c.aggregatorMetrics += "gpu_metrics_server_delegate_up 1\ngpu_metrics_server_delegate_discovered_metrics{version=\"v1beta1\"} 12\n" +
				"gpu_metrics_server_delegate_requests_total{outcome=\"success\"} 40\ngpu_metrics_server_delegate_requests_total{outcome=\"timeout\"} 3\n"
		}, Warn, "aggregator", []string{"forwarded requests failed since it started: timeout 3"}, 0},
		{"agent missing on a GPU node", func(c *cluster, _ *Config) { c.remove("*v1.Pod", "gms-agent-b") },
			Fail, "agent", []string{"node gpu-2 has 4 allocatable GPUs but no agent pod"}, 1},
		{"kubelet socket gone", func(c *cluster, _ *Config) { c.agentMetrics["gms-agent-b"] = agentText(1, 0, time.Second) },
			Fail, "agent", []string{"node gpu-2", "pod-resources API does not answer (pod_resources_up 0)"}, 1},
		{"NVML reads no GPU", func(c *cluster, _ *Config) { c.agentMetrics["gms-agent-a"] = agentText(0, 1, time.Second) },
			Fail, "agent", []string{"node gpu-1", "reads no GPU through NVML"}, 1},
		{"agent sample stale", func(c *cluster, _ *Config) {
			c.agentMetrics["gms-agent-a"] = agentText(2, 1, time.Minute, "demo/train-0")
		},
			Fail, "agent", []string{"node gpu-1", "newest sample is 1m0s old (stale after 6s)"}, 1},
		{"pod sample stale in the aggregator", func(c *cluster, cfg *Config) {
			delete(c.served, "demo/train-0")
			cfg.Namespace, cfg.Pod = "demo", "train-0"
		}, Fail, "pod", []string{"pod demo/train-0 has no metric", "the agent on node gpu-1 serves its device, but the API does not: its sample is stale"}, 1},
		{"pod not seen by the agent", func(c *cluster, cfg *Config) {
			delete(c.served, "demo/train-0")
			c.agentMetrics["gms-agent-a"] = agentText(2, 1, time.Second)
			cfg.Namespace, cfg.Pod = "demo", "train-0"
		}, Fail, "pod", []string{"the agent on node gpu-1 sees no device for it"}, 1},
		{"pod on a node without agent", func(c *cluster, cfg *Config) {
			delete(c.served, "demo/train-1")
			c.remove("*v1.Pod", "gms-agent-b")
			cfg.Namespace, cfg.HPA = "demo", "train"
		}, Fail, "pod", []string{"pod demo/train-1 has no metric: its node gpu-2 runs no agent"}, 1},
		{"pod not scheduled", func(c *cluster, cfg *Config) {
			delete(c.served, "demo/train-0")
			p := c.get("*v1.Pod", "train-0").(*corev1.Pod)
			p.Spec.NodeName = ""
			p.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: "Unschedulable", Message: "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}}}
			cfg.Namespace, cfg.Pod = "demo", "train-0"
		}, Fail, "pod", []string{"it is not scheduled (Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.)"}, 1},
		{"pod requests no GPU", func(c *cluster, cfg *Config) {
			delete(c.served, "demo/train-0")
			c.get("*v1.Pod", "train-0").(*corev1.Pod).Spec.Containers[0].Resources.Limits = nil
			cfg.Namespace, cfg.Pod = "demo", "train-0"
		}, Fail, "pod", []string{"it requests no GPU"}, 1},
		{"HPA metric misspelled", func(c *cluster, _ *Config) {
			c.get("*v2.HorizontalPodAutoscaler", "train").(*autoscalingv2.HorizontalPodAutoscaler).Spec.Metrics[0].Pods.Metric.Name = "gpu_utilisation"
		}, Fail, "hpa", []string{"HPA demo/train names metric gpu_utilisation, which the custom metrics API does not serve (did you mean gpu_utilization?)"}, 1},
		{"HPA target type", func(c *cluster, _ *Config) {
			c.get("*v2.HorizontalPodAutoscaler", "train").(*autoscalingv2.HorizontalPodAutoscaler).Spec.Metrics[0].Pods.Target.Type = autoscalingv2.ValueMetricType
		}, Fail, "hpa", []string{"Pods metric gpu_utilization has target type Value"}, 1},
		{"HPA not scaling", func(c *cluster, _ *Config) {
			h := c.get("*v2.HorizontalPodAutoscaler", "train").(*autoscalingv2.HorizontalPodAutoscaler)
			h.Status.Conditions[1] = autoscalingv2.HorizontalPodAutoscalerCondition{Type: autoscalingv2.ScalingActive, Status: corev1.ConditionFalse,
				Reason: "FailedGetPodsMetric", Message: "the HPA was unable to compute the replica count"}
			c.objects = append(c.objects, &corev1.Event{
				ObjectMeta:     metav1.ObjectMeta{Namespace: "demo", Name: "train.1"},
				InvolvedObject: corev1.ObjectReference{Kind: "HorizontalPodAutoscaler", Namespace: "demo", Name: "train"},
				Reason:         "FailedGetPodsMetric", Message: "unable to get metric gpu_utilization: no metrics returned",
				LastTimestamp: metav1.NewTime(now.Add(-time.Minute)),
			})
		}, Fail, "hpa", []string{"HPA demo/train does not scale: ScalingActive=False (FailedGetPodsMetric", "last event: FailedGetPodsMetric: unable to get metric gpu_utilization: no metrics returned"}, 1},
		{"aggregator ServiceAccount lacks a permission", func(c *cluster, _ *Config) {
			c.denied["system:serviceaccount:gpu-metrics-server:gms-aggregator watch pods"] = true
		}, Fail, "rbac", []string{"the aggregator's ServiceAccount gpu-metrics-server/gms-aggregator may not watch pods"}, 1},
		{"aggregator ServiceAccount may not list nodes", func(c *cluster, _ *Config) {
			c.denied["system:serviceaccount:gpu-metrics-server:gms-aggregator list nodes"] = true
		}, Fail, "rbac", []string{"the aggregator's ServiceAccount gpu-metrics-server/gms-aggregator may not list nodes (to resolve the node selectors of the node metrics)"}, 1},
		{"HPA controller may not read metrics", func(c *cluster, _ *Config) {
			c.denied[HPAControllerUser+" list pods.custom.metrics.k8s.io"] = true
		}, Fail, "rbac", []string{"the HPA controller", "may not list pods.custom.metrics.k8s.io"}, 1},
		// A check the user may not make is skipped, naming the permission:
		// the exit status stays 0.
		{"user may not ask SubjectAccessReviews", func(c *cluster, _ *Config) { c.forbid["create subjectaccessreviews"] = true },
			Skip, "rbac", []string{"not allowed to check what the aggregator's ServiceAccount"}, 0},
		{"user may not use the pod proxy", func(c *cluster, _ *Config) { c.proxyForbidden = true },
			Skip, "agent", []string{"not allowed to check node gpu-1: the status of agent gms-agent-a"}, 0},
		// The pods refuse the pod proxy's anonymous read: the user lacks
		// no permission, system:anonymous does.
		{"aggregator refuses the pod proxy", func(c *cluster, _ *Config) { c.podRefuses = true },
			Skip, "aggregator", []string{"not allowed to check the scrape status of gpu-metrics-server/gms-aggregator-0", "refused the API server's pod proxy, which reads /metrics as system:anonymous", `cannot get path "/metrics"`}, 0},
		{"agent refuses the pod proxy", func(c *cluster, _ *Config) { c.podRefuses = true },
			Skip, "agent", []string{"not allowed to check node gpu-1: the status of agent gms-agent-a", "refused the API server's pod proxy"}, 0},
		{"user may not list nodes", func(c *cluster, _ *Config) { c.forbid["list nodes"] = true },
			Skip, "agent", []string{"not allowed to check which nodes have GPUs"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, cfg := healthy(), config()
			tc.mutate(c, &cfg)
			checks := run(t, c, cfg)
			found := false
			for _, ch := range checks {
				if ch.Status != tc.status || ch.Name != tc.topic {
					continue
				}
				all := true
				for _, w := range tc.want {
					all = all && strings.Contains(ch.Message, w)
				}
				if all {
					found = true
					if ch.Status == Fail && ch.Fix == "" {
						t.Errorf("%s: no fix", ch.Message)
					}
					if ch.Status == Skip && ch.MissingPermission == "" {
						t.Errorf("%s: no missing permission", ch.Message)
					}
				}
			}
			if !found {
				var b bytes.Buffer
				_ = Print(&b, checks)
				t.Errorf("no %s %s line with %q in\n%s", tc.status, tc.topic, tc.want, b.String())
			}
			if got := ExitCode(checks); got != tc.exitCode {
				t.Errorf("exit code %d, want %d", got, tc.exitCode)
			}
		})
	}
}

// TestSkippedPermissions: the skipped lines name the permission, as
// kubectl auth can-i takes it (golden file).
func TestSkippedPermissions(t *testing.T) {
	c := healthy()
	c.forbid["create subjectaccessreviews"] = true
	c.proxyForbidden = true
	var b bytes.Buffer
	if err := Print(&b, run(t, c, config())); err != nil {
		t.Fatal(err)
	}
	golden(t, "skipped", b.Bytes())
}

// TestCannotRun: no API server: ErrCannotRun, no report.
func TestCannotRun(t *testing.T) {
	c := healthy()
	c.down = true
	_, err := c.doctor(t).Run(context.Background(), config())
	if !errors.Is(err, ErrCannotRun) {
		t.Errorf("Run = %v, want ErrCannotRun", err)
	}
}

// TestEditDistance: the suggestion for a misspelled metric.
func TestEditDistance(t *testing.T) {
	names := map[string]bool{}
	for _, m := range PodMetrics {
		names[m] = true
	}
	for _, tc := range []struct{ in, want string }{
		{"gpu_utilisation", "gpu_utilization"},
		{"gpu_util", "gpu_utilization"},
		{"gpu_memory_used", "gpu_memory_used_bytes"},
		{"gpu_power", "gpu_power_usage_watts"},
		{"GPU_Utilization", "gpu_utilization"},
	} {
		if got := closest(tc.in, names); got != tc.want {
			t.Errorf("closest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestRefusal: the message quoted from what a pod answered the proxy.
func TestRefusal(t *testing.T) {
	long := strings.Repeat("x", maxRefusal+10)
	for _, tc := range []struct{ name, body, want string }{
		{"status", `{"kind":"Status","message":"forbidden: User \"system:anonymous\" cannot get path \"/metrics\""}`, `forbidden: User "system:anonymous" cannot get path "/metrics"`},
		{"plain text, first line", "Forbidden (user=system:anonymous, verb=get, resource=, subresource=)\nmore\n", "Forbidden (user=system:anonymous, verb=get, resource=, subresource=)"},
		{"long", long, long[:maxRefusal] + "..."},
		{"empty", "", ""},
		{"status without message", `{"kind":"Status"}`, `{"kind":"Status"}`},
	} {
		if got := refusal([]byte(tc.body)); got != tc.want {
			t.Errorf("%s: refusal = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func FuzzRefusal(f *testing.F) {
	f.Add([]byte(`{"message":"no"}`))
	f.Add([]byte("a\nb"))
	f.Fuzz(func(t *testing.T, body []byte) {
		if got := refusal(body); strings.Contains(got, "\n") || len(got) > maxRefusal+len("...") {
			t.Errorf("refusal(%q) = %q: more than one bounded line", body, got)
		}
	})
}
