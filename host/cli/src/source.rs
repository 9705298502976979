//! `wisp deploy NAME --from PATH`: builds a function crate to a component
//! with cargo, for the deploy to upload.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The target functions are built for.
const TARGET: &str = "wasm32-wasip2";

/// Builds the crate at `path` (its directory or its `Cargo.toml`) in release
/// mode for `wasm32-wasip2` and returns the `.wasm` it produced.
///
/// Cargo's diagnostics go to stderr as they come (the build is the user's
/// to read); its JSON messages on stdout name the artifacts.
pub fn build(path: &Path) -> Result<PathBuf> {
    let manifest = if path.is_dir() {
        path.join("Cargo.toml")
    } else {
        path.to_path_buf()
    };
    if !manifest.is_file() {
        bail!(
            "{}: no Cargo.toml there (--from takes a crate's directory or its Cargo.toml)",
            path.display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building {} for {TARGET}", manifest.display());
    let mut command = Command::new(&cargo);
    // The build runs the crate's code (build scripts, proc-macros): it gets
    // none of Wisp's own variables, the admin token above all. All of them,
    // not a list, so that a variable added later cannot leak either.
    for (name, _) in std::env::vars_os() {
        if is_wisp_variable(&name) {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&manifest)
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;

    // Copy stderr through while remembering whether the target is missing.
    let stderr = child.stderr.take().context("cargo's stderr")?;
    let relay = std::thread::spawn(move || relay_stderr(stderr));

    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut artifacts = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        artifacts.extend(wasm_artifacts(&line));
    }
    let status = child.wait().context("waiting for cargo")?;
    let target_missing = relay.join().unwrap_or(false);
    if !status.success() {
        if target_missing {
            bail!(
                "build failed: the {TARGET} target is not installed; run `rustup target add {TARGET}`"
            );
        }
        bail!("build failed (cargo's messages above); nothing was deployed");
    }
    match artifacts.as_slice() {
        [wasm] => Ok(wasm.clone()),
        [] => bail!(
            "the build produced no .wasm: is {} a library with `crate-type = [\"cdylib\"]`?",
            manifest.display()
        ),
        several => bail!(
            "the build produced several .wasm files ({}); point --from at one crate",
            several
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Whether an environment variable is one of Wisp's (`WISP_*`), which can
/// carry secrets (the admin token, an admin URL with credentials).
fn is_wisp_variable(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b"WISP_")
}

/// Writes cargo's stderr to ours; true if it said the target is missing.
fn relay_stderr(mut stderr: impl Read) -> bool {
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let mut out = std::io::stderr();
    loop {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = out.write_all(&buf[..n]);
                // Only the tail matters; keep memory bounded.
                seen.extend_from_slice(&buf[..n]);
                if seen.len() > 1 << 20 {
                    seen.drain(..seen.len() - (64 << 10));
                }
            }
        }
    }
    let seen = String::from_utf8_lossy(&seen);
    seen.contains("target may not be installed")
        || seen.contains("can't find crate for `core`")
        || seen.contains("can't find crate for `std`")
}

/// The `.wasm` files of a `compiler-artifact` message.
fn wasm_artifacts(line: &str) -> Vec<PathBuf> {
    #[derive(Deserialize)]
    struct Message {
        reason: String,
        #[serde(default)]
        filenames: Vec<PathBuf>,
    }
    match serde_json::from_str::<Message>(line) {
        Ok(m) if m.reason == "compiler-artifact" => m
            .filenames
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "wasm"))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_wasm_artifacts() {
        let line = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["cdylib"]},"filenames":["/t/wasm32-wasip2/release/hello.wasm"],"fresh":false}"#;
        assert_eq!(
            wasm_artifacts(line),
            [PathBuf::from("/t/wasm32-wasip2/release/hello.wasm")]
        );
        let rlib = r#"{"reason":"compiler-artifact","filenames":["/t/libserde.rlib","/t/libserde.rmeta"]}"#;
        assert!(wasm_artifacts(rlib).is_empty());
        assert!(wasm_artifacts(r#"{"reason":"build-finished","success":true}"#).is_empty());
        assert!(wasm_artifacts("not json").is_empty());
    }

    #[test]
    fn wisp_variables_are_spotted() {
        for name in [
            "WISP_ADMIN_TOKEN",
            "WISP_ADMIN_URL",
            "WISP_",
            "WISP_ANYTHING_LATER",
        ] {
            assert!(is_wisp_variable(name.as_ref()), "{name}");
        }
        for name in [
            "PATH",
            "CARGO_HOME",
            "MY_WISP_TOKEN",
            "wisp_admin_token",
            "WISP",
        ] {
            assert!(!is_wisp_variable(name.as_ref()), "{name}");
        }
    }

    #[test]
    fn refuses_paths_without_a_crate() {
        let tmp = tempfile::tempdir().unwrap();
        let e = build(tmp.path()).unwrap_err();
        assert!(format!("{e:#}").contains("no Cargo.toml"));
    }

    #[test]
    fn relays_and_spots_a_missing_target() {
        assert!(relay_stderr(
            &b"error[E0463]: can't find crate for `core`\n"[..]
        ));
        assert!(!relay_stderr(&b"error: expected `;`\n"[..]));
    }
}
