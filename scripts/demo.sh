#!/usr/bin/env bash
# Builds the host and the examples, and serves the examples from the
# embedded default store (./wisp-data). Installs the wasm targets if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

ensure_wasm_targets
echo "==> building wisp (release)"
cargo build --release -p wisp-host --bin wisp
echo "==> building the examples (wasm32-wasip2)"
build_guests hello echo
wasm="$GUEST_TARGET_DIR/wasm32-wasip2/release"

cat <<MSG

Try, in another terminal:
  curl http://127.0.0.1:8080/hello/world
  curl -d 'some body' 'http://127.0.0.1:8080/echo/path?x=1'
  export WISP_ADMIN_TOKEN=\$(cat wisp-data/admin-token)
  target/release/wisp list
  target/release/wisp invoke echo --data hi

MSG
# RUST_BACKTRACE makes wasmtime capture a backtrace at every instance
# teardown: about a fifth of the throughput.
exec env -u RUST_BACKTRACE target/release/wisp serve --data-dir ./wisp-data \
    --deploy "hello=$wasm/hello.wasm:/hello/*" \
    --deploy "echo=$wasm/echo.wasm:/echo/*"
