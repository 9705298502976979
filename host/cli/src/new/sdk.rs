//! The SDK's source that the `wisp` binary carries (packed by build.rs,
//! see pack.rs), written to a versioned cache directory that the crates
//! `wisp new` makes depend on: `$XDG_CACHE_HOME/wisp/sdk/ID`, or
//! `~/.cache/wisp/sdk/ID`, where ID is the version and a hash of the
//! source.
//!
//! The copy is written into a temporary directory beside its place and
//! renamed into place once complete, so a crate never sees half an SDK,
//! however many `wisp new` run at once; a complete copy is reused.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

mod packed {
    include!(concat!(env!("OUT_DIR"), "/sdk_source.rs"));
}

/// The SDK's files, by path in the copy (`Cargo.toml`, `sdk/src/lib.rs`,
/// ...).
pub const FILES: &[(&str, &[u8])] = packed::FILES;

/// The copy's directory name: the version and a hash of [`FILES`].
pub const ID: &str = packed::ID;

/// The directory that holds the copies: `$XDG_CACHE_HOME/wisp/sdk`, or
/// `$HOME/.cache/wisp/sdk`. A relative `XDG_CACHE_HOME` is ignored, as the
/// XDG Base Directory specification says.
pub fn cache_root(xdg_cache_home: Option<&str>, home: Option<&str>) -> Result<PathBuf> {
    let base = match (xdg_cache_home, home) {
        (Some(xdg), _) if Path::new(xdg).is_absolute() => PathBuf::from(xdg),
        (_, Some(home)) if !home.is_empty() => Path::new(home).join(".cache"),
        _ => {
            return Err(anyhow!(
                "no cache directory for the Wisp SDK: set XDG_CACHE_HOME or HOME \
                 (or pass --sdk-path DIR)"
            ));
        }
    };
    Ok(base.join("wisp").join("sdk"))
}

/// The copy of the SDK under `root` (see [`cache_root`]), written if it is
/// missing or differs from what this binary carries. Returns its
/// directory, which holds `sdk/` (wisp-sdk) and `sdk/p3` (wisp-sdk-p3).
pub fn ensure(root: &Path) -> Result<PathBuf> {
    if FILES.is_empty() {
        return Err(anyhow!(
            "this wisp is a runtime-only build, which does not carry the Wisp SDK: \
             pass --sdk-path DIR (a checkout's sdk/ folder), or run `wisp new` with the full build"
        ));
    }
    let dir = root.join(ID);
    if is_complete(&dir) {
        return Ok(dir);
    }
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    // Beside its place, so the rename stays on one file system; removed
    // on drop if anything below fails.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{ID}-"))
        .tempdir_in(root)
        .with_context(|| format!("cannot create a directory in {}", root.display()))?;
    write_files(tmp.path())?;
    match std::fs::rename(tmp.path(), &dir) {
        Ok(()) => {
            // Renamed: nothing left for the guard to remove.
            let _ = tmp.keep();
            Ok(dir)
        }
        // Another `wisp new` renamed its copy first, or a copy that differs
        // is in the way: keep a complete one, replace the other.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::AlreadyExists | ErrorKind::DirectoryNotEmpty
            ) =>
        {
            if is_complete(&dir) {
                return Ok(dir);
            }
            let stale = tempfile::Builder::new()
                .prefix(&format!(".{ID}-stale-"))
                .tempdir_in(root)
                .with_context(|| format!("cannot create a directory in {}", root.display()))?;
            std::fs::rename(&dir, stale.path().join("old"))
                .with_context(|| format!("cannot move {} aside", dir.display()))?;
            std::fs::rename(tmp.path(), &dir)
                .with_context(|| format!("cannot write the Wisp SDK to {}", dir.display()))?;
            let _ = tmp.keep();
            Ok(dir)
        }
        Err(e) => Err(e).with_context(|| format!("cannot write the Wisp SDK to {}", dir.display())),
    }
}

/// Whether `dir` holds every file of the SDK, each as this binary carries
/// it. (Extra files, such as a `target/` of a build run inside the copy,
/// do no harm.)
fn is_complete(dir: &Path) -> bool {
    FILES
        .iter()
        .all(|(name, bytes)| std::fs::read(dir.join(name)).is_ok_and(|on_disk| on_disk == *bytes))
}

fn write_files(dir: &Path) -> Result<()> {
    for (name, bytes) in FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_follows_xdg() {
        let root = |xdg, home| cache_root(xdg, home).map_err(|e| e.to_string());
        assert_eq!(
            root(Some("/x/cache"), Some("/home/u")).unwrap(),
            Path::new("/x/cache/wisp/sdk")
        );
        assert_eq!(
            root(None, Some("/home/u")).unwrap(),
            Path::new("/home/u/.cache/wisp/sdk")
        );
        // A relative XDG_CACHE_HOME is ignored.
        assert_eq!(
            root(Some("rel"), Some("/home/u")).unwrap(),
            Path::new("/home/u/.cache/wisp/sdk")
        );
        assert!(root(Some(""), None).unwrap_err().contains("--sdk-path"));
        assert!(root(None, Some("")).is_err());
    }

    #[test]
    fn carries_the_whole_sdk() {
        let names: Vec<&str> = FILES.iter().map(|(name, _)| *name).collect();
        for needed in [
            "Cargo.toml",
            "sdk/Cargo.toml",
            "sdk/src/lib.rs",
            "sdk/src/wasi_http_p3.rs",
            "sdk/p3/Cargo.toml",
            "sdk/p3/build.rs",
            "sdk/macros/Cargo.toml",
            "sdk/macros/src/lib.rs",
            "sdk/rules/Cargo.toml",
            "sdk/rules/src/lib.rs",
            "sdk/wit/world.wit",
            "sdk/wit/deps/http.wit",
        ] {
            assert!(names.contains(&needed), "{needed} is not packed: {names:?}");
        }
        assert!(
            ID.starts_with(concat!(env!("CARGO_PKG_VERSION"), "-")),
            "{ID}"
        );
        // The workspace manifest: the SDK's crates, what they inherit.
        let manifest = std::str::from_utf8(FILES[0].1).unwrap();
        for line in [
            "members = [",
            "\"sdk/p3\"",
            "wit-bindgen = ",
            "[workspace.dependencies.wasip3]",
            "[workspace.dependencies.wisp-sdk-macros]\npath = \"sdk/macros\"",
            "[workspace.lints.rust]",
            "[workspace.package]",
        ] {
            assert!(manifest.contains(line), "{line} not in\n{manifest}");
        }
        // Nothing of the host.
        assert!(!manifest.contains("wasmtime"), "{manifest}");
    }

    #[test]
    fn writes_once_reuses_and_repairs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("wisp/sdk");
        let dir = ensure(&root).unwrap();
        assert_eq!(dir, root.join(ID));
        let lib = dir.join("sdk/src/lib.rs");
        assert!(std::fs::read_to_string(&lib).unwrap().contains("wisp_p3"));
        // Nothing else is left in the cache: no temporary directory.
        let entries: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
        assert_eq!(entries.len(), 1);

        // A complete copy is reused as it is (a build's target/ stays).
        std::fs::create_dir(dir.join("target")).unwrap();
        assert_eq!(ensure(&root).unwrap(), dir);
        assert!(dir.join("target").is_dir());

        // A damaged one is replaced whole.
        std::fs::write(&lib, "damaged").unwrap();
        std::fs::remove_file(dir.join("sdk/wit/world.wit")).unwrap();
        assert_eq!(ensure(&root).unwrap(), dir);
        assert!(is_complete(&dir));
        assert!(!dir.join("target").exists());
        let entries: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
    }

    #[test]
    fn copies_written_at_once_end_as_one() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| ensure(&root))).collect();
            for h in handles {
                assert_eq!(h.join().unwrap().unwrap(), root.join(ID));
            }
        });
        assert!(is_complete(&root.join(ID)));
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1);
    }
}
