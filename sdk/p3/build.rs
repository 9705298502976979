//! Compiles wisp-sdk's source for WASI 0.3 (see Cargo.toml).

fn main() {
    println!("cargo::rustc-cfg=wisp_p3");
    println!("cargo::rerun-if-changed=build.rs");
}
