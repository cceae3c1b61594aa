#!/usr/bin/env bash
# Runs the end-to-end suite (e2e/, on the shared harness e2e/framework;
# build tag e2e) against a real cluster: builds (or reuses from the cache)
# kube-apiserver, kube-controller-manager, kube-scheduler and kubelet, and
# helm, installs etcd, builds bin/gpu-metrics-server and the nodes' test
# commands (hack/fakecri, hack/deviceplugin) and runs the tests. The nodes
# run in private mount namespaces: it needs root and util-linux (unshare,
# nsenter, mount). The benchmark e2e/bench also needs the benchcompare tag
# and is not run here (hack/bench-compare.sh). Any missing piece fails the
# run with a message; nothing is skipped silently. Extra arguments go to
# `go test` (e.g. -run TestControlPlane).
#
# See docs/e2e.md.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

die() {
  echo "hack/e2e.sh: FAIL: $*" >&2
  exit 1
}

bash hack/install-deps.sh || die "hack/install-deps.sh could not install etcd"
command -v kubectl >/dev/null 2>&1 || [[ -n "${GMS_KUBECTL:-}" ]] ||
  die "kubectl is not on PATH (set GMS_KUBECTL to its path)"
[[ "$(id -u)" == 0 ]] || die "the nodes' kubelets run in private mount namespaces: run as root"
for tool in unshare nsenter mount; do
  command -v "${tool}" >/dev/null 2>&1 || die "${tool} (util-linux) is not on PATH; each node runs in its own mount namespace"
done

if [[ -z "${GMS_CONTROL_PLANE_DIR:-}" ]]; then
  # The build prints the cache directory on its last stdout line.
  cp_out="$(bash hack/build-control-plane.sh)" ||
    die "the Kubernetes components (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet) could not be built; it needs the Go module proxy (GOPROXY=$(go env GOPROXY)), or set GMS_CONTROL_PLANE_DIR to a directory holding them"
  GMS_CONTROL_PLANE_DIR="$(tail -n 1 <<<"${cp_out}")"
  export GMS_CONTROL_PLANE_DIR
fi
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
  [[ -x "${GMS_CONTROL_PLANE_DIR}/${b}" ]] || die "${GMS_CONTROL_PLANE_DIR}/${b} is missing"
done

if [[ -z "${GMS_BIN:-}" ]]; then
  if [[ -f Makefile ]]; then
    make build >&2 || die "make build failed"
  else
    CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}" \
      go build -o bin/gpu-metrics-server ./cmd/gpu-metrics-server || die "building bin/gpu-metrics-server failed"
  fi
  GMS_BIN="${repo_root}/bin/gpu-metrics-server"
  export GMS_BIN
fi
[[ -x "${GMS_BIN}" ]] || die "${GMS_BIN} is missing"

# The nodes' test commands: a fake container runtime and a device plugin.
if [[ -z "${GMS_FAKECRI:-}" || -z "${GMS_DEVICE_PLUGIN:-}" ]]; then
  go build -o bin/ ./hack/fakecri ./hack/deviceplugin || die "building hack/fakecri and hack/deviceplugin failed"
  export GMS_FAKECRI="${GMS_FAKECRI:-${repo_root}/bin/fakecri}"
  export GMS_DEVICE_PLUGIN="${GMS_DEVICE_PLUGIN:-${repo_root}/bin/deviceplugin}"
fi

# helm installs the chart into the cluster (TestHelmChart).
if [[ -z "${HELM:-}" ]]; then
  HELM="$(bash hack/build-helm.sh)" || die "building helm failed (hack/build-helm.sh needs the Go module proxy), or set HELM"
  export HELM
fi

echo "hack/e2e.sh: Kubernetes from ${GMS_CONTROL_PLANE_DIR}, binary ${GMS_BIN}, helm ${HELM}" >&2
exec go test -tags e2e -v -count=1 -timeout 20m "$@" ./e2e/...
