#!/usr/bin/env bash
# How fast the dashboard's stats answer (issue 20: "the stats endpoint
# answers within 10 ms"): a release `wisp serve` with N functions deployed
# (hello under N names), each invoked a few times so that every one has a
# ring of the last hour in memory (the most a read merges); then REQS
# requests, one after another on one kept-alive connection, to each of
#   GET /v1/functions/f000/stats            (one function, 10 s steps)
#   GET /v1/functions/f000/stats?step=60
#   GET /v1/stats                           (every function, 60 s steps: the overview's)
#   GET /v1/stats?step=10
# and prints p50, p99 and the slowest (curl's time_total) and each answer's
# size.
#
#   bash benches/stats.sh
#   N=1000 REQS=500 bash benches/stats.sh
#   WISP=/path/to/wisp bash benches/stats.sh
#
# Everything listens on 127.0.0.1; the server stops on exit.
set -euo pipefail
unset RUST_BACKTRACE

N=${N:-100}
REQS=${REQS:-200}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
GUEST_TARGET_DIR=${GUEST_TARGET_DIR:-target/wasm}
WASM=$GUEST_TARGET_DIR/wasm32-wasip2/release/hello.wasm

say() { echo "stats.sh: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

if [ -z "${WISP:-}" ]; then
    say "building wisp (release)"
    cargo build --release -p wisp-cli --bin wisp
    WISP=$TARGET_DIR/release/wisp
fi
cargo build --release --target wasm32-wasip2 --target-dir "$GUEST_TARGET_DIR" -p hello
[ -f "$WASM" ] || die "no $WASM after the build"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wisp-stats.XXXXXX")
PID=
cleanup() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

# free_port, wait_ready
source "$ROOT/benches/lib.sh"

free_port; DATA_URL=http://127.0.0.1:$PORT
free_port; ADMIN_URL=http://127.0.0.1:$PORT
RUST_LOG=warn "$WISP" serve --data-dir "$TMP/data" \
    --listen "${DATA_URL#http://}" --admin-listen "${ADMIN_URL#http://}" >"$TMP/wisp.log" 2>&1 &
PID=$!
wait_ready wisp "$PID" "$ADMIN_URL/v1/health"
TOKEN=$(cat "$TMP/data/admin-token")

say "deploying $N functions and invoking each"
for i in $(seq -f %03g 0 $((N - 1))); do
    curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" \
        -H 'content-type: application/wasm' --data-binary @"$WASM" \
        "$ADMIN_URL/v1/functions/f$i?route=/f$i" || die "deploying f$i failed"
    for _ in 1 2 3; do curl -sf -o /dev/null "$DATA_URL/f$i"; done
done

# measure PATH: REQS requests on one connection; p50, p99, slowest.
measure() {
    local url=$ADMIN_URL$1 urls=()
    # `-o` applies to one URL: one each.
    for _ in $(seq "$REQS"); do urls+=(-o /dev/null "$url"); done
    curl -sf -H "Authorization: Bearer $TOKEN" -w '%{time_total}\n' "${urls[@]}" |
        sort -n |
        awk -v path="$1" -v size="$(curl -sf -H "Authorization: Bearer $TOKEN" "$url" | wc -c)" \
            '{ t[NR] = $1 * 1000 }
             END { printf "| `%s` | %d B | %.2f ms | %.2f ms | %.2f ms |\n", path, size, t[int(NR * 0.5)], t[int(NR * 0.99)], t[NR] }'
}

echo "$N functions, each invoked 3 times; $REQS requests per endpoint, one after another on one connection"
echo
echo "| request | answer | p50 | p99 | slowest |"
echo "|---|---:|---:|---:|---:|"
measure /v1/functions/f000/stats
measure "/v1/functions/f000/stats?step=60"
measure /v1/stats
measure "/v1/stats?step=10"
