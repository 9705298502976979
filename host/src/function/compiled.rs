//! Compiled code: files beside the store, and the tree of their checksums.
//!
//! Compiled code lives beside the database, one file per artifact and
//! engine: `compiled/<sha256>-<engine-key>.cwasm` (wasmtime's serialized
//! code), so a restart with the same engine settings never recompiles. The
//! name only says which artifact and engine a file is for; what makes it
//! runnable is its checksum in the tree `compiled_sums`
//! (`<sha256>-<engine-key>` → the sha256 of the file's contents, recorded
//! when the store wrote the file). Machine code is run as it is, so a file
//! is handed out only if its contents match that checksum
//! ([`Compiled::code`]): a file the disk damaged, or one planted in
//! `compiled/` (under the right name, or a copy of another artifact's
//! code), is never run; it is removed and the artifact compiled again.
//!
//! The engine maps these files into memory instead of copying them: code
//! pages are shared with the kernel's page cache and loaded as they are
//! touched, and the store's cache does not hold a copy. A file is written
//! whole under a temporary name, synced and renamed into place, never
//! changed in place (a mapped file must not change), and removed with the
//! last version that uses its artifact. Compiled code can always be rebuilt
//! from the artifact, so it is not part of a deploy's transaction: it is
//! written (and synced), then its checksum recorded, before the
//! transaction, whose flush makes the checksum durable with it; a file a
//! crash left without an artifact is removed when the store opens.
//!
//! `compiled/` is 0700 and its files 0600, set at open (see the `datadir`
//! module). Everything here blocks (file I/O): call it off serving threads.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::records::Records;
use crate::store::{Durability, Store, StoreError, Tree};

const COMPILED_SUFFIX: &str = ".cwasm";
const TEMP_SUFFIX: &str = ".tmp";

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The name of an artifact's compiled code for an engine, without its
/// suffix: `<sha256>-<engine-key>` (both hex, checked, so a name never
/// leaves the directory). Also the key of its checksum in `compiled_sums`.
fn compiled_stem(sha256: &str, engine_key: &str) -> Result<String, StoreError> {
    if !is_hex(sha256) || !is_hex(engine_key) {
        return Err(StoreError::Corrupt {
            key: format!("{sha256}-{engine_key}"),
            reason: "an artifact hash and engine key are hex".into(),
        });
    }
    Ok(format!("{sha256}-{engine_key}"))
}

/// The artifact hash and engine key in a compiled-code file name, or in a
/// key of `compiled_sums` (no suffix).
fn parse_compiled_stem(stem: &str) -> Option<(&str, &str)> {
    let (sha, key) = stem.split_once('-')?;
    (is_hex(sha) && is_hex(key)).then_some((sha, key))
}

/// The artifact hash and engine key in a compiled-code file name. Names of
/// earlier versions (`<sha256>-<engine-key>-<checksum>.cwasm`) are not
/// parsed: those files are removed on open.
fn parse_compiled_name(name: &str) -> Option<(&str, &str)> {
    parse_compiled_stem(name.strip_suffix(COMPILED_SUFFIX)?)
}

/// The sha256 of a compiled-code file's contents, read from the open file.
fn file_digest(file: &std::fs::File) -> std::io::Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut reader = std::io::BufReader::with_capacity(64 << 10, file);
    loop {
        let chunk = std::io::BufRead::fill_buf(&mut reader)?;
        if chunk.is_empty() {
            break;
        }
        hasher.update(chunk);
        let n = chunk.len();
        std::io::BufRead::consume(&mut reader, n);
    }
    Ok(hasher.finalize().into())
}

/// Compiled code the store verified: the open file whose contents matched
/// the checksum recorded when the store wrote it. Load it through
/// [`CodeFile::path`] while this value lives, so that what is mapped is the
/// file that was checked even if its name is replaced meanwhile.
#[derive(Debug)]
pub struct CodeFile {
    file: std::fs::File,
    name: PathBuf,
}

impl CodeFile {
    /// A path that opens this very file: on Linux, the open descriptor's
    /// (`/proc/self/fd/N`, which a rename over the name does not change);
    /// elsewhere, or without `/proc`, its name in `compiled/`.
    pub fn path(&self) -> PathBuf {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            let fd = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
            if fd.exists() {
                return fd;
            }
        }
        self.name.clone()
    }

    /// The file's name in the data directory (for messages).
    pub fn name(&self) -> &Path {
        &self.name
    }
}

/// The compiled-code files and their checksums; cheap to clone.
#[derive(Clone)]
pub(crate) struct Compiled {
    store: Store,
    /// Where compiled code is kept (see the module docs).
    dir: Arc<PathBuf>,
    /// The checksum of each compiled-code file, written by the store.
    sums: Tree<String, Vec<u8>>,
    /// Whether an artifact is stored (its code is kept while it is).
    records: Records,
}

impl Compiled {
    /// Opens `data_dir/compiled` (created private) and its checksums, and
    /// tidies them (see [`Compiled::tidy`]).
    pub fn open(store: &Store, data_dir: &Path, records: &Records) -> Result<Compiled, StoreError> {
        let dir = data_dir.join("compiled");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(crate::datadir::DIR_MODE)
            .create(&dir)?;
        let changed = crate::datadir::make_private(&dir)?;
        if changed > 0 {
            tracing::info!(
                dir = %dir.display(),
                entries = changed,
                "made the compiled code private (files 0600, directories 0700)"
            );
        }
        let compiled = Compiled {
            store: store.clone(),
            dir: Arc::new(dir),
            sums: store.tree("compiled_sums")?,
            records: records.clone(),
        };
        compiled.tidy()?;
        Ok(compiled)
    }

    /// Removes the checksums `stems` (files gone or refused). Blocking.
    fn forget_sums(&self, stems: Vec<String>) -> Result<(), StoreError> {
        if stems.is_empty() {
            return Ok(());
        }
        let sums = self.sums.clone();
        self.store.write_blocking(Durability::Committed, move |w| {
            let mut batch = sums.batch();
            for stem in &stems {
                batch.remove(stem);
            }
            sums.apply(w, batch)
        })?
    }

    /// An artifact's compiled code for an engine, verified: its file is
    /// opened (not through a symbolic link) and its contents must match the
    /// checksum the store recorded when it wrote it. A file without a record
    /// (not written by this store, or a crash before its checksum was
    /// recorded) or with other contents (damaged, replaced) is never handed
    /// out: it is removed, with a warning, and `None` tells the caller to
    /// compile the artifact again, as when there is no file. The file is
    /// never changed in place (see the module docs), so it can be mapped for
    /// as long as it is used.
    pub fn code(&self, sha256: &str, engine_key: &str) -> Result<Option<CodeFile>, StoreError> {
        let stem = compiled_stem(sha256, engine_key)?;
        let path = self.dir.join(format!("{stem}{COMPILED_SUFFIX}"));
        let recorded = self.sums.get(&stem)?;
        let file = match crate::datadir::open_no_follow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if recorded.is_some() {
                    self.forget_sums(vec![stem])?;
                }
                return Ok(None);
            }
            Err(_) if crate::datadir::is_symlink(&path) => {
                self.discard(stem, &path, "is a symbolic link");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let problem = match recorded {
            None => Some("has no checksum in the store (the store did not write it)"),
            Some(_) if !file.metadata()?.is_file() => Some("is not a regular file"),
            Some(sum) if file_digest(&file)?[..] != sum[..] => {
                Some("does not match its checksum in the store (damaged or replaced)")
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            self.discard(stem, &path, problem);
            return Ok(None);
        }
        Ok(Some(CodeFile { file, name: path }))
    }

    /// Removes a compiled-code file that failed its check, and its record.
    fn discard(&self, stem: String, path: &Path, problem: &str) {
        tracing::warn!(
            file = %path.display(),
            "compiled code {problem}: not run; removed, the artifact is compiled again"
        );
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %path.display(), error = %e, "removing compiled code failed");
        }
        if let Err(e) = self.forget_sums(vec![stem]) {
            tracing::warn!(error = %e, "removing the checksum of compiled code failed");
        }
    }

    /// Writes an artifact's compiled code for an engine, durably (synced,
    /// with its directory entry), replacing any earlier file of it whole
    /// (a version still running on the earlier one keeps its mapping), then
    /// records its checksum; returns the file. Called before the deploy's
    /// transaction, whose flush makes the checksum durable too, or to
    /// rebuild compiled code (another engine version, a file that failed
    /// its check).
    pub fn put(
        &self,
        sha256: &str,
        engine_key: &str,
        bytes: &[u8],
    ) -> Result<CodeFile, StoreError> {
        use sha2::{Digest, Sha256};
        use std::io::Write as _;
        let stem = compiled_stem(sha256, engine_key)?;
        let name = format!("{stem}{COMPILED_SUFFIX}");
        let path = self.dir.join(&name);
        let temp = self.dir.join(format!(
            "{name}.{:016x}{TEMP_SUFFIX}",
            rand::random::<u64>()
        ));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(crate::datadir::FILE_MODE)
                .open(&temp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&temp, &path)?;
            std::fs::File::open(&*self.dir)?.sync_all()?;
            Ok::<_, std::io::Error>(f)
        })();
        let file = match written {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e.into());
            }
        };
        // Recorded last: a file is runnable only once it is whole and synced.
        let sum = Sha256::digest(bytes).to_vec();
        let sums = self.sums.clone();
        self.store
            .write_blocking(Durability::Committed, move |w| sums.insert(w, &stem, &sum))??;
        Ok(CodeFile { file, name: path })
    }

    /// Removes an artifact's compiled code unless the artifact is stored
    /// (a deploy whose transaction failed after its code was written).
    pub fn forget(&self, sha256: &str) -> Result<(), StoreError> {
        if !self.records.has_artifact(sha256)? {
            self.remove(false, |sha, _| sha == sha256)?;
        }
        Ok(())
    }

    /// Removes the compiled-code files, and their checksums, for which
    /// `gone(sha256, engine_key)` holds, and with `temporaries` the
    /// half-written files and files of names this store does not write
    /// (only on open: a deploy may be writing one). Returns how many files
    /// went.
    fn remove(
        &self,
        temporaries: bool,
        gone: impl Fn(&str, &str) -> bool,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&*self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let drop = if name.ends_with(TEMP_SUFFIX) {
                temporaries
            } else if let Some((sha, key)) = parse_compiled_name(name) {
                gone(sha, key)
            } else {
                // Not a name this store writes (an earlier version's): only
                // on open.
                temporaries && name.ends_with(COMPILED_SUFFIX)
            };
            if drop {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let mut stems = Vec::new();
        for stem in self.sums.scan().keys() {
            let stem = stem?;
            if parse_compiled_stem(&stem).is_none_or(|(sha, engine)| gone(sha, engine)) {
                stems.push(stem);
            }
        }
        self.forget_sums(stems)?;
        Ok(removed)
    }

    /// On open: removes compiled code whose artifact is not stored (a crash
    /// between writing it and the deploy's transaction, or during a
    /// delete), half-written files, files an earlier version named
    /// otherwise (they had no checksum in the store: rebuilt from the
    /// artifacts once) and checksums whose file is gone; drops the tree
    /// where earlier versions kept compiled code.
    fn tidy(&self) -> Result<(), StoreError> {
        let records = &self.records;
        let removed = self.remove(true, |sha, _| !records.has_artifact(sha).unwrap_or(true))?;
        if removed > 0 {
            tracing::info!(
                files = removed,
                "removed compiled code no stored artifact uses, half-written, or of an earlier \
                 version of Wisp"
            );
        }
        let mut stems = Vec::new();
        for stem in self.sums.scan().keys() {
            let stem = stem?;
            if !self.dir.join(format!("{stem}{COMPILED_SUFFIX}")).exists() {
                stems.push(stem);
            }
        }
        self.forget_sums(stems)?;
        if self.store.has_tree("compiled") {
            self.store.drop_tree("compiled")?;
        }
        Ok(())
    }

    /// Removes compiled code made by other engine builds (an earlier Wisp
    /// or other engine settings): it is rebuilt for this engine when a
    /// version is loaded, so the old files would only take disk space.
    pub fn drop_other_engines(&self, engine_keys: &[&str]) -> Result<(), StoreError> {
        let removed = self.remove(false, |_, key| !engine_keys.contains(&key))?;
        if removed > 0 {
            tracing::info!(
                files = removed,
                "removed compiled code of other engine builds"
            );
        }
        Ok(())
    }

    /// Removes the compiled code of artifacts a flushed deletion freed (a
    /// crash before this leaves files without an artifact, which the next
    /// open removes).
    pub fn drop_freed(&self, freed: &[String]) -> Result<(), StoreError> {
        if !freed.is_empty() {
            self.remove(false, |sha, _| freed.iter().any(|f| f == sha))?;
        }
        Ok(())
    }

    /// Whether no checksum is recorded (tests).
    #[cfg(test)]
    pub fn sums_are_empty(&self) -> bool {
        self.sums.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::function::records::tests::put;

    fn open(dir: &Path) -> (Store, Records, Compiled) {
        let store = Store::open(dir, 1 << 20).unwrap();
        let records = Records::open(&store).unwrap();
        let compiled = Compiled::open(&store, dir, &records).unwrap();
        (store, records, compiled)
    }

    /// The contents of an artifact's verified compiled code, if any.
    fn code(compiled: &Compiled, sha: &str, key: &str) -> Option<Vec<u8>> {
        let code = compiled.code(sha, key).unwrap()?;
        Some(std::fs::read(code.path()).unwrap())
    }

    #[test]
    fn compiled_code_without_its_artifact_is_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, records, compiled) = open(dir.path());
            compiled.put("a1", "e", b"kept").unwrap();
            put(&records, "a", &[(1, "a1")], b"one");
            // A crash after the code was written, before the transaction;
            // and one in the middle of writing a file.
            compiled.put("b2", "e", b"orphan").unwrap();
            std::fs::write(dir.path().join("compiled/b3-e.cwasm.0123.tmp"), b"half").unwrap();
            // A failed deploy forgets its code; a stored artifact keeps it.
            compiled.put("c4", "e", b"failed").unwrap();
            compiled.forget("c4").unwrap();
            assert!(compiled.code("c4", "e").unwrap().is_none());
            compiled.forget("a1").unwrap();
            assert!(compiled.code("a1", "e").unwrap().is_some());
            // Another engine build's code goes when this engine asks.
            compiled.put("a1", "f0", b"older engine").unwrap();
            compiled.drop_other_engines(&["e"]).unwrap();
            assert!(compiled.code("a1", "f0").unwrap().is_none());
            assert!(compiled.code("a1", "e").unwrap().is_some());
            // A file an earlier version named with its checksum.
            std::fs::write(dir.path().join("compiled/a1-e-0123abcd.cwasm"), b"old").unwrap();
            store.flush_blocking().unwrap();
        }
        let (_store, _records, compiled) = open(dir.path());
        let mut left: Vec<_> = std::fs::read_dir(dir.path().join("compiled"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a1-e.cwasm"]);
        assert_eq!(code(&compiled, "a1", "e").unwrap(), b"kept");
        let sums: Vec<_> = compiled.sums.scan().keys().map(|k| k.unwrap()).collect();
        assert_eq!(sums, ["a1-e"], "only the kept file's checksum");
    }

    #[test]
    fn damaged_compiled_code_is_not_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, _records, compiled) = open(dir.path());
        let path = compiled.put("a1", "e", b"compiled code").unwrap();
        let path = path.name().to_path_buf();
        assert_eq!(code(&compiled, "a1", "e").unwrap(), b"compiled code");
        // Rewritten with other contents: the same name, the new contents.
        let path2 = compiled.put("a1", "e", b"compiled again").unwrap();
        assert_eq!(path2.name(), path);
        assert_eq!(code(&compiled, "a1", "e").unwrap(), b"compiled again");
        // The disk flips a byte: the file no longer matches its checksum.
        std::fs::write(&path, b"compiled agaiN").unwrap();
        assert_eq!(code(&compiled, "a1", "e"), None);
        assert!(!path.exists(), "a damaged file is removed");
        assert!(compiled.sums_are_empty(), "and its checksum");
    }

    /// A file the store did not write is never handed out, whatever its
    /// name says: planted under the right name, copied from another
    /// artifact's code, or a symbolic link to it.
    #[test]
    fn planted_compiled_code_is_not_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, _records, compiled) = open(dir.path());
        let mine = dir.path().join("compiled").join("a1-e.cwasm");
        // No record at all: a file under the name a1's code would have.
        std::fs::write(&mine, b"planted").unwrap();
        assert_eq!(code(&compiled, "a1", "e"), None);
        assert!(!mine.exists());
        // Not a file at all (opening a FIFO must not wait for a writer).
        compiled.put("a1", "e", b"a1's code").unwrap();
        std::fs::remove_file(&mine).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&mine)
            .status()
            .unwrap();
        assert!(made.success());
        assert_eq!(code(&compiled, "a1", "e"), None);
        assert!(std::fs::symlink_metadata(&mine).is_err(), "removed");
        // Another artifact's genuine code copied over a1's.
        let other = compiled.put("b2", "e", b"b2's code").unwrap();
        compiled.put("a1", "e", b"a1's code").unwrap();
        std::fs::copy(other.name(), &mine).unwrap();
        assert_eq!(code(&compiled, "a1", "e"), None);
        assert!(!mine.exists());
        assert_eq!(code(&compiled, "b2", "e").unwrap(), b"b2's code");
        // A symbolic link to the other's code.
        compiled.put("a1", "e", b"a1's code").unwrap();
        std::fs::remove_file(&mine).unwrap();
        std::os::unix::fs::symlink(other.name(), &mine).unwrap();
        assert_eq!(code(&compiled, "a1", "e"), None);
        assert!(
            std::fs::symlink_metadata(&mine).is_err(),
            "the link is removed"
        );
        assert_eq!(code(&compiled, "b2", "e").unwrap(), b"b2's code");
        // Written again by the store: handed out again.
        compiled.put("a1", "e", b"a1's code").unwrap();
        assert_eq!(code(&compiled, "a1", "e").unwrap(), b"a1's code");
    }

    /// A data directory of an earlier version: files, no checksums. They
    /// are not run; each is compiled again once.
    #[test]
    fn compiled_code_without_a_checksum_is_compiled_again_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, records, compiled) = open(dir.path());
            compiled.put("a1", "e", b"code").unwrap();
            put(&records, "a", &[(1, "a1")], b"one");
            store.drop_tree("compiled_sums").unwrap();
            store.flush_blocking().unwrap();
        }
        let (store, records, compiled) = open(dir.path());
        assert!(dir.path().join("compiled/a1-e.cwasm").exists());
        assert_eq!(code(&compiled, "a1", "e"), None);
        compiled.put("a1", "e", b"code").unwrap();
        store.flush_blocking().unwrap();
        drop((store, records, compiled));
        let (_store, _records, compiled) = open(dir.path());
        assert_eq!(code(&compiled, "a1", "e").unwrap(), b"code");
    }

    /// What is mapped is the file that was checked, even if its name is
    /// replaced between the check and the load.
    #[cfg(target_os = "linux")]
    #[test]
    fn verified_code_is_loaded_through_its_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, _records, compiled) = open(dir.path());
        compiled.put("a1", "e", b"checked").unwrap();
        let verified = compiled.code("a1", "e").unwrap().unwrap();
        let swapped = dir.path().join("swapped");
        std::fs::write(&swapped, b"swapped in").unwrap();
        std::fs::rename(&swapped, verified.name()).unwrap();
        assert!(verified.path().starts_with("/proc/self/fd"));
        assert_eq!(std::fs::read(verified.path()).unwrap(), b"checked");
    }

    #[test]
    fn the_store_is_private_whatever_it_was() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, records, compiled) = open(dir.path());
            compiled.put("a1", "e", b"code").unwrap();
            put(&records, "a", &[(1, "a1")], b"one");
            store.flush_blocking().unwrap();
        }
        // Loosened by someone (or made under a permissive umask).
        let mut all = Vec::new();
        let mut pending = vec![dir.path().join("db"), dir.path().join("compiled")];
        while let Some(p) = pending.pop() {
            let loose = if p.is_dir() {
                pending.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                0o777
            } else {
                0o666
            };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(loose)).unwrap();
            all.push(p);
        }
        assert!(all.len() >= 4, "{all:?}");
        let _open = open(dir.path());
        assert!(dir.path().join("compiled/a1-e.cwasm").exists());
        for p in all.iter().filter(|p| p.exists()) {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            let want = if p.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "{}", p.display());
        }
    }

    #[test]
    fn compiled_code_names_stay_in_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, _records, compiled) = open(dir.path());
        for (sha, key) in [("../x", "e"), ("a1", "e/../../y"), ("", "e"), ("a1", "")] {
            assert!(compiled.put(sha, key, b"x").is_err(), "{sha:?} {key:?}");
            assert!(compiled.code(sha, key).is_err());
        }
    }
}
