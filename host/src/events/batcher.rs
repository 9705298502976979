//! Batched writes of the event plane.
//!
//! Every write of the event plane is a store transaction, and with sled
//! 0.34 a transaction is expensive twice over: it cannot run while the
//! store flushes (the store's writer does one after the other, see
//! `store/writer.rs`; a flush takes ~1-2 ms here), and each one seals and
//! writes sled's log buffer (a `pwrite` and a `sync_file_range`). One
//! transaction per publish and per outcome meant several per event.
//! Instead, publishes and the outcomes of finished deliveries go into one
//! queue; one task at a time (started by whoever finds the queue idle)
//! takes everything queued, writes it in one transaction on the store's
//! writer ([`EventStore::write_events`](super::store::EventStore::write_events)),
//! and asks for one flush for all of it (the store's group commit). While
//! that flush runs, the next batch gathers.
//!
//! The task runs on an [`EventWriter`]: the queue and the handles writing
//! it needs, not the host, so that a publisher handed to invocations
//! ([`EventPublisher`](super::publish::EventPublisher)) can start one.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

use super::EventRecord;
use super::Outcome;
use super::plane::EventsCtx;
use super::plane::{EventError, EventPlane};
use super::store::{EventStore, EventWrites, Finish, NewEvent, PublishRefused};
use crate::config::HostConfig;
use crate::store::{Store, StoreError};

/// Most queued writes (publishes, outcomes) taken into one
/// transaction (see [`Batcher`]).
const WRITE_BATCH: usize = 512;
/// Under load (the last transaction took at least `PACE_AT` writes), the
/// shortest time between the starts of two event-plane transactions: what
/// arrives meanwhile joins the next one (see [`drain_writes`]). Below it,
/// a write is written at once.
const WRITE_INTERVAL: Duration = Duration::from_millis(1);
const PACE_AT: usize = 8;

/// A queue drained in batches by one task at a time. Clones share the
/// queue (the plane's and its [`EventWriter`]s').
pub(super) struct Batcher<T> {
    state: Arc<StdMutex<BatchState<T>>>,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Batcher {
            state: self.state.clone(),
        }
    }
}

struct BatchState<T> {
    items: Vec<T>,
    /// A task is draining the queue.
    draining: bool,
}

impl<T> Default for Batcher<T> {
    fn default() -> Self {
        Batcher {
            state: Arc::new(StdMutex::new(BatchState {
                items: Vec::new(),
                draining: false,
            })),
        }
    }
}

impl<T> Batcher<T> {
    /// Queues `item`; true if nobody is draining the queue, in which case
    /// the caller must start a task that does ([`Batcher::take`] until
    /// `None`, with a [`Draining`] guard).
    fn push(&self, item: T) -> bool {
        let mut s = self.state.lock().expect("not poisoned");
        s.items.push(item);
        !std::mem::replace(&mut s.draining, true)
    }

    /// Up to `max` queued items, oldest first; `None` when the queue is
    /// empty, and then the caller has stopped draining it.
    fn take(&self, max: usize) -> Option<Vec<T>> {
        let mut s = self.state.lock().expect("not poisoned");
        if s.items.is_empty() {
            s.draining = false;
            return None;
        }
        let n = s.items.len().min(max);
        Some(s.items.drain(..n).collect())
    }
}

/// Marks a queue as no longer drained if the draining task is dropped
/// part-way (its runtime shutting down): the next push starts another.
struct Draining<'a, T>(&'a Batcher<T>);

impl<T> Drop for Draining<'_, T> {
    fn drop(&mut self) {
        // After `take` answered `None` this is already false.
        self.0.state.lock().expect("not poisoned").draining = false;
    }
}

/// A write waiting for its transaction.
pub(super) enum Write {
    /// A new event: answered once it is durable (or refused).
    Publish {
        event: EventRecord,
        payload: Bytes,
        to: Vec<String>,
        /// The id is a schedule tick's (see [`NewEvent::dedupe`]).
        dedupe: bool,
        reply: oneshot::Sender<Result<(), EventError>>,
    },
    /// A finished attempt: answered once committed (the flush after it is
    /// not waited for; its result is counted once it is done).
    Outcome {
        finish: Finish,
        /// Index into [`EventPlane::results`].
        result: Option<usize>,
        reply: oneshot::Sender<()>,
    },
}

/// The error every request of a failed batch gets (the cause is logged once).
pub(super) fn batch_error(e: &StoreError) -> EventError {
    EventError::Store(StoreError::Batch(e.to_string()))
}

/// What writing the queued writes needs: the queue, the event plane's
/// store, the store's group commit, the dispatcher's wake-up, the plane's
/// metrics and the host's event limits. Handles and counters, cheap to
/// clone; none of them keeps the host alive.
#[derive(Clone)]
pub(super) struct EventWriter {
    /// The plane's queue ([`EventPlane::writes`]), shared.
    writes: Batcher<Write>,
    /// The event plane's trees, written on the store's writer.
    pub(super) store: EventStore,
    /// The store whose group commit (`flush`) makes a batch durable before
    /// its publishers are answered.
    commit: Store,
    /// The dispatcher's wake-up: new events, or retries due sooner.
    wake: Arc<Notify>,
    published: metrics::Counter,
    results: [metrics::Counter; 4],
    /// Pending and running deliveries one topic may have.
    max_depth: u64,
    /// Bytes of undelivered events one topic, and all topics, may hold.
    max_topic_bytes: u64,
    max_host_bytes: u64,
    /// How long a finished event stays readable (`--event-retention`).
    retention_ms: u64,
}

impl EventWriter {
    /// The writer of `plane`, whose trees are in `store`.
    pub(super) fn new(plane: &EventPlane, store: &Store, config: &HostConfig) -> EventWriter {
        EventWriter {
            writes: plane.writes.clone(),
            store: plane.store.clone(),
            commit: store.clone(),
            wake: plane.wake.clone(),
            published: plane.published.clone(),
            results: plane.results.clone(),
            max_depth: config.event_max_queue_depth,
            max_topic_bytes: config.event_topic_quota_bytes,
            max_host_bytes: config.event_host_quota_bytes,
            retention_ms: config.event_retention.as_millis() as u64,
        }
    }

    /// Queues a write for the next event-plane transaction.
    pub(super) fn queue(&self, write: Write) {
        if self.writes.push(write) {
            tokio::spawn(drain_writes(self.clone()));
        }
    }
}

impl EventsCtx {
    /// Queues a write for the next event-plane transaction.
    pub(super) fn queue_write(&self, write: Write) {
        // The writer's handles are cloned only when a drain starts.
        if self.plane().writes.push(write) {
            let writer = EventWriter::new(self.plane(), &self.inner.store, &self.inner.config);
            tokio::spawn(drain_writes(writer));
        }
    }
}

/// Writes queued writes, a batch per transaction, until the queue is empty.
/// Publishers are answered after the flush that makes their batch durable,
/// and the next batch is written meanwhile. Under load, transactions start
/// at most every [`WRITE_INTERVAL`] (a lone write is written at once).
async fn drain_writes(w: EventWriter) {
    let _guard = Draining(&w.writes);
    let (max_depth, max_topic_bytes, max_host_bytes) =
        (w.max_depth, w.max_topic_bytes, w.max_host_bytes);
    let retention_ms = w.retention_ms;
    let mut last: Option<(tokio::time::Instant, usize)> = None;
    loop {
        if let Some((at, n)) = last
            && n >= PACE_AT
        {
            tokio::time::sleep_until(at + WRITE_INTERVAL).await;
        }
        let Some(batch) = w.writes.take(WRITE_BATCH) else {
            break;
        };
        last = Some((tokio::time::Instant::now(), batch.len()));
        let mut publishes = Vec::new();
        let mut outcomes = Vec::new();
        for w in batch {
            match w {
                Write::Publish {
                    event,
                    payload,
                    to,
                    dedupe,
                    reply,
                } => publishes.push((event, payload, to, dedupe, reply)),
                Write::Outcome {
                    finish,
                    result,
                    reply,
                } => outcomes.push((finish, result, reply)),
            }
        }
        let finishes: Vec<Finish> = outcomes.iter().map(|o| o.0.clone()).collect();
        // What a refusal reports of each event (the events go to the
        // writer); and whom to answer.
        let mut replies = Vec::with_capacity(publishes.len());
        let mut items = Vec::with_capacity(publishes.len());
        for (event, payload, to, dedupe, reply) in publishes {
            let stored_payload = if to.is_empty() {
                0
            } else {
                payload.len() as u64
            };
            replies.push((event.topic.clone(), event.charge(stored_payload), reply));
            items.push(NewEvent {
                event,
                payload,
                to,
                dedupe,
            });
        }
        let writes = EventWrites {
            finishes,
            publishes: items,
            max_depth,
            max_topic_bytes,
            max_host_bytes,
            retention_ms,
        };
        // On the store's writer: this task waits without holding a thread.
        // A write that fails (or panics) fails the whole batch.
        let result = w.store.write_events(writes).await;
        let publishes = replies;
        let written = match result {
            Ok(w) => w,
            Err(e) => {
                // Outcomes not recorded leave their deliveries due: run
                // again.
                tracing::error!(error = %e, events = publishes.len(), outcomes = outcomes.len(),
                    "an event-plane transaction failed");
                for (.., reply) in publishes {
                    let _ = reply.send(Err(batch_error(&e)));
                }
                continue;
            }
        };
        let mut counts = [0u64; 4];
        let outcomes_n = outcomes.len();
        let retries = outcomes.iter().any(|(finish, ..)| {
            matches!(finish.outcome, Outcome::Retry(_) | Outcome::Postponed(_))
        });
        for (_, result, reply) in outcomes {
            if let Some(i) = result {
                counts[i] += 1;
            }
            let _ = reply.send(());
        }
        if retries {
            // Retries are in the due index now: the dispatcher's next wait
            // may be shorter.
            w.wake.notify_one();
        }
        let mut accepted = Vec::with_capacity(publishes.len());
        for ((topic, size, reply), answer) in publishes.into_iter().zip(written.published) {
            let refused = match answer {
                Ok(()) => {
                    accepted.push(reply);
                    continue;
                }
                Err(PublishRefused::QueueFull(depth)) => EventError::QueueFull {
                    topic,
                    depth,
                    limit: max_depth,
                },
                Err(PublishRefused::TopicQuota(held)) => EventError::TopicQuotaExceeded {
                    size,
                    topic,
                    held,
                    limit: max_topic_bytes,
                },
                Err(PublishRefused::HostQuota(held)) => EventError::HostQuotaExceeded {
                    size,
                    held,
                    limit: max_host_bytes,
                },
            };
            let _ = reply.send(Err(refused));
        }
        if accepted.is_empty() && outcomes_n == 0 {
            continue;
        }
        // The flush ticket is taken now, after the transaction: the flush
        // covers it. Waited for elsewhere so the next batch is written
        // while this one is flushed.
        let w = w.clone();
        tokio::spawn(async move {
            let flushed = w.commit.flush().await;
            if flushed.is_ok() {
                for (counter, n) in w.results.iter().zip(counts) {
                    if n > 0 {
                        counter.increment(n);
                    }
                }
                if !accepted.is_empty() {
                    w.published.increment(accepted.len() as u64);
                    w.wake.notify_one();
                }
            }
            for reply in accepted {
                let _ = reply.send(flushed.as_ref().map(|_| ()).map_err(batch_error));
            }
        });
    }
}

impl EventsCtx {
    /// Queues a finished attempt for the next event-plane transaction;
    /// the answer comes once it is committed.
    pub(super) fn record_finish(
        &self,
        finish: Finish,
        result: Option<usize>,
    ) -> oneshot::Receiver<()> {
        let (reply, done) = oneshot::channel();
        self.queue_write(Write::Outcome {
            finish,
            result,
            reply,
        });
        done
    }
}
