//go:build e2e

// Package e2e runs gpu-metrics-server against a real Kubernetes cluster:
// etcd, kube-apiserver, kube-controller-manager and kube-scheduler started
// on loopback with throwaway certificates, and real kubelets v1.37.2 (a
// node without GPUs for the whole run, GPU nodes per test), each in its own
// mount namespace with a fake container runtime and a device plugin that
// advertises simulated GPUs as NVIDIA's plugin names them. The scheduler
// places the workloads, the kubelets' device managers allocate their GPUs
// and report them on the pod-resources socket the project's agents read;
// the aggregator is registered as the custom.metrics.k8s.io APIService and
// the controller manager's real HorizontalPodAutoscaler controller makes the
// scaling decisions. The chart is installed with helm into the same
// cluster.
//
// A fake kubelet and a pod faker stand in for the nodes only where a real
// kubelet cannot show a fault (TestFaultyKubelet).
//
// The package holds only the scenarios; the harness they run on is
// e2e/framework, which the side-by-side benchmark (e2e/bench) shares.
//
// Run it with hack/e2e.sh (as root), or `go test -tags e2e ./e2e/...`; see
// docs/e2e.md.
package e2e
