//! The embedded store: the only module that knows sled.
//!
//! Trees:
//! - `artifacts`: sha256 (hex) → the uploaded wasm bytes, deduplicated.
//! - `refs`: sha256 → how many function versions use the artifact; an
//!   artifact and its compiled code go when the count reaches zero. Written
//!   in the same transactions as `artifacts`, so a key here means the
//!   artifact is stored: existence checks read this tree, since a sled read
//!   of an artifact loads its whole value into sled's cache.
//! - `functions`: name → [`FunctionRecord`] (JSON).
//! - `logs`: `name \0 seq` → a function's log lines (see the logs section).
//! - `kv`, `kv_usage`: key-value entries per function and the bytes they
//!   take; `config`, `secrets`: settings and secrets per function (see the
//!   kv, config and secrets section).
//! - `ev_*`: events, subscriptions, deliveries and their indexes (see the
//!   events section).
//! - `compiled_sums`: `<sha256>-<engine-key>` → the sha256 of that compiled
//!   code file's contents, recorded when the store wrote the file (see
//!   below).
//!
//! Writes that belong together (a deploy, a delete) happen in one sled
//! transaction, and every write a client is told about is flushed first
//! ([`Store::flush`]), so an acknowledged deploy survives `kill -9`.
//!
//! Compiled code lives beside the database, one file per artifact and
//! engine: `compiled/<sha256>-<engine-key>.cwasm` (wasmtime's serialized
//! code), so a restart with the same engine settings never recompiles. The
//! name only says which artifact and engine a file is for; what makes it
//! runnable is its checksum in `compiled_sums`. Machine code is run as it
//! is, so a file is handed out only if its contents match the checksum the
//! store recorded when it wrote them ([`Store::compiled_code`]): a file the
//! disk damaged, or one planted in `compiled/` (under the right name, or a
//! copy of another artifact's code), is never run; it is removed and the
//! artifact compiled again. The engine maps these files into memory instead
//! of copying them: code pages are shared with the kernel's page cache and
//! loaded as they are touched, and sled's cache does not hold a copy. A
//! file is written whole under a temporary name, synced and renamed into
//! place, never changed in place (a mapped file must not change), and
//! removed with the last version that uses its artifact. Compiled code can
//! always be rebuilt from the artifact, so it is not part of a deploy's
//! transaction: it is written (and synced), then its checksum recorded,
//! before the transaction, whose flush makes the checksum durable with it;
//! a file a crash left without an artifact is removed when the store opens.
//!
//! Everything the store writes is private to its user: `db/` and
//! `compiled/` are 0700 and their files 0600, set at open (see the
//! `datadir` module for what the umask still decides).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Transactional};

use crate::capabilities::logs::LogEntry;
use crate::config::Limits;
use crate::events::{
    DeliveryRecord, DeliveryStatus, EventRecord, JobRecord, Outcome, Schedule, Subscription,
    due_key,
};

/// Store failures. Callers answer 500 for these; the details go to the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// Reading or writing a compiled-code file failed.
    #[error("store: {0}")]
    Io(#[from] std::io::Error),
    /// A batched write (of many requests at once) failed; the cause is in
    /// the host's log, once.
    #[error("store: {0}")]
    Batch(String),
    /// A record could not be decoded.
    #[error("store: corrupt record {key:?}: {reason}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// Why decoding failed.
        reason: String,
    },
}

/// One immutable version of a function: the artifact plus the configuration
/// it was deployed with. Rolling back restores both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// 1, 2, 3…: never reused within a function.
    pub version: u64,
    /// sha256 of the artifact, hex.
    pub sha256: String,
    /// Artifact size in bytes.
    pub size_bytes: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Routes, as given (`/x`, `/api/*`).
    pub routes: Vec<String>,
    /// Environment variables the guest sees.
    pub env: BTreeMap<String, String>,
    /// Effective limits.
    pub limits: Limits,
    /// Outbound HTTP allow-list entries, as given (validated at deploy).
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    /// Whether the function's plain settings (not its secrets) are also
    /// environment variables of the guest.
    #[serde(default)]
    pub config_env: bool,
    /// For a preview-1 module: the read-only directory granted to it,
    /// relative to `<data-dir>/static/` (checked at deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_dir: Option<String>,
}

/// A function: its versions and which one is active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// Validated name.
    pub name: String,
    /// The version serving requests.
    pub active_version: u64,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
    /// Last change (deploy, rollback), ms since the epoch.
    pub updated_at_ms: u64,
    /// Every version, oldest first.
    pub versions: Vec<VersionRecord>,
}

impl FunctionRecord {
    /// The active version's record.
    pub fn active(&self) -> &VersionRecord {
        self.version(self.active_version)
            .expect("the active version is always among the versions")
    }

    /// A version by number.
    pub fn version(&self, version: u64) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The number the next version gets.
    pub fn next_version(&self) -> u64 {
        self.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1
    }
}

/// What a deploy writes, all or nothing.
pub struct NewVersion<'a> {
    /// The function record after the deploy (with the new version active).
    pub record: &'a FunctionRecord,
    /// The artifact's hash and bytes (stored if not already there).
    pub sha256: &'a str,
    /// The artifact bytes.
    pub artifact: &'a [u8],
}

/// The store handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    artifacts: sled::Tree,
    /// Where compiled code is kept (see the module docs).
    compiled_dir: Arc<PathBuf>,
    /// The checksum of each compiled-code file, written by the store.
    compiled_sums: sled::Tree,
    refs: sled::Tree,
    functions: sled::Tree,
    /// The event plane's trees (see the events section).
    ev: EventTrees,
    /// Keeps flushes and sled's exclusive operations apart (see [`Gate`]).
    gate: Gate,
    /// The one thread that flushes (group commit, see [`Flusher`]).
    flusher: Arc<FlusherHandle>,
}

/// sled 0.34's `flush` holds sled's global lock shared while it waits for
/// the log to reach the disk. A transaction or batch asking for that lock
/// exclusively meanwhile makes every later reader queue behind it, and one
/// of those readers is what the flush is waiting for: a deadlock (seen with
/// concurrent publishes, deliveries and kv writes; cf. sled issues #1308
/// and #1412). So a flush and an exclusive operation never overlap: the
/// flusher holds this gate shared, transactions and batches exclusively.
/// Both are short (a flush ~1.3 ms here, a transaction microseconds).
#[derive(Clone, Default)]
struct Gate(Arc<RwLock<()>>);

impl Gate {
    fn flush(&self) -> RwLockReadGuard<'_, ()> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Group commit: writers that need their writes on disk take a ticket and
/// wait; one thread flushes everything written up to the newest ticket and
/// wakes them all. Under load one sled flush (~760/s here) acknowledges a
/// whole batch of writes, and flushes never run concurrently (which sled
/// 0.34 handles badly).
struct Flusher {
    /// Tickets handed out, and whether the store is gone.
    state: Mutex<FlushState>,
    wake: Condvar,
    /// (flushed up to ticket, failed up to ticket), for the waiters.
    done: tokio::sync::watch::Sender<(u64, u64)>,
}

#[derive(Default)]
struct FlushState {
    requested: u64,
    stop: bool,
}

/// Stops the flusher thread when the last clone of the store goes, and
/// waits for it (it holds the database open).
struct FlusherHandle(Arc<Flusher>, Option<std::thread::JoinHandle<()>>);

impl Drop for FlusherHandle {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        self.0.wake.notify_one();
        if let Some(thread) = self.1.take() {
            let _ = thread.join();
        }
    }
}

impl Flusher {
    fn start(db: sled::Db, gate: Gate) -> std::io::Result<FlusherHandle> {
        let flusher = Arc::new(Flusher {
            state: Mutex::new(FlushState::default()),
            wake: Condvar::new(),
            done: tokio::sync::watch::channel((0, 0)).0,
        });
        let f = flusher.clone();
        let thread = std::thread::Builder::new()
            .name("wisp-flusher".into())
            .spawn(move || f.run(&db, &gate))?;
        Ok(FlusherHandle(flusher, Some(thread)))
    }

    fn run(&self, db: &sled::Db, gate: &Gate) {
        let mut flushed = 0;
        loop {
            let target = {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                while s.requested == flushed && !s.stop {
                    s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
                }
                if s.requested == flushed {
                    return; // stopped, nobody waiting
                }
                s.requested
            };
            // Every ticket up to `target` was taken after its writes.
            let result = {
                let _shared = gate.flush();
                db.flush()
            };
            flushed = target;
            match result {
                Ok(_) => self.done.send_modify(|d| d.0 = target),
                Err(e) => {
                    tracing::error!(error = %e, "flushing the store failed");
                    self.done.send_modify(|d| d.1 = target);
                }
            }
        }
    }
}

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

const COMPILED_SUFFIX: &str = ".cwasm";
const TEMP_SUFFIX: &str = ".tmp";

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialize")
}

fn abort_on<E>(e: TransactionError<E>) -> StoreError
where
    E: Into<StoreError>,
{
    match e {
        TransactionError::Abort(e) => e.into(),
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, with sled's page cache bounded
    /// to `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let compiled_dir = dir.join("compiled");
        let db_dir = dir.join("db");
        for d in [&compiled_dir, &db_dir] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(crate::datadir::DIR_MODE)
                .create(d)?;
        }
        let db = sled::Config::new()
            .path(&db_dir)
            .cache_capacity(cache_bytes)
            // Durability comes from explicit flushes before acknowledging a
            // write; the periodic background flush only bounds the loss of
            // unacknowledged data and is kept at sled's default.
            .mode(sled::Mode::LowSpace)
            .open()?;
        // sled creates its files with the process umask's mode (a library
        // cannot change that): set them, and whatever an earlier start or
        // version left looser, to 0600 and 0700 now.
        let changed =
            crate::datadir::make_private(&db_dir)? + crate::datadir::make_private(&compiled_dir)?;
        if changed > 0 {
            tracing::info!(
                dir = %dir.display(),
                entries = changed,
                "made the store's files private (files 0600, directories 0700)"
            );
        }
        let store = Self::from_db(db, compiled_dir)?;
        store.tidy_compiled()?;
        Ok(store)
    }

    fn from_db(db: sled::Db, compiled_dir: PathBuf) -> Result<Store, StoreError> {
        let gate = Gate::default();
        let flusher = Flusher::start(db.clone(), gate.clone())
            .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        Ok(Store {
            gate,
            flusher: Arc::new(flusher),
            artifacts: db.open_tree("artifacts")?,
            compiled_dir: Arc::new(compiled_dir),
            compiled_sums: db.open_tree("compiled_sums")?,
            refs: db.open_tree("refs")?,
            functions: db.open_tree("functions")?,
            ev: EventTrees::open(&db)?,
            db,
        })
    }

    /// Flushes everything this task wrote so far to disk (group commit:
    /// concurrent callers share one flush). Called before answering a client
    /// that a write succeeded.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let f = &self.flusher.0;
        let mut done = f.done.subscribe();
        let ticket = {
            let mut s = f.state.lock().unwrap_or_else(|e| e.into_inner());
            s.requested += 1;
            s.requested
        };
        f.wake.notify_one();
        let (ok, _) = done
            .wait_for(|(ok, failed)| *ok >= ticket || *failed >= ticket)
            .await
            .map(|d| *d)
            .unwrap_or((0, 0));
        if ok >= ticket {
            Ok(())
        } else {
            Err(StoreError::Sled(sled::Error::ReportableBug(
                "flushing the store failed (see the host log)".into(),
            )))
        }
    }

    /// Flushes synchronously (shutdown).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let _shared = self.gate.flush();
        self.db.flush()?;
        Ok(())
    }

    /// A function record.
    pub fn function(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        match self.functions.get(name.as_bytes())? {
            Some(bytes) => Ok(Some(decode(name.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every function record, by name.
    pub fn functions(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        self.functions
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// An artifact's bytes.
    pub fn artifact(&self, sha256: &str) -> Result<Option<IVec>, StoreError> {
        Ok(self.artifacts.get(sha256.as_bytes())?)
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
    pub fn compiled_code(
        &self,
        sha256: &str,
        engine_key: &str,
    ) -> Result<Option<CodeFile>, StoreError> {
        let stem = compiled_stem(sha256, engine_key)?;
        let path = self.compiled_dir.join(format!("{stem}{COMPILED_SUFFIX}"));
        let recorded = self.compiled_sums.get(stem.as_bytes())?;
        let file = match crate::datadir::open_no_follow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if recorded.is_some() {
                    self.compiled_sums.remove(stem.as_bytes())?;
                }
                return Ok(None);
            }
            Err(_) if crate::datadir::is_symlink(&path) => {
                self.discard_compiled(&stem, &path, "is a symbolic link");
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
            self.discard_compiled(&stem, &path, problem);
            return Ok(None);
        }
        Ok(Some(CodeFile { file, name: path }))
    }

    /// Removes a compiled-code file that failed its check, and its record.
    fn discard_compiled(&self, stem: &str, path: &Path, problem: &str) {
        tracing::warn!(
            file = %path.display(),
            "compiled code {problem}: not run; removed, the artifact is compiled again"
        );
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %path.display(), error = %e, "removing compiled code failed");
        }
        if let Err(e) = self.compiled_sums.remove(stem.as_bytes()) {
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
    pub fn put_compiled(
        &self,
        sha256: &str,
        engine_key: &str,
        bytes: &[u8],
    ) -> Result<CodeFile, StoreError> {
        use sha2::{Digest, Sha256};
        use std::io::Write as _;
        let stem = compiled_stem(sha256, engine_key)?;
        let name = format!("{stem}{COMPILED_SUFFIX}");
        let path = self.compiled_dir.join(&name);
        let temp = self.compiled_dir.join(format!(
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
            std::fs::File::open(&*self.compiled_dir)?.sync_all()?;
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
        let sum: [u8; 32] = Sha256::digest(bytes).into();
        self.compiled_sums.insert(stem.as_bytes(), &sum[..])?;
        Ok(CodeFile { file, name: path })
    }

    /// Removes an artifact's compiled code unless the artifact is stored
    /// (a deploy whose transaction failed after its code was written).
    pub fn forget_compiled(&self, sha256: &str) -> Result<(), StoreError> {
        if !self.has_artifact(sha256)? {
            self.remove_compiled(false, |sha, _| sha == sha256)?;
        }
        Ok(())
    }

    /// Removes the compiled-code files, and their checksums, for which
    /// `gone(sha256, engine_key)` holds, and with `temporaries` the
    /// half-written files and files of names this store does not write
    /// (only on open: a deploy may be writing one). Returns how many files
    /// went.
    fn remove_compiled(
        &self,
        temporaries: bool,
        gone: impl Fn(&str, &str) -> bool,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&*self.compiled_dir)? {
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
        for key in self.compiled_sums.iter().keys() {
            let key = key?;
            let drop = std::str::from_utf8(&key)
                .ok()
                .and_then(parse_compiled_stem)
                .is_none_or(|(sha, engine)| gone(sha, engine));
            if drop {
                self.compiled_sums.remove(&key)?;
            }
        }
        Ok(removed)
    }

    /// On open: removes compiled code whose artifact is not stored (a crash
    /// between writing it and the deploy's transaction, or during a
    /// delete), half-written files, files an earlier version named
    /// otherwise (they had no checksum in the store: rebuilt from the
    /// artifacts once) and checksums whose file is gone; drops the tree
    /// where earlier versions kept compiled code.
    fn tidy_compiled(&self) -> Result<(), StoreError> {
        let removed =
            self.remove_compiled(true, |sha, _| !self.has_artifact(sha).unwrap_or(true))?;
        if removed > 0 {
            tracing::info!(
                files = removed,
                "removed compiled code no stored artifact uses, half-written, or of an earlier \
                 version of Wisp"
            );
        }
        for key in self.compiled_sums.iter().keys() {
            let key = key?;
            let name = format!("{}{COMPILED_SUFFIX}", String::from_utf8_lossy(&key));
            if !self.compiled_dir.join(name).exists() {
                self.compiled_sums.remove(&key)?;
            }
        }
        if self.db.tree_names().iter().any(|n| &n[..] == b"compiled") {
            self.db.drop_tree("compiled")?;
        }
        Ok(())
    }

    /// Removes compiled code made by other engine builds (an earlier Wisp
    /// or other engine settings): it is rebuilt for this engine when a
    /// version is loaded, so the old files would only take disk space.
    pub fn drop_other_engines(&self, engine_key: &str) -> Result<(), StoreError> {
        let removed = self.remove_compiled(false, |_, key| key != engine_key)?;
        if removed > 0 {
            tracing::info!(
                files = removed,
                "removed compiled code of other engine builds"
            );
        }
        Ok(())
    }

    /// Writes a new version atomically: artifact (if new), compiled code,
    /// the artifact's reference count, and the function record.
    pub fn put_version(&self, new: NewVersion<'_>) -> Result<(), StoreError> {
        let record = encode(new.record);
        let _exclusive = self.gate.exclusive();
        (&self.artifacts, &self.refs, &self.functions)
            .transaction(|(artifacts, refs, functions)| {
                let sha = new.sha256.as_bytes();
                // A count means the artifact is stored (not read: see `refs`).
                let count = refs.get(sha)?.map(|v| read_u64(&v)).unwrap_or(0);
                if count == 0 {
                    artifacts.insert(sha, new.artifact)?;
                }
                refs.insert(sha, &(count + 1).to_be_bytes())?;
                functions.insert(new.record.name.as_bytes(), record.as_slice())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(abort_on)
    }

    /// Replaces a function record whose versions did not change (rollback).
    pub fn update_function(&self, record: &FunctionRecord) -> Result<(), StoreError> {
        self.functions
            .insert(record.name.as_bytes(), encode(record))?;
        Ok(())
    }

    /// Deletes a function and, atomically with it, every artifact no other
    /// version still uses; returns those artifacts' hashes (their compiled
    /// code goes once the deletion is flushed: [`Store::drop_compiled`]),
    /// or `None` if there was no such function.
    pub fn delete_function(&self, name: &str) -> Result<Option<Vec<String>>, StoreError> {
        let Some(record) = self.function(name)? else {
            return Ok(None);
        };
        let mut uses: BTreeMap<&str, u64> = BTreeMap::new();
        for v in &record.versions {
            *uses.entry(v.sha256.as_str()).or_default() += 1;
        }
        let exclusive = self.gate.exclusive();
        let freed = (&self.artifacts, &self.refs, &self.functions)
            .transaction(|(artifacts, refs, functions)| {
                let mut freed = Vec::new();
                for (sha, n) in &uses {
                    let count = refs.get(sha.as_bytes())?.map(|v| read_u64(&v)).unwrap_or(0);
                    let left = count.saturating_sub(*n);
                    if left == 0 {
                        refs.remove(sha.as_bytes())?;
                        artifacts.remove(sha.as_bytes())?;
                        freed.push(sha.to_string());
                    } else {
                        refs.insert(sha.as_bytes(), &left.to_be_bytes())?;
                    }
                }
                functions.remove(name.as_bytes())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(freed)
            })
            .map_err(abort_on)?;
        drop(exclusive);
        Ok(Some(freed))
    }

    /// Removes the compiled code of artifacts a flushed deletion freed (a
    /// crash before this leaves files without an artifact, which the next
    /// open removes).
    pub fn drop_compiled(&self, freed: &[String]) -> Result<(), StoreError> {
        if !freed.is_empty() {
            self.remove_compiled(false, |sha, _| freed.iter().any(|f| f == sha))?;
        }
        Ok(())
    }

    /// Number of stored artifacts (tests, metrics).
    pub fn artifact_count(&self) -> usize {
        self.refs.len()
    }

    /// Whether an artifact is stored, without reading it (see `refs` in the
    /// module docs): at open this runs for every compiled-code file, and
    /// reading the artifacts instead kept all of them in sled's cache.
    fn has_artifact(&self, sha256: &str) -> Result<bool, StoreError> {
        Ok(self.refs.contains_key(sha256.as_bytes())?)
    }
}

// ------------------------------------------------------------------ logs
//
// Tree `logs`: `name \0 seq` (seq big-endian, from sled's monotonic id
// generator, so a function's lines are in write order) -> JSON LogEntry.
// Lines are not flushed one by one: the writer flushes on request (admin
// reads, shutdown) and sled's background flush bounds what a crash loses.

fn log_prefix(function: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(function.len() + 1);
    k.extend_from_slice(function.as_bytes());
    k.push(0);
    k
}

fn log_key(function: &str, seq: u64) -> Vec<u8> {
    let mut k = log_prefix(function);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl Store {
    fn logs(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree("logs")?)
    }

    /// Appends log lines to a function's log (in one batch).
    pub fn append_logs(&self, function: &str, entries: &[LogEntry]) -> Result<(), StoreError> {
        let logs = self.logs()?;
        let mut batch = sled::Batch::default();
        for e in entries {
            let seq = self.db.generate_id()?;
            batch.insert(log_key(function, seq), encode(e));
        }
        let _exclusive = self.gate.exclusive();
        logs.apply_batch(batch)?;
        Ok(())
    }

    /// Number of lines in a function's log.
    pub fn log_count(&self, function: &str) -> u64 {
        self.logs()
            .map(|t| t.scan_prefix(log_prefix(function)).keys().count() as u64)
            .unwrap_or(0)
    }

    /// Removes a function's oldest lines: at least `excess` of them, and
    /// all written before `oldest_kept_ms`. Returns how many were removed.
    pub fn prune_logs(
        &self,
        function: &str,
        excess: u64,
        oldest_kept_ms: u64,
    ) -> Result<u64, StoreError> {
        let logs = self.logs()?;
        let mut removed = 0;
        for item in logs.scan_prefix(log_prefix(function)) {
            let (key, value) = item?;
            if removed >= excess {
                let entry: LogEntry = decode(&key, &value)?;
                if entry.time_ms >= oldest_kept_ms {
                    break;
                }
            }
            logs.remove(key)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Up to `limit` lines of a function's log after `after` (a seq), at or
    /// after `since_ms`, of one invocation if given, oldest first.
    pub fn read_logs(
        &self,
        function: &str,
        after: Option<u64>,
        since_ms: Option<u64>,
        invocation: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let logs = self.logs()?;
        let prefix = log_prefix(function);
        let start = match after {
            Some(seq) => log_key(function, seq.saturating_add(1)),
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for item in logs.range(start..) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let mut entry: LogEntry = decode(&key, &value)?;
            if since_ms.is_some_and(|t| entry.time_ms < t)
                || invocation.is_some_and(|id| entry.invocation_id != id)
            {
                continue;
            }
            entry.seq = read_u64(&key[prefix.len()..]);
            out.push(entry);
        }
        Ok(out)
    }

    /// Removes a function's whole log (the function was deleted).
    pub fn purge_logs(&self, function: &str) -> Result<(), StoreError> {
        let logs = self.logs()?;
        for key in logs.scan_prefix(log_prefix(function)).keys() {
            logs.remove(key?)?;
        }
        Ok(())
    }
}

// ------------------------------------------------- kv, config and secrets
//
// Trees (one namespace per function; function names never contain NUL, so
// `name \0` is an exact prefix):
// - `kv`: `name \0 key` -> 8 bytes expiry (ms since the epoch, big-endian;
//   0: never) followed by the value.
// - `kv_usage`: name -> bytes the function's entries take (u64 BE): key
//   bytes plus value bytes of every stored entry, expired ones included
//   until they are reclaimed. Updated in the same transaction as `kv`, so
//   it is exact under concurrent writers.
// - `config`: `name \0 key` -> a plain setting (UTF-8).
// - `secrets`: `name \0 key` -> a secret (UTF-8). Apart from `config` so
//   that nothing listing settings can read a secret by accident.
//
// What may be written (limits, quota, expiry, CAS) is decided by the
// caller (capabilities::kv, capabilities::settings); this section only
// reads, writes atomically and encodes.

/// A stored key-value entry.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEntry {
    /// The value.
    pub value: IVec,
    /// When it expires, ms since the epoch; `None`: never.
    pub expires_at_ms: Option<u64>,
}

/// What a key-value update writes.
#[derive(Debug, Clone, PartialEq)]
pub enum KvWrite {
    /// Nothing.
    Keep,
    /// The key gets this value and expiry.
    Put {
        /// The value.
        value: Vec<u8>,
        /// Expiry, ms since the epoch.
        expires_at_ms: Option<u64>,
    },
    /// The key goes.
    Remove,
}

/// A key-value update the caller refused (`Rejected`), or a store failure.
#[derive(Debug)]
pub enum KvUpdateError<E> {
    /// The caller's decision function refused the update; nothing written.
    Rejected(E),
    /// The store failed; nothing written.
    Store(StoreError),
}

/// A config item: a plain setting or a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigItem {
    /// Key name.
    pub key: String,
    /// Value.
    pub value: String,
    /// Whether it is a secret (kept in the `secrets` tree).
    pub secret: bool,
}

impl std::fmt::Debug for ConfigItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A secret's value never reaches a log line, even through `{:?}`.
        let value: &dyn std::fmt::Debug = if self.secret {
            &"********"
        } else {
            &self.value
        };
        f.debug_struct("ConfigItem")
            .field("key", &self.key)
            .field("value", value)
            .field("secret", &self.secret)
            .finish()
    }
}

/// One change to a function's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Sets `key` (removing it from the other tree, so a key is either a
    /// setting or a secret).
    Set(ConfigItem),
    /// Removes `key`, setting or secret.
    Remove(String),
}

pub(crate) fn ns_prefix(function: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(function.len() + 1);
    k.extend_from_slice(function.as_bytes());
    k.push(0);
    k
}

pub(crate) fn ns_key(function: &str, key: &str) -> Vec<u8> {
    let mut k = ns_prefix(function);
    k.extend_from_slice(key.as_bytes());
    k
}

fn encode_kv(value: &[u8], expires_at_ms: Option<u64>) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&expires_at_ms.unwrap_or(0).to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn decode_kv(key: &[u8], stored: IVec) -> Result<KvEntry, StoreError> {
    if stored.len() < 8 {
        return Err(StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "key-value entry shorter than its header".into(),
        });
    }
    let expires = read_u64(&stored[..8]);
    Ok(KvEntry {
        value: stored.subslice(8, stored.len() - 8),
        expires_at_ms: (expires != 0).then_some(expires),
    })
}

impl Store {
    fn kv_trees(&self) -> Result<(sled::Tree, sled::Tree), StoreError> {
        Ok((self.db.open_tree("kv")?, self.db.open_tree("kv_usage")?))
    }

    fn config_trees(&self) -> Result<(sled::Tree, sled::Tree), StoreError> {
        Ok((self.db.open_tree("config")?, self.db.open_tree("secrets")?))
    }

    /// A function's key-value entry, expired or not.
    pub fn kv_get(&self, function: &str, key: &str) -> Result<Option<KvEntry>, StoreError> {
        let (kv, _) = self.kv_trees()?;
        let k = ns_key(function, key);
        kv.get(&k)?.map(|v| decode_kv(&k, v)).transpose()
    }

    /// Bytes a function's key-value entries take (see the `kv_usage` tree).
    /// (Tests check the accounting with it.)
    #[cfg(test)]
    pub fn kv_usage(&self, function: &str) -> Result<u64, StoreError> {
        let (_, usage) = self.kv_trees()?;
        Ok(usage
            .get(function.as_bytes())?
            .map(|v| read_u64(&v))
            .unwrap_or(0))
    }

    /// Reads `key` and the function's usage, lets `decide` choose what to
    /// write and the usage after it, and writes both in one transaction.
    /// `decide` may run more than once (a conflicting writer makes sled
    /// retry), so it must only compute. Returns its value and whether
    /// anything was written. Not flushed: the caller flushes before it
    /// acknowledges.
    pub fn kv_update<T, E>(
        &self,
        function: &str,
        key: &str,
        decide: impl Fn(Option<KvEntry>, u64) -> Result<(KvWrite, u64, T), E>,
    ) -> Result<(T, bool), KvUpdateError<E>> {
        let (kv, usage) = self.kv_trees().map_err(KvUpdateError::Store)?;
        let k = ns_key(function, key);
        let exclusive = self.gate.exclusive();
        let result = (&kv, &usage).transaction(|(kv, usage)| {
            let old =
                match kv.get(&k)? {
                    Some(v) => Some(decode_kv(&k, v).map_err(|e| {
                        ConflictableTransactionError::Abort(KvUpdateError::Store(e))
                    })?),
                    None => None,
                };
            let used = usage
                .get(function.as_bytes())?
                .map(|v| read_u64(&v))
                .unwrap_or(0);
            let (write, new_usage, out) = decide(old, used)
                .map_err(|e| ConflictableTransactionError::Abort(KvUpdateError::Rejected(e)))?;
            let wrote = match write {
                KvWrite::Keep => false,
                KvWrite::Put {
                    value,
                    expires_at_ms,
                } => {
                    kv.insert(k.as_slice(), encode_kv(&value, expires_at_ms))?;
                    true
                }
                KvWrite::Remove => {
                    kv.remove(k.as_slice())?;
                    true
                }
            };
            if wrote && new_usage != used {
                if new_usage == 0 {
                    usage.remove(function.as_bytes())?;
                } else {
                    usage.insert(function.as_bytes(), &new_usage.to_be_bytes())?;
                }
            }
            Ok((out, wrote))
        });
        drop(exclusive);
        result.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => KvUpdateError::Store(StoreError::Sled(e)),
        })
    }

    /// Up to `max` keys of a function that start with `prefix`, after
    /// `after` if given, in byte order, each with its expiry (values are not
    /// read).
    pub fn kv_scan(
        &self,
        function: &str,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<(String, Option<u64>)>, StoreError> {
        let (kv, _) = self.kv_trees()?;
        let ns = ns_prefix(function);
        let full_prefix = ns_key(function, prefix);
        let start = match after {
            Some(a) => std::ops::Bound::Excluded(ns_key(function, a)),
            None => std::ops::Bound::Included(full_prefix.clone()),
        };
        let mut out = Vec::new();
        for item in kv.range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded)) {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            if !k.starts_with(&full_prefix) {
                break;
            }
            let entry = decode_kv(&k, v)?;
            let key =
                String::from_utf8(k[ns.len()..].to_vec()).map_err(|_| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: "key-value key is not UTF-8".into(),
                })?;
            out.push((key, entry.expires_at_ms));
        }
        Ok(out)
    }

    /// A function's settings and secrets, by key.
    pub fn config_items(&self, function: &str) -> Result<Vec<ConfigItem>, StoreError> {
        let (config, secrets) = self.config_trees()?;
        let ns = ns_prefix(function);
        let mut items = Vec::new();
        for (tree, secret) in [(&config, false), (&secrets, true)] {
            for item in tree.scan_prefix(&ns) {
                let (k, v) = item?;
                let corrupt = |reason: &str| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: reason.into(),
                };
                let key = std::str::from_utf8(&k[ns.len()..])
                    .map_err(|_| corrupt("config key is not UTF-8"))?
                    .to_string();
                let value = String::from_utf8(v.to_vec())
                    .map_err(|_| corrupt("config value is not UTF-8"))?;
                items.push(ConfigItem { key, value, secret });
            }
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(items)
    }

    /// Applies config changes in one transaction over both trees. Not
    /// flushed.
    pub fn config_apply(&self, function: &str, changes: &[ConfigChange]) -> Result<(), StoreError> {
        let (config, secrets) = self.config_trees()?;
        let _exclusive = self.gate.exclusive();
        (&config, &secrets)
            .transaction(|(config, secrets)| {
                for change in changes {
                    match change {
                        ConfigChange::Set(item) => {
                            let k = ns_key(function, &item.key);
                            let (into, other) = if item.secret {
                                (secrets, config)
                            } else {
                                (config, secrets)
                            };
                            other.remove(k.as_slice())?;
                            into.insert(k.as_slice(), item.value.as_bytes())?;
                        }
                        ConfigChange::Remove(key) => {
                            let k = ns_key(function, key);
                            config.remove(k.as_slice())?;
                            secrets.remove(k.as_slice())?;
                        }
                    }
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(abort_on)
    }

    /// Removes a function's key-value entries, usage counter, settings and
    /// secrets. Called right after the function record is deleted (and
    /// before a name is deployed for the first time, which catches anything
    /// a crash between the two, or a write racing the delete, left behind).
    /// Not atomic with the record's delete: it can be large, and a leftover
    /// is invisible (no function) and removed by the next first deploy.
    pub fn purge_function_data(&self, function: &str) -> Result<(), StoreError> {
        let (kv, usage) = self.kv_trees()?;
        let (config, secrets) = self.config_trees()?;
        let ns = ns_prefix(function);
        for tree in [&kv, &config, &secrets] {
            let mut batch = sled::Batch::default();
            for key in tree.scan_prefix(&ns).keys() {
                batch.remove(key?);
            }
            let _exclusive = self.gate.exclusive();
            tree.apply_batch(batch)?;
        }
        usage.remove(function.as_bytes())?;
        Ok(())
    }
}

// ------------------------------------------------------------------ events
//
// Trees (the records are defined in `crate::events`, the decisions made
// there too; this section only reads, writes atomically and encodes):
// - `ev_events`: event id (u64 BE) -> the JSON `EventRecord`, the
//   functions it was published to, the payload (see [`encode_event`]).
// - `ev_subs`: `topic \0 function` -> JSON `Subscription`.
// - `ev_deliveries`: `event id | topic \0 function` -> JSON
//   `DeliveryRecord`, written at a delivery's first outcome (until then it
//   is pending, known from the event's list of functions and its due
//   entry); a job task's is written with its event.
// - `ev_due`: `due_ms | seq` (both BE) -> delivery key: the pending
//   deliveries in due order, so finding what is due is a short range scan.
//   A claimed delivery keeps its entry while it runs (it is skipped, see
//   below), so after a crash it is simply due again.
// - `ev_dead`: `function \0 topic \0 event id` -> delivery key: the
//   dead-letter list of each subscription.
// - `ev_dead_at`: `died_ms (BE) | dead key` -> empty: the dead letters in
//   the order they died, so those past the dead-letter retention are a
//   short range scan. Written with the dead entry; a redrive or purge
//   removes it too (a stale entry, whose delivery died again later or is
//   gone, is dropped by the expiry sweep: it checks the record's time).
// - `ev_open`: event id -> u64 BE: deliveries not done yet, for events with
//   more than one (an event with one delivery has no entry); when the last
//   is done the event is scheduled for removal in `ev_expire`.
// - `ev_expire`: `remove_at_ms | seq` -> the events finished in one
//   transaction (see [`Expiring`]), removed with their deliveries after the
//   retention time.
// - `ev_schedules`: schedule id (u64 BE) -> JSON `Schedule`.
// - `ev_jobs`: job id (u64 BE) -> JSON `JobRecord`.
// - `ev_job_tasks`: `job id | index` (u64 BE, u32 BE) -> event id (u64 BE):
//   the event (topic `job:ID`) that carries each index of a job.
//
// Beside the trees, in memory ([`EventMemory`]): the queue depth of each
// topic (counted from `ev_due` on open), the bytes of the events each
// topic holds for pending, running or dead deliveries (rebuilt on open
// from `ev_due` and `ev_dead`, see [`EventTrees::open`]), and the claimed
// deliveries being run. None is written per event: a claim costs no
// write; a publish writes the event and a due entry per delivery; an
// outcome removes the due entry and writes the delivery's record; the
// events that finish in one transaction share one expiry entry.
//
// An event is held (its bytes counted) from its publish until its last
// delivery is done or cancelled, or, if dead, until it is redriven and
// done, purged or expired: the same moment `ev_open` reaches zero, so the
// count changes in the transactions that already run then.

/// The event-plane trees (opened once).
#[derive(Clone)]
pub(crate) struct EventTrees {
    events: sled::Tree,
    subs: sled::Tree,
    deliveries: sled::Tree,
    due: sled::Tree,
    dead: sled::Tree,
    dead_at: sled::Tree,
    open: sled::Tree,
    expire: sled::Tree,
    schedules: sled::Tree,
    jobs: sled::Tree,
    job_tasks: sled::Tree,
    /// Changed only together with the trees, under its lock (taken after
    /// the gate).
    mem: Arc<Mutex<EventMemory>>,
}

/// What the event plane keeps in memory beside its trees.
#[derive(Default)]
struct EventMemory {
    /// Pending and running deliveries per topic: the due index counted by
    /// topic (the queue-depth limit and gauge).
    depth: HashMap<String, u64>,
    /// Claimed deliveries being run: delivery key -> when the attempt
    /// started (ms since the epoch). Their due entries stay in the due
    /// index; readers of it skip them.
    running: HashMap<IVec, u64>,
    /// Bytes of the events each topic holds (see the section's docs): the
    /// storage quotas.
    bytes: HashMap<String, u64>,
    /// The same, all topics.
    bytes_total: u64,
}

impl EventMemory {
    fn add_depth(&mut self, topic: &str, delta: i64) {
        add_to(&mut self.depth, topic, delta);
    }

    fn add_bytes(&mut self, topic: &str, delta: i64) {
        add_to(&mut self.bytes, topic, delta);
        self.bytes_total = (self.bytes_total as i64).saturating_add(delta).max(0) as u64;
    }
}

/// Adds `delta` to a per-topic count, dropping the topic at zero.
fn add_to(map: &mut HashMap<String, u64>, topic: &str, delta: i64) {
    let n = map.get(topic).copied().unwrap_or(0);
    let n = (n as i64).saturating_add(delta).max(0) as u64;
    if n == 0 {
        map.remove(topic);
    } else if let Some(v) = map.get_mut(topic) {
        *v = n;
    } else {
        map.insert(topic.to_string(), n);
    }
}

impl EventTrees {
    fn mem(&self) -> std::sync::MutexGuard<'_, EventMemory> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the trees and rebuilds what is kept in memory: the queue
    /// depths (from the due index) and the bytes held per topic (the events
    /// of the due index and of the dead-letter lists, each read once).
    /// Rebuilt rather than stored, so a publish writes nothing more for
    /// the quotas, and a crash cannot leave a count that disagrees with
    /// the trees. Reading the held events costs at most about the host-wide
    /// quota of reads at start.
    fn open(db: &sled::Db) -> Result<EventTrees, StoreError> {
        // Stores written before the dead-letter expiry have no index yet.
        let indexed = db.tree_names().iter().any(|n| &n[..] == b"ev_dead_at");
        let due = db.open_tree("ev_due")?;
        let dead = db.open_tree("ev_dead")?;
        let dead_at = db.open_tree("ev_dead_at")?;
        let events = db.open_tree("ev_events")?;
        let deliveries = db.open_tree("ev_deliveries")?;
        let mut mem = EventMemory::default();
        let mut held = std::collections::HashSet::new();
        for dkey in due.iter().values() {
            let dkey = dkey?;
            if let Some((id, topic, _)) = crate::events::parse_delivery_key(&dkey) {
                mem.add_depth(topic, 1);
                held.insert(id);
            }
        }
        for dk in dead.iter().keys() {
            let dk = dk?;
            let Some((function, topic, id)) = parse_dead_key(&dk) else {
                continue;
            };
            held.insert(id);
            if !indexed {
                let key = crate::events::delivery_key(id, topic, function);
                if let Some(v) = deliveries.get(&key)? {
                    let rec: DeliveryRecord = decode(&key, &v)?;
                    dead_at.insert(dead_at_key(rec.updated_ms, &dk), &[])?;
                }
            }
        }
        for id in held {
            let k = id.to_be_bytes();
            if let Some(v) = events.get(k)? {
                let (event, _, payload) = decode_event(&k, v)?;
                mem.add_bytes(&event.topic, event.charge(payload.len() as u64) as i64);
            }
        }
        Ok(EventTrees {
            mem: Arc::new(Mutex::new(mem)),
            events,
            subs: db.open_tree("ev_subs")?,
            deliveries,
            due,
            dead,
            dead_at,
            open: db.open_tree("ev_open")?,
            expire: db.open_tree("ev_expire")?,
            schedules: db.open_tree("ev_schedules")?,
            jobs: db.open_tree("ev_jobs")?,
            job_tasks: db.open_tree("ev_job_tasks")?,
        })
    }
}

/// Why a publish wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRefused {
    /// The topic already has this many pending deliveries.
    QueueFull(u64),
    /// The topic already holds this many bytes of events.
    TopicQuota(u64),
    /// All topics together already hold this many bytes of events.
    HostQuota(u64),
}

/// One event of [`Store::event_writes`]: the record, its payload and the
/// functions it is delivered to (on its topic).
pub struct NewEvent<'a> {
    /// The record.
    pub event: &'a EventRecord,
    /// The payload (not stored for an event nobody receives: nothing reads
    /// it, and it would take room for the whole retention unbounded by the
    /// quotas).
    pub payload: &'a [u8],
    /// One pending delivery each.
    pub to: &'a [String],
    /// The id is derived, not fresh (a schedule tick): if an event with it
    /// is already stored, this one is the same event fired again, and is
    /// answered as written without writing anything.
    pub dedupe: bool,
}

/// What [`Store::event_writes`] writes in one transaction.
pub struct EventWrites<'a> {
    /// Outcomes of finished attempts.
    pub finishes: &'a [Finish],
    /// New events.
    pub publishes: &'a [NewEvent<'a>],
    /// Pending deliveries a topic may have (publishes past it are refused).
    pub max_depth: u64,
    /// Bytes of held events a topic may have (see the section's docs).
    pub max_topic_bytes: u64,
    /// Bytes of held events all topics may have together.
    pub max_host_bytes: u64,
    /// How long finished events are kept.
    pub retention_ms: u64,
}

impl Default for EventWrites<'_> {
    /// Nothing to write, no limit.
    fn default() -> Self {
        EventWrites {
            finishes: &[],
            publishes: &[],
            max_depth: u64::MAX,
            max_topic_bytes: u64::MAX,
            max_host_bytes: u64::MAX,
            retention_ms: 0,
        }
    }
}

/// What [`Store::event_writes`] did.
pub struct EventWritten {
    /// Per new event: written (or already there), or refused.
    pub published: Vec<Result<(), PublishRefused>>,
}

/// What [`Store::purge_function_events`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FunctionPurge {
    /// Subscriptions.
    pub subscriptions: u64,
    /// Schedules.
    pub schedules: u64,
    /// Deliveries pending or running, now cancelled.
    pub cancelled: u64,
    /// Dead letters.
    pub dead_letters: u64,
}

/// One finished attempt for [`Store::event_writes`].
#[derive(Debug, Clone)]
pub struct Finish {
    /// The delivery's key (as a claim returned it).
    pub key: IVec,
    /// Its due entry when it was claimed.
    pub due_entry: IVec,
    /// What follows.
    pub outcome: Outcome,
    /// Why the attempt failed.
    pub error: Option<String>,
    /// When it finished, ms since the epoch.
    pub now_ms: u64,
    /// The event's [`EventRecord::charge`], if the caller read the event
    /// (else it is read when the event stops being held).
    pub charge: Option<u64>,
}

fn sub_key(topic: &str, function: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 1 + function.len());
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(function.as_bytes());
    k
}

fn dead_key(function: &str, topic: &str, event_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(function.len() + topic.len() + 10);
    k.extend_from_slice(function.as_bytes());
    k.push(0);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&event_id.to_be_bytes());
    k
}

/// Function, topic and event id of an `ev_dead` key.
fn parse_dead_key(key: &[u8]) -> Option<(&str, &str, u64)> {
    let split = key.len().checked_sub(8)?;
    let id = read_u64(&key[split..]);
    let names = std::str::from_utf8(&key[..split])
        .ok()?
        .strip_suffix('\0')?;
    let (function, topic) = names.split_once('\0')?;
    Some((function, topic, id))
}

/// Key of `ev_dead_at`: when the delivery died, then its dead key.
fn dead_at_key(died_ms: u64, dead_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + dead_key.len());
    k.extend_from_slice(&died_ms.to_be_bytes());
    k.extend_from_slice(dead_key);
    k
}

/// The [`EventRecord::charge`] of a stored event, read in a transaction
/// (0 if it is gone).
fn tx_charge(events: &Tx, id: u64) -> TxResult<u64> {
    let k = id.to_be_bytes();
    Ok(match events.get(k)? {
        Some(v) => {
            let (event, _, payload) =
                decode_event(&k, v).map_err(ConflictableTransactionError::Abort)?;
            event.charge(payload.len() as u64)
        }
        None => 0,
    })
}

fn expire_key(at_ms: u64, seq: u64) -> [u8; 16] {
    crate::events::due_key(at_ms, seq)
}

/// Finished events to remove, gathered in a transaction and written as one
/// `ev_expire` entry (one write per transaction instead of one per event).
/// Each item is a u16 BE length and either an event's only delivery key
/// (the sweep removes it and the event without looking them up) or an
/// event id (the sweep removes the event and every delivery under it).
#[derive(Default)]
struct Expiring {
    at_ms: u64,
    items: Vec<u8>,
    n: usize,
}

impl Expiring {
    /// An event with its deliveries (none, or several).
    fn add_event(&mut self, at_ms: u64, id: u64) {
        self.add(at_ms, &id.to_be_bytes());
    }

    /// An event with one delivery: this one.
    fn add_delivery(&mut self, at_ms: u64, delivery_key: &[u8]) {
        self.add(at_ms, delivery_key);
    }

    fn add(&mut self, at_ms: u64, item: &[u8]) {
        self.at_ms = self.at_ms.max(at_ms);
        self.items
            .extend_from_slice(&(item.len() as u16).to_be_bytes());
        self.items.extend_from_slice(item);
        self.n += 1;
    }

    /// Writes the entry (`seq`: a fresh sequence number), if any.
    fn write(&self, expire: &Tx, seq: u64) -> TxResult<()> {
        if self.n > 0 {
            expire.insert(&expire_key(self.at_ms, seq), self.items.as_slice())?;
        }
        Ok(())
    }
}

/// The items of an `ev_expire` entry (see [`Expiring`]).
fn expiry_items(mut value: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = u16::from_be_bytes(value.get(..2)?.try_into().ok()?) as usize;
        let item = value.get(2..2 + len)?;
        value = &value[2 + len..];
        Some(item)
    })
}

/// Set in an event's header when a list of functions follows the JSON:
/// the deliveries published without a record (see [`Store::event_writes`]).
const WITH_TARGETS: u32 = 1 << 31;

/// `u32 BE` JSON length (| [`WITH_TARGETS`]), the JSON `EventRecord`, then
/// if flagged `u16 BE` count and per function `u16 BE` length and name,
/// then the payload.
fn encode_event(event: &EventRecord, targets: &[&str], payload: &[u8]) -> Vec<u8> {
    let json = encode(event);
    let mut v = Vec::with_capacity(4 + json.len() + 16 * targets.len() + payload.len());
    let flag = if targets.is_empty() { 0 } else { WITH_TARGETS };
    v.extend_from_slice(&(json.len() as u32 | flag).to_be_bytes());
    v.extend_from_slice(&json);
    if !targets.is_empty() {
        v.extend_from_slice(&(targets.len() as u16).to_be_bytes());
        for f in targets {
            v.extend_from_slice(&(f.len() as u16).to_be_bytes());
            v.extend_from_slice(f.as_bytes());
        }
    }
    v.extend_from_slice(payload);
    v
}

/// An event, the functions of its record-less deliveries, its payload.
type StoredEvent = (EventRecord, Vec<String>, IVec);

fn decode_event(key: &[u8], stored: IVec) -> Result<StoredEvent, StoreError> {
    let corrupt = || StoreError::Corrupt {
        key: format!("event {}", read_u64(key)),
        reason: "event shorter than its header".into(),
    };
    let u16_at = |at: usize| {
        stored
            .get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_be_bytes)
            .ok_or_else(corrupt)
    };
    let head = stored
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(corrupt)?;
    let len = (head & !WITH_TARGETS) as usize;
    let json = stored.get(4..4 + len).ok_or_else(corrupt)?;
    let record: EventRecord = decode(key, json)?;
    let mut at = 4 + len;
    let mut targets = Vec::new();
    if head & WITH_TARGETS != 0 {
        let n = u16_at(at)?;
        at += 2;
        for _ in 0..n {
            let l = u16_at(at)? as usize;
            let name = stored.get(at + 2..at + 2 + l).ok_or_else(corrupt)?;
            targets.push(String::from_utf8_lossy(name).into_owned());
            at += 2 + l;
        }
    }
    let payload = stored.subslice(at, stored.len() - at);
    Ok((record, targets, payload))
}

/// A delivery not attempted yet, due at `due_ms` (sequence `due_seq`).
fn pending_delivery(
    event_id: u64,
    topic: &str,
    function: &str,
    due_ms: u64,
    due_seq: u64,
) -> DeliveryRecord {
    DeliveryRecord {
        event_id,
        topic: topic.to_string(),
        function: function.to_string(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        last_error: None,
        due_ms,
        due_seq,
        attempt_times_ms: Vec::new(),
        postponed_ms: 0,
        updated_ms: due_ms,
    }
}

/// The record of a delivery published without one (from its key and due
/// entry): pending since then, no attempt yet.
fn pending_record(key: &[u8], due_entry: &[u8]) -> Option<DeliveryRecord> {
    let (event_id, topic, function) = crate::events::parse_delivery_key(key)?;
    let (due_ms, due_seq) = crate::events::parse_due_key(due_entry)?;
    Some(pending_delivery(event_id, topic, function, due_ms, due_seq))
}

type Tx = sled::transaction::TransactionalTree;
type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Counts one more finished delivery (`key`) of event `id` in `ev_open`;
/// if it was the last, the event expires at `at_ms` (an event without an
/// entry has this one delivery only) and this returns true: the event is
/// no longer held.
fn tx_finish_one(
    open: &Tx,
    id: u64,
    key: &[u8],
    at_ms: u64,
    expiring: &mut Expiring,
) -> TxResult<bool> {
    let open_key = id.to_be_bytes();
    let Some(v) = open.get(open_key)? else {
        expiring.add_delivery(at_ms, key);
        return Ok(true);
    };
    let left = read_u64(&v).saturating_sub(1);
    if left == 0 {
        open.remove(&open_key)?;
        expiring.add_event(at_ms, id);
        Ok(true)
    } else {
        open.insert(&open_key, &left.to_be_bytes())?;
        Ok(false)
    }
}

/// Appends an attempt's start time to a delivery, keeping the latest.
fn push_attempt_time(rec: &mut DeliveryRecord, started_ms: u64) {
    rec.attempt_times_ms.push(started_ms);
    let excess = rec
        .attempt_times_ms
        .len()
        .saturating_sub(crate::events::KEPT_ATTEMPT_TIMES);
    rec.attempt_times_ms.drain(..excess);
}

fn tx_delivery(tree: &Tx, key: &[u8]) -> TxResult<Option<DeliveryRecord>> {
    match tree.get(key)? {
        Some(v) => Ok(Some(
            decode(key, &v).map_err(ConflictableTransactionError::Abort)?,
        )),
        None => Ok(None),
    }
}

impl Store {
    /// A subscription.
    pub fn subscription(
        &self,
        topic: &str,
        function: &str,
    ) -> Result<Option<Subscription>, StoreError> {
        let k = sub_key(topic, function);
        self.ev.subs.get(&k)?.map(|v| decode(&k, &v)).transpose()
    }

    /// Creates or replaces a subscription. Not flushed.
    pub fn put_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        self.ev
            .subs
            .insert(sub_key(&sub.topic, &sub.function), encode(sub))?;
        Ok(())
    }

    /// Removes a subscription (its pending deliveries are cancelled when
    /// they come due). Returns whether it existed. Not flushed.
    pub fn delete_subscription(&self, topic: &str, function: &str) -> Result<bool, StoreError> {
        Ok(self.ev.subs.remove(sub_key(topic, function))?.is_some())
    }

    /// The subscriptions of `topic`, or all of them, by topic and function.
    pub fn subscriptions(&self, topic: Option<&str>) -> Result<Vec<Subscription>, StoreError> {
        let prefix = topic.map(|t| sub_key(t, "")).unwrap_or_default();
        self.ev
            .subs
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Creates or replaces a schedule. Not flushed.
    pub fn put_schedule(&self, schedule: &Schedule) -> Result<(), StoreError> {
        self.ev
            .schedules
            .insert(schedule.id.to_be_bytes(), encode(schedule))?;
        Ok(())
    }

    /// Every schedule, oldest first.
    pub fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        self.ev
            .schedules
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Removes a schedule; whether it existed. Not flushed.
    pub fn delete_schedule(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.ev.schedules.remove(id.to_be_bytes())?.is_some())
    }

    /// A fresh sequence number (unique, increasing; survives restarts).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Stores an event and one pending delivery (due at the event's time)
    /// per `(topic, function)` in `to`, in one transaction, unless the
    /// topic's queue would pass `max_depth`. An event nobody receives is
    /// scheduled for removal after `retention_ms`. Not flushed. (Tests; the
    /// event plane writes batches with [`Store::event_writes`].)
    #[cfg(test)]
    pub fn publish_event(
        &self,
        event: &EventRecord,
        payload: &[u8],
        to: &[String],
        max_depth: u64,
        retention_ms: u64,
    ) -> Result<(), PublishRefused> {
        let writes = EventWrites {
            publishes: &[NewEvent {
                event,
                payload,
                to,
                dedupe: false,
            }],
            max_depth,
            retention_ms,
            ..EventWrites::default()
        };
        let written = self
            .event_writes(&writes)
            .expect("the store works in tests");
        match written.published.first() {
            Some(Err(refused)) => Err(*refused),
            _ => Ok(()),
        }
    }

    /// The event plane's writes of one moment, all in one transaction:
    /// outcomes of finished deliveries first (they free queue depth and
    /// bytes), then new events, each checked against the topic's queue
    /// depth and the storage quotas (counting the events before it in the
    /// batch).
    ///
    /// One transaction instead of one per event and per delivery matters
    /// twice with sled 0.34: a transaction is an exclusive section (see
    /// [`Gate`]), which waits for a flush in progress; and each one seals
    /// and writes the current log buffer (a `pwrite` and a
    /// `sync_file_range` on sled's I/O threads), so the disk work grows
    /// with the number of transactions, not of writes. Not flushed.
    ///
    /// An outcome whose delivery is no longer at its due entry (cancelled
    /// while it ran) is dropped. Either way its claim ends.
    pub fn event_writes(&self, w: &EventWrites<'_>) -> Result<EventWritten, StoreError> {
        struct Row {
            id: [u8; 8],
            value: Vec<u8>,
            /// Delivery key and due entry of each subscriber.
            deliveries: Vec<(Vec<u8>, [u8; 16])>,
            /// What the event counts against the quotas while held.
            charge: u64,
        }
        let mut rows = Vec::with_capacity(w.publishes.len());
        for item in w.publishes {
            let event = item.event;
            // No delivery record until the first outcome: the event lists
            // the functions instead.
            let mut deliveries = Vec::with_capacity(item.to.len());
            for function in item.to {
                let key = crate::events::delivery_key(event.id, &event.topic, function);
                deliveries.push((key, due_key(event.time_ms, self.next_id()?)));
            }
            let targets: Vec<&str> = item.to.iter().map(String::as_str).collect();
            let payload = if item.to.is_empty() {
                &[][..]
            } else {
                item.payload
            };
            rows.push(Row {
                id: event.id.to_be_bytes(),
                value: encode_event(event, &targets, payload),
                deliveries,
                charge: event.charge(payload.len() as u64),
            });
        }
        let mut seqs = Vec::with_capacity(w.finishes.len());
        for f in w.finishes {
            seqs.push(match f.outcome {
                Outcome::Retry(_) | Outcome::Postponed(_) => self.next_id()?,
                _ => 0,
            });
        }
        let expiry_seq = self.next_id()?;
        let retention_ms = w.retention_ms;
        let t = &self.ev;
        let _exclusive = self.gate.exclusive();
        let mut mem = self.ev.mem();
        let result = (
            &t.events,
            &t.deliveries,
            &t.due,
            &t.open,
            &t.expire,
            &t.dead,
            &t.dead_at,
        )
            .transaction(|(events, dtree, due, open, expire, dead, dead_at)| {
                // Answers are built inside: sled may run this more than
                // once. The count changes are applied after the commit.
                let mut depth: HashMap<&str, i64> = HashMap::new();
                let mut bytes: HashMap<&str, i64> = HashMap::new();
                let mut bytes_total: i64 = 0;
                let mut expiring = Expiring::default();
                for (f, &seq) in w.finishes.iter().zip(&seqs) {
                    let (key, outcome, now_ms) = (&f.key[..], f.outcome, f.now_ms);
                    let entry = &f.due_entry[..];
                    if due.get(entry)?.as_deref() != Some(key) {
                        continue;
                    }
                    let rec = tx_delivery(dtree, key)?.or_else(|| pending_record(key, entry));
                    let Some(mut rec) = rec else {
                        continue;
                    };
                    due.remove(entry)?;
                    rec.updated_ms = now_ms;
                    rec.last_error = f.error.clone();
                    // A postponed delivery was not attempted: no start
                    // time, no attempt used up.
                    if !matches!(outcome, Outcome::Postponed(_)) {
                        if let Some(&started) = mem.running.get(key) {
                            push_attempt_time(&mut rec, started);
                        }
                        if outcome != Outcome::Cancelled {
                            rec.attempts += 1;
                        }
                    }
                    let topic = crate::events::parse_delivery_key(key).map_or("", |k| k.1);
                    match outcome {
                        Outcome::Retry(at) => {
                            rec.status = DeliveryStatus::Pending;
                            rec.due_ms = at;
                            rec.due_seq = seq;
                            due.insert(&due_key(at, seq), key)?;
                        }
                        Outcome::Postponed(at) => {
                            // The wait is kept apart from the event's age.
                            rec.status = DeliveryStatus::Pending;
                            rec.postponed_ms = rec
                                .postponed_ms
                                .saturating_add(at.saturating_sub(rec.due_ms));
                            rec.due_ms = at;
                            rec.due_seq = seq;
                            due.insert(&due_key(at, seq), key)?;
                        }
                        Outcome::Dead => {
                            rec.status = DeliveryStatus::Dead;
                            let dk = dead_key(&rec.function, &rec.topic, rec.event_id);
                            dead_at.insert(dead_at_key(now_ms, &dk), &[])?;
                            dead.insert(dk, key)?;
                            *depth.entry(topic).or_default() -= 1;
                        }
                        Outcome::Done | Outcome::Cancelled => {
                            rec.status = if outcome == Outcome::Done {
                                DeliveryStatus::Done
                            } else {
                                DeliveryStatus::Cancelled
                            };
                            *depth.entry(topic).or_default() -= 1;
                            let at = now_ms.saturating_add(retention_ms);
                            if tx_finish_one(open, rec.event_id, key, at, &mut expiring)? {
                                let charge = match f.charge {
                                    Some(c) => c,
                                    None => tx_charge(events, rec.event_id)?,
                                };
                                *bytes.entry(topic).or_default() -= charge as i64;
                                bytes_total -= charge as i64;
                            }
                        }
                    }
                    dtree.insert(key, encode(&rec))?;
                }

                let mut published = Vec::with_capacity(rows.len());
                for (item, row) in w.publishes.iter().zip(&rows) {
                    let event = item.event;
                    if item.dedupe && events.get(row.id)?.is_some() {
                        // Fired again (after a crash): already stored.
                        published.push(Ok(()));
                        continue;
                    }
                    let n = row.deliveries.len() as u64;
                    if n > 0 {
                        // The counts include the events accepted earlier in
                        // the batch (and the outcomes before them).
                        let topic = event.topic.as_str();
                        let stored = mem.depth.get(topic).copied().unwrap_or(0);
                        let change = depth.entry(topic).or_default();
                        let now = (stored as i64 + *change).max(0) as u64;
                        if now + n > w.max_depth {
                            published.push(Err(PublishRefused::QueueFull(now)));
                            continue;
                        }
                        let held = mem.bytes.get(topic).copied().unwrap_or(0) as i64;
                        let held_change = bytes.entry(topic).or_default();
                        let held = (held + *held_change).max(0) as u64;
                        if held.saturating_add(row.charge) > w.max_topic_bytes {
                            published.push(Err(PublishRefused::TopicQuota(held)));
                            continue;
                        }
                        let all = (mem.bytes_total as i64 + bytes_total).max(0) as u64;
                        if all.saturating_add(row.charge) > w.max_host_bytes {
                            published.push(Err(PublishRefused::HostQuota(all)));
                            continue;
                        }
                        *change += n as i64;
                        *held_change += row.charge as i64;
                        bytes_total += row.charge as i64;
                        if n > 1 {
                            open.insert(&row.id, &n.to_be_bytes())?;
                        }
                    } else {
                        expiring.add_event(event.time_ms.saturating_add(retention_ms), event.id);
                    }
                    events.insert(&row.id, row.value.as_slice())?;
                    for (key, dkey) in &row.deliveries {
                        due.insert(dkey, key.as_slice())?;
                    }
                    published.push(Ok(()));
                }
                expiring.write(expire, expiry_seq)?;
                let owned = |m: HashMap<&str, i64>| -> Vec<(String, i64)> {
                    m.into_iter()
                        .filter(|(_, n)| *n != 0)
                        .map(|(t, n)| (t.to_string(), n))
                        .collect()
                };
                Ok::<_, ConflictableTransactionError<StoreError>>((
                    published,
                    owned(depth),
                    owned(bytes),
                ))
            })
            .map_err(abort_on);
        for f in w.finishes {
            mem.running.remove(&f.key);
        }
        let (published, depth, bytes) = result?;
        for (topic, n) in depth {
            mem.add_depth(&topic, n);
        }
        for (topic, n) in bytes {
            mem.add_bytes(&topic, n);
        }
        Ok(EventWritten { published })
    }

    /// Claims due deliveries for a run: each due entry that is still there
    /// and not claimed gives its delivery (key, and the record as it
    /// stands while running, started at `now_ms`); `None` otherwise. The
    /// claim is kept in memory only, until the outcome is written (see
    /// [`Store::event_writes`]): a crash meanwhile leaves the delivery due.
    pub fn claim(
        &self,
        entries: &[IVec],
        now_ms: u64,
    ) -> Result<Vec<Option<(IVec, DeliveryRecord)>>, StoreError> {
        let mut mem = self.ev.mem();
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let Some(key) = self.ev.due.get(entry)? else {
                out.push(None);
                continue;
            };
            if mem.running.contains_key(&key) {
                out.push(None);
                continue;
            }
            let rec = match self.ev.deliveries.get(&key)? {
                Some(v) => Some(decode(&key, &v)?),
                None => pending_record(&key, entry),
            };
            let Some(mut rec) = rec else {
                out.push(None);
                continue;
            };
            rec.status = DeliveryStatus::Running;
            rec.updated_ms = now_ms;
            push_attempt_time(&mut rec, now_ms);
            mem.running.insert(key.clone(), now_ms);
            out.push(Some((key, rec)));
        }
        Ok(out)
    }

    /// An event and its payload.
    pub fn event(&self, id: u64) -> Result<Option<(EventRecord, IVec)>, StoreError> {
        let k = id.to_be_bytes();
        self.ev
            .events
            .get(k)?
            .map(|v| decode_event(&k, v).map(|(event, _, payload)| (event, payload)))
            .transpose()
    }

    /// An event's deliveries, by topic and function (a claimed one as
    /// running).
    pub fn deliveries_of(&self, id: u64) -> Result<Vec<DeliveryRecord>, StoreError> {
        let k = id.to_be_bytes();
        let Some(stored) = self.ev.events.get(k)? else {
            return Ok(Vec::new());
        };
        let (event, targets, _) = decode_event(&k, stored)?;
        let mut out = Vec::new();
        for kv in self.ev.deliveries.scan_prefix(k) {
            let (k, v) = kv?;
            let rec: DeliveryRecord = decode(&k, &v)?;
            out.push((k, rec));
        }
        // Published without a record: pending since the event's time.
        for function in &targets {
            let key = crate::events::delivery_key(id, &event.topic, function);
            if out.iter().all(|(k, _)| k[..] != key[..])
                && let Some(rec) = pending_record(&key, &due_key(event.time_ms, 0))
            {
                out.push((IVec::from(key), rec));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        let mem = self.ev.mem();
        Ok(out
            .into_iter()
            .map(|(k, mut rec)| {
                if let Some(&started) = mem.running.get(&k) {
                    rec.status = DeliveryStatus::Running;
                    push_attempt_time(&mut rec, started);
                }
                rec
            })
            .collect())
    }

    /// Up to `max` entries of the due index due at or before `now_ms`
    /// and not claimed: (due key, delivery key), in due order. (Tests; the
    /// dispatcher reads [`Store::due_iter`].)
    #[cfg(test)]
    pub fn due_deliveries(&self, now_ms: u64, max: usize) -> Result<Vec<(IVec, IVec)>, StoreError> {
        self.due_iter(now_ms, None).take(max).collect()
    }

    /// The entries of the due index due at or before `now_ms` (and after
    /// the due key `after`, if given) that are not claimed, lazily: (due
    /// key, delivery key), in due order. The dispatcher reads only as many
    /// as it can use.
    pub fn due_iter(
        &self,
        now_ms: u64,
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(IVec, IVec), StoreError>> + use<> {
        use std::ops::Bound;
        let end = Bound::Included(IVec::from(&due_key(now_ms, u64::MAX)[..]));
        let start = match after {
            Some(k) => Bound::Excluded(IVec::from(k)),
            None => Bound::Unbounded,
        };
        let mem = self.ev.mem.clone();
        self.ev
            .due
            .range::<IVec, _>((start, end))
            .map(|kv| kv.map_err(StoreError::from))
            .filter(move |kv| match kv {
                Ok((_, dkey)) => !mem
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .running
                    .contains_key(dkey),
                Err(_) => true,
            })
    }

    /// When the earliest pending delivery not claimed is due.
    pub fn next_due_ms(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .due_iter(u64::MAX - 1, None)
            .next()
            .transpose()?
            .and_then(|(k, _)| crate::events::parse_due_key(&k))
            .map(|(due, _)| due))
    }

    /// Claims a due delivery (see [`Store::claim`]). (Tests.)
    #[cfg(test)]
    pub fn claim_delivery(
        &self,
        due_entry: &[u8],
        now_ms: u64,
    ) -> Result<Option<(IVec, DeliveryRecord)>, StoreError> {
        Ok(self
            .claim(&[IVec::from(due_entry)], now_ms)?
            .pop()
            .flatten())
    }

    /// Records the outcome of an attempt (see [`Outcome`]). Not flushed.
    /// (Tests; the event plane records batches with
    /// [`Store::event_writes`].)
    #[cfg(test)]
    pub fn finish_delivery(
        &self,
        key: &[u8],
        outcome: Outcome,
        error: Option<&str>,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<(), StoreError> {
        let mut due_entry = IVec::default();
        for kv in self.ev.due.iter() {
            let (entry, dkey) = kv?;
            if dkey == key {
                due_entry = entry;
            }
        }
        let finish = Finish {
            key: IVec::from(key),
            due_entry,
            outcome,
            error: error.map(str::to_string),
            now_ms,
            charge: None,
        };
        let writes = EventWrites {
            finishes: &[finish],
            retention_ms,
            ..EventWrites::default()
        };
        self.event_writes(&writes).map(drop)
    }

    /// Dead deliveries of `function` (of one topic if given), oldest event
    /// first, at most `max`.
    pub fn dead_deliveries(
        &self,
        function: &str,
        topic: Option<&str>,
        max: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut prefix = ns_prefix(function);
        if let Some(t) = topic {
            prefix.extend_from_slice(t.as_bytes());
            prefix.push(0);
        }
        let mut out = Vec::new();
        for kv in self.ev.dead.scan_prefix(prefix).take(max) {
            let (_, dkey) = kv?;
            if let Some(v) = self.ev.deliveries.get(&dkey)? {
                out.push(decode(&dkey, &v)?);
            }
        }
        Ok(out)
    }

    /// Makes dead deliveries of `function` (of one topic if given; only the
    /// events in `ids` if given) pending again, due now, with their attempts
    /// reset. Returns the redriven deliveries. Not flushed.
    pub fn redrive(
        &self,
        function: &str,
        topic: Option<&str>,
        ids: Option<&[u64]>,
        now_ms: u64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut out = Vec::new();
        for rec in self.dead_deliveries(function, topic, usize::MAX)? {
            if ids.is_some_and(|ids| !ids.contains(&rec.event_id)) {
                continue;
            }
            let key = crate::events::delivery_key(rec.event_id, &rec.topic, &rec.function);
            let dk = dead_key(&rec.function, &rec.topic, rec.event_id);
            let seq = self.next_id()?;
            let t = &self.ev;
            let _exclusive = self.gate.exclusive();
            let mut mem = self.ev.mem();
            let done = (&t.deliveries, &t.due, &t.dead, &t.dead_at)
                .transaction(|(dtree, due, dead, dead_at)| {
                    if dead.remove(dk.as_slice())?.is_none() {
                        return Ok(None);
                    }
                    let Some(mut rec) = tx_delivery(dtree, &key)? else {
                        return Ok(None);
                    };
                    dead_at.remove(dead_at_key(rec.updated_ms, &dk))?;
                    rec.status = DeliveryStatus::Pending;
                    rec.attempts = 0;
                    rec.due_ms = now_ms;
                    rec.due_seq = seq;
                    rec.updated_ms = now_ms;
                    due.insert(&due_key(now_ms, seq), key.as_slice())?;
                    dtree.insert(key.as_slice(), encode(&rec))?;
                    Ok(Some(rec))
                })
                .map_err(abort_on)?;
            if let Some(rec) = &done {
                mem.add_depth(&rec.topic, 1);
            }
            out.extend(done);
        }
        Ok(out)
    }

    /// Pending and running deliveries of all topics.
    pub fn queue_depth_total(&self) -> Result<u64, StoreError> {
        Ok(self.ev.mem().depth.values().sum())
    }

    /// Bytes of the events `topic` holds (or all topics together): those
    /// with a delivery pending, running, retrying or dead (see the
    /// section's docs).
    pub fn event_bytes(&self, topic: Option<&str>) -> u64 {
        let mem = self.ev.mem();
        match topic {
            Some(t) => mem.bytes.get(t).copied().unwrap_or(0),
            None => mem.bytes_total,
        }
    }

    /// Removes the dead letters of `function` (of one topic if given) from
    /// its dead-letter list: they can no longer be redriven, and each event
    /// goes at the next sweep once nothing else holds it. Returns how many.
    /// Not flushed.
    pub fn purge_dead(
        &self,
        function: &str,
        topic: Option<&str>,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut prefix = ns_prefix(function);
        if let Some(t) = topic {
            prefix.extend_from_slice(t.as_bytes());
            prefix.push(0);
        }
        let mut keys = Vec::new();
        for k in self.ev.dead.scan_prefix(prefix).keys() {
            keys.push((k?, None));
        }
        self.drop_dead(&keys, now_ms)
    }

    /// Removes up to about `max` dead letters that died at or before
    /// `now_ms - retention_ms` (see [`Store::purge_dead`]). Returns how many
    /// index entries were handled: 0 once nothing more has expired.
    pub fn expire_dead_letters(
        &self,
        now_ms: u64,
        retention_ms: u64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let Some(cutoff) = now_ms.checked_sub(retention_ms) else {
            return Ok(0);
        };
        let end = cutoff.saturating_add(1).to_be_bytes();
        let mut items = Vec::new();
        for k in self.ev.dead_at.range(..&end[..]).keys().take(max) {
            let k = k?;
            let died = read_u64(&k[..8.min(k.len())]);
            items.push((
                k.subslice(8.min(k.len()), k.len().saturating_sub(8)),
                Some(died),
            ));
        }
        if items.is_empty() {
            return Ok(0);
        }
        self.drop_dead(&items, now_ms)?;
        Ok(items.len())
    }

    /// Takes dead letters out of their lists: each item is an `ev_dead`
    /// key and, for an expiry, when the index says it died (it is dropped
    /// only if its record died then: one that was redriven and died again
    /// later has a newer index entry). Each is then finished like a done
    /// delivery, its event removed at the next sweep once nothing else
    /// holds it; its record stays `dead` until then. Returns how many were
    /// taken out. In transactions of up to 256; not flushed.
    fn drop_dead(&self, items: &[(IVec, Option<u64>)], now_ms: u64) -> Result<u64, StoreError> {
        let mut n = 0;
        for chunk in items.chunks(256) {
            let expiry_seq = self.next_id()?;
            let t = &self.ev;
            let _exclusive = self.gate.exclusive();
            let mut mem = self.ev.mem();
            let freed = (
                &t.events,
                &t.deliveries,
                &t.dead,
                &t.dead_at,
                &t.open,
                &t.expire,
            )
                .transaction(|(events, dtree, dead, dead_at, open, expire)| {
                    let mut freed = Vec::new();
                    let mut expiring = Expiring::default();
                    for (dk, died) in chunk {
                        if let Some(at) = died {
                            dead_at.remove(dead_at_key(*at, dk))?;
                        }
                        let Some((function, topic, id)) = parse_dead_key(dk) else {
                            continue;
                        };
                        if dead.get(dk)?.is_none() {
                            continue;
                        }
                        let key = crate::events::delivery_key(id, topic, function);
                        let Some(rec) = tx_delivery(dtree, &key)? else {
                            dead.remove(dk)?;
                            continue;
                        };
                        if rec.status != DeliveryStatus::Dead
                            || died.is_some_and(|at| rec.updated_ms != at)
                        {
                            continue;
                        }
                        dead.remove(dk)?;
                        dead_at.remove(dead_at_key(rec.updated_ms, dk))?;
                        let mut charge = 0;
                        if tx_finish_one(open, id, &key, now_ms, &mut expiring)? {
                            charge = tx_charge(events, id)?;
                        }
                        freed.push((topic.to_string(), charge));
                    }
                    expiring.write(expire, expiry_seq)?;
                    Ok::<_, ConflictableTransactionError<StoreError>>(freed)
                })
                .map_err(abort_on)?;
            n += freed.len() as u64;
            for (topic, charge) in freed {
                mem.add_bytes(&topic, -(charge as i64));
            }
        }
        Ok(n)
    }

    /// Removes everything of the event plane that names `function`: its
    /// subscriptions and schedules, its deliveries still pending or
    /// running on any topic (cancelled: their records say why; an outcome
    /// that comes in later is dropped) and its dead letters. For a deleted
    /// function, and before a name is deployed anew (which catches what a
    /// crash in the middle of a delete left). Several transactions, not
    /// one: the due index is read whole; a crash part-way leaves the rest
    /// for the next call. Not flushed.
    pub fn purge_function_events(
        &self,
        function: &str,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<FunctionPurge, StoreError> {
        let mut purged = FunctionPurge::default();
        for sub in self.subscriptions(None)? {
            if sub.function == function && self.delete_subscription(&sub.topic, function)? {
                purged.subscriptions += 1;
            }
        }
        for s in self.schedules()? {
            if s.function == function && self.delete_schedule(s.id)? {
                purged.schedules += 1;
            }
        }
        let mut entries = Vec::new();
        for kv in self.ev.due.iter() {
            let (entry, dkey) = kv?;
            if crate::events::parse_delivery_key(&dkey).is_some_and(|(_, _, f)| f == function) {
                entries.push((entry, dkey));
            }
        }
        for chunk in entries.chunks(256) {
            let expiry_seq = self.next_id()?;
            let t = &self.ev;
            let _exclusive = self.gate.exclusive();
            let mut mem = self.ev.mem();
            let cancelled = (&t.events, &t.deliveries, &t.due, &t.open, &t.expire)
                .transaction(|(events, dtree, due, open, expire)| {
                    let mut cancelled = Vec::new();
                    let mut expiring = Expiring::default();
                    for (entry, key) in chunk {
                        if due.get(entry)?.as_deref() != Some(&key[..]) {
                            continue;
                        }
                        let rec = tx_delivery(dtree, key)?.or_else(|| pending_record(key, entry));
                        let Some(mut rec) = rec else {
                            continue;
                        };
                        due.remove(entry)?;
                        rec.status = DeliveryStatus::Cancelled;
                        rec.last_error = Some("the function was deleted".into());
                        rec.updated_ms = now_ms;
                        dtree.insert(key, encode(&rec))?;
                        let at = now_ms.saturating_add(retention_ms);
                        let mut charge = 0;
                        if tx_finish_one(open, rec.event_id, key, at, &mut expiring)? {
                            charge = tx_charge(events, rec.event_id)?;
                        }
                        cancelled.push((rec.topic, charge));
                    }
                    expiring.write(expire, expiry_seq)?;
                    Ok::<_, ConflictableTransactionError<StoreError>>(cancelled)
                })
                .map_err(abort_on)?;
            purged.cancelled += cancelled.len() as u64;
            for (topic, charge) in cancelled {
                mem.add_depth(&topic, -1);
                mem.add_bytes(&topic, -(charge as i64));
            }
        }
        purged.dead_letters = self.purge_dead(function, None, now_ms)?;
        Ok(purged)
    }

    /// Removes finished events whose retention ended by `now_ms` (about
    /// `max`: whole expiry entries), with their deliveries, in three sled
    /// batches (see below). A job's events stay while its record does (looked at
    /// again a minute later). Returns how many events were handled
    /// (removed or put off): 0 once nothing more has expired.
    pub fn sweep_events(&self, now_ms: u64, max: usize) -> Result<usize, StoreError> {
        let end = expire_key(now_ms, u64::MAX);
        let mut entries = Vec::new();
        // Event ids, and delivery keys, to remove.
        let mut events = Vec::new();
        let mut deliveries = Vec::new();
        let mut later = Expiring::default();
        for kv in self.ev.expire.range(..=end) {
            if events.len() + later.n >= max {
                break;
            }
            let (expiry, items) = kv?;
            for item in expiry_items(&items) {
                let Some(id) = item.get(..8).map(read_u64) else {
                    continue;
                };
                if item.len() == 8 {
                    // Several deliveries (or none); never a job's.
                    for key in self.ev.deliveries.scan_prefix(item).keys() {
                        deliveries.push(key?);
                    }
                } else {
                    if let Some((_, topic, _)) = crate::events::parse_delivery_key(item)
                        && let Some(job) = crate::events::job::job_of_topic(topic)
                        && self.ev.jobs.contains_key(job.to_be_bytes())?
                    {
                        later.add_delivery(now_ms.saturating_add(60_000), item);
                        continue;
                    }
                    deliveries.push(IVec::from(item));
                }
                events.push(id.to_be_bytes());
            }
            entries.push(expiry);
        }
        if entries.is_empty() {
            return Ok(0);
        }
        // Batches, not a transaction (whose removes each read the old
        // value first): deliveries, then events, then the expiry entries.
        // A crash in between leaves the expiry entries, and the next sweep
        // removes what is left.
        let mut dbatch = sled::Batch::default();
        for key in deliveries {
            dbatch.remove(key);
        }
        let mut ebatch = sled::Batch::default();
        for id in &events {
            ebatch.remove(&id[..]);
        }
        let mut xbatch = sled::Batch::default();
        for expiry in entries {
            xbatch.remove(expiry);
        }
        if later.n > 0 {
            xbatch.insert(
                &expire_key(later.at_ms, self.next_id()?)[..],
                later.items.as_slice(),
            );
        }
        let _exclusive = self.gate.exclusive();
        self.ev.deliveries.apply_batch(dbatch)?;
        self.ev.events.apply_batch(ebatch)?;
        self.ev.expire.apply_batch(xbatch)?;
        Ok(events.len() + later.n)
    }
}

fn job_task_key(job: u64, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&job.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

impl Store {
    /// Creates or replaces a job record. Not flushed.
    pub fn put_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        self.ev.jobs.insert(job.id.to_be_bytes(), encode(job))?;
        Ok(())
    }

    /// A job record.
    pub fn job(&self, id: u64) -> Result<Option<JobRecord>, StoreError> {
        let k = id.to_be_bytes();
        self.ev.jobs.get(k)?.map(|v| decode(&k, &v)).transpose()
    }

    /// Every job record, oldest first.
    pub fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.ev
            .jobs
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Stores a batch of a job's events (empty payloads: the job record
    /// holds it), each with one pending delivery to `function` and its task
    /// entry, in one transaction. Not flushed.
    pub fn add_job_tasks(
        &self,
        job: u64,
        function: &str,
        events: &[(u32, EventRecord)],
    ) -> Result<(), StoreError> {
        let mut rows = Vec::with_capacity(events.len());
        let mut charge = 0;
        for (index, event) in events {
            charge += event.charge(0);
            let seq = self.next_id()?;
            let rec = pending_delivery(event.id, &event.topic, function, event.time_ms, seq);
            let key = crate::events::delivery_key(event.id, &event.topic, function);
            rows.push((
                job_task_key(job, *index),
                event.id.to_be_bytes(),
                encode_event(event, &[], &[]),
                key,
                due_key(event.time_ms, seq),
                encode(&rec),
            ));
        }
        let Some(topic) = events.first().map(|(_, e)| e.topic.clone()) else {
            return Ok(());
        };
        let t = &self.ev;
        let _exclusive = self.gate.exclusive();
        let mut mem = self.ev.mem();
        (&t.events, &t.deliveries, &t.due, &t.job_tasks)
            .transaction(|(events, dtree, due, tasks)| {
                for (tk, id, event, key, dk, rec) in &rows {
                    events.insert(id, event.as_slice())?;
                    dtree.insert(key.as_slice(), rec.as_slice())?;
                    due.insert(dk, key.as_slice())?;
                    tasks.insert(tk, id)?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(abort_on)?;
        mem.add_depth(&topic, rows.len() as i64);
        mem.add_bytes(&topic, charge as i64);
        Ok(())
    }

    /// A job's tasks in index order: (index, its delivery).
    pub fn job_tasks(&self, job: u64) -> Result<Vec<(u32, DeliveryRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.ev.job_tasks.scan_prefix(job.to_be_bytes()) {
            let (k, v) = kv?;
            let index = k
                .get(8..12)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .unwrap_or_default();
            let id = read_u64(&v);
            if let Some(d) = self.deliveries_of(id)?.into_iter().next() {
                out.push((index, d));
            }
        }
        Ok(out)
    }

    /// Cancels a job's pending deliveries (out of the due index), in
    /// transactions of up to 500. Claimed ones are left to finish. Returns
    /// how many were cancelled. Not flushed.
    pub fn cancel_job_tasks(
        &self,
        job: u64,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut keys = Vec::new();
        for v in self.ev.job_tasks.scan_prefix(job.to_be_bytes()).values() {
            let id = read_u64(&v?);
            for k in self.ev.deliveries.scan_prefix(id.to_be_bytes()).keys() {
                keys.push(k?);
            }
        }
        let mut n = 0;
        for chunk in keys.chunks(500) {
            let expiry_seq = self.next_id()?;
            let t = &self.ev;
            let _exclusive = self.gate.exclusive();
            let mut mem = self.ev.mem();
            let cancelled = (&t.events, &t.deliveries, &t.due, &t.open, &t.expire)
                .transaction(|(events, dtree, due, open, expire)| {
                    let mut topics = Vec::new();
                    let mut expiring = Expiring::default();
                    for key in chunk {
                        let Some(mut rec) = tx_delivery(dtree, key)? else {
                            continue;
                        };
                        if rec.status != DeliveryStatus::Pending || mem.running.contains_key(key) {
                            continue;
                        }
                        due.remove(&due_key(rec.due_ms, rec.due_seq))?;
                        rec.status = DeliveryStatus::Cancelled;
                        rec.last_error = Some("the job was cancelled".into());
                        rec.updated_ms = now_ms;
                        dtree.insert(key, encode(&rec))?;
                        let at = now_ms.saturating_add(retention_ms);
                        let mut freed = 0;
                        if tx_finish_one(open, rec.event_id, key, at, &mut expiring)? {
                            freed = tx_charge(events, rec.event_id)?;
                        }
                        topics.push((rec.topic, freed));
                    }
                    expiring.write(expire, expiry_seq)?;
                    Ok(topics)
                })
                .map_err(abort_on)?;
            n += cancelled.len() as u64;
            for (topic, freed) in cancelled {
                mem.add_depth(&topic, -1);
                mem.add_bytes(&topic, -(freed as i64));
            }
        }
        Ok(n)
    }

    /// Removes a job record and its task entries (its events go with the
    /// event retention). Not flushed.
    pub fn delete_job(&self, job: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for k in self.ev.job_tasks.scan_prefix(job.to_be_bytes()).keys() {
            batch.remove(k?);
        }
        let _exclusive = self.gate.exclusive();
        self.ev.job_tasks.apply_batch(batch)?;
        self.ev.jobs.remove(job.to_be_bytes())?;
        Ok(())
    }
}

fn read_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, versions: &[(u64, &str)]) -> FunctionRecord {
        FunctionRecord {
            name: name.into(),
            active_version: versions.last().unwrap().0,
            created_at_ms: 1,
            updated_at_ms: 1,
            versions: versions
                .iter()
                .map(|(v, sha)| VersionRecord {
                    version: *v,
                    sha256: sha.to_string(),
                    size_bytes: 3,
                    created_at_ms: 1,
                    routes: vec!["/x".into()],
                    env: BTreeMap::new(),
                    limits: Limits::default(),
                    config_env: false,
                    allow_outbound: Vec::new(),
                    static_dir: None,
                })
                .collect(),
        }
    }

    /// Stores a version of `name` (its versions so far, by artifact) with
    /// the artifact of the last.
    fn put(store: &Store, name: &str, versions: &[(u64, &str)], artifact: &[u8]) {
        store
            .put_version(NewVersion {
                record: &record(name, versions),
                sha256: versions.last().unwrap().1,
                artifact,
            })
            .unwrap();
    }

    /// The contents of an artifact's verified compiled code, if any.
    fn code(store: &Store, sha: &str, key: &str) -> Option<Vec<u8>> {
        let code = store.compiled_code(sha, key).unwrap()?;
        Some(std::fs::read(code.path()).unwrap())
    }

    #[test]
    fn deploy_dedupes_and_delete_frees_only_unused_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        store.put_compiled("a1", "e", b"c1").unwrap();
        put(&store, "a", &[(1, "a1")], b"one");
        put(&store, "a", &[(1, "a1"), (2, "a2")], b"two");
        put(&store, "b", &[(1, "a1")], b"one");
        assert_eq!(store.artifact_count(), 2);
        assert_eq!(store.function("a").unwrap().unwrap().active_version, 2);
        let file = store.compiled_code("a1", "e").unwrap().unwrap();
        let file = file.name().to_path_buf();
        assert_eq!(std::fs::read(&file).unwrap(), b"c1");

        assert_eq!(store.delete_function("a").unwrap().unwrap(), ["a2"]);
        store.drop_compiled(&["a2".into()]).unwrap();
        assert!(store.function("a").unwrap().is_none());
        // a1 is still used by b; a2 is gone.
        assert!(store.artifact("a1").unwrap().is_some());
        assert!(store.compiled_code("a1", "e").unwrap().is_some());
        assert!(store.artifact("a2").unwrap().is_none());
        let freed = store.delete_function("b").unwrap().unwrap();
        assert_eq!(freed, ["a1"]);
        assert_eq!(store.artifact_count(), 0);
        assert!(file.exists(), "kept until the deletion is flushed");
        store.drop_compiled(&freed).unwrap();
        assert!(store.compiled_code("a1", "e").unwrap().is_none());
        assert!(!file.exists());
        assert!(store.compiled_sums.is_empty(), "its checksum went with it");
        assert!(store.delete_function("b").unwrap().is_none());
    }

    #[test]
    fn compiled_code_without_its_artifact_is_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            store.put_compiled("a1", "e", b"kept").unwrap();
            put(&store, "a", &[(1, "a1")], b"one");
            // A crash after the code was written, before the transaction;
            // and one in the middle of writing a file.
            store.put_compiled("b2", "e", b"orphan").unwrap();
            std::fs::write(dir.path().join("compiled/b3-e.cwasm.0123.tmp"), b"half").unwrap();
            // A failed deploy forgets its code; a stored artifact keeps it.
            store.put_compiled("c4", "e", b"failed").unwrap();
            store.forget_compiled("c4").unwrap();
            assert!(store.compiled_code("c4", "e").unwrap().is_none());
            store.forget_compiled("a1").unwrap();
            assert!(store.compiled_code("a1", "e").unwrap().is_some());
            // Another engine build's code goes when this engine asks.
            store.put_compiled("a1", "f0", b"older engine").unwrap();
            store.drop_other_engines("e").unwrap();
            assert!(store.compiled_code("a1", "f0").unwrap().is_none());
            assert!(store.compiled_code("a1", "e").unwrap().is_some());
            // A file an earlier version named with its checksum.
            std::fs::write(dir.path().join("compiled/a1-e-0123abcd.cwasm"), b"old").unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(dir.path().join("compiled"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a1-e.cwasm"]);
        assert_eq!(code(&store, "a1", "e").unwrap(), b"kept");
        let sums: Vec<_> = store
            .compiled_sums
            .iter()
            .keys()
            .map(|k| k.unwrap())
            .collect();
        assert_eq!(sums, [IVec::from("a1-e")], "only the kept file's checksum");
    }

    #[test]
    fn damaged_compiled_code_is_not_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let path = store.put_compiled("a1", "e", b"compiled code").unwrap();
        let path = path.name().to_path_buf();
        assert_eq!(code(&store, "a1", "e").unwrap(), b"compiled code");
        // Rewritten with other contents: the same name, the new contents.
        let path2 = store.put_compiled("a1", "e", b"compiled again").unwrap();
        assert_eq!(path2.name(), path);
        assert_eq!(code(&store, "a1", "e").unwrap(), b"compiled again");
        // The disk flips a byte: the file no longer matches its checksum.
        std::fs::write(&path, b"compiled agaiN").unwrap();
        assert_eq!(code(&store, "a1", "e"), None);
        assert!(!path.exists(), "a damaged file is removed");
        assert!(store.compiled_sums.is_empty(), "and its checksum");
    }

    /// A file the store did not write is never handed out, whatever its
    /// name says: planted under the right name, copied from another
    /// artifact's code, or a symbolic link to it.
    #[test]
    fn planted_compiled_code_is_not_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let compiled = dir.path().join("compiled");
        let mine = compiled.join("a1-e.cwasm");
        // No record at all: a file under the name a1's code would have.
        std::fs::write(&mine, b"planted").unwrap();
        assert_eq!(code(&store, "a1", "e"), None);
        assert!(!mine.exists());
        // Not a file at all (opening a FIFO must not wait for a writer).
        store.put_compiled("a1", "e", b"a1's code").unwrap();
        std::fs::remove_file(&mine).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&mine)
            .status()
            .unwrap();
        assert!(made.success());
        assert_eq!(code(&store, "a1", "e"), None);
        assert!(std::fs::symlink_metadata(&mine).is_err(), "removed");
        // Another artifact's genuine code copied over a1's.
        let other = store.put_compiled("b2", "e", b"b2's code").unwrap();
        store.put_compiled("a1", "e", b"a1's code").unwrap();
        std::fs::copy(other.name(), &mine).unwrap();
        assert_eq!(code(&store, "a1", "e"), None);
        assert!(!mine.exists());
        assert_eq!(code(&store, "b2", "e").unwrap(), b"b2's code");
        // A symbolic link to the other's code.
        store.put_compiled("a1", "e", b"a1's code").unwrap();
        std::fs::remove_file(&mine).unwrap();
        std::os::unix::fs::symlink(other.name(), &mine).unwrap();
        assert_eq!(code(&store, "a1", "e"), None);
        assert!(
            std::fs::symlink_metadata(&mine).is_err(),
            "the link is removed"
        );
        assert_eq!(code(&store, "b2", "e").unwrap(), b"b2's code");
        // Written again by the store: handed out again.
        store.put_compiled("a1", "e", b"a1's code").unwrap();
        assert_eq!(code(&store, "a1", "e").unwrap(), b"a1's code");
    }

    /// A data directory of an earlier version: files, no checksums. They
    /// are not run; each is compiled again once.
    #[test]
    fn compiled_code_without_a_checksum_is_compiled_again_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            store.put_compiled("a1", "e", b"code").unwrap();
            put(&store, "a", &[(1, "a1")], b"one");
            store.db.drop_tree("compiled_sums").unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(dir.path().join("compiled/a1-e.cwasm").exists());
        assert_eq!(code(&store, "a1", "e"), None);
        store.put_compiled("a1", "e", b"code").unwrap();
        store.flush_blocking().unwrap();
        drop(store);
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(code(&store, "a1", "e").unwrap(), b"code");
    }

    /// What is mapped is the file that was checked, even if its name is
    /// replaced between the check and the load.
    #[cfg(target_os = "linux")]
    #[test]
    fn verified_code_is_loaded_through_its_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        store.put_compiled("a1", "e", b"checked").unwrap();
        let verified = store.compiled_code("a1", "e").unwrap().unwrap();
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
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            store.put_compiled("a1", "e", b"code").unwrap();
            put(&store, "a", &[(1, "a1")], b"one");
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
        let _store = Store::open(dir.path(), 1 << 20).unwrap();
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
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        for (sha, key) in [("../x", "e"), ("a1", "e/../../y"), ("", "e"), ("a1", "")] {
            assert!(
                store.put_compiled(sha, key, b"x").is_err(),
                "{sha:?} {key:?}"
            );
            assert!(store.compiled_code(sha, key).is_err());
        }
    }

    fn ev_record(id: u64) -> EventRecord {
        EventRecord {
            id,
            topic: "t".into(),
            time_ms: 1,
            content_type: None,
            path: None,
            headers: Vec::new(),
            size_bytes: 1,
        }
    }

    /// An outcome of a delivery cancelled while it ran is dropped, and its
    /// claim ends either way.
    #[test]
    fn an_outcome_after_a_cancel_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        store
            .publish_event(&ev_record(1), b"x", &["a".into()], 3, 1000)
            .unwrap();
        let due = store.due_deliveries(1, 10).unwrap();
        let (key, _) = store.claim_delivery(&due[0].0, 5).unwrap().unwrap();
        // A claimed entry cannot be claimed twice.
        assert!(store.claim_delivery(&due[0].0, 6).unwrap().is_none());
        store
            .finish_delivery(&key, Outcome::Retry(100), Some("boom"), 7, 1000)
            .unwrap();
        let due = store.due_deliveries(100, 10).unwrap();
        let (key, rec) = store.claim_delivery(&due[0].0, 100).unwrap().unwrap();
        assert_eq!((rec.attempts, rec.attempt_times_ms), (1, vec![5, 100]));
        // Another writer moves it on meanwhile (here: a redrive-like
        // rewrite of its due entry).
        store.ev.due.remove(&due[0].0).unwrap();
        store
            .finish_delivery(&key, Outcome::Done, None, 110, 1000)
            .unwrap();
        let rec = &store.deliveries_of(1).unwrap()[0];
        assert_eq!(rec.status, DeliveryStatus::Pending);
        assert_eq!(rec.attempts, 1);
        assert!(store.ev.mem().running.is_empty());
    }

    // ------------------------------------------------- event storage quotas

    fn topic_event(id: u64, topic: &str) -> EventRecord {
        EventRecord {
            topic: topic.into(),
            ..ev_record(id)
        }
    }

    /// Publishes one event with a 100-byte payload, delivered to `to`.
    fn publish_q(
        store: &Store,
        id: u64,
        topic: &str,
        to: &[&str],
        topic_quota: u64,
        host_quota: u64,
    ) -> Result<(), PublishRefused> {
        let to: Vec<String> = to.iter().map(|f| f.to_string()).collect();
        let event = topic_event(id, topic);
        let writes = EventWrites {
            publishes: &[NewEvent {
                event: &event,
                payload: &[b'x'; 100],
                to: &to,
                dedupe: false,
            }],
            max_topic_bytes: topic_quota,
            max_host_bytes: host_quota,
            retention_ms: 1000,
            ..EventWrites::default()
        };
        store.event_writes(&writes).unwrap().published[0]
    }

    /// Claims the first due delivery of `function` and records `outcome`.
    fn finish_first(store: &Store, function: &str, outcome: Outcome, now_ms: u64) {
        finish_of(store, None, function, outcome, now_ms);
    }

    /// The same, of event `id` if given.
    fn finish_of(store: &Store, id: Option<u64>, function: &str, outcome: Outcome, now_ms: u64) {
        let due = store.due_deliveries(u64::MAX - 1, 1000).unwrap();
        let (entry, _) = due
            .iter()
            .find(|(_, k)| {
                let (event, _, f) = crate::events::parse_delivery_key(k).unwrap();
                f == function && id.is_none_or(|id| id == event)
            })
            .expect("a due delivery of the function");
        let (key, _) = store.claim_delivery(entry, now_ms).unwrap().unwrap();
        store
            .finish_delivery(&key, outcome, Some("boom"), now_ms, 1000)
            .unwrap();
    }

    #[test]
    fn quotas_refuse_past_the_limit_store_nothing_and_free_with_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let charge = topic_event(1, "t").charge(100);
        // Two events fit in the topic's quota, a third does not.
        let (topic_q, host_q) = (2 * charge + charge / 2, 3 * charge + charge / 2);
        publish_q(&store, 1, "t", &["a"], topic_q, host_q).unwrap();
        publish_q(&store, 2, "t", &["a", "b"], topic_q, host_q).unwrap();
        assert_eq!(store.event_bytes(Some("t")), 2 * charge);
        assert_eq!(
            publish_q(&store, 3, "t", &["a"], topic_q, host_q),
            Err(PublishRefused::TopicQuota(2 * charge))
        );
        assert!(
            store.event(3).unwrap().is_none(),
            "a refused event is not stored"
        );
        assert_eq!(store.queue_depth_total().unwrap(), 3);
        // Another topic has room of its own, until the host's is used up.
        publish_q(&store, 4, "u", &["a"], topic_q, host_q).unwrap();
        assert_eq!(
            publish_q(&store, 5, "v", &["a"], topic_q, host_q),
            Err(PublishRefused::HostQuota(3 * charge))
        );
        assert!(store.event(5).unwrap().is_none());
        // An event nobody receives is not held, and stores no payload.
        publish_q(&store, 6, "v", &[], topic_q, host_q).unwrap();
        assert_eq!(store.event(6).unwrap().unwrap().1.len(), 0);
        assert_eq!(store.event_bytes(None), 3 * charge);

        // Event 1 done: freed. Event 2 stays held until both deliveries
        // are finished; a retry keeps it held.
        finish_first(&store, "a", Outcome::Done, 10);
        assert_eq!(store.event_bytes(Some("t")), charge);
        publish_q(&store, 7, "t", &["a"], topic_q, host_q).unwrap();
        assert_eq!(store.event_bytes(Some("t")), 2 * charge);
        finish_first(&store, "b", Outcome::Retry(20), 10);
        assert_eq!(store.event_bytes(Some("t")), 2 * charge);
        // Dead letters are held too.
        finish_first(&store, "b", Outcome::Dead, 30);
        finish_first(&store, "a", Outcome::Done, 30);
        assert_eq!(
            store.event_bytes(Some("t")),
            2 * charge,
            "event 2 is dead for b"
        );
        assert_eq!(store.dead_deliveries("b", None, 10).unwrap().len(), 1);
        assert_eq!(store.purge_dead("b", Some("t"), 40).unwrap(), 1);
        assert!(store.dead_deliveries("b", None, 10).unwrap().is_empty());
        assert_eq!(store.event_bytes(Some("t")), charge);
        // Purged: not redrivable, and the event goes at the next sweep.
        assert!(store.redrive("b", None, None, 50).unwrap().is_empty());
        assert!(store.sweep_events(40, 100).unwrap() > 0);
        assert!(store.event(2).unwrap().is_none());
    }

    #[test]
    fn held_bytes_are_rebuilt_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, depth) = {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            for id in 1..=4 {
                publish_q(&store, id, "t", &["a"], u64::MAX, u64::MAX).unwrap();
            }
            publish_q(&store, 5, "u", &["a", "b"], u64::MAX, u64::MAX).unwrap();
            // One done (freed), one dead (held), one running (held).
            finish_first(&store, "a", Outcome::Done, 10);
            finish_first(&store, "a", Outcome::Dead, 10);
            let due = store.due_deliveries(u64::MAX - 1, 1).unwrap();
            store.claim_delivery(&due[0].0, 11).unwrap().unwrap();
            store.flush_blocking().unwrap();
            let charge = topic_event(1, "t").charge(100);
            assert_eq!(store.event_bytes(Some("t")), 3 * charge);
            (store.event_bytes(None), store.queue_depth_total().unwrap())
        };
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.event_bytes(None), bytes);
        assert_eq!(store.queue_depth_total().unwrap(), depth);
        // And a refusal after the restart counts them.
        let charge = topic_event(1, "t").charge(100);
        assert_eq!(
            publish_q(&store, 9, "t", &["a"], 3 * charge, u64::MAX),
            Err(PublishRefused::TopicQuota(3 * charge))
        );
    }

    #[test]
    fn a_postponed_delivery_uses_no_attempt_and_keeps_its_wait_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        publish_q(&store, 1, "t", &["a"], u64::MAX, u64::MAX).unwrap();
        let bytes = store.event_bytes(None);
        // Due at 1 (the event's time); postponed at 100 until 1100.
        finish_first(&store, "a", Outcome::Postponed(1100), 100);
        let rec = &store.deliveries_of(1).unwrap()[0];
        assert_eq!(rec.status, DeliveryStatus::Pending);
        assert_eq!(rec.attempts, 0);
        assert!(rec.attempt_times_ms.is_empty(), "{rec:?}");
        assert_eq!((rec.due_ms, rec.postponed_ms), (1100, 1099));
        assert_eq!(store.queue_depth_total().unwrap(), 1);
        assert_eq!(store.event_bytes(None), bytes);
        assert!(store.due_deliveries(1099, 10).unwrap().is_empty());
        // Again: the waits add up; then a real attempt counts.
        finish_first(&store, "a", Outcome::Postponed(2000), 1200);
        finish_first(&store, "a", Outcome::Done, 2100);
        let rec = &store.deliveries_of(1).unwrap()[0];
        assert_eq!((rec.attempts, rec.postponed_ms), (1, 1999));
        assert_eq!(rec.attempt_times_ms, [2100]);
        assert_eq!(store.event_bytes(None), 0);
    }

    #[test]
    fn a_tick_fired_again_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let id = crate::events::schedule::tick_event_id(7, 60_000);
        let event = topic_event(id, "schedule:0000000000000007");
        let to = vec!["f".to_string()];
        let tick = |store: &Store| {
            let writes = EventWrites {
                publishes: &[NewEvent {
                    event: &event,
                    payload: b"tick",
                    to: &to,
                    dedupe: true,
                }],
                ..EventWrites::default()
            };
            store.event_writes(&writes).unwrap().published[0]
        };
        assert_eq!(tick(&store), Ok(()));
        assert_eq!(tick(&store), Ok(()), "answered as written");
        assert_eq!(store.queue_depth_total().unwrap(), 1);
        assert_eq!(store.due_deliveries(u64::MAX - 1, 10).unwrap().len(), 1);
        assert_eq!(store.event_bytes(None), event.charge(4));
        assert_eq!(store.deliveries_of(id).unwrap().len(), 1);
    }

    #[test]
    fn dead_letters_expire_after_their_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        publish_q(&store, 1, "t", &["a"], u64::MAX, u64::MAX).unwrap();
        publish_q(&store, 2, "t", &["a"], u64::MAX, u64::MAX).unwrap();
        finish_first(&store, "a", Outcome::Dead, 100);
        finish_first(&store, "a", Outcome::Dead, 500);
        // Event 1 redriven (its index entry goes) and dead again at 900.
        store.redrive("a", None, Some(&[1]), 600).unwrap();
        finish_first(&store, "a", Outcome::Dead, 900);
        let dead = |s: &Store| {
            s.dead_deliveries("a", None, 10)
                .unwrap()
                .iter()
                .map(|d| d.event_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(dead(&store), [1, 2]);
        // Retention 1000: at 1499 nothing has expired.
        assert_eq!(store.expire_dead_letters(1499, 1000, 10).unwrap(), 0);
        assert_eq!(store.expire_dead_letters(1500, 1000, 10).unwrap(), 1);
        assert_eq!(dead(&store), [1]);
        assert_eq!(store.expire_dead_letters(1500, 1000, 10).unwrap(), 0);
        assert_eq!(store.event_bytes(None), topic_event(1, "t").charge(100));
        assert_eq!(store.expire_dead_letters(1900, 1000, 10).unwrap(), 1);
        assert!(dead(&store).is_empty());
        assert_eq!(store.event_bytes(None), 0);
        assert!(store.sweep_events(1900, 100).unwrap() > 0);
        assert!(store.event(1).unwrap().is_none() && store.event(2).unwrap().is_none());
    }

    /// A store written before dead letters expired has no index: it is
    /// built when the store opens.
    #[test]
    fn dead_letters_of_an_older_store_are_indexed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            publish_q(&store, 1, "t", &["a"], u64::MAX, u64::MAX).unwrap();
            finish_first(&store, "a", Outcome::Dead, 100);
            store.db.drop_tree("ev_dead_at").unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.expire_dead_letters(1099, 1000, 10).unwrap(), 0);
        assert_eq!(store.expire_dead_letters(1100, 1000, 10).unwrap(), 1);
        assert!(store.dead_deliveries("a", None, 10).unwrap().is_empty());
    }

    #[test]
    fn a_function_purge_leaves_other_functions_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let sub = |topic: &str, function: &str| Subscription {
            topic: topic.into(),
            function: function.into(),
            path: "/".into(),
            concurrency: 1,
            retry: crate::events::RetryPolicy::default(),
            created_at_ms: 1,
        };
        store.put_subscription(&sub("t", "gone")).unwrap();
        store.put_subscription(&sub("t", "kept")).unwrap();
        let schedule = |id: u64, function: &str| Schedule {
            id,
            function: function.into(),
            cron: "* * * * *".into(),
            tz: "UTC".into(),
            path: "/".into(),
            payload: String::new(),
            content_type: None,
            created_at_ms: 1,
            last_fired_ms: 0,
            next_ms: None,
        };
        store.put_schedule(&schedule(100, "gone")).unwrap();
        store.put_schedule(&schedule(101, "kept")).unwrap();
        publish_q(&store, 1, "t", &["gone", "kept"], u64::MAX, u64::MAX).unwrap();
        publish_q(&store, 2, "invoke:gone", &["gone"], u64::MAX, u64::MAX).unwrap();
        publish_q(&store, 3, "t", &["gone"], u64::MAX, u64::MAX).unwrap();
        publish_q(&store, 4, "t", &["gone"], u64::MAX, u64::MAX).unwrap();
        // Event 3: dead; event 4: running when the function goes.
        finish_of(&store, Some(3), "gone", Outcome::Dead, 10);
        let running = store
            .due_deliveries(u64::MAX - 1, 10)
            .unwrap()
            .into_iter()
            .find(|(_, k)| crate::events::parse_delivery_key(k).unwrap().0 == 4)
            .unwrap();
        let (rkey, _) = store.claim_delivery(&running.0, 11).unwrap().unwrap();

        let purged = store.purge_function_events("gone", 20, 1000).unwrap();
        assert_eq!(
            purged,
            FunctionPurge {
                subscriptions: 1,
                schedules: 1,
                cancelled: 3,
                dead_letters: 1,
            }
        );
        let subs = store.subscriptions(None).unwrap();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].function, "kept");
        let schedules = store.schedules().unwrap();
        assert_eq!(schedules.iter().map(|s| s.id).collect::<Vec<_>>(), [101]);
        assert!(store.dead_deliveries("gone", None, 10).unwrap().is_empty());
        // Only kept's delivery of event 1 is left, and only event 1 held.
        let due = store.due_deliveries(u64::MAX - 1, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            crate::events::parse_delivery_key(&due[0].1).unwrap(),
            (1, "t", "kept")
        );
        assert_eq!(store.queue_depth_total().unwrap(), 1);
        assert_eq!(store.event_bytes(None), topic_event(1, "t").charge(100));
        let statuses: Vec<_> = store
            .deliveries_of(1)
            .unwrap()
            .iter()
            .map(|d| (d.function.clone(), d.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("gone".to_string(), DeliveryStatus::Cancelled),
                ("kept".to_string(), DeliveryStatus::Pending)
            ]
        );
        // The running one's outcome, when it comes, is dropped.
        store
            .finish_delivery(&rkey, Outcome::Done, None, 30, 1000)
            .unwrap();
        let rec = &store.deliveries_of(4).unwrap()[0];
        assert_eq!(rec.status, DeliveryStatus::Cancelled);
        assert_eq!(store.queue_depth_total().unwrap(), 1);
        // A second purge finds nothing.
        assert_eq!(
            store.purge_function_events("gone", 40, 1000).unwrap(),
            FunctionPurge::default()
        );
    }
}
