//go:build tools

// Package tools pins the Helm command-line tool that the chart tests and
// hack/render-manifests.sh run. hack/build-helm.sh builds it from this module
// with `go build helm.sh/helm/v3/cmd/helm`, so its version is the one in go.mod
// and nothing is downloaded outside the Go module proxy.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
