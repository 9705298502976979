//! Jobs in the store: their records, and their tasks (one event and one
//! pending delivery per array index, with a task entry).

use std::convert::Infallible;

use super::keys::{JobTaskKey, OfEvent, OfJob};
use super::writes::{tx_charge, tx_expire, tx_finish_one};
use super::{DeliveryKey, DueKey, EventStore, Expiring, StoredEvent, pending_delivery};
use crate::events::{DeliveryRecord, DeliveryStatus, EventRecord, JobRecord};
use crate::store::{Abort, Durability, StoreError};

/// Deliveries cancelled per transaction when a job is.
const CANCEL_CHUNK: usize = 500;

impl EventStore {
    /// Creates or replaces a job record.
    pub async fn put_job(&self, job: JobRecord, when: Durability) -> Result<(), StoreError> {
        self.write(when, move |this, w| this.jobs.insert(w, &job.id, &job))
            .await
    }

    /// [`EventStore::put_job`], blocking this thread; not flushed.
    pub fn put_job_blocking(&self, job: JobRecord) -> Result<(), StoreError> {
        self.write_blocking(Durability::Committed, move |this, w| {
            this.jobs.insert(w, &job.id, &job)
        })
    }

    /// A job record.
    pub fn job(&self, id: u64) -> Result<Option<JobRecord>, StoreError> {
        self.jobs.get(&id)
    }

    /// Every job record, oldest first.
    pub fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.jobs
            .scan()
            .into_iter()
            .map(|kv| kv.map(|(_, job)| job))
            .collect()
    }

    /// Stores a batch of a job's events (empty payloads: the job record
    /// holds it), each with one pending delivery to `function` and its task
    /// entry, in one transaction. Blocking; not flushed.
    pub fn add_job_tasks_blocking(
        &self,
        job: u64,
        function: &str,
        events: Vec<(u32, EventRecord)>,
    ) -> Result<(), StoreError> {
        let Some(topic) = events.first().map(|(_, e)| e.topic.clone()) else {
            return Ok(());
        };
        let mut rows = Vec::with_capacity(events.len());
        let mut charge = 0;
        for (index, event) in events {
            charge += event.charge(0);
            let key = DeliveryKey::new(event.id, &event.topic, function);
            let due = DueKey {
                due_ms: event.time_ms,
                seq: self.next_id()?,
            };
            let rec = pending_delivery(&key, due);
            let stored = StoredEvent {
                record: event,
                targets: Vec::new(),
                payload: Default::default(),
            };
            rows.push((JobTaskKey { job, index }, stored, key, due, rec));
        }
        self.write_blocking(Durability::Committed, move |this, w| {
            let mut mem = this.mem();
            let trees = (&this.events, &this.deliveries, &this.due, &this.job_tasks);
            w.transaction(trees, |(events, dtree, due, tasks)| {
                for (task, event, key, due_key, rec) in &rows {
                    events.insert(&event.record.id, event)?;
                    dtree.insert(key, rec)?;
                    due.insert(due_key, key)?;
                    tasks.insert(task, &event.record.id)?;
                }
                Ok::<_, Abort<Infallible>>(())
            })
            .map_err(StoreError::from)?;
            mem.add_depth(&topic, rows.len() as i64);
            mem.add_bytes(&topic, charge as i64);
            Ok(())
        })
    }

    /// A job's tasks in index order: (index, its delivery).
    pub fn job_tasks(&self, job: u64) -> Result<Vec<(u32, DeliveryRecord)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.job_tasks.scan().within(&OfJob(job)) {
            let (task, event_id) = kv?;
            if let Some(d) = self.deliveries_of(event_id)?.into_iter().next() {
                out.push((task.index, d));
            }
        }
        Ok(out)
    }

    /// Cancels a job's pending deliveries (out of the due index), in
    /// transactions of up to [`CANCEL_CHUNK`]. Claimed ones are left to
    /// finish. Returns how many were cancelled. Blocking; not flushed.
    pub fn cancel_job_tasks_blocking(
        &self,
        job: u64,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut keys = Vec::new();
        for kv in self.job_tasks.scan().within(&OfJob(job)) {
            let (_, event_id) = kv?;
            for k in self.deliveries.scan().within(&OfEvent(event_id)).keys() {
                keys.push(k?);
            }
        }
        let mut n = 0;
        for chunk in keys.chunks(CANCEL_CHUNK) {
            let chunk = chunk.to_vec();
            n += self.write_blocking(Durability::Committed, move |this, w| {
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
                        let mut topics = Vec::new();
                        let mut expiring = Expiring::default();
                        for key in &chunk {
                            let Some(mut rec) = dtree.get(key)? else {
                                continue;
                            };
                            if rec.status != DeliveryStatus::Pending
                                || mem.running.contains_key(key)
                            {
                                continue;
                            }
                            due.remove(&rec.due_key())?;
                            rec.status = DeliveryStatus::Cancelled;
                            rec.last_error = Some("the job was cancelled".into());
                            rec.updated_ms = now_ms;
                            dtree.insert(key, &rec)?;
                            let at = now_ms.saturating_add(retention_ms);
                            let mut freed = 0;
                            if tx_finish_one(&open, key, at, &mut expiring)? {
                                freed = tx_charge(&events, rec.event_id)?;
                            }
                            topics.push((rec.topic, freed));
                        }
                        tx_expire(&expire, &expiring, expiry_seq)?;
                        Ok::<_, Abort<Infallible>>(topics)
                    })
                    .map_err(StoreError::from)?;
                let n = cancelled.len() as u64;
                for (topic, freed) in cancelled {
                    mem.add_depth(&topic, -1);
                    mem.add_bytes(&topic, -(freed as i64));
                }
                Ok(n)
            })?;
        }
        Ok(n)
    }

    /// Removes a job record and its task entries (its events go with the
    /// event retention). Not flushed.
    pub async fn delete_job(&self, job: u64) -> Result<(), StoreError> {
        let this = self.clone();
        let mut batch = self.job_tasks.batch();
        for k in self.job_tasks.scan().within(&OfJob(job)).keys() {
            batch.remove(&k?);
        }
        this.write(Durability::Committed, move |this, w| {
            this.job_tasks.apply(w, batch)?;
            this.jobs.remove(w, &job).map(drop)
        })
        .await
    }
}
