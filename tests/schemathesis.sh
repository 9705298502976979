#!/usr/bin/env bash
# Runs schemathesis (PyPI) against the admin API's own OpenAPI document:
# generated requests to every operation, every response checked against the
# document. Goal: no server error (5xx) and no response the document does
# not describe.
#
#   bash tests/schemathesis.sh                   # builds, starts, runs, stops
#   MAX_EXAMPLES=50 bash tests/schemathesis.sh   # more cases per operation
#
# It builds `wisp` and the hello guest, starts `wisp serve` on a temporary
# data directory on free ports (127.0.0.1 only) with a known token, deploys
# hello (with a subscription, a schedule, a setting and a key, so the
# paths have something to find), runs `st run` with its default checks
# (response-schema conformance among them; the exceptions, with their
# reasons, are in tests/schemathesis.toml) and stops the host.
# Not part of CI: it needs PyPI and takes minutes.
#
# Settings (environment):
#   MAX_EXAMPLES   test cases per operation and phase (default 25)
#   SEED           schemathesis' random seed (default: random; printed)
#   ST_ARGS        more arguments for `st run`
#   VENV           where schemathesis is installed (default target/schemathesis-venv)
#   KEEP           1: keep the temporary directory (host log, report)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${MAX_EXAMPLES:-25}
VENV=${VENV:-target/schemathesis-venv}

say() { echo "==> $*"; }
die() { echo "schemathesis.sh: $*" >&2; exit 1; }

if [ ! -x "$VENV/bin/st" ] || ! "$VENV/bin/st" --version | grep -q "$SCHEMATHESIS_VERSION"; then
    say "installing schemathesis $SCHEMATHESIS_VERSION (PyPI) in $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

ensure_wasm_targets
say "building wisp and the hello guest"
cargo build -p wisp-cli --bin wisp
build_guests hello
WISP="${CARGO_TARGET_DIR:-target}/debug/wisp"
WASM="$GUEST_TARGET_DIR/wasm32-wasip2/release/hello.wasm"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wisp-schemathesis.XXXXXX")
PID=
cleanup() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TOKEN=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
say "starting wisp serve (data in $TMP/data)"
# Port 0: the host prints the addresses it bound.
: >"$TMP/stdout.log"
WISP_ADMIN_TOKEN=$TOKEN RUST_LOG=${RUST_LOG:-warn} "$WISP" serve --data-dir "$TMP/data" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --deploy "hello=$WASM:/hello" >"$TMP/stdout.log" 2>"$TMP/host.log" &
PID=$!
ADMIN=
for _ in $(seq 600); do
    kill -0 "$PID" 2>/dev/null || { cat "$TMP/host.log" >&2; die "wisp serve exited during start-up"; }
    ADMIN=$(sed -n 's|^wisp: admin API *\(http://[0-9.:]*\)/v1.*|\1|p' "$TMP/stdout.log")
    [ -n "$ADMIN" ] && break
    sleep 0.1
done
[ -n "$ADMIN" ] || die "wisp serve did not start within 60 s"

api() {
    curl -sS -f -o /dev/null -H "authorization: Bearer $TOKEN" "$@"
}
api -X POST -H 'content-type: application/json' \
    -d '{"function": "hello", "topic": "orders"}' "$ADMIN/v1/subscriptions"
api -X POST -H 'content-type: application/json' \
    -d '{"function": "hello", "cron": "0 3 * * *"}' "$ADMIN/v1/schedules"
api -X PUT -H 'content-type: application/json' \
    -d '{"values": {"greeting": "hi"}}' "$ADMIN/v1/functions/hello/config"
api -X PUT --data-binary 'v' "$ADMIN/v1/functions/hello/kv/k"

SEED=${SEED:-$RANDOM}
say "schemathesis against $ADMIN/v1/openapi.json (seed $SEED, $MAX_EXAMPLES examples per operation)"
status=0
# shellcheck disable=SC2086 # ST_ARGS is a list of arguments
# The default checks, less the exceptions in tests/schemathesis.toml.
"$VENV/bin/st" --config-file tests/schemathesis.toml run "$ADMIN/v1/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
    --workers 2 --request-timeout 30 \
    --report junit --report-dir "$TMP/report" \
    ${ST_ARGS:-} || status=$?

if grep -q 'panicked' "$TMP/host.log"; then
    grep -n -A5 'panicked' "$TMP/host.log" >&2
    die "the host panicked"
fi
kill -0 "$PID" 2>/dev/null || die "the host exited during the run"
exit "$status"
