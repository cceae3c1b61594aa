//go:build e2e

package framework

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// envPrometheus is the prometheus binary; unset, prometheus on PATH
	// (Debian's package, hack/install-deps.sh).
	envPrometheus = "GMS_PROMETHEUS"
	// envAdapter is the prometheus-adapter binary; unset,
	// hack/build-prometheus-adapter.sh builds or finds it.
	envAdapter = "GMS_PROMETHEUS_ADAPTER"
)

// SeedRequestRateRules is the seed user's prometheus-adapter configuration
// (config.yaml of their ConfigMap), verbatim: Istio's istio_requests_total
// served as requests_per_second of pods and namespaces.
const SeedRequestRateRules = `rules:
- metricsQuery: 'sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)'
  name:
    matches: "istio_requests_total"
    as: "requests_per_second"
  resources:
    overrides:
      namespace:
        resource: namespace
      pod:
        resource: pod
  seriesQuery: istio_requests_total{pod!="", namespace!=""}
`

// Prometheus is a running Prometheus.
type Prometheus struct {
	Process *Process
	// URL is http://127.0.0.1:<port>.
	URL string
}

// promConfig is the part of prometheus.yml the harness writes (JSON is
// YAML).
type promConfig struct {
	Global        map[string]string  `json:"global"`
	ScrapeConfigs []promScrapeConfig `json:"scrape_configs"`
}

type promScrapeConfig struct {
	JobName       string             `json:"job_name"`
	StaticConfigs []promStaticConfig `json:"static_configs"`
}

type promStaticConfig struct {
	Targets []string `json:"targets"`
}

// StartPrometheus starts Debian's Prometheus (GMS_PROMETHEUS, else
// prometheus on PATH) scraping every URL (http://host:port/metrics) at
// interval as job job, with a fresh TSDB in dir, and waits until it is
// ready. It stops at the end of the test.
func StartPrometheus(t testing.TB, dir, job string, urls []string, interval time.Duration) *Prometheus {
	t.Helper()
	bin := os.Getenv(envPrometheus)
	if bin == "" {
		bin = "prometheus"
	}
	bin, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("prometheus not found (%v): run hack/install-deps.sh (Debian's prometheus package) or set %s", err, envPrometheus)
	}
	targets := make([]string, len(urls))
	for i, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || u.Path != "/metrics" {
			t.Fatalf("target %q: want http://host:port/metrics", raw)
		}
		targets[i] = u.Host
	}
	cfg := promConfig{
		Global: map[string]string{
			"scrape_interval": interval.String(),
			"scrape_timeout":  min(interval, 10*time.Second).String(),
		},
		ScrapeConfigs: []promScrapeConfig{{JobName: job, StaticConfigs: []promStaticConfig{{Targets: targets}}}},
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	proc, err := StartProcess(dir, "prometheus", bin,
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+filepath.Join(dir, "prometheus-data"),
		"--storage.tsdb.retention.time=1h",
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proc.Stop)
	p := &Prometheus{Process: proc, URL: "http://" + addr}
	if err := WaitServing(t.Context(), proc, PlainHTTP, p.URL+"/-/ready"); err != nil {
		t.Fatal(err)
	}
	return p
}

// Scalar evaluates an instant query whose answer is one number (0 for an
// empty answer).
func (p *Prometheus) Scalar(ctx context.Context, query string) (float64, error) {
	return PromScalar(ctx, p.URL, query)
}

// PromScalar evaluates an instant query on the Prometheus at base whose
// answer is one number (0 for an empty answer).
func PromScalar(ctx context.Context, base, query string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/query?query="+url.QueryEscape(query), nil)
	if err != nil {
		return 0, err
	}
	resp, err := PlainHTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, fmt.Errorf("query %s: %w", query, err)
	}
	if out.Status != "success" {
		return 0, fmt.Errorf("query %s: %s", query, out.Error)
	}
	if len(out.Data.Result) == 0 {
		return 0, nil
	}
	s, _ := out.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(s, 64)
}

// PrometheusAdapterBinary returns prometheus-adapter v0.12.0
// (GMS_PROMETHEUS_ADAPTER, else built once from the Go module proxy by
// hack/build-prometheus-adapter.sh and cached).
func PrometheusAdapterBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv(envAdapter); bin != "" {
		return bin
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, "hack", "build-prometheus-adapter.sh")
	out, err := exec.CommandContext(t.Context(), "bash", script).Output()
	if err != nil {
		t.Fatalf("%s failed (%v); it builds prometheus-adapter from the Go module proxy once, or set %s", script, err, envAdapter)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// AdapterOptions say how to run prometheus-adapter.
type AdapterOptions struct {
	// Name names its log (and its audit log); default
	// "prometheus-adapter".
	Name string
	// PrometheusURL is the Prometheus it queries.
	PrometheusURL string
	// Rules is its rule file (config.yaml).
	Rules string
	// RelistInterval is --metrics-relist-interval.
	RelistInterval time.Duration
	// Port is its secure port on 127.0.0.1 (0: a free one).
	Port int
	// Cert is its serving certificate (default: ServingCert, the
	// certificate of the Service RegisterCustomMetrics creates).
	Cert *KeyPair
	// Audit writes an audit log (Metadata level, every stage, blocking:
	// a request's RequestReceived event is on disk before it is
	// handled), read with Adapter.AuditEvents.
	Audit bool
}

// Adapter is a running prometheus-adapter.
type Adapter struct {
	Process *Process
	Port    int
	// URL is https://127.0.0.1:<Port>.
	URL       string
	auditPath string
}

// auditPolicy logs every request at Metadata level.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
`

// StartPrometheusAdapter starts prometheus-adapter with o's rules on the
// cluster (delegated authentication and authorization, and its lister, on
// the admin kubeconfig) and waits until it is ready. It stops at the end
// of the test.
func (cp *ControlPlane) StartPrometheusAdapter(t testing.TB, dir string, o AdapterOptions) *Adapter {
	t.Helper()
	bin := PrometheusAdapterBinary(t)
	if o.Name == "" {
		o.Name = "prometheus-adapter"
	}
	cfgFile := filepath.Join(dir, o.Name+"-config.yaml")
	if err := os.WriteFile(cfgFile, []byte(o.Rules), 0o600); err != nil {
		t.Fatal(err)
	}
	cert := cp.ServingCert(t, dir)
	if o.Cert != nil {
		cert = *o.Cert
	}
	if o.Port == 0 {
		ports, err := FreePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		o.Port = ports[0]
	}
	a := &Adapter{Port: o.Port, URL: loopbackURL("https", o.Port)}
	args := []string{
		"--prometheus-url=" + o.PrometheusURL + "/",
		"--metrics-relist-interval=" + o.RelistInterval.String(),
		"--config=" + cfgFile,
		"--secure-port=" + strconv.Itoa(o.Port),
		"--bind-address=127.0.0.1",
		"--tls-cert-file=" + cert.CertFile,
		"--tls-private-key-file=" + cert.KeyFile,
		"--lister-kubeconfig=" + cp.Kubeconfig,
		"--authentication-kubeconfig=" + cp.Kubeconfig,
		"--authorization-kubeconfig=" + cp.Kubeconfig,
	}
	if o.Audit {
		policy := filepath.Join(dir, o.Name+"-audit-policy.yaml")
		if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
			t.Fatal(err)
		}
		a.auditPath = filepath.Join(dir, o.Name+"-audit.log")
		args = append(args, "--audit-policy-file="+policy, "--audit-log-path="+a.auditPath, "--audit-log-mode=blocking", "--audit-log-format=json")
	}
	var err error
	a.Process, err = StartProcess(dir, o.Name, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Process.Stop)
	if err := WaitServing(t.Context(), a.Process, cp.HTTPClient(), a.URL+"/readyz"); err != nil {
		t.Fatal(err)
	}
	return a
}

// AuditEvent is what the tests read of one audit event.
type AuditEvent struct {
	Stage      string `json:"stage"`
	RequestURI string `json:"requestURI"`
	Verb       string `json:"verb"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// AuditEvents returns the events of the adapter's audit log (Audit set),
// oldest first.
func (a *Adapter) AuditEvents() ([]AuditEvent, error) {
	data, err := os.ReadFile(a.auditPath)
	if err != nil {
		return nil, err
	}
	var events []AuditEvent
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var e AuditEvent
		if err := json.Unmarshal(line, &e); err != nil {
			// A line being written: the next read has it whole.
			break
		}
		events = append(events, e)
	}
	return events, sc.Err()
}
