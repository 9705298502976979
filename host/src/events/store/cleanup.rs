//! Removing what the event plane no longer needs: dead letters (purged or
//! past their retention), a deleted function's events, finished events
//! past their retention. Each reads on the calling thread (the blocking
//! pool) and writes in bounded transactions on the writer, so other writes
//! go in between.

use std::convert::Infallible;

use super::keys::{DeadAtKey, DeadKey, DeadOf, DiedAt, Expired, OfEvent};
use super::writes::{tx_charge, tx_expire, tx_finish_one};
use super::{DueKey, EventStore, Expiring, pending_delivery};
use crate::events::DeliveryStatus;
use crate::store::{Abort, Durability, StoreError};

/// What [`EventStore::purge_function_events`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FunctionPurge {
    /// Subscriptions.
    pub subscriptions: u64,
    /// Schedules.
    pub schedules: u64,
    /// Deliveries pending or running, now cancelled.
    pub cancelled: u64,
    /// Dead letters.
    pub dead_letters: u64,
}

/// Items per transaction of a cleanup.
const CHUNK: usize = 256;

impl EventStore {
    /// Removes the dead letters of `function` (of one topic if given) from
    /// its dead-letter list: they can no longer be redriven, and each event
    /// goes at the next sweep once nothing else holds it. Returns how many,
    /// once flushed.
    pub async fn purge_dead(
        &self,
        function: &str,
        topic: Option<&str>,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let (function, topic) = (function.to_string(), topic.map(str::to_string));
        self.blocking(move |this| {
            let n = this.purge_dead_blocking(&function, topic.as_deref(), now_ms)?;
            this.store.flush_blocking()?;
            Ok(n)
        })
        .await
    }

    /// [`EventStore::purge_dead`] on this thread, not flushed.
    pub(super) fn purge_dead_blocking(
        &self,
        function: &str,
        topic: Option<&str>,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut items = Vec::new();
        for k in self.dead.scan().within(&DeadOf { function, topic }).keys() {
            items.push((k?, None));
        }
        self.drop_dead(items, now_ms)
    }

    /// Removes up to about `max` dead letters that died at or before
    /// `now_ms - retention_ms` (see [`EventStore::purge_dead`]). Returns how
    /// many index entries were handled: 0 once nothing more has expired.
    /// Blocking; not flushed.
    pub fn expire_dead_letters_blocking(
        &self,
        now_ms: u64,
        retention_ms: u64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let Some(cutoff) = now_ms.checked_sub(retention_ms) else {
            return Ok(0);
        };
        let mut items = Vec::new();
        let died_by = DiedAt(cutoff.saturating_add(1));
        for k in self.dead_at.scan().before(&died_by).keys().take(max) {
            let k = k?;
            items.push((k.dead, Some(k.died_ms)));
        }
        if items.is_empty() {
            return Ok(0);
        }
        let n = items.len();
        self.drop_dead(items, now_ms)?;
        Ok(n)
    }

    /// Takes dead letters out of their lists: each item is a dead letter
    /// and, for an expiry, when the index says it died (it is dropped only
    /// if its record died then: one that was redriven and died again later
    /// has a newer index entry). Each is then finished like a done
    /// delivery, its event removed at the next sweep once nothing else
    /// holds it; its record stays `dead` until then. Returns how many were
    /// taken out. In transactions of up to [`CHUNK`]; not flushed.
    fn drop_dead(
        &self,
        items: Vec<(DeadKey, Option<u64>)>,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        for chunk in items.chunks(CHUNK) {
            let chunk = chunk.to_vec();
            n += self.write_blocking(Durability::Committed, move |this, w| {
                let expiry_seq = this.next_id()?;
                let mut mem = this.mem();
                let trees = (
                    &this.events,
                    &this.deliveries,
                    &this.dead,
                    &this.dead_at,
                    &this.open,
                    &this.expire,
                );
                let freed = w
                    .transaction(trees, |(events, dtree, dead, dead_at, open, expire)| {
                        let mut freed = Vec::new();
                        let mut expiring = Expiring::default();
                        for (dk, died) in &chunk {
                            if let Some(at) = died {
                                dead_at.remove(&DeadAtKey {
                                    died_ms: *at,
                                    dead: dk.clone(),
                                })?;
                            }
                            if !dead.contains(dk)? {
                                continue;
                            }
                            let key = dk.delivery();
                            let Some(rec) = dtree.get(&key)? else {
                                dead.remove(dk)?;
                                continue;
                            };
                            if rec.status != DeliveryStatus::Dead
                                || died.is_some_and(|at| rec.updated_ms != at)
                            {
                                continue;
                            }
                            dead.remove(dk)?;
                            dead_at.remove(&DeadAtKey {
                                died_ms: rec.updated_ms,
                                dead: dk.clone(),
                            })?;
                            let mut charge = 0;
                            if tx_finish_one(&open, &key, now_ms, &mut expiring)? {
                                charge = tx_charge(&events, key.event_id)?;
                            }
                            freed.push((key.topic, charge));
                        }
                        tx_expire(&expire, &expiring, expiry_seq)?;
                        Ok::<_, Abort<Infallible>>(freed)
                    })
                    .map_err(StoreError::from)?;
                let n = freed.len() as u64;
                for (topic, charge) in freed {
                    mem.add_bytes(&topic, -(charge as i64));
                }
                Ok(n)
            })?;
        }
        Ok(n)
    }

    /// Removes everything of the event plane that names `function`: its
    /// subscriptions and schedules, its deliveries still pending or
    /// running on any topic (cancelled: their records say why; an outcome
    /// that comes in later is dropped) and its dead letters. For a deleted
    /// function, and before a name is deployed anew (which catches what a
    /// crash in the middle of a delete left). Several transactions, not
    /// one: the due index is read whole (on the blocking pool); a crash
    /// part-way leaves the rest for the next call. Answered once flushed.
    pub async fn purge_function_events(
        &self,
        function: &str,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<FunctionPurge, StoreError> {
        let function = function.to_string();
        self.blocking(move |this| {
            let purged = this.purge_function_blocking(&function, now_ms, retention_ms)?;
            this.store.flush_blocking()?;
            Ok(purged)
        })
        .await
    }

    fn purge_function_blocking(
        &self,
        function: &str,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<FunctionPurge, StoreError> {
        let mut purged = FunctionPurge::default();
        let subs: Vec<_> = self
            .subscriptions(None)?
            .into_iter()
            .filter(|s| s.function == function)
            .collect();
        let schedules: Vec<_> = self
            .schedules()?
            .into_iter()
            .filter(|s| s.function == function)
            .map(|s| s.id)
            .collect();
        (purged.subscriptions, purged.schedules) =
            self.write_blocking(Durability::Committed, move |this, w| {
                let mut n = (0, 0);
                for sub in subs {
                    let key = super::SubKey {
                        topic: sub.topic,
                        function: sub.function,
                    };
                    n.0 += u64::from(this.subs.remove(w, &key)?);
                }
                for id in schedules {
                    n.1 += u64::from(this.schedules.remove(w, &id)?);
                }
                Ok(n)
            })?;
        let mut entries = Vec::new();
        for kv in self.due.scan() {
            let (entry, dkey) = kv?;
            if dkey.function == function {
                entries.push((entry, dkey));
            }
        }
        for chunk in entries.chunks(CHUNK) {
            let chunk = chunk.to_vec();
            purged.cancelled += self.write_blocking(Durability::Committed, move |this, w| {
                let expiry_seq = this.next_id()?;
                let mut mem = this.mem();
                let trees = (
                    &this.events,
                    &this.deliveries,
                    &this.due,
                    &this.open,
                    &this.expire,
                );
                let cancelled = w
                    .transaction(trees, |(events, dtree, due, open, expire)| {
                        let mut cancelled = Vec::new();
                        let mut expiring = Expiring::default();
                        for (entry, key) in &chunk {
                            if due.get(entry)?.as_ref() != Some(key) {
                                continue;
                            }
                            let mut rec = dtree
                                .get(key)?
                                .unwrap_or_else(|| pending_delivery(key, *entry));
                            due.remove(entry)?;
                            rec.status = DeliveryStatus::Cancelled;
                            rec.last_error = Some("the function was deleted".into());
                            rec.updated_ms = now_ms;
                            dtree.insert(key, &rec)?;
                            let at = now_ms.saturating_add(retention_ms);
                            let mut charge = 0;
                            if tx_finish_one(&open, key, at, &mut expiring)? {
                                charge = tx_charge(&events, key.event_id)?;
                            }
                            cancelled.push((rec.topic, charge));
                        }
                        tx_expire(&expire, &expiring, expiry_seq)?;
                        Ok::<_, Abort<Infallible>>(cancelled)
                    })
                    .map_err(StoreError::from)?;
                let n = cancelled.len() as u64;
                for (topic, charge) in cancelled {
                    mem.add_depth(&topic, -1);
                    mem.add_bytes(&topic, -(charge as i64));
                }
                Ok(n)
            })?;
        }
        purged.dead_letters = self.purge_dead_blocking(function, None, now_ms)?;
        Ok(purged)
    }

    /// Removes finished events whose retention ended by `now_ms` (about
    /// `max`: whole expiry entries), with their deliveries, in three
    /// batches (see below). A job's events stay while its record does
    /// (looked at again a minute later). Returns how many events were
    /// handled (removed or put off): 0 once nothing more has expired.
    /// Blocking; not flushed.
    pub fn sweep_events_blocking(&self, now_ms: u64, max: usize) -> Result<usize, StoreError> {
        let mut entries = Vec::new();
        // Event ids, and delivery keys, to remove.
        let mut events = Vec::new();
        let mut deliveries = Vec::new();
        let mut later = Expiring::default();
        for kv in self.expire.scan().to(&DueKey::last_at(now_ms)) {
            if events.len() + later.items.len() >= max {
                break;
            }
            let (expiry, expiring) = kv?;
            for item in expiring.items {
                match item {
                    Expired::Event(id) => {
                        // Several deliveries (or none); never a job's.
                        for key in self.deliveries.scan().within(&OfEvent(id)).keys() {
                            deliveries.push(key?);
                        }
                        events.push(id);
                    }
                    Expired::Delivery(key) => {
                        if let Some(job) = crate::events::job::job_of_topic(&key.topic)
                            && self.jobs.contains(&job)?
                        {
                            later.add(now_ms.saturating_add(60_000), Expired::Delivery(key));
                            continue;
                        }
                        events.push(key.event_id);
                        deliveries.push(key);
                    }
                }
            }
            entries.push(expiry);
        }
        if entries.is_empty() {
            return Ok(0);
        }
        let handled = events.len() + later.items.len();
        // Batches, not a transaction (whose removes each read the old
        // value first): deliveries, then events, then the expiry entries.
        // A crash in between leaves the expiry entries, and the next sweep
        // removes what is left.
        let mut dbatch = self.deliveries.batch();
        for key in &deliveries {
            dbatch.remove(key);
        }
        let mut ebatch = self.events.batch();
        for id in &events {
            ebatch.remove(id);
        }
        let mut xbatch = self.expire.batch();
        for expiry in &entries {
            xbatch.remove(expiry);
        }
        if !later.items.is_empty() {
            let key = DueKey {
                due_ms: later.at_ms,
                seq: self.next_id()?,
            };
            xbatch.insert(&key, &later);
        }
        self.write_blocking(Durability::Committed, move |this, w| {
            this.deliveries.apply(w, dbatch)?;
            this.events.apply(w, ebatch)?;
            this.expire.apply(w, xbatch)
        })?;
        Ok(handled)
    }
}

/// The delivery key of a due entry, for tests that look one up.
#[cfg(test)]
pub(crate) fn first_due_of(
    store: &EventStore,
    function: &str,
    event: Option<u64>,
) -> (DueKey, super::DeliveryKey) {
    store
        .due_deliveries(u64::MAX - 1, 1000)
        .unwrap()
        .into_iter()
        .find(|(_, k)| k.function == function && event.is_none_or(|id| id == k.event_id))
        .expect("a due delivery of the function")
}
