// Command fakekubelet serves a kubelet pod-resources API on a unix socket
// whose answer maps --pods pods onto the --gpus simulated GPUs of node
// --node (round robin; several pods on one GPU get time-slicing replica IDs
// "<UUID>::<n>"). It is a measurement and demo aid for the agent; tests use
// the podmap/fakekubelet package directly.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/gpu-metrics-server/gpu-metrics-server/collector/sim"
	"github.com/gpu-metrics-server/gpu-metrics-server/podmap/fakekubelet"
)

func main() {
	socket := flag.String("socket", "", "unix socket to serve on (required)")
	node := flag.String("node", "", "node name the simulated GPUs belong to (the agent's --node-name)")
	gpus := flag.Int("gpus", 8, "simulated GPUs on the node")
	pods := flag.Int("pods", 8, "pods to map onto them")
	namespace := flag.String("namespace", "default", "the pods' namespace")
	flag.Parse()
	if *socket == "" || *node == "" || *gpus <= 0 || *pods < 0 {
		fmt.Fprintln(os.Stderr, "fakekubelet: --socket and --node are required, --gpus must be positive, --pods not negative")
		os.Exit(2)
	}
	srv, err := fakekubelet.Start(*socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakekubelet:", err)
		os.Exit(1)
	}
	defer srv.Stop()
	srv.SetPods(Pods(*namespace, *node, *gpus, *pods))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}

// Pods spreads n pods over the node's GPUs round robin; when pods outnumber
// GPUs, every pod gets a time-slicing replica ID.
func Pods(namespace, node string, gpus, n int) []*podresourcesv1.PodResources {
	out := make([]*podresourcesv1.PodResources, 0, n)
	for i := 0; i < n; i++ {
		id := sim.UUID(node, i%gpus)
		if n > gpus {
			id = fmt.Sprintf("%s::%d", id, i/gpus)
		}
		out = append(out, fakekubelet.GPUPod(namespace, fmt.Sprintf("gpu-pod-%d", i), "main", "nvidia.com/gpu", id))
	}
	return out
}
