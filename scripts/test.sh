#!/usr/bin/env bash
# Checks formatting and clippy (warnings are errors; the guests for their
# wasm targets too), then runs every test: unit tests, doc tests and the
# end-to-end tests (the real `wisp` binary over real HTTP with guests built
# from examples/ and tests/guests/). Installs the wasm targets if they are
# missing, nats-server for the cluster tests, and chromium with
# chromium-driver for the dashboard's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

if cargo fmt --version >/dev/null 2>&1; then
    echo "==> cargo fmt --check"
    cargo fmt --all --check
else
    echo "==> rustfmt is not installed: formatting not checked (rustup component add rustfmt)"
fi
ensure_wasm_targets
echo "==> cargo clippy"
clippy_all
ensure_componentize_py
ensure_nats_server
ensure_chromium
echo "==> building the guests (wasm32-wasip2, wasm32-wasip1)"
build_guests "${GUESTS[@]}"
build_wasip1_guests
# The runtime-only build (no Cranelift), for tests/e2e/runtime_only.rs: built
# in the shared target directory (only wasmtime and what is above it build
# again) and copied aside, then the default binary is put back in its place.
echo "==> the runtime-only build (cargo build -p wisp-cli --no-default-features --features runtime)"
TARGET_DIR=$(target_dir)
cargo build -p wisp-cli --no-default-features --features runtime
mkdir -p "$TARGET_DIR/runtime-only"
cp "$TARGET_DIR/debug/wisp" "$TARGET_DIR/runtime-only/wisp"
export WISP_RUNTIME_ONLY_BIN="$TARGET_DIR/runtime-only/wisp"
cargo build -p wisp-cli --bin wisp
echo "==> cargo test"
cargo test --no-fail-fast "$@"
# The core end-to-end cases again with every host on wasmtime's Pulley
# interpreter (`wisp serve --engine pulley`, through its WISP_ENGINE).
echo "==> the core end-to-end cases on the Pulley interpreter"
WISP_ENGINE=pulley cargo test --no-fail-fast -p wisp-cli --test e2e -- \
    routing:: limits:: cgi:: events:: event_handler:: kv_admin:: config_admin:: p3:: \
    errors:: outbound:: engine::

# The edge builds (aarch64 under qemu-aarch64, static musl): scripts/test-edge.sh.
bash scripts/test-edge.sh
