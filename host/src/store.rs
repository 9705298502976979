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
//!
//! Writes that belong together (a deploy, a delete) happen in one sled
//! transaction, and every write a client is told about is flushed first
//! ([`Store::flush`]), so an acknowledged deploy survives `kill -9`.
//!
//! Compiled code lives beside the database, one file per artifact and
//! engine: `compiled/<sha256>-<engine-key>-<checksum>.cwasm` (wasmtime's
//! serialized code; the checksum of its contents is checked before it is
//! loaded), so a restart with the same engine settings never recompiles. The
//! engine maps these files into memory instead of copying them: code pages
//! are shared with the kernel's page cache and loaded as they are touched,
//! and sled's cache does not hold a copy. A file is written whole under a
//! temporary name, synced and renamed into place, never changed in place
//! (a mapped file must not change), and removed with the last version that
//! uses its artifact. Compiled code can always be rebuilt from the artifact,
//! so it is not part of a deploy's transaction: it is written (and synced)
//! before it, and a file a crash left without an artifact is removed when
//! the store opens.

use std::collections::{BTreeMap, HashMap};
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

/// The start of the file names of an artifact's compiled code for an
/// engine: `<sha256>-<engine-key>-` (both hex, checked, so a name never
/// leaves the directory); the checksum of the contents follows.
fn compiled_prefix(sha256: &str, engine_key: &str) -> Result<String, StoreError> {
    if !is_hex(sha256) || !is_hex(engine_key) {
        return Err(StoreError::Corrupt {
            key: format!("{sha256}-{engine_key}"),
            reason: "an artifact hash and engine key are hex".into(),
        });
    }
    Ok(format!("{sha256}-{engine_key}-"))
}

/// The artifact hash, engine key and checksum in a compiled-code file name.
fn parse_compiled_name(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.strip_suffix(COMPILED_SUFFIX)?.splitn(3, '-');
    let (sha, key, sum) = (parts.next()?, parts.next()?, parts.next()?);
    (is_hex(sha) && is_hex(key) && is_hex(sum)).then_some((sha, key, sum))
}

/// The checksum in a compiled-code file name: the first 64 bits of the
/// contents' sha256, hex. Machine code is run as it is, so a file the disk
/// damaged must be caught before it is mapped (sled checksums its records;
/// these files are outside it).
fn checksum(reader: impl std::io::Read) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut reader = std::io::BufReader::with_capacity(64 << 10, reader);
    loop {
        let chunk = std::io::BufRead::fill_buf(&mut reader)?;
        if chunk.is_empty() {
            break;
        }
        hasher.update(chunk);
        let n = chunk.len();
        std::io::BufRead::consume(&mut reader, n);
    }
    Ok(hex::encode(&hasher.finalize()[..8]))
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
        std::fs::create_dir_all(&compiled_dir)?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(cache_bytes)
            // Durability comes from explicit flushes before acknowledging a
            // write; the periodic background flush only bounds the loss of
            // unacknowledged data and is kept at sled's default.
            .mode(sled::Mode::LowSpace)
            .open()?;
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

    /// The file of an artifact's compiled code for an engine, if there is
    /// one and its contents match its checksum (a damaged file is removed:
    /// the code is rebuilt from the artifact). The file is never changed in
    /// place (see the module docs), so it can be mapped for as long as it
    /// is used.
    pub fn compiled_path(
        &self,
        sha256: &str,
        engine_key: &str,
    ) -> Result<Option<PathBuf>, StoreError> {
        let prefix = compiled_prefix(sha256, engine_key)?;
        let Some(name) = self.compiled_names(&prefix)?.pop() else {
            return Ok(None);
        };
        let path = self.compiled_dir.join(&name);
        let expected = parse_compiled_name(&name).map_or("", |(.., sum)| sum);
        let actual = match std::fs::File::open(&path) {
            Ok(f) => checksum(f)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if actual != expected {
            tracing::warn!(file = %path.display(), "compiled code does not match its checksum (damaged); removed");
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(path))
    }

    /// The well-formed compiled-code file names that start with `prefix`,
    /// sorted.
    fn compiled_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&*self.compiled_dir)? {
            if let Ok(name) = entry?.file_name().into_string()
                && name.starts_with(prefix)
                && parse_compiled_name(&name).is_some()
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Writes an artifact's compiled code for an engine, durably (synced,
    /// with its directory entry), replacing any earlier file of it whole;
    /// returns the file. Called before the deploy's transaction, or to
    /// rebuild compiled code (another engine version, an unreadable file).
    pub fn put_compiled(
        &self,
        sha256: &str,
        engine_key: &str,
        bytes: &[u8],
    ) -> Result<PathBuf, StoreError> {
        use std::io::Write as _;
        let prefix = compiled_prefix(sha256, engine_key)?;
        let name = format!("{prefix}{}{COMPILED_SUFFIX}", checksum(bytes)?);
        let path = self.compiled_dir.join(&name);
        let temp = self.compiled_dir.join(format!(
            "{name}.{:016x}{TEMP_SUFFIX}",
            rand::random::<u64>()
        ));
        let written = (|| {
            let mut f = std::fs::File::create_new(&temp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&temp, &path)?;
            std::fs::File::open(&*self.compiled_dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(e.into());
        }
        // Code compiled earlier (other contents: a damaged file, another
        // compiler build with the same engine key) goes; a version still
        // running on it keeps its mapping.
        for old in self.compiled_names(&prefix)? {
            if old != name {
                let _ = std::fs::remove_file(self.compiled_dir.join(old));
            }
        }
        Ok(path)
    }

    /// Removes an artifact's compiled code unless the artifact is stored
    /// (a deploy whose transaction failed after its code was written).
    pub fn forget_compiled(&self, sha256: &str) -> Result<(), StoreError> {
        if !self.has_artifact(sha256)? {
            self.remove_compiled(false, |sha, _| sha == sha256)?;
        }
        Ok(())
    }

    /// Removes the compiled-code files for which `gone(sha256, engine_key)`
    /// holds, and with `temporaries` the half-written files too (only on
    /// open: a deploy may be writing one).
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
            } else if let Some((sha, key, _)) = parse_compiled_name(name) {
                gone(sha, key)
            } else {
                // Not a name this store writes: only on open.
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
        Ok(removed)
    }

    /// On open: removes compiled code whose artifact is not stored (a crash
    /// between writing it and the deploy's transaction, or during a
    /// delete) and half-written files; drops the tree where earlier
    /// versions kept compiled code (it is rebuilt from the artifacts once).
    fn tidy_compiled(&self) -> Result<(), StoreError> {
        let removed =
            self.remove_compiled(true, |sha, _| !self.has_artifact(sha).unwrap_or(true))?;
        if removed > 0 {
            tracing::info!(
                files = removed,
                "removed compiled code of artifacts no longer stored"
            );
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
// topic (counted from `ev_due` on open) and the claimed deliveries being
// run. Neither is written per event: a claim costs no write; a publish
// writes the event and a due entry per delivery; an outcome removes the due
// entry and writes the delivery's record; the events that finish in one
// transaction share one expiry entry.

/// The event-plane trees (opened once).
#[derive(Clone)]
pub(crate) struct EventTrees {
    events: sled::Tree,
    subs: sled::Tree,
    deliveries: sled::Tree,
    due: sled::Tree,
    dead: sled::Tree,
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
}

impl EventMemory {
    fn add_depth(&mut self, topic: &str, delta: i64) {
        let n = self.depth.get(topic).copied().unwrap_or(0);
        let n = (n as i64).saturating_add(delta).max(0) as u64;
        if n == 0 {
            self.depth.remove(topic);
        } else {
            self.depth.insert(topic.to_string(), n);
        }
    }
}

impl EventTrees {
    fn mem(&self) -> std::sync::MutexGuard<'_, EventMemory> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(db: &sled::Db) -> Result<EventTrees, StoreError> {
        let due = db.open_tree("ev_due")?;
        let mut mem = EventMemory::default();
        for dkey in due.iter().values() {
            let dkey = dkey?;
            if let Some((_, topic, _)) = crate::events::parse_delivery_key(&dkey) {
                mem.add_depth(topic, 1);
            }
        }
        Ok(EventTrees {
            mem: Arc::new(Mutex::new(mem)),
            events: db.open_tree("ev_events")?,
            subs: db.open_tree("ev_subs")?,
            deliveries: db.open_tree("ev_deliveries")?,
            due,
            dead: db.open_tree("ev_dead")?,
            open: db.open_tree("ev_open")?,
            expire: db.open_tree("ev_expire")?,
            schedules: db.open_tree("ev_schedules")?,
            jobs: db.open_tree("ev_jobs")?,
            job_tasks: db.open_tree("ev_job_tasks")?,
        })
    }
}

/// Why a publish wrote nothing (tests: [`Store::publish_event`]).
#[cfg(test)]
#[derive(Debug)]
pub enum PublishRefused {
    /// The topic already has this many pending deliveries.
    QueueFull(u64),
}

/// One event of [`Store::event_writes`]: the record, its payload and the
/// functions it is delivered to (on its topic).
pub struct NewEvent<'a> {
    /// The record.
    pub event: &'a EventRecord,
    /// The payload.
    pub payload: &'a [u8],
    /// One pending delivery each.
    pub to: &'a [String],
}

/// What [`Store::event_writes`] writes in one transaction.
#[derive(Default)]
pub struct EventWrites<'a> {
    /// Outcomes of finished attempts.
    pub finishes: &'a [Finish],
    /// New events.
    pub publishes: &'a [NewEvent<'a>],
    /// Pending deliveries a topic may have (publishes past it are refused).
    pub max_depth: u64,
    /// How long finished events are kept.
    pub retention_ms: u64,
}

/// What [`Store::event_writes`] did.
pub struct EventWritten {
    /// Per new event: written, or refused with the topic's queue depth.
    pub published: Vec<Result<(), u64>>,
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
/// entry has this one delivery only).
fn tx_finish_one(
    open: &Tx,
    id: u64,
    key: &[u8],
    at_ms: u64,
    expiring: &mut Expiring,
) -> TxResult<()> {
    let open_key = id.to_be_bytes();
    let Some(v) = open.get(open_key)? else {
        expiring.add_delivery(at_ms, key);
        return Ok(());
    };
    let left = read_u64(&v).saturating_sub(1);
    if left == 0 {
        open.remove(&open_key)?;
        expiring.add_event(at_ms, id);
    } else {
        open.insert(&open_key, &left.to_be_bytes())?;
    }
    Ok(())
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

    /// Removes every subscription and schedule of a deleted function.
    pub fn delete_subscriptions_of(&self, function: &str) -> Result<(), StoreError> {
        for sub in self.subscriptions(None)? {
            if sub.function == function {
                self.delete_subscription(&sub.topic, function)?;
            }
        }
        for s in self.schedules()? {
            if s.function == function {
                self.delete_schedule(s.id)?;
            }
        }
        Ok(())
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
            publishes: &[NewEvent { event, payload, to }],
            max_depth,
            retention_ms,
            ..EventWrites::default()
        };
        let written = self
            .event_writes(&writes)
            .expect("the store works in tests");
        match written.published.first() {
            Some(Err(depth)) => Err(PublishRefused::QueueFull(*depth)),
            _ => Ok(()),
        }
    }

    /// The event plane's writes of one moment, all in one transaction:
    /// outcomes of finished deliveries first (they free queue depth), then
    /// new events.
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
            rows.push(Row {
                id: event.id.to_be_bytes(),
                value: encode_event(event, &targets, item.payload),
                deliveries,
            });
        }
        let mut seqs = Vec::with_capacity(w.finishes.len());
        for f in w.finishes {
            seqs.push(match f.outcome {
                Outcome::Retry(_) => self.next_id()?,
                _ => 0,
            });
        }
        let expiry_seq = self.next_id()?;
        let (max_depth, retention_ms) = (w.max_depth, w.retention_ms);
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
        )
            .transaction(|(events, dtree, due, open, expire, dead)| {
                // Answers are built inside: sled may run this more than
                // once. The depth changes are applied after the commit.
                let mut freed: Vec<String> = Vec::new();
                let mut depth: HashMap<&str, i64> = HashMap::new();
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
                    if let Some(&started) = mem.running.get(key) {
                        push_attempt_time(&mut rec, started);
                    }
                    rec.updated_ms = now_ms;
                    if outcome != Outcome::Cancelled {
                        rec.attempts += 1;
                    }
                    rec.last_error = f.error.clone();
                    match outcome {
                        Outcome::Retry(at) => {
                            rec.status = DeliveryStatus::Pending;
                            rec.due_ms = at;
                            rec.due_seq = seq;
                            due.insert(&due_key(at, seq), key)?;
                        }
                        Outcome::Dead => {
                            rec.status = DeliveryStatus::Dead;
                            dead.insert(dead_key(&rec.function, &rec.topic, rec.event_id), key)?;
                            freed.push(rec.topic.clone());
                        }
                        Outcome::Done | Outcome::Cancelled => {
                            rec.status = if outcome == Outcome::Done {
                                DeliveryStatus::Done
                            } else {
                                DeliveryStatus::Cancelled
                            };
                            freed.push(rec.topic.clone());
                            let at = now_ms.saturating_add(retention_ms);
                            tx_finish_one(open, rec.event_id, key, at, &mut expiring)?;
                        }
                    }
                    dtree.insert(key, encode(&rec))?;
                }
                for topic in &freed {
                    *depth.entry(topic).or_default() -= 1;
                }

                let mut published = Vec::with_capacity(rows.len());
                for (item, row) in w.publishes.iter().zip(&rows) {
                    let event = item.event;
                    let n = row.deliveries.len() as u64;
                    if n > 0 {
                        // The depth counts the events accepted earlier in
                        // the batch (and the outcomes before them).
                        let topic = event.topic.as_str();
                        let stored = mem.depth.get(topic).copied().unwrap_or(0);
                        let change = depth.entry(topic).or_default();
                        let now = (stored as i64 + *change).max(0) as u64;
                        if now + n > max_depth {
                            published.push(Err(now));
                            continue;
                        }
                        *change += n as i64;
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
                let depth: Vec<(String, i64)> =
                    depth.into_iter().map(|(t, n)| (t.to_string(), n)).collect();
                Ok::<_, ConflictableTransactionError<StoreError>>((published, depth))
            })
            .map_err(abort_on);
        for f in w.finishes {
            mem.running.remove(&f.key);
        }
        let (published, depth) = result?;
        for (topic, n) in depth {
            mem.add_depth(&topic, n);
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
            let done = (&t.deliveries, &t.due, &t.dead)
                .transaction(|(dtree, due, dead)| {
                    if dead.remove(dk.as_slice())?.is_none() {
                        return Ok(None);
                    }
                    let Some(mut rec) = tx_delivery(dtree, &key)? else {
                        return Ok(None);
                    };
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
        for (index, event) in events {
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
            let cancelled = (&t.deliveries, &t.due, &t.open, &t.expire)
                .transaction(|(dtree, due, open, expire)| {
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
                        tx_finish_one(open, rec.event_id, key, at, &mut expiring)?;
                        topics.push(rec.topic);
                    }
                    expiring.write(expire, expiry_seq)?;
                    Ok(topics)
                })
                .map_err(abort_on)?;
            n += cancelled.len() as u64;
            for topic in cancelled {
                mem.add_depth(&topic, -1);
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
        let file = store.compiled_path("a1", "e").unwrap().unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"c1");

        assert_eq!(store.delete_function("a").unwrap().unwrap(), ["a2"]);
        store.drop_compiled(&["a2".into()]).unwrap();
        assert!(store.function("a").unwrap().is_none());
        // a1 is still used by b; a2 is gone.
        assert!(store.artifact("a1").unwrap().is_some());
        assert!(store.compiled_path("a1", "e").unwrap().is_some());
        assert!(store.artifact("a2").unwrap().is_none());
        let freed = store.delete_function("b").unwrap().unwrap();
        assert_eq!(freed, ["a1"]);
        assert_eq!(store.artifact_count(), 0);
        assert!(file.exists(), "kept until the deletion is flushed");
        store.drop_compiled(&freed).unwrap();
        assert!(store.compiled_path("a1", "e").unwrap().is_none());
        assert!(!file.exists());
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
            assert!(store.compiled_path("c4", "e").unwrap().is_none());
            store.forget_compiled("a1").unwrap();
            assert!(store.compiled_path("a1", "e").unwrap().is_some());
            // Another engine build's code goes when this engine asks.
            store.put_compiled("a1", "f0", b"older engine").unwrap();
            store.drop_other_engines("e").unwrap();
            assert!(store.compiled_path("a1", "f0").unwrap().is_none());
            assert!(store.compiled_path("a1", "e").unwrap().is_some());
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(dir.path().join("compiled"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].starts_with("a1-e-"), "{left:?}");
        let file = store.compiled_path("a1", "e").unwrap().unwrap();
        assert_eq!(std::fs::read(file).unwrap(), b"kept");
    }

    #[test]
    fn damaged_compiled_code_is_not_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let path = store.put_compiled("a1", "e", b"compiled code").unwrap();
        assert_eq!(store.compiled_path("a1", "e").unwrap(), Some(path.clone()));
        // Rewritten with other contents: one file, the new one.
        let path2 = store.put_compiled("a1", "e", b"compiled again").unwrap();
        assert_ne!(path, path2);
        assert!(!path.exists());
        assert_eq!(store.compiled_path("a1", "e").unwrap(), Some(path2.clone()));
        // The disk flips a byte: the file no longer matches its name.
        std::fs::write(&path2, b"compiled agaiN").unwrap();
        assert_eq!(store.compiled_path("a1", "e").unwrap(), None);
        assert!(!path2.exists(), "a damaged file is removed");
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
            assert!(store.compiled_path(sha, key).is_err());
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
}
