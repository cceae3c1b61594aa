//go:build e2e

package framework

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Config is what a suite asks of its control plane.
type Config struct {
	// HPASyncPeriod is the HPA controller's resync period: the granularity
	// of every scaling decision (the controller's own default is 15 s).
	HPASyncPeriod time.Duration
	// Kubelets makes the cluster real down to the nodes: kube-scheduler,
	// one node without GPUs (CPUNodeName) for the whole run, and
	// StartNode/StartGMS start real kubelets with the fake container
	// runtime and the test device plugin. Without it no pod is scheduled
	// or run (the pod faker stands in: the benchmark's world).
	Kubelets bool
}

// CPUNodeName is the node without GPUs that a suite with Kubelets runs
// for its whole length.
const CPUNodeName = "cpu-node"

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

// kcmNodeControllers are the further controllers a cluster with kubelets
// needs: node lifecycle (it lifts the not-ready taint a kubelet registers
// its Node with), the kube-root-ca.crt ConfigMap every pod's
// service-account volume mounts, DaemonSets (the chart's agent), the garbage collector (a deleted
// Deployment's or DaemonSet's pods go, e.g. at helm uninstall), the pod
// garbage collector (pods of a stopped test node) and namespace deletion
// (each test's namespace at its end).
var kcmNodeControllers = []string{
	"node-lifecycle-controller",
	"root-ca-certificate-publisher-controller",
	"daemonset-controller",
	"garbage-collector-controller",
	"pod-garbage-collector-controller",
	"namespace-controller",
}

// controlPlaneBinaries locates the executables to run.
type controlPlaneBinaries struct {
	etcd, apiserver, controllerManager string
	// scheduler is set with Config.Kubelets.
	scheduler string
	// node is set with Config.Kubelets.
	node *nodeBinaries
}

// nodeBinaries are what a node runs.
type nodeBinaries struct {
	kubelet, fakeCRI, devicePlugin string
}

// controlPlanePorts are the loopback ports of the components, chosen
// together so that they differ.
type controlPlanePorts struct {
	etcdClient, etcdPeer, apiserver, controllerManager, scheduler int
}

// ControlPlane is a running etcd + kube-apiserver + kube-controller-manager
// on loopback, with throwaway certificates.
type ControlPlane struct {
	// Dir holds the certificates, kubeconfigs and etcd's data; LogDir
	// the components' logs.
	Dir, LogDir string
	// Kubeconfig is an admin (system:masters) kubeconfig for kubectl and
	// for the project's components; RESTConfig and Client are the same
	// credentials for client-go.
	Kubeconfig string
	RESTConfig *rest.Config
	Client     kubernetes.Interface
	// APIServer is the kube-apiserver's process.
	APIServer *Process

	cfg          Config
	bins         controlPlaneBinaries
	nodeBins     *nodeBinaries // nil without Config.Kubelets
	pki          string
	ca           *authority // serving and client CA
	frontProxyCA *authority // the aggregation layer's client CA
	saKey        KeyPair    // service-account token signing key
	ports        controlPlanePorts
	etcdURL      string
	apiserverURL string
	// apiserverArgs are kube-apiserver's flags, to start it again.
	apiserverArgs []string
	procs         []*Process // in start order
	// CPUNode is the node without GPUs (Config.Kubelets).
	CPUNode *Node
}

// startControlPlane prepares the certificates and credentials, then starts
// the components one step at a time, each waited on until it serves. On
// error, whatever was started is stopped.
func startControlPlane(ctx context.Context, bins controlPlaneBinaries, dir string, cfg Config) (cp *ControlPlane, err error) {
	cp = &ControlPlane{Dir: dir, LogDir: filepath.Join(dir, "logs"), cfg: cfg, bins: bins, nodeBins: bins.node, pki: filepath.Join(dir, "pki")}
	defer func() {
		if err != nil {
			_ = cp.stop() // the start's error is the one to report
		}
	}()
	if err := cp.prepare(); err != nil {
		return cp, err
	}
	type step struct {
		name string
		run  func(context.Context) error
	}
	steps := []step{
		{"etcd", cp.startEtcd},
		{"kube-apiserver", cp.startAPIServer},
		{"kube-controller-manager", cp.startControllerManager},
	}
	if cfg.Kubelets {
		steps = append(steps,
			step{"kube-scheduler", cp.startScheduler},
			step{"node " + CPUNodeName, cp.startCPUNode},
		)
	}
	for _, step := range steps {
		if err := step.run(ctx); err != nil {
			return cp, fmt.Errorf("%s: %w", step.name, err)
		}
	}
	return cp, nil
}

// prepare makes the directories, chooses the ports, and creates what more
// than one component uses: the cluster and front-proxy CAs, the
// service-account key, and the admin credentials.
func (cp *ControlPlane) prepare() error {
	for _, d := range []string{cp.LogDir, cp.pki, filepath.Join(cp.Dir, "etcd")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	ports, err := FreePorts(5)
	if err != nil {
		return err
	}
	cp.ports = controlPlanePorts{etcdClient: ports[0], etcdPeer: ports[1], apiserver: ports[2], controllerManager: ports[3], scheduler: ports[4]}
	cp.etcdURL = loopbackURL("http", cp.ports.etcdClient)
	cp.apiserverURL = loopbackURL("https", cp.ports.apiserver)

	if cp.ca, err = newAuthority(cp.pki, "ca"); err != nil {
		return err
	}
	if cp.frontProxyCA, err = newAuthority(cp.pki, "front-proxy-ca"); err != nil {
		return err
	}
	if cp.saKey, err = newServiceAccountKey(cp.pki); err != nil {
		return err
	}
	var admin KeyPair
	cp.Kubeconfig, admin, err = cp.clientKubeconfig("admin", "gms-e2e-admin", "system:masters")
	if err != nil {
		return err
	}
	cp.RESTConfig = &rest.Config{
		Host: cp.apiserverURL,
		TLSClientConfig: rest.TLSClientConfig{
			CAFile: cp.ca.certFile, CertFile: admin.CertFile, KeyFile: admin.KeyFile,
		},
		QPS:   100,
		Burst: 200,
	}
	cp.Client, err = kubernetes.NewForConfig(cp.RESTConfig)
	return err
}

// startEtcd starts a single-member etcd on loopback with a fresh data
// directory.
func (cp *ControlPlane) startEtcd(ctx context.Context) error {
	peerURL := loopbackURL("http", cp.ports.etcdPeer)
	_, err := cp.start(ctx, "etcd", cp.bins.etcd, PlainHTTP, cp.etcdURL+"/health",
		"--name=e2e",
		"--data-dir="+filepath.Join(cp.Dir, "etcd"),
		"--listen-client-urls="+cp.etcdURL,
		"--advertise-client-urls="+cp.etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=e2e="+peerURL,
		"--initial-cluster-state=new",
		"--log-level=warn",
	)
	return err
}

// startAPIServer issues the API server's serving certificate and the
// front-proxy client certificate of the aggregation layer, and starts
// kube-apiserver on etcd with RBAC. Ready: GET /readyz = 200.
func (cp *ControlPlane) startAPIServer(ctx context.Context) error {
	serving, err := cp.ca.issue(cp.pki, "apiserver", certSpec{
		commonName: "kube-apiserver",
		dnsNames:   []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		ips:        []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
		server:     true,
	})
	if err != nil {
		return err
	}
	proxyClient, err := cp.frontProxyCA.issue(cp.pki, "front-proxy-client", certSpec{
		commonName: "front-proxy-client", client: true,
	})
	if err != nil {
		return err
	}
	cp.apiserverArgs = []string{
		"--advertise-address=127.0.0.1",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(cp.ports.apiserver),
		"--etcd-servers=" + cp.etcdURL,
		"--tls-cert-file=" + serving.CertFile,
		"--tls-private-key-file=" + serving.KeyFile,
		"--client-ca-file=" + cp.ca.certFile,
		// The Node authorizer gives each kubelet (system:node:<name>) what
		// its node's pods need; NodeRestriction (on by default) limits it
		// to its own Node and pods.
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + cp.saKey.CertFile,
		"--service-account-signing-key-file=" + cp.saKey.KeyFile,
		"--service-cluster-ip-range=10.96.0.0/24",
		// No kube-proxy: nothing would serve the kubernetes Service's
		// endpoints, and they may not hold loopback addresses.
		"--endpoint-reconciler-type=none",
		// The aggregation layer: the API server proxies
		// custom.metrics.k8s.io to the aggregator with this client
		// certificate and the user in request headers.
		"--requestheader-client-ca-file=" + cp.frontProxyCA.certFile,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + proxyClient.CertFile,
		"--proxy-client-key-file=" + proxyClient.KeyFile,
	}
	cp.APIServer, err = cp.start(ctx, "kube-apiserver", cp.bins.apiserver, cp.HTTPClient(), cp.apiserverURL+"/readyz", cp.apiserverArgs...)
	return err
}

// RestartAPIServer stops kube-apiserver (SIGTERM, waiting for its exit),
// calls whileDown, and starts it again on the same etcd, port,
// certificates and flags; it returns when /readyz answers 200 again.
func (cp *ControlPlane) RestartAPIServer(t testing.TB, whileDown func()) {
	t.Helper()
	old := cp.APIServer
	old.Stop()
	if whileDown != nil {
		whileDown()
	}
	p, err := StartProcess(cp.LogDir, "kube-apiserver", cp.bins.apiserver, cp.apiserverArgs...)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.Index(cp.procs, old); i >= 0 {
		cp.procs[i] = p
	}
	cp.APIServer = p
	if err := WaitServing(t.Context(), p, cp.HTTPClient(), cp.apiserverURL+"/readyz"); err != nil {
		t.Fatal(err)
	}
}

// startControllerManager starts kube-controller-manager with its own
// credentials, running only kcmControllers. Ready: GET /healthz = 200.
func (cp *ControlPlane) startControllerManager(ctx context.Context) error {
	kubeconfig, _, err := cp.clientKubeconfig("kube-controller-manager", "system:kube-controller-manager")
	if err != nil {
		return err
	}
	controllers := kcmControllers
	if cp.cfg.Kubelets {
		controllers = append(slices.Clone(controllers), kcmNodeControllers...)
	}
	args := append(cp.componentArgs(kubeconfig, cp.ports.controllerManager, "kcm-serving"),
		"--controllers="+strings.Join(controllers, ","),
		// Each controller uses its own service account, so the HPA
		// controller reads custom metrics under its built-in RBAC.
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+cp.saKey.KeyFile,
		"--root-ca-file="+cp.ca.certFile,
	)
	if cp.cfg.HPASyncPeriod > 0 {
		args = append(args, "--horizontal-pod-autoscaler-sync-period="+cp.cfg.HPASyncPeriod.String())
	}
	_, err = cp.start(ctx, "kube-controller-manager", cp.bins.controllerManager,
		cp.selfSignedClient(), loopbackURL("https", cp.ports.controllerManager)+"/healthz", args...)
	return err
}

// startScheduler starts kube-scheduler with its own credentials
// (system:kube-scheduler, bound by the bootstrap RBAC). Ready: GET
// /healthz = 200.
func (cp *ControlPlane) startScheduler(ctx context.Context) error {
	kubeconfig, _, err := cp.clientKubeconfig("kube-scheduler", "system:kube-scheduler")
	if err != nil {
		return err
	}
	_, err = cp.start(ctx, "kube-scheduler", cp.bins.scheduler,
		cp.selfSignedClient(), loopbackURL("https", cp.ports.scheduler)+"/healthz",
		cp.componentArgs(kubeconfig, cp.ports.scheduler, "scheduler-serving")...)
	return err
}

// componentArgs are the flags the controller manager and the scheduler
// share: their credentials (for the API and for delegated authentication
// and authorization), a self-signed serving certificate in the run
// directory's certDir on the loopback port, and no leader election.
func (cp *ControlPlane) componentArgs(kubeconfig string, port int, certDir string) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(cp.Dir, certDir),
		"--leader-elect=false",
	}
}

// startCPUNode starts the node without GPUs that stays for the whole run.
func (cp *ControlPlane) startCPUNode(ctx context.Context) error {
	n, err := cp.startNode(ctx, NodeOptions{Name: CPUNodeName})
	if n != nil {
		cp.CPUNode = n
	}
	return err
}

// start starts one component and waits until GET ready (with client)
// answers 200.
func (cp *ControlPlane) start(ctx context.Context, name, bin string, client *http.Client, ready string, args ...string) (*Process, error) {
	p, err := StartProcess(cp.LogDir, name, bin, args...)
	if err != nil {
		return nil, err
	}
	cp.procs = append(cp.procs, p)
	return p, WaitServing(ctx, p, client, ready)
}

// clientKubeconfig issues a client certificate for user (in groups) and
// writes a kubeconfig for the API server that authenticates with it,
// <name>.kubeconfig in the run directory.
func (cp *ControlPlane) clientKubeconfig(name, user string, groups ...string) (string, KeyPair, error) {
	cert, err := cp.ca.issue(cp.pki, name, certSpec{commonName: user, organizations: groups, client: true})
	if err != nil {
		return "", cert, err
	}
	path := filepath.Join(cp.Dir, name+".kubeconfig")
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: cp.apiserverURL, CertificateAuthority: cp.ca.certFile}
	cfg.AuthInfos["e2e"] = &clientcmdapi.AuthInfo{ClientCertificate: cert.CertFile, ClientKey: cert.KeyFile}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "e2e", Namespace: "default"}
	cfg.CurrentContext = "e2e"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", cert, fmt.Errorf("writing %s: %w", path, err)
	}
	return path, cert, nil
}

// HTTPClient returns an HTTP client presenting the admin certificate and
// trusting the cluster CA.
func (cp *ControlPlane) HTTPClient() *http.Client {
	tlsConfig, err := rest.TLSConfigFor(cp.RESTConfig)
	if err != nil || tlsConfig == nil {
		// The files were written by this package a moment ago; an error
		// here leaves a client whose requests fail visibly.
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
}

// selfSignedClient is HTTPClient for a component whose serving certificate
// is self-signed (the controller manager's): the admin client certificate
// still authenticates the health check.
func (cp *ControlPlane) selfSignedClient() *http.Client {
	c := cp.HTTPClient()
	tr := c.Transport.(*http.Transport)
	tr.TLSClientConfig.RootCAs = nil
	tr.TLSClientConfig.InsecureSkipVerify = true
	return c
}

// stop stops the components in reverse order of their start, the
// suite's node first. It returns what the node's stop reported.
func (cp *ControlPlane) stop() error {
	var err error
	if cp.CPUNode != nil {
		err = cp.CPUNode.Stop()
	}
	for _, p := range slices.Backward(cp.procs) {
		p.Stop()
	}
	return err
}

// dumpLogs writes the tail of each component's log to w.
func (cp *ControlPlane) dumpLogs(w io.Writer) {
	procs := slices.Clone(cp.procs)
	if cp.CPUNode != nil {
		cp.CPUNode.mu.Lock()
		procs = append(procs, cp.CPUNode.procs...)
		cp.CPUNode.mu.Unlock()
	}
	for _, p := range procs {
		fmt.Fprintf(w, "---- last %d lines of %s (%s) ----\n%s\n", LogTailLines, p.Name, p.LogPath, p.Tail(LogTailLines))
	}
}

// loopbackURL is scheme://127.0.0.1:port.
func loopbackURL(scheme string, port int) string {
	return scheme + "://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}
