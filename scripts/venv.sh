#!/usr/bin/env bash
# Creates or refreshes the Python virtualenv at the repository root (.venv)
# with the interop clients pinned in tests/interop/requirements.txt.
#
# Idempotent and safe to run concurrently: parallel test binaries call it too,
# so the work happens under an exclusive lock, and a stamp holding the hash
# of the requirements file makes the common case (nothing changed) a no-op.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
REQS="$ROOT/tests/interop/requirements.txt"
PYTHON="${PYTHON:-python3}"

mkdir -p "$VENV"
exec 9>"$VENV/.lock"
if ! flock -w 600 9; then
    echo "venv: timed out after 600s waiting for the lock on $VENV/.lock" >&2
    exit 1
fi

want="$(sha256sum "$REQS" | cut -d' ' -f1)"
have="$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)"
if [[ -x "$VENV/bin/python" && "$want" == "$have" ]]; then
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    # Debian splits venv/ensurepip out of python3; install it when we can.
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            echo "venv: $PYTHON lacks venv/ensurepip; installing python3-venv" >&2
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null
        else
            echo "venv: $PYTHON lacks the venv module; install python3-venv" >&2
            exit 1
        fi
    fi
    echo "venv: creating $VENV with $("$PYTHON" --version 2>&1)" >&2
    "$PYTHON" -m venv "$VENV"
fi
echo "venv: installing $REQS" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
echo "$want" >"$VENV/.requirements.sha256"
