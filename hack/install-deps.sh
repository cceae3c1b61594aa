#!/usr/bin/env bash
# Installs the system packages the tests need: etcd (end-to-end control
# plane) and Prometheus: promtool (exposition lint) and the server itself
# (the Grafana dashboard's queries evaluated against the simulated agent).
# Idempotent; a no-op when everything is present.
set -euo pipefail

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  need+=(prometheus)
fi
command -v gcc >/dev/null 2>&1 || need+=(gcc)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "hack/install-deps.sh: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# --no-install-recommends keeps the Prometheus package from pulling in
# exporters we do not run; policy-rc.d-less containers do not start services.
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
for c in etcd promtool prometheus; do
  command -v "$c" >/dev/null 2>&1 || { echo "hack/install-deps.sh: $c still missing after install" >&2; exit 1; }
done
