#!/usr/bin/env bash
# Runs the given make targets in order (`make test` passes the CI steps),
# timing each one, and prints a summary. Stops at the first failure.
set -uo pipefail
cd "$(dirname "$0")/.."

MAKE=${MAKE:-make}
summary=()
start_all=$(date +%s)

report() {
    printf '\n== time per step ==\n'
    printf '%s\n' "${summary[@]}"
    printf '%-18s %5ss\n' total "$(($(date +%s) - start_all))"
}

for step in "$@"; do
    printf '\n== make %s ==\n' "$step"
    t0=$(date +%s)
    if ! "$MAKE" --no-print-directory "$step"; then
        summary+=("$(printf '%-18s %5ss  FAILED' "$step" "$(($(date +%s) - t0))")")
        report
        exit 1
    fi
    summary+=("$(printf '%-18s %5ss' "$step" "$(($(date +%s) - t0))")")
done
report
