#!/usr/bin/env bash
# Headless Chromium for the console tests: Debian's `chromium`, driven over
# the DevTools protocol by crates/hallmark/tests/common/browser.rs, and
# `fonts-dejavu-core` so that page text renders in screenshots (installed
# without recommends, chromium pulls in no font of its own).
#
# Idempotent and fast when everything is in place: apt runs only for a
# missing package, and `apt-get update` only when the package lists do not
# know a package. Runs as root. Prints one line per thing it did or found;
# exits non-zero with the reason on the first failure.
set -euo pipefail

say() { echo "50-chromium: $*"; }
fail() {
    echo "50-chromium: error: $*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || fail "must run as root (it installs packages)"

# Test binaries run this concurrently; one at a time may install.
LOCK=/run/lock/hallmark-50-chromium.lock
mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock -w 300 9 || fail "another run of this script held $LOCK for 5 minutes"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
if command -v chromium >/dev/null; then
    say "present (chromium)"
else
    missing+=(chromium)
fi
if installed fonts-dejavu-core; then
    say "present (fonts-dejavu-core)"
else
    missing+=(fonts-dejavu-core)
fi

if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        say "apt-get install failed; running apt-get update and retrying"
        apt-get update >/dev/null || fail "apt-get update failed"
        apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
            fail "apt-get install -y --no-install-recommends ${missing[*]} failed"
    fi
    command -v chromium >/dev/null || fail "chromium is not on PATH after installing it"
fi

version=$(chromium --version 2>/dev/null) || fail "chromium --version failed"
say "ready: $version"
