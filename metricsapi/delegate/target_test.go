package delegate

import (
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in      string
		service string // ServiceRef.String(), or "" for a URL target
		url     string // the target URL
		err     string // substring of the error; "" for success
	}{
		{in: "monitoring/prometheus-adapter:443", service: "monitoring/prometheus-adapter:443", url: "https://prometheus-adapter.monitoring.svc:443"},
		{in: "monitoring/prometheus-adapter", service: "monitoring/prometheus-adapter:443", url: "https://prometheus-adapter.monitoring.svc:443"},
		{in: "kube-system/custom-metrics-apiserver:6443", service: "kube-system/custom-metrics-apiserver:6443", url: "https://custom-metrics-apiserver.kube-system.svc:6443"},
		{in: "https://adapter.example.com", url: "https://adapter.example.com"},
		{in: "https://adapter.example.com:8443/", url: "https://adapter.example.com:8443"},
		{in: "https://127.0.0.1:6443", url: "https://127.0.0.1:6443"},
		{in: "https://[::1]:6443", url: "https://[::1]:6443"},
		{in: "", err: "empty"},
		{in: "prometheus-adapter", err: "want namespace/service"},
		{in: "monitoring/", err: "service"},
		{in: "/prometheus-adapter", err: "namespace"},
		{in: "Monitoring/prometheus-adapter", err: "namespace"},
		{in: "monitoring/1adapter", err: "service"},
		{in: "monitoring/prometheus-adapter:0", err: "port"},
		{in: "monitoring/prometheus-adapter:65536", err: "port"},
		{in: "monitoring/prometheus-adapter:https", err: "port"},
		{in: "monitoring/prometheus-adapter:", err: "port"},
		{in: "monitoring/a/b", err: "service"},
		{in: "http://adapter:6443", err: "https"},
		{in: "https://", err: "no host"},
		{in: "https://:6443", err: "no host"},
		{in: "https://user:pw@adapter:6443", err: "user information"},
		{in: "https://adapter:6443/apis", err: "only https://host"},
		{in: "https://adapter:6443?x=1", err: "only https://host"},
		{in: "https://adapter:6443#x", err: "only https://host"},
		{in: "https://adapter:99999", err: "port"},
		{in: "https://adapter:", err: "empty port"},
		{in: "https://ad apter", err: "invalid"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTarget(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseTarget(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseTarget(%q): %v", tc.in, err)
			}
			if got.URL.String() != tc.url {
				t.Errorf("URL %s, want %s", got.URL, tc.url)
			}
			switch {
			case tc.service == "" && got.Service != nil:
				t.Errorf("Service %v for a URL target", got.Service)
			case tc.service != "" && (got.Service == nil || got.Service.String() != tc.service):
				t.Errorf("Service %v, want %s", got.Service, tc.service)
			}
			if tc.service != "" && got.String() != tc.service || tc.service == "" && got.String() != tc.url {
				t.Errorf("String() = %q", got.String())
			}
		})
	}
}

// FuzzParseTarget: no input panics; an accepted target is an https URL with
// a host and nothing after it, and a Service target parses back from its
// String and names its URL's host.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"monitoring/prometheus-adapter:443", "ns/svc", "https://h:1", "https://[::1]:6443/", "http://x", "a/b:c", "https://u@h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTarget(s)
		if err != nil {
			return
		}
		u := got.URL
		if u == nil || u.Scheme != "https" || u.Hostname() == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
			t.Fatalf("ParseTarget(%q) accepted %v", s, u)
		}
		if got.Service != nil {
			again, err := ParseTarget(got.Service.String())
			if err != nil || *again.Service != *got.Service {
				t.Fatalf("%q: %v does not parse back: %v, %v", s, got.Service, again.Service, err)
			}
			if u.Hostname() != got.Service.Host() || got.Service.Port < 1 {
				t.Fatalf("%q: URL %v for Service %v", s, u, got.Service)
			}
		}
	})
}
