#!/usr/bin/env bash
# The edge builds, tested: `wisp` cross-built for aarch64 (glibc) and run
# under qemu-aarch64, and the static x86_64 musl build run natively. Each
# runs the end-to-end cases of tests/e2e/edge.rs (serve; deploy hello, a
# WASI 0.2 component and a preview-1 module; a tight loop cut at its
# deadline, a memory bomb at its cap; a restart serving without compiling;
# on-demand allocation where the pool's address space cannot be reserved).
#
# Builds in the dev profile (dependencies optimised, as for every test) in
# the shared target directory: one cargo invocation per target. Installs
# what it needs (Debian's gcc-aarch64-linux-gnu, qemu-user, musl-tools; the
# Rust targets). scripts/test.sh runs it last; it also runs on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

ensure_edge_tools
ensure_rust_targets aarch64-unknown-linux-gnu x86_64-unknown-linux-musl
TARGET_DIR=$(target_dir)

for target in aarch64-unknown-linux-gnu x86_64-unknown-linux-musl; do
    echo "==> building wisp for $target"
    cargo build -p wisp-cli --bin wisp --target "$target"
done

# The aarch64 binary runs under qemu-aarch64 with Debian's aarch64 glibc;
# the tests start it through this wrapper (exec: the wrapper's pid and
# signals are qemu's, which passes signals on to the emulated program).
mkdir -p "$TARGET_DIR/edge"
AARCH64_BIN="$TARGET_DIR/aarch64-unknown-linux-gnu/debug/wisp"
QEMU_WISP="$TARGET_DIR/edge/wisp-aarch64-qemu"
cat >"$QEMU_WISP" <<WRAPPER
#!/bin/sh
exec qemu-aarch64 -L /usr/aarch64-linux-gnu "$AARCH64_BIN" "\$@"
WRAPPER
chmod +x "$QEMU_WISP"
MUSL_BIN="$TARGET_DIR/x86_64-unknown-linux-musl/debug/wisp"

machine() { readelf -h "$1" | sed -n 's/^ *Machine: *//p'; }
echo "==> $AARCH64_BIN: $(machine "$AARCH64_BIN"), $("$QEMU_WISP" --version) under qemu-aarch64"
# A static binary has no program interpreter: it runs on any Linux.
if readelf -l "$MUSL_BIN" | grep -q "program interpreter"; then
    echo "the musl build of wisp is not static:" >&2
    readelf -l "$MUSL_BIN" | grep -A1 INTERP >&2
    exit 1
fi
echo "==> $MUSL_BIN: $(machine "$MUSL_BIN"), static"

run_edge_tests() {
    local name="$1" bin="$2"
    echo "==> the edge end-to-end cases on $name"
    env WISP_EDGE_BIN="$bin" WISP_EDGE_NAME="$name" ${3:+WISP_EDGE_EMULATED=1} \
        cargo test -p wisp-cli --test e2e -- --test-threads 1 edge::
}
run_edge_tests "aarch64-unknown-linux-gnu under qemu-aarch64" "$QEMU_WISP" emulated
run_edge_tests "x86_64-unknown-linux-musl (static)" "$MUSL_BIN"
