//go:build e2e

// Package framework is the end-to-end harness that the e2e suite and the
// side-by-side benchmark (e2e/bench) share: a real control plane (etcd,
// kube-apiserver, kube-controller-manager, and with Config.Kubelets
// kube-scheduler and a node without GPUs) started on loopback with
// throwaway certificates, one step per component (controlplane.go); real
// nodes, each a kubelet with the fake container runtime and the test
// device plugin in its own mount namespace (node.go); the check that a run
// leaves nothing on the host (hostcheck.go); the components as process
// groups that die with the test binary (process.go); the project's agents
// and aggregator for one test (gms.go), the pod faker for the fault cases
// and the benchmark (podfaker.go); the custom.metrics.k8s.io registration
// (apiservice.go); helm (helm.go); and the Kubernetes helpers the
// scenarios assert with (kube.go). Main is each suite's TestMain.
//
// Every file is behind the e2e build tag: the package is only built for
// those suites. See docs/e2e.md.
package framework
