#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (minimising each
# new input for at most FUZZMINIMIZETIME), prints the executions of each,
# and fails when a target crashes or runs fewer than FUZZ_MIN_EXECS inputs:
# a target stuck (in minimisation, or on a slow seed) does not fuzz.
# Usage: hack/fuzz.sh [PACKAGE...]   (default: ./...)
set -euo pipefail
fuzztime="${FUZZTIME:-10s}"
minimize="${FUZZMINIMIZETIME:-1000x}"
min_execs="${FUZZ_MIN_EXECS:-1000}"
go="${GO:-go}"
pkgs=("$@"); [ "${#pkgs[@]}" -gt 0 ] || pkgs=(./...)
log="$(mktemp)"
trap 'rm -f "${log}"' EXIT
status=0
summary=()
for pkg in $(${go} list "${pkgs[@]}"); do
  for f in $(${go} test -list '^Fuzz' "${pkg}" | grep '^Fuzz' || true); do
    echo "== ${pkg} ${f}"
    if ! ${go} test -run '^$' -fuzz "^${f}\$" -fuzztime "${fuzztime}" -fuzzminimizetime "${minimize}" "${pkg}" 2>&1 | tee "${log}"; then
      summary+=("FAIL ${pkg} ${f}: crashed (see above)")
      status=1
      continue
    fi
    execs="$(grep -o 'execs: [0-9]*' "${log}" | tail -1 | awk '{print $2}')"
    execs="${execs:-0}"
    if [ "${execs}" -lt "${min_execs}" ]; then
      summary+=("FAIL ${pkg} ${f}: ${execs} executions in ${fuzztime}, fewer than ${min_execs}")
      status=1
    else
      summary+=("ok   ${pkg} ${f}: ${execs} executions in ${fuzztime}")
    fi
  done
done
printf '%s\n' "${summary[@]}"
exit "${status}"
