#!/usr/bin/env bash
# Flow exporters and capture for the flow tests: Debian's `softflowd`
# (NetFlow v5/v9 and IPFIX exporter), `tcpdump` (captures the traffic
# softflowd replays) and `nfdump` (an independent collector to compare
# counts with).
#
# Idempotent and fast when the tools are there. Runs as root. Prints one
# line per thing it did or found; exits non-zero with the reason on failure.
set -euo pipefail

say() { echo "30-flow-tools: $*"; }
fail() {
    echo "30-flow-tools: error: $*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || fail "must run as root (it installs packages)"

LOCK=/run/lock/hallmark-30-flow-tools.lock
mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock -w 300 9 || fail "another run of this script held $LOCK for 5 minutes"

missing=()
for pair in softflowd:softflowd tcpdump:tcpdump nfdump:nfdump; do
    cmd=${pair%%:*}
    pkg=${pair##*:}
    if command -v "$cmd" >/dev/null; then
        say "present ($cmd)"
    else
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y "${missing[@]}" >/dev/null 2>&1; then
        say "apt-get install failed; running apt-get update and retrying"
        apt-get update >/dev/null || fail "apt-get update failed"
        apt-get install -y "${missing[@]}" >/dev/null || fail "apt-get install -y ${missing[*]} failed"
    fi
fi
# The package starts a softflowd service on install; the tests run their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet softflowd 2>/dev/null; then
    systemctl stop softflowd || true
fi
