#!/usr/bin/env bash
# Builds sigs.k8s.io/prometheus-adapter (the adapter of the chain that
# gpu-metrics-server replaces) from the tools module
# hack/tools/prometheus-adapter, for the side-by-side benchmark
# (make bench-compare), and prints the binary's path. No binary is
# downloaded: the source comes from the Go module proxy.
#
# Cached by version:
#   ${GMS_TOOLS_DIR:-$HOME/.cache/gpu-metrics-server/tools}/prometheus-adapter-<version>/adapter
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
moddir="${root}/hack/tools/prometheus-adapter"
version="$(awk '$1 == "require" && $2 == "sigs.k8s.io/prometheus-adapter" { print $3 }' "${moddir}/go.mod")"
if [[ -z "${version}" ]]; then
  echo "hack/build-prometheus-adapter.sh: no 'require sigs.k8s.io/prometheus-adapter <version>' line in ${moddir}/go.mod" >&2
  exit 1
fi
tools_dir="${GMS_TOOLS_DIR:-${HOME}/.cache/gpu-metrics-server/tools}"
dest_dir="${tools_dir}/prometheus-adapter-${version}"
dest="${dest_dir}/adapter"
if [[ -x "${dest}" ]]; then
  echo "${dest}"
  exit 0
fi
mkdir -p "${dest_dir}"
tmp="$(mktemp "${dest_dir}/.adapter.XXXXXX")"
trap 'rm -f "${tmp}"' EXIT
echo "hack/build-prometheus-adapter.sh: building prometheus-adapter ${version} (first build takes minutes)" >&2
start=$(date +%s)
(
  cd "${moddir}"
  CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" -o "${tmp}" sigs.k8s.io/prometheus-adapter/cmd/adapter
)
{ "${tmp}" --help 2>&1 || true; } | grep -q -- '--prometheus-url' || { echo "hack/build-prometheus-adapter.sh: the built adapter does not run" >&2; exit 1; }
chmod 0755 "${tmp}"
mv -f "${tmp}" "${dest}"
trap - EXIT
echo "hack/build-prometheus-adapter.sh: built in $(( $(date +%s) - start ))s" >&2
echo "${dest}"
