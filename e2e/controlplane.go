//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// hpaSyncPeriod is the HPA controller's resync period: the granularity of
// every scaling decision the scenarios wait for. A variable so that the
// benchmark build (tag benchcompare) can run the controller's default.
var hpaSyncPeriod = 5 * time.Second

const (
	// startTimeout bounds the start of each control-plane component.
	startTimeout = 90 * time.Second
	// logTailLines is how much of each component's log a failure prints.
	logTailLines = 40
)

// Environment variables that configure the run.
const (
	// envControlPlaneDir names a directory holding kube-apiserver and
	// kube-controller-manager; unset, hack/build-control-plane.sh builds
	// (or finds in its cache) the pinned version.
	envControlPlaneDir = "GMS_CONTROL_PLANE_DIR"
	// envEtcd is the etcd binary; unset, etcd is looked up on PATH.
	envEtcd = "GMS_ETCD"
	// envKeep keeps the run directory (certificates, kubeconfig, logs)
	// instead of removing it.
	envKeep = "GMS_E2E_KEEP"
)

// plainHTTP is the client for the plain-HTTP endpoints (etcd's health,
// the agents); no request may hang a test.
var plainHTTP = &http.Client{Timeout: 5 * time.Second}

// cluster is the control plane every test of the package runs against;
// TestMain starts it.
var cluster *controlPlane

// kcmControllers are the only controllers the scenarios need: service
// accounts and their tokens (pods and the per-controller credentials),
// Deployments and ReplicaSets (the workload), and the HPA.
var kcmControllers = []string{
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"deployment-controller",
	"replicaset-controller",
	"horizontal-pod-autoscaler-controller",
}

// controlPlaneBinaries locates the executables to run.
type controlPlaneBinaries struct {
	etcd, apiserver, controllerManager string
}

// controlPlane is a running etcd + kube-apiserver + kube-controller-manager
// on loopback.
type controlPlane struct {
	dir    string // certificates, kubeconfigs, etcd data
	logDir string

	ca        *authority // serving and client CA
	adminCert keyPair
	// kubeconfig is an admin (system:masters) kubeconfig for kubectl and
	// for the project's components.
	kubeconfig string
	config     *rest.Config
	client     kubernetes.Interface

	etcd, apiserver, controllerManager *process
}

// startControlPlane generates the certificates and starts the three
// components, each waited on until it serves. On error, whatever was
// started is stopped.
func startControlPlane(ctx context.Context, bins controlPlaneBinaries, dir string) (cp *controlPlane, err error) {
	cp = &controlPlane{dir: dir, logDir: filepath.Join(dir, "logs")}
	defer func() {
		if err != nil {
			cp.stop()
		}
	}()
	for _, d := range []string{cp.logDir, filepath.Join(dir, "pki"), filepath.Join(dir, "etcd")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return cp, err
		}
	}
	pki := filepath.Join(dir, "pki")

	cp.ca, err = newAuthority(pki, "ca")
	if err != nil {
		return cp, err
	}
	frontProxyCA, err := newAuthority(pki, "front-proxy-ca")
	if err != nil {
		return cp, err
	}
	ports, err := freePorts(4)
	if err != nil {
		return cp, err
	}
	etcdClientPort, etcdPeerPort, apiserverPort, kcmPort := ports[0], ports[1], ports[2], ports[3]

	serving, err := cp.ca.issue(pki, "apiserver", certSpec{
		commonName: "kube-apiserver",
		dnsNames:   []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		ips:        []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
		server:     true,
	})
	if err != nil {
		return cp, err
	}
	cp.adminCert, err = cp.ca.issue(pki, "admin", certSpec{
		commonName: "gms-e2e-admin", organizations: []string{"system:masters"}, client: true,
	})
	if err != nil {
		return cp, err
	}
	kcmCert, err := cp.ca.issue(pki, "kube-controller-manager", certSpec{
		commonName: "system:kube-controller-manager", client: true,
	})
	if err != nil {
		return cp, err
	}
	proxyClient, err := frontProxyCA.issue(pki, "front-proxy-client", certSpec{
		commonName: "front-proxy-client", client: true,
	})
	if err != nil {
		return cp, err
	}
	saKey, err := newServiceAccountKey(pki)
	if err != nil {
		return cp, err
	}

	apiserverURL := "https://127.0.0.1:" + strconv.Itoa(apiserverPort)
	cp.kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := writeKubeconfig(cp.kubeconfig, apiserverURL, cp.ca.certFile, cp.adminCert); err != nil {
		return cp, err
	}
	kcmKubeconfig := filepath.Join(dir, "kube-controller-manager.kubeconfig")
	if err := writeKubeconfig(kcmKubeconfig, apiserverURL, cp.ca.certFile, kcmCert); err != nil {
		return cp, err
	}
	cp.config = &rest.Config{
		Host: apiserverURL,
		TLSClientConfig: rest.TLSClientConfig{
			CAFile: cp.ca.certFile, CertFile: cp.adminCert.certFile, KeyFile: cp.adminCert.keyFile,
		},
		QPS:   100,
		Burst: 200,
	}
	cp.client, err = kubernetes.NewForConfig(cp.config)
	if err != nil {
		return cp, err
	}

	etcdClientURL := "http://127.0.0.1:" + strconv.Itoa(etcdClientPort)
	etcdPeerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeerPort)
	cp.etcd, err = startProcess(cp.logDir, "etcd", bins.etcd,
		"--name=e2e",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdClientURL,
		"--advertise-client-urls="+etcdClientURL,
		"--listen-peer-urls="+etcdPeerURL,
		"--initial-advertise-peer-urls="+etcdPeerURL,
		"--initial-cluster=e2e="+etcdPeerURL,
		"--initial-cluster-state=new",
		"--log-level=warn",
	)
	if err != nil {
		return cp, err
	}
	if err := waitServing(ctx, cp.etcd, plainHTTP, etcdClientURL+"/health"); err != nil {
		return cp, err
	}

	cp.apiserver, err = startProcess(cp.logDir, "kube-apiserver", bins.apiserver,
		"--advertise-address=127.0.0.1",
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(apiserverPort),
		"--etcd-servers="+etcdClientURL,
		"--tls-cert-file="+serving.certFile,
		"--tls-private-key-file="+serving.keyFile,
		"--client-ca-file="+cp.ca.certFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+saKey.certFile,
		"--service-account-signing-key-file="+saKey.keyFile,
		"--service-cluster-ip-range=10.96.0.0/24",
		// No kubelet or kube-proxy: nothing would serve the kubernetes
		// Service's endpoints, and they may not hold loopback addresses.
		"--endpoint-reconciler-type=none",
		// The aggregation layer: the API server proxies
		// custom.metrics.k8s.io to the aggregator with this client
		// certificate and the user in request headers.
		"--requestheader-client-ca-file="+frontProxyCA.certFile,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+proxyClient.certFile,
		"--proxy-client-key-file="+proxyClient.keyFile,
	)
	if err != nil {
		return cp, err
	}
	if err := waitServing(ctx, cp.apiserver, cp.httpClient(), apiserverURL+"/readyz"); err != nil {
		return cp, err
	}

	cp.controllerManager, err = startProcess(cp.logDir, "kube-controller-manager", bins.controllerManager,
		"--kubeconfig="+kcmKubeconfig,
		"--authentication-kubeconfig="+kcmKubeconfig,
		"--authorization-kubeconfig="+kcmKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(kcmPort),
		"--cert-dir="+filepath.Join(dir, "kcm-serving"),
		"--leader-elect=false",
		"--controllers="+strings.Join(kcmControllers, ","),
		// Each controller uses its own service account, so the HPA
		// controller reads custom metrics under its built-in RBAC.
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+saKey.keyFile,
		"--root-ca-file="+cp.ca.certFile,
		"--horizontal-pod-autoscaler-sync-period="+hpaSyncPeriod.String(),
	)
	if err != nil {
		return cp, err
	}
	// The controller manager's serving certificate is self-signed; the
	// client certificate still authenticates the health check.
	kcmHTTP := cp.httpClient()
	kcmHTTP.Transport.(*http.Transport).TLSClientConfig.RootCAs = nil
	kcmHTTP.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify = true
	if err := waitServing(ctx, cp.controllerManager, kcmHTTP, "https://127.0.0.1:"+strconv.Itoa(kcmPort)+"/healthz"); err != nil {
		return cp, err
	}
	return cp, nil
}

// httpClient returns an HTTP client presenting the admin certificate and
// trusting the cluster CA.
func (cp *controlPlane) httpClient() *http.Client {
	tlsConfig, err := rest.TLSConfigFor(cp.config)
	if err != nil || tlsConfig == nil {
		// The files were written by this package a moment ago; an error
		// here leaves a client whose requests fail visibly.
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
}

// stop stops the components in reverse order of their start.
func (cp *controlPlane) stop() {
	for _, p := range []*process{cp.controllerManager, cp.apiserver, cp.etcd} {
		if p != nil {
			p.stop()
		}
	}
}

// dumpLogs writes the tail of each component's log to w.
func (cp *controlPlane) dumpLogs(w io.Writer) {
	for _, p := range []*process{cp.etcd, cp.apiserver, cp.controllerManager} {
		if p != nil {
			fmt.Fprintf(w, "---- last %d lines of %s (%s) ----\n%s\n", logTailLines, p.name, p.logPath, p.tail(logTailLines))
		}
	}
}

// waitServing polls url until it answers 200, the process exits, or ctx's
// deadline (at most startTimeout) passes.
func waitServing(ctx context.Context, p *process, client *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if done, err := p.exited(); done {
			return fmt.Errorf("%s %w (%v) while waiting for %s; last log lines:\n%s", p.name, errExitedEarly, err, url, p.tail(logTailLines))
		}
		lastErr := probe(ctx, client, url)
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not serving %s after %v: %v; last log lines:\n%s", p.name, url, startTimeout, lastErr, p.tail(logTailLines))
		case <-tick.C:
		}
	}
}

// probe returns nil when a GET of url answers 200.
func probe(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// writeKubeconfig writes a kubeconfig authenticating with a client
// certificate.
func writeKubeconfig(path, server, caFile string, cert keyPair) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: caFile}
	cfg.AuthInfos["e2e"] = &clientcmdapi.AuthInfo{ClientCertificate: cert.certFile, ClientKey: cert.keyFile}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "e2e", Namespace: "default"}
	cfg.CurrentContext = "e2e"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago. All listeners are held until every port is chosen, so the ports
// differ from each other.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free loopback port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
