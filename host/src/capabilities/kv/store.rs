//! The key-value domain's trees, keys and records.
//!
//! Trees (one namespace per function; function names never contain NUL, so
//! `name \0` is an exact prefix):
//! - `kv`: `name \0 key` → 8 bytes expiry (ms since the epoch, big-endian;
//!   0: never) followed by the value.
//! - `kv_usage`: name → bytes the function's entries take (u64 BE): key
//!   bytes plus value bytes of every stored entry, expired ones included
//!   until they are reclaimed. Updated in the same transaction as `kv`, so
//!   it is exact under concurrent writers.
//!
//! What may be written (limits, quota, expiry, compare-and-swap) is decided
//! by the caller ([`super::KvNamespace`]); this file only reads, writes
//! atomically and encodes.

use std::borrow::Cow;

use crate::cluster::SharedKv;
use crate::store::{Abort, Durability, Prefix, Store, StoreError, Tree, TxError, Value, Writer};

/// Key of an entry: the function's namespace, then the key.
pub(crate) use crate::store::FunctionKey as NsKey;
/// Every key of one function.
pub(crate) use crate::store::OfFunction as Namespace;

/// The keys of one function that start with a prefix.
struct Starting<'a> {
    function: &'a str,
    prefix: &'a str,
}

impl Prefix<NsKey> for Starting<'_> {
    fn encode_prefix(&self) -> Vec<u8> {
        let mut k = Namespace(self.function).encode_prefix();
        k.extend_from_slice(self.prefix.as_bytes());
        k
    }
}

/// A stored key-value entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KvEntry {
    /// The value.
    pub value: Vec<u8>,
    /// When it expires, ms since the epoch; `None`: never.
    pub expires_at_ms: Option<u64>,
}

/// The 8-byte header of every entry: its expiry.
fn expiry_of(bytes: &[u8]) -> Result<Option<u64>, String> {
    let head = bytes
        .get(..8)
        .ok_or("key-value entry shorter than its header")?;
    let at = u64::from_be_bytes(head.try_into().expect("8 bytes"));
    Ok((at != 0).then_some(at))
}

impl Value for KvEntry {
    fn encode(&self) -> Cow<'_, [u8]> {
        let mut v = Vec::with_capacity(8 + self.value.len());
        v.extend_from_slice(&self.expires_at_ms.unwrap_or(0).to_be_bytes());
        v.extend_from_slice(&self.value);
        Cow::Owned(v)
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(KvEntry {
            expires_at_ms: expiry_of(bytes)?,
            value: bytes[8..].to_vec(),
        })
    }
}

/// An entry's expiry alone: the same tree read without copying values
/// (a listing reads only this).
struct Expiry(Option<u64>);

impl Value for Expiry {
    /// An entry with this expiry and an empty value (entries are written
    /// whole, through [`KvEntry`]; this view only reads).
    fn encode(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.unwrap_or(0).to_be_bytes().to_vec())
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        expiry_of(bytes).map(Expiry)
    }
}

/// What a key-value update writes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KvWrite {
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

/// The key-value trees; cheap to clone.
#[derive(Clone)]
pub(crate) struct KvStore {
    store: Store,
    kv: Tree<NsKey, KvEntry>,
    /// The same tree, values not read.
    expiries: Tree<NsKey, Expiry>,
    usage: Tree<String, u64>,
    /// Cluster mode: the data is on JetStream, shared by every host, and
    /// these trees are not used by functions.
    shared: Option<SharedKv>,
}

impl KvStore {
    /// Opens the trees.
    pub fn open(store: &Store) -> Result<KvStore, StoreError> {
        Ok(KvStore {
            kv: store.tree("kv")?,
            expiries: store.tree("kv")?,
            usage: store.tree("kv_usage")?,
            store: store.clone(),
            shared: None,
        })
    }

    /// Keeps functions' data in the cluster instead.
    pub fn shared_by(mut self, shared: Option<SharedKv>) -> KvStore {
        self.shared = shared;
        self
    }

    /// The cluster's data, in cluster mode.
    pub fn shared(&self) -> Option<&SharedKv> {
        self.shared.as_ref()
    }

    /// The store the trees are in (to run writes on its writer).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A function's key-value entry, expired or not.
    pub fn get(&self, function: &str, key: &str) -> Result<Option<KvEntry>, StoreError> {
        self.kv.get(&NsKey::new(function, key))
    }

    /// Bytes a function's key-value entries take (see the `kv_usage` tree).
    /// (Tests check the accounting with it.)
    #[cfg(test)]
    pub fn usage(&self, function: &str) -> Result<u64, StoreError> {
        Ok(self.usage.get(&function.to_string())?.unwrap_or(0))
    }

    /// Reads `key` and the function's usage, lets `decide` choose what to
    /// write and the usage after it, and writes both in one transaction.
    /// `decide` may run more than once (a conflict makes the backend run
    /// the transaction again), so it must only compute. Returns its value
    /// and whether anything was written. Runs on the writer.
    pub fn update<T, E>(
        &self,
        w: &Writer,
        function: &str,
        key: &str,
        decide: impl Fn(Option<KvEntry>, u64) -> Result<(KvWrite, u64, T), E>,
    ) -> Result<(T, bool), TxError<E>> {
        let k = NsKey::new(function, key);
        let name = function.to_string();
        w.transaction((&self.kv, &self.usage), |(kv, usage)| {
            let old = kv.get(&k)?;
            let used = usage.get(&name)?.unwrap_or(0);
            let (write, new_usage, out) = decide(old, used).map_err(Abort::with)?;
            let wrote = match write {
                KvWrite::Keep => false,
                KvWrite::Put {
                    value,
                    expires_at_ms,
                } => {
                    kv.insert(
                        &k,
                        &KvEntry {
                            value,
                            expires_at_ms,
                        },
                    )?;
                    true
                }
                KvWrite::Remove => {
                    kv.remove(&k)?;
                    true
                }
            };
            if wrote && new_usage != used {
                if new_usage == 0 {
                    usage.remove(&name)?;
                } else {
                    usage.insert(&name, &new_usage)?;
                }
            }
            Ok((out, wrote))
        })
    }

    /// Up to `max` keys of a function that start with `prefix`, after
    /// `after` if given, in byte order, each with its expiry (values are not
    /// read).
    pub fn scan(
        &self,
        function: &str,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<(String, Option<u64>)>, StoreError> {
        let mut scan = self.expiries.scan().within(&Starting { function, prefix });
        if let Some(a) = after {
            scan = scan.after(&NsKey::new(function, a));
        }
        scan.into_iter()
            .take(max)
            .map(|kv| kv.map(|(k, Expiry(at))| (k.key, at)))
            .collect()
    }

    /// Removes a function's entries and its usage counter: reads its keys
    /// on the blocking pool, then removes them in one batch. Called right
    /// after the function record is deleted (and before a name is deployed
    /// for the first time, which catches anything a crash between the two,
    /// or a write racing the delete, left behind). Not atomic with the
    /// record's delete: it can be large, and a leftover is invisible (no
    /// function) and removed by the next first deploy. Not flushed.
    pub async fn purge(&self, function: &str) -> Result<(), StoreError> {
        let this = self.clone();
        let function = function.to_string();
        tokio::task::spawn_blocking(move || this.purge_blocking(&function))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(format!("purge task: {e}"))))?
    }

    /// [`KvStore::purge`] on the calling thread.
    pub fn purge_blocking(&self, function: &str) -> Result<(), StoreError> {
        let mut batch = self.kv.batch();
        for key in self.expiries.scan().within(&Namespace(function)).keys() {
            batch.remove(&key?);
        }
        let (kv, usage, name) = (self.kv.clone(), self.usage.clone(), function.to_string());
        self.store.write_blocking(Durability::Committed, move |w| {
            kv.apply(w, batch)?;
            usage.remove(w, &name).map(drop)
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Key;

    #[test]
    fn keys_round_trip_and_namespaces_do_not_overlap() {
        for key in ["", "a", "\0", "é/\0x"] {
            let k = NsKey::new("fn", key);
            let bytes = k.encode();
            assert_eq!(NsKey::decode(&bytes), Some(k));
            assert!(bytes.starts_with(&Namespace("fn").encode_prefix()));
            // A name that is a prefix of another shares nothing with it.
            assert!(!bytes.starts_with(&Namespace("f").encode_prefix()));
        }
        assert_eq!(NsKey::decode(b"no separator"), None);
    }

    #[test]
    fn entries_round_trip_and_a_short_one_is_corrupt() {
        for expires_at_ms in [None, Some(1), Some(u64::MAX)] {
            let e = KvEntry {
                value: b"v".to_vec(),
                expires_at_ms,
            };
            assert_eq!(KvEntry::decode(&e.encode()).unwrap(), e);
        }
        assert!(KvEntry::decode(&[0; 7]).is_err());
    }
}
