package options

import (
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	cliflag "k8s.io/component-base/cli/flag"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// command is what each subcommand's options offer.
type command interface {
	Flags() cliflag.NamedFlagSets
	Complete(fs *pflag.FlagSet)
	Validate() []error
}

// cleanEnv makes the options' defaults independent of the test runner's
// environment: outside a cluster, no $POD_NAMESPACE, a known node name.
func cleanEnv(t *testing.T) {
	t.Helper()
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("POD_NAMESPACE", "")
	t.Setenv("NODE_NAME", "node-t")
}

// parse parses args into o's flags and completes o, as the command does
// before validating.
func parse(t *testing.T, o command, args ...string) {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fss := o.Flags()
	for _, name := range fss.Order {
		fs.AddFlagSet(fss.FlagSets[name])
	}
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parsing %q: %v", args, err)
	}
	o.Complete(fs)
}

// flagsOf checks that every error is a one-line *FlagError naming its flag,
// and returns the flags named, in order.
func flagsOf(t *testing.T, errs []error) []string {
	t.Helper()
	var flags []string
	for _, err := range errs {
		var fe *FlagError
		if !errors.As(err, &fe) {
			t.Errorf("%v (%T) is not a FlagError", err, err)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "invalid --"+fe.Flag+": ") || strings.Contains(msg, "\n") {
			t.Errorf("message %q is not one line naming --%s", msg, fe.Flag)
		}
		flags = append(flags, fe.Flag)
	}
	return flags
}

type validationCase struct {
	name      string
	args      []string
	wantFlags []string // every flag reported, in order; none: valid
}

func runValidation(t *testing.T, newOptions func() command, tests []validationCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := newOptions()
			parse(t, o, tc.args...)
			errs := o.Validate()
			if got := flagsOf(t, errs); !slices.Equal(got, tc.wantFlags) {
				t.Errorf("Validate(%q) reports %q, want %q:\n%v", tc.args, got, tc.wantFlags, errors.Join(errs...))
			}
		})
	}
}

// writeFile writes a file in a fresh temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPodResourcesTimeoutDefault: the default timeout is bounded by the
// interval; a given one is kept (and validated).
func TestPodResourcesTimeoutDefault(t *testing.T) {
	cleanEnv(t)
	for _, tt := range []struct {
		args []string
		want time.Duration
	}{
		{nil, time.Second},
		{[]string{"--pod-resources-interval=200ms"}, 200 * time.Millisecond},
		{[]string{"--pod-resources-interval=5s"}, time.Second},
		{[]string{"--pod-resources-interval=200ms", "--pod-resources-timeout=1s"}, time.Second},
	} {
		o := NewAgent()
		parse(t, o, tt.args...)
		if got := o.Agent.PodResourcesTimeout; got != tt.want {
			t.Errorf("%q: timeout %v, want %v", tt.args, got, tt.want)
		}
	}
}

func TestAgentValidation(t *testing.T) {
	cleanEnv(t)
	missing := filepath.Join(t.TempDir(), "missing")
	kubeconfig := writeFile(t, "kubeconfig", "apiVersion: v1\nkind: Config\n")
	sim := []string{"--backend=sim"}
	with := func(args ...string) []string { return append(slices.Clone(sim), args...) }
	goodCSV := writeFile(t, "good.csv", "# mine\nDCGM_FI_DEV_GPU_TEMP, gauge, GPU temperature (in C).\nDCGM_FI_DRIVER_VERSION, label, Driver Version\n")
	badCSV := writeFile(t, "bad.csv", "DCGM_FI_DEV_GPU_TEMP, gauge, t\nDCGM_FI_DEV_NOPE, gauge, x\nDCGM_EXP_P2P_STATUS, counter, p\nDCGM_FI_DEV_SM_CLOCK, gauge\n")
	unsupportedCSV := writeFile(t, "unsupported.csv", "DCGM_FI_DEV_GPU_TEMP, gauge, t\nDCGM_FI_DEV_NOPE, gauge, x\n")
	runValidation(t, func() command { return NewAgent() }, []validationCase{
		{"defaults", nil, nil},
		{"simulated", sim, nil},
		{"existing kubeconfig", with("--kubeconfig=" + kubeconfig), nil},
		{"backend", []string{"--backend=cuda"}, []string{"backend"}},
		{"sim gpus", with("--sim-gpus=-1"), []string{"sim-gpus"}},
		{"too many sim gpus", with("--sim-gpus=1025"), []string{"sim-gpus"}},
		{"sim gpus ignored with nvml", []string{"--sim-gpus=-1"}, nil},
		{"sim mig with nvml", []string{"--sim-mig=0"}, []string{"sim-mig"}},
		{"sim mig out of range", with("--sim-gpus=2", "--sim-mig=2"), []string{"sim-mig"}},
		{"sim utilization", with("--sim-utilization=42.5"), nil},
		{"sim utilization with nvml", []string{"--sim-utilization=1"}, []string{"sim-utilization"}},
		{"sim utilization over 100", with("--sim-utilization=101"), []string{"sim-utilization"}},
		{"sim utilization negative", with("--sim-utilization=-1"), []string{"sim-utilization"}},
		{"sim utilization NaN", with("--sim-utilization=NaN"), []string{"sim-utilization"}},
		{"node name", with("--node-name="), []string{"node-name"}},
		{"zero sample interval", with("--sample-interval=0s"), []string{"sample-interval"}},
		{"negative sample interval", with("--sample-interval=-1s"), []string{"sample-interval"}},
		{"tiny sample interval", with("--sample-interval=1ns"), []string{"sample-interval"}},
		{"listen address", with("--web.listen-address=nonsense"), []string{"web.listen-address"}},
		{"listen port", with("--web.listen-address=:99999"), []string{"web.listen-address"}},
		{"listen host not an IPv4 address", with("--web.listen-address=999.1.1.1:19556"), []string{"web.listen-address"}},
		{"listen host not a name", with("--web.listen-address=a_b:9400"), []string{"web.listen-address"}},
		{"listen host a name", with("--web.listen-address=localhost:9400"), nil},
		{"listen host IPv6", with("--web.listen-address=[::1]:0"), nil},
		{"listen host any IPv4", with("--web.listen-address=0.0.0.0:9400"), nil},
		{"sample interval above the maximum", with("--sample-interval=1000000h"), []string{"sample-interval"}},
		{"sample interval at the maximum", with("--sample-interval=1h"), nil},
		{"slow sample interval under the sample interval", with("--sample-interval=2s", "--slow-sample-interval=1s"), []string{"slow-sample-interval"}},
		{"slow sample interval negative", with("--slow-sample-interval=-1s"), []string{"slow-sample-interval"}},
		{"slow sample interval above the maximum", with("--slow-sample-interval=2h"), []string{"slow-sample-interval"}},
		{"slow sample interval 0: every round", with("--slow-sample-interval=0"), nil},
		{"slow sample interval equal to the sample interval", with("--sample-interval=5s", "--slow-sample-interval=5s"), nil},
		{"pod resources interval above the maximum", with("--pod-resources-interval=2h"), []string{"pod-resources-interval"}},
		{"pod resources timeout over its interval", with("--pod-resources-timeout=1h"), []string{"pod-resources-timeout"}},
		{"pod resources timeout at its interval", with("--pod-resources-timeout=2s"), nil},
		{"short pod resources interval, timeout defaulted", with("--pod-resources-interval=200ms"), nil},
		{"short pod resources interval, timeout given", with("--pod-resources-interval=200ms", "--pod-resources-timeout=1s"), []string{"pod-resources-timeout"}},
		{"pod resources timeout beside an invalid interval", with("--pod-resources-interval=0s", "--pod-resources-timeout=1h"), []string{"pod-resources-interval"}},
		{"web config", with("--web.config.file=" + missing), []string{"web.config.file"}},
		{"pod resources interval", with("--pod-resources-interval=0s"), []string{"pod-resources-interval"}},
		{"pod resources timeout", with("--pod-resources-timeout=0s"), []string{"pod-resources-timeout"}},
		{"pod resources off", with("--pod-resources-socket=", "--pod-resources-interval=0s", "--pod-resources-timeout=0s"), nil},
		{"resource name", with("--resource-names=gpu"), []string{"resource-names"}},
		{"host proc", []string{"--host-proc=" + missing}, []string{"host-proc"}},
		{"host proc unused by sim", with("--host-proc=" + missing), nil},
		{"host proc unused without attribution", []string{"--process-attribution=false", "--host-proc=" + missing}, nil},
		{"kubeconfig", with("--kubeconfig=" + missing), []string{"kubeconfig"}},
		{"all at once", []string{"--backend=sim", "--sim-gpus=2", "--sim-mig=5", "--sample-interval=0s",
			"--web.listen-address=x", "--pod-resources-timeout=-1s", "--kubeconfig=" + missing},
			[]string{"sim-mig", "sample-interval", "web.listen-address", "pod-resources-timeout", "kubeconfig"}},
		{"no blame from an invalid backend", []string{"--backend=cuda", "--sim-mig=3", "--host-proc=" + missing}, []string{"backend"}},
		{"no blame from invalid sim gpus", with("--sim-gpus=-1", "--sim-mig=0"), []string{"sim-gpus"}},
		{"counters file", with("--collectors=" + goodCSV), nil},
		{"counters file, dcgm-exporter's short flag", with("-f", goodCSV), nil},
		{"counters file missing", with("--collectors=" + missing), []string{"collectors"}},
		{"counters file: one error per line", with("--collectors=" + badCSV), []string{"collectors", "collectors", "collectors"}},
		{"counters file: malformed lines are not skipped", with("--collectors="+badCSV, "--collectors-skip-unsupported"), []string{"collectors"}},
		{"counters file: unsupported fields skipped", with("--collectors="+unsupportedCSV, "--collectors-skip-unsupported"), nil},
		{"hostname label", with("--hostname-label=hostname"), nil},
		{"no hostname label", with("--hostname-label=none"), nil},
		{"hostname label unknown", with("--hostname-label=HOSTNAME"), []string{"hostname-label"}},
		{"authn-authz kubernetes", with("--authn-authz=kubernetes", "--kubeconfig="+kubeconfig), nil},
		{"authn-authz none", with("--authn-authz=none"), nil},
		{"authn-authz unknown", with("--authn-authz=basic"), []string{"authn-authz"}},
		{"authn-authz without an API server", with("--authn-authz=kubernetes"), []string{"authn-authz"}},
		{"authn-authz cache ttl", with("--authn-authz=kubernetes", "--kubeconfig="+kubeconfig, "--authn-authz-cache-ttl=0s"), []string{"authn-authz-cache-ttl"}},
		{"authn-authz timeout", with("--authn-authz-timeout=-1s"), []string{"authn-authz-timeout"}},
	})
}

// TestAgentCounters: the counters file's problems name the file, line and
// field; a valid file becomes the sampler's format and the backend's fields.
func TestAgentCounters(t *testing.T) {
	cleanEnv(t)
	bad := writeFile(t, "bad.csv", "DCGM_FI_DEV_GPU_TEMP, gauge, t\nDCGM_FI_DEV_NOPE, gauge, x\n")
	o := NewAgent()
	parse(t, o, "--backend=sim", "--collectors="+bad)
	errs := o.Validate()
	if len(errs) != 1 || errs[0].Error() != "invalid --collectors: "+bad+":2: DCGM_FI_DEV_NOPE: not a field gpu-metrics-server reads through NVML (docs/metrics.md lists those it reads)" {
		t.Errorf("errors %v", errs)
	}
	good := writeFile(t, "good.csv", "DCGM_FI_DEV_GPU_TEMP, counter, my temperature\n")
	o = NewAgent()
	parse(t, o, "--backend=sim", "-f", good, "--hostname-label=none")
	if errs := o.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	c := o.Agent.Counters()
	if c.Source != good || !c.Fields.Has(exposition.GPUTemp) || c.Fields.Has(exposition.SMClock) || c.Family(exposition.GPUTemp).Help != "my temperature" {
		t.Errorf("counters %+v", c)
	}
	if f := o.Agent.Sampler(nil).Format; f.Fields() != c.Fields || f.Labels() != 0 {
		t.Errorf("format fields %v labels %b", f.Fields(), f.Labels())
	}
	o = NewAgent()
	parse(t, o, "--backend=sim")
	if errs := o.Validate(); len(errs) > 0 || o.Agent.Counters().Source != "built-in" {
		t.Errorf("default counters %v %v", o.Agent.Counters().Source, errs)
	}
}

func TestAggregatorValidation(t *testing.T) {
	cleanEnv(t)
	missing := filepath.Join(t.TempDir(), "missing")
	ok := []string{"--agent-namespace=gms"}
	with := func(args ...string) []string { return append(slices.Clone(ok), args...) }
	runValidation(t, func() command { return NewAggregator() }, []validationCase{
		{"discovery", ok, nil},
		{"static urls only", []string{"--agent-urls=http://10.0.0.1:9400/metrics"}, nil},
		{"nothing to scrape", nil, []string{"agent-namespace"}},
		{"discovery off and nothing else", with("--agent-selector="), []string{"agent-namespace"}},
		{"bad agent selector", with("--agent-selector=app in ("), []string{"agent-selector"}},
		{"agent port", with("--agent-port=0"), []string{"agent-port"}},
		{"agent scheme", with("--agent-scheme=ftp"), []string{"agent-scheme"}},
		{"agent url", []string{"--agent-urls=ftp://node-1:9400/metrics"}, []string{"agent-urls"}},
		{"dcgm without namespace", []string{"--dcgm-exporter-selector=app=nvidia-dcgm-exporter"}, []string{"dcgm-exporter-namespace"}},
		{"bad dcgm selector", []string{"--dcgm-exporter-namespace=gpu-operator", "--dcgm-exporter-selector=a in ("}, []string{"dcgm-exporter-selector"}},
		{"dcgm port", with("--dcgm-exporter-port=70000"), []string{"dcgm-exporter-port"}},
		{"zero interval", with("--scrape-interval=0s"), []string{"scrape-interval"}},
		{"tiny interval", with("--scrape-interval=10ms"), []string{"scrape-interval"}},
		{"timeout above interval", with("--scrape-timeout=3s"), []string{"scrape-timeout"}},
		{"zero timeout", with("--scrape-timeout=0s"), []string{"scrape-timeout"}},
		{"zero body limit", with("--scrape-max-body-bytes=0"), []string{"scrape-max-body-bytes"}},
		{"missing CA file", with("--scrape-ca-file=" + missing), []string{"scrape-ca-file"}},
		{"missing token file", with("--scrape-bearer-token-file=" + missing), []string{"scrape-bearer-token-file"}},
		{"server name of https agents", with("--agent-scheme=https", "--scrape-server-name=gms-agent.gms.svc"), nil},
		{"server name of https static urls", []string{"--agent-urls=https://10.0.0.1:9400/metrics", "--scrape-server-name=agent"}, nil},
		{"server name without https targets", with("--scrape-server-name=gms-agent.gms.svc"), []string{"scrape-server-name"}},
		{"server name of http static urls only", []string{"--agent-urls=http://10.0.0.1:9400/metrics", "--scrape-server-name=agent"}, []string{"scrape-server-name"}},
		{"server name an IP address", with("--agent-scheme=https", "--scrape-server-name=10.0.0.1"), []string{"scrape-server-name"}},
		{"server name not a DNS name", with("--agent-scheme=https", "--scrape-server-name=gms_agent.svc"), []string{"scrape-server-name"}},
		{"server name with a port", with("--agent-scheme=https", "--scrape-server-name=gms-agent:9400"), []string{"scrape-server-name"}},
		{"server name upper case", with("--agent-scheme=https", "--scrape-server-name=GMS-Agent"), []string{"scrape-server-name"}},
		{"window under interval", with("--window=1s"), []string{"window"}},
		{"zero window", with("--window=0s"), []string{"window"}},
		{"window beyond the store", with("--window=5m"), []string{"window"}},
		{"step-up threshold off", with("--step-up-threshold=0"), nil},
		{"step-up threshold negative", with("--step-up-threshold=-1"), []string{"step-up-threshold"}},
		{"step-up threshold above 100", with("--step-up-threshold=101"), []string{"step-up-threshold"}},
		{"step-up threshold not a number", with("--step-up-threshold=NaN"), []string{"step-up-threshold"}},
		{"stale-after under interval", with("--stale-after=3s"), []string{"stale-after"}},
		{"negative stale-after", with("--stale-after=-1s"), []string{"stale-after"}},
		{"secure port", with("--secure-port=0"), []string{"secure-port"}},
		{"audit log age", with("--audit-log-path=-", "--audit-log-maxage=-1"), []string{"audit-log-maxage"}},
		{"audit log format", with("--audit-log-path=-", "--audit-log-format=xml"), []string{"audit-*"}},
		{"missing kubeconfig", with("--kubeconfig=" + missing), []string{"kubeconfig"}},
		{"all at once", with("--agent-port=0", "--scrape-timeout=0s", "--window=0s", "--stale-after=-1s",
			"--secure-port=70000", "--kubeconfig="+missing),
			[]string{"agent-port", "scrape-timeout", "window", "stale-after", "kubeconfig", "secure-port"}},
		// An invalid interval is reported once, not again through the
		// values derived from it or checked against it.
		{"derived from an invalid interval", with("--scrape-interval=-2s"), []string{"scrape-interval"}},
		{"given beside an invalid interval", with("--scrape-interval=0s", "--scrape-timeout=5s", "--window=1s", "--stale-after=1s"), []string{"scrape-interval"}},
		{"invalid beside an invalid interval", with("--scrape-interval=0s", "--scrape-timeout=-1s", "--window=-1s", "--stale-after=0s"),
			[]string{"scrape-interval", "scrape-timeout", "window", "stale-after"}},
	})
}

func TestStandaloneValidation(t *testing.T) {
	cleanEnv(t)
	missing := filepath.Join(t.TempDir(), "missing")
	kubeconfig := writeFile(t, "kubeconfig", "apiVersion: v1\nkind: Config\n")
	sim := []string{"--backend=sim"}
	with := func(args ...string) []string { return append(slices.Clone(sim), args...) }
	runValidation(t, func() command { return NewStandalone() }, []validationCase{
		{"the demo", sim, nil},
		{"the demo on any free port", with("--secure-port=0", "--web.listen-address=127.0.0.1:0"), nil},
		{"nvml in a cluster given by kubeconfig", []string{"--kubeconfig=" + kubeconfig}, nil},
		{"nvml without a cluster", nil, []string{"kubeconfig"}},
		{"missing kubeconfig", []string{"--kubeconfig=" + missing}, []string{"kubeconfig"}},
		{"agent flag", with("--sample-interval=0s"), []string{"sample-interval"}},
		{"sim pods without namespace", with("--sim-pods=nonamespace"), []string{"sim-pods"}},
		{"sim pods twice", with("--sim-pods=a/b,a/b"), []string{"sim-pods"}},
		{"sim pods with nvml", []string{"--kubeconfig=" + kubeconfig, "--sim-pods=a/b"}, []string{"sim-pods"}},
		{"sim pods without GPUs", with("--sim-gpus=0", "--sim-pods=a/b"), []string{"sim-pods"}},
		{"window under the sample interval", with("--sample-interval=2s", "--window=1s"), []string{"window"}},
		{"window beyond the store", with("--sample-interval=100ms", "--window=15s"), []string{"window"}},
		{"zero window", with("--window=0s"), []string{"window"}},
		{"stale-after under the sample interval", with("--stale-after=1s"), []string{"stale-after"}},
		{"negative stale-after", with("--stale-after=-1s"), []string{"stale-after"}},
		{"bind address off loopback without authentication", with("--bind-address=0.0.0.0"), []string{"bind-address"}},
		{"secure port out of range", with("--secure-port=70000"), []string{"secure-port"}},
		{"missing TLS certificate", with("--tls-cert-file="+missing, "--tls-private-key-file="+missing), []string{"tls-cert-file", "tls-private-key-file"}},
		{"TLS certificate without its key", with("--tls-cert-file=" + kubeconfig), []string{"tls-private-key-file"}},
		{"TLS key without its certificate", with("--tls-private-key-file=" + kubeconfig), []string{"tls-cert-file"}},
		{"TLS certificate a directory", with("--tls-cert-file="+filepath.Dir(missing), "--tls-private-key-file="+kubeconfig), []string{"tls-cert-file"}},
		{"missing client CA", with("--client-ca-file=" + missing), []string{"client-ca-file"}},
		{"missing request-header CA", with("--requestheader-client-ca-file=" + missing), []string{"requestheader-client-ca-file"}},
		{"all at once", with("--sim-pods=x", "--window=0s", "--stale-after=-1s", "--bind-address=0.0.0.0", "--pod-resources-interval=1ms"),
			[]string{"pod-resources-interval", "sim-pods", "window", "stale-after", "bind-address"}},
	})
}

// TestScrapeTLSConfig: the scrape's TLS flags reach the scraper's
// configuration.
func TestScrapeTLSConfig(t *testing.T) {
	cleanEnv(t)
	ca := writeFile(t, "ca.crt", testCAPEM(t))
	o := NewAggregator()
	parse(t, o, "--agent-namespace=gms", "--agent-scheme=https", "--scrape-ca-file="+ca, "--scrape-server-name=gms-agent.gms.svc")
	if errs := o.Validate(); len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	if c := o.Scrape.Config(); c.CAFile != ca || c.ServerName != "gms-agent.gms.svc" {
		t.Errorf("scrape config %+v", c)
	}
}

func TestAggregatorDefaults(t *testing.T) {
	cleanEnv(t)
	t.Setenv("POD_NAMESPACE", "gms")
	kubeconfig := writeFile(t, "kubeconfig", "apiVersion: v1\nkind: Config\n")
	tests := []struct {
		name              string
		args              []string
		timeout, staleAft time.Duration
	}{
		{"defaults", nil, 1800 * time.Millisecond, 6 * time.Second},
		{"from the interval", []string{"--scrape-interval=10s", "--window=30s"}, 9 * time.Second, 30 * time.Second},
		{"explicit", []string{"--scrape-timeout=1s", "--stale-after=20s"}, time.Second, 20 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := NewAggregator()
			parse(t, o, append(tc.args, "--kubeconfig="+kubeconfig)...)
			if errs := o.Validate(); len(errs) > 0 {
				t.Fatal(errors.Join(errs...))
			}
			if d := o.Scrape.Discovery(); len(d) != 1 || d[0].Kind != "agent" || d[0].Namespace != "gms" ||
				!slices.Equal(d[0].Families, exposition.ReadFamilies()) {
				t.Errorf("discovery %+v, want the agents in $POD_NAMESPACE, asked for the families read", d)
			}
			if o.Scrape.Timeout != tc.timeout || o.Store.StaleAfter != tc.staleAft {
				t.Errorf("timeout %v, stale-after %v; want %v, %v", o.Scrape.Timeout, o.Store.StaleAfter, tc.timeout, tc.staleAft)
			}
			if c := o.Store.Config(); c.FeedInterval != o.Scrape.Interval || c.StaleAfter != tc.staleAft {
				t.Errorf("store config %+v: not fed every scrape interval", c)
			}
			if o.Serving.Authentication.RemoteKubeConfigFile != kubeconfig || o.Serving.Authorization.RemoteKubeConfigFile != kubeconfig {
				t.Error("--kubeconfig is not the default of the delegated authentication and authorization kubeconfigs")
			}
			if o.Serving.SecureServing.BindPort != 6443 || o.Scrape.MaxBodyBytes != 4<<20 {
				t.Errorf("secure port %d, body limit %d; want 6443 and 4MiB", o.Serving.SecureServing.BindPort, o.Scrape.MaxBodyBytes)
			}
			if o.Store.StepUp != 10 {
				t.Errorf("step-up threshold %v, want 10", o.Store.StepUp)
			}
		})
	}
}

// TestStaticTargetsAskForTheFamiliesRead: --agent-urls without a query of
// their own ask for the families the aggregator reads.
func TestStaticTargetsAskForTheFamiliesRead(t *testing.T) {
	cleanEnv(t)
	o := NewAggregator()
	parse(t, o, "--agent-urls=http://10.0.0.1:9400,http://10.0.0.2:9400/metrics?x=1")
	if errs := o.Validate(); len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	st, err := o.Scrape.StaticTargets()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"http://10.0.0.1:9400/metrics?" + url.Values{exposition.FamilyParam: exposition.ReadFamilies()}.Encode(), "http://10.0.0.2:9400/metrics?x=1"}
	if len(st) != 2 || st[0].URL != want[0] || st[1].URL != want[1] {
		t.Errorf("targets %+v, want URLs %q", st, want)
	}
}

func TestAuthKubeconfigsKeptWhenGiven(t *testing.T) {
	cleanEnv(t)
	kubeconfig := writeFile(t, "kubeconfig", "apiVersion: v1\nkind: Config\n")
	o := NewAggregator()
	parse(t, o, "--agent-namespace=gms", "--kubeconfig="+kubeconfig, "--authentication-kubeconfig=/a", "--authorization-kubeconfig=/b")
	if a, b := o.Serving.Authentication.RemoteKubeConfigFile, o.Serving.Authorization.RemoteKubeConfigFile; a != "/a" || b != "/b" {
		t.Errorf("authentication %q, authorization %q: the explicit kubeconfigs were replaced", a, b)
	}
}

func TestStandaloneSimPods(t *testing.T) {
	cleanEnv(t)
	// A socket where a kubelet would answer.
	dir, err := os.MkdirTemp("", "gms-opt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "kubelet.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	kubeconfig := writeFile(t, "kubeconfig", "apiVersion: v1\nkind: Config\n")

	tests := []struct {
		name     string
		args     []string
		wantPods []string
		wantApp  string
	}{
		{"the demo's by default", []string{"--backend=sim", "--sim-gpus=3"},
			[]string{"demo/gpu-app-0", "demo/gpu-app-1", "demo/gpu-app-2"}, "gpu-app"},
		{"no socket flag", []string{"--backend=sim", "--pod-resources-socket="},
			[]string{"demo/gpu-app-0", "demo/gpu-app-1"}, "gpu-app"},
		{"given", []string{"--backend=sim", "--sim-pods=ns/x-0"}, []string{"ns/x-0"}, "x"},
		{"explicitly none", []string{"--backend=sim", "--sim-pods="}, nil, ""},
		{"a kubelet answers", []string{"--backend=sim", "--pod-resources-socket=" + sock}, nil, ""},
		{"real GPUs", []string{"--kubeconfig=" + kubeconfig}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := NewStandalone()
			parse(t, o, tc.args...)
			if errs := o.Validate(); len(errs) > 0 {
				t.Fatal(errors.Join(errs...))
			}
			if !slices.Equal(o.SimPods.Pods, tc.wantPods) {
				t.Errorf("pods %q, want %q", o.SimPods.Pods, tc.wantPods)
			}
			pods, err := o.SimPods.Config()
			if err != nil {
				t.Fatal(err)
			}
			if len(pods) != len(tc.wantPods) || (len(pods) > 0 && pods[0].Labels["app"] != tc.wantApp) {
				t.Errorf("config %+v, want %d pods labelled app=%s", pods, len(tc.wantPods), tc.wantApp)
			}
		})
	}
}

// TestValidateBindsNothing: --secure-port=0 is validated without a
// listener; the free port is bound when the configuration is built.
func TestValidateBindsNothing(t *testing.T) {
	cleanEnv(t)
	o := NewStandalone()
	parse(t, o, "--backend=sim", "--secure-port=0")
	if !o.Serving.InsecureLoopback {
		t.Fatal("the simulated demo outside a cluster is not served on loopback without authentication")
	}
	for range 2 {
		if errs := o.Validate(); len(errs) > 0 {
			t.Fatal(errors.Join(errs...))
		}
	}
	if ss := o.Serving.SecureServing; ss.Listener != nil || ss.BindPort != 0 {
		t.Fatalf("validation bound a port: listener %v, port %d", ss.Listener, ss.BindPort)
	}
	c, err := o.Serving.Config()
	if err != nil {
		t.Fatal(err)
	}
	ss := c.SecureServing
	t.Cleanup(func() { ss.Listener.Close() })
	if ss.Listener == nil || ss.BindPort == 0 || ss.Listener.Addr().(*net.TCPAddr).Port != ss.BindPort {
		t.Fatalf("config: listener %v, port %d; want the bound free port", ss.Listener, ss.BindPort)
	}
	if errs := o.Validate(); len(errs) > 0 {
		t.Fatalf("invalid once bound: %v", errors.Join(errs...))
	}
}

func TestHelpSections(t *testing.T) {
	cleanEnv(t)
	for name, o := range map[string]command{"agent": NewAgent(), "aggregator": NewAggregator(), "standalone": NewStandalone()} {
		t.Run(name, func(t *testing.T) {
			fss := o.Flags()
			seen := map[string]string{}
			for _, section := range fss.Order {
				fss.FlagSets[section].VisitAll(func(f *pflag.Flag) {
					if prev, ok := seen[f.Name]; ok {
						t.Errorf("--%s in sections %q and %q", f.Name, prev, section)
					}
					seen[f.Name] = section
				})
			}
			// Ours first: custom-metrics-apiserver's sections last.
			ours := true
			for _, section := range fss.Order {
				theirs := slices.Contains([]string{sectionServing, sectionAuthn, sectionAuthz, sectionAudit, sectionFeatures}, section)
				if !theirs && !ours {
					t.Errorf("section %q after custom-metrics-apiserver's: %q", section, fss.Order)
				}
				ours = ours && !theirs
			}
		})
	}
}

func TestByteSize(t *testing.T) {
	good := map[string]int64{
		"4MiB": 4 << 20, "512KiB": 512 << 10, "4Mi": 4 << 20, "1GiB": 1 << 30, "1MB": 1000000,
		"2kB": 2000, "100": 100, "100B": 100, " 2 MiB ": 2 << 20,
	}
	for in, want := range good {
		var b ByteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "abc", "-1", "1.5MiB", "MiB", "9999999999GiB"} {
		var b ByteSize
		if err := b.Set(in); err == nil {
			t.Errorf("Set(%q) accepted (%d)", in, b)
		}
	}
	for v, want := range map[ByteSize]string{4 << 20: "4MiB", 3 << 10: "3KiB", 1000: "1000", 0: "0"} {
		if got := v.String(); got != want {
			t.Errorf("String(%d) = %q, want %q", int64(v), got, want)
		}
	}
}
