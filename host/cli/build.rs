//! Link settings of the `wisp` binary.
//!
//! On Linux with glibc the binary is linked with packed relative
//! relocations (`-z pack-relative-relocs`, DT_RELR; binutils 2.38+, glibc
//! 2.36+): a position-independent executable of this size carries ~130,000
//! relative relocations, 2 MiB of `.rela.dyn` that the dynamic loader reads
//! at every start, and those pages stay mapped (resident) for the life of
//! the process. Packed, they take a few KiB. Set `WISP_NO_PACKED_RELOCS` to
//! build for an older glibc. The static x86_64 musl build is a static PIE
//! with the same relocations, applied by musl's start code (Rust's
//! self-contained musl handles DT_RELR): packed, its binary is 1.3 MiB
//! smaller. (The aarch64 musl build is not position-independent: it has
//! none.)
//!
//! A release build for x86_64 Linux (glibc) is also linked with a symbol
//! ordering file (`link/symbol-order.txt`, lld's `--symbol-ordering-file`):
//! the functions a host runs to start, load its functions and answer
//! requests are placed together at the start of `.text`. Without it they are
//! spread over all 28 MiB of code, and because the kernel maps file pages
//! around each fault (64 KiB), an idle host kept ~15 MiB of code resident to
//! run ~2.6 MiB of it. The file lists mangled names; a name that no longer
//! exists (another compiler, changed dependencies) is skipped, which costs
//! memory, never correctness. `scripts/symbol-order.sh` writes it anew. Set
//! `WISP_NO_SYMBOL_ORDER` to link without it (e.g. with a linker other than
//! lld), or `WISP_SYMBOL_ORDER` to another file: scripts/dist.sh links the
//! runtime-only edge build with `link/symbol-order-edge.txt`, whose names
//! are that build's (optimised for size and linked whole, few of the
//! release build's functions keep their names), written by
//! `scripts/symbol-order-edge.sh`.
//!
//! It also packs the SDK's source into the binary for `wisp new`
//! (src/new/pack.rs).

#[path = "src/new/pack.rs"]
mod pack;

fn main() {
    pack::main();
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=WISP_NO_PACKED_RELOCS");
    println!("cargo:rerun-if-env-changed=WISP_NO_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=WISP_SYMBOL_ORDER");
    println!("cargo:rerun-if-changed=link/symbol-order.txt");
    println!("cargo:rerun-if-changed=link/symbol-order-edge.txt");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let linux_gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let static_pie = var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "musl"
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64";
    if (linux_gnu || static_pie) && std::env::var_os("WISP_NO_PACKED_RELOCS").is_none() {
        println!("cargo:rustc-link-arg-bin=wisp=-Wl,-z,pack-relative-relocs");
    }
    let x86_64_gnu = linux_gnu && var("CARGO_CFG_TARGET_ARCH") == "x86_64";
    if x86_64_gnu
        && var("PROFILE") == "release"
        && std::env::var_os("WISP_NO_SYMBOL_ORDER").is_none()
    {
        let manifest = std::path::PathBuf::from(var("CARGO_MANIFEST_DIR"));
        let order = match std::env::var_os("WISP_SYMBOL_ORDER") {
            Some(file) => manifest.join(file),
            None => manifest.join("link/symbol-order.txt"),
        };
        println!(
            "cargo:rustc-link-arg-bin=wisp=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=wisp=-Wl,--no-warn-symbol-ordering");
    }
}
