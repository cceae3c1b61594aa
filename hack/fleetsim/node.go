package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"k8s.io/klog/v2"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector/sim"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

const (
	// gpuResource is the extended resource the synthetic pods hold.
	gpuResource = "nvidia.com/gpu"
	// fillContainer is the container name of the synthetic pods.
	fillContainer = "main"
)

// contentType is the content type of every node's /metrics, as the agent's.
var contentType = string(expfmt.NewFormat(expfmt.TypeTextPlain))

// node is one simulated agent: the agent's own simulated backend and
// sampler, fed a pod mapping built by podmap from kubelet-shaped pod
// resources, and served as the agent serves it.
type node struct {
	name    string
	gpus    int
	fillNS  string
	sim     *sim.Sim
	sampler *collector.Sampler
	trailer func() *[]byte

	mu      sync.Mutex // serialises setPods
	mapping atomic.Pointer[podmap.Mapping]
	body    atomic.Pointer[body]
}

// body is a node's exposition for one snapshot and one trailer, gzipped at
// most once.
type body struct {
	snap    *collector.Snapshot
	trailer *[]byte
	gzOnce  sync.Once
	gz      []byte
}

// newNode returns a node whose GPUs all run at cfg.Utilization, held by
// synthetic pods when cfg.FillNamespace is set. reg receives its sampler's
// self-metrics (nil: none).
func newNode(name string, cfg fleetConfig, reg prometheus.Registerer, trailer func() *[]byte) (*node, error) {
	simulated, err := sim.New(name, cfg.GPUsPerNode, nil)
	if err != nil {
		return nil, err
	}
	util := cfg.Utilization
	if err := simulated.Set(sim.AllGPUs, sim.Update{Utilization: &util}); err != nil {
		return nil, err
	}
	n := &node{name: name, gpus: cfg.GPUsPerNode, fillNS: cfg.FillNamespace, sim: simulated, trailer: trailer}
	n.setPods(nil)
	n.sampler = collector.NewSampler(simulated, collector.SamplerOptions{
		Node:       name,
		Interval:   cfg.SampleInterval,
		Owners:     func() podmap.Lookup { return n.mapping.Load() },
		Registerer: reg,
		// No per-process attribution: the fleet's GPUs run no simulated
		// processes, so the agent's sim default (on) would put every
		// device in device-level attribution anyway, the same exposition,
		// after logging a fallback per device.
	})
	return n, nil
}

// setPods replaces the pods the node's kubelet reports (as its List would
// answer); with a fill namespace, every GPU none of them holds gets a
// synthetic pod. It takes effect at the node's next sample.
func (n *node) setPods(pods []*podresourcesv1.PodResources) {
	n.mu.Lock()
	defer n.mu.Unlock()
	all := pods
	if n.fillNS != "" {
		explicit := podmap.NewMapping(&podresourcesv1.ListPodResourcesResponse{PodResources: pods})
		all = append([]*podresourcesv1.PodResources(nil), pods...)
		for j := 0; j < n.gpus; j++ {
			uuid := sim.UUID(n.name, j)
			if len(explicit.Owners(podmap.DeviceKey{UUID: uuid, Minor: j, GPUInstance: -1})) > 0 {
				continue
			}
			all = append(all, fakekubelet.GPUPod(n.fillNS, fmt.Sprintf("%s-gpu%d", n.name, j), fillContainer, gpuResource, uuid))
		}
	}
	m := podmap.NewMapping(&podresourcesv1.ListPodResourcesResponse{PodResources: all})
	if ids := m.UnknownDeviceIDs(); len(ids) > 0 {
		klog.InfoS("Device IDs in the pod resources that name no device form; they map to nothing", "node", n.name, "ids", ids)
	}
	n.mapping.Store(m)
}

// current returns the body of the latest snapshot and trailer.
func (n *node) current() *body {
	snap, tr := n.sampler.Latest(), n.trailer()
	if b := n.body.Load(); b != nil && b.snap == snap && b.trailer == tr {
		return b
	}
	b := &body{snap: snap, trailer: tr}
	n.body.Store(b)
	return b
}

// gzipped returns the body compressed, compressing it on first use.
func (b *body) gzipped() []byte {
	b.gzOnce.Do(func() {
		var buf bytes.Buffer
		gz := gzip.NewWriter(&buf)
		// Writes to a bytes.Buffer do not fail.
		_, _ = gz.Write(b.snap.Exposition())
		_, _ = gz.Write(*b.trailer)
		_ = gz.Close()
		b.gz = buf.Bytes()
	})
	return b.gz
}

// ServeHTTP serves the node's /metrics: the device series of the latest
// snapshot, then the self-metrics, gzipped when the client accepts it
// (Prometheus does; the aggregator does not), or only the families the
// request names (exposition.FamilyParam), as the agent's handler.
func (n *node) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	b := n.current()
	w.Header().Set("Content-Type", contentType)
	w.Header().Add("Vary", "Accept-Encoding")
	if f, ok := collector.FamilyFilterOf(r.URL.Query()); ok {
		// The families asked for (the aggregator's), filtered for each
		// request: one scraper per node, so nothing to share. Not gzipped.
		body := f.Body(b.snap.Exposition(), *b.trailer)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
		return
	}
	if collector.AcceptsGzip(r) {
		gz := b.gzipped()
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", strconv.Itoa(len(gz)))
		_, _ = w.Write(gz)
		return
	}
	// Sized, as the agent's: the client reads a known length, not chunks.
	w.Header().Set("Content-Length", strconv.Itoa(len(b.snap.Exposition())+len(*b.trailer)))
	if _, err := w.Write(b.snap.Exposition()); err != nil {
		return
	}
	_, _ = w.Write(*b.trailer)
}
