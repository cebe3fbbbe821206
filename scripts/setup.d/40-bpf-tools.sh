#!/usr/bin/env bash
# What rebuilds the committed eBPF objects (crates/hallmark-bpf/bpf): clang
# and llvm-strip (Debian's clang and llvm), libbpf's headers (libbpf-dev)
# and bpftool (to look at what is attached). The test command rebuilds the
# objects with them and fails when a committed one is stale. Building the
# Rust code never needs them.
#
# Also mounts bpffs and tracefs when they are not: the capture programs do
# not need them, but bpftool and anyone debugging them do.
#
# Idempotent and fast when the tools are there. Runs as root. Prints one
# line per thing it did or found; exits non-zero with the reason on failure.
set -euo pipefail

say() { echo "40-bpf-tools: $*"; }
fail() {
    echo "40-bpf-tools: error: $*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || fail "must run as root (it installs packages)"

LOCK=/run/lock/hallmark-40-bpf-tools.lock
mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock -w 300 9 || fail "another run of this script held $LOCK for 5 minutes"

missing=()
for pair in clang:clang llvm-strip:llvm bpftool:bpftool; do
    cmd=${pair%%:*}
    pkg=${pair##*:}
    if command -v "$cmd" >/dev/null; then
        say "present ($cmd)"
    else
        missing+=("$pkg")
    fi
done
[[ -f /usr/include/bpf/bpf_helpers.h ]] && say "present (libbpf-dev)" || missing+=(libbpf-dev)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y "${missing[@]}" >/dev/null 2>&1; then
        say "apt-get install failed; running apt-get update and retrying"
        apt-get update >/dev/null || fail "apt-get update failed"
        apt-get install -y "${missing[@]}" >/dev/null || fail "apt-get install -y ${missing[*]} failed"
    fi
fi
if ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
    mount -t bpf bpf /sys/fs/bpf 2>/dev/null && say "mounted bpffs" || say "bpffs not mounted (not needed by the tests)"
fi
[[ -e /sys/kernel/btf/vmlinux ]] && say "kernel BTF present" || say "no kernel BTF: capture tests will see capture unavailable"
