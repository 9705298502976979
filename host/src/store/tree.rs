//! Typed trees: a domain declares a tree's name, key type and value type;
//! this layer encodes them and hands out reads, ordered scans, batches and
//! transactions. Writes take a [`Writer`], which only the store's writer
//! thread has (see [`Store::write`](super::Store::write)).

use std::borrow::Cow;
use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::Bound;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::sled::{
    self as backend, RawBatch, RawBytes, RawIter, RawTree, RawTx, RawTxError, TxStop,
};
use super::{StoreError, Writer};

/// How a tree's keys are written: bytes that sort as the keys should
/// (numbers big-endian, a separator that sorts before every character a
/// name may hold).
pub(crate) trait Key: Sized {
    /// The key as stored.
    fn encode(&self) -> Vec<u8>;
    /// The key back from its bytes; `None` if they are not one.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

/// A prefix of a tree's keys (every key whose encoding starts with this
/// one's), or a position in the tree (for the bounds of a scan). A key is
/// a prefix of itself.
pub(crate) trait Prefix<K> {
    /// The prefix as stored.
    fn encode_prefix(&self) -> Vec<u8>;
}

impl<K: Key> Prefix<K> for K {
    fn encode_prefix(&self) -> Vec<u8> {
        self.encode()
    }
}

/// How a tree's values are written.
pub(crate) trait Value: Sized {
    /// The value as stored.
    fn encode(&self) -> Cow<'_, [u8]>;
    /// The value back from its bytes, or why they are not one.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

/// Records stored as JSON (a marker: `impl Json for MyRecord {}`).
pub(crate) trait Json: Serialize + DeserializeOwned {}

impl<T: Json> Value for T {
    fn encode(&self) -> Cow<'_, [u8]> {
        Cow::Owned(serde_json::to_vec(self).expect("records always serialize"))
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// A name: UTF-8.
impl Key for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// A number: big-endian, so numbers sort as bytes.
impl Key for u64 {
    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(u64::from_be_bytes)
    }
}

/// A count or a time: 8 bytes big-endian.
impl Value for u64 {
    fn encode(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.to_be_bytes().to_vec())
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        bytes
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| format!("{} bytes, not an 8-byte number", bytes.len()))
    }
}

/// Bytes as they are.
impl Value for Vec<u8> {
    fn encode(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(bytes.to_vec())
    }
}

/// Bytes as they are, shared.
impl Value for bytes::Bytes {
    fn encode(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(bytes::Bytes::copy_from_slice(bytes))
    }
}

/// Text.
impl Value for String {
    fn encode(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| "not UTF-8".into())
    }
}

/// Nothing: the key is the entry (an index).
impl Value for () {
    fn encode(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&[])
    }

    fn decode(_: &[u8]) -> Result<Self, String> {
        Ok(())
    }
}

fn corrupt(tree: &str, key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: format!("{tree}/{}", String::from_utf8_lossy(key)),
        reason: reason.into(),
    }
}

fn decode_key<K: Key>(tree: &str, bytes: &[u8]) -> Result<K, StoreError> {
    K::decode(bytes).ok_or_else(|| corrupt(tree, bytes, "not a key of this tree"))
}

fn decode_value<V: Value>(tree: &str, key: &[u8], bytes: &[u8]) -> Result<V, StoreError> {
    V::decode(bytes).map_err(|reason| corrupt(tree, key, reason))
}

/// A tree of keys `K` and values `V`, as a domain declared it (opened with
/// [`Store::tree`](super::Store::tree)). Cheap to clone.
pub(crate) struct Tree<K, V> {
    raw: RawTree,
    name: &'static str,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Tree<K, V> {
    fn clone(&self) -> Self {
        Tree {
            raw: self.raw.clone(),
            name: self.name,
            types: PhantomData,
        }
    }
}

impl<K: Key, V: Value> Tree<K, V> {
    pub(super) fn new(raw: RawTree, name: &'static str) -> Self {
        Tree {
            raw,
            name,
            types: PhantomData,
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Result<Option<V>, StoreError> {
        let k = key.encode();
        backend::get(&self.raw, &k)?
            .map(|v| decode_value(self.name, &k, &v))
            .transpose()
    }

    /// Whether `key` has a value (without reading it).
    pub fn contains(&self, key: &K) -> Result<bool, StoreError> {
        backend::contains(&self.raw, &key.encode())
    }

    /// How many entries the tree has (counts them: for tests and metrics).
    pub fn len(&self) -> usize {
        backend::len(&self.raw)
    }

    /// Every entry in key order; narrow it with [`Scan`]'s methods.
    pub fn scan(&self) -> Scan<K, V> {
        Scan {
            tree: self.clone(),
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            within: None,
        }
    }

    /// Sets `key` to `value`.
    pub fn insert(&self, w: &Writer, key: &K, value: &V) -> Result<(), StoreError> {
        w.wrote();
        backend::insert(&self.raw, &key.encode(), &value.encode())
    }

    /// Removes `key`; whether it had a value.
    pub fn remove(&self, w: &Writer, key: &K) -> Result<bool, StoreError> {
        w.wrote();
        backend::remove(&self.raw, &key.encode())
    }

    /// Writes to this tree gathered now and applied at once, all or none
    /// ([`Tree::apply`]). Cheaper than a transaction: nothing is read.
    pub fn batch(&self) -> Batch<K, V> {
        Batch {
            raw: RawBatch::default(),
            len: 0,
            types: PhantomData,
        }
    }

    /// Applies a batch, all or none.
    pub fn apply(&self, w: &Writer, batch: Batch<K, V>) -> Result<(), StoreError> {
        if batch.len == 0 {
            return Ok(());
        }
        w.wrote();
        backend::apply(&self.raw, batch.raw)
    }
}

/// A range of a tree, in key order: everything, or what the bounds and a
/// prefix leave. Iterates as `(key, value)` pairs, or [`Scan::keys`].
pub(crate) struct Scan<K, V> {
    tree: Tree<K, V>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    within: Option<Vec<u8>>,
}

impl<K: Key, V: Value> Scan<K, V> {
    /// Only keys that start with `prefix` (from the first of them, unless
    /// a start is given).
    pub fn within(mut self, prefix: &impl Prefix<K>) -> Self {
        self.within = Some(prefix.encode_prefix());
        self
    }

    /// Only keys after `position`.
    pub fn after(mut self, position: &impl Prefix<K>) -> Self {
        self.start = Bound::Excluded(position.encode_prefix());
        self
    }

    /// Only keys up to `position`, itself included.
    pub fn to(mut self, position: &impl Prefix<K>) -> Self {
        self.end = Bound::Included(position.encode_prefix());
        self
    }

    /// Only keys before `position`.
    pub fn before(mut self, position: &impl Prefix<K>) -> Self {
        self.end = Bound::Excluded(position.encode_prefix());
        self
    }

    fn raw(self) -> (Tree<K, V>, RawIter, Option<Vec<u8>>) {
        let start = match (self.start, &self.within) {
            (Bound::Unbounded, Some(p)) => Bound::Included(p.clone()),
            (start, _) => start,
        };
        let iter = backend::range(&self.tree.raw, start, self.end);
        (self.tree, iter, self.within)
    }

    /// The keys only (values are not decoded).
    pub fn keys(self) -> impl Iterator<Item = Result<K, StoreError>> + use<K, V> {
        let (tree, mut iter, within) = self.raw();
        std::iter::from_fn(move || match backend::next(&mut iter)? {
            Ok((k, _)) if within.as_ref().is_some_and(|p| !k.starts_with(p)) => None,
            Ok((k, _)) => Some(decode_key(tree.name, &k)),
            Err(e) => Some(Err(e)),
        })
    }
}

impl<K: Key, V: Value> IntoIterator for Scan<K, V> {
    type Item = Result<(K, V), StoreError>;
    type IntoIter = Iter<K, V>;

    fn into_iter(self) -> Iter<K, V> {
        let (tree, raw, within) = self.raw();
        Iter { tree, raw, within }
    }
}

/// The entries of a [`Scan`], decoded as they are read.
pub(crate) struct Iter<K, V> {
    tree: Tree<K, V>,
    raw: RawIter,
    within: Option<Vec<u8>>,
}

impl<K: Key, V: Value> Iterator for Iter<K, V> {
    type Item = Result<(K, V), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (k, v): (RawBytes, RawBytes) = match backend::next(&mut self.raw)? {
            Ok(kv) => kv,
            Err(e) => return Some(Err(e)),
        };
        if self.within.as_ref().is_some_and(|p| !k.starts_with(p)) {
            return None;
        }
        let name = self.tree.name;
        Some(decode_key(name, &k).and_then(|key| Ok((key, decode_value(name, &k, &v)?))))
    }
}

/// Writes to one tree, applied at once with [`Tree::apply`].
pub(crate) struct Batch<K, V> {
    raw: RawBatch,
    len: usize,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K: Key, V: Value> Batch<K, V> {
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: &K, value: &V) {
        backend::batch_insert(&mut self.raw, key.encode(), &value.encode());
        self.len += 1;
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &K) {
        backend::batch_remove(&mut self.raw, key.encode());
        self.len += 1;
    }

    /// How many writes the batch holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

// ------------------------------------------------------------ transactions

/// Why a transaction's closure stopped early. Made from the caller's own
/// reason ([`Abort::with`]) or, with `?`, from a failed operation.
pub(crate) struct Abort<E>(TxStop<Result<E, StoreError>>);

impl<E> Abort<E> {
    /// The caller refuses: nothing is written, the transaction answers
    /// [`TxError::Abort`] with `reason`.
    pub fn with(reason: E) -> Self {
        Abort(TxStop::Abort(Ok(reason)))
    }
}

/// A failed operation in a transaction (see [`Abort`]).
pub(crate) struct TxFail(TxFailKind);

enum TxFailKind {
    Store(StoreError),
    Raw(RawTxError),
}

impl From<RawTxError> for TxFail {
    fn from(e: RawTxError) -> Self {
        TxFail(TxFailKind::Raw(e))
    }
}

impl<E> From<TxFail> for Abort<E> {
    fn from(e: TxFail) -> Self {
        match e.0 {
            TxFailKind::Store(e) => Abort(TxStop::Abort(Err(e))),
            TxFailKind::Raw(e) => Abort(TxStop::Raw(e)),
        }
    }
}

/// Why a transaction wrote nothing.
#[derive(Debug)]
pub(crate) enum TxError<E> {
    /// The caller's closure refused ([`Abort::with`]).
    Abort(E),
    /// The store failed.
    Store(StoreError),
}

impl From<TxError<StoreError>> for StoreError {
    fn from(e: TxError<StoreError>) -> StoreError {
        match e {
            TxError::Abort(e) | TxError::Store(e) => e,
        }
    }
}

impl From<TxError<std::convert::Infallible>> for StoreError {
    fn from(e: TxError<std::convert::Infallible>) -> StoreError {
        match e {
            TxError::Abort(never) => match never {},
            TxError::Store(e) => e,
        }
    }
}

/// One tree inside a transaction: reads see the transaction's own writes.
pub(crate) struct TxTree<'a, K, V> {
    raw: &'a RawTx,
    name: &'static str,
    /// The writer's note that something was written.
    wrote: &'a Cell<bool>,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K: Key, V: Value> TxTree<'_, K, V> {
    /// The value of `key`.
    pub fn get(&self, key: &K) -> Result<Option<V>, TxFail> {
        let k = key.encode();
        match backend::tx_get(self.raw, &k)? {
            Some(v) => decode_value(self.name, &k, &v)
                .map(Some)
                .map_err(|e| TxFail(TxFailKind::Store(e))),
            None => Ok(None),
        }
    }

    /// Whether `key` has a value.
    pub fn contains(&self, key: &K) -> Result<bool, TxFail> {
        Ok(backend::tx_get(self.raw, &key.encode())?.is_some())
    }

    /// Sets `key` to `value`.
    pub fn insert(&self, key: &K, value: &V) -> Result<(), TxFail> {
        self.wrote.set(true);
        Ok(backend::tx_insert(
            self.raw,
            &key.encode(),
            &value.encode(),
        )?)
    }

    /// Removes `key`; whether it had a value.
    pub fn remove(&self, key: &K) -> Result<bool, TxFail> {
        self.wrote.set(true);
        Ok(backend::tx_remove(self.raw, &key.encode())?)
    }
}

/// The trees a transaction spans: a tuple of `&Tree`s, seen inside as the
/// same tuple of [`TxTree`]s.
pub(crate) trait Trees {
    /// The trees as the transaction's closure sees them.
    type Tx<'a>;
    /// The trees, in order.
    fn raw(&self) -> Vec<RawTree>;
    /// The views of the same trees, in the same order.
    fn view<'a>(&self, txs: &'a [RawTx], wrote: &'a Cell<bool>) -> Self::Tx<'a>;
}

macro_rules! trees {
    ($($t:ident $k:ident $v:ident $i:tt),+) => {
        impl<$($k: Key, $v: Value),+> Trees for ($(&Tree<$k, $v>,)+) {
            type Tx<'a> = ($(TxTree<'a, $k, $v>,)+);

            fn raw(&self) -> Vec<RawTree> {
                vec![$(self.$i.raw.clone()),+]
            }

            fn view<'a>(&self, txs: &'a [RawTx], wrote: &'a Cell<bool>) -> Self::Tx<'a> {
                ($(TxTree::<$k, $v> { raw: &txs[$i], name: self.$i.name, wrote, types: PhantomData },)+)
            }
        }
    };
}

trees!(A KA VA 0);
trees!(A KA VA 0, B KB VB 1);
trees!(A KA VA 0, B KB VB 1, C KC VC 2);
trees!(A KA VA 0, B KB VB 1, C KC VC 2, D KD VD 3);
trees!(A KA VA 0, B KB VB 1, C KC VC 2, D KD VD 3, E KE VE 4);
trees!(A KA VA 0, B KB VB 1, C KC VC 2, D KD VD 3, E KE VE 4, F KF VF 5);
trees!(A KA VA 0, B KB VB 1, C KC VC 2, D KD VD 3, E KE VE 4, F KF VF 5, G KG VG 6);

impl Writer {
    /// Runs `f` over `trees` as one transaction: all of its writes or
    /// none, and no other write in between. `f` may run more than once
    /// (after a conflict), so it must only compute; what it returns is
    /// the transaction's answer.
    pub fn transaction<T: Trees, R, E>(
        &self,
        trees: T,
        f: impl Fn(T::Tx<'_>) -> Result<R, Abort<E>>,
    ) -> Result<R, TxError<E>> {
        let raw = trees.raw();
        backend::transaction(&raw, |txs| {
            f(trees.view(txs, &self.wrote)).map_err(|Abort(stop)| stop)
        })
        .map_err(|e| match e {
            Ok(Ok(reason)) => TxError::Abort(reason),
            Ok(Err(store)) | Err(store) => TxError::Store(store),
        })
    }
}
