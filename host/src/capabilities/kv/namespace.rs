//! One function's key-value namespace: the operations the guest and the
//! admin API share, each a read-decide-write transaction on the store's
//! writer ([`KvStore::update`], so quota accounting is exact under
//! concurrent writers), acknowledged once flushed.
//!
//! The async operations (the guest's and the admin API's) never block the
//! calling thread: writes wait for the writer without holding the thread,
//! reads run on the blocking pool. The `*_at` operations take the clock as
//! an argument and run on the calling thread (tests, the fuzz target, the
//! blocking pool).

use std::sync::Arc;

use super::store::{KvEntry, KvStore, KvWrite};
use super::{
    KeyList, KvError, KvLimits, account, add_to_counter, check_key, check_value, decode_cursor,
    encode_cursor, entry_size, expiry, is_expired, now_ms, page_limit,
};
use crate::cluster::SharedKv;
use crate::config::Limits;
use crate::store::{Durability, StoreError, Writer};

/// The live part of a stored entry: `None` when absent or expired.
fn live(entry: &Option<KvEntry>, now: u64) -> Option<&KvEntry> {
    entry.as_ref().filter(|e| !is_expired(e.expires_at_ms, now))
}

/// A blocking task that failed to finish (the runtime is shutting down).
fn task_failed(e: tokio::task::JoinError) -> KvError {
    KvError::Store(StoreError::Io(std::io::Error::other(format!(
        "key-value task: {e}"
    ))))
}

/// What a store's update decides: the write, the function's usage after
/// it, and the answer.
type Decision<T> = Result<(KvWrite, u64, T), KvError>;

/// Removes `key` if it is (still) expired at `now`.
fn decide_reclaim(key: &str, now: u64) -> impl Fn(Option<KvEntry>, u64) -> Decision<()> + '_ {
    move |old, usage| match old {
        Some(e) if is_expired(e.expires_at_ms, now) => {
            let used = account(usage, entry_size(key, e.value.len()), 0, u64::MAX)?;
            Ok((KvWrite::Remove, used, ()))
        }
        _ => Ok((KvWrite::Keep, usage, ())),
    }
}

/// Sets `key` to `value`, within the total.
fn decide_set(
    key: &str,
    value: Vec<u8>,
    expires_at_ms: Option<u64>,
    max_total: u64,
) -> impl Fn(Option<KvEntry>, u64) -> Decision<()> + '_ {
    move |old, usage| {
        let old_size = old.map_or(0, |e| entry_size(key, e.value.len()));
        let used = account(usage, old_size, entry_size(key, value.len()), max_total)?;
        let write = KvWrite::Put {
            value: value.clone(),
            expires_at_ms,
        };
        Ok((write, used, ()))
    }
}

/// Removes `key`; answers whether it was set (and live).
fn decide_delete(key: &str, now: u64) -> impl Fn(Option<KvEntry>, u64) -> Decision<bool> + '_ {
    move |old, usage| match old {
        None => Ok((KvWrite::Keep, usage, false)),
        Some(e) => {
            let used = account(usage, entry_size(key, e.value.len()), 0, u64::MAX)?;
            Ok((KvWrite::Remove, used, !is_expired(e.expires_at_ms, now)))
        }
    }
}

/// Adds `delta` to the counter at `key`; answers the new value.
fn decide_increment(
    key: &str,
    delta: i64,
    now: u64,
    limits: KvLimits,
) -> impl Fn(Option<KvEntry>, u64) -> Decision<i64> + '_ {
    move |old, usage| {
        let current = live(&old, now);
        let n = add_to_counter(current.map(|e| &e.value[..]), delta)?;
        let text = n.to_string().into_bytes();
        check_value(text.len(), limits.max_value_bytes)?;
        let old_size = old.as_ref().map_or(0, |e| entry_size(key, e.value.len()));
        let used = account(
            usage,
            old_size,
            entry_size(key, text.len()),
            limits.max_total_bytes,
        )?;
        // A counter keeps its expiry; an expired one starts afresh.
        let expires_at_ms = current.and_then(|e| e.expires_at_ms);
        Ok((
            KvWrite::Put {
                value: text,
                expires_at_ms,
            },
            used,
            n,
        ))
    }
}

/// Sets `key` to `new` if its live value is `expected`; answers whether
/// it did.
fn decide_swap<'a>(
    key: &'a str,
    expected: Option<&'a [u8]>,
    new: Vec<u8>,
    now: u64,
    max_total: u64,
) -> impl Fn(Option<KvEntry>, u64) -> Decision<bool> + 'a {
    move |old, usage| {
        let current = live(&old, now).map(|e| &e.value[..]);
        if current != expected {
            return Ok((KvWrite::Keep, usage, false));
        }
        let old_size = old.as_ref().map_or(0, |e| entry_size(key, e.value.len()));
        let used = account(usage, old_size, entry_size(key, new.len()), max_total)?;
        let write = KvWrite::Put {
            value: new.clone(),
            expires_at_ms: None,
        };
        Ok((write, used, true))
    }
}

/// One function's key-value namespace: shared by its invocations (one per
/// deployed version, in the registry) and used by the admin API. Cheap to
/// clone.
#[derive(Clone)]
pub(crate) struct KvNamespace {
    kv: KvStore,
    pub(super) function: Arc<str>,
    limits: KvLimits,
}

impl KvNamespace {
    pub fn new(kv: KvStore, function: Arc<str>, limits: &Limits) -> KvNamespace {
        KvNamespace {
            kv,
            function,
            limits: limits.into(),
        }
    }

    /// The function's value limit (the admin API caps uploads with it).
    pub fn max_value_bytes(&self) -> u64 {
        self.limits.max_value_bytes
    }

    // -- on the writer

    fn update<T>(
        &self,
        w: &Writer,
        key: &str,
        decide: impl Fn(Option<KvEntry>, u64) -> Result<(KvWrite, u64, T), KvError>,
    ) -> Result<(T, bool), KvError> {
        Ok(self.kv.update(w, &self.function, key, decide)?)
    }

    /// Removes `key` if it is (still) expired at `now`: reclaims its bytes.
    fn reclaim_in(&self, w: &Writer, key: &str, now: u64) -> Result<(), KvError> {
        self.update(w, key, decide_reclaim(key, now))?;
        Ok(())
    }

    /// Returns whether anything was written.
    fn set_in(
        &self,
        w: &Writer,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        now: u64,
    ) -> Result<bool, KvError> {
        check_key(key, self.limits.max_key_bytes)?;
        check_value(value.len(), self.limits.max_value_bytes)?;
        let decide = decide_set(key, value, expiry(now, ttl_ms), self.limits.max_total_bytes);
        let ((), wrote) = self.update(w, key, decide)?;
        Ok(wrote)
    }

    /// True if the key was set (and not expired); and whether anything was
    /// written.
    fn delete_in(&self, w: &Writer, key: &str, now: u64) -> Result<(bool, bool), KvError> {
        check_key(key, self.limits.max_key_bytes)?;
        self.update(w, key, decide_delete(key, now))
    }

    fn increment_in(
        &self,
        w: &Writer,
        key: &str,
        delta: i64,
        now: u64,
    ) -> Result<(i64, bool), KvError> {
        check_key(key, self.limits.max_key_bytes)?;
        self.update(w, key, decide_increment(key, delta, now, self.limits))
    }

    fn compare_and_swap_in(
        &self,
        w: &Writer,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        now: u64,
    ) -> Result<(bool, bool), KvError> {
        check_key(key, self.limits.max_key_bytes)?;
        check_value(new.len(), self.limits.max_value_bytes)?;
        let decide = decide_swap(key, expected, new, now, self.limits.max_total_bytes);
        self.update(w, key, decide)
    }

    // -- on the calling thread

    /// Runs `f` on the writer, blocking this thread; not flushed.
    fn write_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KvNamespace, &Writer) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let ns = self.clone();
        self.kv
            .store()
            .write_blocking(Durability::Committed, move |w| f(&ns, w))?
    }

    pub fn get_at(&self, key: &str, now: u64) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key, self.limits.max_key_bytes)?;
        match self.kv.get(&self.function, key)? {
            None => Ok(None),
            Some(e) if !is_expired(e.expires_at_ms, now) => Ok(Some(e.value)),
            Some(_) => {
                // Not flushed: a reclaim nobody was told about can be redone.
                let key = key.to_string();
                self.write_blocking(move |ns, w| ns.reclaim_in(w, &key, now))?;
                Ok(None)
            }
        }
    }

    /// Returns whether anything was written (not flushed).
    pub fn set_at(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
        now: u64,
    ) -> Result<bool, KvError> {
        let (key, value) = (key.to_string(), value.to_vec());
        self.write_blocking(move |ns, w| ns.set_in(w, &key, value, ttl_ms, now))
    }

    /// True if the key was set (and not expired); and whether anything was
    /// written (not flushed).
    pub fn delete_at(&self, key: &str, now: u64) -> Result<(bool, bool), KvError> {
        let key = key.to_string();
        self.write_blocking(move |ns, w| ns.delete_in(w, &key, now))
    }

    #[cfg(test)]
    pub fn increment_at(&self, key: &str, delta: i64, now: u64) -> Result<(i64, bool), KvError> {
        let key = key.to_string();
        self.write_blocking(move |ns, w| ns.increment_in(w, &key, delta, now))
    }

    #[cfg(test)]
    pub fn compare_and_swap_at(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        now: u64,
    ) -> Result<(bool, bool), KvError> {
        let (key, expected, new) = (key.to_string(), expected.map(<[u8]>::to_vec), new.to_vec());
        self.write_blocking(move |ns, w| {
            ns.compare_and_swap_in(w, &key, expected.as_deref(), new, now)
        })
    }

    pub fn list_at(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
        now: u64,
    ) -> Result<KeyList, KvError> {
        let limit = page_limit(limit);
        let mut after = cursor.map(|c| decode_cursor(c, prefix)).transpose()?;
        let mut keys = Vec::new();
        let mut expired = Vec::new();
        // One more than a page, to know whether there is a next one.
        while keys.len() <= limit {
            let want = limit + 1 - keys.len();
            let batch = self
                .kv
                .scan(&self.function, prefix, after.as_deref(), want)?;
            let done = batch.len() < want;
            after = batch.last().map(|(k, _)| k.clone()).or(after);
            for (key, expires) in batch {
                if is_expired(expires, now) {
                    expired.push(key);
                } else {
                    keys.push(key);
                }
            }
            if done {
                break;
            }
        }
        if !expired.is_empty() {
            self.write_blocking(move |ns, w| {
                expired
                    .iter()
                    .try_for_each(|key| ns.reclaim_in(w, key, now))
            })?;
        }
        let cursor = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().map(|k| encode_cursor(k))
        } else {
            None
        };
        Ok(KeyList { keys, cursor })
    }

    // -- async, off the calling thread (the guest's and the admin API's)

    /// Runs `f` on the writer and answers once what it wrote is flushed (a
    /// write the caller is told about is on disk first). The calling
    /// thread serves other work meanwhile.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KvNamespace, &Writer) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let ns = self.clone();
        self.kv
            .store()
            .write(Durability::Flushed, move |w| f(&ns, w))
            .await?
    }

    /// Runs a read on the blocking pool (a read may wait for the disk).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KvNamespace) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let ns = self.clone();
        tokio::task::spawn_blocking(move || f(&ns))
            .await
            .map_err(task_failed)?
    }

    /// A read runs on the calling thread: sled serves it from its cache
    /// without any lock the writer holds (a flush does not stop it), and a
    /// hop to the blocking pool would cost more than the read itself
    /// (about 20 µs a request on this project's machine). Only reclaiming
    /// an expired key writes, and that goes to the writer.
    pub async fn get(&self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        check_key(&key, self.limits.max_key_bytes)?;
        let now = now_ms();
        if let Some(shared) = self.kv.shared() {
            return match shared.get(&self.function, &key).await? {
                Some(e) if !is_expired(e.expires_at_ms, now) => Ok(Some(e.value)),
                Some(_) => {
                    shared
                        .update(&self.function, &key, decide_reclaim(&key, now))
                        .await?;
                    Ok(None)
                }
                None => Ok(None),
            };
        }
        match self.kv.get(&self.function, &key)? {
            None => Ok(None),
            Some(e) if !is_expired(e.expires_at_ms, now) => Ok(Some(e.value)),
            Some(_) => {
                // Not flushed: a reclaim nobody was told about can be redone.
                let ns = self.clone();
                self.kv
                    .store()
                    .write(Durability::Committed, move |w| ns.reclaim_in(w, &key, now))
                    .await??;
                Ok(None)
            }
        }
    }

    pub async fn set(
        &self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        if let Some(shared) = self.kv.shared() {
            check_key(&key, self.limits.max_key_bytes)?;
            check_value(value.len(), self.limits.max_value_bytes)?;
            let decide = decide_set(
                &key,
                value,
                expiry(now_ms(), ttl_ms),
                self.limits.max_total_bytes,
            );
            return shared.update(&self.function, &key, decide).await.map(drop);
        }
        self.write(move |ns, w| ns.set_in(w, &key, value, ttl_ms, now_ms()).map(drop))
            .await
    }

    pub async fn delete(&self, key: String) -> Result<bool, KvError> {
        if let Some(shared) = self.kv.shared() {
            check_key(&key, self.limits.max_key_bytes)?;
            let decide = decide_delete(&key, now_ms());
            return Ok(shared.update(&self.function, &key, decide).await?.0);
        }
        self.write(move |ns, w| Ok(ns.delete_in(w, &key, now_ms())?.0))
            .await
    }

    pub async fn increment(&self, key: String, delta: i64) -> Result<i64, KvError> {
        if let Some(shared) = self.kv.shared() {
            check_key(&key, self.limits.max_key_bytes)?;
            let decide = decide_increment(&key, delta, now_ms(), self.limits);
            return Ok(shared.update(&self.function, &key, decide).await?.0);
        }
        self.write(move |ns, w| Ok(ns.increment_in(w, &key, delta, now_ms())?.0))
            .await
    }

    pub async fn compare_and_swap(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, KvError> {
        if let Some(shared) = self.kv.shared() {
            check_key(&key, self.limits.max_key_bytes)?;
            check_value(new.len(), self.limits.max_value_bytes)?;
            let decide = decide_swap(
                &key,
                expected.as_deref(),
                new,
                now_ms(),
                self.limits.max_total_bytes,
            );
            return Ok(shared.update(&self.function, &key, decide).await?.0);
        }
        self.write(move |ns, w| {
            Ok(ns
                .compare_and_swap_in(w, &key, expected.as_deref(), new, now_ms())?
                .0)
        })
        .await
    }

    pub async fn list(
        &self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyList, KvError> {
        if let Some(shared) = self.kv.shared() {
            return self
                .list_shared(shared, &prefix, cursor.as_deref(), limit)
                .await;
        }
        self.read(move |ns| ns.list_at(&prefix, cursor.as_deref(), limit, now_ms()))
            .await
    }

    /// A page of keys from the cluster's data: every key of the function
    /// is read, then sorted and cut like the local listing.
    async fn list_shared(
        &self,
        shared: &SharedKv,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyList, KvError> {
        let limit = page_limit(limit);
        let after = cursor.map(|c| decode_cursor(c, prefix)).transpose()?;
        let now = now_ms();
        let mut keys: Vec<String> = shared
            .keys(&self.function)
            .await?
            .into_iter()
            .filter(|(k, expires)| {
                k.starts_with(prefix)
                    && after.as_deref().is_none_or(|a| k.as_str() > a)
                    && !is_expired(*expires, now)
            })
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        let cursor = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().map(|k| encode_cursor(k))
        } else {
            None
        };
        Ok(KeyList { keys, cursor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn store() -> (tempfile::TempDir, KvStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        (dir, KvStore::open(&store).unwrap())
    }

    fn ns(store: &KvStore, name: &str, total: u64) -> KvNamespace {
        let limits = Limits {
            kv_max_key_bytes: 16,
            kv_max_value_bytes: 64,
            kv_max_total_bytes: total,
            ..Limits::default()
        };
        KvNamespace::new(store.clone(), Arc::from(name), &limits)
    }

    #[test]
    fn namespaces_are_isolated() {
        let (_d, store) = store();
        let a = ns(&store, "a", 1000);
        let ab = ns(&store, "ab", 1000);
        a.set_at("k", b"from a", None, 0).unwrap();
        // "a\0k" vs "ab\0k": a name that is a prefix of another shares nothing.
        assert_eq!(ab.get_at("k", 0).unwrap(), None);
        ab.set_at("k", b"from ab", None, 0).unwrap();
        assert_eq!(a.get_at("k", 0).unwrap().unwrap(), b"from a");
        assert_eq!(a.list_at("", None, 0, 0).unwrap().keys, ["k"]);
        assert_eq!(ab.list_at("", None, 0, 0).unwrap().keys, ["k"]);
        assert_eq!(store.usage("a").unwrap(), 7);
        assert_eq!(store.usage("ab").unwrap(), 8);
        store.purge_blocking("a").unwrap();
        assert_eq!(a.get_at("k", 0).unwrap(), None);
        assert_eq!(store.usage("a").unwrap(), 0);
        assert_eq!(ab.get_at("k", 0).unwrap().unwrap(), b"from ab");
    }

    #[test]
    fn failed_writes_write_nothing() {
        let (_d, store) = store();
        let n = ns(&store, "f", 20);
        n.set_at("k", b"abcdefghij", None, 0).unwrap(); // 11 bytes
        let before = (store.usage("f").unwrap(), n.get_at("k", 0).unwrap());
        assert!(matches!(
            n.set_at("", b"x", None, 0),
            Err(KvError::InvalidKey(_))
        ));
        assert!(matches!(
            n.set_at(&"x".repeat(17), b"x", None, 0),
            Err(KvError::InvalidKey(_))
        ));
        assert!(matches!(
            n.set_at("v", &[0; 65], None, 0),
            Err(KvError::ValueTooLarge { limit: 64 })
        ));
        // 11 + 10 > 20.
        assert!(matches!(
            n.set_at("k2", b"012345678", None, 0),
            Err(KvError::QuotaExceeded { limit: 20 })
        ));
        // Growing k past the total fails too; the old value stays.
        assert!(n.set_at("k", &[1; 20], None, 0).is_err());
        assert!(matches!(
            n.increment_at("k", 1, 0),
            Err(KvError::NotANumber)
        ));
        assert!(
            n.compare_and_swap_at("k", Some(b"abcdefghij"), &[1; 20], 0)
                .is_err()
        );
        assert_eq!(
            (store.usage("f").unwrap(), n.get_at("k", 0).unwrap()),
            before
        );
        assert_eq!(n.list_at("", None, 0, 0).unwrap().keys, ["k"]);
        // Exactly up to the limit is fine: 11 + 9.
        n.set_at("k2", b"0123456", None, 0).unwrap();
        assert_eq!(store.usage("f").unwrap(), 20);
        // Replacing with a smaller value and deleting give bytes back.
        n.set_at("k", b"0", None, 0).unwrap();
        assert_eq!(store.usage("f").unwrap(), 11);
        assert_eq!(n.delete_at("k2", 0).unwrap(), (true, true));
        assert_eq!(store.usage("f").unwrap(), 2);
        assert_eq!(n.delete_at("k2", 0).unwrap(), (false, false));
    }

    #[test]
    fn compare_and_swap_semantics() {
        let (_d, store) = store();
        let n = ns(&store, "f", 1000);
        // None: only if unset.
        assert!(n.compare_and_swap_at("k", None, b"1", 0).unwrap().0);
        assert!(!n.compare_and_swap_at("k", None, b"2", 0).unwrap().0);
        assert!(!n.compare_and_swap_at("k", Some(b"x"), b"2", 0).unwrap().0);
        assert_eq!(n.get_at("k", 0).unwrap().unwrap(), b"1");
        assert!(n.compare_and_swap_at("k", Some(b"1"), b"22", 0).unwrap().0);
        assert_eq!(n.get_at("k", 0).unwrap().unwrap(), b"22");
        assert_eq!(store.usage("f").unwrap(), 3);
        // An expired value counts as unset.
        n.set_at("t", b"old", Some(10), 0).unwrap();
        assert!(
            !n.compare_and_swap_at("t", Some(b"old"), b"new", 10)
                .unwrap()
                .0
        );
        assert!(n.compare_and_swap_at("t", None, b"new", 10).unwrap().0);
        assert_eq!(n.get_at("t", 10_000).unwrap().unwrap(), b"new");
        assert_eq!(store.usage("f").unwrap(), 3 + 4);
    }

    #[test]
    fn increments() {
        let (_d, store) = store();
        let n = ns(&store, "f", 1000);
        assert_eq!(n.increment_at("c", 5, 0).unwrap().0, 5);
        assert_eq!(n.increment_at("c", -7, 0).unwrap().0, -2);
        assert_eq!(n.get_at("c", 0).unwrap().unwrap(), b"-2");
        assert_eq!(store.usage("f").unwrap(), 3);
        n.set_at("s", b"text", None, 0).unwrap();
        assert!(matches!(
            n.increment_at("s", 1, 0),
            Err(KvError::NotANumber)
        ));
        n.set_at("m", i64::MAX.to_string().as_bytes(), None, 0)
            .unwrap();
        assert!(matches!(
            n.increment_at("m", 1, 0),
            Err(KvError::NotANumber)
        ));
        // A counter with a TTL keeps it; once expired it starts from 0.
        n.set_at("t", b"10", Some(100), 0).unwrap();
        assert_eq!(n.increment_at("t", 1, 50).unwrap().0, 11);
        assert_eq!(n.get_at("t", 99).unwrap().unwrap(), b"11");
        assert_eq!(n.get_at("t", 100).unwrap(), None);
        assert_eq!(n.increment_at("t", 1, 200).unwrap().0, 1);
        assert_eq!(n.get_at("t", u64::MAX).unwrap().unwrap(), b"1");
    }

    #[test]
    fn ttl_expiry_and_reclaiming() {
        let (_d, store) = store();
        let n = ns(&store, "f", 1000);
        n.set_at("a", b"1", Some(100), 1000).unwrap();
        n.set_at("b", b"2", Some(200), 1000).unwrap();
        n.set_at("c", b"3", None, 1000).unwrap();
        assert_eq!(store.usage("f").unwrap(), 6);
        assert_eq!(n.get_at("a", 1099).unwrap().unwrap(), b"1");
        // Touched after expiry: absent, and its bytes are reclaimed.
        assert_eq!(n.get_at("a", 1100).unwrap(), None);
        assert_eq!(store.usage("f").unwrap(), 4);
        assert!(store.get("f", "a").unwrap().is_none());
        // Listed after expiry: skipped and reclaimed.
        assert_eq!(n.list_at("", None, 0, 1200).unwrap().keys, ["c"]);
        assert_eq!(store.usage("f").unwrap(), 2);
        // Deleting an expired key says it was not set, and reclaims it.
        n.set_at("d", b"4", Some(1), 0).unwrap();
        assert_eq!(n.delete_at("d", 5).unwrap(), (false, true));
        assert_eq!(store.usage("f").unwrap(), 2);
        // A set without TTL clears an earlier TTL.
        n.set_at("e", b"5", Some(10), 0).unwrap();
        n.set_at("e", b"5", None, 0).unwrap();
        assert_eq!(n.get_at("e", 1_000_000).unwrap().unwrap(), b"5");
    }

    #[test]
    fn listing_pages_and_prefixes() {
        let (_d, store) = store();
        let n = ns(&store, "f", 100_000);
        for i in 0..25 {
            n.set_at(&format!("user/{i:02}"), b"x", None, 0).unwrap();
        }
        n.set_at("other", b"x", None, 0).unwrap();
        // Expired keys in the middle of a page do not shorten it.
        n.set_at("user/05x", b"x", Some(1), 0).unwrap();
        let mut all = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = n.list_at("user/", cursor.as_deref(), 10, 10).unwrap();
            pages += 1;
            assert!(page.keys.len() <= 10);
            all.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let want: Vec<String> = (0..25).map(|i| format!("user/{i:02}")).collect();
        assert_eq!(all, want);
        // Exactly a page: no cursor.
        let page = n.list_at("user/1", None, 10, 10).unwrap();
        assert_eq!(page.keys.len(), 10);
        assert_eq!(page.cursor, None);
        // A cursor for another prefix is refused.
        let c = n.list_at("user/", None, 1, 10).unwrap().cursor.unwrap();
        assert!(matches!(
            n.list_at("other", Some(&c), 1, 10),
            Err(KvError::InvalidCursor)
        ));
        assert!(matches!(
            n.list_at("", Some("nope"), 1, 10),
            Err(KvError::InvalidCursor)
        ));
    }

    #[test]
    fn quota_is_exact_under_concurrent_writers() {
        let (_d, store) = store();
        // Room for 100 entries of 10 bytes ("kNN" + 7 bytes).
        let n = Arc::new(ns(&store, "f", 1000));
        let counters = Arc::new(ns(&store, "g", 1000));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let n = n.clone();
                let counters = counters.clone();
                std::thread::spawn(move || {
                    let mut ok = 0u64;
                    for i in 0..40 {
                        // Threads overlap on keys: replacing and creating.
                        let key = format!("k{:02}", (t * 17 + i) % 150 % 100);
                        let value = vec![b'v'; 7];
                        match n.set_at(&key, &value, None, 0) {
                            Ok(_) => ok += 1,
                            Err(KvError::QuotaExceeded { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                        if i % 5 == 0 {
                            n.delete_at(&format!("k{:02}", (t + i) % 100), 0).unwrap();
                        }
                        counters.increment_at("counter", 1, 0).unwrap();
                    }
                    ok
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let listed = n.list_at("", None, 0, 0).unwrap().keys;
        let mut actual = 0;
        for key in &listed {
            actual += entry_size(key, n.get_at(key, 0).unwrap().unwrap().len());
        }
        assert_eq!(store.usage("f").unwrap(), actual);
        assert!(actual <= 1000);
        assert_eq!(counters.get_at("counter", 0).unwrap().unwrap(), b"320");
        assert_eq!(store.usage("g").unwrap(), 7 + 3);
    }
}
