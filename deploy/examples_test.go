//go:build chart

package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// servedMetrics are the custom metrics the aggregator serves (docs: issue 4).
var servedMetrics = []string{"gpu_utilization", "gpu_memory_used_bytes", "gpu_memory_utilization", "gpu_power_usage_watts"}

// agentSeries and agentLabels are the agent's exposition: the device fields
// of the table in package exposition, and its labels (the node label as
// the chart names it by default).
var (
	agentSeries = func() (out []string) {
		for f := range exposition.NumFields {
			out = append(out, f.Name())
		}
		return out
	}()
	agentLabels = func() []string {
		out := []string{exposition.LabelGPU, exposition.LabelUUID, exposition.LabelPCIBusID, exposition.LabelDevice, exposition.LabelModelName,
			exposition.LabelHostname, exposition.LabelPod, exposition.LabelNamespace, exposition.LabelContainer, exposition.LabelVGPU,
			exposition.LabelGPUInstanceProfile, exposition.LabelGPUInstanceID, exposition.LabelErrCode}
		for l := range exposition.NumLabelFields {
			out = append(out, l.Name())
		}
		return out
	}()
)

func readObjects(t *testing.T, path string) objects {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return splitObjects(t, data)
}

// TestExamples: the example objects decode strictly, the HPAs scale the
// sample Deployment on metrics the aggregator serves (the seed's HPA among
// them), and the Flux HelmRelease's values are valid for the chart.
func TestExamples(t *testing.T) {
	var all objects
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples (%v)", err)
	}
	for _, f := range files {
		all = append(all, readObjects(t, f)...)
	}
	checkStrict(t, all)

	deps := decodeAll[appsv1.Deployment](t, all, "apps/v1/Deployment")
	if len(deps) != 1 {
		t.Fatalf("%d sample Deployments, want 1", len(deps))
	}
	app := deps[0]
	gpus := app.Spec.Template.Spec.Containers[0].Resources.Limits[corev1.ResourceName("nvidia.com/gpu")]
	if gpus.Cmp(resource.MustParse("1")) != 0 {
		t.Errorf("sample Deployment limits nvidia.com/gpu = %s, want 1", gpus.String())
	}

	hpas := decodeAll[autoscalingv2.HorizontalPodAutoscaler](t, all, "autoscaling/v2/HorizontalPodAutoscaler")
	var seedStyle, averageValue bool
	for _, h := range hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.Name != app.Name || h.Namespace != app.Namespace {
			t.Errorf("HPA %s targets %s %s/%s, not the sample Deployment", h.Name, ref.Kind, h.Namespace, ref.Name)
		}
		for _, m := range h.Spec.Metrics {
			if m.Type != autoscalingv2.PodsMetricSourceType || m.Pods == nil {
				t.Errorf("HPA %s: metric type %s, want Pods", h.Name, m.Type)
				continue
			}
			if !slices.Contains(servedMetrics, m.Pods.Metric.Name) {
				t.Errorf("HPA %s: metric %q is not served by the aggregator", h.Name, m.Pods.Metric.Name)
			}
			if m.Pods.Target.AverageValue == nil || m.Pods.Target.AverageValue.Sign() <= 0 {
				t.Errorf("HPA %s: a Pods metric needs a positive averageValue", h.Name)
				continue
			}
			isUtil := m.Pods.Metric.Name == "gpu_utilization"
			seedStyle = seedStyle || isUtil && m.Pods.Target.Type == autoscalingv2.ValueMetricType && m.Pods.Target.AverageValue.Cmp(resource.MustParse("60")) == 0
			averageValue = averageValue || isUtil && m.Pods.Target.Type == autoscalingv2.AverageValueMetricType
		}
	}
	if !seedStyle || !averageValue {
		t.Errorf("want an HPA on gpu_utilization with type Value / averageValue 60 (the seed's: %v) and one with type AverageValue (%v)", seedStyle, averageValue)
	}

	releases := all.find("helm.toolkit.fluxcd.io/v2/HelmRelease")
	repos := all.find("source.toolkit.fluxcd.io/v1/HelmRepository")
	if len(releases) != 1 || len(repos) != 1 {
		t.Fatalf("want one Flux HelmRelease and one HelmRepository, have %d and %d", len(releases), len(repos))
	}
	hr := untyped(t, all, releases[0].key(), releases[0].Name)
	if dig(hr, "spec", "chart", "spec", "chart") != "gpu-metrics-server" ||
		dig(hr, "spec", "chart", "spec", "sourceRef", "name") != repos[0].Name {
		t.Errorf("HelmRelease does not install gpu-metrics-server from HelmRepository %s: %v", repos[0].Name, dig(hr, "spec", "chart"))
	}
	values, err := yaml.Marshal(dig(hr, "spec", "values"))
	if err != nil {
		t.Fatal(err)
	}
	valuesFile := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(valuesFile, values, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runHelm(t, "template", "gpu-metrics-server", chartDir, "--namespace", "gpu-metrics-server", "-f", valuesFile)
	if err != nil {
		t.Fatalf("the HelmRelease's values do not render: %v", err)
	}
	r := release{"gpu-metrics-server", "gpu-metrics-server", splitObjects(t, []byte(out))}
	ds := decode[appsv1.DaemonSet](t, r.objs, keyDaemonSet, r.agent())
	if ds.Spec.Template.Spec.NodeSelector["node-pool"] != "gpu" || ds.Spec.Template.Spec.Affinity != nil {
		t.Errorf("HelmRelease values: agent nodeSelector %v affinity %v, want node-pool=gpu and no default affinity",
			ds.Spec.Template.Spec.NodeSelector, ds.Spec.Template.Spec.Affinity)
	}
}

// grafanaDashboard is the part of Grafana's dashboard model the test reads.
type grafanaDashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Title      string `json:"title"`
		Type       string `json:"type"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// TestGrafanaDashboard: the dashboard queries only series and labels the
// agent exports, and has a per-pod panel.
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana/gpu-metrics-server-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard without uid, title or panels")
	}
	series := regexp.MustCompile(`\b[A-Za-z_][A-Za-z0-9_]*\{`)
	matchers := regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!=|!~|=)\s*"`)
	grouping := regexp.MustCompile(`\bby\s*\(([^)]*)\)`)
	checkExpr := func(where, expr string) {
		for _, m := range series.FindAllString(expr, -1) {
			name := strings.TrimSuffix(m, "{")
			if !slices.Contains(agentSeries, name) {
				t.Errorf("%s: series %s is not one the agent exports", where, name)
			}
		}
		for _, m := range matchers.FindAllStringSubmatch(expr, -1) {
			if !slices.Contains(agentLabels, m[1]) {
				t.Errorf("%s: label %s is not one the agent exports", where, m[1])
			}
		}
		for _, m := range grouping.FindAllStringSubmatch(expr, -1) {
			for _, l := range strings.Split(m[1], ",") {
				if l = strings.TrimSpace(l); !slices.Contains(agentLabels, l) {
					t.Errorf("%s: groups by %s, which the agent does not export", where, l)
				}
			}
		}
	}
	ids := map[int]bool{}
	var perPod bool
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			checkExpr("panel "+p.Title, tg.Expr)
			perPod = perPod || strings.Contains(tg.Expr, "by (namespace, pod)")
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			checkExpr("variable "+v.Name, q["query"].(string))
		}
	}
	if !perPod {
		t.Error("no panel aggregates by (namespace, pod)")
	}
}

// TestManifestsInSync runs hack/render-manifests.sh --check: the checked-in
// plain manifests are what the chart renders now.
func TestManifestsInSync(t *testing.T) {
	cmd := exec.Command("../hack/render-manifests.sh", "--check")
	cmd.Env = append(os.Environ(), "HELM="+helmPath(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// TestManifests: every plain flavour decodes strictly, creates the
// namespace it uses with a Pod Security level the agent passes, and only the
// cert-manager-free flavours skip TLS verification; only the delegate
// flavour delegates, to prometheus-adapter, with the RBAC it needs.
func TestManifests(t *testing.T) {
	cases := []struct {
		file       string
		unverified bool
		delegate   []string // the aggregator's --delegate-* flags
	}{
		{"manifests/gpu-metrics-server.yaml", true, nil},
		{"manifests/gpu-metrics-server-cert-manager.yaml", false, nil},
		{"manifests/gpu-metrics-server-delegate.yaml", true, []string{"--delegate-to=https://prometheus-adapter.monitoring.svc:443",
			"--delegate-insecure-skip-tls-verify", "--delegate-timeout=10s", "--delegate-discovery-interval=30s"}},
	}
	files, err := filepath.Glob("manifests/*.yaml")
	if err != nil || len(files) != len(cases) {
		t.Errorf("deploy/manifests holds %v (%v), want the %d flavours tested here", files, err, len(cases))
	}
	for _, c := range cases {
		t.Run(filepath.Base(c.file), func(t *testing.T) {
			objs := readObjects(t, c.file)
			checkStrict(t, objs)
			if len(objs) == 0 || objs[0].key() != "v1/Namespace" {
				t.Fatal("the first object is not the Namespace")
			}
			ns := decode[corev1.Namespace](t, objs, "v1/Namespace", objs[0].Name)
			if ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
				t.Errorf("namespace %s does not allow the agent's hostPath: labels %v", ns.Name, ns.Labels)
			}
			for _, o := range objs[1:] {
				if o.key() == "v1/Namespace" {
					t.Errorf("a second Namespace %s", o.Name)
				}
			}
			for _, a := range decodeAll[apiService](t, objs, keyAPIService) {
				if a.Spec.InsecureSkipTLSVerify != c.unverified {
					t.Errorf("APIService %s insecureSkipTLSVerify = %v", a.Metadata.Name, a.Spec.InsecureSkipTLSVerify)
				}
			}
			r := release{defaultRelease, ns.Name, objs[1:]}
			checkNamespaces(t, r)
			checkRBAC(t, r, chartCase{})
			dep := decode[appsv1.Deployment](t, objs, keyDeployment, r.aggregator())
			sel, err := labels.Parse(flagValues(dep.Spec.Template.Spec.Containers[0].Args)["--agent-selector"])
			ds := decode[appsv1.DaemonSet](t, objs, keyDaemonSet, r.agent())
			if err != nil || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
				t.Errorf("the aggregator's --agent-selector does not select the agents (%v)", err)
			}
			if got := delegateArgs(t, r); !slices.Equal(got, c.delegate) {
				t.Errorf("the aggregator's delegate flags %v, want %v", got, c.delegate)
			}
			if c.delegate != nil {
				checkDelegateRBAC(t, r, "", "")
			}
		})
	}
}
