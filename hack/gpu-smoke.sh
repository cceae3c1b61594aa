#!/usr/bin/env bash
# GPU smoke test of the agent on a real NVIDIA GPU with its driver:
#  1. runs `gpu-metrics-server agent --backend=nvml`;
#  2. checks the UUIDs and names on /metrics against nvidia-smi;
#  3. loads the GPU (a PyTorch matmul loop when torch imports) and checks that
#     DCGM_FI_DEV_GPU_UTIL rises above 80, then falls below 10 after;
#  4. prints the agent's RSS and sample duration.
# Usage: hack/gpu-smoke.sh [path/to/gpu-metrics-server]  (default bin/gpu-metrics-server)
# Exit status 0 only when every check passed.
set -euo pipefail

bin="${1:-bin/gpu-metrics-server}"
port="${GMS_SMOKE_PORT:-19400}"
url="http://127.0.0.1:${port}/metrics"
fail=0
log="$(mktemp)"

command -v nvidia-smi >/dev/null || { echo "FAIL: nvidia-smi not found: not a GPU machine"; exit 1; }
nvidia-smi --query-gpu=index,uuid,name,driver_version,memory.total --format=csv

"${bin}" agent --backend=nvml --node-name=smoke --sample-interval=1s \
  --web.listen-address="127.0.0.1:${port}" --pod-resources-socket="" -v=2 >"${log}" 2>&1 &
agent=$!
load=""
cleanup() {
  [ -n "${load}" ] && kill "${load}" 2>/dev/null || true
  kill "${agent}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

# scrape prints /metrics; fetch works without curl too.
scrape() { python3 - "$url" <<'PY'
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
PY
}
util() { scrape | awk '/^DCGM_FI_DEV_GPU_UTIL\{/ {print $NF}' | sort -n | tail -1; }

for i in $(seq 1 50); do
  if scrape 2>/dev/null | grep -q '^DCGM_FI_DEV_GPU_UTIL{'; then break; fi
  if ! kill -0 "${agent}" 2>/dev/null; then echo "FAIL: agent exited"; cat "${log}"; exit 1; fi
  sleep 0.2
done
echo "== agent up after ~$((i * 200)) ms"
scrape | grep '^DCGM_FI_DEV_' | head -20

echo "== identity: nvidia-smi vs /metrics"
while IFS=, read -r uuid name; do
  uuid="$(echo "${uuid}" | xargs)"; name="$(echo "${name}" | xargs)"
  if scrape | grep '^DCGM_FI_DEV_GPU_UTIL{' | grep -F "UUID=\"${uuid}\"" | grep -qF "modelName=\"${name}\""; then
    echo "ok   ${uuid} ${name}"
  else
    echo "FAIL ${uuid} ${name} not on /metrics"; fail=1
  fi
done < <(nvidia-smi --query-gpu=uuid,name --format=csv,noheader)

echo "== load"
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  python3 - <<'PY' &
import time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
end = time.time() + 20
while time.time() < end:
    for _ in range(20):
        c = a @ b
    torch.cuda.synchronize()
PY
  load=$!
  peak=0
  for i in $(seq 1 30); do
    sleep 0.5
    u="$(util)"; u="${u%.*}"
    [ "${u:-0}" -gt "${peak}" ] && peak="${u}"
    [ "${peak}" -gt 80 ] && break
  done
  echo "peak DCGM_FI_DEV_GPU_UTIL under load: ${peak}"
  [ "${peak}" -gt 80 ] || { echo "FAIL: utilization did not rise above 80"; fail=1; }
  kill "${load}" 2>/dev/null || true; wait "${load}" 2>/dev/null || true; load=""
  low=100
  for i in $(seq 1 40); do
    sleep 0.5
    u="$(util)"; u="${u%.*}"
    low="${u:-100}"
    [ "${low}" -lt 10 ] && break
  done
  echo "DCGM_FI_DEV_GPU_UTIL after load: ${low} (after ~$((i * 500)) ms)"
  [ "${low}" -lt 10 ] || { echo "FAIL: utilization did not fall below 10"; fail=1; }
else
  echo "FAIL: python3 with CUDA-enabled torch not available; cannot put load on the GPU"; fail=1
fi

echo "== footprint"
rss_kib="$(awk '/^VmRSS/ {print $2}' "/proc/${agent}/status")"
echo "agent RSS: $((rss_kib / 1024)) MiB (${rss_kib} KiB)"
scrape | grep -E '^gpu_metrics_server_sample_duration_seconds_(sum|count)|^gpu_metrics_server_devices |^gpu_metrics_server_sample_errors_total' || true
sum="$(scrape | awk '/^gpu_metrics_server_sample_duration_seconds_sum/ {print $2}')"
cnt="$(scrape | awk '/^gpu_metrics_server_sample_duration_seconds_count/ {print $2}')"
python3 -c "print(f'mean sample duration: {1000*float($sum)/float($cnt):.3f} ms over {int(float($cnt))} rounds')"
utime_stime="$(awk '{print $14+$15}' "/proc/${agent}/stat")"
echo "agent CPU time: $((utime_stime * 1000 / $(getconf CLK_TCK))) ms"
echo "== agent log (tail)"
tail -5 "${log}"
if [ "${fail}" -ne 0 ]; then echo "SMOKE: FAIL"; exit 1; fi
echo "SMOKE: PASS"
