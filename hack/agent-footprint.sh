#!/usr/bin/env bash
# Measures the agent's footprint: RSS and CPU (from /proc) after DURATION
# seconds with GPUS simulated GPUs sampled every second, PODS pods mapped
# through a fake kubelet, and a scrape of /metrics every 2 s (the
# aggregator's default interval).
# Usage: hack/agent-footprint.sh [DURATION=60] [GPUS=8] [PODS=0]
# GMS_BACKEND=nvml reads the machine's real GPUs instead (GPUS is ignored).
# The scrapes reuse one keep-alive connection, as Prometheus and the
# aggregator do; GMS_SCRAPE=new-connection opens one per scrape (curl).
# Needs python3 (keep-alive) or curl, awk and GNU dd.
#
# The binary's pages are written back and dropped from the page cache first
# (only that file's clean, unmapped pages: a running copy keeps its own), so
# the agent starts as on a node that has just pulled its image: a binary the
# linker has just written sits in the page cache in a state that maps whole
# blocks of it at each fault (65 MiB file-backed against 44 MiB for the
# same binary read from disk, 2026-11-30). The figures are taken twice: 1 s
# after start (package initialisation and set-up) and at the end; the
# file-backed part is split into the binary's code (r-x) and its read-only
# data (r--: type data, constants, the pclntab).
set -euo pipefail
duration="${1:-60}"; gpus="${2:-8}"; pods="${3:-0}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${GMS_BIN:-${root}/bin/gpu-metrics-server}"
port="${GMS_PORT:-19402}"
log="$(mktemp)"
args=(agent --node-name=footprint --web.listen-address="127.0.0.1:${port}")
if [ "${GMS_BACKEND:-sim}" = nvml ]; then
  args+=(--backend=nvml)
else
  args+=(--backend=sim --sim-gpus="${gpus}")
fi
# get URL: the body on stdout, non-zero on failure (curl, or python3 where
# there is no curl).
get() {
  if command -v curl >/dev/null; then curl -sf "$1"; else
    python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
  fi
}
# calc EXPR: floating-point arithmetic.
calc() { awk "BEGIN {print $1}"; }
if [ "${pods}" -gt 0 ]; then
  sock="$(mktemp -d)/kubelet.sock"
  fk="$(mktemp -d)/fakekubelet"
  (cd "${root}" && go build -o "${fk}" ./hack/fakekubelet)
  "${fk}" --socket="${sock}" --node=footprint --gpus="${gpus}" --pods="${pods}" &
  kubelet=$!
  trap 'kill ${kubelet} 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do [ -S "${sock}" ] && break; sleep 0.2; done
  args+=(--pod-resources-socket="${sock}")
else
  args+=(--pod-resources-socket=)
fi
sync "${bin}"
dd if="${bin}" iflag=nocache count=0 status=none
"${bin}" "${args[@]}" >"${log}" 2>&1 &
agent=$!
trap 'kill ${agent} ${kubelet:-} 2>/dev/null || true' EXIT
# memory PID: RSS, anonymous and file-backed KiB (proportional set sizes
# but RSS), and those of the binary's code and read-only data mappings.
memory() {
  local rss anon file
  rss="$(awk '/^VmRSS/ {print $2}' /proc/"$1"/status)"
  anon="$(awk '/^Pss_Anon/ {print $2}' /proc/"$1"/smaps_rollup)"
  file="$(awk '/^Pss_File/ {print $2}' /proc/"$1"/smaps_rollup)"
  echo "${rss} ${anon} ${file} $(awk -v exe="$(readlink /proc/"$1"/exe)" '
    /^[0-9a-f]+-[0-9a-f]+ / {perm = $2; mine = ($6 == exe)}
    /^Pss:/ && mine && perm ~ /x/ {code += $2}
    /^Pss:/ && mine && perm == "r--p" {ro += $2}
    END {print code + 0, ro + 0}' /proc/"$1"/smaps)"
}
# mib KIB
mib() { calc "$1/1024"; }
sleep 1
read -r rss0 anon0 file0 code0 ro0 <<<"$(memory "${agent}")"
tck="$(getconf CLK_TCK)"
# CPU time two ways: the scheduler's nanoseconds on CPU summed over the
# agent's threads (exact), and the clock ticks of /proc/PID/stat (10 ms
# granularity, charged by sampling: noisy at a few millicores).
oncpu() { cat /proc/"${agent}"/task/*/schedstat | awk '{s += $1} END {printf "%d", s}'; }
ns0="$(oncpu)"
cpu0="$(awk '{print $14+$15}' /proc/${agent}/stat)"
start="$(date +%s.%N)"
end=$(( $(date +%s) + duration ))
scrapes=0
if [ "${GMS_SCRAPE:-keep-alive}" = keep-alive ]; then
  # One client process for the whole run: its start-up is not in the
  # figures, and every scrape rides the same connection.
  scrapes="$(python3 - "${port}" "${duration}" <<'PY'
import http.client, sys, time
port, duration = int(sys.argv[1]), float(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
end, n = time.time() + duration, 0
while time.time() < end:
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        r.read()
        n += r.status == 200
    except (OSError, http.client.HTTPException):
        conn.close()
    time.sleep(2)
print(n)
PY
)"
else
  while [ "$(date +%s)" -lt "${end}" ]; do
    get "http://127.0.0.1:${port}/metrics" >/dev/null && scrapes=$((scrapes + 1))
    sleep 2
  done
fi
cpu1="$(awk '{print $14+$15}' /proc/${agent}/stat)"
ns1="$(oncpu)"
elapsed="$(calc "$(date +%s.%N) - ${start}")"
read -r rss anon file code ro <<<"$(memory "${agent}")"
hwm="$(awk '/^VmHWM/ {print $2}' /proc/${agent}/status)"
series="$(get "http://127.0.0.1:${port}/metrics" | grep -c '^DCGM_FI_DEV_GPU_UTIL{' || true)"
printf 'agent footprint: %s GPUs, %s pods, %s GPU_UTIL series, %ss, %s scrapes (%s)\n' "${gpus}" "${pods}" "${series}" "${duration}" "${scrapes}" "${GMS_SCRAPE:-keep-alive}"
printf '  RSS %.1f MiB (peak %.1f MiB): anonymous %.1f MiB, file-backed (the binary) %.1f MiB (code %.1f, read-only data %.1f)\n' \
  "$(mib "${rss}")" "$(mib "${hwm}")" "$(mib "${anon}")" "$(mib "${file}")" "$(mib "${code}")" "$(mib "${ro}")"
printf '  1 s after start: RSS %.1f MiB: anonymous %.1f MiB, file-backed %.1f MiB (code %.1f, read-only data %.1f)\n' \
  "$(mib "${rss0}")" "$(mib "${anon0}")" "$(mib "${file0}")" "$(mib "${code0}")" "$(mib "${ro0}")"
printf '  read-ahead of the disk holding the binary: %s KiB\n' "$(cat /sys/block/*/queue/read_ahead_kb 2>/dev/null | sort -n | tail -1)"
printf '  CPU %.2f millicores on CPU (%.1f ms over %.1f s; %d clock ticks, %.2f millicores)\n' \
  "$(calc "(${ns1}-${ns0})/1000000/${elapsed}")" "$(calc "(${ns1}-${ns0})/1000000")" "${elapsed}" \
  "$((cpu1 - cpu0))" "$(calc "(${cpu1}-${cpu0})*1000/${tck}/${elapsed}")"
