package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector/sim"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

// startKubelet serves pods on a fake kubelet socket for the test's life.
func startKubelet(t *testing.T, pods ...*podresourcesv1.PodResources) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gms-pr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "kubelet.sock")
	kubelet, err := fakekubelet.Start(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kubelet.Stop)
	kubelet.SetPods(pods)
	return sock
}

func simSet(t *testing.T, addr, query string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/sim/set?"+query, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("/sim/set?%s: %s", query, resp.Status)
	}
}

// rows renders a family's series as sorted "label=value,…:value" strings
// with the given labels.
func rows(mfs map[string]*dto.MetricFamily, name string, keys ...string) string {
	var out []string
	for _, m := range mfs[name].GetMetric() {
		l := labels(m)
		var parts []string
		for _, k := range keys {
			parts = append(parts, l[k])
		}
		out = append(out, fmt.Sprintf("%s:%v", strings.Join(parts, "/"), m.GetGauge().GetValue()))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// TestAgentSharedGPU: two pods on one time-sliced GPU at 70 % and 10 % get
// 70 and 10, not 80 and 80; a pod on a dedicated GPU keeps the device value.
func TestAgentSharedGPU(t *testing.T) {
	u0, u1 := sim.UUID("node-s", 0), sim.UUID("node-s", 1)
	sock := startKubelet(t,
		fakekubelet.GPUPod("inf", "a", "srv", "nvidia.com/gpu", u0+"::0"),
		fakekubelet.GPUPod("inf", "b", "srv", "nvidia.com/gpu", u0+"::1"),
		fakekubelet.GPUPod("ml", "train-0", "main", "nvidia.com/gpu", u1),
	)
	_, addr := start(t, "agent", "--backend=sim", "--sim-gpus=2", "--node-name=node-s", "--sample-interval=100ms",
		"--web.listen-address=127.0.0.1:0", "--pod-resources-socket="+sock, "--pod-resources-interval=100ms")

	simSet(t, addr, "gpu=0&pod=inf/a&utilization=70&memory_used_mib=3000")
	simSet(t, addr, "gpu=0&pod=inf/b&utilization=10&memory_used_mib=1000")
	simSet(t, addr, "gpu=1&pod=ml/train-0&utilization=55")

	want := map[string]string{
		exposition.PodGPUUtilization.Name(): "0/inf/a/srv:70 0/inf/b/srv:10",
		exposition.PodGPUMemoryUsed.Name():  fmt.Sprintf("0/inf/a/srv:%v 0/inf/b/srv:%v", float64(3000<<20), float64(1000<<20)),
		"DCGM_FI_DEV_GPU_UTIL":              "0/inf/a/srv:80 0/inf/b/srv:80 1/ml/train-0/main:55",
	}
	testutil.Eventually(t, "per-pod shares", func() bool {
		mfs := scrape(t, addr)
		got := map[string]string{}
		for name := range want {
			got[name] = rows(mfs, name, "gpu", "namespace", "pod", "container")
		}
		return fmt.Sprint(got) == fmt.Sprint(want)
	})
	mfs := scrape(t, addr)
	if m := rows(mfs, exposition.DeviceAttributionMode.Name(), "gpu", "mode"); m != "0/device:0 0/process:1 1/device:0 1/process:1" {
		t.Errorf("attribution modes %s", m)
	}

	// Pod b stops; it holds the GPU still, so it reports 0.
	simSet(t, addr, "gpu=0&pod=inf/b&utilization=0")
	testutil.Eventually(t, "pod b at 0", func() bool {
		return rows(scrape(t, addr), exposition.PodGPUUtilization.Name(), "pod") == "a:70 b:0"
	})
}

func TestAgentSimMIG(t *testing.T) {
	mig := sim.MIGUUID("node-m", 1, 2)
	sock := startKubelet(t, fakekubelet.GPUPod("ml", "small", "main", "nvidia.com/mig-3g.40gb", mig))
	_, addr := start(t, "agent", "--backend=sim", "--sim-gpus=2", "--sim-mig=1", "--node-name=node-m", "--sample-interval=100ms",
		"--web.listen-address=127.0.0.1:0", "--pod-resources-socket="+sock, "--pod-resources-interval=100ms")
	simSet(t, addr, "gpu=1&gpu_i_id=2&utilization=60")
	// MIG instances carry the parent GPU's UUID (as dcgm-exporter's do),
	// told apart by GPU_I_ID; the pod holding one is matched by its MIG UUID.
	parent := sim.UUID("node-m", 1)
	want := []string{
		parent + "/3g.40gb/2/small:0.6",
		parent + "/2g.20gb/3/:0",
		parent + "/1g.10gb/9/:0",
		parent + "/1g.10gb/10/:0",
		sim.UUID("node-m", 0) + "///:0", // the whole GPU 0, idle
	}
	sort.Strings(want)
	testutil.Eventually(t, "MIG activity of pod ml/small", func() bool {
		return rows(scrape(t, addr), "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "UUID", "GPU_I_PROFILE", "GPU_I_ID", "pod") == strings.Join(want, " ")
	})
	mfs := scrape(t, addr)
	if n := len(mfs["DCGM_FI_DEV_GPU_UTIL"].GetMetric()); n != 1 {
		t.Errorf("%d GPU_UTIL series, want GPU 0's only (no utilization in MIG mode)", n)
	}
	if a := rows(mfs, exposition.MIGActivitySupported.Name(), "GPU_I_ID"); a != "10:1 2:1 3:1 9:1" {
		t.Errorf("MIG activity gauges %s", a)
	}
	// dcgm-exporter's layout: the GPU in MIG mode is reported through its
	// instances, each with the GPU's power; its memory is counted once.
	if p := rows(mfs, "DCGM_FI_DEV_POWER_USAGE", "gpu", "GPU_I_ID"); !strings.HasPrefix(p, "0/:70 1/10:") || strings.Count(p, " ") != 4 {
		t.Errorf("power series %s, want GPU 0's and one per instance of GPU 1", p)
	}
	var used float64
	for _, m := range mfs["DCGM_FI_DEV_FB_USED"].GetMetric() {
		if labels(m)["gpu"] == "1" {
			used += m.GetGauge().GetValue()
		}
	}
	if used != 0 {
		t.Errorf("GPU 1's memory used sums to %v MiB, want its instances' 0", used)
	}
}

func TestAgentProcessAttributionOff(t *testing.T) {
	u0 := sim.UUID("node-o", 0)
	sock := startKubelet(t,
		fakekubelet.GPUPod("inf", "a", "srv", "nvidia.com/gpu", u0+"::0"),
		fakekubelet.GPUPod("inf", "b", "srv", "nvidia.com/gpu", u0+"::1"),
	)
	_, addr := start(t, "agent", "--backend=sim", "--sim-gpus=1", "--node-name=node-o", "--sample-interval=100ms", "--process-attribution=false",
		"--web.listen-address=127.0.0.1:0", "--pod-resources-socket="+sock, "--pod-resources-interval=100ms")
	simSet(t, addr, "gpu=0&pod=inf/a&utilization=70")
	testutil.Eventually(t, "device value for both pods", func() bool {
		return rows(scrape(t, addr), "DCGM_FI_DEV_GPU_UTIL", "pod") == "a:70 b:70"
	})
	mfs := scrape(t, addr)
	if _, ok := mfs[exposition.PodGPUUtilization.Name()]; ok {
		t.Error("per-pod shares with attribution off")
	}
	if m := rows(mfs, exposition.DeviceAttributionMode.Name(), "mode"); m != "device:1 process:0" {
		t.Errorf("attribution modes %s", m)
	}
}

func TestAgentAttributionFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		flag string
	}{
		{[]string{"agent", "--backend=nvml", "--sim-mig=0"}, "--sim-mig"},
		{[]string{"agent", "--backend=sim", "--sim-gpus=2", "--sim-mig=2"}, "--sim-mig"},
		{[]string{"agent", "--backend=sim", "--sim-mig=x"}, "--sim-mig"},
		{[]string{"agent", "--backend=nvml", "--host-proc=/nonexistent/proc"}, "--host-proc"},
		{[]string{"agent", "--backend=sim", "--kubeconfig=/nonexistent/kubeconfig"}, "--kubeconfig"},
		{[]string{"agent", "--process-attribution=maybe"}, "--process-attribution"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) { checkUsageError(t, tt.flag, tt.args...) })
	}
}
