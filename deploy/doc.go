// Package deploy holds what installs gpu-metrics-server on a cluster: the Helm
// chart (helm/gpu-metrics-server), the plain manifests rendered from it
// (manifests/, by hack/render-manifests.sh), examples (examples/: HPAs, a
// Flux HelmRelease, a sample GPU Deployment) and a Grafana dashboard
// (grafana/).
//
// Its tests need the build tag "chart" and a helm binary ($HELM, or the one
// hack/build-helm.sh builds):
//
//	hack/build-helm.sh && go test -tags chart ./deploy/
//
// They lint and render the chart with several value sets and check the
// rendered objects by decoding them strictly into the Kubernetes API types.
// With GMS_TEST_KUBECONFIG set to a throwaway cluster they also check the
// manifests and the RBAC against its kube-apiserver.
package deploy
