// Command gpu-metrics-server serves GPU utilization to the Kubernetes
// HorizontalPodAutoscaler: an agent per GPU node and an aggregator that
// implements custom.metrics.k8s.io. Run it with --help for the subcommands.
package main

import (
	"os"

	"github.com/gpu-metrics-server/gpu-metrics-server/cmd/gpu-metrics-server/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:]))
}
