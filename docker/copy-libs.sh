#!/usr/bin/env bash
# Copies into ROOTFS every shared library the given ELF files link (as ldd
# names them), at the same paths, plus the loader: what a `FROM scratch`
# image needs to run them. The three rootfs scripts use it.
set -euo pipefail
rootfs=${1:?usage: copy-libs.sh ROOTFS ELF...}
shift
for elf in "$@"; do
    ldd "$elf" | awk '/=> \//{print $3} /^[ \t]*\//{print $1}'
done | sort -u | while read -r so; do
    mkdir -p "$rootfs$(dirname "$so")"
    cp -L "$so" "$rootfs$so"
done
