package scrape

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
)

// testAuthority is a throwaway CA.
type testAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // its certificate, PEM
}

func newTestAuthority(t *testing.T, name string) *testAuthority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), name+".crt")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testAuthority{cert: cert, key: key, file: file}
}

// serverCert is a serving certificate of the CA naming only dnsName: no IP
// address, as the chart issues the agents'.
func (ca *testAuthority) serverCert(t *testing.T, dnsName string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestServerName scrapes, by its IP address, an https target whose
// certificate names only a DNS name: it verifies with that name as
// Config.ServerName and the CA that signed it, and fails, as a counted
// connect error that stores nothing, without the name, with another name
// or with another CA.
func TestServerName(t *testing.T) {
	const name = "gms-agent.gms.svc"
	ca := newTestAuthority(t, "agents-ca")
	other := newTestAuthority(t, "other-ca")
	srv := httptest.NewUnstartedServer(body(readTestdata(t, "agent.prom")))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.serverCert(t, name)}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)

	tests := []struct {
		name       string
		caFile     string
		serverName string
		ok         bool
	}{
		{"the CA and the certificate's name", ca.file, name, true},
		{"no server name: the IP address is verified", ca.file, "", false},
		{"another name", ca.file, "gms-agent.other.svc", false},
		{"another CA", other.file, name, false},
		{"the system roots", "", name, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			targets, err := NewStaticTargets([]string{srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			cfg := generous(1 << 20)
			cfg.CAFile, cfg.ServerName = tc.caFile, tc.serverName
			st := newTestStore(t)
			s, err := New(cfg, targets, st)
			if err != nil {
				t.Fatal(err)
			}
			s.round(context.Background())
			// Counted before WithLabelValues below makes the series.
			if n, want := promtest.CollectAndCount(s.metrics.errors), map[bool]int{true: 0, false: 1}[tc.ok]; n != want {
				t.Errorf("%d error series, want %d", n, want)
			}
			errs := promtest.ToFloat64(s.metrics.errors.WithLabelValues(srv.URL, reasonConnect))
			_, stored := st.PodValue(store.Utilization, "ml", "trainer-0", time.Now())
			if tc.ok && (errs != 0 || !stored) {
				t.Errorf("errors{reason=connect} = %v, pod stored %v; want 0 and stored", errs, stored)
			}
			if !tc.ok && (errs != 1 || stored) {
				t.Errorf("errors{reason=connect} = %v, pod stored %v; want 1 and nothing stored", errs, stored)
			}
		})
	}
}

// TestCAFileReread: a CA replaced in the CA file is trusted for new
// connections without a new scraper (a Secret the kubelet updates), and a
// file that stops holding a CA keeps the last one.
func TestCAFileReread(t *testing.T) {
	const name = "gms-agent.gms.svc"
	first, second := newTestAuthority(t, "first-ca"), newTestAuthority(t, "second-ca")
	var serving atomic.Pointer[tls.Certificate]
	cert := first.serverCert(t, name)
	serving.Store(&cert)
	srv := httptest.NewUnstartedServer(body(readTestdata(t, "agent.prom")))
	srv.TLS = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serving.Load(), nil }}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	caFile := filepath.Join(t.TempDir(), "ca.crt")
	copyFile := func(from string) {
		t.Helper()
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(caFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(first.file)
	targets, err := NewStaticTargets([]string{srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	cfg := generous(1 << 20)
	cfg.CAFile, cfg.ServerName = caFile, name
	s, err := New(cfg, targets, newTestStore(t))
	if err != nil {
		t.Fatal(err)
	}
	s.client.ca.interval = 0 // read the file at every handshake

	steps := []struct {
		name   string
		change func()
	}{
		{"the first CA", func() {}},
		{"both replaced", func() {
			c := second.serverCert(t, name)
			serving.Store(&c)
			copyFile(second.file)
		}},
		{"the file emptied: the second CA kept", func() {
			if err := os.WriteFile(caFile, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, step := range steps {
		step.change()
		srv.CloseClientConnections() // a fresh handshake
		s.round(context.Background())
		if n := promtest.CollectAndCount(s.metrics.errors); n != 0 {
			t.Fatalf("%s: %d error series, want none", step.name, n)
		}
	}
}
