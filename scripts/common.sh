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
}

# Guests are built for wasm32-wasip2 in their own target directory under
# target/, so a guest build never waits on (or invalidates) the host build.
GUEST_TARGET_DIR="target/wasm"
GUESTS=(hello echo misbehave command bad-import todo-api counter config proxy caps)

build_guests() {
    local args=()
    for g in "$@"; do args+=(-p "$g"); done
    cargo build --release --target wasm32-wasip2 --target-dir "$GUEST_TARGET_DIR" "${args[@]}"
}

# componentize-py builds the Python component of the e2e tests (a guest from
# another language's toolchain). From PyPI; pinned for reproducible builds.
ensure_componentize_py() {
    if ! command -v componentize-py >/dev/null 2>&1; then
        echo "==> installing componentize-py (PyPI)"
        python3 -m pip install --quiet "componentize-py==0.25.1"
    fi
}
