#!/usr/bin/env bash
# GPU smoke test of the agent on a real NVIDIA GPU with its driver:
#  1. runs `gpu-metrics-server agent --backend=nvml` with a counters file
#     listing every field the agent can read (and every label field);
#  2. checks the UUIDs, names and driver version on /metrics against
#     nvidia-smi, and prints every field's value on GPU 0, or "absent";
#  3. loads the GPU (a PyTorch matmul loop when torch imports) and checks that
#     DCGM_FI_DEV_GPU_UTIL rises above 80, then falls below 10 after, printing
#     the profiling fields (tensor, DRAM, engine activity) under load;
#  4. prints the agent's RSS and sample duration.
# Usage: hack/gpu-smoke.sh [path/to/gpu-metrics-server]  (default bin/gpu-metrics-server)
# With GMS_SMOKE_OUT=DIR it also writes the whole /metrics body, idle and
# under load, to DIR/metrics-idle.txt and DIR/metrics-load.txt (for
# promtool check metrics elsewhere).
# Exit status 0 only when every check passed.
set -euo pipefail

bin="${1:-bin/gpu-metrics-server}"
port="${GMS_SMOKE_PORT:-19400}"
url="http://127.0.0.1:${port}/metrics"
fail=0
log="$(mktemp)"

command -v nvidia-smi >/dev/null || { echo "FAIL: nvidia-smi not found: not a GPU machine"; exit 1; }
nvidia-smi --query-gpu=index,uuid,name,driver_version,memory.total --format=csv

# Every field of exposition/families.go (TestSmokeListsEveryField keeps the
# list complete).
counters="$(mktemp)"
cat >"${counters}" <<'CSV'
DCGM_FI_DEV_SM_CLOCK, gauge, DCGM_FI_DEV_SM_CLOCK
DCGM_FI_DEV_MEM_CLOCK, gauge, DCGM_FI_DEV_MEM_CLOCK
DCGM_FI_DEV_MEMORY_TEMP, gauge, DCGM_FI_DEV_MEMORY_TEMP
DCGM_FI_DEV_GPU_TEMP, gauge, DCGM_FI_DEV_GPU_TEMP
DCGM_FI_DEV_POWER_USAGE, gauge, DCGM_FI_DEV_POWER_USAGE
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, counter, DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION
DCGM_FI_DEV_PCIE_REPLAY_COUNTER, counter, DCGM_FI_DEV_PCIE_REPLAY_COUNTER
DCGM_FI_DEV_GPU_UTIL, gauge, DCGM_FI_DEV_GPU_UTIL
DCGM_FI_DEV_MEM_COPY_UTIL, gauge, DCGM_FI_DEV_MEM_COPY_UTIL
DCGM_FI_DEV_ENC_UTIL, gauge, DCGM_FI_DEV_ENC_UTIL
DCGM_FI_DEV_DEC_UTIL, gauge, DCGM_FI_DEV_DEC_UTIL
DCGM_FI_DEV_XID_ERRORS, gauge, DCGM_FI_DEV_XID_ERRORS
DCGM_FI_DEV_POWER_VIOLATION, counter, DCGM_FI_DEV_POWER_VIOLATION
DCGM_FI_DEV_THERMAL_VIOLATION, counter, DCGM_FI_DEV_THERMAL_VIOLATION
DCGM_FI_DEV_SYNC_BOOST_VIOLATION, counter, DCGM_FI_DEV_SYNC_BOOST_VIOLATION
DCGM_FI_DEV_BOARD_LIMIT_VIOLATION, counter, DCGM_FI_DEV_BOARD_LIMIT_VIOLATION
DCGM_FI_DEV_LOW_UTIL_VIOLATION, counter, DCGM_FI_DEV_LOW_UTIL_VIOLATION
DCGM_FI_DEV_RELIABILITY_VIOLATION, counter, DCGM_FI_DEV_RELIABILITY_VIOLATION
DCGM_FI_DEV_FB_FREE, gauge, DCGM_FI_DEV_FB_FREE
DCGM_FI_DEV_FB_USED, gauge, DCGM_FI_DEV_FB_USED
DCGM_FI_DEV_FB_RESERVED, gauge, DCGM_FI_DEV_FB_RESERVED
DCGM_FI_DEV_ECC_SBE_VOL_TOTAL, counter, DCGM_FI_DEV_ECC_SBE_VOL_TOTAL
DCGM_FI_DEV_ECC_DBE_VOL_TOTAL, counter, DCGM_FI_DEV_ECC_DBE_VOL_TOTAL
DCGM_FI_DEV_ECC_SBE_AGG_TOTAL, counter, DCGM_FI_DEV_ECC_SBE_AGG_TOTAL
DCGM_FI_DEV_ECC_DBE_AGG_TOTAL, counter, DCGM_FI_DEV_ECC_DBE_AGG_TOTAL
DCGM_FI_DEV_RETIRED_SBE, counter, DCGM_FI_DEV_RETIRED_SBE
DCGM_FI_DEV_RETIRED_DBE, counter, DCGM_FI_DEV_RETIRED_DBE
DCGM_FI_DEV_RETIRED_PENDING, counter, DCGM_FI_DEV_RETIRED_PENDING
DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL, counter, DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL
DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL, counter, DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL
DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL, counter, DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL
DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL, counter, DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL
DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL, counter, DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL
DCGM_FI_DEV_VGPU_LICENSE_STATUS, gauge, DCGM_FI_DEV_VGPU_LICENSE_STATUS
DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS, counter, DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS
DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS, counter, DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS
DCGM_FI_DEV_ROW_REMAP_FAILURE, gauge, DCGM_FI_DEV_ROW_REMAP_FAILURE
DCGM_FI_PROF_GR_ENGINE_ACTIVE, gauge, DCGM_FI_PROF_GR_ENGINE_ACTIVE
DCGM_FI_PROF_SM_ACTIVE, gauge, DCGM_FI_PROF_SM_ACTIVE
DCGM_FI_PROF_SM_OCCUPANCY, gauge, DCGM_FI_PROF_SM_OCCUPANCY
DCGM_FI_PROF_PIPE_TENSOR_ACTIVE, gauge, DCGM_FI_PROF_PIPE_TENSOR_ACTIVE
DCGM_FI_PROF_DRAM_ACTIVE, gauge, DCGM_FI_PROF_DRAM_ACTIVE
DCGM_FI_PROF_PIPE_FP64_ACTIVE, gauge, DCGM_FI_PROF_PIPE_FP64_ACTIVE
DCGM_FI_PROF_PIPE_FP32_ACTIVE, gauge, DCGM_FI_PROF_PIPE_FP32_ACTIVE
DCGM_FI_PROF_PIPE_FP16_ACTIVE, gauge, DCGM_FI_PROF_PIPE_FP16_ACTIVE
DCGM_FI_PROF_PCIE_TX_BYTES, gauge, DCGM_FI_PROF_PCIE_TX_BYTES
DCGM_FI_PROF_PCIE_RX_BYTES, gauge, DCGM_FI_PROF_PCIE_RX_BYTES
DCGM_FI_DEV_BRAND, label, DCGM_FI_DEV_BRAND
DCGM_FI_DEV_ECC_INFOROM_VER, label, DCGM_FI_DEV_ECC_INFOROM_VER
DCGM_FI_DEV_INFOROM_IMAGE_VER, label, DCGM_FI_DEV_INFOROM_IMAGE_VER
DCGM_FI_DEV_OEM_INFOROM_VER, label, DCGM_FI_DEV_OEM_INFOROM_VER
DCGM_FI_DEV_POWER_INFOROM_VER, label, DCGM_FI_DEV_POWER_INFOROM_VER
DCGM_FI_DEV_SERIAL, label, DCGM_FI_DEV_SERIAL
DCGM_FI_DEV_VBIOS_VERSION, label, DCGM_FI_DEV_VBIOS_VERSION
DCGM_FI_DRIVER_VERSION, label, DCGM_FI_DRIVER_VERSION
DCGM_FI_NVML_VERSION, label, DCGM_FI_NVML_VERSION
CSV

"${bin}" agent --backend=nvml --node-name=smoke --sample-interval=1s --collectors="${counters}" \
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
# The rates and profiling fields need two rounds.
sleep 2.5
echo "== every field on GPU 0 (absent: the GPU or driver does not give it)"
body="$(scrape)"
[ -n "${GMS_SMOKE_OUT:-}" ] && printf '%s\n' "${body}" >"${GMS_SMOKE_OUT}/metrics-idle.txt"
grep -v '^#' "${counters}" | while IFS=, read -r field type _; do
  [ "$(echo "${type}" | xargs)" = label ] && continue
  v="$(echo "${body}" | awk -v f="${field}" '$0 ~ "^"f"\\{gpu=\"0\"" {print $NF; exit}')"
  printf '%-46s %s\n' "${field}" "${v:-absent}"
done
echo "== labels of GPU 0"
echo "${body}" | grep -m1 '^DCGM_FI_DEV_GPU_TEMP{gpu="0"' | sed 's/^[^{]*{//; s/}.*//' | tr ',' '\n'
driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1 | xargs)"
if echo "${body}" | grep -q "DCGM_FI_DRIVER_VERSION=\"${driver}\""; then
  echo "ok   DCGM_FI_DRIVER_VERSION=${driver}"
else
  echo "FAIL DCGM_FI_DRIVER_VERSION is not nvidia-smi's ${driver}"; fail=1
fi

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
  sleep 2
  [ -n "${GMS_SMOKE_OUT:-}" ] && scrape >"${GMS_SMOKE_OUT}/metrics-load.txt"
  scrape | grep -E '^DCGM_FI_PROF_[A-Z_0-9]+\{gpu="0"' | sed 's/{.*}//' | awk '{printf "under load: %-34s %s\n", $1, $2}' 
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
