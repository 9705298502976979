#!/usr/bin/env bash
# Writes host/cli/link/symbol-order-edge.txt anew: the symbol ordering file
# of the runtime-only edge build (scripts/dist.sh links it with this list;
# see host/cli/build.rs). The release build's list (scripts/symbol-order.sh)
# does not fit that build: optimised for size and linked whole (fat LTO),
# most of the release build's functions are inlined or named otherwise.
#
# What the list holds: the functions a runtime-only host runs while it
# serves and idles, hottest first, so that they sit together at the start of
# `.text`. Start-up's code is not in it: `wisp serve` unmaps the pages of
# code after start-up (host/cli/src/memory.rs), and only what serving
# touches comes back. Without the list that was nearly all of the 8.5 MiB of
# code, because the functions serving runs are spread over the whole binary
# and the kernel maps 64 KiB of cached file around each fault.
#
# How: the edge build for x86_64 glibc (the same build scripts/dist.sh makes,
# with its symbols, which dist.sh strips from the copy it packs) is started on a data directory holding hello, todo-api and
# a CGI module (compiled and signed by this checkout's debug build), and
# sampled by `perf record` (10 kHz) while wrk sends requests to each for a
# few seconds and then while it idles; then FAULT_ROUNDS (default 2) rounds
# add the functions behind page faults on code that remain (see below). Run it after a change that moves much
# code, or when scripts/dist.sh shows the idle RSS creeping up; a name the
# build no longer has is skipped by the linker, which costs memory, never
# correctness.
#
# Needs: perf (Debian `linux-perf`, installed when missing), wrk, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

ORDER=host/cli/link/symbol-order-edge.txt
TARGET=x86_64-unknown-linux-gnu
SECONDS_EACH=${SECONDS_EACH:-3}
FAULT_ROUNDS=${FAULT_ROUNDS:-2}
unset RUST_BACKTRACE

if ! command -v perf >/dev/null 2>&1; then
    apt_install "scripts/symbol-order-edge.sh" linux-perf
fi
if ! command -v wrk >/dev/null 2>&1; then
    apt_install "scripts/symbol-order-edge.sh" wrk
fi

TARGET_DIR=$(target_dir)
echo "==> the runtime-only edge build (as scripts/dist.sh builds it; [profile.edge] keeps symbols)"
RUSTFLAGS="-C force-unwind-tables=no" WISP_SYMBOL_ORDER=link/symbol-order-edge.txt \
    cargo build --profile edge -p wisp-cli --bin wisp --target "$TARGET" \
    --no-default-features --features runtime
BIN="$TARGET_DIR/$TARGET/edge/wisp"
echo "==> the full build that compiles and signs the functions (debug)"
cargo build -p wisp-cli --bin wisp
FULL="$TARGET_DIR/debug/wisp"

ensure_wasm_targets
build_guests hello todo-api
build_wasip1_guests

TMP=$(mktemp -d)
host=""
trap '[ -z "$host" ] || kill "$host" 2>/dev/null || true; rm -rf "$TMP"' EXIT
say() { echo "symbol-order-edge.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }
# free_port, wait_ready
source benches/lib.sh

"$FULL" keygen "$TMP/build" >/dev/null
for g in "wasm32-wasip2/release/hello" "wasm32-wasip2/release/todo_api" "wasm32-wasip1/release/cgi-rust"; do
    "$FULL" compile "$GUEST_TARGET_DIR/$g.wasm" --sign "$TMP/build" -o "$TMP/$(basename "$g").cwasm" >/dev/null
done
free_port
data_port=$PORT
free_port
admin_port=$PORT
export WISP_ADMIN_URL="http://127.0.0.1:$admin_port" WISP_ADMIN_TOKEN=symbol-order-edge-token
start_host() {
    RUST_LOG=warn "$BIN" serve --data-dir "$TMP/data" --listen "127.0.0.1:$data_port" \
        --admin-listen "127.0.0.1:$admin_port" --trusted-key "$TMP/build.pub" \
        >>"$TMP/host.log" 2>&1 &
    host=$!
    wait_ready host "$host" "$WISP_ADMIN_URL/v1/health"
}
start_host
"$BIN" deploy hello "$TMP/hello.cwasm" --route /hello >/dev/null
"$BIN" deploy todo-api "$TMP/todo_api.cwasm" --route /todos --route '/todos/*' >/dev/null
"$BIN" deploy cgi "$TMP/cgi-rust.cwasm" --route '/cgi/*' >/dev/null
kill -TERM "$host"
wait "$host" || true
start_host

echo "==> sampling the host while it serves and idles"
perf record -q -F 10000 -e cpu-clock -p "$host" -o "$TMP/perf.data" 2>/dev/null &
perf_pid=$!
sleep 1
for path in /hello /todos /todos/1 /cgi/x; do
    wrk -t1 -c4 -d"${SECONDS_EACH}s" "http://127.0.0.1:$data_port$path" >/dev/null
done
curl -sf "$WISP_ADMIN_URL/v1/health" >/dev/null
sleep "$SECONDS_EACH"
kill -INT "$perf_pid"
wait "$perf_pid" 2>/dev/null || true

# The wisp binary's functions by samples, hottest first.
perf script --no-demangle -i "$TMP/perf.data" -F ip,sym,dso 2>/dev/null | python3 -c '
import collections, re, sys
counts = collections.Counter()
for line in sys.stdin:
    m = re.match(r"\s*[0-9a-f]+ (\S+) \((\S+)\)", line)
    if not m:
        continue
    sym, dso = m.groups()
    if not dso.endswith("/wisp") or sym.startswith("["):
        continue
    counts[re.sub(r"\+0x[0-9a-f]+$", "", sym)] += 1
with open(sys.argv[1], "w") as out:
    for sym, _ in counts.most_common():
        out.write(sym + "\n")
print(f"{len(counts)} functions, {sum(counts.values())} samples", file=sys.stderr)
' "$ORDER"
echo "==> $ORDER: $(wc -l <"$ORDER") functions sampled"

# Then what sampling misses: code run once per start (a function's first
# request, lazy set-up) or rarely (idle timers). Linked with the list, the
# host is restarted, each function called once and left idle, as
# scripts/dist.sh measures it, with `perf record` noting each page fault on
# code after start-up; the function behind a fault that the list lacks is
# added. A fault maps the 64 KiB around it, hiding the functions near it, so
# this takes rounds (each a link of the whole program, a few minutes).
link() {
    RUST_BACKTRACE= RUSTFLAGS="-C force-unwind-tables=no" WISP_SYMBOL_ORDER=link/symbol-order-edge.txt \
        cargo build -q --profile edge -p wisp-cli --bin wisp --target "$TARGET" \
        --no-default-features --features runtime
}
for round in $(seq "$FAULT_ROUNDS"); do
    link
    kill -TERM "$host"
    wait "$host" || true
    start_host
    perf record -q -e page-faults -c 1 -d -p "$host" -o "$TMP/faults.data" 2>/dev/null &
    perf_pid=$!
    sleep 1
    for path in /hello /todos /cgi/x; do
        curl -sf -o /dev/null "http://127.0.0.1:$data_port$path"
    done
    sleep 5
    kill -INT "$perf_pid"
    wait "$perf_pid" 2>/dev/null || true
    new=$(perf script --no-demangle -i "$TMP/faults.data" -F addr,ip,sym,dso 2>/dev/null | python3 -c '
import re, sys
order = sys.argv[1]
have = set(l.strip() for l in open(order))
new = []
# "addr sym (dso) ip ...": the faulting address, its symbol, then the
# address of the instruction.
pat = re.compile(r"\s*([0-9a-f]+) (.*?) \((\S+)\)\s+([0-9a-f]+) ")
for line in sys.stdin:
    m = pat.match(line)
    if not m:
        continue
    addr, sym, dso, ip = m.groups()
    # A fault on fetching an instruction: the address is the instruction.
    if addr != ip or not dso.endswith("/wisp") or sym.startswith("["):
        continue
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
    if sym not in have:
        have.add(sym)
        new.append(sym)
open(order, "a").write("".join(s + "\n" for s in new))
print(len(new))
' "$ORDER")
    echo "==> round $round: $new functions added ($(wc -l <"$ORDER") in the list)"
done
echo "==> $ORDER written; scripts/dist.sh links the runtime-only build with it"
