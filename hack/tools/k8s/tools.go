//go:build tools

// Package tools records the Kubernetes commands that
// hack/build-control-plane.sh builds for the end-to-end tests (the control
// plane, the scheduler and the kubelet), so that `go mod tidy` keeps their
// dependencies in go.mod and go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
