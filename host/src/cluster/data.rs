//! Functions' key-value data on JetStream, shared by every host: the
//! bucket `wisp-kv`, one entry per key (`<function>.<key, base64url>`,
//! its value the same bytes as the local store's: expiry, then the value)
//! and one per function for its usage (`<function>`, a decimal count of
//! bytes). The operations are the local ones' decisions
//! (`capabilities/kv/namespace.rs`), applied with revision-checked updates
//! and retried on a conflict, so `increment` and compare-and-swap stay
//! atomic across hosts.
//!
//! The usage is updated before the entry and put back if the entry's
//! update then loses a race; a host killed between the two leaves the
//! usage off by that one write (the quota is exact otherwise).

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::kv;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;

use crate::capabilities::kv::KvError;
use crate::capabilities::kv::store::{KvEntry, KvWrite};
use crate::store::Value as _;

/// The bucket.
pub(super) const BUCKET: &str = "wisp-kv";
/// Attempts of one operation that keeps losing races to other hosts.
const ATTEMPTS: usize = 1000;

/// The shared key-value data; cheap to clone.
#[derive(Clone)]
pub(crate) struct SharedKv {
    pub(super) store: kv::Store,
    /// For listings' inboxes.
    pub(super) client: async_nats::Client,
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::ClusterUnavailable(format!(
        "the cluster's key-value data cannot be reached: {e}"
    ))
}

fn entry_key(function: &str, key: &str) -> String {
    format!(
        "{function}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
    )
}

/// What an update may lose to: a write on another host since the read.
fn lost_race(e: &kv::UpdateError) -> bool {
    e.kind() == kv::UpdateErrorKind::WrongLastRevision
        || e.to_string().contains("wrong last sequence")
}

impl SharedKv {
    /// A key's entry (expired ones too) and the revision to update it at
    /// (0: it never existed).
    async fn read(&self, subject_key: &str) -> Result<(Option<KvEntry>, u64), KvError> {
        match self.store.entry(subject_key).await.map_err(unavailable)? {
            None => Ok((None, 0)),
            Some(e) if e.operation != kv::Operation::Put => Ok((None, e.revision)),
            Some(e) => {
                let entry = KvEntry::decode(&e.value).map_err(|reason| {
                    unavailable(format!("entry {subject_key} is corrupt: {reason}"))
                })?;
                Ok((Some(entry), e.revision))
            }
        }
    }

    /// A function's usage in bytes and the revision to update it at.
    async fn usage(&self, function: &str) -> Result<(u64, u64), KvError> {
        match self.store.entry(function).await.map_err(unavailable)? {
            Some(e) if e.operation == kv::Operation::Put => {
                let n = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                Ok((n, e.revision))
            }
            Some(e) => Ok((0, e.revision)),
            None => Ok((0, 0)),
        }
    }

    /// Writes `value` at `revision` (0: only if never written).
    async fn write_at(&self, key: &str, value: Bytes, revision: u64) -> Result<bool, KvError> {
        match self.store.update(key, value, revision).await {
            Ok(_) => Ok(true),
            Err(e) if lost_race(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// A key's entry, expired or not.
    pub(crate) async fn get(&self, function: &str, key: &str) -> Result<Option<KvEntry>, KvError> {
        Ok(self.read(&entry_key(function, key)).await?.0)
    }

    /// Reads `key` and the function's usage, lets `decide` choose the write
    /// and the new usage, and applies both unless another host changed
    /// either meanwhile (then it starts again). Returns `decide`'s answer
    /// and whether anything was written.
    pub(crate) async fn update<T>(
        &self,
        function: &str,
        key: &str,
        decide: impl Fn(Option<KvEntry>, u64) -> Result<(KvWrite, u64, T), KvError>,
    ) -> Result<(T, bool), KvError> {
        let subject_key = entry_key(function, key);
        for _ in 0..ATTEMPTS {
            let (old, revision) = self.read(&subject_key).await?;
            let (usage, usage_revision) = self.usage(function).await?;
            let (write, new_usage, out) = decide(old, usage)?;
            if write == KvWrite::Keep {
                return Ok((out, false));
            }
            if new_usage != usage
                && !self
                    .write_at(function, new_usage.to_string().into(), usage_revision)
                    .await?
            {
                continue;
            }
            let written = match write {
                KvWrite::Put {
                    value,
                    expires_at_ms,
                } => {
                    let bytes = KvEntry {
                        value,
                        expires_at_ms,
                    }
                    .encode()
                    .into_owned();
                    self.write_at(&subject_key, bytes.into(), revision).await?
                }
                KvWrite::Remove => match self
                    .store
                    .delete_expect_revision(&subject_key, Some(revision))
                    .await
                {
                    Ok(()) => true,
                    Err(e) if lost_race(&e) => false,
                    Err(e) => return Err(unavailable(e)),
                },
                KvWrite::Keep => unreachable!("returned above"),
            };
            if written {
                return Ok((out, true));
            }
            if new_usage != usage {
                self.give_back(function, new_usage as i64 - usage as i64)
                    .await?;
            }
        }
        Err(unavailable(format!(
            "key {key:?} kept changing on other hosts ({ATTEMPTS} attempts)"
        )))
    }

    /// Undoes `delta` bytes of usage counted for a write that did not
    /// happen.
    async fn give_back(&self, function: &str, delta: i64) -> Result<(), KvError> {
        for _ in 0..ATTEMPTS {
            let (usage, revision) = self.usage(function).await?;
            let back = (usage as i64 - delta).max(0) as u64;
            if self
                .write_at(function, back.to_string().into(), revision)
                .await?
            {
                return Ok(());
            }
        }
        Err(unavailable("the usage kept changing on other hosts"))
    }

    /// Every key of a function with its expiry, in no order.
    pub(crate) async fn keys(&self, function: &str) -> Result<Vec<(String, Option<u64>)>, KvError> {
        let consumer = self
            .store
            .stream
            .create_consumer(OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                description: Some("wisp key listing".into()),
                filter_subject: format!("$KV.{BUCKET}.{function}.>"),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let mut pending = consumer.cached_info().num_pending;
        let mut messages = consumer.messages().await.map_err(unavailable)?;
        let prefix = format!("$KV.{BUCKET}.{function}.");
        let mut keys = Vec::new();
        while pending > 0 {
            let Some(message) = messages.next().await else {
                break;
            };
            let message = message.map_err(unavailable)?;
            pending -= 1;
            let deleted = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some();
            if deleted {
                continue;
            }
            let Some(encoded) = message.subject.strip_prefix(&prefix) else {
                continue;
            };
            let Some(key) = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            else {
                continue;
            };
            if let Ok(entry) = KvEntry::decode(&message.payload) {
                keys.push((key, entry.expires_at_ms));
            }
        }
        Ok(keys)
    }

    /// Removes every key of a function and its usage (it was deleted, or
    /// its name is deployed anew).
    pub(crate) async fn purge(&self, function: &str) -> Result<(), KvError> {
        for (key, _) in self.keys(function).await? {
            self.store
                .purge(entry_key(function, &key))
                .await
                .map_err(unavailable)?;
        }
        self.store.purge(function).await.map_err(unavailable)
    }
}
