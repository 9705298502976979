//! Part of the build script (build.rs includes it; the binary does not):
//! packs the SDK's source (the workspace's `sdk/`: wisp-sdk, its WASI 0.3
//! build, its macros, the shared rules and the WIT) into the `wisp` binary,
//! so that `wisp new` can write it to a cache directory and the crates it
//! makes build on a machine with nothing but `wisp` and the Rust toolchain
//! (new/sdk.rs writes it).
//!
//! The SDK's manifests inherit from the workspace (`version.workspace =
//! true`, `[lints] workspace = true`, ...), so a workspace manifest is
//! written beside them: the root `Cargo.toml`'s `[workspace.package]`,
//! `[workspace.lints]` and the `[workspace.dependencies]` the SDK's crates
//! use, with the SDK's crates as its members.
//!
//! Generated into `OUT_DIR/sdk_source.rs`: `FILES` (path in the copy,
//! contents) and `ID` (the version and a hash of every file, which names
//! the copy's directory, so two builds of `wisp` carrying different SDKs
//! never share one).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Writes `OUT_DIR/sdk_source.rs`.
pub fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    println!("cargo::rerun-if-changed=src/new/pack.rs");
    println!("cargo::rerun-if-changed=../../sdk");
    println!("cargo::rerun-if-changed=../../Cargo.toml");
    // Built without the `sdk` feature (the runtime-only edge build), the
    // binary carries no SDK and `wisp new` says so.
    if std::env::var_os("CARGO_FEATURE_SDK").is_none() {
        let code = "pub const FILES: &[(&str, &[u8])] = &[];\npub const ID: &str = \"none\";\n";
        std::fs::write(out_dir.join("sdk_source.rs"), code).unwrap();
        return;
    }

    let mut files = Vec::new();
    collect(&root, Path::new("sdk"), &mut files);
    files.sort();
    let workspace = workspace_manifest(&root, &files);
    let workspace_file = out_dir.join("sdk-workspace.toml");
    std::fs::write(&workspace_file, &workspace).unwrap();

    let mut hash = Sha256::new();
    let mut entries = String::new();
    let mut add = |name: &str, source: &Path, bytes: &[u8]| {
        hash.update((name.len() as u64).to_le_bytes());
        hash.update(name.as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
        let source = source.to_str().expect("a UTF-8 path to the SDK's source");
        writeln!(entries, "    ({name:?}, include_bytes!({source:?})),").unwrap();
    };
    add("Cargo.toml", &workspace_file, workspace.as_bytes());
    for relative in &files {
        let name = relative
            .to_str()
            .expect("SDK file names are UTF-8")
            .replace('\\', "/");
        let source = std::fs::canonicalize(root.join(relative)).unwrap();
        let bytes = std::fs::read(&source).unwrap();
        add(&name, &source, &bytes);
    }
    let digest = hex(&hash.finalize()[..6]);
    let version = std::env::var("CARGO_PKG_VERSION").unwrap();
    let code = format!(
        "/// The SDK's files, by path in the copy.\n\
         pub const FILES: &[(&str, &[u8])] = &[\n{entries}];\n\
         /// The copy's name: the version and a hash of `FILES`.\n\
         pub const ID: &str = \"{version}-{digest}\";\n"
    );
    std::fs::write(out_dir.join("sdk_source.rs"), code).unwrap();
}

/// The files under `dir` (relative to `root`), build output and hidden
/// files left out.
fn collect(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(root.join(dir)).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = name.to_str().expect("SDK file names are UTF-8");
        if name.starts_with('.') || name == "target" {
            continue;
        }
        let relative = dir.join(name);
        if entry.file_type().unwrap().is_dir() {
            collect(root, &relative, files);
        } else {
            files.push(relative);
        }
    }
}

/// The workspace manifest of the copy (see the module's docs).
fn workspace_manifest(root: &Path, files: &[PathBuf]) -> String {
    let text = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let manifest: toml::Table = text.parse().expect("the workspace's Cargo.toml");
    let workspace = manifest["workspace"].as_table().unwrap();

    let mut members = Vec::new();
    let mut inherited = BTreeSet::new();
    for file in files.iter().filter(|f| f.ends_with("Cargo.toml")) {
        let dir = file.parent().unwrap().to_str().unwrap().replace('\\', "/");
        members.push(toml::Value::String(dir));
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let crate_manifest: toml::Table = text.parse().unwrap();
        for kind in ["dependencies", "build-dependencies", "dev-dependencies"] {
            let Some(deps) = crate_manifest.get(kind).and_then(toml::Value::as_table) else {
                continue;
            };
            for (name, spec) in deps {
                if spec.get("workspace").and_then(toml::Value::as_bool) == Some(true) {
                    inherited.insert(name.clone());
                }
            }
        }
    }
    let all = workspace["dependencies"].as_table().unwrap();
    let dependencies: toml::Table = inherited
        .iter()
        .map(|name| {
            let spec = all
                .get(name)
                .unwrap_or_else(|| panic!("no workspace dependency {name}"));
            (name.clone(), spec.clone())
        })
        .collect();

    let mut copy = toml::Table::new();
    copy.insert("resolver".into(), workspace["resolver"].clone());
    copy.insert("members".into(), toml::Value::Array(members));
    copy.insert("package".into(), workspace["package"].clone());
    copy.insert("dependencies".into(), toml::Value::Table(dependencies));
    copy.insert("lints".into(), workspace["lints"].clone());
    let mut out = toml::Table::new();
    out.insert("workspace".into(), toml::Value::Table(copy));
    format!(
        "# The Wisp SDK's source, written by `wisp new` from what the `wisp`\n\
         # binary carries. Crates made by `wisp new` depend on sdk/ (WASI 0.2)\n\
         # or sdk/p3 (WASI 0.3). Not to be edited: `wisp new` checks the copy\n\
         # and writes it again if it differs.\n\n{}",
        toml::to_string(&out).unwrap()
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
