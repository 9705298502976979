#!/usr/bin/env bash
# Builds examples/cgi-c/main.c for wasm32-wasi (preview 1) with Debian's
# clang, lld and wasi-libc: writes target/wasm/cgi-c/cgi-c.wasm (or $1).
# `source scripts/common.sh; ensure_c_wasi` installs the toolchain.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/target/wasm/cgi-c/cgi-c.wasm}"
mkdir -p "$(dirname "$out")"
# Debian's wasi-libc installs its sysroot under /usr (include/wasm32-wasi,
# lib/wasm32-wasi); WASI_SYSROOT overrides it (e.g. a wasi-sdk sysroot).
sysroot="${WASI_SYSROOT:-/usr}"
"${CC_WASI:-clang}" --target=wasm32-wasi --sysroot="$sysroot" -O2 -Wall -Wextra \
    -Wl,--strip-debug -o "$out" "$here/main.c"
echo "$out"
