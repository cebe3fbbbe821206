#!/usr/bin/env bash
# Builds flows.bpf.o and enforce.bpf.o from their sources (the one way the
# committed objects are made).
#   build.sh          rebuild both objects in place
#   build.sh --check  rebuild into a temporary directory and fail if a
#                     committed object differs; skip (exit 0) without clang
set -euo pipefail
cd "$(dirname "$0")"

OBJECTS=(flows enforce)

build() { # $1: name (flows, enforce); $2: output path relative to this directory
    # -fdebug-compilation-dir=. keeps the checkout's absolute path out of the
    # object's BTF, so every clone builds the same bytes.
    clang -O2 -g -fdebug-compilation-dir=. -target bpf -D__TARGET_ARCH_x86 -c "$1.bpf.c" -o "$2"
    llvm-strip -g "$2"
}

case "${1:-}" in
"")
    for o in "${OBJECTS[@]}"; do
        build "$o" "$o.bpf.o"
    done
    ;;
--check)
    if ! command -v clang >/dev/null || ! command -v llvm-strip >/dev/null; then
        echo "build.sh --check: skipped (clang or llvm-strip not installed)"
        exit 0
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # Build from a copy with the same relative names so the object (which
    # records the source file name) matches a build made in place.
    cp hallmark_vmlinux.h "$tmp/"
    stale=0
    for o in "${OBJECTS[@]}"; do
        cp "$o.bpf.c" "$tmp/"
        (cd "$tmp" && build "$o" "$o.bpf.o")
        if ! cmp -s "$tmp/$o.bpf.o" "$o.bpf.o"; then
            echo "$o.bpf.o is stale: run crates/hallmark-bpf/bpf/build.sh" >&2
            stale=1
        fi
    done
    [ "$stale" = 0 ] || exit 1
    echo "build.sh --check: flows.bpf.o and enforce.bpf.o are up to date"
    ;;
*)
    echo "usage: build.sh [--check]" >&2
    exit 2
    ;;
esac
