#!/usr/bin/env bash
# Side-by-side benchmark (issue 8): the seed's chain (Prometheus scraping the
# agents + prometheus-adapter with the seed's rule) against gpu-metrics-server
# (agents → aggregator at its defaults), on the end-to-end harness's real
# control plane (etcd, kube-apiserver, kube-controller-manager with the HPA
# controller at its default 15 s sync; e2e/framework) and one simulated fleet
# (hack/fleetsim), then the agent's own footprint. Prints the tables; exits 0
# when everything ran. No figure is asserted.
#
# Usage: hack/bench-compare.sh [compare|fleet|delegate|soak|all]   (default: compare)
#   compare  TestBenchCompare: 10, 100 and 1,000 nodes × 8 GPUs (~20 min),
#            then hack/agent-footprint.sh 60 8 50
#   fleet    TestFleetScale: one aggregator against 1,000-5,000 nodes
#   delegate TestDelegateOverhead: latency added by --delegate-to, against
#            prometheus-adapter called directly (~3 min)
#   soak     TestSoak: one aggregator against 1,000 simulated nodes and one
#            real agent while pods churn, 30 minutes; fails on a leak
#            (memory, goroutines or fds growing) or a wrong API answer
#   all      compare, fleet and delegate (not soak)
#
# Environment:
#   BENCH_QUICK=1        smoke run: 10 nodes, short latency runs (and 500/1,000
#                        nodes for fleet), agent footprint over 20 s
#   BENCH_SIZES          fleet sizes of compare, e.g. 10,100,1000
#   BENCH_SEED5_SIZE     size at which the seed chain also runs at 5 s (100)
#   BENCH_FLEET_SIZES    sizes of fleet, e.g. 1000,3000,5000
#   BENCH_FLEET_WINDOW   measurement window per fleet size (30s)
#   BENCH_SOAK_NODES     fleet size of soak (1000)
#   BENCH_SOAK_DURATION  how long soak is measured after its warm-up (30m)
#   BENCH_SOAK_CHURN     pods replaced per second in each group of soak (1)
#   BENCH_SOAK_SAMPLE    soak's sampling period (1m)
#   BENCH_DELEGATE_REQUESTS, BENCH_DELEGATE_WORKERS
#                        requests per path (4000) and concurrent callers (4)
#                        of delegate
#   BENCH_OUT            directory for the reports, raw JSON and log
#                        (default: a new /tmp/gms-bench.* directory)
#   GMS_E2E_KEEP=1       keep every component's log and data directory
#   GMS_BIN, GMS_CONTROL_PLANE_DIR, GMS_PROMETHEUS, GMS_PROMETHEUS_ADAPTER,
#   GMS_FLEETSIM         prebuilt binaries instead of building them
#
# See docs/benchmarks.md ("Side by side with the seed chain", "Fleet scale",
# "Soak (issue 16)").
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"
mode="${1:-compare}"
case "${mode}" in
  compare | fleet | delegate | soak | all) ;;
  *) echo "usage: hack/bench-compare.sh [compare|fleet|delegate|soak|all]" >&2; exit 2 ;;
esac

die() {
  echo "hack/bench-compare.sh: FAIL: $*" >&2
  exit 1
}

export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}"
BENCH_OUT="${BENCH_OUT:-$(mktemp -d /tmp/gms-bench.XXXXXX)}"
mkdir -p "${BENCH_OUT}"
BENCH_OUT="$(cd "${BENCH_OUT}" && pwd)"
export BENCH_OUT

bash hack/install-deps.sh || die "hack/install-deps.sh could not install etcd and prometheus"
needs_seed=1
[[ "${mode}" == fleet || "${mode}" == soak ]] && needs_seed=
if [[ -n "${needs_seed}" && -z "${GMS_PROMETHEUS:-}" ]]; then
  command -v prometheus >/dev/null 2>&1 || die "prometheus is not on PATH (Debian's prometheus package; or set GMS_PROMETHEUS)"
fi
if [[ -z "${GMS_CONTROL_PLANE_DIR:-}" ]]; then
  cp_out="$(bash hack/build-control-plane.sh)" || die "the control plane could not be built (needs the Go module proxy once), or set GMS_CONTROL_PLANE_DIR"
  GMS_CONTROL_PLANE_DIR="$(tail -n 1 <<<"${cp_out}")"
  export GMS_CONTROL_PLANE_DIR
fi
if [[ -n "${needs_seed}" && -z "${GMS_PROMETHEUS_ADAPTER:-}" ]]; then
  pa_out="$(bash hack/build-prometheus-adapter.sh)" || die "prometheus-adapter could not be built (needs the Go module proxy once), or set GMS_PROMETHEUS_ADAPTER"
  GMS_PROMETHEUS_ADAPTER="$(tail -n 1 <<<"${pa_out}")"
  export GMS_PROMETHEUS_ADAPTER
fi
if [[ -z "${GMS_BIN:-}" ]]; then
  nice make build >&2 || die "make build failed"
  GMS_BIN="${repo_root}/bin/gpu-metrics-server"
  export GMS_BIN
fi
if [[ -z "${GMS_FLEETSIM:-}" ]]; then
  nice go build -o bin/fleetsim ./hack/fleetsim || die "building hack/fleetsim failed"
  GMS_FLEETSIM="${repo_root}/bin/fleetsim"
  export GMS_FLEETSIM
fi
test_bin="${BENCH_OUT}/e2e-bench.test"
nice go test -c -tags 'e2e benchcompare' -o "${test_bin}" ./e2e/bench || die "building the benchmark failed"

# run_test NAME REPORT [TIMEOUT]: runs one benchmark test of e2e/bench in
# its package directory (the harness finds the checkout's root above it),
# its log in BENCH_OUT, and prints its report. TIMEOUT (default 60m) is the
# test binary's -test.timeout.
run_test() {
  local name="$1" report="$2" timeout="${3:-60m}" log="${BENCH_OUT}/$1.log"
  echo "hack/bench-compare.sh: running ${name} (log: ${log}); load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  if ! (cd e2e/bench && "${test_bin}" -test.run "^${name}\$" -test.v -test.count=1 -test.timeout "${timeout}") >"${log}" 2>&1; then
    tail -n 60 "${log}" >&2
    die "${name} did not run to the end; see ${log}"
  fi
  echo "hack/bench-compare.sh: ${name} done; load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  cat "${BENCH_OUT}/${report}"
}

if [[ "${mode}" == compare || "${mode}" == all ]]; then
  run_test TestBenchCompare compare.md
  seconds=60
  [[ -n "${BENCH_QUICK:-}" ]] && seconds=20
  echo
  echo "# One agent: hack/agent-footprint.sh ${seconds} 8 50"
  GMS_BIN="${GMS_BIN}" bash hack/agent-footprint.sh "${seconds}" 8 50 | tee "${BENCH_OUT}/agent-footprint.txt"
fi
if [[ "${mode}" == fleet || "${mode}" == all ]]; then
  run_test TestFleetScale fleet.md
fi
if [[ "${mode}" == delegate || "${mode}" == all ]]; then
  run_test TestDelegateOverhead delegate.md
fi
if [[ "${mode}" == soak ]]; then
  # Set-up, warm-up and the report take well under an hour besides the
  # soak's own duration (at most a day here).
  run_test TestSoak soak.md 25h
fi
echo
echo "hack/bench-compare.sh: reports, raw results and logs in ${BENCH_OUT}" >&2
