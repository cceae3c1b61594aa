package app

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// parseAggregator parses args into completed options, as the command does
// before validating.
func parseAggregator(t *testing.T, args ...string) *aggregatorOptions {
	t.Helper()
	cmd := NewAggregatorCommand()
	o := newAggregatorOptions()
	cmd.ResetFlags()
	o.addFlags(cmd.Flags())
	if err := cmd.Flags().Parse(args); err != nil {
		t.Fatalf("parsing %q: %v", args, err)
	}
	o.complete(cmd.Flags())
	return o
}

func TestAggregatorFlagValidation(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	ok := []string{"--agent-namespace=gms"}
	tests := []struct {
		name     string
		args     []string
		wantFlag string
	}{
		{"nothing to scrape", nil, "agent-namespace"},
		{"discovery off and nothing else", []string{"--agent-namespace=gms", "--agent-selector="}, "agent-namespace"},
		{"bad agent selector", append(ok, "--agent-selector=app in ("), "agent-selector"},
		{"agent port", append(ok, "--agent-port=0"), "agent-port"},
		{"agent scheme", append(ok, "--agent-scheme=ftp"), "agent-scheme"},
		{"agent url", []string{"--agent-urls=ftp://node-1:9400/metrics"}, "agent-urls"},
		{"dcgm without namespace", []string{"--dcgm-exporter-selector=app=nvidia-dcgm-exporter"}, "dcgm-exporter-namespace"},
		{"bad dcgm selector", []string{"--dcgm-exporter-namespace=gpu-operator", "--dcgm-exporter-selector=a in ("}, "dcgm-exporter-selector"},
		{"dcgm port", append(ok, "--dcgm-exporter-port=70000"), "dcgm-exporter-port"},
		{"zero interval", append(ok, "--scrape-interval=0s"), "scrape-interval"},
		{"timeout above interval", append(ok, "--scrape-timeout=3s"), "scrape-timeout"},
		{"zero timeout", append(ok, "--scrape-timeout=0s"), "scrape-timeout"},
		{"zero body limit", append(ok, "--scrape-max-body-bytes=0"), "scrape-max-body-bytes"},
		{"missing CA file", append(ok, "--scrape-ca-file="+missing), "scrape-ca-file"},
		{"missing token file", append(ok, "--scrape-bearer-token-file="+missing), "scrape-bearer-token-file"},
		{"window under interval", append(ok, "--window=1s"), "window"},
		{"stale-after under interval", append(ok, "--stale-after=1s"), "stale-after"},
		{"secure port", append(ok, "--secure-port=0"), "secure-port"},
		{"missing kubeconfig", append(ok, "--kubeconfig="+missing), "kubeconfig"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := parseAggregator(t, tc.args...).validate()
			var fe *FlagError
			if !errors.As(err, &fe) || fe.Flag != tc.wantFlag {
				t.Fatalf("validate(%q) = %v, want a FlagError for --%s", tc.args, err, tc.wantFlag)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "invalid --"+tc.wantFlag+": ") || strings.Contains(msg, "\n") {
				t.Errorf("message %q is not one line naming the flag", msg)
			}
		})
	}
}

func TestAggregatorCommandRejectsFlagsBeforeRunning(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	cmd := NewAggregatorCommand()
	cmd.SetArgs([]string{"--agent-urls=http://10.0.0.1:9400/metrics", "--window=500ms"})
	err := cmd.Execute()
	var fe *FlagError
	if !errors.As(err, &fe) || fe.Flag != "window" {
		t.Errorf("Execute = %v, want a FlagError for --window", err)
	}
}

func TestAggregatorDefaults(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "gms")
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		args          []string
		timeout, stle time.Duration
	}{
		{"defaults", nil, 1800 * time.Millisecond, 6 * time.Second},
		{"from the interval", []string{"--scrape-interval=10s", "--window=30s"}, 9 * time.Second, 30 * time.Second},
		{"explicit", []string{"--scrape-timeout=1s", "--stale-after=20s"}, time.Second, 20 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := parseAggregator(t, append(tc.args, "--kubeconfig="+kubeconfig)...)
			if err := o.validate(); err != nil {
				t.Fatal(err)
			}
			if o.AgentNamespace != "gms" || !o.agentDiscovery() {
				t.Errorf("agent namespace %q (discovery %v), want $POD_NAMESPACE with discovery on", o.AgentNamespace, o.agentDiscovery())
			}
			if o.ScrapeTimeout != tc.timeout || o.StaleAfter != tc.stle {
				t.Errorf("timeout %v, stale-after %v; want %v, %v", o.ScrapeTimeout, o.StaleAfter, tc.timeout, tc.stle)
			}
			if o.Serving.Authentication.RemoteKubeConfigFile != kubeconfig || o.Serving.Authorization.RemoteKubeConfigFile != kubeconfig {
				t.Error("--kubeconfig is not the default of the delegated authentication and authorization kubeconfigs")
			}
			if o.Serving.SecureServing.BindPort != 6443 || o.MaxBodyBytes != 4<<20 {
				t.Errorf("secure port %d, body limit %d; want 6443 and 4MiB", o.Serving.SecureServing.BindPort, o.MaxBodyBytes)
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
		var b byteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "abc", "-1", "1.5MiB", "MiB", "9999999999GiB"} {
		var b byteSize
		if err := b.Set(in); err == nil {
			t.Errorf("Set(%q) accepted (%d)", in, b)
		}
	}
	for v, want := range map[byteSize]string{4 << 20: "4MiB", 3 << 10: "3KiB", 1000: "1000", 0: "0"} {
		if got := v.String(); got != want {
			t.Errorf("String(%d) = %q, want %q", int64(v), got, want)
		}
	}
}
