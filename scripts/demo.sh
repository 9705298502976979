#!/usr/bin/env bash
# Builds the host and the examples, and serves the examples from the
# embedded default store (./wisp-data). Installs the wasm targets if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

ensure_wasm_targets
# Where cargo puts the host binary (CARGO_TARGET_DIR is honoured).
bin="${CARGO_TARGET_DIR:-target}/release/wisp"
echo "==> building wisp (release)"
cargo build --release -p wisp-cli --bin wisp
echo "==> building the examples (wasm32-wasip2, and cgi-rust for wasm32-wasip1)"
build_guests hello hello-p3 echo todo-api counter order-events
cargo build --release --target wasm32-wasip1 --target-dir "$GUEST_TARGET_DIR" -p cgi-rust
wasm="$GUEST_TARGET_DIR/wasm32-wasip2/release"
p1="$GUEST_TARGET_DIR/wasm32-wasip1/release"

cat <<MSG

Try, in another terminal:
  curl http://127.0.0.1:8080/hello/world
  curl http://127.0.0.1:8080/hello-p3/world                    # the same, a WASI 0.3 component
  curl -d 'some body' 'http://127.0.0.1:8080/echo/path?x=1'
  curl -d '{"title":"try wisp"}' http://127.0.0.1:8080/todos   # then: curl http://127.0.0.1:8080/todos
  curl http://127.0.0.1:8080/count/a
  curl -d '{"item":"tea","quantity":2}' http://127.0.0.1:8080/orders   # published on topic orders
  curl http://127.0.0.1:8080/orders                                     # recorded by its event handler
  curl 'http://127.0.0.1:8080/cgi/hi?x=1'                       # a wasm32-wasip1 module, CGI-style
  # the dashboard: http://127.0.0.1:9090/ui/ (sign in with the token: cat wisp-data/admin-token)
  export WISP_ADMIN_TOKEN=\$(cat wisp-data/admin-token)
  $bin list
  $bin invoke echo --data hi
  $bin logs todo-api
  $bin logs order-events

MSG
# order-events gets the topic orders through its event handler. `wisp
# serve` has no flag for subscriptions, so subscribe through the admin API
# once the host answers (subscriptions are kept in the store; subscribing
# again is harmless), from a detached process: `exec` below still makes
# wisp the foreground process that ctrl-c stops.
subscribe_when_up() {
    for _ in $(seq 1 300); do
        if "$bin" subscribe order-events orders >/dev/null 2>&1; then
            return
        fi
        sleep 0.2
    done
    echo "demo.sh: could not subscribe order-events to orders; run: $bin subscribe order-events orders" >&2
}
(subscribe_when_up &)
# RUST_BACKTRACE makes wasmtime capture a backtrace at every instance
# teardown: about a fifth of the throughput.
exec env -u RUST_BACKTRACE "$bin" serve --data-dir ./wisp-data \
    --deploy "hello=$wasm/hello.wasm:/hello/*" \
    --deploy "hello-p3=$wasm/hello_p3.wasm:/hello-p3/*" \
    --deploy "echo=$wasm/echo.wasm:/echo/*" \
    --deploy "todo-api=$wasm/todo_api.wasm:/todos/*" \
    --deploy "counter=$wasm/counter.wasm:/count/*" \
    --deploy "order-events=$wasm/order_events.wasm:/orders/*" \
    --deploy "cgi=$p1/cgi-rust.wasm:/cgi/*"
