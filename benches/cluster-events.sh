#!/usr/bin/env bash
# Cluster event benchmark: the event plane of a single-node host (sled)
# against hosts of a cluster (events in NATS JetStream), on this machine, in
# the same run.
#
#   bash benches/cluster-events.sh
#   DURATION=5 ROUNDS=1 bash benches/cluster-events.sh
#
# Part 1, a no-op handler (benches/guests/noop-events subscribed to `bench`,
# concurrency 16): PUBLISHERS publishers in closed loops on the admin API of
# the single-node host, then of one cluster host (the only member then),
# for DURATION s each (benches/src/bin/event-load.rs): events published/s,
# publish latency p50/p99, handled events/s (first publish to last delivery
# counted by the host), and CPU per event: of `wisp serve`, and for the
# cluster also of `wisp serve` plus nats-server.
#
# Part 2, a handler that waits 10 ms per event (tests/guests/misbehave's
# `/sleep?ms=10`, as one calling another service would), subscribed with a
# concurrency of 4 per host: EVENTS events published on one host while one,
# then two, then three hosts are members; handled events/s counted over all
# hosts (each delivery is handled by one). The target: three hosts at least
# 2.5x one (the work spreads).
#
# Settings: DURATION (default 10), ROUNDS (default 3), PUBLISHERS (default
# 32), EVENTS (part 2, default 3000). Medians over rounds. Needs
# nats-server (apt-get when missing), curl, python3. 127.0.0.1 only.
set -euo pipefail
unset RUST_BACKTRACE

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
PUBLISHERS=${PUBLISHERS:-32}
EVENTS=${EVENTS:-3000}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WISP=$TARGET_DIR/release/wisp
LOAD=$TARGET_DIR/release/event-load
GUEST_TARGET_DIR=${GUEST_TARGET_DIR:-target/wasm}
NOOP=$GUEST_TARGET_DIR/wasm32-wasip2/release/noop_events.wasm
SLEEPER=$GUEST_TARGET_DIR/wasm32-wasip2/release/misbehave.wasm
TOKEN=cluster-events-bench-token-0123456789
export WISP_ADMIN_TOKEN=$TOKEN

say() { echo "cluster-events.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

say "building wisp and event-load (release) and the guests"
cargo build --release -p wisp-cli --bin wisp -p wisp-benches --bin event-load
cargo build --release --target wasm32-wasip2 --target-dir "$GUEST_TARGET_DIR" -p noop-events -p misbehave
NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)
if [ ! -x "$NATS_SERVER" ]; then
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get install -y -qq nats-server >/dev/null || die "cannot install nats-server"
    NATS_SERVER=/usr/sbin/nats-server
fi
CLK_TCK=$(getconf CLK_TCK)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wisp-cluster-events.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# free_port, wait_ready
source "$ROOT/benches/lib.sh"

free_port; NATS_PORT=$PORT
"$NATS_SERVER" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$TMP/nats" >"$TMP/nats.log" 2>&1 &
NATS_PID=$!
PIDS+=("$NATS_PID")
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
    sleep 0.1
done

declare -A PID DATA ADMIN
start() { # start NAME [serve flags...]
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
api() { # api HOST PATH JSON
    curl -sf -o /dev/null -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
        -d "$3" "${ADMIN[$1]}$2" || die "POST $2 on $1 failed"
}
deploy() { # deploy HOST NAME WASM [ROUTE]
    local route=()
    [ -z "${4:-}" ] || route=(--route "$4")
    "$WISP" deploy "$2" "$3" "${route[@]}" --admin-url "${ADMIN[$1]}" >/dev/null \
        || die "deploying $2 on $1 failed"
}
proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
served_by() { # served_by HOST NAME: until the host has the function
    for _ in $(seq 300); do
        curl -sf -o /dev/null -H "authorization: Bearer $TOKEN" "${ADMIN[$1]}/v1/functions/$2" && return 0
        sleep 0.1
    done
    die "$1 never got $2"
}

say "starting a single-node host and one cluster host"
start single
start c1 --cluster "nats://127.0.0.1:$NATS_PORT" --node-name c1
for h in single c1; do
    deploy "$h" noop "$NOOP"
    deploy "$h" sleeper "$SLEEPER" '/sleeper/*'
    api "$h" /v1/subscriptions '{"function":"noop","topic":"bench","concurrency":16}'
done
api c1 /v1/subscriptions '{"function":"sleeper","topic":"slow","path":"/sleep?ms=10","concurrency":4}'

RESULTS=$TMP/results.jsonl
: >"$RESULTS"
# record CASE ROUND HOSTS OUT HOST_TICKS NATS_TICKS
record() {
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
r.update(case=sys.argv[2], round=int(sys.argv[3]), hosts=int(sys.argv[4]))
hz = int(sys.argv[7]); events = r.get("handled") or r["published"]
r["cpu_us_per_event"] = int(sys.argv[5]) * 1e6 / hz / events
r["cpu_us_per_event_with_nats"] = (int(sys.argv[5]) + int(sys.argv[6])) * 1e6 / hz / events
print(json.dumps(r))
' "$4" "$1" "$2" "$3" "$5" "$6" "$CLK_TCK" >>"$RESULTS"
    say "$(tail -n1 "$RESULTS")"
}

say "warming up"
for h in single c1; do
    "$LOAD" publish --admin "${ADMIN[$h]}" --topic bench --publishers 8 --duration 2 --sample 0 >/dev/null
done

for round in $(seq "$ROUNDS"); do
    for h in single c1; do
        t0=$(proc_ticks "${PID[$h]}"); n0=$(proc_ticks "$NATS_PID")
        out=$("$LOAD" publish --admin "${ADMIN[$h]}" --topic bench --publishers "$PUBLISHERS" \
            --duration "$DURATION" --sample 0)
        t1=$(proc_ticks "${PID[$h]}"); n1=$(proc_ticks "$NATS_PID")
        nats=$((n1 - n0)); [ "$h" = c1 ] || nats=0
        record "noop-$h" "$round" 1 "$out" $((t1 - t0)) "$nats"
    done
done

# Part 2: the 10 ms handler on one, two, three hosts.
members=(c1)
slow() { # slow ROUND
    local count=() m
    for m in "${members[@]:1}"; do count+=(--count-at "${ADMIN[$m]}"); done
    out=$("$LOAD" publish --admin "${ADMIN[c1]}" "${count[@]}" --topic slow --publishers 8 \
        --events "$EVENTS" --duration 600 --sample 0)
    record "slow" "$1" "${#members[@]}" "$out" 0 0
}
for n in 1 2 3; do
    if [ "$n" -gt 1 ]; then
        start "c$n" --cluster "nats://127.0.0.1:$NATS_PORT" --node-name "c$n"
        served_by "c$n" sleeper
        members+=("c$n")
        sleep 3 # its consumers start within the reconcile period
    fi
    for round in $(seq "$ROUNDS"); do slow "$round"; done
done

python3 - "$RESULTS" "$DURATION" "$ROUNDS" "$PUBLISHERS" "$EVENTS" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" <<'PY'
import json, os, statistics, sys, time
path, duration, rounds, publishers, events, rev = sys.argv[1:7]
rows = [json.loads(l) for l in open(path)]
med = lambda case, key, hosts=1: statistics.median(
    r[key] for r in rows if r["case"] == case and r["hosts"] == hosts)
print(f"## Cluster events: single-node (sled) against JetStream, medians of {rounds} rounds\n")
print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs; wisp {rev}; "
      f"load average at the end {os.getloadavg()[0]:.2f}\n")
print(f"No-op handler, {publishers} publishers, {duration} s:\n")
print("| host | published/s | publish p50 ms | publish p99 ms | handled/s | CPU µs/event (wisp) | CPU µs/event (wisp + nats) |")
print("|---|---:|---:|---:|---:|---:|---:|")
for case, label in (("noop-single", "single node (sled)"), ("noop-c1", "cluster host (JetStream)")):
    print(f"| {label} | {med(case, 'published_per_s'):.0f} | {med(case, 'publish_p50_ms'):.2f} | "
          f"{med(case, 'publish_p99_ms'):.2f} | {med(case, 'handled_per_s'):.0f} | "
          f"{med(case, 'cpu_us_per_event'):.0f} | {med(case, 'cpu_us_per_event_with_nats'):.0f} |")
ratio = med("noop-c1", "cpu_us_per_event") / med("noop-single", "cpu_us_per_event")
ratio_n = med("noop-c1", "cpu_us_per_event_with_nats") / med("noop-single", "cpu_us_per_event")
print(f"\nCPU per event, cluster / single: {ratio:.2f}x (wisp), {ratio_n:.2f}x (wisp + nats-server); "
      f"publish p99 on the cluster host: {med('noop-c1', 'publish_p99_ms'):.2f} ms\n")
print(f"A handler that waits 10 ms, concurrency 4 per host, {events} events:\n")
print("| hosts | handled/s | vs one host |")
print("|---:|---:|---:|")
one = med("slow", "handled_per_s", 1)
for n in (1, 2, 3):
    h = med("slow", "handled_per_s", n)
    print(f"| {n} | {h:.0f} | {h / one:.2f}x |")
PY
