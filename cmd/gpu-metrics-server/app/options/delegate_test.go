package options

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/delegate"
)

// testCAPEM is a self-signed CA certificate in PEM.
func testCAPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestDelegateValidation(t *testing.T) {
	cleanEnv(t)
	missing := filepath.Join(t.TempDir(), "missing")
	ca := writeFile(t, "ca.crt", testCAPEM(t))
	notPEM := writeFile(t, "not.pem", "hello")
	token := writeFile(t, "token", "abc\n")
	empty := writeFile(t, "empty", " \n")
	ok := []string{"--agent-namespace=gms"}
	with := func(args ...string) []string { return append(slices.Clone(ok), args...) }
	to := func(args ...string) []string {
		return with(append([]string{"--delegate-to=monitoring/prometheus-adapter:443"}, args...)...)
	}
	runValidation(t, func() command { return NewAggregator() }, []validationCase{
		{"no delegate", ok, nil},
		{"service", to(), nil},
		{"service without port", with("--delegate-to=monitoring/prometheus-adapter"), nil},
		{"url", with("--delegate-to=https://adapter.example.com:6443"), nil},
		{"everything", to("--delegate-ca-file="+ca, "--delegate-bearer-token-file="+token, "--delegate-timeout=30s", "--delegate-discovery-interval=1m"), nil},
		{"insecure", to("--delegate-insecure-skip-tls-verify"), nil},
		{"malformed", with("--delegate-to=prometheus-adapter"), []string{"delegate-to"}},
		{"plain http", with("--delegate-to=http://adapter:6443"), []string{"delegate-to"}},
		{"a path", with("--delegate-to=https://adapter:6443/apis"), []string{"delegate-to"}},
		{"bad port", with("--delegate-to=monitoring/prometheus-adapter:0"), []string{"delegate-to"}},
		{"missing CA", to("--delegate-ca-file=" + missing), []string{"delegate-ca-file"}},
		{"CA not PEM", to("--delegate-ca-file=" + notPEM), []string{"delegate-ca-file"}},
		{"CA and insecure", to("--delegate-ca-file="+ca, "--delegate-insecure-skip-tls-verify"), []string{"delegate-insecure-skip-tls-verify"}},
		{"missing token", to("--delegate-bearer-token-file=" + missing), []string{"delegate-bearer-token-file"}},
		{"empty token", to("--delegate-bearer-token-file=" + empty), []string{"delegate-bearer-token-file"}},
		{"zero timeout", to("--delegate-timeout=0s"), []string{"delegate-timeout"}},
		{"timeout over a minute", to("--delegate-timeout=2m"), []string{"delegate-timeout"}},
		{"tiny discovery interval", to("--delegate-discovery-interval=100ms"), []string{"delegate-discovery-interval"}},
		{"flags without a delegate", with("--delegate-ca-file="+ca, "--delegate-timeout=5s", "--delegate-insecure-skip-tls-verify=false"),
			[]string{"delegate-ca-file", "delegate-insecure-skip-tls-verify", "delegate-timeout"}},
		{"all at once", with("--delegate-to=https://a:0", "--delegate-ca-file="+missing, "--delegate-timeout=-1s", "--window=0s", "--secure-port=70000"),
			[]string{"window", "delegate-to", "delegate-ca-file", "delegate-timeout", "secure-port"}},
	})
}

func TestDelegateConfig(t *testing.T) {
	cleanEnv(t)
	token := writeFile(t, "token", "abc")
	o := NewAggregator()
	parse(t, o, "--agent-namespace=gms", "--delegate-to=monitoring/prometheus-adapter", "--delegate-insecure-skip-tls-verify",
		"--delegate-bearer-token-file="+token, "--delegate-timeout=3s")
	if errs := o.Validate(); len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	if !o.Delegate.Enabled() {
		t.Fatal("not enabled")
	}
	cfg, tc, err := o.Delegate.Config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Target.String() != "monitoring/prometheus-adapter:443" || cfg.Timeout != 3*time.Second || cfg.DiscoveryInterval != delegate.DefaultDiscoveryInterval {
		t.Errorf("config %+v", cfg)
	}
	if tc.Target.String() != cfg.Target.String() || !tc.InsecureSkipTLSVerify || tc.BearerTokenFile != token || tc.CAFile != "" {
		t.Errorf("transport config %+v", tc)
	}
	if NewAggregator().Delegate.Enabled() {
		t.Error("a delegate by default")
	}
}
