#!/usr/bin/env bash
# Prints what the binary's package initialisation costs, which every
# subcommand pays before it parses a flag (Go runs the init of every linked
# package): the totals of GODEBUG=inittrace=1 (inits, clock ms, bytes
# allocated), the TOP inits by bytes, and for each PACKAGE given, the part
# of the totals that lies in its import closure (go list -deps), that is,
# what linking that package alone brings.
# Usage: hack/init-cost.sh [TOP=20] [PACKAGE...]
# e.g. hack/init-cost.sh 20 k8s.io/apiserver/pkg/server ./collector/...
# GMS_BIN names the binary (default bin/gpu-metrics-server). Needs go, awk.
set -euo pipefail
top="${1:-20}"
shift || true
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${GMS_BIN:-${root}/bin/gpu-metrics-server}"
trace="$(mktemp)"
trap 'rm -f "${trace}" "${trace}.deps"' EXIT
# "init PKG @T ms, C ms clock, B bytes, A allocs": the package path's dots
# in its last element are escaped as %2e.
GODEBUG=inittrace=1 "${bin}" version 2>&1 >/dev/null | awk '$1 == "init" {gsub(/%2e/, ".", $2); print $2, $5, $8, $10}' >"${trace}"
# total LABEL < "PKG MS BYTES ALLOCS" lines
total() { awk -v l="$1" '{n++; ms += $2; b += $3; a += $4} END {printf "%s: %d inits, %.1f ms, %.2f MB allocated (%d allocations)\n", l, n, ms, b / 1e6, a}'; }
total "${bin}" <"${trace}"
echo "top ${top} by bytes allocated:"
sort -k3 -n -r "${trace}" | head -n "${top}" | awk '{printf "  %9d B %6.2f ms  %s\n", $3, $2, $1}'
for pkg in "$@"; do
  (cd "${root}" && go list -deps "${pkg}") >"${trace}.deps"
  awk 'NR == FNR {in_[$1] = 1; next} in_[$1]' "${trace}.deps" "${trace}" | total "  in the closure of ${pkg}"
done
