#!/usr/bin/env bash
# Measures the agent's memory under a flood of concurrent scrapes: an agent
# with GPUS simulated GPUs, CLIENTS clients scraping /metrics at once (each
# on its own connection, asking gzip unless GZIP=false) for DURATION
# seconds; prints the agent's RSS before, its peak (VmHWM) and after.
# Usage: hack/scrape-flood.sh [CLIENTS=200] [DURATION=10] [GPUS=8]
# GMS_BIN picks the binary (default bin/gpu-metrics-server).
set -euo pipefail
clients="${1:-200}"; duration="${2:-10}"; gpus="${3:-8}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${GMS_BIN:-${root}/bin/gpu-metrics-server}"
port="${GMS_PORT:-19403}"
flood="$(mktemp -d)/scrapeflood"
(cd "${root}" && go build -o "${flood}" ./hack/scrapeflood)
"${bin}" agent --backend=sim --sim-gpus="${gpus}" --node-name=flood --pod-resources-socket= \
  --web.listen-address="127.0.0.1:${port}" >/dev/null 2>&1 &
agent=$!
trap 'kill ${agent} 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:${port}/readyz" >/dev/null && break; sleep 0.2; done
kib() { awk -v k="$1" '$1 == k":" {printf "%.1f", $2/1024}' "/proc/${agent}/status"; }
before="$(kib VmRSS)"
"${flood}" --url="http://127.0.0.1:${port}/metrics" --clients="${clients}" --duration="${duration}s" --gzip="${GZIP:-true}"
printf 'agent RSS: %s MiB before, peak %s MiB, %s MiB after %s clients for %ss (gzip %s)\n' \
  "${before}" "$(kib VmHWM)" "$(kib VmRSS)" "${clients}" "${duration}" "${GZIP:-true}"
