// Command fleetsim hosts a fleet of simulated gpu-metrics-server agents in
// one process, for the scale measurements of docs/benchmarks.md and
// docs/scaling.md: thousands of nodes without thousands of processes.
//
// Each node is what `gpu-metrics-server agent --backend=sim` is: the
// collector package's simulated GPUs (same UUIDs, same physics) sampled by
// its Sampler every --sample-interval, pods mapped through podmap from
// kubelet-shaped pod resources, and the same exposition (the Snapshot's
// rendering, then a self-metrics block), served on the node's own loopback
// port so that a scraper keeps one connection per node as it would per
// agent. Sampling is spread over the interval; a node's body is rendered at
// most once per snapshot, and gzipped at most once, only if scraped.
//
// The control API (--control-address) lists the nodes, sets utilization
// and sets each node's pods; see controlHandler.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"
)

// options are the command's flags.
type options struct {
	fleetConfig
	ListenHost     string
	ControlAddress string
	TargetsFile    string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run parses args and serves the fleet until SIGINT or SIGTERM. A bad flag
// prints one line naming it and returns 2.
func run(args []string, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "fleetsim: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, o); err != nil {
		klog.ErrorS(err, "fleetsim failed")
		return 1
	}
	return 0
}

// parseFlags parses and validates the flags.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{fleetConfig: fleetConfig{
		Nodes: 100, GPUsPerNode: 8, NodePrefix: "fleet-node-", SampleInterval: time.Second, Utilization: 10,
	}, ListenHost: "127.0.0.1", ControlAddress: "127.0.0.1:9400"}
	fs := pflag.NewFlagSet("fleetsim", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.Nodes, "nodes", o.Nodes, "Simulated nodes (agents), 1-20000.")
	fs.IntVar(&o.GPUsPerNode, "gpus-per-node", o.GPUsPerNode, "Simulated GPUs per node, 1-64.")
	fs.StringVar(&o.NodePrefix, "node-prefix", o.NodePrefix, "Node names are this prefix and the node's index.")
	fs.DurationVar(&o.SampleInterval, "sample-interval", o.SampleInterval, "Sampling interval of each node (the agent's --sample-interval), at least 10ms.")
	fs.Float64Var(&o.Utilization, "utilization", o.Utilization, "Initial utilization of every GPU, percent.")
	fs.StringVar(&o.FillNamespace, "fill-namespace", o.FillNamespace, "If set, every GPU no pod set through the control API holds is held by a synthetic pod <namespace>/<node>-gpu<j>.")
	fs.StringVar(&o.ListenHost, "listen-host", o.ListenHost, "Address the nodes listen on, each on a port the kernel picks.")
	fs.StringVar(&o.ControlAddress, "control-address", o.ControlAddress, "host:port of the control API.")
	fs.StringVar(&o.TargetsFile, "targets-file", o.TargetsFile, "If set, the node list of GET /targets is written here (JSON) once every node listens.")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, o.validate()
}

// flagError names the flag a bad value came from.
func flagError(flag string, format string, args ...any) error {
	return fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...))
}

func (o *options) validate() error {
	switch {
	case o.Nodes < 1 || o.Nodes > 20000:
		return flagError("nodes", "%d out of range 1-20000", o.Nodes)
	case o.GPUsPerNode < 1 || o.GPUsPerNode > 64:
		return flagError("gpus-per-node", "%d out of range 1-64", o.GPUsPerNode)
	case o.NodePrefix == "":
		return flagError("node-prefix", "must not be empty")
	case o.SampleInterval < 10*time.Millisecond:
		return flagError("sample-interval", "%v is below 10ms", o.SampleInterval)
	case !(o.Utilization >= 0 && o.Utilization <= 100):
		return flagError("utilization", "%v out of range 0-100", o.Utilization)
	case net.ParseIP(o.ListenHost) == nil:
		return flagError("listen-host", "%q is not an IP address", o.ListenHost)
	}
	if o.FillNamespace != "" {
		if errs := validation.IsDNS1123Label(o.FillNamespace); len(errs) > 0 {
			return flagError("fill-namespace", "%q: %s", o.FillNamespace, errs[0])
		}
	}
	host, port, err := net.SplitHostPort(o.ControlAddress)
	if err != nil {
		return flagError("control-address", "%v", err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 || net.ParseIP(host) == nil {
		return flagError("control-address", "%q: want <ip>:<port>", o.ControlAddress)
	}
	return nil
}

// serve builds the fleet, opens one listener per node and the control API,
// and serves until ctx is done.
func serve(ctx context.Context, o *options) error {
	start := time.Now()
	f, err := newFleet(o.fleetConfig)
	if err != nil {
		return err
	}
	var servers []*http.Server
	var wg sync.WaitGroup
	defer func() {
		for _, s := range servers {
			_ = s.Close()
		}
		wg.Wait()
	}()
	listen := func(addr string, h http.Handler) (net.Addr, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
		servers = append(servers, s)
		wg.Go(func() {
			if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				klog.ErrorS(err, "Serving", "address", l.Addr())
			}
		})
		return l.Addr(), nil
	}
	// The control port is taken first: the nodes' ports come from the
	// kernel's ephemeral range, where a chosen control port may lie.
	var l listing
	control, err := listen(o.ControlAddress, controlHandler(f, &l))
	if err != nil {
		return fmt.Errorf("control API: %w", err)
	}
	targets := targetList{Nodes: make([]target, len(f.nodes))}
	for i, n := range f.nodes {
		mux := http.NewServeMux()
		mux.Handle("/metrics", n)
		addr, err := listen(net.JoinHostPort(o.ListenHost, "0"), mux)
		if err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		targets.Nodes[i] = target{Name: n.name, URL: "http://" + addr.String() + "/metrics"}
	}
	l.publish(targets)
	if o.TargetsFile != "" {
		data, err := json.Marshal(targets)
		if err != nil {
			return err
		}
		if err := writeFileAtomic(o.TargetsFile, data); err != nil {
			return fmt.Errorf("--targets-file: %w", err)
		}
	}
	klog.InfoS("Fleet serving", "nodes", len(f.nodes), "gpusPerNode", o.GPUsPerNode, "control", control,
		"fillNamespace", o.FillNamespace, "startup", time.Since(start).Round(time.Millisecond))
	f.run(ctx)
	return nil
}

// writeFileAtomic writes data to path through a temporary file and a
// rename, so that a reader never sees half of it.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
