#!/usr/bin/env bash
# Engine benchmark: `wisp serve --engine cranelift` (machine code) against
# `--engine pulley` (wasmtime's interpreter), on the same machine, in the
# same run.
#
#   bash benches/engine.sh
#   DURATION=5 ROUNDS=2 bash benches/engine.sh
#
# Measures, medians over ROUNDS: hello at 32 connections (req/s, the
# server's CPU per request), and a compute-bound guest (tests/guests/
# misbehave's `/work?n=N`, N rounds of integer hashing, one request at a
# time): its wall time on each engine, and the slowdown factor.
# Settings: DURATION (s per wrk run, default 10), ROUNDS (default 3), WORK
# (N, default 20000000). Binds 127.0.0.1 only; stops everything on exit.
set -euo pipefail
unset RUST_BACKTRACE

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
WORK=${WORK:-20000000}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WISP=$TARGET_DIR/release/wisp
GUEST_TARGET_DIR=${GUEST_TARGET_DIR:-target/wasm}
HELLO=$GUEST_TARGET_DIR/wasm32-wasip2/release/hello.wasm
MISBEHAVE=$GUEST_TARGET_DIR/wasm32-wasip2/release/misbehave.wasm
TOKEN=engine-bench-token-0123456789

say() { echo "engine.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

say "building wisp (release) and the hello and misbehave guests"
cargo build --release -p wisp-cli --bin wisp
cargo build --release --target wasm32-wasip2 --target-dir "$GUEST_TARGET_DIR" -p hello -p misbehave
command -v wrk >/dev/null || die "wrk is needed (apt-get install wrk; benches/load.sh installs it)"
CLK_TCK=$(getconf CLK_TCK)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wisp-engine.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# free_port, wait_ready, to_us, idle_pct, fmt_us
source "$ROOT/benches/lib.sh"

declare -A PID DATA
for engine in cranelift pulley; do
    free_port; port=$PORT
    free_port; admin=$PORT
    RUST_LOG=warn "$WISP" serve --engine "$engine" --data-dir "$TMP/data-$engine" \
        --admin-token "$TOKEN" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        --deploy "hello=$HELLO:/hello" --deploy "m=$MISBEHAVE:/m/*" >>"$TMP/$engine.log" 2>&1 &
    PIDS+=("$!")
    PID[$engine]=$!
    DATA[$engine]="http://127.0.0.1:$port"
    wait_ready "$engine" "${PID[$engine]}" "${DATA[$engine]}/hello"
done

proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
RESULTS=$TMP/results
: >"$RESULTS"
for engine in cranelift pulley; do
    wrk -t1 -c32 -d2s "${DATA[$engine]}/hello" >/dev/null
done
for round in $(seq "$ROUNDS"); do
    for engine in cranelift pulley; do
        t0=$(proc_ticks "${PID[$engine]}")
        out=$(wrk -t1 -c32 -d"${DURATION}s" "${DATA[$engine]}/hello")
        t1=$(proc_ticks "${PID[$engine]}")
        reqs=$(awk '/requests in/ {print $1}' <<<"$out")
        rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        start=$(date +%s%N)
        curl -sf -o /dev/null "${DATA[$engine]}/m/work?n=$WORK" || die "/m/work failed on $engine"
        work_ms=$(( ($(date +%s%N) - start) / 1000000 ))
        awk -v e="$engine" -v r="$round" -v rps="$rps" -v reqs="$reqs" -v ticks=$((t1 - t0)) \
            -v hz="$CLK_TCK" -v w="$work_ms" 'BEGIN {
            printf "%s %s %.0f %.2f %d\n", e, r, rps, ticks * 1e6 / hz / reqs, w }' >>"$RESULTS"
        say "$(tail -n1 "$RESULTS")"
    done
done

median() { sort -n | awk '{a[NR] = $1} END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
col() { awk -v e="$1" -v i="$2" '$1 == e {print $i}' "$RESULTS" | median; }
cr=$(col cranelift 3); pr=$(col pulley 3)
cc=$(col cranelift 4); pc=$(col pulley 4)
cw=$(col cranelift 5); pw=$(col pulley 5)
echo
echo "## Engines: Cranelift (machine code) against Pulley (interpreter), ${DURATION}s x $ROUNDS rounds, medians"
echo
echo "| engine | hello req/s (32 conns) | hello CPU µs/req | /m/work?n=$WORK wall |"
echo "|---|---:|---:|---:|"
echo "| cranelift | $cr | $cc | $cw ms |"
echo "| pulley | $pr | $pc | $pw ms |"
awk -v cr="$cr" -v pr="$pr" -v cc="$cc" -v pc="$pc" -v cw="$cw" -v pw="$pw" 'BEGIN {
    printf "| pulley / cranelift | %.2fx | %.2fx | %.1fx slower |\n", pr / cr, pc / cc, pw / cw }'
