//! The event plane's trees, keys and records, and the writes that keep them
//! consistent (the records are defined in [`crate::events`], the decisions
//! made there too; this module reads, writes atomically and encodes).
//!
//! Trees:
//! - `ev_events`: event id (u64 BE) → a [`StoredEvent`]: the JSON
//!   `EventRecord`, the functions it was published to, the payload.
//! - `ev_subs`: `topic \0 function` → JSON `Subscription`.
//! - `ev_deliveries`: `event id | topic \0 function` → JSON
//!   `DeliveryRecord`, written at a delivery's first outcome (until then it
//!   is pending, known from the event's list of functions and its due
//!   entry); a job task's is written with its event.
//! - `ev_due`: `due_ms | seq` (both BE) → delivery key: the pending
//!   deliveries in due order, so finding what is due is a short range scan.
//!   A claimed delivery keeps its entry while it runs (it is skipped, see
//!   below), so after a crash it is simply due again.
//! - `ev_dead`: `function \0 topic \0 event id` → delivery key: the
//!   dead-letter list of each subscription.
//! - `ev_dead_at`: `died_ms (BE) | dead key` → empty: the dead letters in
//!   the order they died, so those past the dead-letter retention are a
//!   short range scan. Written with the dead entry; a redrive or purge
//!   removes it too (a stale entry, whose delivery died again later or is
//!   gone, is dropped by the expiry sweep: it checks the record's time).
//! - `ev_open`: event id → u64 BE: deliveries not done yet, for events with
//!   more than one (an event with one delivery has no entry); when the last
//!   is done the event is scheduled for removal in `ev_expire`.
//! - `ev_expire`: `remove_at_ms | seq` → the events finished in one
//!   transaction ([`Expiring`]), removed with their deliveries after the
//!   retention time.
//! - `ev_schedules`: schedule id (u64 BE) → JSON `Schedule`.
//! - `ev_jobs`: job id (u64 BE) → JSON `JobRecord`.
//! - `ev_job_tasks`: `job id | index` (u64 BE, u32 BE) → event id (u64 BE):
//!   the event (topic `job:ID`) that carries each index of a job.
//!
//! Beside the trees, in memory ([`EventMemory`]): the queue depth of each
//! topic (counted from `ev_due` on open), the bytes of the events each
//! topic holds for pending, running or dead deliveries (rebuilt on open
//! from `ev_due` and `ev_dead`, see [`EventStore::open`]), and the claimed
//! deliveries being run. None is written per event: a claim costs no
//! write; a publish writes the event and a due entry per delivery; an
//! outcome removes the due entry and writes the delivery's record; the
//! events that finish in one transaction share one expiry entry.
//!
//! An event is held (its bytes counted) from its publish until its last
//! delivery is done or cancelled, or, if dead, until it is redriven and
//! done, purged or expired: the same moment `ev_open` reaches zero, so the
//! count changes in the transactions that already run then.
//!
//! Every write runs on the store's writer ([`crate::store`]); reads run on
//! the caller's thread.

mod cleanup;
mod jobs;
mod keys;
mod writes;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use keys::{DeadAtKey, DeadKey, DeadOf, JobTaskKey, OfEvent, OfTopic};
pub(crate) use keys::{DeliveryKey, DueKey, Expiring, StoredEvent, SubKey};
pub(crate) use writes::{EventWrites, Finish, NewEvent, PublishRefused};

use super::{DeliveryRecord, DeliveryStatus, EventRecord, JobRecord, Schedule, Subscription};
use crate::store::{Durability, Store, StoreError, Tree, Writer};

/// What the event plane keeps in memory beside its trees.
#[derive(Default)]
pub(crate) struct EventMemory {
    /// Pending and running deliveries per topic: the due index counted by
    /// topic (the queue-depth limit and gauge).
    depth: HashMap<String, u64>,
    /// Claimed deliveries being run: delivery key → when the attempt
    /// started (ms since the epoch). Their due entries stay in the due
    /// index; readers of it skip them.
    running: HashMap<DeliveryKey, u64>,
    /// Bytes of the events each topic holds (see the module docs): the
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

/// The event plane's trees and what it keeps in memory beside them; cheap
/// to clone (the memory is shared).
#[derive(Clone)]
pub(crate) struct EventStore {
    store: Store,
    events: Tree<u64, StoredEvent>,
    subs: Tree<SubKey, Subscription>,
    deliveries: Tree<DeliveryKey, DeliveryRecord>,
    due: Tree<DueKey, DeliveryKey>,
    dead: Tree<DeadKey, DeliveryKey>,
    dead_at: Tree<DeadAtKey, ()>,
    open: Tree<u64, u64>,
    expire: Tree<DueKey, Expiring>,
    schedules: Tree<u64, Schedule>,
    jobs: Tree<u64, JobRecord>,
    job_tasks: Tree<JobTaskKey, u64>,
    /// Changed only together with the trees, on the writer, under its lock
    /// (never held across a flush or an `.await`).
    mem: Arc<Mutex<EventMemory>>,
}

/// The record of a delivery not attempted yet, due at `due`.
fn pending_delivery(key: &DeliveryKey, due: DueKey) -> DeliveryRecord {
    DeliveryRecord {
        event_id: key.event_id,
        topic: key.topic.clone(),
        function: key.function.clone(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        last_error: None,
        due_ms: due.due_ms,
        due_seq: due.seq,
        attempt_times_ms: Vec::new(),
        postponed_ms: 0,
        updated_ms: due.due_ms,
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

impl EventStore {
    /// Opens the trees and rebuilds what is kept in memory: the queue
    /// depths (from the due index) and the bytes held per topic (the events
    /// of the due index and of the dead-letter lists, each read once).
    /// Rebuilt rather than stored, so a publish writes nothing more for
    /// the quotas, and a crash cannot leave a count that disagrees with
    /// the trees. Reading the held events costs at most about the host-wide
    /// quota of reads at start.
    pub fn open(store: &Store) -> Result<EventStore, StoreError> {
        // Stores written before the dead-letter expiry have no index yet.
        let indexed = store.has_tree("ev_dead_at");
        let this = EventStore {
            events: store.tree("ev_events")?,
            subs: store.tree("ev_subs")?,
            deliveries: store.tree("ev_deliveries")?,
            due: store.tree("ev_due")?,
            dead: store.tree("ev_dead")?,
            dead_at: store.tree("ev_dead_at")?,
            open: store.tree("ev_open")?,
            expire: store.tree("ev_expire")?,
            schedules: store.tree("ev_schedules")?,
            jobs: store.tree("ev_jobs")?,
            job_tasks: store.tree("ev_job_tasks")?,
            mem: Arc::default(),
            store: store.clone(),
        };
        let mut mem = EventMemory::default();
        let mut held = HashSet::new();
        for kv in this.due.scan() {
            let (_, dkey) = kv?;
            mem.add_depth(&dkey.topic, 1);
            held.insert(dkey.event_id);
        }
        let mut index = this.dead_at.batch();
        for dk in this.dead.scan().keys() {
            let dk = dk?;
            held.insert(dk.event_id);
            if !indexed && let Some(rec) = this.deliveries.get(&dk.delivery())? {
                index.insert(
                    &DeadAtKey {
                        died_ms: rec.updated_ms,
                        dead: dk,
                    },
                    &(),
                );
            }
        }
        if !index.is_empty() {
            let dead_at = this.dead_at.clone();
            store.write_blocking(Durability::Committed, move |w| dead_at.apply(w, index))??;
        }
        for id in held {
            if let Some(e) = this.events.get(&id)? {
                mem.add_bytes(
                    &e.record.topic,
                    e.record.charge(e.payload.len() as u64) as i64,
                );
            }
        }
        *this.mem() = mem;
        Ok(this)
    }

    fn mem(&self) -> MutexGuard<'_, EventMemory> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the writer, answered as `when` says.
    async fn write<T: Send + 'static>(
        &self,
        when: Durability,
        f: impl FnOnce(&EventStore, &Writer) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        self.store.write(when, move |w| f(&this, w)).await?
    }

    /// Runs `f` on the blocking pool (it reads much, or waits for the
    /// writer).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EventStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(format!("store task: {e}"))))?
    }

    /// [`EventStore::write`], blocking this thread (never a serving one).
    fn write_blocking<T: Send + 'static>(
        &self,
        when: Durability,
        f: impl FnOnce(&EventStore, &Writer) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        self.store.write_blocking(when, move |w| f(&this, w))?
    }

    /// A fresh sequence number (unique, increasing; survives restarts).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        self.store.next_id()
    }

    // ---------------------------------------------- subscriptions, schedules

    /// A subscription.
    pub fn subscription(
        &self,
        topic: &str,
        function: &str,
    ) -> Result<Option<Subscription>, StoreError> {
        self.subs.get(&SubKey {
            topic: topic.into(),
            function: function.into(),
        })
    }

    /// The subscriptions of `topic`, or all of them, by topic and function.
    pub fn subscriptions(&self, topic: Option<&str>) -> Result<Vec<Subscription>, StoreError> {
        let scan = match topic {
            Some(t) => self.subs.scan().within(&OfTopic(t)),
            None => self.subs.scan(),
        };
        scan.into_iter().map(|kv| kv.map(|(_, s)| s)).collect()
    }

    /// Creates or replaces a subscription.
    pub async fn put_subscription(
        &self,
        sub: Subscription,
        when: Durability,
    ) -> Result<(), StoreError> {
        self.write(when, move |this, w| {
            let key = SubKey {
                topic: sub.topic.clone(),
                function: sub.function.clone(),
            };
            this.subs.insert(w, &key, &sub)
        })
        .await
    }

    /// Removes a subscription (its pending deliveries are cancelled when
    /// they come due). Returns whether it existed.
    pub async fn delete_subscription(
        &self,
        topic: &str,
        function: &str,
        when: Durability,
    ) -> Result<bool, StoreError> {
        let key = SubKey {
            topic: topic.into(),
            function: function.into(),
        };
        self.write(when, move |this, w| this.subs.remove(w, &key))
            .await
    }

    /// Every schedule, oldest first.
    pub fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        self.schedules
            .scan()
            .into_iter()
            .map(|kv| kv.map(|(_, s)| s))
            .collect()
    }

    /// Creates or replaces a schedule.
    pub async fn put_schedule(
        &self,
        schedule: Schedule,
        when: Durability,
    ) -> Result<(), StoreError> {
        self.write(when, move |this, w| {
            this.schedules.insert(w, &schedule.id, &schedule)
        })
        .await
    }

    /// Removes a schedule; whether it existed.
    pub async fn delete_schedule(&self, id: u64, when: Durability) -> Result<bool, StoreError> {
        self.write(when, move |this, w| this.schedules.remove(w, &id))
            .await
    }

    // ------------------------------------------------------------- reading

    /// An event and its payload.
    pub fn event(&self, id: u64) -> Result<Option<(EventRecord, Bytes)>, StoreError> {
        Ok(self.events.get(&id)?.map(|e| (e.record, e.payload)))
    }

    /// An event's deliveries, by topic and function (a claimed one as
    /// running).
    pub fn deliveries_of(&self, id: u64) -> Result<Vec<DeliveryRecord>, StoreError> {
        let Some(event) = self.events.get(&id)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for kv in self.deliveries.scan().within(&OfEvent(id)) {
            out.push(kv?);
        }
        // Published without a record: pending since the event's time.
        for function in &event.targets {
            let key = DeliveryKey::new(id, &event.record.topic, function);
            if out.iter().all(|(k, _)| *k != key) {
                let due = DueKey {
                    due_ms: event.record.time_ms,
                    seq: 0,
                };
                let rec = pending_delivery(&key, due);
                out.push((key, rec));
            }
        }
        out.sort_by(|a, b| (&a.0.topic, &a.0.function).cmp(&(&b.0.topic, &b.0.function)));
        let mem = self.mem();
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

    /// The entries of the due index due at or before `now_ms` (and after
    /// `after`, if given) that are not claimed, lazily: (due entry,
    /// delivery), in due order. The dispatcher reads only as many as it
    /// can use.
    pub fn due_iter(
        &self,
        now_ms: u64,
        after: Option<&DueKey>,
    ) -> impl Iterator<Item = Result<(DueKey, DeliveryKey), StoreError>> + use<> {
        let mut scan = self.due.scan().to(&DueKey::last_at(now_ms));
        if let Some(k) = after {
            scan = scan.after(k);
        }
        let mem = self.mem.clone();
        scan.into_iter().filter(move |kv| match kv {
            Ok((_, dkey)) => !mem
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .running
                .contains_key(dkey),
            Err(_) => true,
        })
    }

    /// Up to `max` entries of the due index due at or before `now_ms` and
    /// not claimed. (Tests; the dispatcher reads [`EventStore::due_iter`].)
    #[cfg(test)]
    pub fn due_deliveries(
        &self,
        now_ms: u64,
        max: usize,
    ) -> Result<Vec<(DueKey, DeliveryKey)>, StoreError> {
        self.due_iter(now_ms, None).take(max).collect()
    }

    /// When the earliest pending delivery not claimed is due.
    pub fn next_due_ms(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .due_iter(u64::MAX - 1, None)
            .next()
            .transpose()?
            .map(|(k, _)| k.due_ms))
    }

    /// Claims due deliveries for a run: each due entry that is still there
    /// and not claimed gives its delivery (key, and the record as it
    /// stands while running, started at `now_ms`); `None` otherwise. The
    /// claim is kept in memory only, until the outcome is written (see
    /// [`EventStore::write_events`]): a crash meanwhile leaves the delivery
    /// due.
    pub fn claim(
        &self,
        entries: &[DueKey],
        now_ms: u64,
    ) -> Result<Vec<Option<(DeliveryKey, DeliveryRecord)>>, StoreError> {
        let mut mem = self.mem();
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let Some(key) = self.due.get(entry)? else {
                out.push(None);
                continue;
            };
            if mem.running.contains_key(&key) {
                out.push(None);
                continue;
            }
            let mut rec = match self.deliveries.get(&key)? {
                Some(rec) => rec,
                None => pending_delivery(&key, *entry),
            };
            rec.status = DeliveryStatus::Running;
            rec.updated_ms = now_ms;
            push_attempt_time(&mut rec, now_ms);
            mem.running.insert(key.clone(), now_ms);
            out.push(Some((key, rec)));
        }
        Ok(out)
    }

    /// Claims a due delivery (see [`EventStore::claim`]). (Tests.)
    #[cfg(test)]
    pub fn claim_delivery(
        &self,
        due: &DueKey,
        now_ms: u64,
    ) -> Result<Option<(DeliveryKey, DeliveryRecord)>, StoreError> {
        Ok(self.claim(&[*due], now_ms)?.pop().flatten())
    }

    /// Dead deliveries of `function` (of one topic if given), oldest event
    /// first, at most `max`.
    pub fn dead_deliveries(
        &self,
        function: &str,
        topic: Option<&str>,
        max: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .dead
            .scan()
            .within(&DeadOf { function, topic })
            .into_iter()
            .take(max)
        {
            let (_, dkey) = kv?;
            if let Some(rec) = self.deliveries.get(&dkey)? {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Pending and running deliveries of all topics.
    pub fn queue_depth_total(&self) -> u64 {
        self.mem().depth.values().sum()
    }

    /// Bytes of the events `topic` holds (or all topics together): those
    /// with a delivery pending, running, retrying or dead (see the module
    /// docs).
    pub fn event_bytes(&self, topic: Option<&str>) -> u64 {
        let mem = self.mem();
        match topic {
            Some(t) => mem.bytes.get(t).copied().unwrap_or(0),
            None => mem.bytes_total,
        }
    }
}

#[cfg(test)]
mod tests;
