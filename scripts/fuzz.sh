#!/usr/bin/env bash
# Runs the libFuzzer targets in fuzz/ (every parser of untrusted input).
#
#   bash scripts/fuzz.sh                  # every target, 60 s each
#   bash scripts/fuzz.sh csr 300          # one target for 5 minutes
#   bash scripts/fuzz.sh all 30 -max_len=512   # extra flags go to libFuzzer
#
# Needs only stable Rust: cargo-fuzz's -Z flags (AddressSanitizer) are
# allowed with RUSTC_BOOTSTRAP=1. Installs cargo-fuzz if it is missing.
#
# Each target starts from its checked-in seeds (fuzz/seeds/<target>, read
# only) plus what earlier runs found (fuzz/corpus/<target>, not checked in,
# where new inputs are written). One process per target, so it uses one
# core. A failing input is saved under fuzz/artifacts/<target>/; replay it
# with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`. Exits non-zero if
# any target failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

target="${1:-all}"
duration="${2:-60}"
shift $(($# < 2 ? $# : 2))
extra=("$@")

fail() {
    echo "fuzz.sh: $*" >&2
    exit 2
}

[[ $duration =~ ^[1-9][0-9]*$ ]] || fail "SECONDS must be a positive integer, got \`$duration\`"
command -v cargo >/dev/null || fail "cargo not found on PATH; install Rust stable (rustup)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

mapfile -t all_targets < <(cargo fuzz list)
((${#all_targets[@]})) || fail "cargo fuzz list found no targets in fuzz/"
if [[ $target == all ]]; then
    targets=("${all_targets[@]}")
else
    found=""
    for t in "${all_targets[@]}"; do
        [[ $t == "$target" ]] && found=1
    done
    [[ -n $found ]] || fail "unknown target \`$target\` (targets: all ${all_targets[*]})"
    targets=("$target")
fi

# Build everything first so each target's time is spent fuzzing.
if [[ $target == all ]]; then
    cargo fuzz build
else
    cargo fuzz build "$target"
fi

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
summary=()
failed=0
for t in "${targets[@]}"; do
    echo
    echo "==> $t for ${duration}s"
    mkdir -p "fuzz/corpus/$t"
    seeds=()
    [[ -d fuzz/seeds/$t ]] && seeds=("fuzz/seeds/$t")
    status=0
    cargo fuzz run "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$duration" -timeout=10 -print_final_stats=1 "${extra[@]}" \
        2>&1 | tee "$logs/$t.log" || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -1)
    if ((status == 0)); then
        verdict="ok"
    else
        failed=1
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$logs/$t.log" | tail -1)
        verdict="FAILED (exit $status)${artifact:+, input: $artifact}"
    fi
    summary+=("$(printf '%-14s %12s runs %8s exec/s  %s' "$t" "${runs:-?}" "${rate:-?}" "$verdict")")
done

echo
echo "==> summary (${duration}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
