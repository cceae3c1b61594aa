package app

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/metadata"
	"k8s.io/klog/v2"

	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app/options"
	"github.com/gpu-metrics-server/gpu-metrics-server/collector"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/provider"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/scrape"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/server"
	"github.com/gpu-metrics-server/gpu-metrics-server/metricsapi/store"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap"
)

// NewStandaloneCommand runs agent and aggregator in one process.
func NewStandaloneCommand() *cobra.Command {
	o := options.NewStandalone()
	return newCommand(&cobra.Command{
		Use:   "standalone",
		Short: "Agent and aggregator in one process: one node, or the demo with --backend=sim",
		Long: `standalone samples this node's GPUs and serves them both on /metrics (as the
agent does) and on custom.metrics.k8s.io (as the aggregator does), feeding
its own samples to the store directly. With --backend=sim and no kubeconfig
it is a self-contained demo: simulated pods (--sim-pods, by default the
demo's) hold the simulated GPUs, and the custom metrics API answers on
127.0.0.1 without authentication.`,
	}, o, func(ctx context.Context) error { return runStandalone(ctx, o) })
}

func runStandalone(ctx context.Context, o *options.Standalone) error {
	l, err := listenHTTP(o.Agent.ListenAddress)
	if err != nil {
		return err
	}
	served := false
	defer func() {
		if !served {
			_ = l.Close()
		}
	}()
	st, err := store.New(o.Store.Config())
	if err != nil {
		return err
	}
	simPods, err := o.SimPods.Config()
	if err != nil {
		return err
	}
	var (
		pods       provider.PodLister
		nodes      provider.NodeLister
		background []func(context.Context)
	)
	if o.Serving.InsecureLoopback {
		klog.InfoS("Serving the custom metrics API WITHOUT authentication: simulated GPUs, loopback only", "bindAddress", o.Serving.SecureServing.BindAddress.String())
		pods = provider.NewStaticPodLister(simPods)
		nodes = provider.NewStaticNodeLister([]provider.StaticNode{{Name: o.Agent.NodeName}})
	} else {
		kc, err := o.Kube.RESTConfig("gpu-metrics-server/standalone")
		if err != nil {
			return err
		}
		meta, err := metadata.NewForConfig(kc)
		if err != nil {
			return err
		}
		l, err := provider.NewMetadataPodLister(meta)
		if err != nil {
			return err
		}
		pods = l
		nl, err := provider.NewMetadataNodeLister(meta)
		if err != nil {
			return err
		}
		nodes = nl
		background = append(background, l.Run, nl.Run)
	}
	srv, err := newAPIServer(o.Serving, st, pods, nodes, server.ReadyCheck{Name: "first-sample", HasSynced: st.HasSynced}, nil)
	if err != nil {
		return err
	}

	var owners func() podmap.Lookup
	if len(simPods) > 0 {
		klog.InfoS("Simulated pods hold the simulated GPUs in place of the kubelet's answer", "pods", o.SimPods.Pods)
		m := podmap.NewMapping(simPodResources(simPods, o.Agent.NodeName, o.Agent.SimGPUs))
		owners = func() podmap.Lookup { return m }
	}
	// The store is fed the agent's own exposition of each snapshot, read
	// by the aggregator's parser: one set of rules (per-pod shares, MIG
	// activity, units) whichever way the samples arrive. The exposition
	// is rendered once per snapshot and cached for /metrics too.
	parser := scrape.NewParser()
	feed := func(snap *collector.Snapshot) {
		samples, _, err := parser.Parse(snap.Exposition(), time.Now())
		if err == nil {
			_, err = st.Append("standalone", time.Now(), samples)
		}
		if err == nil {
			// Its devices are on this node, whatever the hostname label.
			nodes := parser.NodeSamples()
			for i := range nodes {
				nodes[i].Node = snap.Node
			}
			_, err = st.AppendNodes("standalone", time.Now(), nodes)
		}
		if err != nil {
			klog.ErrorS(err, "Feeding the store")
		}
	}
	routes, agentBackground, err := newNodeAgent(o.Agent, o.Kube, agentHooks{onSample: feed, owners: owners})
	if err != nil {
		return err
	}
	background = append(background, agentBackground...)

	// Either server ending ends both.
	errc := make(chan error, 2)
	background = append(background,
		func(ctx context.Context) {
			errc <- serveHTTP(ctx, l, o.Agent.WebConfigFile, routes, func(addr net.Addr) {
				klog.InfoS("Agent listening", "metrics", fmt.Sprintf("http://%s/metrics", addr))
				printDemoHints(o, simPods, addr)
			})
		},
		func(ctx context.Context) { errc <- srv.Run(ctx) },
	)
	served = true
	ctx, cancel := context.WithCancel(ctx)
	wait := runInBackground(ctx, background)
	err = <-errc
	cancel()
	wait()
	return err
}

// printDemoHints tells a person where to look.
func printDemoHints(o *options.Standalone, simPods []provider.StaticPod, agentAddr net.Addr) {
	ss := o.Serving.SecureServing
	api := fmt.Sprintf("https://%s/apis/custom.metrics.k8s.io/v1beta2", net.JoinHostPort(ss.BindAddress.String(), fmt.Sprint(ss.BindPort)))
	fmt.Printf("\ngpu-metrics-server standalone is running.\n\n")
	fmt.Printf("  GPU metrics (Prometheus text):  curl -s http://%s/metrics | grep DCGM_FI_DEV_GPU_UTIL\n", agentAddr)
	if len(simPods) > 0 {
		p := simPods[0]
		fmt.Printf("  HPA's view (custom metrics):    curl -sk '%s/namespaces/%s/pods/*/gpu_utilization?labelSelector=app%%3D%s'\n", api, p.Namespace, p.Labels["app"])
	} else {
		fmt.Printf("  Metrics served:                 curl -sk %s\n", api)
	}
	if o.Agent.Backend == "sim" {
		fmt.Printf("  Drive a simulated GPU:          curl -s -X POST 'http://%s/sim/set?gpu=0&utilization=90'\n", agentAddr)
		fmt.Printf("                                  (gpu_utilization is the mean over the last %v)\n", o.Store.Window)
	}
	fmt.Printf("\nCtrl-C stops it.\n\n")
}
