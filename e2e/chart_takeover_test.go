//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// TestChartTakeOverAndHandBack installs the chart for real with
// apiService.takeOver=true where another server owns
// v1beta1.custom.metrics.k8s.io, the way prometheus-adapter's chart
// registers itself (a Helm-managed APIService with insecureSkipTLSVerify):
// the install takes the APIService over and points the aggregator at that
// server, an upgrade keeps it so, an upgrade that would drop the takeover
// is refused, and `helm uninstall` puts the APIService back exactly as it
// was, after which the other server answers custom metrics again. (The
// chart's pods run no process: the nodes' runtime is a fake.)
func TestChartTakeOverAndHandBack(t *testing.T) {
	// The previous owner: a real custom metrics server (an aggregator with
	// one GPU pod) behind the Service prev/prometheus-adapter.
	prevNS := cluster.NewNamespace(t, "prev")
	env := framework.StartGMS(t, cluster, prevNS, framework.GMSOptions{GPUsPerNode: []int{1}, Unregistered: true})
	cluster.CreateDeployment(t, framework.GPUDeployment(prevNS, "worker", 1))
	worker := cluster.WaitPods(t, prevNS, "app=worker", 1)[0]
	env.SetPodUtilization(worker, 42)
	cluster.CreateLoopbackService(t, prevNS, "prometheus-adapter", env.Aggregator.Port)
	apiServices := cluster.APIServices(t)
	const v1beta1 = "v1beta1.custom.metrics.k8s.io"
	original := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata": map[string]any{
			"name":        v1beta1,
			"labels":      map[string]any{"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/name": "prometheus-adapter"},
			"annotations": map[string]any{"meta.helm.sh/release-name": "prometheus-adapter", "meta.helm.sh/release-namespace": prevNS},
		},
		"spec": map[string]any{
			"group": "custom.metrics.k8s.io", "version": "v1beta1",
			"groupPriorityMinimum": int64(100), "versionPriority": int64(100),
			"insecureSkipTLSVerify": true,
			"service":               map[string]any{"namespace": prevNS, "name": "prometheus-adapter", "port": int64(env.Aggregator.Port)},
		},
	}}
	if _, err := apiServices.Create(t.Context(), original, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cluster.DeleteAPIService(t, "v1beta1") })
	cluster.WaitAPIServiceAvailable(t, "v1beta1")
	waitPreviousOwnerServes(t, prevNS, worker)
	before, err := apiServices.Get(t.Context(), v1beta1, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	relNS := cluster.NewNamespace(t, "gms-chart")
	const rel = "gms"
	helm := func(args ...string) (string, error) {
		return cluster.Helm(t.Context(), append(args, "--namespace", relNS)...)
	}
	chart := framework.ChartDir(t)
	out, err := helm("install", rel, chart, "--set", "apiService.takeOver=true")
	if err != nil {
		t.Fatal(err)
	}
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			_, _ = helm("uninstall", rel)
		}
	})
	delegateTo := prevNS + "/prometheus-adapter:" + strconv.Itoa(env.Aggregator.Port)
	for _, want := range []string{"TAKEN OVER", "v1beta1.custom.metrics.k8s.io from " + prevNS + "/prometheus-adapter", "forwarded to " + delegateTo,
		"helm uninstall " + rel,
		"\nkubectl delete apiservice v1beta1.custom.metrics.k8s.io\nkubectl create -f - <<'EOF'\n", "\nEOF\n",
		"\nkubectl delete apiservice v1beta2.custom.metrics.k8s.io   # created by this release"} {
		if !strings.Contains(out, want) {
			t.Errorf("the install notes lack %q:\n%s", want, out)
		}
	}
	aggSvc := rel + "-gpu-metrics-server-aggregator"
	checkTakenOver := func(when string) {
		t.Helper()
		got, err := apiServices.Get(t.Context(), v1beta1, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc := serviceOf(got)
		if svc["namespace"] != relNS || svc["name"] != aggSvc {
			t.Errorf("%s: v1beta1 routes to %v, want %s/%s", when, svc, relNS, aggSvc)
		}
		var record struct {
			Labels, Annotations map[string]string
			Spec                map[string]any
		}
		if err := json.Unmarshal([]byte(got.GetAnnotations()["gpu-metrics-server.io/taken-over-from"]), &record); err != nil {
			t.Fatalf("%s: the takeover record: %v", when, err)
		}
		if !maps.Equal(record.Labels, before.GetLabels()) || !maps.Equal(record.Annotations, before.GetAnnotations()) ||
			!reflect.DeepEqual(jsonRoundTrip(t, record.Spec), jsonRoundTrip(t, before.Object["spec"])) {
			t.Errorf("%s: the takeover record %+v is not the previous owner's %v %v %v", when, record, before.GetLabels(), before.GetAnnotations(), before.Object["spec"])
		}
		v2, err := apiServices.Get(t.Context(), "v1beta2.custom.metrics.k8s.io", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if svc := serviceOf(v2); svc["name"] != aggSvc {
			t.Errorf("%s: v1beta2 routes to %v", when, svc)
		}
		dep, err := cluster.Client.AppsV1().Deployments(relNS).Get(t.Context(), aggSvc, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		args := dep.Spec.Template.Spec.Containers[0].Args
		for _, want := range []string{"--delegate-to=" + delegateTo, "--delegate-insecure-skip-tls-verify"} {
			if !slices.Contains(args, want) {
				t.Errorf("%s: the aggregator's args %v lack %s", when, args, want)
			}
		}
		role, err := cluster.Client.RbacV1().Roles(prevNS).Get(t.Context(), aggSvc+"-delegate", metav1.GetOptions{})
		if err != nil || len(role.Rules) != 1 || !slices.Equal(role.Rules[0].ResourceNames, []string{"prometheus-adapter"}) {
			t.Errorf("%s: the Role on the delegate's Service: %+v, %v", when, role, err)
		}
	}
	checkTakenOver("after the install")

	if _, err := helm("upgrade", rel, chart, "--reuse-values"); err != nil {
		t.Fatal(err)
	}
	checkTakenOver("after an upgrade")
	if _, err := helm("upgrade", rel, chart, "--reuse-values", "--set", "apiService.takeOver=false"); err == nil || !strings.Contains(err.Error(), "Hand it back first") {
		t.Errorf("an upgrade dropping the takeover: %v, want a refusal", err)
	}
	checkTakenOver("after the refused upgrade")

	// The way back.
	if _, err := helm("uninstall", rel); err != nil {
		t.Fatal(err)
	}
	uninstalled = true
	after, err := apiServices.Get(t.Context(), v1beta1, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(jsonRoundTrip(t, after.Object["spec"]), jsonRoundTrip(t, before.Object["spec"])) || !maps.Equal(after.GetLabels(), before.GetLabels()) {
		t.Errorf("after uninstall: spec %v labels %v, want the previous owner's %v %v", after.Object["spec"], after.GetLabels(), before.Object["spec"], before.GetLabels())
	}
	for k, v := range before.GetAnnotations() {
		if after.GetAnnotations()[k] != v {
			t.Errorf("after uninstall: annotation %s=%q, want %q", k, after.GetAnnotations()[k], v)
		}
	}
	if _, err := apiServices.Get(t.Context(), "v1beta2.custom.metrics.k8s.io", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("v1beta2, which the release created, is still there: %v", err)
	}
	cluster.WaitAPIServiceAvailable(t, "v1beta1")
	waitPreviousOwnerServes(t, prevNS, worker)
}

// waitPreviousOwnerServes waits until custom.metrics.k8s.io/v1beta1
// answers worker's gpu_utilization through kube-apiserver.
func waitPreviousOwnerServes(t *testing.T, namespace, worker string) {
	t.Helper()
	framework.WaitFor(t, 60*time.Second, "the previous owner to serve custom metrics", func(ctx context.Context) (bool, string, error) {
		v, err := cluster.PodMetrics(ctx, "v1beta1", namespace, "app=worker", framework.MetricName)
		if err != nil {
			return false, err.Error(), nil
		}
		return v[worker] == 42, fmt.Sprint(v), nil
	})
}

// serviceOf returns an APIService's spec.service.
func serviceOf(apiService *unstructured.Unstructured) map[string]any {
	svc, _, _ := unstructured.NestedMap(apiService.Object, "spec", "service")
	return svc
}

// jsonRoundTrip normalizes a value decoded from JSON or YAML (numbers as
// float64).
func jsonRoundTrip(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
