#!/usr/bin/env bash
# The one test command: `bash scripts/test.sh`.
#
# On a fresh Debian machine with Rust stable and python3 (venv + pip) it sets
# up everything the tests need, then runs formatting, lint and every test of
# the workspace. It stops at the first failing step with a non-zero exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# One build per run: incremental caches would only double the disk it uses.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

started=$(date +%s)
step_name=""
step_started=$started

step() {
    local now
    now=$(date +%s)
    if [[ -n $step_name ]]; then
        echo "--- $step_name: ok in $((now - step_started))s"
    fi
    step_name="$*"
    step_started=$now
    echo
    echo "==> $*"
}

fail() {
    echo "test.sh: $*" >&2
    exit 1
}

step "toolchain"
command -v cargo >/dev/null || fail "cargo not found on PATH; install Rust stable (rustup)"
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || fail "cargo ${component/rustfmt/fmt} missing and rustup not found"
        echo "installing rustup component $component"
        rustup component add "$component"
    fi
done
command -v python3 >/dev/null || fail "python3 not found; the interop tests need python3 with venv and pip"
cargo --version
python3 --version
df -h "$ROOT" | tail -n 1 | awk '{print "disk: " $4 " free of " $2 " where the build goes"}'

step "python interop clients (.venv)"
bash scripts/venv.sh
.venv/bin/python -m pip list --disable-pip-version-check 2>/dev/null | grep -iE '^(spiffe|pyjwt|cryptography|grpcio) '
.venv/bin/python -m py_compile tests/interop/*.py

# System services later suites need (Docker Engine, containerd, PostgreSQL)
# install from scripts/setup.d/*.sh, run in name order as root. Each script
# must be idempotent: it runs on every invocation.
shopt -s nullglob
hooks=(scripts/setup.d/*.sh)
shopt -u nullglob
if ((${#hooks[@]})); then
    step "system services (scripts/setup.d)"
    for hook in "${hooks[@]}"; do
        echo "--- $hook"
        bash "$hook"
    done
fi

# The eBPF objects are committed beside their C sources so that cargo
# alone builds the agent; rebuilding them (clang from setup.d) must give
# the same bytes.
step "eBPF objects match their sources (crates/hallmark-bpf/bpf/build.sh --check)"
bash crates/hallmark-bpf/bpf/build.sh --check

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# Rustdoc warnings (broken intra-doc links, bad HTML) are errors: the crate
# docs are the reference for anyone changing the code.
step "cargo doc --workspace --no-deps (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

# The fuzz targets live in their own workspace (they need cargo-fuzz to
# run); type-checking them here keeps them in step with the crates' APIs.
# `bash scripts/fuzz.sh` runs them.
step "fuzz targets compile (cargo check --manifest-path fuzz/Cargo.toml)"
CARGO_TARGET_DIR="$ROOT/target" cargo check --manifest-path fuzz/Cargo.toml --bins

step "cargo test --workspace"
cargo test --workspace

step "summary"
du -sh target 2>/dev/null | awk '{print "build output: " $1}' || true
echo "all steps passed in $(($(date +%s) - started))s"
