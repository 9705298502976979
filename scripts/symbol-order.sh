#!/usr/bin/env bash
# Writes host/cli/link/symbol-order.txt anew: the functions that `wisp serve`
# runs to start on a data directory, load its functions from compiled code and
# answer a request to each kind of function, in the order they were found.
# The release link places them together at the start of `.text` (see
# host/cli/build.rs); run this after a toolchain or dependency update, or when
# benches/load.sh shows the idle RSS creeping up.
#
# How: the binary is linked with the current list, started on a data
# directory that already holds compiled code, and sent one request to hello,
# todo-api and the CGI module; `perf record` notes every page fault. A fault
# on code outside the ordered part names a function the list lacks; it is
# added and the binary linked again, until a round adds fewer than MIN_NEW
# (default 5) or ROUNDS (default 25) rounds have run. Names the binary no
# longer has are dropped first. Each round is a relink (~20 s).
#
# Needs: perf (Debian `linux-perf`, installed when missing), curl, and
# permission to record page faults (root, or kernel.perf_event_paranoid <= 1).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

MIN_NEW=${MIN_NEW:-5}
ROUNDS=${ROUNDS:-25}
ORDER=host/cli/link/symbol-order.txt
BIN="${CARGO_TARGET_DIR:-target}/release/wisp"
unset RUST_BACKTRACE

if ! command -v perf >/dev/null 2>&1; then
    apt_install "scripts/symbol-order.sh" linux-perf
fi

ensure_wasm_targets
build_guests hello todo-api
cargo build --release --target wasm32-wasip1 --target-dir "$GUEST_TARGET_DIR" -p cgi-rust
hello="$GUEST_TARGET_DIR/wasm32-wasip2/release/hello.wasm"
todo="$GUEST_TARGET_DIR/wasm32-wasip2/release/todo_api.wasm"
cgi="$GUEST_TARGET_DIR/wasm32-wasip1/release/cgi-rust.wasm"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
say() { echo "symbol-order.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }
# free_port, wait_ready
source benches/lib.sh

# serve_once [PERF_OUT]: start on $TMP/data, one request to each function,
# stop. With PERF_OUT, under `perf record` (page faults, with addresses).
serve_once() {
    local port admin pid pre=()
    free_port; port=$PORT
    free_port; admin=$PORT
    if [ -n "${1:-}" ]; then pre=(perf record -q -e page-faults -c 1 -d -o "$1" --); fi
    RUST_LOG=warn "${pre[@]}" "$BIN" serve --data-dir "$TMP/data" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        --deploy "hello=$hello:/hello" --deploy "todo-api=$todo:/todos/*" \
        --deploy "cgi=$cgi:/cgi/*" >>"$TMP/wisp.log" 2>&1 &
    pid=$!
    wait_ready wisp "$pid" "http://127.0.0.1:$port/hello"
    curl -s -o /dev/null "http://127.0.0.1:$port/todos"
    curl -s -o /dev/null "http://127.0.0.1:$port/cgi/"
    curl -s -o /dev/null "http://127.0.0.1:$admin/v1/health"
    sleep 1
    # Under perf, $pid is perf's: stop wisp itself, then perf ends.
    kill -TERM "$(pgrep -P "$pid" -x wisp || echo "$pid")"
    wait "$pid" 2>/dev/null || true
}

# The functions behind faults on the wisp binary's code that the list lacks,
# appended to it; prints how many.
add_faults() {
    perf script --no-demangle -i "$1" -F addr,ip,sym,dso 2>/dev/null | python3 -c '
import re, sys
order = sys.argv[1]
have = set(l.strip() for l in open(order))
new = []
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
    if sym not in have and sym not in ("_start", "_init"):
        have.add(sym)
        new.append(sym)
open(order, "a").write("".join(s + "\n" for s in new))
print(len(new))
' "$ORDER"
}

echo "==> linking wisp (release) with the current list"
cargo build --release -p wisp-cli --bin wisp
# Drop the names this build no longer has.
nm --defined-only "$BIN" | awk '{print $3}' | sort -u >"$TMP/symbols"
awk 'NR == FNR { have[$0] = 1; next } ($0 in have)' "$TMP/symbols" "$ORDER" >"$TMP/order"
echo "==> $(($(wc -l <"$ORDER") - $(wc -l <"$TMP/order"))) names dropped (not in this build)"
cp "$TMP/order" "$ORDER"

# The first start compiles; every later one loads compiled code.
serve_once
for round in $(seq "$ROUNDS"); do
    cargo build --release -p wisp-cli --bin wisp 2>/dev/null
    serve_once "$TMP/faults.data"
    new=$(add_faults "$TMP/faults.data")
    echo "==> round $round: $new functions added ($(wc -l <"$ORDER") in the list)"
    if [ "$new" -lt "$MIN_NEW" ]; then break; fi
done
cargo build --release -p wisp-cli --bin wisp 2>/dev/null
echo "==> $ORDER written; $BIN linked with it"
