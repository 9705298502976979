#!/usr/bin/env bash
# Cluster benchmark: a single-node `wisp serve` (sled) against hosts of a
# cluster (`wisp serve --cluster`, with a nats-server -js of its own), on
# the same machine, in the same run.
#
#   bash benches/cluster.sh
#   DURATION=5 ROUNDS=2 bash benches/cluster.sh
#
# Measures, medians over ROUNDS:
#   - hello at 32 connections: req/s and the server's CPU per request (the
#     request path of a cluster host must not touch NATS);
#   - a key-value read and a key-value write from a guest (tests/guests/caps,
#     `/caps/kv/get` and `/caps/kv/set`), one connection: latency p50 and
#     p99 and req/s, sled against JetStream;
#   - how long a deploy on one host of three takes to be served by the other
#     two (a new route each time, polled on their data planes every 10 ms).
#
# Settings: DURATION (s per wrk run, default 10), ROUNDS (default 3),
# DEPLOYS (propagation samples, default 5), WAIT_IDLE (1: wait for an idle
# machine before each run). Needs nats-server (installed with apt-get when
# missing), wrk, curl. Binds 127.0.0.1 only; stops everything on exit.
set -euo pipefail
unset RUST_BACKTRACE

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
DEPLOYS=${DEPLOYS:-5}
WAIT_IDLE=${WAIT_IDLE:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WISP=$TARGET_DIR/release/wisp
GUEST_TARGET_DIR=${GUEST_TARGET_DIR:-target/wasm}
HELLO=$GUEST_TARGET_DIR/wasm32-wasip2/release/hello.wasm
CAPS=$GUEST_TARGET_DIR/wasm32-wasip2/release/caps.wasm
TOKEN=cluster-bench-token-0123456789

say() { echo "cluster.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

say "building wisp (release) and the hello and caps guests"
cargo build --release -p wisp-cli --bin wisp
cargo build --release --target wasm32-wasip2 --target-dir "$GUEST_TARGET_DIR" -p hello -p caps
NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)
if [ ! -x "$NATS_SERVER" ]; then
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get install -y -qq nats-server >/dev/null || die "cannot install nats-server"
    NATS_SERVER=/usr/sbin/nats-server
fi
command -v wrk >/dev/null || die "wrk is needed (apt-get install wrk; benches/load.sh installs it)"
CLK_TCK=$(getconf CLK_TCK)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wisp-cluster.XXXXXX")
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

free_port; NATS_PORT=$PORT
"$NATS_SERVER" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$TMP/nats" >"$TMP/nats.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
    sleep 0.1
done

declare -A PID DATA ADMIN
# start NAME [serve flags...]
start() {
    local name=$1 port admin
    shift
    free_port; port=$PORT
    free_port; admin=$PORT
    RUST_LOG=warn "$WISP" serve --data-dir "$TMP/data-$name" --admin-token "$TOKEN" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" "$@" >>"$TMP/$name.log" 2>&1 &
    PIDS+=("$!")
    PID[$name]=$!
    DATA[$name]="http://127.0.0.1:$port"
    ADMIN[$name]="http://127.0.0.1:$admin"
    wait_ready "$name" "${PID[$name]}" "${ADMIN[$name]}/v1/health"
}
deploy() { # deploy HOST NAME WASM ROUTE
    WISP_ADMIN_TOKEN=$TOKEN "$WISP" deploy "$2" "$3" --route "$4" \
        --admin-url "${ADMIN[$1]}" >/dev/null || die "deploying $2 on $1 failed"
}

say "starting a single-node host and three cluster hosts"
start single
for h in c1 c2 c3; do start "$h" --cluster "nats://127.0.0.1:$NATS_PORT" --node-name "$h"; done
deploy single hello "$HELLO" /hello
deploy single caps "$CAPS" '/caps/*'
deploy c1 hello "$HELLO" /hello
deploy c1 caps "$CAPS" '/caps/*'
for h in single c1; do
    wait_ready "$h" "${PID[$h]}" "${DATA[$h]}/hello"
    wait_ready "$h" "${PID[$h]}" "${DATA[$h]}/caps/kv/set?key=k"
done

wait_idle() {
    [ "$WAIT_IDLE" = 1 ] || return 0
    for n in $(seq 600); do
        [ "$(idle_pct)" -ge 90 ] && return 0
        [ "$n" = 1 ] && say "waiting for the machine to be idle"
    done
}
proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

RESULTS=$TMP/results
: >"$RESULTS"
# run CASE HOST CONNS PATH ROUND
run() {
    local case=$1 host=$2 c=$3 path=$4 round=$5 t0 t1 out
    wait_idle
    t0=$(proc_ticks "${PID[$host]}")
    out=$(wrk -t1 -c"$c" -d"${DURATION}s" --latency "${DATA[$host]}$path")
    t1=$(proc_ticks "${PID[$host]}")
    grep -q -e 'Non-2xx' -e 'Socket errors' <<<"$out" && { say "errors in $case $host:"; grep -e 'Non-2xx' -e 'Socket errors' <<<"$out" >&2; }
    local reqs rps p50 p99
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    awk -v k="$case" -v h="$host" -v r="$round" -v rps="$rps" -v p50="$p50" -v p99="$p99" \
        -v reqs="$reqs" -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" 'BEGIN {
        printf "%s %s %s %.0f %s %s %.2f\n", k, h, r, rps, p50, p99, ticks * 1e6 / hz / reqs }' >>"$RESULTS"
    say "$(tail -n1 "$RESULTS")"
}

say "warming up"
for h in single c1; do
    wrk -t1 -c32 -d2s "${DATA[$h]}/hello" >/dev/null
    wrk -t1 -c1 -d2s "${DATA[$h]}/caps/kv/set?key=k" >/dev/null
done
for round in $(seq "$ROUNDS"); do
    for h in single c1; do
        run hello "$h" 32 /hello "$round"
        run kv-read "$h" 1 "/caps/kv/get?key=k" "$round"
        run kv-write "$h" 1 "/caps/kv/set?key=k" "$round"
    done
done

# Propagation: a new route each time, on c1; until c2 and c3 serve it.
PROP=$TMP/propagation
: >"$PROP"
for i in $(seq "$DEPLOYS"); do
    wait_idle
    start_ns=$(date +%s%N)
    deploy c1 hello "$HELLO" "/p$i"
    acked_ns=$(date +%s%N)
    for h in c2 c3; do
        until curl -sf -o /dev/null "${DATA[$h]}/p$i"; do sleep 0.01; done
    done
    end_ns=$(date +%s%N)
    echo "$(( (acked_ns - start_ns) / 1000000 )) $(( (end_ns - start_ns) / 1000000 ))" >>"$PROP"
    say "deploy $i: acknowledged after $(( (acked_ns - start_ns) / 1000000 )) ms, served by all three after $(( (end_ns - start_ns) / 1000000 )) ms"
done

median() { sort -n | awk '{a[NR] = $1} END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
col() { awk -v k="$1" -v h="$2" -v i="$3" '$1 == k && $2 == h {print $i}' "$RESULTS" | median; }

echo
echo "## Cluster: single node (sled) against a cluster host (NATS JetStream), ${DURATION}s x $ROUNDS rounds, medians"
echo
echo "| case | single req/s | cluster req/s | ratio | single p50 / p99 | cluster p50 / p99 | single CPU µs/req | cluster CPU µs/req | CPU ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for k in hello kv-read kv-write; do
    sr=$(col "$k" single 4); cr=$(col "$k" c1 4)
    sp50=$(col "$k" single 5); sp99=$(col "$k" single 6)
    cp50=$(col "$k" c1 5); cp99=$(col "$k" c1 6)
    sc=$(col "$k" single 7); cc=$(col "$k" c1 7)
    awk -v k="$k" -v sr="$sr" -v cr="$cr" -v sc="$sc" -v cc="$cc" \
        -v s="$(fmt_us "$sp50") / $(fmt_us "$sp99")" -v c="$(fmt_us "$cp50") / $(fmt_us "$cp99")" 'BEGIN {
        printf "| %s | %d | %d | %.2fx | %s | %s | %.1f | %.1f | %.2fx |\n", k, sr, cr, cr / sr, s, c, sc, cc, cc / sc }'
done
echo
echo "(hello at 32 connections; kv-read and kv-write at 1 connection: a guest's get, and a set of an empty value, of one key.)"
echo
echo "Deploy on one host of three until the other two serve it ($DEPLOYS deploys): acknowledged after $(awk '{print $1}' "$PROP" | median) ms (median), served by all after $(awk '{print $2}' "$PROP" | median) ms (median), the slowest after $(awk '{print $2}' "$PROP" | sort -n | tail -n1) ms."
