# Runs a command as root (through sudo unless this is root).
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_install WHAT PACKAGE...: installs Debian packages that WHAT needs;
# without apt-get, says so and fails. Another apt or dpkg at work (another
# script of ours, unattended upgrades) is waited for, up to 10 minutes,
# instead of failing on its lock.
apt_install() {
    local what="$1"
    shift
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "==> $* needed for $what (no apt-get here: install them)" >&2
        return 1
    fi
    echo "==> installing $* (Debian) for $what"
    as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
}

# Shared by scripts/*.sh: make sure the wasm targets are installed.
ensure_wasm_targets() {
    local installed
    installed="$(rustup target list --installed)"
    for t in wasm32-wasip1 wasm32-wasip2; do
        if ! grep -qx "$t" <<<"$installed"; then
            echo "==> installing the Rust target $t"
            rustup target add "$t"
        fi
    done
    ensure_c_wasi
}

# The C example (examples/cgi-c, a preview-1 module) is built with Debian's
# clang, lld and wasi-libc, plus compiler-rt's wasm32 builtins.
C_WASI_PACKAGES=(clang lld wasi-libc libclang-rt-dev-wasm32)

ensure_c_wasi() {
    if dpkg -s "${C_WASI_PACKAGES[@]}" >/dev/null 2>&1; then
        return
    fi
    apt_install "examples/cgi-c" "${C_WASI_PACKAGES[@]}" || true
}

# Guests are built for wasm32-wasip2 in their own target directory under
# target/, so a guest build never waits on (or invalidates) the host build.
GUEST_TARGET_DIR="target/wasm"

# The names in a list of [workspace.metadata.wisp] in the root Cargo.toml,
# one a line: the one list of guests that these scripts, the test harness
# and the release profile share. (`cargo metadata` prints compact JSON;
# guest names are [a-z0-9-], so no JSON parser is needed.)
workspace_list() {
    cargo metadata --no-deps --format-version 1 \
        | grep -o "\"$1\":\[[^]]*\]" | head -n 1 \
        | sed -e 's/^[^[]*\[//' -e 's/\]$//' | tr ',' '\n' | tr -d '"'
}

mapfile -t GUESTS < <(workspace_list guests)
# Preview-1 guests (run CGI-style): plain wasm32-wasip1 programs, built in a
# cargo invocation of their own; and the C example.
mapfile -t WASIP1_GUESTS < <(workspace_list wasip1-guests)
if [ "${#GUESTS[@]}" -eq 0 ] || [ "${#WASIP1_GUESTS[@]}" -eq 0 ]; then
    echo "scripts/common.sh: no guest lists in [workspace.metadata.wisp] of Cargo.toml" >&2
    exit 1
fi

build_guests() {
    local args=()
    for g in "$@"; do args+=(-p "$g"); done
    cargo build --release --target wasm32-wasip2 --target-dir "$GUEST_TARGET_DIR" "${args[@]}"
}

build_wasip1_guests() {
    local args=()
    for g in "${WASIP1_GUESTS[@]}"; do args+=(-p "$g"); done
    cargo build --release --target wasm32-wasip1 --target-dir "$GUEST_TARGET_DIR" "${args[@]}"
    bash examples/cgi-c/build.sh "$GUEST_TARGET_DIR/cgi-c/cgi-c.wasm" >/dev/null
}

# Clippy, warnings as errors: the native crates (every target, tests and
# benches included), then the guests and the SDK for their wasm targets,
# where the code behind `cfg(target_arch = "wasm32")` (the generated
# bindings and what calls them) is compiled.
clippy_all() {
    if ! cargo clippy --version >/dev/null 2>&1; then
        echo "==> installing clippy"
        rustup component add clippy
    fi
    cargo clippy --workspace --all-targets -- -D warnings
    local args=()
    for g in "${GUESTS[@]}"; do args+=(-p "$g"); done
    cargo clippy --target wasm32-wasip2 --target-dir "$GUEST_TARGET_DIR" \
        "${args[@]}" -p wisp-sdk -p wisp-rules -- -D warnings
    args=()
    for g in "${WASIP1_GUESTS[@]}"; do args+=(-p "$g"); done
    cargo clippy --target wasm32-wasip1 --target-dir "$GUEST_TARGET_DIR" "${args[@]}" -- -D warnings
}

# componentize-py builds the Python component of the e2e tests (a guest from
# another language's toolchain). From PyPI; pinned for reproducible builds.
ensure_componentize_py() {
    if ! command -v componentize-py >/dev/null 2>&1; then
        echo "==> installing componentize-py (PyPI)"
        python3 -m pip install --quiet "componentize-py==0.25.1"
    fi
}

# The cluster tests (tests/e2e/cluster.rs) start their own `nats-server -js`
# (Debian's package: JetStream with key-value buckets and the object store).
# Only the binary is used: the package's own service is not needed. Debian
# puts it in /usr/sbin, which is not on every user's PATH (the harness looks
# there too).
ensure_nats_server() {
    if command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; then
        return
    fi
    apt_install "the cluster tests" nats-server || true
}

# The dashboard's tests (tests/e2e/ui.rs) drive Debian's `chromium`, headless,
# through WebDriver: `chromedriver` from `chromium-driver`, started by the
# harness on a port of its own. The harness looks for /usr/bin/chromium.
ensure_chromium() {
    if command -v chromedriver >/dev/null 2>&1 && [ -x /usr/bin/chromium ]; then
        return
    fi
    apt_install "the dashboard tests" chromium chromium-driver || true
}

# Edge builds (scripts/test-edge.sh, scripts/dist.sh): Debian's cross gcc
# for aarch64 (the linker and C compiler of both aarch64 targets), its glibc
# (the sysroot qemu-aarch64 runs the glibc build with), qemu-user, and musl
# (musl-gcc for x86_64; musl-dev:arm64 brings aarch64-linux-musl-gcc).
EDGE_PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user musl-tools)

ensure_edge_tools() {
    local want_arm64_musl="${1:-}"
    local packages=("${EDGE_PACKAGES[@]}")
    if [ -n "$want_arm64_musl" ]; then packages+=(musl-dev:arm64); fi
    if dpkg -s "${packages[@]}" >/dev/null 2>&1; then
        return
    fi
    # musl-dev:arm64 is a package of Debian's arm64 architecture.
    if [ -n "$want_arm64_musl" ] && command -v dpkg >/dev/null 2>&1 \
        && ! dpkg --print-foreign-architectures | grep -qx arm64; then
        as_root dpkg --add-architecture arm64
    fi
    apt_install "the edge builds" "${packages[@]}" || exit 1
}

# Installs the Rust targets named, where missing.
ensure_rust_targets() {
    local installed
    installed="$(rustup target list --installed)"
    for t in "$@"; do
        if ! grep -qx "$t" <<<"$installed"; then
            echo "==> installing the Rust target $t"
            rustup target add "$t"
        fi
    done
}

# The workspace's target directory (CARGO_TARGET_DIR, or target/).
target_dir() {
    cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'
}
