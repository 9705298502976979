#!/usr/bin/env bash
# Load benchmark: `wisp serve` running the hello guest against a native axum
# hello-world server (native-hello) answering the same bytes, on the same
# machine, in the same run; reported as a ratio.
#
#   bash benches/load.sh                       # 3 rounds of 10 s per case
#   DURATION=5 ROUNDS=5 bash benches/load.sh
#
# Settings (environment):
#   DURATION   seconds per wrk run (default 10)
#   ROUNDS     rounds; each round runs every server at every connection count,
#              alternating, so drift hits all alike (default 3)
#   CONNS      connection counts (default "1 32"), one wrk thread each
#   WARMUP     seconds of warm-up per server before the rounds (default 3)
#   INFO_LOG   1 (default) also runs a second `wisp serve` with its default
#              logging (one info line per invocation, to a file): "wisp-info"
#   TODO       1 (default) also measures examples/todo-api in the same
#              `wisp serve` as hello: `GET /todos/1`, one key-value read and a
#              JSON answer per request: "todo" (target: >= 80% of hello's req/s)
#   CGI        1 (default) also measures examples/cgi-rust, a wasm32-wasip1
#              module run CGI-style, in the same `wisp serve`: "cgi"
#              (target: >= 70% of hello's req/s)
#   P3         1 (default) also measures WASI 0.3: benches/guests/bench-p3
#              (the same bytes from a wasi:http/handler@0.3 component) in
#              two more `wisp serve` processes: "p3", a fresh instance per
#              request, and "p3-reuse", deployed with --reuse 1000
#              --reuse-concurrency 16; with WASMTIME, also `wasmtime serve
#              -Scli` (the component imports wasi:cli 0.2, as Rust's std
#              does) with its defaults on that component (it reuses 0.3
#              instances by default): "wasmtime-p3"
#   MINIMAL    1 (default) also measures minimal-host (benches/src/bin): the
#              same hello.wasm in the smallest wasmtime host with Wisp's
#              engine settings, a fresh instance per request: the floor of
#              what Wisp could cost on this machine: "minimal"; with P3,
#              also bench-p3 in it (--p3): "minimal-p3", a fresh instance per
#              request, and "minimal-p3-reuse", wasmtime-wasi-http's
#              ProxyHandler with --reuse 1000 --reuse-concurrency 16: the
#              floors of the two WASI 0.3 paths
#   WASMTIME   path of a `wasmtime` 48 binary (none by default; e.g.
#              `cargo install wasmtime-cli --version 48.0.8 --locked`, a
#              15-minute build here): also measures `wasmtime serve -Scli`
#              with its defaults on the same hello.wasm, the reference host
#              the issue's targets were set against: "wasmtime-serve"
#   BEFORE     path of another `wisp` binary, e.g. one built from the commit
#              before a change (none by default): also measured, with the
#              same guests and settings, as "wisp-before": a change's
#              before and after in one run, with its idle RSS; with P3,
#              also bench-p3 fresh and reused on it: "p3-before",
#              "p3-reuse-before"
#   GUEST_TARGET_DIR  where the guests are built (default target/wasm)
#   WAIT_IDLE  1 (default): before each wrk run, wait (up to 10 min) until
#              the machine is idle (>= 90% over a second); on a shared 2-CPU
#              machine a build or a load test next door halves req/s
#
# Per run: requests/s, p50 and p99 latency (wrk), and the server's CPU per
# request: utime+stime of the server process (/proc/PID/stat, all threads)
# before and after, over the number of requests wrk completed; page faults
# per request likewise (minflt+majflt). The table shows medians across rounds.
# Idle RSS of `wisp serve` is VmRSS with hello, todo-api and cgi deployed,
# before any load, after a restart (the first start compiles them, and the
# compiler's scratch memory is still mapped then; that figure is shown too).
#
# Everything binds and connects to 127.0.0.1 only; the servers are stopped on
# exit. Needs: cargo, the wasm32-wasip2 target, curl, wrk (installed with
# apt-get when missing).
set -euo pipefail
# A backtrace captured on every error (anyhow) costs real CPU per failed or
# even successful request path; never benchmark with it set.
unset RUST_BACKTRACE

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-"1 32"}
WARMUP=${WARMUP:-3}
INFO_LOG=${INFO_LOG:-1}
TODO=${TODO:-1}
CGI=${CGI:-1}
MINIMAL=${MINIMAL:-1}
P3=${P3:-1}
WAIT_IDLE=${WAIT_IDLE:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WISP=$TARGET_DIR/release/wisp
NATIVE=$TARGET_DIR/release/native-hello
MINIMAL_HOST=$TARGET_DIR/release/minimal-host
GUEST_TARGET_DIR=${GUEST_TARGET_DIR:-target/wasm}
WASM=$GUEST_TARGET_DIR/wasm32-wasip2/release/hello.wasm
TODO_WASM=$GUEST_TARGET_DIR/wasm32-wasip2/release/todo_api.wasm
CGI_WASM=$GUEST_TARGET_DIR/wasm32-wasip1/release/cgi-rust.wasm
P3_WASM=$GUEST_TARGET_DIR/wasm32-wasip2/release/bench_p3.wasm

say() { echo "load.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# ------------------------------------------------------------------ build
say "building wisp, native-hello and minimal-host (release)"
cargo build --release -p wisp-cli --bin wisp -p wisp-benches --bin native-hello --bin minimal-host
if [ ! -d "$(rustc --print sysroot)/lib/rustlib/wasm32-wasip2" ]; then
    die "the wasm32-wasip2 target is not installed: rustup target add wasm32-wasip2"
fi
say "building the hello and todo-api guests (wasm32-wasip2, release)"
cargo build --release --target wasm32-wasip2 --target-dir "$GUEST_TARGET_DIR" -p hello -p todo-api -p bench-p3
[ -f "$WASM" ] || die "no $WASM after the build"
[ -f "$TODO_WASM" ] || die "no $TODO_WASM after the build"
if [ ! -d "$(rustc --print sysroot)/lib/rustlib/wasm32-wasip1" ]; then
    die "the wasm32-wasip1 target is not installed: rustup target add wasm32-wasip1"
fi
say "building the cgi-rust example (wasm32-wasip1, release)"
cargo build --release --target wasm32-wasip1 --target-dir "$GUEST_TARGET_DIR" -p cgi-rust
[ -f "$CGI_WASM" ] || die "no $CGI_WASM after the build"

# ------------------------------------------------------------------ tools
if ! command -v wrk >/dev/null 2>&1; then
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    say "installing wrk"
    $SUDO apt-get install -y wrk >/dev/null 2>&1 ||
        { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y wrk >/dev/null; } ||
        die "cannot install wrk (apt-get install -y wrk)"
fi
command -v curl >/dev/null 2>&1 || die "curl is needed"
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- servers
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wisp-load.XXXXXX")
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

declare -A URL PID BASE
# start_wisp NAME RUST_LOG ('' = the binary's default logging) [BINARY]
start_wisp() {
    local name=$1 log=$2 bin=${3:-$WISP} port admin
    free_port; port=$PORT
    free_port; admin=$PORT
    if [ -n "$log" ]; then
        RUST_LOG=$log "$bin" serve --data-dir "$TMP/data-$name" \
            --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
            --deploy "hello=$WASM:/hello" --deploy "todo-api=$TODO_WASM:/todos/*" \
            --deploy "cgi=$CGI_WASM:/cgi/*" >>"$TMP/$name.log" 2>&1 &
    else
        env -u RUST_LOG "$bin" serve --data-dir "$TMP/data-$name" \
            --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
            --deploy "hello=$WASM:/hello" --deploy "todo-api=$TODO_WASM:/todos/*" \
            --deploy "cgi=$CGI_WASM:/cgi/*" >>"$TMP/$name.log" 2>&1 &
    fi
    PIDS+=("$!")
    PID[$name]=$!
    URL[$name]="http://127.0.0.1:$port/hello"
    BASE[$name]="http://127.0.0.1:$port"
    wait_ready "$name" "${PID[$name]}" "${URL[$name]}"
}

# start_p3 NAME BINARY [DEPLOY FLAGS...]: a `wisp serve` of its own (so its
# CPU is its own) with bench-p3 at /hello, deployed through the CLI.
start_p3() {
    local name=$1 bin=$2 port admin
    shift 2
    free_port; port=$PORT
    free_port; admin=$PORT
    RUST_LOG=warn "$bin" serve --data-dir "$TMP/data-$name" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" >>"$TMP/$name.log" 2>&1 &
    PIDS+=("$!")
    PID[$name]=$!
    URL[$name]="http://127.0.0.1:$port/hello"
    BASE[$name]="http://127.0.0.1:$port"
    local n
    for n in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$admin/v1/health" && break
        sleep 0.1
    done
    "$WISP" deploy hello "$P3_WASM" --route /hello "$@" \
        --admin-url "http://127.0.0.1:$admin" --data-dir "$TMP/data-$name" >/dev/null ||
        die "deploying bench-p3 to $name failed"
    wait_ready "$name" "${PID[$name]}" "${URL[$name]}"
}

start_wasmtime_p3() {
    local port
    free_port; port=$PORT
    "$WASMTIME" serve -Scli --addr "127.0.0.1:$port" "$P3_WASM" >>"$TMP/wasmtime-p3.log" 2>&1 &
    PIDS+=("$!")
    PID[wasmtime-p3]=$!
    URL[wasmtime-p3]="http://127.0.0.1:$port/hello"
    wait_ready wasmtime-p3 "${PID[wasmtime-p3]}" "${URL[wasmtime-p3]}"
}

start_native() {
    local port
    free_port; port=$PORT
    "$NATIVE" --listen "127.0.0.1:$port" >>"$TMP/native.log" 2>&1 &
    PIDS+=("$!")
    PID[native]=$!
    URL[native]="http://127.0.0.1:$port/hello"
    wait_ready native "${PID[native]}" "${URL[native]}"
}

# start_minimal NAME [minimal-host flags... WASM] (default: hello.wasm)
start_minimal() {
    local name=${1:-minimal} port
    shift || true
    [ "$#" -gt 0 ] || set -- "$WASM"
    free_port; port=$PORT
    "$MINIMAL_HOST" --listen "127.0.0.1:$port" "$@" >>"$TMP/$name.log" 2>&1 &
    PIDS+=("$!")
    PID[$name]=$!
    URL[$name]="http://127.0.0.1:$port/hello"
    wait_ready "$name" "${PID[$name]}" "${URL[$name]}"
}

start_wasmtime() {
    local port
    free_port; port=$PORT
    "$WASMTIME" serve -Scli --addr "127.0.0.1:$port" "$WASM" >>"$TMP/wasmtime.log" 2>&1 &
    PIDS+=("$!")
    PID[wasmtime-serve]=$!
    URL[wasmtime-serve]="http://127.0.0.1:$port/hello"
    wait_ready wasmtime-serve "${PID[wasmtime-serve]}" "${URL[wasmtime-serve]}"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# utime stime minflt majflt of a process (all its threads); the fields after
# the parenthesised command name, which may itself hold spaces.
proc_stat() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13, $8, $10}'; }

say "starting servers"
start_wisp wisp warn
sleep 1
WISP_START_RSS=$(rss_kib "${PID[wisp]}")
# Restart on the same data directory: the functions load from their compiled
# code (nothing compiles); this is the host's idle footprint.
kill -TERM "${PID[wisp]}"
wait "${PID[wisp]}" 2>/dev/null || true
start_wisp wisp warn
sleep 1
WISP_IDLE_RSS=$(rss_kib "${PID[wisp]}")
SERVERS="wisp native"
if [ "$INFO_LOG" = 1 ]; then
    start_wisp wisp-info ""
    SERVERS="wisp wisp-info native"
fi
if [ -n "${BEFORE:-}" ]; then
    [ -x "$BEFORE" ] || die "BEFORE=$BEFORE is not an executable"
    # Started, stopped and started again, like "wisp": its idle footprint.
    start_wisp wisp-before warn "$BEFORE"
    kill -TERM "${PID[wisp-before]}"
    wait "${PID[wisp-before]}" 2>/dev/null || true
    start_wisp wisp-before warn "$BEFORE"
    sleep 1
    BEFORE_IDLE_RSS=$(rss_kib "${PID[wisp-before]}")
    SERVERS="$SERVERS wisp-before"
fi
start_native
NATIVE_IDLE_RSS=$(rss_kib "${PID[native]}")
if [ "$MINIMAL" = 1 ]; then
    start_minimal
    SERVERS="$SERVERS minimal"
fi
if [ -n "${WASMTIME:-}" ]; then
    start_wasmtime
    SERVERS="$SERVERS wasmtime-serve"
fi
if [ "$P3" = 1 ]; then
    [ -f "$P3_WASM" ] || die "no $P3_WASM after the build"
    start_p3 p3 "$WISP"
    start_p3 p3-reuse "$WISP" --reuse 1000 --reuse-concurrency 16
    SERVERS="$SERVERS p3 p3-reuse"
    if [ -n "${BEFORE:-}" ]; then
        start_p3 p3-before "$BEFORE"
        start_p3 p3-reuse-before "$BEFORE" --reuse 1000 --reuse-concurrency 16
        SERVERS="$SERVERS p3-before p3-reuse-before"
    fi
    if [ "$MINIMAL" = 1 ]; then
        start_minimal minimal-p3 --p3 "$P3_WASM"
        start_minimal minimal-p3-reuse --p3 --reuse 1000 --reuse-concurrency 16 "$P3_WASM"
        SERVERS="$SERVERS minimal-p3 minimal-p3-reuse"
    fi
    if [ -n "${WASMTIME:-}" ]; then
        start_wasmtime_p3
        SERVERS="$SERVERS wasmtime-p3"
    fi
    for s in p3 p3-reuse ${BEFORE:+p3-before p3-reuse-before} \
        $([ "$MINIMAL" = 1 ] && echo minimal-p3 minimal-p3-reuse); do
        [ "$(curl -s "${URL[$s]}")" = "$(curl -s "${URL[native]}")" ] ||
            die "$s answers other bytes than native-hello"
    done
fi
if [ "$TODO" = 1 ]; then
    # The same process as "wisp": one to-do, then GET it per request.
    curl -sf -o /dev/null -d '{"title":"benchmark"}' "${BASE[wisp]}/todos" ||
        die "creating a to-do failed"
    PID[todo]=${PID[wisp]}
    URL[todo]="${BASE[wisp]}/todos/1"
    curl -sf "${URL[todo]}" | grep -q benchmark || die "GET ${URL[todo]} did not return the to-do"
    SERVERS="$SERVERS todo"
fi
if [ "$CGI" = 1 ]; then
    PID[cgi]=${PID[wisp]}
    URL[cgi]="${BASE[wisp]}/cgi/hello"
    curl -sf -o /dev/null "${URL[cgi]}" || die "GET ${URL[cgi]} failed"
    SERVERS="$SERVERS cgi"
fi

# Same bytes from both, or the comparison is meaningless.
W=$(curl -s -D "$TMP/wisp.h" "${URL[wisp]}")
N=$(curl -s -D "$TMP/native.h" "${URL[native]}")
[ "$W" = "$N" ] || die "the bodies differ: wisp '$W', native '$N'"
WT=$(awk -F': ' 'tolower($1)=="content-type" {print $2}' "$TMP/wisp.h" | tr -d '\r')
NT=$(awk -F': ' 'tolower($1)=="content-type" {print $2}' "$TMP/native.h" | tr -d '\r')
[ "$WT" = "$NT" ] || say "warning: content types differ: wisp '$WT', native '$NT'"

# ---------------------------------------------------------------- measure
# wait_idle: until the machine is idle (>= 90% over a second: between runs
# our servers are idle too), for at most 10 minutes (WAIT_IDLE=1).
wait_idle() {
    [ "$WAIT_IDLE" = 1 ] || return 0
    local n
    for n in $(seq 600); do
        [ "$(idle_pct)" -ge 90 ] && return 0
        [ "$n" = 1 ] && say "waiting for the machine to be idle (something else is running)"
    done
    say "warning: still busy after 10 min; measuring anyway"
}

RESULTS=$TMP/results
: >"$RESULTS"
# run NAME CONNS ROUND
run() {
    local name=$1 c=$2 round=$3 pid=${PID[$1]} out
    local u0 s0 f0 j0 u1 s1 f1 j1
    wait_idle
    read -r u0 s0 f0 j0 < <(proc_stat "$pid")
    out=$(wrk -t1 -c"$c" -d"${DURATION}s" --latency "${URL[$name]}")
    read -r u1 s1 f1 j1 < <(proc_stat "$pid")
    if grep -q -e 'Non-2xx' -e 'Socket errors' <<<"$out"; then
        say "warning: errors in $name c=$c round $round:"
        grep -e 'Non-2xx' -e 'Socket errors' <<<"$out" >&2
    fi
    local reqs rps p50 p99
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    awk -v n="$name" -v c="$c" -v r="$round" -v rps="$rps" -v p50="$p50" -v p99="$p99" \
        -v reqs="$reqs" -v ticks=$((u1 + s1 - u0 - s0)) -v hz="$CLK_TCK" \
        -v flt=$((f1 + j1 - f0 - j0)) 'BEGIN {
            printf "%s %s %s %.0f %s %s %.2f %.3f\n", n, c, r, rps, p50, p99,
                ticks * 1e6 / hz / reqs, flt / reqs
        }' >>"$RESULTS"
    say "$(tail -n1 "$RESULTS" | awk '{printf "round %s  %-9s c=%-3s %8s req/s  p50 %6s us  p99 %6s us  %7s CPU us/req  %s faults/req", $3, $1, $2, $4, $5, $6, $7, $8}')"
    # The info-logging server writes one line per request: keep the file small.
    [ "$name" != wisp-info ] || : >"$TMP/wisp-info.log"
}

say "warming up (${WARMUP}s per server)"
for s in $SERVERS; do
    wrk -t1 -c32 -d"${WARMUP}s" "${URL[$s]}" >/dev/null
done
[ "$INFO_LOG" != 1 ] || : >"$TMP/wisp-info.log"

say "measuring: $ROUNDS rounds x connections ($CONNS) x servers ($SERVERS), ${DURATION}s each"
order=$SERVERS
for round in $(seq "$ROUNDS"); do
    for c in $CONNS; do
        for s in $order; do run "$s" "$c" "$round"; done
    done
    # Reverse the order every round so no server always runs first.
    order=$(tr ' ' '\n' <<<"$order" | tac | tr '\n' ' ')
done
WISP_LOADED_RSS=$(rss_kib "${PID[wisp]}")

# ----------------------------------------------------------------- report
# Medians across rounds: NAME CONNS rps p50 p99 cpu faults
MEDIANS=$TMP/medians
awk '
    { k = $1 " " $2; n[k]++; for (i = 4; i <= 8; i++) v[k, i, n[k]] = $i; keys[k] = 1 }
    function median(k, i,   m, a, j, t, x, y) {
        m = n[k]
        for (j = 1; j <= m; j++) a[j] = v[k, i, j] + 0
        for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
        return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
    }
    END { for (k in keys) print k, median(k, 4), median(k, 5), median(k, 6), median(k, 7), median(k, 8) }
' "$RESULTS" >"$MEDIANS"

get() { awk -v n="$1" -v c="$2" -v i="$3" '$1 == n && $2 == c {print $i}' "$MEDIANS"; }

echo
echo "## Load: hello, wrk -t1 on 127.0.0.1, ${DURATION}s x $ROUNDS rounds, medians"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)); Linux $(uname -r); wisp $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo
echo "| server | connections | req/s | p50 | p99 | CPU µs/req | page faults/req |"
echo "|---|---:|---:|---:|---:|---:|---:|"
label() {
    case $1 in
        wisp) echo "wisp serve (RUST_LOG=warn)" ;;
        wisp-info) echo "wisp serve (default logging, to a file)" ;;
        wisp-before) echo "wisp serve, the BEFORE binary (RUST_LOG=warn)" ;;
        todo) echo "wisp serve, todo-api GET /todos/1 (one kv read)" ;;
        cgi) echo "wisp serve, cgi-rust (wasip1 CGI) GET /cgi/hello" ;;
        native) echo "native-hello (axum)" ;;
        minimal) echo "minimal-host (wasmtime floor, same hello.wasm)" ;;
        minimal-p3) echo "minimal-host --p3 (wasmtime floor), bench-p3, a fresh instance per request" ;;
        minimal-p3-reuse) echo "minimal-host --p3 (wasmtime floor), bench-p3, --reuse 1000 --reuse-concurrency 16" ;;
        wasmtime-serve) echo "wasmtime serve -Scli (reference, same hello.wasm)" ;;
        p3) echo "wisp serve, bench-p3 (WASI 0.3), a fresh instance per request" ;;
        p3-reuse) echo "wisp serve, bench-p3 (WASI 0.3), --reuse 1000 --reuse-concurrency 16" ;;
        p3-before) echo "the BEFORE binary, bench-p3 (WASI 0.3), a fresh instance per request" ;;
        p3-reuse-before) echo "the BEFORE binary, bench-p3 (WASI 0.3), --reuse 1000 --reuse-concurrency 16" ;;
        wasmtime-p3) echo "wasmtime serve -Scli, defaults (reuses 0.3 instances), same bench-p3" ;;
    esac
}
for c in $CONNS; do
    for s in $SERVERS; do
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$s")" "$c" \
            "$(printf '%.0f' "$(get "$s" "$c" 3)")" "$(fmt_us "$(get "$s" "$c" 4)")" \
            "$(fmt_us "$(get "$s" "$c" 5)")" "$(printf '%.1f' "$(get "$s" "$c" 6)")" \
            "$(printf '%.2f' "$(get "$s" "$c" 7)")"
    done
done
echo
echo "| ratio | connections | req/s (wisp / native) | CPU per request (wisp / native) |"
echo "|---|---:|---:|---:|"
for c in $CONNS; do
    for s in $SERVERS; do
        [ "$s" != native ] || continue
        awk -v l="$(label "$s") / native" -v c="$c" -v wr="$(get "$s" "$c" 3)" -v nr="$(get native "$c" 3)" \
            -v wc="$(get "$s" "$c" 6)" -v nc="$(get native "$c" 6)" \
            'BEGIN { printf "| %s | %s | %.2f (%.0f%%) | %.1fx |\n", l, c, wr / nr, 100 * wr / nr, wc / nc }'
    done
done
# compare NAME OTHER LABEL: NAME's req/s and CPU per request against
# OTHER's, per connection count.
compare() {
    echo
    echo "| ratio | connections | req/s | CPU per request |"
    echo "|---|---:|---:|---:|"
    for c in $CONNS; do
        awk -v l="$3" -v c="$c" -v wr="$(get "$1" "$c" 3)" -v mr="$(get "$2" "$c" 3)" \
            -v wc="$(get "$1" "$c" 6)" -v mc="$(get "$2" "$c" 6)" \
            'BEGIN { printf "| %s | %s | %.2fx | %.2fx (%+.1f µs) |\n", l, c, wr / mr, wc / mc, wc - mc }'
    done
}
# against NAME LABEL: wisp serve (hello) against another host.
against() { compare wisp "$1" "wisp serve / $2"; }
[ "$MINIMAL" != 1 ] || against minimal minimal-host
if [ "$MINIMAL" = 1 ] && [ "$P3" = 1 ]; then
    # The WASI 0.3 servers against their minimal-host floors.
    compare p3 minimal-p3 "wisp bench-p3, fresh / its floor"
    compare p3-reuse minimal-p3-reuse "wisp bench-p3, reuse / its floor"
fi
[ -z "${WASMTIME:-}" ] || against wasmtime-serve "wasmtime serve"
[ -z "${BEFORE:-}" ] || against wisp-before "the BEFORE binary"
[ -z "${BEFORE:-}" ] || awk -v b="$BEFORE_IDLE_RSS" 'BEGIN {
    printf "\nIdle RSS of the BEFORE binary, same guests, after a restart: %.1f MiB\n", b / 1024
}'
echo
awk -v w="$WISP_IDLE_RSS" -v f="$WISP_START_RSS" -v l="$WISP_LOADED_RSS" -v n="$NATIVE_IDLE_RSS" 'BEGIN {
    printf "Idle RSS of wisp serve with hello, todo-api and cgi deployed, after a restart (before load): %.1f MiB; right after the first start, which compiled them: %.1f MiB; after the load: %.1f MiB; native-hello idle: %.1f MiB\n", w / 1024, f / 1024, l / 1024, n / 1024
}'
echo
echo "Targets (32 connections, wisp serve with RUST_LOG=warn):"
if [[ " $CONNS " == *" 32 "* ]]; then
    awk -v wr="$(get wisp 32 3)" -v nr="$(get native 32 3)" -v wc="$(get wisp 32 6)" -v rss="$WISP_IDLE_RSS" 'BEGIN {
        ok = (wr / nr >= 0.40); printf "- req/s >= 40%% of native: %.0f%% -> %s\n", 100 * wr / nr, ok ? "met" : "MISSED"
        ok = (wc <= 40); printf "- CPU <= 40 µs/request: %.1f µs -> %s\n", wc, ok ? "met" : "MISSED"
        ok = (rss / 1024 <= 22.5); printf "- idle RSS <= 22.5 MiB: %.1f MiB -> %s\n", rss / 1024, ok ? "met" : "MISSED"
    }'
    if [ "$CGI" = 1 ]; then
        awk -v cr="$(get cgi 32 3)" -v wr="$(get wisp 32 3)" 'BEGIN {
            ok = (cr / wr >= 0.70); printf "- cgi-rust (wasip1 CGI) >= 70%% of hello req/s: %.0f%% -> %s\n", 100 * cr / wr, ok ? "met" : "MISSED"
        }'
    fi
    if [ "$P3" = 1 ]; then
        awk -v pc="$(get p3 32 6)" -v wc="$(get wisp 32 6)" -v rr="$(get p3-reuse 32 3)" \
            -v rc="$(get p3-reuse 32 6)" -v r99="$(get p3-reuse 32 5)" -v nr="$(get native 32 3)" \
            -v nc="$(get native 32 6)" -v n99="$(get native 32 5)" -v xr="$(get wasmtime-p3 32 3)" 'BEGIN {
            ok = (pc <= wc); printf "- WASI 0.3 fresh instance CPU <= WASI 0.2 (hello): %.1f vs %.1f µs -> %s\n", pc, wc, ok ? "met" : "MISSED"
            ok = (rr / nr >= 0.80); printf "- WASI 0.3 with reuse >= 80%% of native req/s: %.0f%% -> %s\n", 100 * rr / nr, ok ? "met" : "MISSED"
            ok = (rc <= 1.5 * nc); printf "- WASI 0.3 with reuse CPU <= 1.5x native: %.2fx -> %s\n", rc / nc, ok ? "met" : "MISSED"
            ok = (r99 <= 1.5 * n99); printf "- WASI 0.3 with reuse p99 <= 1.5x native: %.2fx -> %s\n", r99 / n99, ok ? "met" : "MISSED"
            if (xr > 0) { ok = (rr > xr); printf "- WASI 0.3 with reuse ahead of wasmtime serve: %.2fx -> %s\n", rr / xr, ok ? "met" : "MISSED" }
        }'
        if [ "$MINIMAL" = 1 ]; then
            # Whether any host on this wasmtime could: the floors against
            # the same targets.
            awk -v fc="$(get minimal-p3 32 6)" -v wc="$(get wisp 32 6)" -v rr="$(get minimal-p3-reuse 32 3)" \
                -v rc="$(get minimal-p3-reuse 32 6)" -v nr="$(get native 32 3)" -v nc="$(get native 32 6)" 'BEGIN {
                printf "  - the floors (minimal-host --p3): fresh %.1f µs vs WASI 0.2 in wisp %.1f µs (%s); reuse %.0f%% of native req/s at %.2fx its CPU (%s)\n",
                    fc, wc, fc <= wc ? "within" : "above", 100 * rr / nr, rc / nc, (rr / nr >= 0.80 && rc <= 1.5 * nc) ? "within" : "out of reach"
            }'
        fi
    fi
    if [ "$TODO" = 1 ]; then
        awk -v tr="$(get todo 32 3)" -v wr="$(get wisp 32 3)" 'BEGIN {
            ok = (tr / wr >= 0.80); printf "- todo-api (one kv read) >= 80%% of hello req/s: %.0f%% -> %s\n", 100 * tr / wr, ok ? "met" : "MISSED"
        }'
    fi
else
    echo "- (run with 32 in CONNS to check them)"
fi
echo
echo "<details><summary>every run</summary>"
echo
echo '```'
echo "server connections round req/s p50_us p99_us cpu_us/req faults/req"
sort -k1,1 -k2,2n -k3,3n "$RESULTS"
echo '```'
echo "</details>"
