#!/usr/bin/env bash
# Runs every fuzz target (tests/fuzz, cargo-fuzz + libFuzzer) briefly, one
# after the other, on one core. Not part of CI. Installs cargo-fuzz if it is
# missing; runs on a stable toolchain through RUSTC_BOOTSTRAP (cargo-fuzz
# passes nightly-only flags to rustc).
#
#   scripts/fuzz.sh                   # every target, 30 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh  # longer
#   scripts/fuzz.sh routes cron       # some targets only
#
# New inputs go to tests/fuzz/target/corpus/TARGET (ignored by git), so the
# seed corpus in tests/fuzz/corpus/TARGET stays small. A crash stops the
# run: its input is written to tests/fuzz/artifacts/TARGET/ and the command
# to reproduce it is printed. Each run first replays the corpus it has kept,
# which can take longer than FUZZ_SECONDS once that corpus has grown.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
fuzz_dir=tests/fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(upload cgi_head routes cron kv)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# The instrumented build has a target directory of its own; a
# CARGO_TARGET_DIR or build directory set for the normal build must not
# mix the two.
unset CARGO_TARGET_DIR CARGO_BUILD_BUILD_DIR
export RUSTC_BOOTSTRAP=1
# One core: Cranelift's parallel compilation (upload) on one thread too.
export RAYON_NUM_THREADS=1
fuzz=(cargo fuzz run --fuzz-dir "$fuzz_dir" --target-dir "$fuzz_dir/target")

echo "==> building the fuzz targets (instrumented; slow the first time)"
cargo fuzz build --fuzz-dir "$fuzz_dir" --target-dir "$fuzz_dir/target"

for t in "${targets[@]}"; do
    work="$fuzz_dir/target/corpus/$t"
    mkdir -p "$work" "$fuzz_dir/corpus/$t"
    # One in-process worker (no -jobs: that would fork it and send its
    # output to fuzz-0.log in the current directory).
    # An input that takes 20 s is a finding too (a hang a client could cause).
    args=(-max_total_time="$seconds" -timeout=20 -print_final_stats=1)
    if [ -f "$fuzz_dir/dict/$t.dict" ]; then
        args+=(-dict="$fuzz_dir/dict/$t.dict")
    fi
    echo "==> $t: ${seconds}s"
    # The kv target's store lives in a temporary directory that the fuzzer,
    # which exits without unwinding, leaves behind: keep it under target/.
    tmp="$fuzz_dir/target/tmp"
    rm -rf "$tmp" && mkdir -p "$tmp"
    TMPDIR="$PWD/$tmp" "${fuzz[@]}" "$t" "$work" "$fuzz_dir/corpus/$t" -- "${args[@]}"
done
echo "==> no crash in ${targets[*]}"
