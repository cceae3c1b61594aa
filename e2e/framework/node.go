//go:build e2e

package framework

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
	"sigs.k8s.io/yaml"

	"github.com/gpu-metrics-server/gpu-metrics-server/hack/deviceplugin/devices"
)

const (
	// nodeStartTimeout bounds a node's start: until its kubelet has
	// registered the Node, reports it Ready and advertises every device.
	nodeStartTimeout = 2 * time.Minute
	// nodeStatusUpdateFrequency is how often a kubelet checks its Node's
	// status (the kubelet's default is 10 s): allocatable devices show
	// within it once the device plugin registered.
	nodeStatusUpdateFrequency = 2 * time.Second
	// PodResourcesSocket is the kubelet's pod-resources socket inside a
	// node's mount namespace: what an agent on the node reads.
	PodResourcesSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"
	// GPUPresentLabel is the label NVIDIA's GPU feature discovery puts on
	// GPU nodes, which the chart's agent DaemonSet selects.
	GPUPresentLabel = "nvidia.com/gpu.present"
)

// kernelTunables are the sysctls a kubelet sets when it starts (it does
// not only check them unless protectKernelDefaults is on, and then refuses
// to start). Each node gets private copies, files bind-mounted over them
// in its mount namespace, so that the host's values never change; Main
// checks that they did not.
var kernelTunables = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// nodeScript runs in a node's new mount namespace (unshare --mount
// --propagation private): it bind-mounts the node's own /var/lib and
// /var/log (the kubelet's root directory, device-plugin socket and pod
// logs are at fixed paths there), private copies of the kernel tunables,
// signals that the namespace is ready, and holds it open. Every mount
// lives and dies with the namespace: none is visible on the host.
const nodeScript = `set -eu
var_lib=$1 var_log=$2 tunables=$3 ready=$4
shift 4
mount --bind "$var_lib" /var/lib
mount --bind "$var_log" /var/log
for t in "$@"; do
  copy="$tunables/$(echo "$t" | tr / _)"
  cat "/proc/sys/$t" > "$copy"
  mount --bind "$copy" "/proc/sys/$t"
done
: > "$ready"
exec sleep infinity
`

// NodeOptions says what a node has.
type NodeOptions struct {
	// Name is the node's name, unique in the cluster.
	Name string
	// Labels are set by the kubelet when it registers the Node.
	Labels map[string]string
	// GPUs is the number of simulated GPUs the node's device plugin
	// advertises (an agent with --sim-gpus=GPUs --node-name=Name reports
	// the same ones); 0 for a node without GPUs and without device plugin.
	GPUs int
	// MIG lists the GPUs in MIG mode (mixed strategy: their instances are
	// nvidia.com/mig-<profile> devices).
	MIG []int
	// TimeSlices time-slices every device into that many replicas (IDs
	// "<uuid>::<n>"); 0 or 1: not shared.
	TimeSlices int
	// RenameShared advertises time-sliced devices as "<name>.shared".
	RenameShared bool
}

// Layout is the simulated hardware of the node, as its device plugin and
// agent see it.
func (o NodeOptions) Layout() devices.Layout {
	return devices.Layout{Node: o.Name, GPUs: o.GPUs, MIG: o.MIG, Replicas: o.TimeSlices, RenameShared: o.RenameShared}
}

// Node is a real kubelet v1.37.2 with the fake container runtime
// (hack/fakecri) and, with GPUs, the test device plugin
// (hack/deviceplugin), all in one private mount namespace held by a
// process of its own (see nodeScript). Processes started with Exec (the
// node's agent) run there too.
type Node struct {
	Name string
	// Dir is the node's directory on the host: its /var/lib (var-lib) and
	// /var/log (var-log), logs and configuration.
	Dir string
	// Resources are the devices the node advertises (none without GPUs).
	Resources []devices.Resource

	cp          *ControlPlane
	opts        NodeOptions
	logDir      string
	holder      *Process
	mntNS       string // the namespace's identity, "mnt:[<inode>]"
	kubeletArgs []string
	healthzURL  string

	mu      sync.Mutex
	kubelet *Process
	procs   []*Process // every process but the holder, in start order
}

// StartNode starts a node for one test and waits until it is Ready with
// all its devices allocatable; it stops, and its Node object is deleted,
// at the end of the test.
func (cp *ControlPlane) StartNode(t testing.TB, opts NodeOptions) *Node {
	t.Helper()
	n, err := cp.startNode(t.Context(), opts)
	if n != nil {
		t.Cleanup(func() {
			if t.Failed() {
				n.dumpLogs(t)
			}
			if err := n.Stop(); err != nil {
				t.Errorf("stopping node %s: %v", n.Name, err)
			}
		})
	}
	if err != nil {
		t.Fatalf("starting node %s: %v", opts.Name, err)
	}
	return n
}

// startNode starts the namespace, the fake runtime, the kubelet and the
// device plugin of a node, and waits until the node is Ready with every
// device allocatable. On error the returned node (if any) has to be
// stopped.
func (cp *ControlPlane) startNode(ctx context.Context, opts NodeOptions) (*Node, error) {
	if cp.nodeBins == nil {
		return nil, errors.New("this suite's control plane runs no kubelets (Config.Kubelets)")
	}
	var resources []devices.Resource
	if opts.GPUs > 0 {
		var err error
		if resources, err = opts.Layout().Resources(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "gms-node-")
	if err != nil {
		return nil, err
	}
	n := &Node{Name: opts.Name, Dir: dir, Resources: resources, cp: cp, opts: opts, logDir: filepath.Join(dir, "logs")}
	nodes.add(n)
	for _, d := range []string{"var-lib", "var-log", "tunables", "work", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return n, err
		}
	}
	if err := n.startNamespace(ctx); err != nil {
		return n, err
	}

	criSocket := filepath.Join(dir, "cri.sock")
	if _, err := n.Exec("fakecri", cp.nodeBins.fakeCRI, "--socket="+criSocket, "--image-fs=/var/lib/fakecri"); err != nil {
		return n, err
	}
	if err := waitUntil(ctx, startTimeout, "the fake container runtime's socket", func(context.Context) (bool, string, error) {
		_, err := os.Stat(criSocket)
		return err == nil, fmt.Sprint(err), n.exited()
	}); err != nil {
		return n, err
	}

	if err := n.configureKubelet(criSocket); err != nil {
		return n, err
	}
	if err := n.startKubelet(ctx); err != nil {
		return n, err
	}
	if opts.GPUs > 0 {
		args := []string{"--node=" + opts.Name, "--gpus=" + strconv.Itoa(opts.GPUs), "--replicas=" + strconv.Itoa(max(opts.TimeSlices, 1))}
		if len(opts.MIG) > 0 {
			args = append(args, "--mig="+joinInts(opts.MIG))
		}
		if opts.RenameShared {
			args = append(args, "--rename-shared")
		}
		if _, err := n.Exec("deviceplugin", cp.nodeBins.devicePlugin, args...); err != nil {
			return n, err
		}
	}
	return n, n.waitReady(ctx, time.Time{})
}

// startNamespace starts the process that makes and holds the node's mount
// namespace, and waits until its mounts are in place.
func (n *Node) startNamespace(ctx context.Context) error {
	ready := filepath.Join(n.Dir, "namespace-ready")
	args := []string{"--mount", "--propagation", "private", "--", "sh", "-c", nodeScript, "node",
		filepath.Join(n.Dir, "var-lib"), filepath.Join(n.Dir, "var-log"), filepath.Join(n.Dir, "tunables"), ready}
	p, err := StartProcess(n.logDir, "namespace", "unshare", append(args, kernelTunables...)...)
	if err != nil {
		return err
	}
	n.holder = p
	if err := waitUntil(ctx, startTimeout, "node "+n.Name+"'s mount namespace", func(context.Context) (bool, string, error) {
		if done, err := p.Exited(); done {
			return false, "", fmt.Errorf("unshare %w (%v); its log:\n%s", errExitedEarly, err, p.Tail(LogTailLines))
		}
		_, err := os.Stat(ready)
		return err == nil, "mounts not done", nil
	}); err != nil {
		return err
	}
	n.mntNS, err = nodes.pinNamespace(p.Pid())
	return err
}

// Exec starts bin with args inside the node's mount namespace (through
// nsenter), logging to the node's log directory as name. It stops with
// the node.
func (n *Node) Exec(name, bin string, args ...string) (*Process, error) {
	return n.exec(name, n.Dir, bin, args...)
}

// exec is Exec with the working directory wd.
func (n *Node) exec(name, wd, bin string, args ...string) (*Process, error) {
	all := append([]string{fmt.Sprintf("--mount=/proc/%d/ns/mnt", n.holder.Pid()), "--wd=" + wd, "--", bin}, args...)
	p, err := StartProcess(n.logDir, name, "nsenter", all...)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.procs = append(n.procs, p)
	n.mu.Unlock()
	return p, nil
}

// configureKubelet writes the kubelet's credentials and configuration.
// The settings beyond the ports are what this kind of host needs (see
// docs/e2e.md, "The nodes").
func (n *Node) configureKubelet(criSocket string) error {
	cp := n.cp
	kubeconfig, _, err := cp.clientKubeconfig("kubelet-"+n.Name, "system:node:"+n.Name, "system:nodes")
	if err != nil {
		return err
	}
	ports, err := FreePorts(2)
	if err != nil {
		return err
	}
	config := map[string]any{
		"apiVersion": "kubelet.config.k8s.io/v1beta1",
		"kind":       "KubeletConfiguration",
		// Kubelets since 1.35 refuse cgroup v1 hosts unless told not to.
		"failCgroupV1": false,
		"cgroupDriver": "cgroupfs",
		// No QoS or pod cgroups: nothing is created under kubepods, so
		// nothing can be left there.
		"cgroupsPerQOS":          false,
		"enforceNodeAllocatable": []string{},
		"failSwapOn":             false,
		"evictionHard":           map[string]string{},
		// The host's firewall is not the test's to change.
		"makeIPTablesUtilChains":   false,
		"containerRuntimeEndpoint": "unix://" + criSocket,
		"address":                  "127.0.0.1",
		"port":                     ports[0],
		"healthzBindAddress":       "127.0.0.1",
		"healthzPort":              ports[1],
		"readOnlyPort":             0,
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": false},
			"x509":      map[string]any{"clientCAFile": cp.ca.certFile},
		},
		"authorization":             map[string]any{"mode": "AlwaysAllow"},
		"resolvConf":                "",
		"nodeStatusUpdateFrequency": nodeStatusUpdateFrequency.String(),
	}
	data, err := yaml.Marshal(config)
	if err != nil {
		return err
	}
	configFile := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(configFile, data, 0o600); err != nil {
		return err
	}
	n.kubeletArgs = []string{
		"--config=" + configFile,
		"--kubeconfig=" + kubeconfig,
		"--hostname-override=" + n.Name,
	}
	if len(n.opts.Labels) > 0 {
		var labels []string
		for _, k := range slices.Sorted(maps.Keys(n.opts.Labels)) {
			labels = append(labels, k+"="+n.opts.Labels[k])
		}
		n.kubeletArgs = append(n.kubeletArgs, "--node-labels="+strings.Join(labels, ","))
	}
	n.healthzURL = loopbackURL("http", ports[1]) + "/healthz"
	return nil
}

// startKubelet starts the kubelet, in an empty working directory (the
// kubelet cleans files there when a container reports no log path), and
// waits until it serves /healthz.
func (n *Node) startKubelet(ctx context.Context) error {
	p, err := n.exec("kubelet", filepath.Join(n.Dir, "work"), n.cp.nodeBins.kubelet, n.kubeletArgs...)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.kubelet = p
	n.mu.Unlock()
	return WaitServing(ctx, p, PlainHTTP, n.healthzURL)
}

// RestartKubelet stops the kubelet (SIGTERM), calls whileDown (unless
// nil), and starts the kubelet again with the same configuration; its
// pods keep running in the fake runtime and its device allocations come
// back from its checkpoint. It returns once the node is Ready again, with
// a status the new kubelet posted and every device allocatable through the
// device plugin, which registered again.
func (n *Node) RestartKubelet(t testing.TB, whileDown func()) {
	t.Helper()
	n.mu.Lock()
	old := n.kubelet
	n.mu.Unlock()
	old.Stop()
	if whileDown != nil {
		whileDown()
	}
	restarted := time.Now()
	if err := n.startKubelet(t.Context()); err != nil {
		t.Fatalf("restarting the kubelet of %s: %v", n.Name, err)
	}
	if err := n.waitReady(t.Context(), restarted); err != nil {
		t.Fatal(err)
	}
}

// waitReady waits until the Node is Ready and schedulable, with a
// heartbeat after since, and every device of the node allocatable (no GPU
// resource on a node without GPUs).
func (n *Node) waitReady(ctx context.Context, since time.Time) error {
	want := map[string]int64{}
	for _, r := range n.Resources {
		want[r.Name] = int64(len(r.Devices))
	}
	return waitUntil(ctx, nodeStartTimeout, fmt.Sprintf("node %s to be Ready with %v allocatable", n.Name, want), func(ctx context.Context) (bool, string, error) {
		if err := n.exited(); err != nil {
			return false, "", err
		}
		node, err := n.cp.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		ready := false
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ready = c.Status == corev1.ConditionTrue && !c.LastHeartbeatTime.Time.Before(since.Truncate(time.Second))
			}
		}
		// The node lifecycle controller lifts the taint the kubelet
		// registered the Node with once it is Ready.
		for _, taint := range node.Spec.Taints {
			if taint.Key == corev1.TaintNodeNotReady {
				ready = false
			}
		}
		got := map[string]int64{}
		for name, q := range node.Status.Allocatable {
			if strings.HasPrefix(string(name), "nvidia.com/") && !q.IsZero() {
				got[string(name)] = q.Value()
			}
		}
		if !ready || !maps.Equal(got, want) {
			return false, fmt.Sprintf("ready=%v allocatable %v", ready, got), nil
		}
		// The device plugin registered with this kubelet: it lists
		// exactly the advertised devices (a restarted kubelet shows the
		// allocatable counts of its checkpoint before that).
		ids, err := n.AllocatableDeviceIDs(ctx)
		if err != nil {
			return false, "pod-resources: " + err.Error(), nil
		}
		for _, r := range n.Resources {
			if !slices.Equal(ids[r.Name], slices.Sorted(slices.Values(r.IDs()))) {
				return false, fmt.Sprintf("the kubelet lists %s: %v", r.Name, ids[r.Name]), nil
			}
		}
		return true, "", nil
	})
}

// exited returns an error when one of the node's processes ended.
func (n *Node) exited() error {
	n.mu.Lock()
	procs := append([]*Process{n.holder}, n.procs...)
	n.mu.Unlock()
	for _, p := range procs {
		if p == nil {
			continue
		}
		if done, err := p.Exited(); done && !p.stopped() {
			return fmt.Errorf("node %s: %s %w (%v); its log:\n%s", n.Name, p.Name, errExitedEarly, err, p.Tail(LogTailLines))
		}
	}
	return nil
}

// Stop stops every process of the node (the last one ends its mount
// namespace and every mount in it), checks that none is left in the
// namespace, deletes the Node object and removes the node's directory
// (unless GMS_E2E_KEEP is set). Safe to call more than once.
func (n *Node) Stop() error {
	n.mu.Lock()
	procs := slices.Clone(n.procs)
	n.mu.Unlock()
	for _, p := range slices.Backward(procs) {
		p.Stop()
	}
	var errs []error
	if n.holder != nil {
		n.holder.Stop()
		if left := processesIn(n.mntNS); len(left) > 0 {
			errs = append(errs, fmt.Errorf("processes left in node %s's mount namespace: %s", n.Name, strings.Join(left, "; ")))
		}
	}
	nodes.remove(n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.cp.Client.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("deleting Node %s: %w", n.Name, err))
	}
	if !keepFiles() {
		if err := os.RemoveAll(n.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// dumpLogs prints the tail of each of the node's logs into the test log.
func (n *Node) dumpLogs(t testing.TB) {
	n.mu.Lock()
	procs := slices.Clone(n.procs)
	n.mu.Unlock()
	for _, p := range procs {
		t.Logf("---- last %d lines of %s on %s ----\n%s", LogTailLines, p.Name, n.Name, p.Tail(LogTailLines))
	}
}

// podResources calls the node's kubelet pod-resources API (the one the
// agent reads), through the socket's path on the host.
func (n *Node) podResources(ctx context.Context, call func(context.Context, podresourcesv1.PodResourcesListerClient) error) error {
	socket := filepath.Join(n.Dir, "var-lib", strings.TrimPrefix(PodResourcesSocket, "/var/lib/"))
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return call(ctx, podresourcesv1.NewPodResourcesListerClient(conn))
}

// PodResources asks the node's kubelet which devices each container
// holds: the pod-resources List the agent reads.
func (n *Node) PodResources(ctx context.Context) ([]*podresourcesv1.PodResources, error) {
	var out []*podresourcesv1.PodResources
	err := n.podResources(ctx, func(ctx context.Context, c podresourcesv1.PodResourcesListerClient) error {
		resp, err := c.List(ctx, &podresourcesv1.ListPodResourcesRequest{})
		out = resp.GetPodResources()
		return err
	})
	return out, err
}

// AllocatableDeviceIDs asks the node's kubelet which devices it can
// allocate, by resource: those its device plugins listed to it.
func (n *Node) AllocatableDeviceIDs(ctx context.Context) (map[string][]string, error) {
	ids := map[string][]string{}
	err := n.podResources(ctx, func(ctx context.Context, c podresourcesv1.PodResourcesListerClient) error {
		resp, err := c.GetAllocatableResources(ctx, &podresourcesv1.AllocatableResourcesRequest{})
		for _, d := range resp.GetDevices() {
			ids[d.GetResourceName()] = append(ids[d.GetResourceName()], d.GetDeviceIds()...)
		}
		return err
	})
	for _, v := range ids {
		slices.Sort(v)
	}
	return ids, err
}

// DeviceIDs returns the device IDs the kubelet allocated to namespace/pod
// under the node's GPU resources, by resource; nil when the kubelet lists
// no such pod.
func (n *Node) DeviceIDs(ctx context.Context, namespace, pod string) (map[string][]string, error) {
	list, err := n.PodResources(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range list {
		if p.GetNamespace() != namespace || p.GetName() != pod {
			continue
		}
		ids := map[string][]string{}
		for _, c := range p.GetContainers() {
			for _, d := range c.GetDevices() {
				if strings.HasPrefix(d.GetResourceName(), "nvidia.com/") {
					ids[d.GetResourceName()] = append(ids[d.GetResourceName()], d.GetDeviceIds()...)
				}
			}
		}
		return ids, nil
	}
	return nil, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
