# Helpers the load scripts share (benches/load.sh, benches/kv-writer.sh).
# Source it after defining `say`, `die` and `TMP` (each server's log is
# $TMP/NAME.log).

# free_port: sets PORT to a loopback port nobody listens on (nor that an
# earlier call handed out).
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

# wait_ready NAME PID URL: until URL answers 200 (a first start compiles).
wait_ready() {
    local name=$1 pid=$2 url=$3
    for _ in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || { cat "$TMP/$name.log" >&2; die "$name exited during start-up"; }
        curl -sf -o /dev/null "$url" && return
        sleep 0.1
    done
    cat "$TMP/$name.log" >&2
    die "$name did not answer $url within 60 s"
}

# to_us VALUE: wrk's latency (e.g. 1.2ms) in microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        if (f < 0) { print "nan"; exit }
        printf "%.0f", n * f
    }'
}

# idle_pct: percentage of all CPUs' time spent idle over the next second.
idle_pct() {
    local a b i ta=0 tb=0
    read -ra a < <(head -n1 /proc/stat)
    sleep 1
    read -ra b < <(head -n1 /proc/stat)
    for i in 1 2 3 4 5 6 7 8; do ta=$((ta + a[i])); tb=$((tb + b[i])); done
    echo $((100 * (b[4] + b[5] - a[4] - a[5]) / (tb - ta > 0 ? tb - ta : 1)))
}

# fmt_us MICROSECONDS: for the tables (µs below a millisecond, else ms).
fmt_us() { awk -v u="$1" 'BEGIN { if (u >= 1000) printf "%.2f ms", u / 1000; else printf "%.0f µs", u }'; }
