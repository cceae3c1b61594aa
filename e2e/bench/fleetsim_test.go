//go:build e2e && benchcompare

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// envFleetSim is the hack/fleetsim binary; unset, bin/fleetsim of the
// checkout.
const envFleetSim = "GMS_FLEETSIM"

// fleetFillNamespace holds the synthetic pods that occupy every GPU the
// faker has not given to a pod of the cluster, so that every series of the
// fleet carries pod labels (a busy cluster).
const fleetFillNamespace = "fleet-fill"

// fleetSim is a running hack/fleetsim: many simulated agents in one
// process, each on its own loopback port.
type fleetSim struct {
	proc    *framework.Process
	control string // base URL of the control API
	gpus    int    // per node
	nodes   []fleetTarget
}

// fleetTarget is one simulated agent.
type fleetTarget struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// startFleet starts fleetsim with nodes × gpus simulated GPUs at 10 %
// utilization and waits until it serves; it stops at the end of the test.
func startFleet(t *testing.T, dir string, nodes, gpus int) *fleetSim {
	t.Helper()
	bin := os.Getenv(envFleetSim)
	if bin == "" {
		root, err := framework.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(root, "bin", "fleetsim")
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the fleet simulator %s is missing (%v): build it with `go build -o bin/fleetsim ./hack/fleetsim` (hack/bench-compare.sh does) or set %s", bin, err, envFleetSim)
	}
	ports, err := framework.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	control := "127.0.0.1:" + strconv.Itoa(ports[0])
	proc, err := framework.StartProcess(dir, fmt.Sprintf("fleetsim-%d", nodes), bin,
		"--nodes="+strconv.Itoa(nodes),
		"--gpus-per-node="+strconv.Itoa(gpus),
		"--utilization=10",
		"--fill-namespace="+fleetFillNamespace,
		"--control-address="+control,
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proc.Stop)
	f := &fleetSim{proc: proc, control: "http://" + control, gpus: gpus}
	if err := framework.WaitServing(t.Context(), proc, framework.PlainHTTP, f.control+"/readyz"); err != nil {
		t.Fatal(err)
	}
	var list struct {
		Nodes []fleetTarget `json:"nodes"`
	}
	if err := f.call(t.Context(), http.MethodGet, "/targets", nil, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Nodes) != nodes {
		t.Fatalf("fleetsim lists %d nodes, want %d", len(list.Nodes), nodes)
	}
	f.nodes = list.Nodes
	return f
}

// call sends a request to the control API and decodes a JSON answer into
// out (when not nil).
func (f *fleetSim) call(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, f.control+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := framework.PlainHTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// urls returns the nodes' /metrics URLs.
func (f *fleetSim) urls() []string {
	out := make([]string, len(f.nodes))
	for i, n := range f.nodes {
		out[i] = n.URL
	}
	return out
}

// setUtilization sets GPU gpu ("all" or an index) of node ("all" or an
// index) and returns when fleetsim accepted it.
func (f *fleetSim) setUtilization(t *testing.T, node, gpu string, percent int) time.Time {
	t.Helper()
	q := url.Values{"node": {node}, "gpu": {gpu}, "utilization": {strconv.Itoa(percent)}}
	if err := f.call(t.Context(), http.MethodPost, "/sim/set?"+q.Encode(), nil, nil); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

// slots returns the GPUs of the first nodes, at least n of them, in
// assignment order, their UUIDs read from each node's /metrics.
func (f *fleetSim) slots(t *testing.T, n int) []framework.GPUSlot {
	t.Helper()
	var out []framework.GPUSlot
	for i := 0; len(out) < n && i < len(f.nodes); i++ {
		gpus, err := framework.ScrapeGPUs(t.Context(), f.nodes[i].URL)
		if err != nil {
			t.Fatal(err)
		}
		if len(gpus) != f.gpus {
			t.Fatalf("%s reports GPUs %v, want %d", f.nodes[i].Name, gpus, f.gpus)
		}
		for idx := range f.gpus {
			out = append(out, framework.GPUSlot{Node: i, Index: idx, UUID: gpus[idx]})
		}
	}
	if len(out) < n {
		t.Fatalf("the fleet has %d GPUs, %d wanted", len(out), n)
	}
	return out
}

// kubelets returns, per node, what the pod faker publishes pods through.
func (f *fleetSim) kubelets(t *testing.T) []framework.PodResourcesSetter {
	out := make([]framework.PodResourcesSetter, len(f.nodes))
	for i := range out {
		out[i] = fleetKubelet{t: t, f: f, node: i}
	}
	return out
}

// fleetKubelet is one fleet node's kubelet as the pod faker sees it: the
// pods it is given become the node's pod-resources answer.
type fleetKubelet struct {
	t    *testing.T
	f    *fleetSim
	node int
}

// SetPods implements podResourcesSetter.
func (k fleetKubelet) SetPods(pods []*podresourcesv1.PodResources) {
	data, err := protojson.Marshal(&podresourcesv1.ListPodResourcesResponse{PodResources: pods})
	if err == nil {
		err = k.f.call(context.Background(), http.MethodPut, fmt.Sprintf("/nodes/%d/pods", k.node), data, nil)
	}
	if err != nil {
		k.t.Errorf("publishing the pods of fleet node %d: %v", k.node, err)
	}
}
