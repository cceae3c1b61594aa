//go:build e2e

// Package e2e runs gpu-metrics-server against a real Kubernetes control
// plane: etcd, kube-apiserver and kube-controller-manager started on
// loopback with throwaway certificates, the project's aggregator registered
// as the custom.metrics.k8s.io APIService, agents with simulated GPUs fed by
// an in-process fake kubelet, and the controller manager's real
// HorizontalPodAutoscaler controller making the scaling decisions.
//
// There is no scheduler and no kubelet: a pod faker marks each pod of the
// workload under test Running through the status subresource and hands it a
// simulated GPU on one of the agents.
//
// The package holds only the scenarios; the harness they run on is
// e2e/framework, which the side-by-side benchmark (e2e/bench) shares.
//
// Run it with hack/e2e.sh, or `go test -tags e2e ./e2e/...` once
// hack/build-control-plane.sh and the project binary have been built; see
// docs/e2e.md.
package e2e
