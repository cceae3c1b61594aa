//go:build e2e

// Package framework is the end-to-end harness that the e2e suite and the
// side-by-side benchmark (e2e/bench) share: a real control plane (etcd,
// kube-apiserver, kube-controller-manager) started on loopback with
// throwaway certificates, one step per component (controlplane.go); the
// components as process groups that die with the test binary
// (process.go); the project's agents, pod faker and aggregator for one
// test (gms.go, podfaker.go); the custom.metrics.k8s.io registration
// (apiservice.go); and the Kubernetes helpers the scenarios assert with
// (kube.go). Main is each suite's TestMain.
//
// Every file is behind the e2e build tag: the package is only built for
// those suites. See docs/e2e.md.
package framework
