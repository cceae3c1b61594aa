package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protojson"
	"k8s.io/klog/v2"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/sim"
	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/scrape"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

// TestMain keeps the nodes' start-up log lines out of the test and
// benchmark output.
func TestMain(m *testing.M) {
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	os.Exit(m.Run())
}

func testConfig(nodes, gpus int, fill string) fleetConfig {
	return fleetConfig{Nodes: nodes, GPUsPerNode: gpus, NodePrefix: "n", SampleInterval: time.Second, Utilization: 10, FillNamespace: fill}
}

func mustFleet(t testing.TB, cfg fleetConfig) *fleet {
	t.Helper()
	f, err := newFleet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// podsJSON renders pods as the control API takes them.
func podsJSON(t testing.TB, pods ...*podresourcesv1.PodResources) string {
	t.Helper()
	b, err := protojson.Marshal(&podresourcesv1.ListPodResourcesResponse{PodResources: pods})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// gpuUtil parses an exposition and returns DCGM_FI_DEV_GPU_UTIL by GPU
// index, with each series' pod as namespace/name ("" when none).
func gpuUtil(t *testing.T, body []byte) (map[string]float64, map[string]string) {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the body does not parse: %v", err)
	}
	util, pods := map[string]float64{}, map[string]string{}
	for _, m := range mfs["DCGM_FI_DEV_GPU_UTIL"].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		util[l["gpu"]] = m.GetGauge().GetValue()
		if l["pod"] != "" {
			pods[l["gpu"]] = l["namespace"] + "/" + l["pod"]
		}
	}
	return util, pods
}

// TestNodeServesTheAgentsExposition checks that a node renders exactly what
// an agent with the same simulated GPUs and the same kubelet answer
// renders: the pods set through the control API plus one synthetic pod on
// every other GPU.
func TestNodeServesTheAgentsExposition(t *testing.T) {
	tests := []struct {
		name     string
		fill     string
		explicit []*podresourcesv1.PodResources
		// agentPods builds the kubelet answer the agent would get.
		agentPods func(node string) []*podresourcesv1.PodResources
	}{
		{
			name: "no pods",
			agentPods: func(string) []*podresourcesv1.PodResources {
				return nil
			},
		},
		{
			name:     "explicit pods only",
			explicit: []*podresourcesv1.PodResources{fakekubelet.GPUPod("app", "a", "cuda", gpuResource, sim.UUID("n0", 1))},
			agentPods: func(node string) []*podresourcesv1.PodResources {
				return []*podresourcesv1.PodResources{fakekubelet.GPUPod("app", "a", "cuda", gpuResource, sim.UUID(node, 1))}
			},
		},
		{
			name:     "fill around an explicit pod named by minor number",
			fill:     "fill",
			explicit: []*podresourcesv1.PodResources{fakekubelet.GPUPod("app", "a", "cuda", gpuResource, "nvidia2")},
			agentPods: func(node string) []*podresourcesv1.PodResources {
				out := []*podresourcesv1.PodResources{fakekubelet.GPUPod("app", "a", "cuda", gpuResource, "nvidia2")}
				for j := range 3 {
					if j != 2 {
						out = append(out, fakekubelet.GPUPod("fill", fmt.Sprintf("%s-gpu%d", node, j), fillContainer, gpuResource, sim.UUID(node, j)))
					}
				}
				return out
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := mustFleet(t, testConfig(1, 3, tc.fill))
			n := f.nodes[0]
			n.setPods(tc.explicit)

			simulated, err := sim.New(n.name, 3, nil)
			if err != nil {
				t.Fatal(err)
			}
			util := 10.0
			if err := simulated.Set(sim.AllGPUs, sim.Update{Utilization: &util}); err != nil {
				t.Fatal(err)
			}
			m := podmap.NewMapping(&podresourcesv1.ListPodResourcesResponse{PodResources: tc.agentPods(n.name)})
			agent := collector.NewSampler(simulated, collector.SamplerOptions{Node: n.name, Interval: time.Second, Owners: func() podmap.Lookup { return m }})

			at := time.Unix(1700000000, 0)
			want := agent.SampleOnce(at).Exposition()
			got := n.sampler.SampleOnce(at).Exposition()
			if !bytes.Equal(got, want) {
				t.Errorf("node exposition differs from the agent's:\n got: %s\nwant: %s", got, want)
			}
		})
	}
}

func TestNodeServeHTTP(t *testing.T) {
	f := mustFleet(t, testConfig(2, 2, "fill"))
	n := f.nodes[1]
	plain := append(append([]byte(nil), n.sampler.Latest().Exposition()...), *f.currentTrailer()...)
	tests := []struct {
		name, method, encoding string
		wantStatus             int
		wantGzip               bool
	}{
		{"plain", http.MethodGet, "", http.StatusOK, false},
		{"gzip", http.MethodGet, "deflate, gzip;q=0.9", http.StatusOK, true},
		{"not gzip", http.MethodGet, "gzipx", http.StatusOK, false},
		{"post", http.MethodPost, "", http.StatusMethodNotAllowed, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "/metrics", nil)
			if tc.encoding != "" {
				req.Header.Set("Accept-Encoding", tc.encoding)
			}
			rec := httptest.NewRecorder()
			n.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.wantStatus, rec.Body)
			}
			if tc.wantStatus != http.StatusOK {
				return
			}
			body := rec.Body.Bytes()
			if gz := rec.Header().Get("Content-Encoding") == "gzip"; gz != tc.wantGzip {
				t.Fatalf("gzip %v, want %v", gz, tc.wantGzip)
			}
			if tc.wantGzip {
				r, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if body, err = io.ReadAll(r); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(body, plain) {
				t.Errorf("body is not the snapshot's exposition followed by the self-metrics")
			}
			if ct := rec.Header().Get("Content-Type"); ct != contentType {
				t.Errorf("Content-Type %q, want %q", ct, contentType)
			}
		})
	}
	if !bytes.Contains(plain, []byte("\ngo_goroutines ")) || !bytes.Contains(plain, []byte("\ngpu_metrics_server_devices ")) {
		t.Errorf("no Go or sampler self-metrics after the device series")
	}
}

// TestBodyRenderedOncePerSnapshot checks the caching that keeps the fleet
// cheap: the same body until the node samples again.
func TestBodyRenderedOncePerSnapshot(t *testing.T) {
	f := mustFleet(t, testConfig(1, 1, ""))
	n := f.nodes[0]
	b1, b2 := n.current(), n.current()
	if b1 != b2 {
		t.Fatal("a second scrape of the same snapshot built a new body")
	}
	n.sampler.SampleOnce(time.Now())
	if n.current() == b1 {
		t.Fatal("a new snapshot served the old body")
	}
	b3 := n.current()
	if err := f.renderTrailer(); err != nil {
		t.Fatal(err)
	}
	if n.current() == b3 {
		t.Fatal("a new trailer served the old body")
	}
}

func TestControl(t *testing.T) {
	type check func(t *testing.T, f *fleet, rec *httptest.ResponseRecorder)
	utilIs := func(node int, want map[string]float64) check {
		return func(t *testing.T, f *fleet, _ *httptest.ResponseRecorder) {
			n := f.nodes[node]
			got, _ := gpuUtil(t, n.sampler.SampleOnce(time.Now()).Exposition())
			for gpu, w := range want {
				if got[gpu] != w {
					t.Errorf("node %d GPU %s: utilization %v, want %v (all: %v)", node, gpu, got[gpu], w, got)
				}
			}
		}
	}
	podsAre := func(node int, want map[string]string) check {
		return func(t *testing.T, f *fleet, _ *httptest.ResponseRecorder) {
			_, got := gpuUtil(t, f.nodes[node].sampler.SampleOnce(time.Now()).Exposition())
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("node %d pods %v, want %v", node, got, want)
			}
		}
	}
	bodyHas := func(s string) check {
		return func(t *testing.T, _ *fleet, rec *httptest.ResponseRecorder) {
			if !strings.Contains(rec.Body.String(), s) {
				t.Errorf("answer %q lacks %q", rec.Body.String(), s)
			}
		}
	}
	tests := []struct {
		name, method, target, body string
		wantStatus                 int
		checks                     []check
	}{
		{"set one GPU", "POST", "/sim/set?node=1&gpu=1&utilization=90", "", 204,
			[]check{utilIs(1, map[string]float64{"0": 10, "1": 90}), utilIs(0, map[string]float64{"0": 10, "1": 10})}},
		{"set all", "POST", "/sim/set?node=all&gpu=all&utilization=55.5", "", 204,
			[]check{utilIs(0, map[string]float64{"0": 55.5, "1": 55.5}), utilIs(1, map[string]float64{"0": 55.5, "1": 55.5})}},
		{"set every GPU of one node", "POST", "/sim/set?node=0&gpu=all&utilization=0", "", 204,
			[]check{utilIs(0, map[string]float64{"0": 0, "1": 0}), utilIs(1, map[string]float64{"0": 10})}},
		{"no node", "POST", "/sim/set?gpu=0&utilization=1", "", 400, []check{bodyHas("missing node")}},
		{"node out of range", "POST", "/sim/set?node=2&gpu=0&utilization=1", "", 400, []check{bodyHas(`node="2"`)}},
		{"negative node", "POST", "/sim/set?node=-1&gpu=0&utilization=1", "", 400, nil},
		{"no gpu", "POST", "/sim/set?node=0&utilization=1", "", 400, []check{bodyHas("missing gpu")}},
		{"gpu out of range", "POST", "/sim/set?node=0&gpu=2&utilization=1", "", 400, []check{bodyHas(`gpu="2"`)}},
		{"gpu not a number", "POST", "/sim/set?node=0&gpu=one&utilization=1", "", 400, nil},
		{"no utilization", "POST", "/sim/set?node=0&gpu=0", "", 400, []check{bodyHas("missing utilization")}},
		{"utilization above 100", "POST", "/sim/set?node=0&gpu=0&utilization=101", "", 400,
			[]check{utilIs(0, map[string]float64{"0": 10})}},
		{"utilization NaN", "POST", "/sim/set?node=0&gpu=0&utilization=NaN", "", 400, nil},
		{"set with GET", "GET", "/sim/set?node=0&gpu=0&utilization=1", "", 405, nil},
		{"put pods", "PUT", "/nodes/1/pods", podsJSON(t, fakekubelet.GPUPod("app", "a", "cuda", gpuResource, sim.UUID("n1", 0))), 204,
			[]check{podsAre(1, map[string]string{"0": "app/a", "1": "fill/n1-gpu1"}), podsAre(0, map[string]string{"0": "fill/n0-gpu0", "1": "fill/n0-gpu1"})}},
		{"put no pods", "PUT", "/nodes/1/pods", "{}", 204,
			[]check{podsAre(1, map[string]string{"0": "fill/n1-gpu0", "1": "fill/n1-gpu1"})}},
		{"put garbage", "PUT", "/nodes/1/pods", `{"pod_resources": 7}`, 400, []check{bodyHas("ListPodResourcesResponse")}},
		{"put to a missing node", "PUT", "/nodes/5/pods", "{}", 404, nil},
		{"put to a node by name", "PUT", "/nodes/n1/pods", "{}", 404, nil},
		{"put too much", "PUT", "/nodes/0/pods", strings.Repeat(" ", maxPodsBody+1), 413, nil},
		{"targets", "GET", "/targets", "", 200, []check{bodyHas(`{"nodes":[{"name":"n0","url":"http://x/metrics"}`)}},
		{"node metrics on the control port", "GET", "/nodes/1/metrics", "", 200, []check{bodyHas(`Hostname="n1"`)}},
		{"metrics of a missing node", "GET", "/nodes/7/metrics", "", 404, nil},
		{"readyz", "GET", "/readyz", "", 200, nil},
		{"unknown path", "GET", "/nope", "", 404, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := mustFleet(t, testConfig(2, 2, "fill"))
			var l listing
			l.publish(targetList{Nodes: []target{{Name: "n0", URL: "http://x/metrics"}, {Name: "n1", URL: "http://y/metrics"}}})
			h := controlHandler(f, &l)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body)))
			if rec.Code != tc.wantStatus {
				t.Fatalf("%s %s: status %d, want %d: %s", tc.method, tc.target, rec.Code, tc.wantStatus, rec.Body)
			}
			for _, c := range tc.checks {
				c(t, f, rec)
			}
		})
	}
}

// TestAggregatorReadsTheFleet feeds a node's body to the aggregator's own
// parser: every GPU comes out as one sample of its pod, at the snapshot's
// time, with the utilization set.
// TestControlBeforeListening checks that the fleet does not claim to be
// ready, nor list nodes, before every node listens.
func TestControlBeforeListening(t *testing.T) {
	h := controlHandler(mustFleet(t, testConfig(1, 1, "")), &listing{})
	for _, path := range []string{"/readyz", "/targets"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusServiceUnavailable {
			t.Errorf("GET %s before listening: %d, want 503", path, rec.Code)
		}
	}
}

func TestAggregatorReadsTheFleet(t *testing.T) {
	f := mustFleet(t, testConfig(1, 8, "fill"))
	n := f.nodes[0]
	n.setPods([]*podresourcesv1.PodResources{fakekubelet.GPUPod("app", "a", "cuda", gpuResource, sim.UUID(n.name, 5))})
	u := 90.0
	if err := n.sim.Set(5, sim.Update{Utilization: &u}); err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1700000000, 500_000_000)
	n.sampler.SampleOnce(at)
	// The whole body (Prometheus, older aggregators) and the families the
	// aggregator asks for give the same samples.
	read := "/metrics?" + url.Values{exposition.FamilyParam: exposition.ReadFamilies()}.Encode()
	var whole []store.Sample
	for _, path := range []string{"/metrics", read} {
		rec := httptest.NewRecorder()
		n.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		samples, stats, err := scrape.NewParser().Parse(rec.Body.Bytes(), time.Now())
		if err != nil {
			t.Fatalf("%s: the aggregator's parser rejects the body: %v", path, err)
		}
		if len(samples) != 8 || stats.Invalid != 0 || !stats.SnapshotTime {
			t.Fatalf("%s: %d samples (%+v), want 8 with the snapshot time", path, len(samples), stats)
		}
		for _, s := range samples {
			want, pod := 10.0, n.name+"-gpu"
			if s.Device == sim.UUID(n.name, 5) {
				want, pod = 90, "a"
			}
			if s.Utilization != want || !strings.HasPrefix(s.Pod, pod) || !s.Time.Equal(at) {
				t.Errorf("%s: sample %s/%s on %s: utilization %v at %v, want %v at %v", path, s.Namespace, s.Pod, s.Device, s.Utilization, s.Time, want, at)
			}
		}
		if whole == nil {
			whole = samples
			t.Logf("%s: %d bytes", path, rec.Body.Len())
			continue
		}
		t.Logf("%s: %d bytes", path, rec.Body.Len())
		if !reflect.DeepEqual(samples, whole) {
			t.Errorf("the families asked for give other samples than the whole body:\n%+v\nwant\n%+v", samples, whole)
		}
	}
}

func TestFlags(t *testing.T) {
	tests := []struct {
		args     []string
		wantFlag string // "" for valid
	}{
		{nil, ""},
		{[]string{"--nodes=5000", "--fill-namespace=fleet", "--control-address=127.0.0.1:0"}, ""},
		{[]string{"--nodes=0"}, "--nodes"},
		{[]string{"--nodes=20001"}, "--nodes"},
		{[]string{"--gpus-per-node=65"}, "--gpus-per-node"},
		{[]string{"--node-prefix="}, "--node-prefix"},
		{[]string{"--sample-interval=1ms"}, "--sample-interval"},
		{[]string{"--utilization=-1"}, "--utilization"},
		{[]string{"--utilization=NaN"}, "--utilization"},
		{[]string{"--fill-namespace=Not_A_Label"}, "--fill-namespace"},
		{[]string{"--listen-host=localhost"}, "--listen-host"},
		{[]string{"--control-address=9400"}, "--control-address"},
		{[]string{"--control-address=localhost:9400"}, "--control-address"},
		{[]string{"--control-address=127.0.0.1:70000"}, "--control-address"},
		{[]string{"--nodes=x"}, "--nodes"},
		{[]string{"stray"}, "unexpected"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := parseFlags(tc.args, io.Discard)
			switch {
			case tc.wantFlag == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantFlag != "" && (err == nil || !strings.Contains(err.Error(), tc.wantFlag)):
				t.Fatalf("error %v, want one naming %s", err, tc.wantFlag)
			}
		})
	}
	var stderr bytes.Buffer
	if code := run([]string{"--nodes=-3"}, &stderr); code != 2 || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("a bad flag: exit %d, output %q; want 2 and one line", code, stderr.String())
	}
}

// TestServe runs the command's serving path: every node on its own port,
// listed in the targets file, until the context ends.
func TestServe(t *testing.T) {
	targetsFile := filepath.Join(t.TempDir(), "targets.json")
	o, err := parseFlags([]string{"--nodes=3", "--gpus-per-node=2", "--control-address=127.0.0.1:0", "--targets-file=" + targetsFile, "--sample-interval=50ms"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, o) }()
	defer func() {
		cancel()
		if err := testutil.Receive(t, "serve to return", done); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	var data []byte
	testutil.WaitFor(t, testutil.DefaultTimeout, "the targets file", func(context.Context) (bool, string, error) {
		var err error
		data, err = os.ReadFile(targetsFile)
		if err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
	var list targetList
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatalf("targets file: %v", err)
	}
	if len(list.Nodes) != 3 {
		t.Fatalf("%d targets, want 3", len(list.Nodes))
	}
	seen := map[string]bool{}
	for i, tg := range list.Nodes {
		if seen[tg.URL] {
			t.Fatalf("two nodes on %s", tg.URL)
		}
		seen[tg.URL] = true
		resp, err := http.Get(tg.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, fmt.Appendf(nil, `Hostname="fleet-node-%d"`, i)) {
			t.Errorf("%s (%s): %s, body without its hostname", tg.Name, tg.URL, resp.Status)
		}
		other, err := http.Get(strings.TrimSuffix(tg.URL, "/metrics") + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		_ = other.Body.Close()
		if other.StatusCode != http.StatusNotFound {
			t.Errorf("%s answers %s on another path, want 404", tg.Name, other.Status)
		}
	}
}
