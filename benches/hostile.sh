#!/usr/bin/env bash
# The attacks of the hardening issue at their full size, against the release
# `wisp serve` with its default settings (unless named), and what they cost
# the host. Not a test (the e2e tests run smaller versions of each): a
# measurement for RESULTS.md.
#
#   bash benches/hostile.sh
#
# 1. Slow heads: 1,500 data-plane and 300 admin connections that each send
#    half a request head and then nothing. Reported: how many the host still
#    holds open after the header timeout (10 s), and whether `GET /hello`
#    and `GET /v1/health` answered meanwhile.
# 2. Slow bodies: with --max-in-flight 20, 40 clients announce
#    `Content-Length: 1000000` to one function and send 10 bytes. Reported:
#    how many of 5 `GET /hello` (another function) answered 200 while they
#    stalled, and what the stalled ones got.
# 3. Log flood (when tests/guests/misbehave has `/flood`): one invocation
#    writes 3,000,000 empty lines to stdout. Reported: the host's peak RSS
#    growth (VmHWM) and the answer.
#
# Needs: cargo, python3, curl. Binds and connects to 127.0.0.1 only.
set -euo pipefail
unset RUST_BACKTRACE

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WISP=${WISP:-$TARGET_DIR/release/wisp}
GUEST_TARGET_DIR=${GUEST_TARGET_DIR:-target/wasm}
say() { echo "hostile.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

if [ -z "${NO_BUILD:-}" ]; then
    say "building wisp (release) and the guests"
    cargo build --release -p wisp-cli --bin wisp
fi
cargo build --release --target wasm32-wasip2 --target-dir "$GUEST_TARGET_DIR" -p hello -p echo -p misbehave
W=$GUEST_TARGET_DIR/wasm32-wasip2/release
# The clients below hold ~2,000 sockets.
ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wisp-hostile.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME ARGS...: a host with hello, echo and misbehave deployed.
start() {
    local name=$1; shift
    DATA=$(port); ADMIN=$(port)
    "$WISP" serve --data-dir "$TMP/$name" --listen "127.0.0.1:$DATA" --admin-listen "127.0.0.1:$ADMIN" \
        --deploy "hello=$W/hello.wasm:/hello" --deploy "echo=$W/echo.wasm:/echo/*" \
        --deploy "m=$W/misbehave.wasm:/m/*" "$@" >"$TMP/$name.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 600); do
        curl -sf -o /dev/null "http://127.0.0.1:$DATA/hello" && return
        kill -0 "$PID" 2>/dev/null || { cat "$TMP/$name.log" >&2; die "wisp exited"; }
        sleep 0.1
    done
    die "wisp did not start"
}
sockets() { find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null | wc -l; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

echo "## Attacks of the hardening issue, full size ($(date -u '+%Y-%m-%d %H:%M UTC'), wisp $(git rev-parse --short HEAD))"
echo

# ------------------------------------------------------------ slow heads
start heads
base=$(sockets "$PID")
python3 - "$DATA" "$ADMIN" "$PID" "$base" <<'EOF'
import socket, sys, time, urllib.request
data, admin, pid, base = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def sockets():
    import os
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n
conns = []
for i in range(1800):
    s = socket.create_connection(("127.0.0.1", data if i < 1500 else admin))
    s.sendall(b"GET /hello HTTP/1.1\r\nHost: wisp\r\nX-Slow: ")
    conns.append(s)
t0 = time.time()
time.sleep(1)
held = sockets() - base
ok = 0
for _ in range(5):
    for url in (f"http://127.0.0.1:{data}/hello", f"http://127.0.0.1:{admin}/v1/health"):
        try:
            ok += urllib.request.urlopen(url, timeout=10).status == 200
        except Exception as e:
            print("request failed:", e)
time.sleep(max(0, 12.5 - (time.time() - t0)))
open_client = 0
for s in conns:
    s.settimeout(0.01)
    try:
        if s.recv(1) != b"":
            open_client += 1
    except (socket.timeout, BlockingIOError):
        open_client += 1
    except OSError:
        pass
print(f"- slow heads: 1,500 data-plane + 300 admin connections sent half a head; the host held {held} of them "
      f"1 s in; {ok} of 10 requests (5 `GET /hello`, 5 `GET /v1/health`) answered 200 meanwhile; "
      f"12.5 s in (header timeout 10 s): {open_client} still open as the clients see it, "
      f"{max(0, sockets() - base)} sockets held by the host beyond its idle count")
EOF
kill "$PID"; wait "$PID" 2>/dev/null || true

# ----------------------------------------------------------- slow bodies
start bodies --max-in-flight 20
python3 - "$DATA" <<'EOF'
import socket, sys, time, urllib.request, collections
data = int(sys.argv[1])
stalled = []
for _ in range(40):
    s = socket.create_connection(("127.0.0.1", data))
    s.sendall(b"POST /echo/x HTTP/1.1\r\nHost: wisp\r\nContent-Length: 1000000\r\n\r\n0123456789")
    stalled.append(s)
time.sleep(1)
ok = 0
t = time.time()
for _ in range(5):
    try:
        ok += urllib.request.urlopen(f"http://127.0.0.1:{data}/hello", timeout=10).status == 200
    except Exception as e:
        print("GET /hello failed:", e)
took = time.time() - t
got = collections.Counter()
for s in stalled:
    s.settimeout(30)
    try:
        head = s.recv(64).decode(errors="replace")
        got[head.split(" ")[1] if " " in head else "closed"] += 1
    except OSError:
        got["error"] += 1
print(f"- slow bodies (--max-in-flight 20): 40 uploads announced 1,000,000 bytes and sent 10; "
      f"{ok} of 5 `GET /hello` answered 200 meanwhile ({took * 1000 / 5:.0f} ms each); the uploads got "
      + ", ".join(f"{n} x {k}" for k, n in sorted(got.items())))
EOF
kill "$PID"; wait "$PID" 2>/dev/null || true

# ------------------------------------------------------------- log flood
start flood
if curl -s "http://127.0.0.1:$DATA/m/flood?lines=1" | grep -q flood; then
    before=$(hwm_kib "$PID")
    status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DATA/m/flood?lines=3000000")
    sleep 2
    after=$(hwm_kib "$PID")
    ok=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DATA/hello")
    echo "- log flood: one invocation wrote 3,000,000 empty lines to stdout (answered $status); the host's peak RSS grew $(( (after - before) / 1024 )) MiB (VmHWM $((before / 1024)) -> $((after / 1024)) MiB); the next request answered $ok"
else
    echo "- log flood: skipped (misbehave has no /flood)"
fi
kill "$PID"; wait "$PID" 2>/dev/null || true
