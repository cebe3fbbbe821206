#!/usr/bin/env bash
# Builds flows.bpf.o from flows.bpf.c (the one way the committed object is made).
#   build.sh          rebuild flows.bpf.o in place
#   build.sh --check  rebuild into a temporary directory and fail if the
#                     committed flows.bpf.o differs; skip (exit 0) without clang
set -euo pipefail
cd "$(dirname "$0")"

build() { # $1: output path relative to this directory
    # -fdebug-compilation-dir=. keeps the checkout's absolute path out of the
    # object's BTF, so every clone builds the same bytes.
    clang -O2 -g -fdebug-compilation-dir=. -target bpf -D__TARGET_ARCH_x86 -c flows.bpf.c -o "$1"
    llvm-strip -g "$1"
}

case "${1:-}" in
"")
    build flows.bpf.o
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
    cp flows.bpf.c hallmark_vmlinux.h "$tmp/"
    (cd "$tmp" && build flows.bpf.o)
    if ! cmp -s "$tmp/flows.bpf.o" flows.bpf.o; then
        echo "flows.bpf.o is stale: run crates/hallmark-bpf/bpf/build.sh" >&2
        exit 1
    fi
    echo "build.sh --check: flows.bpf.o is up to date"
    ;;
*)
    echo "usage: build.sh [--check]" >&2
    exit 2
    ;;
esac
