#!/usr/bin/env bash
# What operating in the open costs per request, in one run on one machine:
# `hello` over plain HTTP/1.1 (the baseline), HTTPS (HTTP/1.1 over TLS,
# kept alive), HTTP/2 over TLS (ALPN) and h2c; then, on plain HTTP/1.1, the
# same function through an alias with a 50/50 split between two versions,
# and, if this build has rate limits, through a rate limit too high to
# refuse anything. Each is reported as req/s and the server's CPU per
# request, with the ratio to the plain HTTP/1.1 baseline.
#
#   bash benches/open.sh                    # 3 rounds of 10 s per case
#   DURATION=5 ROUNDS=5 CONNS=32 bash benches/open.sh
#
# The client is h2load (Debian's nghttp2-client, installed when missing) for
# every case, HTTP/1.1 ones with --h1, one request at a time per connection
# (-m 1), so protocols are compared with the same client. CPU per request:
# utime+stime of the `wisp serve` process over the run (/proc/PID/stat),
# over the requests done. The certificate is a throwaway ECDSA P-256 one
# from openssl. Everything listens on 127.0.0.1; the servers stop on exit.
set -euo pipefail
unset RUST_BACKTRACE

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
WARMUP=${WARMUP:-3}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WISP=$TARGET_DIR/release/wisp
GUEST_TARGET_DIR=${GUEST_TARGET_DIR:-target/wasm}
WASM=$GUEST_TARGET_DIR/wasm32-wasip2/release/hello.wasm

say() { echo "open.sh: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

say "building wisp (release) and the hello guest"
cargo build --release -p wisp-cli --bin wisp
cargo build --release --target wasm32-wasip2 --target-dir "$GUEST_TARGET_DIR" -p hello
[ -f "$WASM" ] || die "no $WASM after the build"

source "$ROOT/scripts/common.sh"
command -v h2load >/dev/null 2>&1 || apt_install "the benchmark client (h2load)" nghttp2-client
command -v openssl >/dev/null 2>&1 || apt_install "the test certificate" openssl
CLK_TCK=$(getconf CLK_TCK)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wisp-open.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# free_port, wait_ready, idle_pct
source "$ROOT/benches/lib.sh"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null

# start NAME [FLAGS...]: a `wisp serve` with hello at /hello; sets PORT_<NAME>,
# ADMIN_<NAME>, PID_<NAME>.
declare -A DATA ADMIN PID
start() {
    local name=$1 port admin scheme=http
    shift
    free_port; port=$PORT
    free_port; admin=$PORT
    case " $* " in *" --tls-cert "*) scheme=https ;; esac
    RUST_LOG=warn "$WISP" serve --data-dir "$TMP/data-$name" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        --deploy "hello=$WASM:/hello" "$@" >>"$TMP/$name.log" 2>&1 &
    PIDS+=("$!")
    PID[$name]=$!
    DATA[$name]="$scheme://127.0.0.1:$port"
    ADMIN[$name]="http://127.0.0.1:$admin"
    for _ in $(seq 600); do
        kill -0 "${PID[$name]}" 2>/dev/null || { cat "$TMP/$name.log" >&2; die "$name exited"; }
        curl -skf -o /dev/null "${DATA[$name]}/hello" && return
        sleep 0.1
    done
    die "$name did not start"
}

start plain
start tls --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem"

# The alias case: a second version of hello, and an alias splitting 50/50
# between the two at /split; a rate-limited copy at /limited if the build
# has rate limits.
export WISP_ADMIN_URL=${ADMIN[plain]}
export WISP_ADMIN_TOKEN
WISP_ADMIN_TOKEN=$(cat "$TMP/data-plain/admin-token")
"$WISP" deploy split "$WASM" >/dev/null
"$WISP" deploy split "$WASM" >/dev/null
"$WISP" alias set split live 1 --weight 2=50 --route /split >/dev/null
CASES="plain-h1 tls-h1 h2c tls-h2 alias-split"
if "$WISP" deploy --help | grep -q -- "--rate-limit"; then
    "$WISP" deploy limited "$WASM" --route /limited --rate-limit 1000000/s >/dev/null
    CASES="$CASES rate-limit"
fi

# url_of CASE; server_of CASE; flags_of CASE
url_of() {
    case $1 in
        plain-h1 | h2c) echo "${DATA[plain]}/hello" ;;
        tls-h1 | tls-h2) echo "${DATA[tls]}/hello" ;;
        alias-split) echo "${DATA[plain]}/split" ;;
        rate-limit) echo "${DATA[plain]}/limited" ;;
    esac
}
server_of() { case $1 in tls-*) echo tls ;; *) echo plain ;; esac; }
flags_of() { case $1 in h2c | tls-h2) echo "" ;; *) echo "--h1" ;; esac; }

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# run CASE SECONDS: one h2load run; prints "REQS_PER_S CPU_US_PER_REQ".
run() {
    local c=$1 secs=$2 pid before after out done rps
    pid=${PID[$(server_of "$c")]}
    before=$(cpu_ticks "$pid")
    # shellcheck disable=SC2046
    out=$(h2load $(flags_of "$c") -c "$CONNS" -t 1 -m 1 -D "$secs" "$(url_of "$c")" 2>&1)
    after=$(cpu_ticks "$pid")
    done=$(echo "$out" | awk '/^requests:/ { print $8 }')
    rps=$(echo "$out" | awk '/^finished in/ { gsub(",", "", $4); print $4 }')
    local failed
    failed=$(echo "$out" | awk '/^requests:/ { print $10 }')
    [ "${failed:-1}" = 0 ] || { echo "$out" >&2; die "$c: requests failed"; }
    awk -v r="$rps" -v t=$((after - before)) -v n="$done" -v hz="$CLK_TCK" \
        'BEGIN { printf "%.0f %.1f\n", r, (n > 0 ? t / hz * 1e6 / n : 0) }'
}

for c in $CASES; do run "$c" "$WARMUP" >/dev/null; done
declare -A RPS CPU
for r in $(seq "$ROUNDS"); do
    for c in $CASES; do
        for _ in $(seq 30); do [ "$(idle_pct)" -ge 90 ] && break; done
        read -r rps cpu < <(run "$c" "$DURATION")
        RPS[$c]="${RPS[$c]:-} $rps"
        CPU[$c]="${CPU[$c]:-} $cpu"
        say "round $r $c: $rps req/s, $cpu µs CPU/req"
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
base_rps=$(echo "${RPS[plain-h1]}" | median)
base_cpu=$(echo "${CPU[plain-h1]}" | median)
printf '\n%-12s %10s %8s %12s %8s\n' case "req/s" ratio "CPU µs/req" ratio
for c in $CASES; do
    rps=$(echo "${RPS[$c]}" | median)
    cpu=$(echo "${CPU[$c]}" | median)
    awk -v c="$c" -v r="$rps" -v br="$base_rps" -v u="$cpu" -v bu="$base_cpu" \
        'BEGIN { printf "%-12s %10.0f %7.2fx %12.1f %7.2fx\n", c, r, r / br, u, u / bu }'
done
echo "(h2load, $CONNS connections, one request at a time each, ${DURATION}s x $ROUNDS rounds, medians; $(nproc) CPUs)"
