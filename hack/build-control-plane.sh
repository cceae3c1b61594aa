#!/usr/bin/env bash
# Builds the Kubernetes components the end-to-end tests run against
# (kube-apiserver, kube-controller-manager, kube-scheduler and kubelet from
# k8s.io/kubernetes, through the tools module in hack/tools/k8s) and makes sure
# etcd is installed.
#
# The binaries are cached by version under
#   ${GMS_TOOLS_DIR:-$HOME/.cache/gpu-metrics-server/tools}/kubernetes-<version>/
# so a rerun with both present takes seconds. Each binary is built under a
# temporary name and renamed into place, so an interrupted build never leaves
# a half-written binary behind. On success the script prints that directory
# (and nothing else) on stdout; progress goes to stderr.
#
# A cold build is about 40 CPU-minutes and 3 GB of memory. It runs under
# `nice` with GOFLAGS=-p=1 by default so other work on the machine can still
# compile; set GMS_BUILD_PARALLEL=N to use N parallel compile jobs instead.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_mod="${repo_root}/hack/tools/k8s"

die() {
  echo "hack/build-control-plane.sh: $*" >&2
  exit 1
}

command -v go >/dev/null 2>&1 || die "go is not on PATH; the control plane is built from source with the Go toolchain"

# The version is the one the tools module requires, so the cache key can never
# disagree with what gets built.
version="$(cd "${tools_mod}" && go list -m -f '{{.Version}}' k8s.io/kubernetes)" ||
  die "cannot resolve k8s.io/kubernetes in ${tools_mod} (is the Go module proxy reachable? GOPROXY=$(go env GOPROXY))"
[[ "${version}" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || die "unexpected k8s.io/kubernetes version '${version}'"
major="${BASH_REMATCH[1]}"
minor="${BASH_REMATCH[2]}"

out_dir="${GMS_TOOLS_DIR:-${HOME}/.cache/gpu-metrics-server/tools}/kubernetes-${version}"
mkdir -p "${out_dir}"

# etcd comes from the distribution (Debian's etcd-server).
"${repo_root}/hack/install-deps.sh" >&2 || die "hack/install-deps.sh failed; etcd is required"
command -v etcd >/dev/null 2>&1 || die "etcd is not on PATH after hack/install-deps.sh"

# kubectl parses the server's version, so the build must stamp it.
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${version} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitTreeState=clean"
done
ldflags="-s -w${ldflags}"

parallel="${GMS_BUILD_PARALLEL:-1}"
[[ "${parallel}" =~ ^[1-9][0-9]*$ ]] || die "GMS_BUILD_PARALLEL must be a positive integer, got '${parallel}'"

tmp=""
cleanup() {
  if [[ -n "${tmp}" && -e "${tmp}" ]]; then
    rm -f "${tmp}"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
  target="${out_dir}/${cmd}"
  if [[ -x "${target}" ]] && "${target}" --version 2>/dev/null | grep -qx "Kubernetes ${version}"; then
    echo "hack/build-control-plane.sh: ${cmd} ${version} is cached" >&2
    continue
  fi
  echo "hack/build-control-plane.sh: building ${cmd} ${version} (cold: ~10 CPU-minutes each)" >&2
  tmp="$(mktemp "${out_dir}/.${cmd}.XXXXXX")"
  start=${SECONDS}
  (
    cd "${tools_mod}"
    # Default build settings (cgo on, no -trimpath) so that the packages
    # shared with the main module are reused from the Go build cache.
    GOFLAGS="-p=${parallel}" nice -n 10 go build -ldflags "${ldflags}" -o "${tmp}" "k8s.io/kubernetes/cmd/${cmd}"
  ) || die "building ${cmd} ${version} failed (see the go output above; the module proxy must serve k8s.io/kubernetes ${version})"
  chmod 0755 "${tmp}"
  got="$("${tmp}" --version 2>/dev/null || true)"
  [[ "${got}" == "Kubernetes ${version}" ]] || die "built ${cmd} reports '${got}', want 'Kubernetes ${version}'"
  mv -f "${tmp}" "${target}"
  tmp=""
  echo "hack/build-control-plane.sh: built ${cmd} in $((SECONDS - start))s" >&2
done

echo "${out_dir}"
