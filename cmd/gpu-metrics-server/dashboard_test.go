package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector/sim"
	"github.com/gpu-metrics-server/gpu-metrics-server/internal/testutil"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

// dashboardPath is the project's Grafana dashboard.
const dashboardPath = "../../deploy/grafana/gpu-metrics-server-dashboard.json"

// panel is the part of a Grafana panel the test reads; a row holds the
// panels it collapses.
type panel struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// dashboard is the part of Grafana's dashboard model the test reads.
type dashboard struct {
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// query is one PromQL expression of the dashboard and where it is.
type query struct {
	where, expr string
	// label is set for a variable's label_values(expr, label): the series
	// must carry it.
	label string
}

// dashboardQueries are the dashboard's panel queries and variable queries,
// with the variables at "All" (.*), as Grafana sends them.
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	all := strings.NewReplacer("$hostname", ".*", "$gpu", ".*", "$namespace", ".*")
	var out []query
	var walk func([]panel)
	walk = func(panels []panel) {
		for _, p := range panels {
			walk(p.Panels)
			if p.Type == "row" || p.Type == "text" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query: it can show no data", p.Title)
			}
			for i, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("panel %q target %d has no PromQL expression", p.Title, i)
				}
				out = append(out, query{where: fmt.Sprintf("panel %q target %d", p.Title, i), expr: all.Replace(tg.Expr)})
			}
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)$`)
	for _, v := range d.Templating.List {
		q, ok := v.Query.(map[string]any)
		if !ok {
			continue
		}
		m := labelValues.FindStringSubmatch(q["query"].(string))
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(expr, label)", v.Name, q["query"])
		}
		out = append(out, query{where: "variable " + v.Name, expr: all.Replace(m[1]), label: m[2]})
	}
	return out
}

// TestDashboardWithPrometheus runs Debian's Prometheus against the simulated
// agent (GPU 0 held by a pod, GPU 1 in MIG mode with a pod on an
// instance) and evaluates every query of the project's Grafana dashboard:
// each must return data, as each panel must show some.
func TestDashboardWithPrometheus(t *testing.T) {
	prometheus, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not found (Debian's prometheus package; hack/install-deps.sh, which make test runs, installs it)")
	}
	queries := dashboardQueries(t)

	sock := startKubelet(t,
		fakekubelet.GPUPod("ml", "train-0", "main", "nvidia.com/gpu", sim.UUID("node-d", 0)),
		fakekubelet.GPUPod("ml", "small", "main", "nvidia.com/mig-3g.40gb", sim.MIGUUID("node-d", 1, 2)),
	)
	_, agent := start(t, "agent", "--backend=sim", "--sim-gpus=2", "--sim-mig=1", "--node-name=node-d", "--sample-interval=200ms",
		"--web.listen-address=127.0.0.1:0", "--pod-resources-socket="+sock, "--pod-resources-interval=200ms")
	simSet(t, agent, "gpu=0&utilization=70&memory_used_mib=20000")
	simSet(t, agent, "gpu=1&gpu_i_id=2&utilization=40&memory_used_mib=10000")
	simSet(t, agent, "gpu=0&xid=79&correctable_remapped_rows=2")

	prom := startPrometheus(t, prometheus, agent)
	testutil.WaitFor(t, testutil.DefaultTimeout, "every dashboard query returning data", func(context.Context) (bool, string, error) {
		var failing []string
		for _, q := range queries {
			if why := evaluate(prom, q); why != "" {
				failing = append(failing, fmt.Sprintf("%s: %s: %s", q.where, q.expr, why))
			}
		}
		return len(failing) == 0, strings.Join(failing, "\n"), nil
	})
	t.Logf("%d dashboard queries return data", len(queries))
}

// prometheusListeningRE matches the line Prometheus logs once its web
// server listens, with the address it bound (port 0 picks a free one).
var prometheusListeningRE = regexp.MustCompile(`msg="Listening on" address=(\S+)`)

// startPrometheus runs Prometheus scraping target every second, on a port
// the kernel picks, and returns its address once it is ready.
func startPrometheus(t *testing.T, binary, target string) string {
	t.Helper()
	dir := t.TempDir()
	config := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: gpu-metrics-server-agent
    honor_labels: true
    static_configs:
      - targets: [%q]
`, target)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "--config.file="+config, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:0", "--log.level=info")
	cmd.Stdout = io.Discard
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs strings.Builder
	addr, done := make(chan string, 1), make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			logs.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := prometheusListeningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		_ = cmd.Wait()
	}()
	log := func() string { mu.Lock(); defer mu.Unlock(); return logs.String() }
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		testutil.Receive(t, "Prometheus to exit", done)
		if t.Failed() {
			t.Logf("prometheus log:\n%s", log())
		}
	})
	var a string
	select {
	case a = <-addr:
	case <-done:
		t.Fatalf("prometheus exited before listening:\n%s", log())
	case <-time.After(testutil.DefaultTimeout):
		t.Fatalf("prometheus logged no listen address:\n%s", log())
	}
	testutil.Eventually(t, "Prometheus ready", func() bool {
		select {
		case <-done:
			t.Fatalf("prometheus exited:\n%s", log())
		default:
		}
		resp, err := http.Get("http://" + a + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return a
}

// evaluate runs q as an instant query and says why it shows no data ("" when
// it does).
func evaluate(prom string, q query) string {
	resp, err := http.Get("http://" + prom + "/api/v1/query?query=" + url.QueryEscape(q.expr))
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return err.Error()
	}
	if r.Status != "success" {
		return "query failed: " + r.Error
	}
	if len(r.Data.Result) == 0 {
		return "no data"
	}
	if q.label != "" {
		for _, s := range r.Data.Result {
			if s.Metric[q.label] != "" {
				return ""
			}
		}
		return "no series with label " + q.label
	}
	return ""
}
