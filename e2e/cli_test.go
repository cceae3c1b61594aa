//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
	"github.com/gpu-metrics-server/gpu-metrics-server/hack/deviceplugin/devices"
)

// runCLI runs the binary (as name: gpu-metrics-server, or the kubectl
// plugin kubectl-gpu) with the admin kubeconfig and returns its stdout and
// exit status.
func runCLI(ctx context.Context, t *testing.T, name string, args ...string) (string, int, error) {
	t.Helper()
	bin := framework.GMSBinary(t)
	if name != filepath.Base(bin) {
		link := filepath.Join(t.TempDir(), name)
		if err := os.Symlink(bin, link); err != nil {
			t.Fatal(err)
		}
		bin = link
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "--kubeconfig="+cluster.Kubeconfig)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return stdout.String(), exit.ExitCode(), fmt.Errorf("%s: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), 0, err
}

// topRow is a row of `top pods -o json`.
type topRow struct {
	Name                     string   `json:"name"`
	GPUs                     int      `json:"gpus"`
	Sharing                  string   `json:"sharing"`
	UtilizationPercent       *float64 `json:"utilizationPercent"`
	MemoryUsedBytes          *float64 `json:"memoryUsedBytes"`
	MemoryUtilizationPercent *float64 `json:"memoryUtilizationPercent"`
	PowerWatts               *float64 `json:"powerWatts"`
}

// TestTopPodsPrintsServedValues: two pods time-slicing a GPU and one
// holding a GPU whole; `top pods -o json` prints, row by row, the values
// the custom metrics API serves through the aggregation layer, and the
// table (through the kubectl plugin name) sorts them by utilization.
func TestTopPodsPrintsServedValues(t *testing.T) {
	ns := cluster.NewNamespace(t, "top")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{1}, TimeSlices: 2})
	const name, selector = "inference", "app=inference"
	cluster.CreateDeployment(t, framework.GPUDeployment(ns, name, 2))
	pods := cluster.WaitPods(t, ns, selector, 2)
	a, b := pods[0], pods[1]
	env.SetPodShare(a, 70)
	env.SetPodShare(b, 10)
	framework.WaitFor(t, 60*time.Second, "per-pod shares 70 / 10", func(ctx context.Context) (bool, string, error) {
		v, err := cluster.PodMetrics(ctx, "v1beta2", ns, selector, "gpu_utilization")
		if err != nil {
			return false, err.Error(), nil
		}
		return v[a] == 70 && v[b] == 10, fmt.Sprintf("%v", v), nil
	})

	topMatchesAPI(t, ns, selector, map[string]string{a: "", b: ""})

	out, code, err := runCLI(t.Context(), t, "kubectl-gpu", "top", "pods", "-n", ns, "--sort-by=gpu", "--no-headers")
	if err != nil || code != 0 {
		t.Fatalf("kubectl-gpu top pods: exit %d: %v", code, err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], a+" ") || !strings.Contains(lines[0], " 70% ") ||
		!strings.HasPrefix(lines[1], b+" ") || !strings.Contains(lines[1], " 10% ") {
		t.Errorf("top pods --sort-by=gpu:\n%s\nwant %s at 70%% first, then %s at 10%%", out, a, b)
	}
}

// TestTopPodsMIGAndWholeGPU: a pod on a MIG instance and a pod on a whole
// GPU (real kubelet, device plugin): top pods prints the API's values for
// each, and marks the MIG pod's GPU as such.
func TestTopPodsMIGAndWholeGPU(t *testing.T) {
	ns := cluster.NewNamespace(t, "topmig")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{2}, MIG: [][]int{{0}}})
	cluster.CreateDeployment(t, framework.DeviceDeployment(ns, "small", 1, devices.MIGResourcePrefix+"1g.10gb"))
	cluster.CreateDeployment(t, framework.DeviceDeployment(ns, "whole", 1, devices.GPUResource))
	mig := cluster.WaitPods(t, ns, "app=small", 1)[0]
	whole := cluster.WaitPods(t, ns, "app=whole", 1)[0]
	m, w := env.Allocation(mig), env.Allocation(whole)
	if len(m.Devices) != 1 || m.Devices[0].GPUInstance < 0 || len(w.Devices) != 1 || w.Devices[0].GPUInstance >= 0 {
		t.Fatalf("allocations %+v, %+v: want a MIG instance and a whole GPU", m, w)
	}
	env.SetInstanceUtilization(m.Node, m.Devices[0].GPU, m.Devices[0].GPUInstance, 30)
	env.SetUtilization(w.Node, strconv.Itoa(w.Devices[0].GPU), 60)
	waitAllValues(t, ns, []string{"app=small", "app=whole"}, map[string]float64{mig: 30, whole: 60})
	topMatchesAPI(t, ns, "app in (small,whole)", map[string]string{mig: "mig", whole: ""})
}

// topMatchesAPI waits until `top pods -o json` in namespace ns prints, for
// each pod of pods (pod → its sharing), one GPU and exactly the values the
// custom metrics API serves for the pods of selector.
func topMatchesAPI(t *testing.T, ns, selector string, pods map[string]string) {
	t.Helper()
	metrics := map[string]func(*topRow) *float64{
		"gpu_utilization":        func(r *topRow) *float64 { return r.UtilizationPercent },
		"gpu_memory_used_bytes":  func(r *topRow) *float64 { return r.MemoryUsedBytes },
		"gpu_memory_utilization": func(r *topRow) *float64 { return r.MemoryUtilizationPercent },
		"gpu_power_usage_watts":  func(r *topRow) *float64 { return r.PowerWatts },
	}
	framework.WaitFor(t, 60*time.Second, "top pods -o json = the API's values", func(ctx context.Context) (bool, string, error) {
		out, code, err := runCLI(ctx, t, "gpu-metrics-server", "top", "pods", "-n", ns, "-o", "json")
		if err != nil || code != 0 {
			return false, fmt.Sprintf("exit %d: %v", code, err), nil
		}
		var list struct{ Items []topRow }
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return false, "", err
		}
		rows := map[string]*topRow{}
		for i := range list.Items {
			rows[list.Items[i].Name] = &list.Items[i]
		}
		var diffs []string
		for metric, field := range metrics {
			want, err := cluster.PodMetrics(ctx, "v1beta2", ns, selector, metric)
			if err != nil {
				return false, err.Error(), nil
			}
			for p, sharing := range pods {
				r := rows[p]
				if r == nil {
					diffs = append(diffs, p+": no row")
					continue
				}
				w, served := want[p]
				got := field(r)
				if served != (got != nil) || served && *got != w {
					diffs = append(diffs, fmt.Sprintf("%s %s: top %v, API %v (served %v)", p, metric, got, w, served))
				}
				if r.GPUs != 1 || r.Sharing != sharing {
					diffs = append(diffs, fmt.Sprintf("%s: %d GPUs (%q), want 1 (%q)", p, r.GPUs, r.Sharing, sharing))
				}
			}
		}
		return len(diffs) == 0, strings.Join(diffs, "; "), nil
	})
}

// TestDoctorAgainstTheAPI: doctor reads the real API: it explains a served
// pod with its values, and pinpoints an HPA naming a misspelled metric with
// the right name. (The checks of the aggregator's and agents' pods are
// TestDoctor's, on stand-in pods.)
func TestDoctorAgainstTheAPI(t *testing.T) {
	ns := cluster.NewNamespace(t, "doctor")
	framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{1}})
	const name, selector = "trainer", "app=trainer"
	cluster.CreateDeployment(t, framework.GPUDeployment(ns, name, 1))
	pod := cluster.WaitPods(t, ns, selector, 1)[0]
	hpa := framework.GPUHPA(ns, name, 1, 2, autoscalingv2.MetricTarget{
		Type: autoscalingv2.AverageValueMetricType, AverageValue: resource.NewQuantity(60, resource.DecimalSI),
	})
	hpa.Spec.Metrics[0].Pods.Metric.Name = "gpu_utilisation"
	cluster.CreateHPA(t, hpa)

	framework.WaitFor(t, 60*time.Second, "doctor explains the pod and the HPA", func(ctx context.Context) (bool, string, error) {
		out, code, _ := runCLI(ctx, t, "kubectl-gpu", "doctor", "-n", ns, "--pod", pod)
		wantPod := hasLine(out, "PASS", "pod", fmt.Sprintf("pod %s/%s is served: gpu_utilization ", ns, pod))
		wantHPA := hasLine(out, "FAIL", "hpa", fmt.Sprintf("HPA %s/%s names metric gpu_utilisation, which the custom metrics API does not serve (did you mean gpu_utilization?)", ns, name))
		return code == 1 && wantPod && wantHPA, fmt.Sprintf("exit %d:\n%s", code, out), nil
	})
}

// hasLine reports whether doctor's output has a line of that status and
// topic whose message contains text.
func hasLine(out, status, topic, text string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[0] == status && f[1] == topic && strings.Contains(line, text) {
			return true
		}
	}
	return false
}

// nodeTopRow is a row of `top nodes -o json`.
type nodeTopRow struct {
	Name                     string   `json:"name"`
	Allocatable              int      `json:"allocatable"`
	Pods                     int      `json:"pods"`
	GPUs                     *float64 `json:"gpus"`
	UtilizationPercent       *float64 `json:"utilizationPercent"`
	UtilizationMaxPercent    *float64 `json:"utilizationMaxPercent"`
	MemoryUsedBytes          *float64 `json:"memoryUsedBytes"`
	MemoryUtilizationPercent *float64 `json:"memoryUtilizationPercent"`
	PowerWatts               *float64 `json:"powerWatts"`
}

// TestTopNodesPrintsServedValues: two GPU nodes (two GPUs, one busy and
// held by a pod, one idle; and one idle GPU); `top nodes -o json` prints,
// row by row, the values the custom metrics API serves for each GPU node
// through the aggregation layer, over all of its GPUs, held or idle.
func TestTopNodesPrintsServedValues(t *testing.T) {
	ns := cluster.NewNamespace(t, "topnodes")
	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{GPUsPerNode: []int{2, 1}})
	busy, idle := ns+"-gpu-0", ns+"-gpu-1"
	cluster.CreateDeployment(t, framework.GPUDeployment(ns, "train", 1))
	pod := cluster.WaitPods(t, ns, "app=train", 1)[0]
	a := env.Allocation(pod)
	if a.NodeName != busy && a.NodeName != idle || len(a.Devices) != 1 {
		t.Fatalf("allocation %+v: want one GPU on %s or %s", a, busy, idle)
	}
	// Whichever node the pod landed on, the first node's GPU 0 runs at
	// 80 % and every other GPU at 0 %.
	env.SetUtilization(0, "0", 80)
	env.SetUtilization(0, "1", 0)
	env.SetUtilization(1, "0", 0)
	framework.WaitFor(t, 60*time.Second, "node utilization max 80 on "+busy+" (v1beta1 and v1beta2)", func(ctx context.Context) (bool, string, error) {
		var got []map[string]float64
		for _, version := range []string{"v1beta1", "v1beta2"} {
			v, err := cluster.NodeMetrics(ctx, version, "", "gpu_utilization_max")
			if err != nil {
				return false, err.Error(), nil
			}
			got = append(got, v)
		}
		return got[0][busy] == 80 && got[1][busy] == 80, fmt.Sprintf("%v", got), nil
	})

	metrics := map[string]func(*nodeTopRow) *float64{
		"gpu_utilization":        func(r *nodeTopRow) *float64 { return r.UtilizationPercent },
		"gpu_utilization_max":    func(r *nodeTopRow) *float64 { return r.UtilizationMaxPercent },
		"gpu_memory_used_bytes":  func(r *nodeTopRow) *float64 { return r.MemoryUsedBytes },
		"gpu_memory_utilization": func(r *nodeTopRow) *float64 { return r.MemoryUtilizationPercent },
		"gpu_power_usage_watts":  func(r *nodeTopRow) *float64 { return r.PowerWatts },
		"gpu_count":              func(r *nodeTopRow) *float64 { return r.GPUs },
	}
	wantGPUs := map[string]float64{busy: 2, idle: 1}
	framework.WaitFor(t, 60*time.Second, "top nodes -o json = the API's values", func(ctx context.Context) (bool, string, error) {
		out, code, err := runCLI(ctx, t, "kubectl-gpu", "top", "nodes", "-o", "json")
		if err != nil || code != 0 {
			return false, fmt.Sprintf("exit %d: %v", code, err), nil
		}
		var list struct{ Items []nodeTopRow }
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return false, "", err
		}
		rows := map[string]*nodeTopRow{}
		for i := range list.Items {
			rows[list.Items[i].Name] = &list.Items[i]
		}
		var diffs []string
		for metric, field := range metrics {
			want, err := cluster.NodeMetrics(ctx, "v1beta2", "", metric)
			if err != nil {
				return false, err.Error(), nil
			}
			for node := range wantGPUs {
				r := rows[node]
				if r == nil {
					diffs = append(diffs, node+": no row")
					continue
				}
				w, served := want[node]
				got := field(r)
				if !served || got == nil || *got != w {
					diffs = append(diffs, fmt.Sprintf("%s %s: top %v, API %v (served %v)", node, metric, got, w, served))
				}
			}
		}
		for node, gpus := range wantGPUs {
			r := rows[node]
			if r == nil {
				continue
			}
			wantPods := 0
			if node == a.NodeName {
				wantPods = 1
			}
			if r.GPUs == nil || *r.GPUs != gpus || r.Allocatable != int(gpus) || r.Pods != wantPods {
				diffs = append(diffs, fmt.Sprintf("%s: %v GPUs served, %d allocatable, %d pods; want %v, %v, %d", node, r.GPUs, r.Allocatable, r.Pods, gpus, gpus, wantPods))
			}
		}
		if r := rows[busy]; r != nil && (r.UtilizationPercent == nil || *r.UtilizationPercent != 40 || r.UtilizationMaxPercent == nil || *r.UtilizationMaxPercent != 80) {
			diffs = append(diffs, fmt.Sprintf("%s: utilization %v, max %v; want 40 and 80", busy, r.UtilizationPercent, r.UtilizationMaxPercent))
		}
		return len(diffs) == 0, strings.Join(diffs, "; "), nil
	})
}
