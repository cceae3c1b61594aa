//go:build e2e

package framework

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

const (
	// GPUResource is the extended resource the workload requests.
	GPUResource = "nvidia.com/gpu"
	// WorkloadContainer is the name of the workload's only container.
	WorkloadContainer = "cuda"
	// MetricName is the custom metric the aggregator serves per pod.
	MetricName = "gpu_utilization"
	// ScaleTimeout bounds each scaling step: several HPA sync periods plus
	// the default scale-up/down rate limits (one step per 15 s).
	ScaleTimeout = 90 * time.Second
	// envKubectl is the kubectl binary; unset, kubectl is looked up on PATH.
	envKubectl = "GMS_KUBECTL"
)

// Kubectl runs kubectl as the admin and returns its stdout.
func (cp *ControlPlane) Kubectl(ctx context.Context, stdin []byte, args ...string) (string, error) {
	bin := os.Getenv(envKubectl)
	if bin == "" {
		bin = "kubectl"
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// The discovery cache goes to the run directory, not ~/.kube.
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig=" + cp.Kubeconfig, "--cache-dir=" + filepath.Join(cp.Dir, "kubectl-cache")}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// NewNamespace creates a namespace for one test and waits until its default
// service account exists (pods are refused before that).
func (cp *ControlPlane) NewNamespace(t testing.TB, prefix string) string {
	t.Helper()
	ns, err := cp.Client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	if cp.cfg.Kubelets {
		// Deleted at the end (by the namespace controller, not waited
		// for): nothing of a test outlives it.
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := cp.Client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting namespace %s: %v", ns.Name, err)
			}
		})
	}
	cp.WaitDefaultServiceAccount(t, ns.Name)
	return ns.Name
}

// WaitDefaultServiceAccount waits until the service account controller
// has created the default ServiceAccount of namespace (pods without a
// ServiceAccount are refused before that).
func (cp *ControlPlane) WaitDefaultServiceAccount(t testing.TB, namespace string) {
	t.Helper()
	WaitFor(t, 60*time.Second, "the default service account of "+namespace, func(ctx context.Context) (bool, string, error) {
		_, err := cp.Client.CoreV1().ServiceAccounts(namespace).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, "not created yet", nil
		}
		return err == nil, fmt.Sprint(err), nil
	})
}

// DeleteWorkloadsAtEnd deletes, at the end of the test, the Deployments,
// DaemonSets and HPAs of namespace and waits until its pods are gone: the kubelets
// stop them (a test node must still run then: register it after the
// node's start). Nothing of the test then holds a device or waits for one
// when the next test's nodes come.
func (cp *ControlPlane) DeleteWorkloadsAtEnd(t testing.TB, namespace string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		background := metav1.DeletePropagationBackground
		if err := cp.Client.AutoscalingV2().HorizontalPodAutoscalers(namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Errorf("deleting the HPAs of %s: %v", namespace, err)
		}
		if err := cp.Client.AppsV1().Deployments(namespace).DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &background}, metav1.ListOptions{}); err != nil {
			t.Errorf("deleting the Deployments of %s: %v", namespace, err)
		}
		if err := cp.Client.AppsV1().DaemonSets(namespace).DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &background}, metav1.ListOptions{}); err != nil {
			t.Errorf("deleting the DaemonSets of %s: %v", namespace, err)
		}
		if err := waitUntil(ctx, 90*time.Second, "the pods of "+namespace+" to be gone", func(ctx context.Context) (bool, string, error) {
			pods, err := cp.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err.Error(), nil
			}
			var left []string
			for _, p := range pods.Items {
				left = append(left, p.Name+" on "+p.Spec.NodeName)
			}
			return len(left) == 0, fmt.Sprintf("pods %v", left), nil
		}); err != nil {
			t.Error(err)
		}
	})
}

// GPUDeployment is a workload whose pods each request one GPU
// (nvidia.com/gpu). Its pods are labelled app=<name>.
func GPUDeployment(namespace, name string, replicas int32) *appsv1.Deployment {
	return DeviceDeployment(namespace, name, replicas, GPUResource)
}

// DeviceDeployment is a workload whose pods each request one device of
// the extended resource. Its pods are labelled app=<name>.
func DeviceDeployment(namespace, name string, replicas int32, resourceName string) *appsv1.Deployment {
	return deployment(namespace, name, replicas, corev1.Container{
		Name:  WorkloadContainer,
		Image: "registry.invalid/gpu-workload:e2e",
		Resources: corev1.ResourceRequirements{
			Limits: corev1.ResourceList{corev1.ResourceName(resourceName): resource.MustParse("1")},
		},
	})
}

// WebDeployment is a workload without GPUs (the seed's podinfo): its pods
// are labelled app=<name>.
func WebDeployment(namespace, name string, replicas int32) *appsv1.Deployment {
	return deployment(namespace, name, replicas, corev1.Container{
		Name:  name,
		Image: "registry.invalid/" + name + ":e2e",
	})
}

// deployment is a Deployment of replicas pods labelled app=<name>, each
// running c. Its image is never pulled: the nodes' container runtime is a
// fake (and the benchmarks' clusters run no kubelet).
func deployment(namespace, name string, replicas int32, c corev1.Container) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{c}},
			},
		},
	}
}

// CreateDeployment creates d.
func (cp *ControlPlane) CreateDeployment(t testing.TB, d *appsv1.Deployment) {
	t.Helper()
	if _, err := cp.Client.AppsV1().Deployments(d.Namespace).Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating Deployment %s/%s: %v", d.Namespace, d.Name, err)
	}
}

// ScaleDeployment sets the Deployment's replicas.
func (cp *ControlPlane) ScaleDeployment(t testing.TB, namespace, name string, replicas int32) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)
	if _, err := cp.Client.AppsV1().Deployments(namespace).Patch(t.Context(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("scaling Deployment %s/%s to %d: %v", namespace, name, replicas, err)
	}
}

// GPUHPA scales the Deployment named target on the per-pod gpu_utilization
// metric with the given target.
func GPUHPA(namespace, target string, minReplicas, maxReplicas int32, metricTarget autoscalingv2.MetricTarget) *autoscalingv2.HorizontalPodAutoscaler {
	return PodsMetricHPA(namespace, target, MetricName, minReplicas, maxReplicas, metricTarget)
}

// PodsMetricHPA scales the Deployment named target on a per-pod custom
// metric with the given target.
func PodsMetricHPA(namespace, target, metric string, minReplicas, maxReplicas int32, metricTarget autoscalingv2.MetricTarget) *autoscalingv2.HorizontalPodAutoscaler {
	return &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: target, Namespace: namespace},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: target},
			MinReplicas:    &minReplicas,
			MaxReplicas:    maxReplicas,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.PodsMetricSourceType,
				Pods: &autoscalingv2.PodsMetricSource{
					Metric: autoscalingv2.MetricIdentifier{Name: metric},
					Target: metricTarget,
				},
			}},
		},
	}
}

// CreateHPA creates h.
func (cp *ControlPlane) CreateHPA(t testing.TB, h *autoscalingv2.HorizontalPodAutoscaler) {
	t.Helper()
	if _, err := cp.Client.AutoscalingV2().HorizontalPodAutoscalers(h.Namespace).Create(t.Context(), h, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating HPA %s/%s: %v", h.Namespace, h.Name, err)
	}
}

// HPACondition returns the HPA condition of the given type, or nil.
func HPACondition(h *autoscalingv2.HorizontalPodAutoscaler, typ autoscalingv2.HorizontalPodAutoscalerConditionType) *autoscalingv2.HorizontalPodAutoscalerCondition {
	for i := range h.Status.Conditions {
		if h.Status.Conditions[i].Type == typ {
			return &h.Status.Conditions[i]
		}
	}
	return nil
}

// DescribeHPA summarises an HPA's status for failure messages.
func DescribeHPA(h *autoscalingv2.HorizontalPodAutoscaler) string {
	var b strings.Builder
	fmt.Fprintf(&b, "current=%d desired=%d", h.Status.CurrentReplicas, h.Status.DesiredReplicas)
	for _, m := range h.Status.CurrentMetrics {
		if m.Pods != nil && m.Pods.Current.AverageValue != nil {
			fmt.Fprintf(&b, " %s=%s", m.Pods.Metric.Name, m.Pods.Current.AverageValue.String())
		}
	}
	for _, c := range h.Status.Conditions {
		fmt.Fprintf(&b, " [%s=%s %s: %s]", c.Type, c.Status, c.Reason, c.Message)
	}
	return b.String()
}

// GetHPA fetches an HPA.
func (cp *ControlPlane) GetHPA(ctx context.Context, namespace, name string) (*autoscalingv2.HorizontalPodAutoscaler, error) {
	return cp.Client.AutoscalingV2().HorizontalPodAutoscalers(namespace).Get(ctx, name, metav1.GetOptions{})
}

// DeploymentReplicas returns the Deployment's desired replica count (what
// the HPA sets).
func (cp *ControlPlane) DeploymentReplicas(ctx context.Context, namespace, name string) (int32, error) {
	d, err := cp.Client.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return 0, err
	}
	if d.Spec.Replicas == nil {
		return 1, nil
	}
	return *d.Spec.Replicas, nil
}

// PodMetrics asks the API server (kubectl get --raw, through the
// aggregation layer) for metric on every pod matching selector, in the given
// custom.metrics.k8s.io version, and returns the values by pod name. A
// NotFound answer means no pod has a value and gives an empty map.
func (cp *ControlPlane) PodMetrics(ctx context.Context, version, namespace, selector, metric string) (map[string]float64, error) {
	samples, err := cp.PodMetricSamples(ctx, version, namespace, selector, metric)
	if err != nil {
		return nil, err
	}
	return valuesOf(samples), nil
}

// NodeMetrics asks the API server (kubectl get --raw, through the
// aggregation layer) for the root-scoped metric on every node matching
// selector, in the given custom.metrics.k8s.io version, and returns the
// values by node name. A NotFound answer gives an empty map.
func (cp *ControlPlane) NodeMetrics(ctx context.Context, version, selector, metric string) (map[string]float64, error) {
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/%s/nodes/*/%s?labelSelector=%s", version, metric, url.QueryEscape(selector))
	out, err := cp.Kubectl(ctx, nil, "get", "--raw", path)
	if err != nil {
		if strings.Contains(err.Error(), "NotFound") {
			return map[string]float64{}, nil
		}
		return nil, err
	}
	return parseMetricValues(version, "Node", metric, []byte(out))
}

// metricValueList is the union of the v1beta1 and v1beta2 MetricValueList
// fields the tests read.
type metricValueList struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Items      []struct {
		DescribedObject struct {
			Kind      string `json:"kind"`
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
		} `json:"describedObject"`
		// v1beta1
		MetricName string `json:"metricName"`
		// v1beta2
		Metric struct {
			Name string `json:"name"`
		} `json:"metric"`
		Value     resource.Quantity `json:"value"`
		Timestamp metav1.Time       `json:"timestamp"`
	} `json:"items"`
}

// MetricSample is one object's value on the custom metrics API and its
// timestamp (the time of the newest sample behind it; RFC 3339, whole
// seconds).
type MetricSample struct {
	Value     float64
	Timestamp time.Time
}

// PodMetricSamples is PodMetrics with each value's timestamp.
func (cp *ControlPlane) PodMetricSamples(ctx context.Context, version, namespace, selector, metric string) (map[string]MetricSample, error) {
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/%s/namespaces/%s/pods/*/%s?labelSelector=%s",
		version, namespace, metric, url.QueryEscape(selector))
	out, err := cp.Kubectl(ctx, nil, "get", "--raw", path)
	if err != nil {
		if strings.Contains(err.Error(), "NotFound") {
			return map[string]MetricSample{}, nil
		}
		return nil, err
	}
	return decodeMetricValues(version, "Pod", metric, []byte(out))
}

// parseMetricValues decodes a MetricValueList of the given version and
// checks that it is one, of metric on objects of kind.
func parseMetricValues(version, kind, metric string, data []byte) (map[string]float64, error) {
	samples, err := decodeMetricValues(version, kind, metric, data)
	if err != nil {
		return nil, err
	}
	return valuesOf(samples), nil
}

// valuesOf drops the timestamps.
func valuesOf(samples map[string]MetricSample) map[string]float64 {
	values := make(map[string]float64, len(samples))
	for name, s := range samples {
		values[name] = s.Value
	}
	return values
}

// decodeMetricValues is parseMetricValues with each value's timestamp.
func decodeMetricValues(version, kind, metric string, data []byte) (map[string]MetricSample, error) {
	var list metricValueList
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("decoding a %s MetricValueList: %w: %s", version, err, data)
	}
	if list.Kind != "MetricValueList" || list.APIVersion != "custom.metrics.k8s.io/"+version {
		return nil, fmt.Errorf("got kind %q apiVersion %q, want MetricValueList custom.metrics.k8s.io/%s", list.Kind, list.APIVersion, version)
	}
	values := make(map[string]MetricSample, len(list.Items))
	for _, it := range list.Items {
		name := it.MetricName
		if version != "v1beta1" {
			name = it.Metric.Name
		}
		if it.DescribedObject.Kind != kind || name != metric {
			return nil, fmt.Errorf("unexpected item: %s %s/%s metric %q", it.DescribedObject.Kind, it.DescribedObject.Namespace, it.DescribedObject.Name, name)
		}
		values[it.DescribedObject.Name] = MetricSample{Value: it.Value.AsApproximateFloat64(), Timestamp: it.Timestamp.Time}
	}
	return values, nil
}

// ReplicaRecorder records every distinct spec.replicas value a Deployment
// takes, from a watch, so that no step of a scale is missed between polls.
type ReplicaRecorder struct {
	mu      sync.Mutex
	history []int32
}

// RecordReplicas starts recording the replicas of a Deployment; it stops
// at the end of the test.
func (cp *ControlPlane) RecordReplicas(t testing.TB, namespace, name string) *ReplicaRecorder {
	t.Helper()
	r := &ReplicaRecorder{}
	byName := func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
	}
	cp.WatchDeployments(t, namespace, byName, func(d *appsv1.Deployment) {
		if d.Spec.Replicas == nil {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if n := len(r.history); n == 0 || r.history[n-1] != *d.Spec.Replicas {
			r.history = append(r.history, *d.Spec.Replicas)
		}
	})
	return r
}

// WatchDeployments calls seen with each Deployment of namespace that the
// list options (set by selector) select, from a watch, every time one is
// added or updated, until the end of the test. It returns once the
// initial list has been seen.
func (cp *ControlPlane) WatchDeployments(t testing.TB, namespace string, selector func(*metav1.ListOptions), seen func(*appsv1.Deployment)) {
	t.Helper()
	factory := informers.NewSharedInformerFactoryWithOptions(cp.Client, 0,
		informers.WithNamespace(namespace), informers.WithTweakListOptions(selector))
	informer := factory.Apps().V1().Deployments().Informer()
	on := func(obj any) {
		if d, ok := obj.(*appsv1.Deployment); ok {
			seen(d)
		}
	}
	runInformer(t, factory, informer, cache.ResourceEventHandlerFuncs{
		AddFunc:    on,
		UpdateFunc: func(_, obj any) { on(obj) },
	}, "the Deployment watch of "+namespace)
}

// runInformer adds handler to informer (one of factory's), starts factory
// until the end of the test and waits until informer has synced; what
// names the watch.
func runInformer(t testing.TB, factory informers.SharedInformerFactory, informer cache.SharedIndexInformer, handler cache.ResourceEventHandler, what string) {
	t.Helper()
	if _, err := informer.AddEventHandler(handler); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	factory.Start(stop)
	t.Cleanup(func() {
		close(stop)
		factory.Shutdown()
	})
	WaitFor(t, testutil.DefaultTimeout, what+" to sync", func(context.Context) (bool, string, error) {
		return informer.HasSynced(), "not synced", nil
	})
}

// Values returns the recorded replica counts, oldest first.
func (r *ReplicaRecorder) Values() []int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.history)
}

// LivePods returns the names of the pods matching selector that are not
// being deleted, sorted.
func (cp *ControlPlane) LivePods(ctx context.Context, namespace, selector string) ([]string, error) {
	pods, err := cp.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			names = append(names, p.Name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// WaitPods waits until exactly n live pods match selector and returns them.
func (cp *ControlPlane) WaitPods(t testing.TB, namespace, selector string, n int) []string {
	t.Helper()
	var names []string
	WaitFor(t, 60*time.Second, fmt.Sprintf("%d pods with %s", n, selector), func(ctx context.Context) (bool, string, error) {
		var err error
		names, err = cp.LivePods(ctx, namespace, selector)
		if err != nil {
			return false, err.Error(), nil
		}
		return len(names) == n, fmt.Sprintf("pods %v", names), nil
	})
	return names
}

// WaitHPAMetric waits until the HPA is active and its own status shows the
// per-pod average it acted on equal to want.
func (cp *ControlPlane) WaitHPAMetric(t testing.TB, namespace, name string, want float64) {
	t.Helper()
	WaitFor(t, ScaleTimeout, fmt.Sprintf("HPA %s to measure an average of %v", name, want), func(ctx context.Context) (bool, string, error) {
		h, err := cp.GetHPA(ctx, namespace, name)
		if err != nil {
			return false, err.Error(), nil
		}
		avg, ok := HPAAverage(h)
		c := HPACondition(h, autoscalingv2.ScalingActive)
		return ok && avg == want && c != nil && c.Status == corev1.ConditionTrue, DescribeHPA(h), nil
	})
}

// HPAAverage returns the gpu_utilization average in the HPA's status.
func HPAAverage(h *autoscalingv2.HorizontalPodAutoscaler) (float64, bool) {
	return HPAMetricAverage(h, MetricName)
}

// HPAMetricAverage returns the average of a Pods metric in the HPA's
// status.
func HPAMetricAverage(h *autoscalingv2.HorizontalPodAutoscaler, metric string) (float64, bool) {
	for _, m := range h.Status.CurrentMetrics {
		if m.Type == autoscalingv2.PodsMetricSourceType && m.Pods != nil && m.Pods.Metric.Name == metric && m.Pods.Current.AverageValue != nil {
			return m.Pods.Current.AverageValue.AsApproximateFloat64(), true
		}
	}
	return 0, false
}

// PollInterval is how often the suite re-checks a condition: each check is
// one or more requests to kube-apiserver, which shares the machine's CPUs.
const PollInterval = 250 * time.Millisecond

// WaitFor is testutil.WaitForEvery at the suite's PollInterval.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) (done bool, state string, err error)) time.Time {
	t.Helper()
	return testutil.WaitForEvery(t, PollInterval, timeout, what, cond)
}

// ServiceAccountToken creates the ServiceAccount namespace/name unless it
// exists and returns a token of it (TokenRequest, valid an hour).
func (cp *ControlPlane) ServiceAccountToken(t testing.TB, namespace, name string) string {
	t.Helper()
	_, err := cp.Client.CoreV1().ServiceAccounts(namespace).Create(t.Context(), &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating ServiceAccount %s/%s: %v", namespace, name, err)
	}
	tr, err := cp.Client.CoreV1().ServiceAccounts(namespace).CreateToken(t.Context(), name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("a token of %s/%s: %v", namespace, name, err)
	}
	return tr.Status.Token
}

// GrantCustomMetricsGet creates the ServiceAccount namespace/name unless it
// exists and grants it get on custom.metrics.k8s.io, and nothing else (what
// the chart grants the aggregator when it delegates); the grant is removed
// at the end of the test.
func (cp *ControlPlane) GrantCustomMetricsGet(t testing.TB, namespace, name string) {
	t.Helper()
	cp.grantRule(t, namespace, name, "custom-metrics-get", rbacv1.PolicyRule{APIGroups: []string{"custom.metrics.k8s.io"}, Resources: []string{"*"}, Verbs: []string{"get"}})
}

// GrantAgentMetricsGet creates the ServiceAccount namespace/name unless it
// exists and grants it get on the non-resource URL /metrics, and nothing
// else (what the chart grants the aggregator with agent.auth); the grant
// is removed at the end of the test.
func (cp *ControlPlane) GrantAgentMetricsGet(t testing.TB, namespace, name string) {
	t.Helper()
	cp.grantRule(t, namespace, name, "agent-metrics-get", rbacv1.PolicyRule{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}})
}

// grantRule creates the ServiceAccount namespace/name unless it exists and
// binds it a ClusterRole of rule alone, named after suffix, removed at the
// end of the test.
func (cp *ControlPlane) grantRule(t testing.TB, namespace, name, suffix string, rule rbacv1.PolicyRule) {
	t.Helper()
	_, err := cp.Client.CoreV1().ServiceAccounts(namespace).Create(t.Context(), &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating ServiceAccount %s/%s: %v", namespace, name, err)
	}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: namespace + "-" + name + "-" + suffix},
		Rules:      []rbacv1.PolicyRule{rule},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: name}},
	}
	rbac := cp.Client.RbacV1()
	if _, err := rbac.ClusterRoles().Create(t.Context(), role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rbac.ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{}) })
	if _, err := rbac.ClusterRoleBindings().Create(t.Context(), binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rbac.ClusterRoleBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
	})
}
