package top

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	cmv1beta2 "k8s.io/metrics/pkg/apis/custom_metrics/v1beta2"

	"github.com/gpu-metrics-server/gpu-metrics-server/cli/kubeapi"
	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// now is the time the fixture's samples are aged against.
var now = time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)

// golden compares got with testdata/name.golden (rewritten with -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	testutil.Golden(t, name, got, *update)
}

func gpuPod(ns, name, node, app string, phase corev1.PodPhase, res corev1.ResourceList) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{
			{Name: "main", Resources: corev1.ResourceRequirements{Limits: res}},
		}},
		Status: corev1.PodStatus{Phase: phase},
	}
}

func gpuRes(name string, n int64) corev1.ResourceList {
	return corev1.ResourceList{corev1.ResourceName(name): *resource.NewQuantity(n, resource.DecimalSI)}
}

// served is one pod's served values; nil leaves a metric out.
type served struct {
	ns, name          string
	age               time.Duration
	util, mem, memPct *float64
	power             *float64
}

func f(v float64) *float64 { return &v }

// fixture: exclusive, time-sliced (shared) and MIG pods in two namespaces,
// a pending pod with no value, a pod without GPUs, a finished pod, and a
// pod served under a resource name that is not a GPU's.
func fixture() *fakeAPI {
	pods := []corev1.Pod{
		gpuPod("demo", "train-0", "gpu-node-1", "train", corev1.PodRunning, gpuRes("nvidia.com/gpu", 2)),
		gpuPod("demo", "infer-1", "gpu-node-2", "infer", corev1.PodRunning, gpuRes("nvidia.com/gpu.shared", 1)),
		gpuPod("demo", "mig-0", "gpu-node-3", "mig", corev1.PodRunning, gpuRes("nvidia.com/mig-1g.10gb", 1)),
		gpuPod("demo", "pending-0", "", "train", corev1.PodPending, gpuRes("nvidia.com/gpu", 1)),
		gpuPod("demo", "web", "cpu-node", "web", corev1.PodRunning, corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}),
		gpuPod("demo", "done", "gpu-node-1", "train", corev1.PodSucceeded, gpuRes("nvidia.com/gpu", 1)),
		gpuPod("demo", "odd", "gpu-node-2", "odd", corev1.PodRunning, gpuRes("example.com/accelerator", 1)),
		gpuPod("ml", "bert-0", "gpu-node-1", "bert", corev1.PodRunning, gpuRes("nvidia.com/gpu", 1)),
	}
	vals := []served{
		{"demo", "train-0", 2 * time.Second, f(87.5), f(40 << 30), f(25), f(612.3)},
		{"demo", "infer-1", time.Second, f(12), f(2 << 30), f(10.4), f(80)},
		{"demo", "mig-0", 3 * time.Second, f(40), f(5 << 30), f(50), nil},
		{"demo", "odd", 4 * time.Second, f(3), nil, nil, nil},
		{"ml", "bert-0", 75 * time.Second, f(99.9), f(70 << 30), f(87.5), f(700)},
	}
	api := &fakeAPI{pods: pods, values: map[string][]cmv1beta2.MetricValue{}}
	window := int64(15)
	for _, v := range vals {
		for metric, x := range map[string]*float64{metricUtilization: v.util, metricMemoryUsed: v.mem, metricMemoryUtilization: v.memPct, metricPower: v.power} {
			if x == nil {
				continue
			}
			q := resource.NewMilliQuantity(int64(*x*1000), resource.DecimalSI)
			if metric == metricMemoryUsed {
				q = resource.NewQuantity(int64(*x), resource.BinarySI)
			}
			api.values[metric] = append(api.values[metric], cmv1beta2.MetricValue{
				DescribedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: v.ns, Name: v.name},
				Metric:          cmv1beta2.MetricIdentifier{Name: metric},
				Timestamp:       metav1.NewTime(now.Add(-v.age)),
				WindowSeconds:   &window,
				Value:           *q,
			})
		}
	}
	return api
}

// TestPodsOutput: every output format over the fixture, against golden
// files.
func TestPodsOutput(t *testing.T) {
	tests := []struct {
		name     string
		query    PodQuery
		sortBy   string
		printer  Printer
		wantRows int
	}{
		{"table", PodQuery{Namespace: "demo"}, SortName, Printer{}, 5},
		{"all-namespaces", PodQuery{AllNamespaces: true}, SortName, Printer{Namespaces: true}, 6},
		{"wide", PodQuery{AllNamespaces: true}, SortName, Printer{Namespaces: true, Output: OutputWide}, 6},
		{"json", PodQuery{Namespace: "demo"}, SortName, Printer{Output: OutputJSON}, 5},
		{"no-headers", PodQuery{Namespace: "demo"}, SortName, Printer{NoHeaders: true}, 5},
		{"sort-gpu", PodQuery{AllNamespaces: true}, SortGPU, Printer{Namespaces: true}, 6},
		{"sort-memory", PodQuery{Namespace: "demo"}, SortMemory, Printer{}, 5},
		{"sort-power", PodQuery{Namespace: "demo"}, SortPower, Printer{}, 5},
		{"selector", PodQuery{Namespace: "demo", Selector: labels.SelectorFromSet(labels.Set{"app": "train"})}, SortName, Printer{}, 2},
		{"empty-namespace", PodQuery{Namespace: "none"}, SortName, Printer{}, 0},
		{"empty-json", PodQuery{Namespace: "none"}, SortName, Printer{Output: OutputJSON}, 0},
		{"bars", PodQuery{AllNamespaces: true}, SortGPU, Printer{Namespaces: true, Bars: true}, 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := Pods(context.Background(), fixture().clients(t), tc.query)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != tc.wantRows {
				t.Errorf("%d rows, want %d", len(rows), tc.wantRows)
			}
			SortPods(rows, tc.sortBy)
			var out bytes.Buffer
			tc.printer.Out = &out
			if err := tc.printer.PrintPods(rows, now); err != nil {
				t.Fatal(err)
			}
			golden(t, "pods-"+tc.name, out.Bytes())
		})
	}
}

// TestPodsValues: a row carries exactly what the API serves, nothing for a
// metric not served.
func TestPodsValues(t *testing.T) {
	rows, err := Pods(context.Background(), fixture().clients(t), PodQuery{Namespace: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]PodRow{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	train := byName["train-0"]
	if train.GPUs != 2 || train.Sharing != "" || train.Node != "gpu-node-1" || *train.UtilizationPercent != 87.5 ||
		*train.MemoryUsedBytes != 40<<30 || *train.PowerWatts != 612.3 || *train.WindowSeconds != 15 ||
		!train.Timestamp.Time.Equal(now.Add(-2*time.Second)) {
		t.Errorf("train-0 = %+v", train)
	}
	if mig := byName["mig-0"]; mig.Sharing != "mig" || mig.PowerWatts != nil || mig.UtilizationPercent == nil {
		t.Errorf("mig-0 = %+v, want MIG, utilization, no power", mig)
	}
	if shared := byName["infer-1"]; shared.Sharing != "shared" {
		t.Errorf("infer-1 sharing %q, want shared", shared.Sharing)
	}
	if p := byName["pending-0"]; p.UtilizationPercent != nil || p.Timestamp != nil || p.GPUs != 1 {
		t.Errorf("pending-0 = %+v, want one GPU and no value", p)
	}
	for _, absent := range []string{"web", "done"} {
		if _, ok := byName[absent]; ok {
			t.Errorf("%s is listed: it holds no GPU", absent)
		}
	}
}

// TestPodsErrors: the errors say what is wrong in kubectl's words.
func TestPodsErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*fakeAPI)
		check  func(t *testing.T, err error)
		want   string
	}{
		{"no APIService", func(f *fakeAPI) { f.noAPIService = true }, func(t *testing.T, err error) {
			if !errors.Is(err, kubeapi.ErrNoCustomMetricsAPI) {
				t.Errorf("not ErrNoCustomMetricsAPI: %v", err)
			}
		}, "the custom metrics API (custom.metrics.k8s.io) is not registered in this cluster: no APIService serves it"},
		{"pods forbidden", func(f *fakeAPI) { f.forbidPods = true }, func(t *testing.T, err error) {
			var fb *kubeapi.Forbidden
			if !errors.As(err, &fb) || fb.Verb != "list" || fb.Resource != "pods" || fb.Group != "" || fb.Namespace != "demo" {
				t.Errorf("not Forbidden list pods in demo: %#v", err)
			}
		}, `forbidden: RBAC does not allow you to list pods in namespace "demo" (missing verb "list" on resource "pods")`},
		{"metrics forbidden", func(f *fakeAPI) { f.forbidMetrics = true }, func(t *testing.T, err error) {
			var fb *kubeapi.Forbidden
			if !errors.As(err, &fb) || fb.Verb != "get" || fb.Group != kubeapi.CustomMetricsGroup {
				t.Errorf("not Forbidden get custom metrics: %#v", err)
			}
		}, `forbidden: RBAC does not allow you to get pods/gpu_utilization.custom.metrics.k8s.io in namespace "demo" (missing verb "get" on resource "pods/gpu_utilization.custom.metrics.k8s.io")`},
		{"unavailable", func(f *fakeAPI) { f.unavailable = true }, func(t *testing.T, err error) {
			var u *kubeapi.Unavailable
			if !errors.As(err, &u) {
				t.Errorf("not Unavailable: %#v", err)
			}
		}, "the custom.metrics.k8s.io API is registered but not available: service gpu-metrics-server/gpu-metrics-server has no ready endpoints"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := fixture()
			tc.mutate(api)
			_, err := Pods(context.Background(), api.clients(t), PodQuery{Namespace: "demo"})
			if err == nil {
				t.Fatal("no error")
			}
			tc.check(t, err)
			if err.Error() != tc.want {
				t.Errorf("error\n%q, want\n%q", err, tc.want)
			}
		})
	}
}

// TestWatch: on a terminal each round redraws the screen under a title;
// otherwise rounds are plain lines separated by a blank line. An error of
// a later round is printed in that round; one of the first is returned.
func TestWatch(t *testing.T) {
	rows, err := Pods(context.Background(), fixture().clients(t), PodQuery{Namespace: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	SortPods(rows, SortGPU)
	for _, tc := range []struct {
		name     string
		terminal bool
		output   string
	}{
		{"terminal", true, OutputTable},
		{"pipe", false, OutputTable},
		{"pipe-json", false, OutputJSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			calls := 0
			fetch := func(context.Context) ([]PodRow, error) {
				calls++
				switch calls {
				case 2:
					return nil, errors.New("the server is currently unable to handle the request")
				case 4:
					cancel() // ends the watch before a fourth round is printed
				}
				return rows[:2], nil
			}
			var out, errOut bytes.Buffer
			p := Printer{Out: &out, Output: tc.output, Bars: tc.terminal}
			if err := Watch(ctx, time.Millisecond, tc.terminal, "Every 1ms: top pods", fetch, p, &errOut, func() time.Time { return now }); err != nil {
				t.Fatal(err)
			}
			wantErrOut := "error: the server is currently unable to handle the request\n"
			if tc.terminal {
				wantErrOut = "" // in the round's frame
			}
			if errOut.String() != wantErrOut {
				t.Errorf("error output %q, want %q", errOut.String(), wantErrOut)
			}
			if calls != 4 {
				t.Errorf("%d rounds fetched, want 4", calls)
			}
			got := out.Bytes()
			if !tc.terminal && bytes.Contains(got, []byte("\x1b")) {
				t.Error("escape sequences in plain output")
			}
			golden(t, "watch-"+tc.name, got)
		})
	}
	t.Run("first round fails", func(t *testing.T) {
		want := errors.New("forbidden")
		err := Watch(context.Background(), time.Millisecond, true, "", func(context.Context) ([]PodRow, error) { return nil, want },
			Printer{Out: &bytes.Buffer{}}, &bytes.Buffer{}, time.Now)
		if !errors.Is(err, want) {
			t.Errorf("Watch = %v, want %v", err, want)
		}
	})
}

// TestBar: the bar's cells follow the percent, clamped to 0-100.
func TestBar(t *testing.T) {
	for _, tc := range []struct {
		p    *float64
		want string
	}{
		{nil, "[          ]"},
		{f(0), "[..........]"},
		{f(44), "[####......]"},
		{f(45), "[#####.....]"},
		{f(100), "[##########]"},
		{f(150), "[##########]"},
		{f(-3), "[..........]"},
	} {
		if got := bar(tc.p); got != tc.want {
			t.Errorf("bar(%v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

// TestCheckSortKey: the keys of --sort-by and nothing else.
func TestCheckSortKey(t *testing.T) {
	for _, k := range SortKeys {
		if err := CheckSortKey(k); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	if err := CheckSortKey("cpu"); err == nil || !strings.Contains(err.Error(), "gpu, memory, power, name") {
		t.Errorf("cpu: %v", err)
	}
}
