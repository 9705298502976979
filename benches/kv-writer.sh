#!/usr/bin/env bash
# Key-value writes beside other requests: `hello` at 16 connections while a
# second function takes 16 connections of its own in the same `wisp serve`,
# at the same time (two wrk processes):
#
#   - "beside a non-writer": the second function is hello again, deployed as
#     `other` (no store access);
#   - "beside a writer": the second function is examples/counter, one
#     key-value increment per request, each acknowledged once flushed.
#
# A key-value write must not slow down the requests that do not write:
# hello beside the writer keeps >= 80% of the req/s it has beside the
# non-writer, and its p50 is at most 1.5x. The writer's requests/s are its
# writes/s (one increment each).
#
#   bash benches/kv-writer.sh                           # 3 rounds of 10 s
#   BEFORE=/path/to/old/wisp bash benches/kv-writer.sh  # before and after
#
# Settings (environment):
#   DURATION   seconds per pair of wrk runs (default 10)
#   ROUNDS     rounds; each round runs every case of every binary,
#              alternating, so drift hits all alike (default 3)
#   CONNS      connections of each wrk (default 16), one wrk thread each
#   WARMUP     seconds of warm-up per server and case (default 3)
#   BEFORE     path of another `wisp` binary, e.g. one built from the commit
#              before a change: measured in the same run as "wisp-before"
#   GUEST_TARGET_DIR  where the guests are built (default target/wasm)
#   WAIT_IDLE  1 (default): before each run, wait (up to 10 min) until the
#              machine is idle (>= 90% over a second)
#
# Per run: each wrk's requests/s and p50 and p99 latency, and the server's
# CPU per request (both wrks' requests). The table shows medians across
# rounds. Everything binds and connects to 127.0.0.1 only; the servers are
# stopped on exit. Needs: cargo, the wasm32-wasip2 target, curl, wrk.
set -euo pipefail
# A backtrace captured on every error costs real CPU; never benchmark with it.
unset RUST_BACKTRACE

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-16}
WARMUP=${WARMUP:-3}
WAIT_IDLE=${WAIT_IDLE:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WISP=$TARGET_DIR/release/wisp
GUEST_TARGET_DIR=${GUEST_TARGET_DIR:-target/wasm}
HELLO=$GUEST_TARGET_DIR/wasm32-wasip2/release/hello.wasm
COUNTER=$GUEST_TARGET_DIR/wasm32-wasip2/release/counter.wasm

say() { echo "kv-writer.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# ------------------------------------------------------------------ build
say "building wisp (release) and the hello and counter guests"
cargo build --release -p wisp-cli --bin wisp
if [ ! -d "$(rustc --print sysroot)/lib/rustlib/wasm32-wasip2" ]; then
    die "the wasm32-wasip2 target is not installed: rustup target add wasm32-wasip2"
fi
cargo build --release --target wasm32-wasip2 --target-dir "$GUEST_TARGET_DIR" -p hello -p counter
[ -f "$HELLO" ] || die "no $HELLO after the build"
[ -f "$COUNTER" ] || die "no $COUNTER after the build"
command -v wrk >/dev/null 2>&1 || die "wrk is needed (apt-get install -y wrk)"
command -v curl >/dev/null 2>&1 || die "curl is needed"
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- servers
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wisp-kv-writer.XXXXXX")
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

declare -A PID BASE
# start_wisp NAME BINARY: hello at /hello, hello again as `other` at
# /other/*, counter at /count/*.
start_wisp() {
    local name=$1 bin=$2 port admin
    free_port; port=$PORT
    free_port; admin=$PORT
    RUST_LOG=warn "$bin" serve --data-dir "$TMP/data-$name" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        --deploy "hello=$HELLO:/hello" --deploy "other=$HELLO:/other/*" \
        --deploy "counter=$COUNTER:/count/*" >>"$TMP/$name.log" 2>&1 &
    PIDS+=("$!")
    PID[$name]=$!
    BASE[$name]="http://127.0.0.1:$port"
    wait_ready "$name" "${PID[$name]}" "${BASE[$name]}/hello"
    curl -sf -o /dev/null "${BASE[$name]}/other/x" || die "$name: GET /other/x failed"
    curl -sf "${BASE[$name]}/count/bench" | grep -q '"count"' || die "$name: the counter did not count"
}

say "starting servers"
start_wisp wisp "$WISP"
SERVERS="wisp"
if [ -n "${BEFORE:-}" ]; then
    [ -x "$BEFORE" ] || die "BEFORE=$BEFORE is not an executable"
    start_wisp wisp-before "$BEFORE"
    SERVERS="wisp wisp-before"
fi

# ---------------------------------------------------------------- measure
# How idle the machine was in the second before each run (the report says):
# the servers are idle then too, so anything busy is someone else.
IDLES=$TMP/idles
: >"$IDLES"
wait_idle() {
    local n idle
    for n in $(seq 600); do
        idle=$(idle_pct)
        [ "$WAIT_IDLE" = 1 ] || break
        [ "$idle" -ge 90 ] && break
        [ "$n" = 1 ] && say "waiting for the machine to be idle (something else is running)"
        [ "$n" = 600 ] && say "warning: still busy after 10 min; measuring anyway"
    done
    echo "$idle" >>"$IDLES"
}

proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# wrk_stats FILE: requests, req/s, p50 µs, p99 µs of one wrk run.
wrk_stats() {
    local out reqs rps p50 p99
    out=$(cat "$1")
    if grep -q -e 'Non-2xx' -e 'Socket errors' <<<"$out"; then
        say "warning: errors in $1:"
        grep -e 'Non-2xx' -e 'Socket errors' <<<"$out" >&2
    fi
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    echo "$reqs $rps $p50 $p99"
}

SECOND_PATH_quiet=/other/x
SECOND_PATH_writer=/count/bench
RESULTS=$TMP/results
: >"$RESULTS"
# run SERVER CASE ROUND DURATION: hello and the case's second function at
# once; one result line (unless DURATION is the warm-up's).
run() {
    local server=$1 kase=$2 round=$3 secs=$4 pid=${PID[$1]} path t0 t1
    path=SECOND_PATH_$kase
    wait_idle
    t0=$(proc_ticks "$pid")
    wrk -t1 -c"$CONNS" -d"${secs}s" --latency "${BASE[$server]}/hello" >"$TMP/hello.out" &
    local w1=$!
    wrk -t1 -c"$CONNS" -d"${secs}s" --latency "${BASE[$server]}${!path}" >"$TMP/second.out" &
    local w2=$!
    wait "$w1" "$w2"
    t1=$(proc_ticks "$pid")
    [ "$round" != warmup ] || return 0
    local h s
    read -ra h < <(wrk_stats "$TMP/hello.out")
    read -ra s < <(wrk_stats "$TMP/second.out")
    awk -v sv="$server" -v k="$kase" -v r="$round" -v hr="${h[1]}" -v hp50="${h[2]}" \
        -v hp99="${h[3]}" -v sr="${s[1]}" -v sp50="${s[2]}" -v reqs=$((h[0] + s[0])) \
        -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" 'BEGIN {
            printf "%s %s %s %.0f %s %s %.0f %s %.2f\n", sv, k, r, hr, hp50, hp99, sr, sp50,
                ticks * 1e6 / hz / reqs
        }' >>"$RESULTS"
    say "$(tail -n1 "$RESULTS" | awk '{printf "round %s  %-11s beside %-6s hello %6s req/s p50 %5s us p99 %6s us | second %6s req/s p50 %5s us | %6s CPU us/req", $3, $1, $2, $4, $5, $6, $7, $8, $9}')"
}

say "warming up (${WARMUP}s per server and case)"
for sv in $SERVERS; do
    for k in quiet writer; do run "$sv" "$k" warmup "$WARMUP"; done
done

say "measuring: $ROUNDS rounds x servers ($SERVERS) x cases (quiet, writer), ${DURATION}s each"
order=""
for sv in $SERVERS; do order="$order $sv:quiet $sv:writer"; done
for round in $(seq "$ROUNDS"); do
    for item in $order; do run "${item%%:*}" "${item#*:}" "$round" "$DURATION"; done
    # Reverse the order every round so no case always runs first.
    order=$(tr ' ' '\n' <<<"$order" | tac | tr '\n' ' ')
done

# ----------------------------------------------------------------- report
MEDIANS=$TMP/medians
awk '
    { k = $1 " " $2; n[k]++; for (i = 4; i <= 9; i++) v[k, i, n[k]] = $i; keys[k] = 1 }
    function median(k, i,   m, a, j, t, x, y) {
        m = n[k]
        for (j = 1; j <= m; j++) a[j] = v[k, i, j] + 0
        for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
        return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
    }
    END { for (k in keys) print k, median(k, 4), median(k, 5), median(k, 6), median(k, 7), median(k, 8), median(k, 9) }
' "$RESULTS" >"$MEDIANS"
get() { awk -v s="$1" -v k="$2" -v i="$3" '$1 == s && $2 == k {print $i}' "$MEDIANS"; }
label() {
    case $1 in
        wisp) echo "wisp" ;;
        wisp-before) echo "wisp, the BEFORE binary" ;;
    esac
}

echo
echo "## Key-value writer beside hello: wrk -t1 -c$CONNS x 2 at once, ${DURATION}s x $ROUNDS rounds, medians"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)); Linux $(uname -r); wisp $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); CPU idle in the second before each run: $(sort -n "$IDLES" | awk '{a[NR] = $1} END {printf "%s%% to %s%%", a[1], a[NR]}')"
echo
echo "| server | beside | hello req/s | hello p50 | hello p99 | beside: req/s | beside: p50 | CPU µs/req |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for sv in $SERVERS; do
    for k in quiet writer; do
        case $k in quiet) what="hello again (no store)" ;; writer) what="counter (kv increment, flushed)" ;; esac
        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$sv")" "$what" \
            "$(printf '%.0f' "$(get "$sv" "$k" 3)")" "$(fmt_us "$(get "$sv" "$k" 4)")" \
            "$(fmt_us "$(get "$sv" "$k" 5)")" "$(printf '%.0f' "$(get "$sv" "$k" 6)")" \
            "$(fmt_us "$(get "$sv" "$k" 7)")" "$(printf '%.1f' "$(get "$sv" "$k" 8)")"
    done
done
echo
echo "Targets (hello beside the writer against hello beside the non-writer, same binary):"
for sv in $SERVERS; do
    awk -v l="$(label "$sv")" -v qr="$(get "$sv" quiet 3)" -v wr="$(get "$sv" writer 3)" \
        -v qp="$(get "$sv" quiet 4)" -v wp="$(get "$sv" writer 4)" -v writes="$(get "$sv" writer 6)" 'BEGIN {
        ok1 = (wr / qr >= 0.80); ok2 = (wp / qp <= 1.5)
        printf "- %s: hello req/s %.0f%% (target >= 80%%: %s), p50 %.2fx (target <= 1.5x: %s); the writer: %.0f writes/s\n",
            l, 100 * wr / qr, ok1 ? "met" : "MISSED", wp / qp, ok2 ? "met" : "MISSED", writes
    }'
done
echo
echo "<details><summary>every run</summary>"
echo
echo '```'
echo "server beside round hello_req/s hello_p50_us hello_p99_us second_req/s second_p50_us cpu_us/req"
sort -k1,1 -k2,2 -k3,3n "$RESULTS"
echo '```'
echo "</details>"
