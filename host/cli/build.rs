//! Link settings of the `wisp` binary.
//!
//! On Linux with glibc the binary is linked with packed relative
//! relocations (`-z pack-relative-relocs`, DT_RELR; binutils 2.38+, glibc
//! 2.36+): a position-independent executable of this size carries ~130,000
//! relative relocations, 2 MiB of `.rela.dyn` that the dynamic loader reads
//! at every start, and those pages stay mapped (resident) for the life of
//! the process. Packed, they take a few KiB. Set `WISP_NO_PACKED_RELOCS` to
//! build for an older glibc.
//!
//! It also packs the SDK's source into the binary for `wisp new`
//! (src/new/pack.rs).

#[path = "src/new/pack.rs"]
mod pack;

fn main() {
    pack::main();
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=WISP_NO_PACKED_RELOCS");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let linux_gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if linux_gnu && std::env::var_os("WISP_NO_PACKED_RELOCS").is_none() {
        println!("cargo:rustc-link-arg-bin=wisp=-Wl,-z,pack-relative-relocs");
    }
}
