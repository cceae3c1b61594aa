//go:build tools

// Package tools pins sigs.k8s.io/prometheus-adapter, the adapter of the chain
// gpu-metrics-server replaces, so that the benchmark harness can run it side
// by side with the aggregator (hack/build-prometheus-adapter.sh builds it).
package tools

import _ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
