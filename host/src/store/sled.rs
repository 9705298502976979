//! The sled backend: the one file that names sled's types.
//!
//! It provides the operations the typed layer ([`super::tree`]) is built
//! on, and nothing else: named trees of ordered bytes (get, insert, remove,
//! ordered ranges), atomic batches on one tree, transactions across trees,
//! a flush that makes everything committed before it durable, and ids that
//! increase across restarts. A second backend provides the same set (see
//! the guarantees in the [module docs](super)).

use std::ops::Bound;
use std::path::Path;

use sled::Transactional as _;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::StoreError;

/// Why the backend failed: I/O, corruption, a bug in it. Opaque: callers
/// answer 500 and the details go to the log.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BackendError(#[from] sled::Error);

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> StoreError {
        StoreError::Backend(BackendError(e))
    }
}

/// Bytes as the backend hands them out (reference-counted, no copy).
pub(super) type RawBytes = sled::IVec;
/// One tree.
pub(super) type RawTree = sled::Tree;
/// One tree inside a transaction.
pub(super) type RawTx = sled::transaction::TransactionalTree;
/// Writes to one tree, applied at once.
pub(super) type RawBatch = sled::Batch;
/// An ordered iteration over a range of one tree.
pub(super) type RawIter = sled::Iter;

/// A failed operation inside a transaction: a conflict (the backend runs
/// the transaction again) or a failure of the backend.
#[derive(Debug)]
pub(super) struct RawTxError(sled::transaction::UnabortableTransactionError);

impl From<sled::transaction::UnabortableTransactionError> for RawTxError {
    fn from(e: sled::transaction::UnabortableTransactionError) -> Self {
        RawTxError(e)
    }
}

/// The database: its trees, its flush and its id generator.
#[derive(Clone)]
pub(super) struct Db(sled::Db);

/// How long opening waits for a store's lock that a closed store of this
/// process may still hold.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether sled refused to open because another handle holds the lock.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

impl Db {
    /// Opens (or creates) the database in `dir`, with a page cache of at
    /// most `cache_bytes`.
    pub(super) fn open(dir: &Path, cache_bytes: u64) -> Result<Db, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Durability comes from explicit flushes before a write is
            // acknowledged; sled's own periodic flush only bounds what a
            // crash loses of the unacknowledged, and is kept at its default.
            .mode(sled::Mode::LowSpace);
        // The store's file lock outlives a closed store for a moment (sled
        // releases its file from a deferred drop, on another thread): a
        // store reopened at once in the same process (an embedding host
        // restarted, a test) waits for it. Another host using the
        // directory still holds it after the wait, and is named.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match config.open() {
                Ok(db) => return Ok(Db(db)),
                Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The tree called `name` (created if it does not exist).
    pub(super) fn tree(&self, name: &str) -> Result<RawTree, StoreError> {
        Ok(self.0.open_tree(name)?)
    }

    /// Whether a tree called `name` exists.
    pub(super) fn has_tree(&self, name: &str) -> bool {
        self.0
            .tree_names()
            .iter()
            .any(|n| &n[..] == name.as_bytes())
    }

    /// Removes the tree called `name` and everything in it.
    pub(super) fn drop_tree(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.0.drop_tree(name)?)
    }

    /// Makes every write committed so far durable.
    pub(super) fn flush(&self) -> Result<(), StoreError> {
        self.0.flush()?;
        Ok(())
    }

    /// A fresh id: unique, increasing, never reused after a restart.
    pub(super) fn generate_id(&self) -> Result<u64, StoreError> {
        Ok(self.0.generate_id()?)
    }
}

pub(super) fn get(tree: &RawTree, key: &[u8]) -> Result<Option<RawBytes>, StoreError> {
    Ok(tree.get(key)?)
}

pub(super) fn contains(tree: &RawTree, key: &[u8]) -> Result<bool, StoreError> {
    Ok(tree.contains_key(key)?)
}

pub(super) fn len(tree: &RawTree) -> usize {
    tree.len()
}

pub(super) fn insert(tree: &RawTree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
    tree.insert(key, value)?;
    Ok(())
}

pub(super) fn remove(tree: &RawTree, key: &[u8]) -> Result<bool, StoreError> {
    Ok(tree.remove(key)?.is_some())
}

pub(super) fn range(tree: &RawTree, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> RawIter {
    tree.range::<Vec<u8>, _>((start, end))
}

pub(super) fn next(iter: &mut RawIter) -> Option<Result<(RawBytes, RawBytes), StoreError>> {
    iter.next().map(|kv| kv.map_err(StoreError::from))
}

pub(super) fn batch_insert(batch: &mut RawBatch, key: Vec<u8>, value: &[u8]) {
    batch.insert(key, value);
}

pub(super) fn batch_remove(batch: &mut RawBatch, key: Vec<u8>) {
    batch.remove(key);
}

pub(super) fn apply(tree: &RawTree, batch: RawBatch) -> Result<(), StoreError> {
    tree.apply_batch(batch)?;
    Ok(())
}

pub(super) fn tx_get(tx: &RawTx, key: &[u8]) -> Result<Option<RawBytes>, RawTxError> {
    Ok(tx.get(key)?)
}

pub(super) fn tx_insert(tx: &RawTx, key: &[u8], value: &[u8]) -> Result<(), RawTxError> {
    tx.insert(key, value)?;
    Ok(())
}

pub(super) fn tx_remove(tx: &RawTx, key: &[u8]) -> Result<bool, RawTxError> {
    Ok(tx.remove(key)?.is_some())
}

/// How a transaction's closure ended early.
pub(super) enum TxStop<E> {
    /// The caller's reason, or a store failure (a record that does not
    /// decode): nothing is written, the transaction is not run again.
    Abort(E),
    /// An operation failed: a conflict is run again, a failure ends it.
    Raw(RawTxError),
}

/// Runs `f` over `trees` as one transaction: all of its writes or none.
/// `f` may run more than once (after a conflict), so it must only compute.
pub(super) fn transaction<T, E>(
    trees: &[RawTree],
    f: impl Fn(&[RawTx]) -> Result<T, TxStop<E>>,
) -> Result<T, Result<E, StoreError>> {
    trees
        .transaction(|views: &Vec<RawTx>| {
            f(views).map_err(|stop| match stop {
                TxStop::Abort(e) => ConflictableTransactionError::Abort(e),
                TxStop::Raw(RawTxError(e)) => e.into(),
            })
        })
        .map_err(|e| match e {
            TransactionError::Abort(e) => Ok(e),
            TransactionError::Storage(e) => Err(e.into()),
        })
}
