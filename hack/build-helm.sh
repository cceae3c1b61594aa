#!/usr/bin/env bash
# Builds the Helm CLI that the chart tests and hack/render-manifests.sh use,
# from the tools module hack/tools/helm (helm.sh/helm/v3 through the Go module
# proxy; no binary is downloaded), and prints the path of the binary.
#
# The binary is cached by version:
#   ${GMS_TOOLS_DIR:-$HOME/.cache/gpu-metrics-server/tools}/helm-<version>/helm
# A rerun with that file present only checks that it runs and prints the path.
# The first build compiles Helm and its Kubernetes libraries: several minutes
# on a 2-core machine, run under `nice` so that it yields to other work.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
moddir="${root}/hack/tools/helm"

# The version is the one the tools module requires, so go.mod is the only
# place to bump it.
version="$(awk '$1 == "require" && $2 == "helm.sh/helm/v3" { print $3 }' "${moddir}/go.mod")"
if [[ -z "${version}" ]]; then
  echo "hack/build-helm.sh: no 'require helm.sh/helm/v3 <version>' line in ${moddir}/go.mod" >&2
  exit 1
fi

tools_dir="${GMS_TOOLS_DIR:-${HOME}/.cache/gpu-metrics-server/tools}"
dest_dir="${tools_dir}/helm-${version}"
dest="${dest_dir}/helm"

if [[ -x "${dest}" ]] && "${dest}" version --short >/dev/null 2>&1; then
  echo "${dest}"
  exit 0
fi

# Helm's own release build sets these through -ldflags (see its Makefile):
# the reported version, and the Kubernetes version that `helm template` and
# `helm lint` assume (.Capabilities.KubeVersion) when no cluster is asked,
# derived from the client-go it is built with (v0.X.Y -> 1.X).
client_go="$(cd "${moddir}" && go list -m -f '{{.Version}}' k8s.io/client-go)"
k8s_minor="$(echo "${client_go}" | cut -d. -f2)"
ldflags="-s -w"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=${version}"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${k8s_minor}"
done

mkdir -p "${dest_dir}"
tmp="$(mktemp "${dest_dir}/.helm.XXXXXX")"
trap 'rm -f "${tmp}"' EXIT

echo "hack/build-helm.sh: building helm ${version} (first build takes minutes)" >&2
(
  cd "${moddir}"
  CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "${ldflags}" -o "${tmp}" helm.sh/helm/v3/cmd/helm
)
"${tmp}" version --short >/dev/null
chmod 0755 "${tmp}"
mv -f "${tmp}" "${dest}"
trap - EXIT
echo "${dest}"
