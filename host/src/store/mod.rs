//! The storage layer: typed trees over an embedded backend (sled), writes
//! that run on one writer thread, and group commit. Generic: it knows no
//! domain. Each domain declares its own trees, key encodings and records in
//! a file of its own (`function/records.rs`, `function/compiled.rs`,
//! `capabilities/kv/store.rs`, `capabilities/settings/store.rs`,
//! `capabilities/logs/store.rs`, `events/store/`), opens them with
//! [`Store::tree`] and keeps them; no backend type leaves this module.
//!
//! # Using it
//!
//! - Reads (`get`, ordered [`Scan`]s by range or prefix) run on the
//!   caller's thread: they are short and never wait for a flush. A serving
//!   thread that may read much (a listing) or wait on I/O reads on the
//!   blocking pool.
//! - Writes (`insert`, `remove`, [`Batch`]es, transactions across trees
//!   with [`Writer::transaction`]) take a [`Writer`], which only the
//!   writer thread has: a caller hands the store a closure with
//!   [`Store::write`] (async: the caller's thread is never blocked) or
//!   [`Store::write_blocking`] (on the blocking pool or a thread of its
//!   own), and gets its answer once the write is committed or, with
//!   [`Durability::Flushed`], once it is on disk.
//! - Group commit: the writer runs every write queued, then one flush for
//!   all that wait for one ([`writer`]). So a write a client or guest is
//!   told succeeded is durable, a thousand of them cost one flush, and no
//!   lock is held across a flush or an `.await`.
//!
//! # What a backend provides and guarantees
//!
//! The backend is `store/sled.rs`, the one file that names sled. Another
//! backend (NATS JetStream key-value buckets, for a cluster) provides the
//! same small set of operations, and with them these guarantees:
//!
//! - **Trees**: named maps of bytes to bytes, created on first open; `get`,
//!   `insert`, `remove`, and iteration over a range of keys in ascending
//!   byte order (the key encodings make that the order the domains need:
//!   names, then big-endian numbers).
//! - **Atomicity**: a transaction across several trees commits all of its
//!   writes or none, and is isolated from other writes (its reads and
//!   writes behave as if nothing else ran meanwhile; a backend may run the
//!   closure again after a conflict, so the closure only computes). A batch
//!   on one tree is applied all or none.
//! - **Ordering**: writes are applied in the order the writer runs them; a
//!   read that starts after a write is committed sees it.
//! - **Durability once acknowledged**: `flush` returns once every write
//!   committed before it survives a crash (`kill -9`, power loss). A crash
//!   loses at most writes nobody was told about, and never part of a
//!   transaction or batch.
//! - **Ids**: `generate_id` returns ids unique and increasing for the life
//!   of the data, across restarts.
//!
//! Until there is a second backend these operations are functions of one
//! module rather than a trait (one implementation needs no interface).

mod keys;
mod sled;
mod tree;
pub(crate) mod writer;

use std::os::unix::fs::DirBuilderExt as _;
use std::path::Path;
use std::sync::Arc;

pub use self::sled::BackendError;
pub(crate) use keys::{FunctionKey, OfFunction};
pub(crate) use tree::{Abort, Json, Key, Prefix, Tree, TxError, TxFail, TxTree, Value};
pub(crate) use writer::{Durability, Writer};

/// Store failures. Callers answer 500 for these; the details go to the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption).
    #[error("store: {0}")]
    Backend(#[from] BackendError),
    /// Reading or writing a file of the store (compiled code) failed.
    #[error("store: {0}")]
    Io(#[from] std::io::Error),
    /// A batched write (of many requests at once) failed; the cause is in
    /// the host's log, once.
    #[error("store: {0}")]
    Batch(String),
    /// A record could not be decoded.
    #[error("store: corrupt record {key:?}: {reason}")]
    Corrupt {
        /// The record's tree and key.
        key: String,
        /// Why decoding failed.
        reason: String,
    },
    /// Flushing failed: the write may not be durable (see the host log).
    #[error("store: flushing the store failed (see the host log)")]
    Flush,
    /// The store's writer is gone (the host is shutting down) or the write
    /// failed (see the host log).
    #[error("store: the write was not done (the store is closing, or see the host log)")]
    Stopped,
}

/// The store handle; cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    db: self::sled::Db,
    /// Runs every write; stopped (after finishing what is queued) with
    /// the last clone of the store.
    writer: Arc<writer::WriterThread>,
}

impl Store {
    /// Opens (or creates) the store in `dir/db`, with the backend's page
    /// cache bounded to `cache_bytes`. Everything the store writes is
    /// private to its user: the directory 0700 and its files 0600, set now
    /// (see the `datadir` module for what the umask still decides).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let db_dir = dir.join("db");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(crate::datadir::DIR_MODE)
            .create(&db_dir)?;
        let db = self::sled::Db::open(&db_dir, cache_bytes)?;
        // sled creates its files with the process umask's mode (a library
        // cannot change that): set them, and whatever an earlier start or
        // version left looser, to 0600 and 0700 now.
        let changed = crate::datadir::make_private(&db_dir)?;
        if changed > 0 {
            tracing::info!(
                dir = %db_dir.display(),
                entries = changed,
                "made the store's files private (files 0600, directories 0700)"
            );
        }
        let writer = writer::WriterThread::start(db.clone())?;
        Ok(Store {
            db,
            writer: Arc::new(writer),
        })
    }

    /// The tree called `name`, with keys `K` and values `V` (created if it
    /// does not exist). Open a tree once and keep it.
    pub fn tree<K: Key, V: Value>(&self, name: &'static str) -> Result<Tree<K, V>, StoreError> {
        Ok(Tree::new(self.db.tree(name)?, name))
    }

    /// Whether a tree called `name` exists (stores of earlier versions).
    pub fn has_tree(&self, name: &str) -> bool {
        self.db.has_tree(name)
    }

    /// Removes the tree called `name` and everything in it; whether it
    /// existed. Blocking (on the writer).
    pub fn drop_tree(&self, name: &'static str) -> Result<bool, StoreError> {
        let db = self.db.clone();
        self.write_blocking(Durability::Committed, move |w| {
            w.wrote();
            db.drop_tree(name)
        })?
    }

    /// A fresh id: unique, increasing, never reused across restarts.
    pub fn next_id(&self) -> Result<u64, StoreError> {
        self.db.generate_id()
    }

    /// Runs `f` on the writer and answers what it returns, once it is
    /// committed or, with [`Durability::Flushed`], on disk. The caller's
    /// thread is free meanwhile.
    pub async fn write<T: Send + 'static>(
        &self,
        when: Durability,
        f: impl FnOnce(&Writer) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writer.write(when, f).await
    }

    /// [`Store::write`], blocking the calling thread until the answer: for
    /// the blocking pool and threads of their own, never a serving thread.
    pub fn write_blocking<T: Send + 'static>(
        &self,
        when: Durability,
        f: impl FnOnce(&Writer) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writer.write_blocking(when, f)
    }

    /// Waits until everything written so far is on disk (it shares the
    /// flush of the writer's current round with every other waiter).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write(Durability::Flushed, Writer::wrote).await
    }

    /// [`Store::flush`], blocking (shutdown, tests).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.write_blocking(Durability::Flushed, Writer::wrote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        (dir, store)
    }

    #[test]
    fn typed_trees_read_what_was_written_in_key_order() {
        let (_dir, store) = open();
        let t: Tree<u64, String> = store.tree("t").unwrap();
        let t2 = t.clone();
        store
            .write_blocking(Durability::Flushed, move |w| {
                for (k, v) in [(300u64, "c"), (2, "a"), (256, "b")] {
                    t2.insert(w, &k, &v.to_string()).unwrap();
                }
                assert!(t2.remove(w, &256).unwrap());
                assert!(!t2.remove(w, &256).unwrap());
            })
            .unwrap();
        assert_eq!(t.get(&2).unwrap().as_deref(), Some("a"));
        assert_eq!(t.get(&256).unwrap(), None);
        let all: Vec<_> = t.scan().into_iter().map(Result::unwrap).collect();
        assert_eq!(all, [(2, "a".to_string()), (300, "c".to_string())]);
        let from: Vec<_> = t.scan().after(&2).keys().map(Result::unwrap).collect();
        assert_eq!(from, [300]);
        assert_eq!(t.scan().before(&300).keys().count(), 1);
        assert_eq!(t.scan().to(&300).keys().count(), 2);
    }

    /// Keys of one prefix, from a position inside it.
    struct Starts(&'static str);
    impl Prefix<String> for Starts {
        fn encode_prefix(&self) -> Vec<u8> {
            self.0.as_bytes().to_vec()
        }
    }

    #[test]
    fn prefix_scans_stop_at_the_end_of_the_prefix() {
        let (_dir, store) = open();
        let t: Tree<String, ()> = store.tree("names").unwrap();
        let mut batch = t.batch();
        for k in ["a", "b/1", "b/2", "b/3", "c"] {
            batch.insert(&k.to_string(), &());
        }
        assert_eq!(batch.len(), 5);
        let t2 = t.clone();
        store
            .write_blocking(Durability::Committed, move |w| t2.apply(w, batch))
            .unwrap()
            .unwrap();
        let keys = |s: super::tree::Scan<String, ()>| -> Vec<String> {
            s.keys().map(Result::unwrap).collect()
        };
        assert_eq!(keys(t.scan().within(&Starts("b/"))), ["b/1", "b/2", "b/3"]);
        assert_eq!(
            keys(t.scan().within(&Starts("b/")).after(&"b/1".to_string())),
            ["b/2", "b/3"]
        );
        assert!(keys(t.scan().within(&Starts("d"))).is_empty());
    }

    #[test]
    fn a_transaction_writes_all_or_nothing_and_aborts_with_the_callers_reason() {
        let (_dir, store) = open();
        let a: Tree<String, u64> = store.tree("a").unwrap();
        let b: Tree<String, u64> = store.tree("b").unwrap();
        let (a2, b2) = (a.clone(), b.clone());
        let refused = store
            .write_blocking(Durability::Flushed, move |w| {
                w.transaction((&a2, &b2), |(a, b)| {
                    a.insert(&"k".into(), &1)?;
                    b.insert(&"k".into(), &1)?;
                    Err::<(), _>(Abort::with("no"))
                })
            })
            .unwrap();
        assert!(matches!(refused, Err(TxError::Abort("no"))));
        assert_eq!(
            (a.get(&"k".into()).unwrap(), b.get(&"k".into()).unwrap()),
            (None, None)
        );
        let (a2, b2) = (a.clone(), b.clone());
        let n = store
            .write_blocking(Durability::Flushed, move |w| {
                w.transaction((&a2, &b2), |(a, b)| {
                    a.insert(&"k".into(), &1)?;
                    b.insert(&"k".into(), &2)?;
                    Ok::<_, Abort<std::convert::Infallible>>(a.get(&"k".into())?)
                })
            })
            .unwrap()
            .unwrap();
        assert_eq!(n, Some(1), "a transaction reads its own writes");
        assert_eq!(b.get(&"k".into()).unwrap(), Some(2));
    }

    #[test]
    fn a_value_that_does_not_decode_is_a_corrupt_record() {
        let (_dir, store) = open();
        let raw: Tree<String, Vec<u8>> = store.tree("t").unwrap();
        let raw2 = raw.clone();
        store
            .write_blocking(Durability::Committed, move |w| {
                raw2.insert(w, &"k".into(), &vec![1, 2, 3])
            })
            .unwrap()
            .unwrap();
        let typed: Tree<String, u64> = store.tree("t").unwrap();
        let e = typed.get(&"k".into()).unwrap_err();
        assert!(
            matches!(&e, StoreError::Corrupt { key, .. } if key == "t/k"),
            "{e}"
        );
    }

    /// Durable writes from many tasks at once, each answered after the
    /// flush that covers it; and the ids stay unique.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_durable_writes_are_all_answered() {
        let (_dir, store) = open();
        let t: Tree<u64, u64> = store.tree("t").unwrap();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (store, t) = (store.clone(), t.clone());
            set.spawn(async move {
                for _ in 0..50 {
                    let id = store.next_id().unwrap();
                    let t2 = t.clone();
                    store
                        .write(Durability::Flushed, move |w| t2.insert(w, &id, &id))
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(t.get(&id).unwrap(), Some(id));
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        assert_eq!(t.len(), 400);
    }

    /// A write that waits for the writer from the writer would wait
    /// forever: it is refused (the write fails), and the writer goes on.
    #[test]
    fn waiting_for_the_writer_on_the_writer_is_refused() {
        let (_dir, store) = open();
        let inner = store.clone();
        let r = store.write_blocking(Durability::Committed, move |_| inner.flush_blocking());
        assert!(matches!(r, Err(StoreError::Stopped)), "{r:?}");
        store.flush_blocking().unwrap();
    }
}
