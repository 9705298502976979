#!/usr/bin/env bash
# Event benchmark: publish -> durable -> delivered -> handled, end to end.
#
#   bash benches/events.sh                          # 3 rounds of 10 s per case
#   DURATION=5 ROUNDS=1 PUBLISHERS="32" bash benches/events.sh
#
# `wisp serve` (release) on a temporary data directory runs
# benches/guests/noop-events, an event handler that does nothing, subscribed
# to topic `bench`. The driver (benches/src/bin/event-load.rs) runs N
# publishers, each in a closed loop on its own keep-alive connection to the
# admin API (`POST /v1/topics/bench/events`, 64-byte JSON payloads; the host
# answers 202 only once the event is flushed to disk), for DURATION seconds;
# then it waits until the host's `wisp_event_deliveries_total{result=
# "success"}` counter has grown by the number of events published, and
# checks a sample of events through `GET /v1/events/{id}` (every delivery
# `done`, and its publish-to-handled time).
#
# Cases, per publisher count, alternating in each round:
#   noop    the no-op handler subscribed (the measured path)
#   post    examples/hello subscribed instead, delivered as an HTTP POST
#           (the other delivery path; POST=0 skips it)
#   none    the same publishes on a topic nobody subscribes to: HTTP, the
#           publish transaction and the group-commit flush, no delivery
#   sled    in process, no HTTP: insert a 200-byte record into a bare sled
#           tree and wait for a group-commit flush (one flushing thread
#           shared by all writers, as in the host's store). The floor of a
#           durable write on this disk; the "native" baseline.
#
# Reported per case: events published/s, publish latency p50/p99/max, end
# to end handled events/s (first publish -> last delivery counted), the
# sampled publish-to-handled latency, failed deliveries, and the server's
# CPU per event (utime+stime of `wisp serve` over the run, its drain and
# the removal of its events after the retention).
# Medians across rounds. Target (issue "Events"): >= 5,000 handled
# events/s, publish p99 < 20 ms.
#
# Settings (environment):
#   DURATION     seconds of publishing per run (default 10)
#   ROUNDS       rounds (default 3)
#   PUBLISHERS   publisher counts (default "8 32 64")
#   CONCURRENCY  deliveries at once of the benchmark's subscriptions
#                (default 16; the host's default per subscription is 4)
#   POST         1 (default) also runs the `post` case
#   SLED         1 (default) also runs the `sled` case
#   WISP_STORE_CACHE  the host's store page cache (default 16MiB, the
#                edge-sized default of `wisp serve`)
#   RETENTION    the host's --event-retention (default 5s: finished events
#                are removed while the load runs, so the figures include
#                the sweep that keeps the store from growing; each run
#                then waits until its events are removed, and its CPU per
#                event includes that)
#
# Everything binds and connects to 127.0.0.1 only; the server is stopped on
# exit. Needs: cargo, the wasm32-wasip2 target, curl, python3.
set -euo pipefail
# A backtrace captured on every error (anyhow) costs real CPU; never
# benchmark with it set.
unset RUST_BACKTRACE

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
PUBLISHERS=${PUBLISHERS:-"8 32 64"}
CONCURRENCY=${CONCURRENCY:-16}
POST=${POST:-1}
SLED=${SLED:-1}
RETENTION=${RETENTION:-5s}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WISP=$TARGET_DIR/release/wisp
LOAD=$TARGET_DIR/release/event-load
NOOP_WASM=$ROOT/target/wasm/wasm32-wasip2/release/noop_events.wasm
HELLO_WASM=$ROOT/target/wasm/wasm32-wasip2/release/hello.wasm

say() { echo "events.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# ------------------------------------------------------------------ build
say "building wisp and event-load (release)"
# Two invocations: built together, cargo would unify the two packages'
# dependency features and build a third copy of everything.
cargo build --release -p wisp-cli --bin wisp
cargo build --release -p wisp-benches --bin event-load
if [ ! -d "$(rustc --print sysroot)/lib/rustlib/wasm32-wasip2" ]; then
    die "the wasm32-wasip2 target is not installed: rustup target add wasm32-wasip2"
fi
say "building the noop-events and hello guests (wasm32-wasip2, release)"
cargo build --release --target wasm32-wasip2 --target-dir target/wasm -p noop-events -p hello
[ -f "$NOOP_WASM" ] || die "no $NOOP_WASM after the build"
[ -f "$HELLO_WASM" ] || die "no $HELLO_WASM after the build"
command -v curl >/dev/null 2>&1 || die "curl is needed"
command -v python3 >/dev/null 2>&1 || die "python3 is needed (the report)"
CLK_TCK=$(getconf CLK_TCK)

# ----------------------------------------------------------------- server
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wisp-events.XXXXXX")
SERVER=
cleanup() {
    if [ -n "$SERVER" ]; then
        kill "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port: sets PORT to a port nobody listens on (checked against
# /proc/net/tcp*), not handed out before by this script.
TAKEN=" "
free_port() {
    local p hex
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 40000))
        hex=$(printf '%04X' "$p")
        case "$TAKEN" in *" $p "*) continue ;; esac
        if ! grep -qi ":$hex " /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            TAKEN="$TAKEN$p "
            PORT=$p
            return
        fi
    done
    die "no free port found"
}

free_port; DATA_PORT=$PORT
free_port; ADMIN_PORT=$PORT
ADMIN=http://127.0.0.1:$ADMIN_PORT
export WISP_ADMIN_TOKEN
WISP_ADMIN_TOKEN=events-bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')

say "starting wisp serve"
RUST_LOG=warn "$WISP" serve --data-dir "$TMP/data" \
    --listen "127.0.0.1:$DATA_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --deploy "noop=$NOOP_WASM" --deploy "hello=$HELLO_WASM:/hello" \
    --event-retention "$RETENTION" >>"$TMP/wisp.log" 2>&1 &
SERVER=$!
for _ in $(seq 600); do
    kill -0 "$SERVER" 2>/dev/null || { cat "$TMP/wisp.log" >&2; die "wisp serve exited during start-up"; }
    curl -sf -o /dev/null "http://127.0.0.1:$DATA_PORT/hello" && break
    sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$DATA_PORT/hello" || die "wisp serve did not start"

api() {
    curl -sf -H "authorization: Bearer $WISP_ADMIN_TOKEN" -H 'content-type: application/json' "$@"
}
api -o /dev/null -d "{\"function\":\"noop\",\"topic\":\"bench\",\"concurrency\":$CONCURRENCY}" \
    "$ADMIN/v1/subscriptions" || die "subscribing noop failed"
api -o /dev/null -d "{\"function\":\"hello\",\"topic\":\"bench-post\",\"path\":\"/hello\",\"concurrency\":$CONCURRENCY}" \
    "$ADMIN/v1/subscriptions" || die "subscribing hello failed"

proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

RESULTS=$TMP/results.jsonl
: >"$RESULTS"
# run CASE PUBLISHERS ROUND
run() {
    local case=$1 p=$2 round=$3 out t0 t1
    case $case in
        sled)
            out=$("$LOAD" sled --dir "$TMP/sled-$round-$p" --publishers "$p" --duration "$DURATION")
            rm -rf "$TMP/sled-$round-$p"
            t0=0; t1=0
            ;;
        *)
            local topic=bench per=1
            [ "$case" != post ] || topic=bench-post
            [ "$case" != none ] || { topic=bench-none; per=0; }
            t0=$(proc_ticks "$SERVER")
            # --wait-swept: the run ends once the host has removed its events
            # again (retention), so the next case does not pay for them and
            # this one's CPU includes their removal.
            out=$("$LOAD" publish --admin "$ADMIN" --topic "$topic" --deliveries-per-event "$per" \
                --publishers "$p" --duration "$DURATION" --wait-swept 300)
            t1=$(proc_ticks "$SERVER")
            ;;
    esac
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
r.update(case=sys.argv[2], round=int(sys.argv[3]))
events = r.get("handled") or r["published"]
r["cpu_us_per_event"] = (int(sys.argv[4]) * 1e6 / int(sys.argv[5]) / events) if sys.argv[4] != "0" else None
print(json.dumps(r))
' "$out" "$case" "$round" "$((t1 - t0))" "$CLK_TCK" >>"$RESULTS"
}

CASES="noop none"
[ "$POST" != 1 ] || CASES="$CASES post"
[ "$SLED" != 1 ] || CASES="$CASES sled"

say "warming up (3 s)"
"$LOAD" publish --admin "$ADMIN" --topic bench --publishers 8 --duration 3 --wait-swept 300 >/dev/null

say "measuring: $ROUNDS rounds x publishers ($PUBLISHERS) x cases ($CASES), ${DURATION}s each"
order=$CASES
for round in $(seq "$ROUNDS"); do
    for p in $PUBLISHERS; do
        for c in $order; do
            say "round $round, $c, $p publishers"
            run "$c" "$p" "$round"
        done
    done
    order=$(tr ' ' '\n' <<<"$order" | tac | tr '\n' ' ')
done

# ----------------------------------------------------------------- report
python3 - "$RESULTS" "$DURATION" "$ROUNDS" "$CONCURRENCY" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" <<'EOF'
import json, os, platform, statistics, sys, time
path, duration, rounds, concurrency, rev = sys.argv[1:6]
rows = [json.loads(l) for l in open(path)]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"## Events: publish -> handled, {duration} s x {rounds} rounds, medians\n")
print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs ({cpu}); "
      f"Linux {platform.release()}; wisp {rev}; subscription concurrency {concurrency}; "
      f"store cache {os.environ.get('WISP_STORE_CACHE', '16MiB')}; "
      f"load average at the end {os.getloadavg()[0]:.2f}\n")
labels = {
    "noop": "wisp, no-op event handler",
    "post": "wisp, hello via POST delivery",
    "none": "wisp, publish only (no subscriber)",
    "sled": "sled insert + group-commit flush, in process",
}
def med(case, p, key):
    v = [r[key] for r in rows if r["case"] == case and r["publishers"] == p and r.get(key) is not None]
    return statistics.median(v) if v else None
def f(v, fmt):
    return "–" if v is None else format(v, fmt)
pubs = sorted({r["publishers"] for r in rows})
cases = [c for c in labels if any(r["case"] == c for r in rows)]
print("| case | publishers | published/s | publish p50 | publish p99 | publish max | handled/s (end to end) | handled latency p50 / p99 (sample) | failed | server CPU µs/event |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for p in pubs:
    for c in cases:
        h = med(c, p, "handled_per_s") if c in ("noop", "post") else None
        lat = ""
        if c in ("noop", "post"):
            lat = f"{f(med(c, p, 'handled_latency_p50_ms'), '.0f')} / {f(med(c, p, 'handled_latency_p99_ms'), '.0f')} ms"
        failed = sum(r.get("deliveries_failed", 0) + r.get("deliveries_dead", 0) + r.get("publish_errors", 0)
                     for r in rows if r["case"] == c and r["publishers"] == p)
        print(f"| {labels[c]} | {p} | {f(med(c, p, 'published_per_s'), ',.0f')} | "
              f"{f(med(c, p, 'publish_p50_ms'), '.2f')} ms | {f(med(c, p, 'publish_p99_ms'), '.2f')} ms | "
              f"{f(med(c, p, 'publish_max_ms'), '.1f')} ms | {f(h, ',.0f')} | {lat} | "
              f"{failed if c != 'sled' else '–'} | {f(med(c, p, 'cpu_us_per_event'), '.0f')} |")
print()
print("| ratio | publishers | value |")
print("|---|---:|---:|")
for p in pubs:
    n, none, sled = med("noop", p, "handled_per_s"), med("none", p, "published_per_s"), med("sled", p, "published_per_s")
    if n and none:
        print(f"| handled/s (no-op handler) / published/s (no subscriber) | {p} | {n / none:.2f} |")
    if n and sled:
        print(f"| handled/s (no-op handler) / sled durable inserts/s | {p} | {n / sled:.2f} |")
    if none and sled:
        print(f"| published/s (no subscriber) / sled durable inserts/s | {p} | {none / sled:.2f} |")
    post = med("post", p, "handled_per_s")
    if n and post:
        print(f"| handled/s, POST delivery / event handler | {p} | {post / n:.2f} |")
print()
print("Target (no-op handler): >= 5,000 handled events/s and publish p99 < 20 ms:")
for p in pubs:
    h, p99 = med("noop", p, "handled_per_s"), med("noop", p, "publish_p99_ms")
    if h is None:
        continue
    ok = h >= 5000 and p99 < 20
    print(f"- {p} publishers: {h:,.0f}/s, p99 {p99:.2f} ms -> {'met' if ok else 'MISSED'}")
print()
print("<details><summary>every run</summary>\n\n```")
keys = ["case", "publishers", "round", "published", "published_per_s", "publish_p50_ms", "publish_p99_ms",
        "publish_max_ms", "handled", "e2e_secs", "handled_per_s", "deliveries_failed", "cpu_us_per_event",
        "swept_after_s"]
print(" ".join(keys))
for r in sorted(rows, key=lambda r: (r["case"], r["publishers"], r["round"])):
    print(" ".join(str(round(r[k], 2) if isinstance(r.get(k), float) else r.get(k, "-")) for k in keys))
print("```\n</details>")
EOF
