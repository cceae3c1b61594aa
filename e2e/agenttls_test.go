//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// TestAgentTLSFromChart runs an agent and the aggregator with what the
// chart renders for agent.tls.enabled (source "chart"): the agent's web
// config and the certificate Helm generates, which names only the server
// name, and the aggregator's --scrape-ca-file and --scrape-server-name,
// each file taken from the rendered Secret and ConfigMap. The aggregator
// scrapes the agent over https by its IP address and serves the pod's
// value through the API; an aggregator given another CA counts scrape
// errors and serves nothing for the pod. The render is a server-side dry
// run, so the chart's lookup runs: once the Secret exists, a second render
// (an upgrade) keeps its certificate.
func TestAgentTLSFromChart(t *testing.T) {
	ns := cluster.NewNamespace(t, "agenttls")
	const release = "gms-tls"
	render := func() []*unstructured.Unstructured {
		t.Helper()
		out := cluster.HelmT(t, "template", release, framework.ChartDir(t), "--namespace", ns, "--dry-run=server",
			"--set", "agent.tls.enabled=true",
			// Neither the APIService (the suite's aggregator holds it) nor
			// the aggregator's own certificate matter here.
			"--set", "apiService.create=false", "--set", "aggregator.tls.mode=unverified")
		return decodeObjects(t, "helm template", []byte(out))
	}
	objs := render()
	secretName := release + "-gpu-metrics-server-agent-tls"
	var secret corev1.Secret
	fromRendered(t, objs, "Secret", secretName, &secret)

	// The Secret in the cluster, as the install leaves it: the next render
	// looks it up and keeps it.
	secret.Namespace = ns
	if _, err := cluster.Client.CoreV1().Secrets(ns).Create(t.Context(), &secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var again corev1.Secret
	fromRendered(t, render(), "Secret", secretName, &again)
	for _, k := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if !bytes.Equal(secret.Data[k], again.Data[k]) {
			t.Errorf("%s changed in a render made once the Secret exists (an upgrade would rotate it)", k)
		}
	}

	// The agent's and the aggregator's flags, their mounted files written
	// to a directory of the test.
	dir := framework.TempDir(t, "gms-e2e-agenttls-")
	var ds appsv1.DaemonSet
	fromRendered(t, objs, "DaemonSet", release+"-gpu-metrics-server-agent", &ds)
	var dep appsv1.Deployment
	fromRendered(t, objs, "Deployment", release+"-gpu-metrics-server-aggregator", &dep)
	agentFlags := mountedArgs(t, filepath.Join(dir, "agent"), objs, ds.Spec.Template.Spec)
	aggFlags := mountedArgs(t, filepath.Join(dir, "aggregator"), objs, dep.Spec.Template.Spec)
	if aggFlags["--agent-scheme"] != "https" {
		t.Fatalf("the aggregator scrapes the agents with %q, want https", aggFlags["--agent-scheme"])
	}
	webConfig, caFile, serverName := agentFlags["--web.config.file"], aggFlags["--scrape-ca-file"], aggFlags["--scrape-server-name"]
	if webConfig == "" || caFile == "" || serverName == "" {
		t.Fatalf("rendered flags: agent --web.config.file=%q, aggregator --scrape-ca-file=%q --scrape-server-name=%q", webConfig, caFile, serverName)
	}

	env := framework.StartGMS(t, cluster, ns, framework.GMSOptions{
		GPUsPerNode: []int{1}, FakeKubelets: true,
		AgentTLS:       &framework.AgentTLS{Args: []string{"--web.config.file=" + webConfig}, CAFile: caFile, ServerName: serverName},
		AggregatorArgs: []string{"--scrape-ca-file=" + caFile, "--scrape-server-name=" + serverName},
	})
	target := env.Nodes[0].URL + "/metrics"
	if !strings.HasPrefix(target, "https://127.0.0.1:") {
		t.Fatalf("agent URL %s: want https by IP address", target)
	}
	pod, _ := busyPod(t, env, "trainer", 40)
	if errs := scrapeErrors(t, env.Aggregator, target); errs != 0 {
		t.Errorf("the aggregator counted %v scrape errors of %s", errs, target)
	}

	// Another CA (the cluster's): every scrape fails its handshake.
	wrong := cluster.StartAggregator(t, framework.TempDir(t, "gms-e2e-agenttls-wrong-"), []string{target},
		"--authentication-kubeconfig="+cluster.Kubeconfig,
		"--authorization-kubeconfig="+cluster.Kubeconfig,
		"--scrape-interval="+framework.ScrapeInterval.String(),
		"--scrape-ca-file="+cluster.CAFile(),
		"--scrape-server-name="+serverName)
	framework.WaitFor(t, 30*time.Second, "the aggregator with another CA to count two scrape errors", func(ctx context.Context) (bool, string, error) {
		errs := scrapeErrors(t, wrong, target)
		return errs >= 2, fmt.Sprintf("%v errors", errs), nil
	})
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/%s?labelSelector=%s", ns, framework.MetricName, url.QueryEscape("app=trainer"))
	code, body := wrong.Get(t, cluster.HTTPClient(), path, nil)
	switch code {
	case http.StatusNotFound:
	case http.StatusOK:
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal([]byte(body), &list); err != nil || len(list.Items) != 0 {
			t.Errorf("the aggregator with another CA serves %s (%v), want no value for %s", body, err, pod)
		}
	default:
		t.Errorf("the aggregator with another CA answers %d: %s", code, body)
	}
	// The good one still serves it.
	waitPodValues(t, ns, "app=trainer", func(v map[string]float64) bool { return v[pod] == 40 })
}

// fromRendered converts the rendered object of kind and name into out.
func fromRendered(t *testing.T, objs []*unstructured.Unstructured, kind, name string, out any) {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, out); err != nil {
				t.Fatalf("%s %s: %v", kind, name, err)
			}
			return
		}
	}
	t.Fatalf("the chart renders no %s %s", kind, name)
}

// mountedArgs writes the Secret and ConfigMap volumes the first container
// of spec mounts, from the rendered objects, under dir, with every mount
// path in their files and in the container's flags pointing into dir, and
// returns those flags by name.
func mountedArgs(t *testing.T, dir string, objs []*unstructured.Unstructured, spec corev1.PodSpec) map[string]string {
	t.Helper()
	c := spec.Containers[0]
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	type file struct {
		path string
		data []byte
	}
	var files []file
	var replace []string // mount path, local directory
	for _, m := range c.VolumeMounts {
		v := volumes[m.Name]
		var data map[string][]byte
		var items []corev1.KeyToPath
		switch {
		case v.Secret != nil:
			var s corev1.Secret
			fromRendered(t, objs, "Secret", v.Secret.SecretName, &s)
			data, items = s.Data, v.Secret.Items
		case v.ConfigMap != nil:
			var cm corev1.ConfigMap
			fromRendered(t, objs, "ConfigMap", v.ConfigMap.Name, &cm)
			data, items = map[string][]byte{}, v.ConfigMap.Items
			for k, s := range cm.Data {
				data[k] = []byte(s)
			}
		default:
			continue // not the chart's files (the service account token, say)
		}
		local := filepath.Join(dir, m.Name)
		replace = append(replace, m.MountPath, local)
		if items == nil {
			for k := range data {
				items = append(items, corev1.KeyToPath{Key: k, Path: k})
			}
		}
		for _, it := range items {
			d, ok := data[it.Key]
			if !ok {
				t.Fatalf("volume %s: no key %s", m.Name, it.Key)
			}
			files = append(files, file{filepath.Join(local, it.Path), d})
		}
	}
	r := strings.NewReplacer(replace...)
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, []byte(r.Replace(string(f.data))), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	flags := map[string]string{}
	for _, a := range c.Args {
		if name, value, ok := strings.Cut(a, "="); ok && strings.HasPrefix(name, "--") {
			flags[name] = r.Replace(value)
		}
	}
	return flags
}

// scrapeErrors is the aggregator's count of failed scrapes of target.
func scrapeErrors(t *testing.T, agg *framework.Aggregator, target string) float64 {
	t.Helper()
	errs, err := scrapeErrorReasons(t, agg)
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, v := range errs[target] {
		n += v
	}
	return n
}
