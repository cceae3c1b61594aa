package main

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"
	"k8s.io/klog/v2"
)

// sampleSlots is how many groups the nodes are sampled in, one group per
// 1/sampleSlots of the sample interval, so that the fleet's sampling (and
// the snapshot times the scrapers see) is spread like independent agents'
// rather than done in one burst.
const sampleSlots = 50

// fleetConfig says what to simulate.
type fleetConfig struct {
	// Nodes is the number of simulated agents.
	Nodes int
	// GPUsPerNode is the number of simulated GPUs of each agent.
	GPUsPerNode int
	// NodePrefix + the node's index is each node's name (the agent's
	// --node-name, the hostname label).
	NodePrefix string
	// SampleInterval is each node's sampling interval (the agent's
	// --sample-interval); a node's body is rendered at most once per
	// snapshot.
	SampleInterval time.Duration
	// Utilization is every GPU's initial utilization in percent.
	Utilization float64
	// FillNamespace, when set, gives every GPU that no pod set through the
	// control API holds a synthetic pod <FillNamespace>/<node>-gpu<j>, so
	// that every series carries pod labels as on a busy cluster.
	FillNamespace string
}

// fleet is the set of simulated nodes and the sampling loop that drives
// them.
type fleet struct {
	cfg   fleetConfig
	nodes []*node
	// trailer is the self-metrics block appended to every node's
	// exposition (an agent serves its Go, process and sampler metrics
	// after the device series); rendered once per sample interval.
	trailer atomic.Pointer[[]byte]
	reg     *prometheus.Registry
}

// newFleet builds the nodes and takes one sample of each, so that every
// node serves a complete exposition from the start.
func newFleet(cfg fleetConfig) (*fleet, error) {
	f := &fleet{cfg: cfg, nodes: make([]*node, cfg.Nodes), reg: prometheus.NewRegistry()}
	if err := f.reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, err
	}
	if err := f.reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, err
	}
	for i := range f.nodes {
		// Node 0's sampler metrics stand for every node's in the shared
		// trailer: same families and size as an agent serves.
		var reg prometheus.Registerer
		if i == 0 {
			reg = f.reg
		}
		n, err := newNode(fmt.Sprintf("%s%d", cfg.NodePrefix, i), cfg, reg, f.currentTrailer)
		if err != nil {
			return nil, err
		}
		f.nodes[i] = n
	}
	now := time.Now()
	for _, n := range f.nodes {
		n.sampler.SampleOnce(now)
	}
	if err := f.renderTrailer(); err != nil {
		return nil, err
	}
	return f, nil
}

// node returns node i.
func (f *fleet) node(i int) (*node, error) {
	if i < 0 || i >= len(f.nodes) {
		return nil, fmt.Errorf("node %d out of range: %d nodes", i, len(f.nodes))
	}
	return f.nodes[i], nil
}

// currentTrailer returns the latest self-metrics block.
func (f *fleet) currentTrailer() *[]byte { return f.trailer.Load() }

// renderTrailer gathers the registry into a new self-metrics block.
func (f *fleet) renderTrailer() error {
	mfs, err := f.reg.Gather()
	if err != nil {
		return fmt.Errorf("gathering self-metrics: %w", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return fmt.Errorf("encoding self-metrics: %w", err)
		}
	}
	b := buf.Bytes()
	f.trailer.Store(&b)
	return nil
}

// run samples the nodes, one slot of them every SampleInterval/sampleSlots,
// and refreshes the trailer once per interval, until ctx is done.
func (f *fleet) run(ctx context.Context) {
	tick := time.NewTicker(f.cfg.SampleInterval / sampleSlots)
	defer tick.Stop()
	for slot := 0; ; slot = (slot + 1) % sampleSlots {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			for i := slot; i < len(f.nodes); i += sampleSlots {
				f.nodes[i].sampler.SampleOnce(now)
			}
		}
		if slot == sampleSlots-1 {
			if err := f.renderTrailer(); err != nil {
				klog.ErrorS(err, "Keeping the previous self-metrics block")
			}
		}
	}
}
