#!/usr/bin/env bash
# The small-device run (issue 18, item 6): a host with ten functions
# deployed serves load at 32 connections; prints its peak RSS (VmHWM) and,
# where this machine lets a script make a memory cgroup, runs the same load
# again with the host inside a 128 MiB cgroup limit and prints the cgroup's
# peak usage and whether every request was answered.
#
#   BIN=target/dist/wisp-0.1.0-x86_64-unknown-linux-gnu.bin bash benches/small.sh
#
#   BIN        the wisp binary (default: target/release/wisp, built if missing)
#   SMALL      serve flags (default "--small"; "" for the defaults)
#   DURATION   seconds of load per run (default 20)
#   CONNS      connections (default 32)
#   LIMIT_MIB  the cgroup's memory limit (default 128)
#
# Needs wrk (installed from Debian when missing), curl, the wasm targets.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

say() { echo "==> $*" >&2; }
die() { echo "benches/small.sh: $*" >&2; exit 1; }
TMP=$(mktemp -d)
source benches/lib.sh

DURATION=${DURATION:-20}
CONNS=${CONNS:-32}
LIMIT_MIB=${LIMIT_MIB:-128}
SMALL=${SMALL---small}
BIN=${BIN:-target/release/wisp}
if [ ! -x "$BIN" ]; then
    say "building target/release/wisp"
    cargo build --release -p wisp-cli --bin wisp
fi
if ! command -v wrk >/dev/null 2>&1; then
    apt_install "benches/small.sh" wrk
fi
ensure_wasm_targets
build_guests hello hello-p3 echo todo-api counter config misbehave proxy >&2
build_wasip1_guests >&2
W2="$GUEST_TARGET_DIR/wasm32-wasip2/release"
W1="$GUEST_TARGET_DIR/wasm32-wasip1/release"

HOST_PID=""
CGROUP=""
cleanup() {
    [ -z "$HOST_PID" ] || kill "$HOST_PID" 2>/dev/null || true
    [ -z "$HOST_PID" ] || wait "$HOST_PID" 2>/dev/null || true
    [ -z "$CGROUP" ] || rmdir "$CGROUP" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port
DATA_PORT=$PORT
free_port
ADMIN_PORT=$PORT
export WISP_ADMIN_URL="http://127.0.0.1:$ADMIN_PORT" WISP_ADMIN_TOKEN=small-device-bench-token
URL="http://127.0.0.1:$DATA_PORT"

# start_host [CGROUP_PROCS_FILE]: a host on $TMP/data, inside the cgroup
# when one is given (the shell joins it, then becomes the host).
start_host() {
    local procs="${1:-}"
    # shellcheck disable=SC2086
    env -u RUST_BACKTRACE sh -c '[ -z "$1" ] || echo $$ > "$1"; shift; exec "$@"' sh "$procs" \
        "$BIN" serve $SMALL --data-dir "$TMP/data" --listen "127.0.0.1:$DATA_PORT" \
        --admin-listen "127.0.0.1:$ADMIN_PORT" >"$TMP/host.log" 2>&1 &
    HOST_PID=$!
    wait_ready host "$HOST_PID" "$WISP_ADMIN_URL/v1/health"
}

stop_host() {
    kill -TERM "$HOST_PID"
    wait "$HOST_PID" || true
    HOST_PID=""
}

# The ten functions and a path of each that answers 200.
PATHS=(/hello/x /hello-p3/x /echo/x /todos /count/a /config /m/ok /proxy /cgi/x /cgi-c/x)
deploy_all() {
    "$BIN" deploy hello "$W2/hello.wasm" --route '/hello/*' >/dev/null
    "$BIN" deploy hello-p3 "$W2/hello_p3.wasm" --route '/hello-p3/*' >/dev/null
    "$BIN" deploy echo "$W2/echo.wasm" --route '/echo/*' >/dev/null
    "$BIN" deploy todo-api "$W2/todo_api.wasm" --route /todos --route '/todos/*' >/dev/null
    "$BIN" deploy counter "$W2/counter.wasm" --route '/count/*' >/dev/null
    "$BIN" deploy config "$W2/config.wasm" --route /config >/dev/null
    "$BIN" deploy m "$W2/misbehave.wasm" --route '/m/*' >/dev/null
    # The proxy calls this host's hello: two invocations per request.
    "$BIN" deploy proxy "$W2/proxy.wasm" --route /proxy --allow-outbound "127.0.0.1:$DATA_PORT" >/dev/null
    "$BIN" config set proxy "upstream=$URL/hello/via-proxy" >/dev/null
    "$BIN" deploy cgi "$W1/cgi-rust.wasm" --route '/cgi/*' >/dev/null
    "$BIN" deploy cgi-c "$GUEST_TARGET_DIR/cgi-c/cgi-c.wasm" --route '/cgi-c/*' >/dev/null
}

check_paths() {
    local p code
    for p in "${PATHS[@]}"; do
        code=$(curl -s -o /dev/null -w '%{http_code}' "$URL$p")
        [ "$code" = 200 ] || die "$p answered $code: $(curl -s "$URL$p" | head -c 300)"
    done
}

# load: wrk over all ten paths in turn; prints "requests non2xx errors".
cat >"$TMP/paths.lua" <<EOF
local paths = {$(printf '"%s",' "${PATHS[@]}")}
local i = 0
request = function()
    i = i + 1
    return wrk.format("GET", paths[(i % #paths) + 1])
end
EOF
load() {
    wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$TMP/paths.lua" "$URL" >"$TMP/wrk.txt"
    local req non2xx errs
    req=$(awk '/requests in/ {print $1}' "$TMP/wrk.txt")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$TMP/wrk.txt")
    errs=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' "$TMP/wrk.txt")
    echo "${req:-0} ${non2xx:-0} ${errs:-0}"
}

mib_of_kib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

say "host: $BIN serve $SMALL"
start_host
deploy_all
check_paths
read -r req non2xx errs < <(load)
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$HOST_PID/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$HOST_PID/status")
check_paths
echo "ten functions, $CONNS connections, ${DURATION}s: $req requests ($((req / DURATION)) req/s), $non2xx non-2xx, $errs socket errors"
echo "peak RSS (VmHWM) $(mib_of_kib "$hwm") MiB; RSS after the load $(mib_of_kib "$rss") MiB"
stop_host

# The same load with the host inside a memory cgroup of LIMIT_MIB.
own=$(awk -F: '$2 == "memory" {print $3}' /proc/self/cgroup)
if [ -n "$own" ] && [ -d "/sys/fs/cgroup/memory$own" ]; then
    CGROUP="/sys/fs/cgroup/memory$own/wisp-small-$$"
    limit_file=memory.limit_in_bytes
    peak_file=memory.max_usage_in_bytes
    events_file=memory.failcnt
elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    own=$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)
    CGROUP="/sys/fs/cgroup$own/wisp-small-$$"
    limit_file=memory.max
    peak_file=memory.peak
    events_file=memory.events
fi
if [ -z "$CGROUP" ] || ! mkdir "$CGROUP" 2>/dev/null; then
    CGROUP=""
    echo "(no memory cgroup could be made here: the run under a ${LIMIT_MIB} MiB limit was skipped)"
    exit 0
fi
echo $((LIMIT_MIB << 20)) >"$CGROUP/$limit_file"
start_host "$CGROUP/cgroup.procs"
check_paths
read -r req non2xx errs < <(load)
kill -0 "$HOST_PID" 2>/dev/null || die "the host died under the ${LIMIT_MIB} MiB cgroup limit: $(tail -5 "$TMP/host.log")"
check_paths
peak=$(cat "$CGROUP/$peak_file")
echo "in a ${LIMIT_MIB} MiB memory cgroup: $req requests ($((req / DURATION)) req/s), $non2xx non-2xx, $errs socket errors; the cgroup's peak usage $(awk -v b="$peak" 'BEGIN { printf "%.1f", b / 1048576 }') MiB (page cache included); $events_file: $(tr '\n' ' ' <"$CGROUP/$events_file")"
stop_host
