package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
)

// NewAgentCommand is the node agent.
func NewAgentCommand() *cobra.Command {
	o := options.NewAgent()
	return newCommand(&cobra.Command{
		Use:   "agent",
		Short: "Read this node's GPUs and serve them on /metrics, attributed to pods",
	}, o, func(ctx context.Context) error { return runAgent(ctx, o) })
}

func runAgent(ctx context.Context, o *options.Agent) error {
	oneProc()
	l, err := listenHTTP(o.Agent.ListenAddress)
	if err != nil {
		return err
	}
	auth, err := newMetricsAuth(o.Auth, o.Kube)
	if err != nil {
		_ = l.Close()
		return err
	}
	if auth != nil && o.Agent.WebConfigFile == "" {
		klog.InfoS("Warning: /metrics asks for bearer tokens over plain HTTP (no --web.config.file): they travel in clear text, and the aggregator sends its token to https targets only")
	}
	routes, background, err := newNodeAgent(o.Agent, o.Kube, agentHooks{auth: auth})
	if err != nil {
		_ = l.Close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	wait := runInBackground(ctx, background)
	err = serveHTTP(ctx, l, o.Agent.WebConfigFile, routes, func(addr net.Addr) {
		klog.InfoS("Agent listening", "metrics", fmt.Sprintf("http://%s/metrics", addr), "authnAuthz", o.Auth.Mode)
	})
	cancel()
	wait()
	return err
}

// oneProc runs the agent's Go code on one processor unless the GOMAXPROCS
// environment variable says otherwise. The agent's work is a sampling round
// a second and a scrape every few seconds; with more processors each wake-up
// hands goroutines between threads (futex wakes, the scheduler spinning),
// which cost more than the work: at 8 simulated GPUs, 1 s sampling and a
// scrape every 2 s, 1.62 millicores with one against 2.12 with two
// (docs/benchmarks.md). NVML's blocking calls still run beside it: a
// goroutine in a C call gives its processor up. It also fixes GOMAXPROCS,
// so the runtime stops re-reading the container's CPU limit every second.
func oneProc() {
	if v := os.Getenv("GOMAXPROCS"); v != "" {
		klog.V(2).InfoS("GOMAXPROCS from the environment", "GOMAXPROCS", v)
		return
	}
	runtime.GOMAXPROCS(1)
}
