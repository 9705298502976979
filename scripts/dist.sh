#!/usr/bin/env bash
# Release archives for every target Wisp ships: target/archives/
#   wisp-<version>-<target>.tar.gz          the full build (compiles wasm)
#   wisp-runtime-<version>-<target>.tar.gz  the runtime-only build (serves
#                                           signed precompiled code only)
# each holding the stripped binary, the systemd unit and the README, built
# with [profile.dist] (optimised for size, LTO, no symbols). Then prints each
# binary's size against its budget and, for the native runtime-only build,
# the idle memory of a host serving hello, todo-api and cgi-rust (compiled
# and signed with the native full build).
#
#   scripts/dist.sh                        all targets, both builds
#   scripts/dist.sh x86_64-unknown-linux-musl ...   only these targets
#   DIST_BUILDS=full scripts/dist.sh       only the full builds (or runtime)
#   DIST_BUILDS=none scripts/dist.sh       only the memory measurement, of
#                                          the archives' binaries already built
#
# Installs what it needs (Debian's cross gcc, musl-tools, musl-dev:arm64;
# the Rust targets). Each build is a release build of its own: on two cores,
# about a quarter of an hour each.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

ALL_TARGETS=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi
read -r -a BUILDS <<<"${DIST_BUILDS:-full runtime}"
if [ "${BUILDS[*]}" = none ]; then BUILDS=(); fi
# Budgets of a stripped binary, MiB (issue 18): the full build, the runtime-only one.
BUDGET_full=25
BUDGET_runtime=12
BUDGET_IDLE_RSS_MIB=16

for t in "${TARGETS[@]}"; do
    case " ${ALL_TARGETS[*]} " in
        *" $t "*) ;;
        *) echo "scripts/dist.sh: unknown target $t (one of: ${ALL_TARGETS[*]})" >&2; exit 2 ;;
    esac
done
for b in "${BUILDS[@]}"; do
    case "$b" in full | runtime) ;; *) echo "scripts/dist.sh: DIST_BUILDS: full or runtime, not $b" >&2; exit 2 ;; esac
done

arm64_musl=""
if [[ " ${TARGETS[*]} " == *" aarch64-unknown-linux-musl "* ]]; then arm64_musl=1; fi
ensure_edge_tools "$arm64_musl"
ensure_rust_targets "${TARGETS[@]}"
TARGET_DIR=$(target_dir)
VERSION=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "wisp-cli"))')
OUT="$TARGET_DIR/archives"
mkdir -p "$OUT"

features_of() {
    case "$1" in
        full) echo "" ;;
        runtime) echo "--no-default-features --features runtime" ;;
    esac
}
# The full build: [profile.dist]. The runtime-only build: [profile.edge],
# the same with panic = "abort", and without unwind tables (nothing
# unwinds): see Cargo.toml.
profile_of() {
    case "$1" in
        full) echo dist ;;
        runtime) echo edge ;;
    esac
}
rustflags_of() {
    case "$1" in
        full) echo "" ;;
        runtime) echo "-C force-unwind-tables=no" ;;
    esac
}
# The symbol ordering file of the link (x86_64 glibc only; host/cli/build.rs):
# the runtime-only build's own (scripts/symbol-order-edge.sh).
order_of() {
    case "$1" in
        full) echo "link/symbol-order.txt" ;;
        runtime) echo "link/symbol-order-edge.txt" ;;
    esac
}

declare -A SIZE
for target in "${TARGETS[@]}"; do
    for build in "${BUILDS[@]}"; do
        echo "==> building wisp ($build) for $target"
        # shellcheck disable=SC2046
        RUSTFLAGS="$(rustflags_of "$build")" WISP_SYMBOL_ORDER="$(order_of "$build")" \
            cargo build --profile "$(profile_of "$build")" -p wisp-cli --bin wisp --target "$target" $(features_of "$build")
        bin="$TARGET_DIR/$target/$(profile_of "$build")/wisp"
        name="wisp-$VERSION-$target"
        if [ "$build" = runtime ]; then name="wisp-runtime-$VERSION-$target"; fi
        stage=$(mktemp -d)
        mkdir -p "$stage/$name"
        cp "$bin" "$stage/$name/wisp"
        # [profile.edge] keeps its symbols (scripts/symbol-order-edge.sh).
        case "$target" in
            aarch64-*) aarch64-linux-gnu-strip "$stage/$name/wisp" ;;
            *) strip "$stage/$name/wisp" ;;
        esac
        cp README.md "$stage/$name/README.md"
        cp dist/systemd/wisp.service "$stage/$name/wisp.service"
        tar -C "$stage" -czf "$OUT/$name.tar.gz" "$name"
        # Kept for the measurements below (the next build overwrites $bin).
        cp "$stage/$name/wisp" "$OUT/$name.bin"
        SIZE[$target/$build]=$(stat -c %s "$stage/$name/wisp")
        rm -rf "$stage"
        echo "==> $OUT/$name.tar.gz"
    done
done

mib() { python3 -c "print(f'{$1 / 1048576:.1f}')"; }
if [ "${#BUILDS[@]}" -gt 0 ]; then
    echo
    echo "| target | build | binary (stripped) | budget | archive |"
    echo "|---|---|---:|---:|---:|"
fi
for target in "${TARGETS[@]}"; do
    for build in "${BUILDS[@]}"; do
        name="wisp-$VERSION-$target"
        if [ "$build" = runtime ]; then name="wisp-runtime-$VERSION-$target"; fi
        budget_var="BUDGET_$build"
        echo "| $target | $build | $(mib "${SIZE[$target/$build]}") MiB | ${!budget_var} MiB | $(mib "$(stat -c %s "$OUT/$name.tar.gz")") MiB |"
    done
done

# Idle memory of the native runtime-only build serving three functions
# compiled and signed by the native full build.
native=x86_64-unknown-linux-gnu
full_bin="$OUT/wisp-$VERSION-$native.bin"
runtime_bin="$OUT/wisp-runtime-$VERSION-$native.bin"
if [ ! -x "$full_bin" ] || [ ! -x "$runtime_bin" ]; then
    echo
    echo "(idle memory is measured with both builds for $native)"
    exit 0
fi
ensure_wasm_targets
build_guests hello todo-api
build_wasip1_guests
# As a service runs it: no backtraces captured (this machine sets it).
unset RUST_BACKTRACE
work=$(mktemp -d)
host=""
trap '[ -z "$host" ] || kill "$host" 2>/dev/null || true; rm -rf "$work"' EXIT
"$full_bin" keygen "$work/build" >/dev/null
for g in "wasm32-wasip2/release/hello" "wasm32-wasip2/release/todo_api" "wasm32-wasip1/release/cgi-rust"; do
    "$full_bin" compile "$GUEST_TARGET_DIR/$g.wasm" --sign "$work/build" -o "$work/$(basename "$g").cwasm" >/dev/null
done
TMP=$work
die() { echo "scripts/dist.sh: $*" >&2; exit 1; }
source benches/lib.sh
free_port
data_port=$PORT
free_port
admin_port=$PORT
export WISP_ADMIN_URL="http://127.0.0.1:$admin_port" WISP_ADMIN_TOKEN=dist-idle-measure-token
start_host() {
    "$runtime_bin" serve --data-dir "$work/data" --listen "127.0.0.1:$data_port" \
        --admin-listen "127.0.0.1:$admin_port" --trusted-key "$work/build.pub" \
        >"$work/host.log" 2>&1 &
    host=$!
    wait_ready host "$host" "$WISP_ADMIN_URL/v1/health"
}
start_host
"$runtime_bin" deploy hello "$work/hello.cwasm" --route /hello >/dev/null
"$runtime_bin" deploy todo-api "$work/todo_api.cwasm" --route /todos --route '/todos/*' >/dev/null
"$runtime_bin" deploy cgi "$work/cgi-rust.cwasm" --route '/cgi/*' >/dev/null
kill -TERM "$host"
wait "$host" || true
# Restarted: what a device runs after a reboot, functions loaded from disk.
start_host
for path in /hello /todos /cgi/x; do
    curl -sf "http://127.0.0.1:$data_port$path" >/dev/null
done
sleep 5
rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$host/status")
echo
echo "idle RSS of the runtime-only host ($native) with hello, todo-api and cgi-rust deployed and called once: $(mib $((rss_kib * 1024))) MiB (budget $BUDGET_IDLE_RSS_MIB MiB)"
