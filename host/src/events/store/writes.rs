//! The event plane's writes of one moment (publishes and outcomes, in one
//! transaction), and redrives.

use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;

use super::keys::{DeadAtKey, DeadKey, Expired};
use super::{
    DeliveryKey, DueKey, EventStore, Expiring, StoredEvent, pending_delivery, push_attempt_time,
};
use crate::events::{DeliveryRecord, DeliveryStatus, EventRecord, Outcome};
use crate::store::{Abort, Durability, StoreError, TxFail, TxTree, Writer};

/// Why a publish wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublishRefused {
    /// The topic already has this many pending deliveries.
    QueueFull(u64),
    /// The topic already holds this many bytes of events.
    TopicQuota(u64),
    /// All topics together already hold this many bytes of events.
    HostQuota(u64),
}

/// One event of [`EventWrites`]: the record, its payload and the functions
/// it is delivered to (on its topic).
pub(crate) struct NewEvent {
    /// The record.
    pub event: EventRecord,
    /// The payload (not stored for an event nobody receives: nothing reads
    /// it, and it would take room for the whole retention unbounded by the
    /// quotas).
    pub payload: Bytes,
    /// One pending delivery each.
    pub to: Vec<String>,
    /// The id is derived, not fresh (a schedule tick): if an event with it
    /// is already stored, this one is the same event fired again, and is
    /// answered as written without writing anything.
    pub dedupe: bool,
}

/// What [`EventStore::write_events`] writes in one transaction.
pub(crate) struct EventWrites {
    /// Outcomes of finished attempts.
    pub finishes: Vec<Finish>,
    /// New events.
    pub publishes: Vec<NewEvent>,
    /// Pending deliveries a topic may have (publishes past it are refused).
    pub max_depth: u64,
    /// Bytes of held events a topic may have (see the module docs).
    pub max_topic_bytes: u64,
    /// Bytes of held events all topics may have together.
    pub max_host_bytes: u64,
    /// How long finished events are kept.
    pub retention_ms: u64,
}

impl Default for EventWrites {
    /// Nothing to write, no limit.
    fn default() -> Self {
        EventWrites {
            finishes: Vec::new(),
            publishes: Vec::new(),
            max_depth: u64::MAX,
            max_topic_bytes: u64::MAX,
            max_host_bytes: u64::MAX,
            retention_ms: 0,
        }
    }
}

/// What [`EventStore::write_events`] did.
pub(crate) struct EventWritten {
    /// Per new event: written (or already there), or refused.
    pub published: Vec<Result<(), PublishRefused>>,
}

/// One finished attempt for [`EventStore::write_events`].
#[derive(Debug, Clone)]
pub(crate) struct Finish {
    /// The delivery (as a claim returned it).
    pub key: DeliveryKey,
    /// Its due entry when it was claimed.
    pub due: DueKey,
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

/// The [`EventRecord::charge`] of a stored event, read in a transaction
/// (0 if it is gone).
pub(super) fn tx_charge(events: &TxTree<'_, u64, StoredEvent>, id: u64) -> Result<u64, TxFail> {
    Ok(events
        .get(&id)?
        .map_or(0, |e| e.record.charge(e.payload.len() as u64)))
}

/// Counts one more finished delivery (`key`) of its event in `ev_open`;
/// if it was the last, the event expires at `at_ms` (an event without an
/// entry has this one delivery only) and this returns true: the event is
/// no longer held.
pub(super) fn tx_finish_one(
    open: &TxTree<'_, u64, u64>,
    key: &DeliveryKey,
    at_ms: u64,
    expiring: &mut Expiring,
) -> Result<bool, TxFail> {
    let id = key.event_id;
    let Some(n) = open.get(&id)? else {
        expiring.add(at_ms, Expired::Delivery(key.clone()));
        return Ok(true);
    };
    let left = n.saturating_sub(1);
    if left == 0 {
        open.remove(&id)?;
        expiring.add(at_ms, Expired::Event(id));
        Ok(true)
    } else {
        open.insert(&id, &left)?;
        Ok(false)
    }
}

/// Writes the expiry entry of the events `expiring` holds, if any (`seq`:
/// a fresh sequence number).
pub(super) fn tx_expire(
    expire: &TxTree<'_, DueKey, Expiring>,
    expiring: &Expiring,
    seq: u64,
) -> Result<(), TxFail> {
    if !expiring.items.is_empty() {
        let key = DueKey {
            due_ms: expiring.at_ms,
            seq,
        };
        expire.insert(&key, expiring)?;
    }
    Ok(())
}

impl EventStore {
    /// The event plane's writes of one moment, all in one transaction on
    /// the writer: outcomes of finished deliveries first (they free queue
    /// depth and bytes), then new events, each checked against the topic's
    /// queue depth and the storage quotas (counting the events before it
    /// in the batch). Answered once committed (not flushed).
    ///
    /// One transaction instead of one per event and per delivery matters
    /// with sled 0.34: each one seals and writes the current log buffer (a
    /// `pwrite` and a `sync_file_range`), so the disk work grows with the
    /// number of transactions, not of writes.
    ///
    /// An outcome whose delivery is no longer at its due entry (cancelled
    /// while it ran) is dropped. Either way its claim ends.
    pub async fn write_events(&self, writes: EventWrites) -> Result<EventWritten, StoreError> {
        self.write(Durability::Committed, move |this, w| {
            this.events_in(w, &writes)
        })
        .await
    }

    /// [`EventStore::write_events`], blocking this thread (tests).
    #[cfg(test)]
    pub fn write_events_blocking(&self, writes: EventWrites) -> Result<EventWritten, StoreError> {
        self.write_blocking(Durability::Committed, move |this, w| {
            this.events_in(w, &writes)
        })
    }

    fn events_in(&self, writer: &Writer, w: &EventWrites) -> Result<EventWritten, StoreError> {
        struct Row {
            stored: StoredEvent,
            /// Delivery key and due entry of each subscriber.
            deliveries: Vec<(DeliveryKey, DueKey)>,
            /// What the event counts against the quotas while held.
            charge: u64,
        }
        let mut rows = Vec::with_capacity(w.publishes.len());
        for item in &w.publishes {
            let event = &item.event;
            // No delivery record until the first outcome: the event lists
            // the functions instead.
            let mut deliveries = Vec::with_capacity(item.to.len());
            for function in &item.to {
                let due = DueKey {
                    due_ms: event.time_ms,
                    seq: self.next_id()?,
                };
                deliveries.push((DeliveryKey::new(event.id, &event.topic, function), due));
            }
            let payload = if item.to.is_empty() {
                Bytes::new()
            } else {
                item.payload.clone()
            };
            rows.push(Row {
                charge: event.charge(payload.len() as u64),
                stored: StoredEvent {
                    record: event.clone(),
                    targets: item.to.clone(),
                    payload,
                },
                deliveries,
            });
        }
        let mut seqs = Vec::with_capacity(w.finishes.len());
        for f in &w.finishes {
            seqs.push(match f.outcome {
                Outcome::Retry(_) | Outcome::Postponed(_) => self.next_id()?,
                _ => 0,
            });
        }
        let expiry_seq = self.next_id()?;
        let retention_ms = w.retention_ms;
        let mut mem = self.mem();
        let trees = (
            &self.events,
            &self.deliveries,
            &self.due,
            &self.open,
            &self.expire,
            &self.dead,
            &self.dead_at,
        );
        let result = writer.transaction(
            trees,
            |(events, dtree, due, open, expire, dead, dead_at)| {
                // Answers are built inside: the transaction may run more than
                // once. The count changes are applied after the commit.
                let mut depth: HashMap<&str, i64> = HashMap::new();
                let mut bytes: HashMap<&str, i64> = HashMap::new();
                let mut bytes_total: i64 = 0;
                let mut expiring = Expiring::default();
                for (f, &seq) in w.finishes.iter().zip(&seqs) {
                    let (key, outcome, now_ms) = (&f.key, f.outcome, f.now_ms);
                    if due.get(&f.due)?.as_ref() != Some(key) {
                        continue;
                    }
                    let mut rec = dtree
                        .get(key)?
                        .unwrap_or_else(|| pending_delivery(key, f.due));
                    due.remove(&f.due)?;
                    rec.updated_ms = now_ms;
                    rec.last_error = f.error.clone();
                    // A postponed delivery was not attempted: no start time,
                    // no attempt used up.
                    if !matches!(outcome, Outcome::Postponed(_)) {
                        if let Some(&started) = mem.running.get(key) {
                            push_attempt_time(&mut rec, started);
                        }
                        if outcome != Outcome::Cancelled {
                            rec.attempts += 1;
                        }
                    }
                    let topic = key.topic.as_str();
                    match outcome {
                        Outcome::Retry(at) => {
                            rec.status = DeliveryStatus::Pending;
                            rec.due_ms = at;
                            rec.due_seq = seq;
                            due.insert(&rec.due_key(), key)?;
                        }
                        Outcome::Postponed(at) => {
                            // The wait is kept apart from the event's age.
                            rec.status = DeliveryStatus::Pending;
                            rec.postponed_ms = rec
                                .postponed_ms
                                .saturating_add(at.saturating_sub(rec.due_ms));
                            rec.due_ms = at;
                            rec.due_seq = seq;
                            due.insert(&rec.due_key(), key)?;
                        }
                        Outcome::Dead => {
                            rec.status = DeliveryStatus::Dead;
                            let dk = DeadKey::of(key);
                            let at = DeadAtKey {
                                died_ms: now_ms,
                                dead: dk.clone(),
                            };
                            dead_at.insert(&at, &())?;
                            dead.insert(&dk, key)?;
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
                            if tx_finish_one(&open, key, at, &mut expiring)? {
                                let charge = match f.charge {
                                    Some(c) => c,
                                    None => tx_charge(&events, key.event_id)?,
                                };
                                *bytes.entry(topic).or_default() -= charge as i64;
                                bytes_total -= charge as i64;
                            }
                        }
                    }
                    dtree.insert(key, &rec)?;
                }

                let mut published = Vec::with_capacity(rows.len());
                for (item, row) in w.publishes.iter().zip(&rows) {
                    let event = &item.event;
                    if item.dedupe && events.contains(&event.id)? {
                        // Fired again (after a crash): already stored.
                        published.push(Ok(()));
                        continue;
                    }
                    let n = row.deliveries.len() as u64;
                    if n > 0 {
                        // The counts include the events accepted earlier in the
                        // batch (and the outcomes before them).
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
                            open.insert(&event.id, &n)?;
                        }
                    } else {
                        let at = event.time_ms.saturating_add(retention_ms);
                        expiring.add(at, Expired::Event(event.id));
                    }
                    events.insert(&event.id, &row.stored)?;
                    for (key, due_key) in &row.deliveries {
                        due.insert(due_key, key)?;
                    }
                    published.push(Ok(()));
                }
                tx_expire(&expire, &expiring, expiry_seq)?;
                let owned = |m: HashMap<&str, i64>| -> Vec<(String, i64)> {
                    m.into_iter()
                        .filter(|(_, n)| *n != 0)
                        .map(|(t, n)| (t.to_string(), n))
                        .collect()
                };
                Ok::<_, Abort<Infallible>>((published, owned(depth), owned(bytes)))
            },
        );
        for f in &w.finishes {
            mem.running.remove(&f.key);
        }
        let (published, depth, bytes) = result.map_err(StoreError::from)?;
        for (topic, n) in depth {
            mem.add_depth(&topic, n);
        }
        for (topic, n) in bytes {
            mem.add_bytes(&topic, n);
        }
        Ok(EventWritten { published })
    }

    /// Makes dead deliveries of `function` (of one topic if given; only the
    /// events in `ids` if given) pending again, due now, with their attempts
    /// reset. Returns the redriven deliveries, once flushed. The list is
    /// read on the blocking pool.
    pub async fn redrive(
        &self,
        function: &str,
        topic: Option<&str>,
        ids: Option<Vec<u64>>,
        now_ms: u64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let (function, topic) = (function.to_string(), topic.map(str::to_string));
        self.blocking(move |this| {
            let mut dead = this.dead_deliveries(&function, topic.as_deref(), usize::MAX)?;
            dead.retain(|rec| ids.as_ref().is_none_or(|ids| ids.contains(&rec.event_id)));
            this.write_blocking(Durability::Flushed, move |this, w| {
                let mut out = Vec::new();
                for rec in dead {
                    let key = DeliveryKey::new(rec.event_id, &rec.topic, &rec.function);
                    let seq = this.next_id()?;
                    let mut mem = this.mem();
                    let trees = (&this.deliveries, &this.due, &this.dead, &this.dead_at);
                    let done = w
                        .transaction(trees, |(dtree, due, dead, dead_at)| {
                            let dk = DeadKey::of(&key);
                            if !dead.remove(&dk)? {
                                return Ok(None);
                            }
                            let Some(mut rec) = dtree.get(&key)? else {
                                return Ok(None);
                            };
                            dead_at.remove(&DeadAtKey {
                                died_ms: rec.updated_ms,
                                dead: dk,
                            })?;
                            rec.status = DeliveryStatus::Pending;
                            rec.attempts = 0;
                            rec.due_ms = now_ms;
                            rec.due_seq = seq;
                            rec.updated_ms = now_ms;
                            due.insert(&rec.due_key(), &key)?;
                            dtree.insert(&key, &rec)?;
                            Ok::<_, Abort<Infallible>>(Some(rec))
                        })
                        .map_err(StoreError::from)?;
                    if let Some(rec) = &done {
                        mem.add_depth(&rec.topic, 1);
                    }
                    out.extend(done);
                }
                Ok(out)
            })
        })
        .await
    }

    /// Stores an event and one pending delivery per function in `to`, in
    /// one transaction, unless the topic's queue would pass `max_depth`.
    /// (Tests; the event plane writes batches.)
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
            publishes: vec![NewEvent {
                event: event.clone(),
                payload: Bytes::copy_from_slice(payload),
                to: to.to_vec(),
                dedupe: false,
            }],
            max_depth,
            retention_ms,
            ..EventWrites::default()
        };
        let written = self
            .write_events_blocking(writes)
            .expect("the store works in tests");
        match written.published.first() {
            Some(Err(refused)) => Err(*refused),
            _ => Ok(()),
        }
    }

    /// Records the outcome of an attempt (see [`Outcome`]). (Tests; the
    /// event plane records batches.)
    #[cfg(test)]
    pub fn finish_delivery(
        &self,
        key: &DeliveryKey,
        outcome: Outcome,
        error: Option<&str>,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<(), StoreError> {
        let mut due = DueKey { due_ms: 0, seq: 0 };
        for kv in self.due.scan() {
            let (entry, dkey) = kv?;
            if dkey == *key {
                due = entry;
            }
        }
        let finish = Finish {
            key: key.clone(),
            due,
            outcome,
            error: error.map(str::to_string),
            now_ms,
            charge: None,
        };
        let writes = EventWrites {
            finishes: vec![finish],
            retention_ms,
            ..EventWrites::default()
        };
        self.write_events_blocking(writes).map(drop)
    }
}
