//go:build e2e

package framework

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"testing"
	"time"
)

// AnonymousClient is an HTTP client that verifies servers against the
// cluster CA and presents no certificate (a caller that authenticates with
// a bearer token, or not at all). It keeps up to idlePerHost connections
// to each server between requests.
func (cp *ControlPlane) AnonymousClient(t testing.TB, timeout time.Duration, idlePerHost int) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(cp.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no PEM certificate", cp.CAFile())
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: idlePerHost,
	}}
}
