package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector/sim"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

// binary is the gpu-metrics-server built once for these tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gms-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "gpu-metrics-server")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the binary:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// process is a running gpu-metrics-server.
type process struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs bytes.Buffer
	addr chan string
	done chan error
}

var listeningRE = regexp.MustCompile(`metrics="http://([^/"]+)/metrics"`)

// start runs the binary and waits until it logs its listen address.
func start(t testing.TB, args ...string) (*process, string) {
	t.Helper()
	p := &process{cmd: exec.Command(binary, args...), addr: make(chan string, 1), done: make(chan error, 1)}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				select {
				case p.addr <- m[1]:
				default:
				}
			}
		}
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("process log:\n%s", p.log())
		}
	})
	select {
	case a := <-p.addr:
		return p, a
	case err := <-p.done:
		t.Fatalf("exited before listening: %v\n%s", err, p.log())
	case <-time.After(testutil.DefaultTimeout):
		t.Fatalf("no listen address logged\n%s", p.log())
	}
	return nil, ""
}

func (p *process) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return mfs
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func TestAgentSimulated(t *testing.T) {
	const interval = 200 * time.Millisecond
	p, addr := start(t, "agent", "--backend=sim", "--sim-gpus=3", "--node-name=node-a",
		"--sample-interval="+interval.String(), "--web.listen-address=127.0.0.1:0", "--pod-resources-socket=")

	testutil.Eventually(t, "/readyz", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	var util []*dto.Metric
	testutil.Eventually(t, "3 GPU_UTIL series", func() bool {
		util = scrape(t, addr)["DCGM_FI_DEV_GPU_UTIL"].GetMetric()
		return len(util) == 3
	})
	for i, m := range util {
		l := labels(m)
		if l["UUID"] != sim.UUID("node-a", i) || l["Hostname"] != "node-a" || l["gpu"] != fmt.Sprint(i) || l["DCGM_FI_DRIVER_VERSION"] == "" {
			t.Errorf("series %d labels %v", i, l)
		}
		if _, ok := l["pod"]; ok {
			t.Errorf("pod label without pod attribution: %v", l)
		}
	}

	// Drive GPU 1 and check every round sampled after the change shows it.
	resp, err := http.Post("http://"+addr+"/sim/set?gpu=1&utilization=73", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("/sim/set: %s", resp.Status)
	}
	changedAt := float64(time.Now().UnixMilli()) / 1000
	testutil.Eventually(t, "two sample rounds after the change", func() bool {
		mfs := scrape(t, addr)
		// A loaded machine may find the snapshot past its age limit (then
		// not served): try again.
		tsf, uf := mfs[exposition.SampleTimestamp.Name()], mfs["DCGM_FI_DEV_GPU_UTIL"]
		if tsf == nil || len(uf.GetMetric()) != 3 {
			return false
		}
		ts := tsf.GetMetric()[0].GetGauge().GetValue()
		if ts <= changedAt {
			return false
		}
		v := uf.GetMetric()[1].GetGauge().GetValue()
		if v != 73 {
			t.Fatalf("round sampled at %.3f (after the change at %.3f) shows %v, want 73", ts, changedAt, v)
		}
		return ts > changedAt+2*interval.Seconds()
	})

	// SIGTERM: graceful exit 0.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(testutil.DefaultTimeout):
		t.Fatal("no exit after SIGTERM")
	}
}

func TestAgentPodAttribution(t *testing.T) {
	dir, err := os.MkdirTemp("", "gms-pr")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "kubelet.sock")
	kubelet, err := fakekubelet.Start(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer kubelet.Stop()
	u0, u1 := sim.UUID("node-b", 0), sim.UUID("node-b", 1)
	kubelet.SetPods([]*podresourcesv1.PodResources{
		fakekubelet.GPUPod("ml", "train-0", "main", "nvidia.com/gpu", u0),
		fakekubelet.GPUPod("inf", "a", "srv", "nvidia.com/gpu", u1+"::0"),
		fakekubelet.GPUPod("inf", "b", "srv", "nvidia.com/gpu", u1+"::1"),
	})

	_, addr := start(t, "agent", "--backend=sim", "--sim-gpus=3", "--node-name=node-b", "--sample-interval=200ms",
		"--web.listen-address=127.0.0.1:0", "--pod-resources-socket="+sock, "--pod-resources-interval=200ms")

	// owners renders the GPU_UTIL series as "uuid-index:namespace/pod/container/vgpu".
	owners := func() string {
		var rows []string
		for _, m := range scrape(t, addr)["DCGM_FI_DEV_GPU_UTIL"].GetMetric() {
			l := labels(m)
			rows = append(rows, fmt.Sprintf("%s:%s/%s/%s/%s", l["gpu"], l["namespace"], l["pod"], l["container"], l["vgpu"]))
		}
		return strings.Join(rows, " ")
	}
	want := "0:ml/train-0/main/ 1:inf/a/srv/0 1:inf/b/srv/1 2:///"
	testutil.Eventually(t, "pod labels "+want, func() bool { return owners() == want })

	// The kubelet's answer changes: train-0 ends, c takes GPU 2.
	kubelet.SetPods([]*podresourcesv1.PodResources{
		fakekubelet.GPUPod("inf", "a", "srv", "nvidia.com/gpu", u1+"::0"),
		fakekubelet.GPUPod("inf", "b", "srv", "nvidia.com/gpu", u1+"::1"),
		fakekubelet.GPUPod("ml", "c", "main", "nvidia.com/gpu", sim.UUID("node-b", 2)),
	})
	want = "0:/// 1:inf/a/srv/0 1:inf/b/srv/1 2:ml/c/main/"
	testutil.Eventually(t, "pod labels "+want, func() bool { return owners() == want })

	// The kubelet goes away: device series stay, with the last mapping.
	kubelet.Stop()
	testutil.Eventually(t, "pod_resources_up 0", func() bool {
		up := scrape(t, addr)["gpu_metrics_server_pod_resources_up"].GetMetric()
		return len(up) == 1 && up[0].GetGauge().GetValue() == 0
	})
	if got := owners(); got != want {
		t.Errorf("during the kubelet outage: %q, want the last mapping %q", got, want)
	}
}

func TestAgentFlagErrors(t *testing.T) {
	// A web config with a key exporter-toolkit does not know: a YAML
	// error of several lines, reported on one.
	unknownKeyWebConfig := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(unknownKeyWebConfig, []byte("foo: bar\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		flag string
	}{
		{[]string{"agent", "--backend=cuda"}, "--backend"},
		{[]string{"agent", "--backend=sim", "--sample-interval=0s"}, "--sample-interval"},
		{[]string{"agent", "--backend=sim", "--sample-interval=-1s"}, "--sample-interval"},
		{[]string{"agent", "--backend=sim", "--web.config.file=/nonexistent/web.yml"}, "--web.config.file"},
		{[]string{"agent", "--backend=sim", "--pod-resources-interval=0s"}, "--pod-resources-interval"},
		{[]string{"agent", "--backend=sim", "--web.listen-address=nonsense"}, "--web.listen-address"},
		{[]string{"agent", "--no-such-flag"}, "--no-such-flag"},
		{[]string{"agent", "--sample-interval=soon"}, "--sample-interval"},
		{[]string{"agent", "--backend=sim", "--logging-format=xml"}, "logging-format"},
		{[]string{"agent", "--backend=sim", "--sample-interval=1ns"}, "--sample-interval"},
		{[]string{"agent", "--backend=sim", "--web.listen-address=:99999"}, "--web.listen-address"},
		{[]string{"agent", "--backend=sim", "stray-argument"}, "stray-argument"},
		{[]string{"nosuchcmd"}, "nosuchcmd"},
		{[]string{"agent", "--backend=sim", "--web.listen-address=999.1.1.1:19556"}, "--web.listen-address"},
		// Valid, but not this machine's: found when listening, before
		// anything else starts or logs.
		{[]string{"agent", "--backend=sim", "--pod-resources-socket=", "--web.listen-address=192.0.2.1:0"}, "--web.listen-address"},
		{[]string{"standalone", "--backend=sim", "--web.listen-address=192.0.2.1:0", "--secure-port=0"}, "--web.listen-address"},
		{[]string{"agent", "--backend=sim", "--web.config.file=" + unknownKeyWebConfig}, "--web.config.file"},
		{[]string{"agent", "--backend=sim", "--sample-interval=1000000h"}, "--sample-interval"},
		{[]string{"agent", "--backend=sim", "--pod-resources-timeout=1h"}, "--pod-resources-timeout"},
		{[]string{"standalone", "--backend=sim", "--tls-cert-file=/nonexistent", "--tls-private-key-file=" + unknownKeyWebConfig}, "--tls-cert-file"},
		{[]string{"aggregator", "--agent-urls=http://127.0.0.1:1/metrics", "--scrape-interval=2s", "--stale-after=3s"}, "--stale-after"},
		{[]string{"aggregator", "--agent-urls=http://127.0.0.1:1/metrics", "--stale-after=-1s"}, "--stale-after"},
		{[]string{"aggregator", "--agent-urls=http://127.0.0.1:1/metrics", "--scrape-interval=10ms"}, "--scrape-interval"},
		{[]string{"aggregator", "--agent-urls=http://127.0.0.1:1/metrics", "--scrape-interval=2s", "--window=5m"}, "--window"},
		{[]string{"standalone", "--backend=sim", "--sample-interval=100ms", "--window=15s"}, "--window"},
		{[]string{"aggregator", "--agent-urls=http://127.0.0.1:1/metrics", "--delegate-to=prometheus-adapter"}, "--delegate-to"},
		{[]string{"aggregator", "--agent-urls=http://127.0.0.1:1/metrics", "--delegate-to=http://adapter:6443"}, "--delegate-to"},
		{[]string{"aggregator", "--agent-urls=http://127.0.0.1:1/metrics", "--delegate-timeout=5s"}, "--delegate-timeout"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) { checkUsageError(t, tt.flag, tt.args...) })
	}
}

// checkUsageError runs the binary with args and expects what an invalid
// flag gives: exit status 2 and a single line naming the flag.
func checkUsageError(t *testing.T, flag string, args ...string) {
	t.Helper()
	checkUsageErrors(t, []string{flag}, args...)
}

// checkUsageErrors runs the binary with args and expects exit status 2 and
// one line for each invalid flag, naming it, in order.
func checkUsageErrors(t *testing.T, flags []string, args ...string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	// Outside a cluster, whatever the test runner's environment.
	cmd.Env = append(os.Environ(), "KUBERNETES_SERVICE_HOST=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2; stderr:\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != len(flags) {
		t.Fatalf("want %d lines naming %q, got:\n%s", len(flags), flags, stderr.String())
	}
	for i, flag := range flags {
		if !strings.Contains(lines[i], flag) {
			t.Errorf("line %d does not name %s: %s", i+1, flag, lines[i])
		}
	}
}

// TestAgentCountersFile: with dcgm-exporter's -f the agent serves the
// file's fields with its types and help texts, plus the aggregator's; a
// file naming fields it cannot read stops it with exit status 2 and one
// line per field (file:line:field), or, with
// --collectors-skip-unsupported, starts without them.
func TestAgentCountersFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.csv")
	if err := os.WriteFile(good, []byte("# my fields\nDCGM_FI_DEV_GPU_TEMP, gauge, My temperature.\nDCGM_FI_DEV_XID_ERRORS, counter, Last XID.\nDCGM_FI_DEV_NOPE, gauge, n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkUsageErrors(t, []string{good + ":4: DCGM_FI_DEV_NOPE"}, "agent", "--backend=sim", "-f", good)

	_, addr := start(t, "agent", "--backend=sim", "--sim-gpus=1", "--node-name=node-c", "--web.listen-address=127.0.0.1:0",
		"--pod-resources-socket=", "--collectors="+good, "--collectors-skip-unsupported", "--hostname-label=hostname")
	var got []string
	testutil.Eventually(t, "the file's fields", func() bool {
		got = got[:0]
		for name := range scrape(t, addr) {
			if strings.HasPrefix(name, "DCGM_") {
				got = append(got, name)
			}
		}
		return len(got) > 0
	})
	sort.Strings(got)
	want := []string{"DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_RESERVED", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_GPU_UTIL",
		"DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_PROF_GR_ENGINE_ACTIVE"}
	if !slices.Equal(got, want) {
		t.Errorf("families %v, want %v (the file's and the aggregator's)", got, want)
	}
	mfs := scrape(t, addr)
	temp, xid := mfs["DCGM_FI_DEV_GPU_TEMP"], mfs["DCGM_FI_DEV_XID_ERRORS"]
	if temp.GetHelp() != "My temperature." || xid.GetType() != dto.MetricType_COUNTER {
		t.Errorf("help %q type %v: want the file's", temp.GetHelp(), xid.GetType())
	}
	if l := labels(temp.GetMetric()[0]); l["hostname"] != "node-c" || l["Hostname"] != "" || l["DCGM_FI_DRIVER_VERSION"] != "" {
		t.Errorf("labels %v: want hostname and no driver version (the file does not list it)", l)
	}
}

// TestFlagErrorsAllReported: several invalid flags, each on its own line,
// each naming its own flag.
func TestFlagErrorsAllReported(t *testing.T) {
	tests := []struct {
		args  []string
		flags []string
	}{
		{[]string{"aggregator", "--agent-urls=http://127.0.0.1:1/metrics", "--window=0s", "--stale-after=-1s"}, []string{"--window", "--stale-after"}},
		{[]string{"agent", "--backend=sim", "--sim-gpus=2", "--sim-mig=3", "--sample-interval=0s"}, []string{"--sim-mig", "--sample-interval"}},
		{[]string{"standalone", "--backend=sim", "--sim-pods=x", "--stale-after=-1s", "--bind-address=0.0.0.0"}, []string{"--sim-pods", "--stale-after", "--bind-address"}},
		{[]string{"standalone", "--backend=nvml", "--sim-pods=a/b"}, []string{"--sim-pods", "--kubeconfig"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) { checkUsageErrors(t, tt.flags, tt.args...) })
	}
}

func TestAgentWithoutNVML(t *testing.T) {
	if _, err := os.Stat("/dev/nvidiactl"); err == nil {
		t.Skip("an NVIDIA driver is present; hack/gpu-smoke.sh covers this machine")
	}
	cmd := exec.Command(binary, "agent", "--backend=nvml", "--web.listen-address=127.0.0.1:0", "--pod-resources-socket=")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "NVML library (libnvidia-ml.so.1) not found") {
		t.Errorf("no clear message:\n%s", out)
	}
	if strings.Contains(string(out), "panic") {
		t.Errorf("panicked:\n%s", out)
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "gpu-metrics-server, version") {
		t.Errorf("version output %q", out)
	}
}

// BenchmarkScrapeSlowKubelet scrapes the real agent while its kubelet takes
// 5 s to answer every call: the scrape must not wait on the kubelet.
func BenchmarkScrapeSlowKubelet(b *testing.B) {
	dir, err := os.MkdirTemp("", "gms-pr")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "kubelet.sock")
	kubelet, err := fakekubelet.Start(sock)
	if err != nil {
		b.Fatal(err)
	}
	defer kubelet.Stop()
	var pods []*podresourcesv1.PodResources
	for i := 0; i < 8; i++ {
		pods = append(pods, fakekubelet.GPUPod("ns", fmt.Sprintf("p%d", i), "c", "nvidia.com/gpu", sim.UUID("slow", i)))
	}
	kubelet.SetPods(pods)
	kubelet.SetDelay(5 * time.Second)

	_, addr := start(b, "agent", "--backend=sim", "--sim-gpus=8", "--node-name=slow", "--web.listen-address=127.0.0.1:0",
		"--pod-resources-socket="+sock, "--pod-resources-interval=1s", "--pod-resources-timeout=10s")
	client := &http.Client{}
	url := "http://" + addr + "/metrics"
	get := func() {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
	get()
	b.ResetTimer()
	for b.Loop() {
		get()
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestStandaloneDemo is the README's demo: simulated GPUs and pods, the
// custom metrics API on loopback, values that follow /sim/set.
func TestStandaloneDemo(t *testing.T) {
	port := freePort(t)
	_, addr := start(t, "standalone", "--backend=sim", "--sim-gpus=2", "--sample-interval=200ms", "--window=2s",
		"--sim-pods=demo/gpu-app-0,demo/gpu-app-1,other/x-0", "--web.listen-address=127.0.0.1:0",
		fmt.Sprintf("--secure-port=%d", port))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	api := fmt.Sprintf("https://127.0.0.1:%d/apis/custom.metrics.k8s.io/", port)
	type item struct {
		DescribedObject struct{ Namespace, Name string }
		Value           string
		WindowSeconds   *int64
	}
	query := func(version, path string) (int, []item) {
		resp, err := client.Get(api + version + path)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var body struct{ Items []item }
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("decoding %s: %v", path, err)
			}
		}
		return resp.StatusCode, body.Items
	}
	selector := "/namespaces/demo/pods/*/gpu_utilization?labelSelector=app%3Dgpu-app"
	testutil.Eventually(t, "the custom metrics API", func() bool {
		code, items := query("v1beta2", selector)
		return code == http.StatusOK && len(items) == 2
	})
	resp, err := http.Post("http://"+addr+"/sim/set?gpu=1&utilization=80", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, version := range []string{"v1beta1", "v1beta2"} {
		testutil.Eventually(t, version+" gpu-app-1 at 80 over the whole window", func() bool {
			_, items := query(version, selector)
			for _, it := range items {
				if it.DescribedObject.Name == "gpu-app-1" && it.Value == "80" {
					return true
				}
			}
			return false
		})
	}
	_, items := query("v1beta2", selector)
	for _, it := range items {
		if it.DescribedObject.Namespace != "demo" || it.WindowSeconds == nil || *it.WindowSeconds < 1 || *it.WindowSeconds > 2 {
			t.Errorf("item %+v", it)
		}
		if it.DescribedObject.Name == "gpu-app-0" && it.Value != "0" {
			t.Errorf("idle gpu-app-0 = %s, want 0", it.Value)
		}
	}
	if code, _ := query("v1beta2", "/namespaces/demo/pods/*/no_such_metric"); code != http.StatusNotFound {
		t.Errorf("unknown metric: %d, want 404", code)
	}
	if code, _ := query("v1beta2", "/namespaces/demo/pods/*/gpu_utilization?labelSelector=app%3D%3D%3D"); code != http.StatusBadRequest {
		t.Errorf("bad selector: %d, want 400", code)
	}
}

// TestStandaloneDemoPodsByDefault: the bare simulated standalone, with no
// --sim-pods and no kubelet, serves the demo's pods.
func TestStandaloneDemoPodsByDefault(t *testing.T) {
	port := freePort(t)
	noKubelet := filepath.Join(t.TempDir(), "kubelet.sock")
	start(t, "standalone", "--backend=sim", "--sim-gpus=3", "--sample-interval=200ms", "--window=2s",
		"--pod-resources-socket="+noKubelet, "--web.listen-address=127.0.0.1:0", fmt.Sprintf("--secure-port=%d", port))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	url := fmt.Sprintf("https://127.0.0.1:%d/apis/custom.metrics.k8s.io/v1beta2/namespaces/demo/pods/*/gpu_utilization?labelSelector=app%%3Dgpu-app", port)
	var names []string
	testutil.Eventually(t, "the demo's three pods on the custom metrics API", func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var body struct {
			Items []struct{ DescribedObject struct{ Name string } }
		}
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&body) != nil {
			return false
		}
		names = names[:0]
		for _, it := range body.Items {
			names = append(names, it.DescribedObject.Name)
		}
		return len(names) == 3
	})
	sort.Strings(names)
	if got := strings.Join(names, " "); got != "gpu-app-0 gpu-app-1 gpu-app-2" {
		t.Errorf("pods %s, want gpu-app-0 gpu-app-1 gpu-app-2", got)
	}
}

func TestStandaloneFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		flag string
	}{
		{[]string{"standalone", "--backend=sim", "--sim-pods=nonamespace"}, "--sim-pods"},
		{[]string{"standalone", "--backend=sim", "--sim-pods=a/b,a/b"}, "--sim-pods"},
		{[]string{"standalone", "--backend=sim", "--window=0s"}, "--window"},
		{[]string{"standalone", "--backend=sim", "--bind-address=0.0.0.0"}, "bind-address"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) { checkUsageError(t, tt.flag, tt.args...) })
	}
}
