//! The event plane at work: publishing with group commit, subscriptions,
//! dead letters, and the dispatcher that delivers due events to functions.
//!
//! The queue lives in the store, not in memory: the dispatcher scans the due
//! index for what is due, claims a bounded batch (at most the free delivery
//! slots; a claim is held in memory, so it costs no write and a crash
//! leaves the delivery due), and runs each claimed delivery through the same
//! [`Invoker`](crate::invoke::Invoker) as HTTP requests (a call of the
//! event-handler export, or a `POST`).
//!
//! Writes are batched: publishes and outcomes queued at the same
//! time share one store transaction and one flush (see "batched writes"
//! below). A publisher is answered only after the flush that covers its
//! event; an outcome is counted in the metrics once it is flushed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, header};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinSet;

use super::schedule::{Schedule, due_tick, tick_event_id};
use super::{
    DeliveryRecord, EventRecord, INVOKE_TOPIC_PREFIX, Outcome, RetryPolicy, SCHEDULE_TOPIC_PREFIX,
    Subscription, format_id, invoke_topic, parse_delivery_key, parse_id, validate_content_type,
    validate_topic,
};
use crate::Host;
use crate::capabilities::event_bindings::exports::wisp::function::event_handler::{
    Event as HandlerEvent, JobTask,
};
use crate::engine::{ComponentPre, Prepared};
use crate::host::HostInner;
use crate::invoke::{HandlerFailure, NoSlot};
use crate::store::{Finish, NewEvent, PublishRefused, StoreError};

/// Due-index entries a dispatcher pass looks at from the front (the
/// earliest due), and then further on, from where the last pass stopped
/// (see [`pass`]).
const HEAD: usize = 64;
const SWEEP: usize = 256;
/// How soon a pass that stopped part-way through the due index is
/// followed by the next, when nothing wakes the dispatcher sooner.
const SWEEP_AGAIN: Duration = Duration::from_millis(10);
/// While the head of the due index leaves deliveries waiting for a slot,
/// the shortest time between two reads past it (see [`pass`]).
const FURTHER_EVERY: Duration = Duration::from_millis(10);
/// Longest the dispatcher sleeps without looking at the store again.
const IDLE: Duration = Duration::from_secs(1);
/// How often schedules are checked (the resolution of ticks).
const SCHEDULE_EVERY: Duration = Duration::from_millis(250);
/// How often finished jobs past their retention are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How often finished events past their retention are removed: often, in
/// small steps, so that under load the sweep is a steady trickle beside
/// publishes rather than a burst that holds them up.
const EVENT_SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Finished events removed per step of a sweep (about).
const SWEEP_BATCH: usize = 64;
/// Pause between steps of a sweep (other writes go between).
const SWEEP_PAUSE: Duration = Duration::from_millis(1);
/// Bytes of a failed response kept as the delivery's last error.
const ERROR_EXCERPT: usize = 300;
/// How long a delivery the host could not start (saturated: no invocation
/// slot free) waits before it is due again, at least; up to twice that
/// with jitter, so postponed deliveries do not all come back at once. The
/// host's own 503 asks clients for the same (`Retry-After: 1`).
const POSTPONE_MS: u64 = 1_000;
/// What a postponed delivery's record says.
const POSTPONED: &str =
    "postponed: the host was saturated (no invocation slot free); no attempt was used up";
/// Dead letters looked at per step of the expiry sweep.
const DEAD_SWEEP_BATCH: usize = 256;
/// Most queued writes (publishes, outcomes) taken into one
/// transaction (see [`Batcher`]).
const WRITE_BATCH: usize = 512;
/// Under load (the last transaction took at least `PACE_AT` writes), the
/// shortest time between the starts of two event-plane transactions: what
/// arrives meanwhile joins the next one (see [`drain_writes`]). Below it,
/// a write is written at once.
const WRITE_INTERVAL: Duration = Duration::from_millis(1);
const PACE_AT: usize = 8;

/// Metric: events published.
pub const PUBLISHED: &str = "wisp_events_published_total";
/// Metric: delivery attempts by result (`success`, `failure`, `dead`).
pub const DELIVERIES: &str = "wisp_event_deliveries_total";
/// Metric: pending and running deliveries, all topics.
pub const QUEUE_DEPTH: &str = "wisp_event_queue_depth";
/// Metric: bytes of the events held for pending, running or dead
/// deliveries, all topics (what the storage quotas count).
pub const STORED_BYTES: &str = "wisp_event_stored_bytes";

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

// ---------------------------------------------------------------- errors

/// Event-plane failures that reach clients.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// A topic (or function) name is malformed.
    #[error("{0}")]
    InvalidName(String),
    /// A parameter is malformed or out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// The payload is over the host's limit.
    #[error("the event payload is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The topic's queue is full.
    #[error(
        "the queue of topic {topic:?} is full ({depth} pending deliveries; the limit is {limit}): \
         its subscribers are behind; retry later, or raise --max-queue-depth"
    )]
    QueueFull {
        /// The topic.
        topic: String,
        /// Its pending deliveries.
        depth: u64,
        /// The limit.
        limit: u64,
    },
    /// The topic holds as many bytes of undelivered events as it may.
    #[error(
        "topic {topic:?} is over its storage quota: it holds {held} bytes of events not yet \
         delivered (pending, retrying or dead) and this one needs {size} more; the limit is \
         {limit} bytes (--event-topic-quota). Retry once its subscribers catch up, or purge or \
         redrive their dead letters"
    )]
    TopicQuotaExceeded {
        /// The topic.
        topic: String,
        /// Bytes it holds.
        held: u64,
        /// Bytes the refused event needed.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// All topics together hold as many bytes as the host allows.
    #[error(
        "the host is over its event storage quota: all topics together hold {held} bytes of \
         events not yet delivered (pending, retrying or dead) and this one needs {size} more; \
         the limit is {limit} bytes (--event-host-quota). Retry once subscribers catch up, or \
         purge or redrive dead letters"
    )]
    HostQuotaExceeded {
        /// Bytes held, all topics.
        held: u64,
        /// Bytes the refused event needed.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// No such function.
    #[error("function {0:?} not found")]
    FunctionNotFound(String),
    /// No such subscription.
    #[error("function {function:?} is not subscribed to topic {topic:?}")]
    SubscriptionNotFound {
        /// The function.
        function: String,
        /// The topic.
        topic: String,
    },
    /// No such event (unknown, or removed after its retention).
    #[error("event {0:?} not found")]
    EventNotFound(String),
    /// No such schedule.
    #[error("schedule {0:?} not found")]
    ScheduleNotFound(String),
    /// No such job (unknown, or removed after its retention).
    #[error("job {0:?} not found")]
    JobNotFound(String),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

// ------------------------------------------------------------- API types

/// Answer to a publish or an asynchronous invocation: the event is durable.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Published {
    /// The event's id (`GET /v1/events/{id}`).
    pub id: String,
    /// The topic.
    pub topic: String,
    /// How many subscriptions it will be delivered to.
    pub deliveries: u32,
}

/// Body of `POST /v1/subscriptions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// The function to deliver to.
    pub function: String,
    /// The topic.
    pub topic: String,
    /// Path of the `POST` each event is delivered as, for a function
    /// without an event handler; default `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// Attempts in total; default from the host (3).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Deliveries running at once; default from the host (4).
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Events older than this (ms) are not retried; default from the host
    /// (1 h).
    #[serde(default)]
    pub max_age_ms: Option<u64>,
    /// Delay before the first retry (ms), doubling; default from the host
    /// (1 s).
    #[serde(default)]
    pub retry_base_ms: Option<u64>,
}

/// Body of `POST /v1/schedules`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    /// The function each tick is delivered to.
    pub function: String,
    /// Standard 5-field cron (`*/5 * * * *`), or 6 fields with leading
    /// seconds (`*/10 * * * * *`).
    pub cron: String,
    /// IANA time zone; default `UTC`.
    #[serde(default)]
    pub tz: Option<String>,
    /// Path of the `POST`, for a function without an event handler; default
    /// `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// Body of each tick's event; default empty.
    #[serde(default)]
    pub payload: Option<String>,
    /// Content type of the payload.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// An event and, per subscription, where its delivery stands.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventInfo {
    /// The id.
    pub id: String,
    /// The topic (`invoke:NAME` for an asynchronous invocation).
    pub topic: String,
    /// When it was published, ms since the epoch.
    pub time_ms: u64,
    /// The publisher's content type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Payload size.
    pub size_bytes: u64,
    /// One per subscription.
    pub deliveries: Vec<DeliveryRecord>,
}

/// Body of a redrive: which dead deliveries to retry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// Only this topic's.
    #[serde(default)]
    pub topic: Option<String>,
    /// Only these events; empty: all.
    #[serde(default)]
    pub ids: Vec<String>,
}

/// Answer to a redrive.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Redriven {
    /// Deliveries made pending again.
    pub redriven: Vec<DeliveryRecord>,
}

/// Answer to a dead-letter purge.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Purged {
    /// Dead deliveries removed from the list.
    pub purged: u64,
}

// ------------------------------------------------------------- the plane

/// Per-host event state: the dispatcher and its wake-up, and the queues of
/// writes waiting to be batched.
pub(crate) struct EventPlane {
    /// Wakes the dispatcher: a publish, a finished delivery, a redrive.
    wake: Arc<Notify>,
    /// Set to stop the dispatcher (shutdown).
    stop: watch::Sender<bool>,
    dispatcher: StdMutex<Option<tokio::task::JoinHandle<()>>>,
    /// Publishes and outcomes waiting for their transaction.
    writes: Batcher<Write>,
    published: metrics::Counter,
    /// Delivery attempts by result: success, failure, dead, and
    /// deliveries postponed because the host was saturated (counted once
    /// the outcome is on disk).
    results: [metrics::Counter; 4],
}

impl EventPlane {
    pub(crate) fn new() -> EventPlane {
        metrics::describe_counter!(PUBLISHED, "Events published (and async invocations).");
        metrics::describe_counter!(DELIVERIES, "Event delivery attempts by result.");
        metrics::describe_gauge!(QUEUE_DEPTH, "Pending and running event deliveries.");
        metrics::describe_gauge!(
            STORED_BYTES,
            "Bytes of events held for pending, running or dead deliveries."
        );
        EventPlane {
            wake: Arc::new(Notify::new()),
            stop: watch::channel(false).0,
            dispatcher: StdMutex::new(None),
            writes: Batcher::default(),
            published: metrics::counter!(PUBLISHED),
            results: [
                metrics::counter!(DELIVERIES, "result" => "success"),
                metrics::counter!(DELIVERIES, "result" => "failure"),
                metrics::counter!(DELIVERIES, "result" => "dead"),
                metrics::counter!(DELIVERIES, "result" => "postponed"),
            ],
        }
    }
}

// ------------------------------------------------------ batched writes
//
// Every write of the event plane is a sled transaction, and with sled 0.34
// a transaction is expensive twice over: it cannot run while the store's
// flusher is flushing (see `Gate` in `store.rs`; a flush takes ~1-2 ms
// here), and each one seals and writes sled's log buffer (a `pwrite` and a
// `sync_file_range`). One transaction per publish and per outcome meant
// several per event. Instead, publishes and the outcomes of finished
// deliveries go into one queue; one
// task at a time (started by whoever finds the queue idle) takes
// everything queued, writes it in one transaction on the blocking pool
// (`Store::event_writes`), and asks for one flush for all of it (the
// store's group commit). While that flush runs, the next batch gathers.

/// A queue drained in batches by one task at a time.
struct Batcher<T> {
    state: StdMutex<BatchState<T>>,
}

struct BatchState<T> {
    items: Vec<T>,
    /// A task is draining the queue.
    draining: bool,
}

impl<T> Default for Batcher<T> {
    fn default() -> Self {
        Batcher {
            state: StdMutex::new(BatchState {
                items: Vec::new(),
                draining: false,
            }),
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
enum Write {
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
fn batch_error(e: &StoreError) -> EventError {
    EventError::Store(StoreError::Batch(e.to_string()))
}

impl Host {
    /// Queues a write for the next event-plane transaction.
    fn queue_write(&self, write: Write) {
        if self.events().writes.push(write) {
            tokio::spawn(drain_writes(self.clone()));
        }
    }
}

/// Writes queued writes, a batch per transaction, until the queue is empty.
/// Publishers are answered after the flush that makes their batch durable,
/// and the next batch is written meanwhile. Under load, transactions start
/// at most every [`WRITE_INTERVAL`] (a lone write is written at once).
async fn drain_writes(host: Host) {
    let plane = host.events();
    let _guard = Draining(&plane.writes);
    let config = &host.inner.config;
    let max_depth = config.event_max_queue_depth;
    let (max_topic_bytes, max_host_bytes) = (
        config.event_topic_quota_bytes,
        config.event_host_quota_bytes,
    );
    let retention_ms = config.event_retention.as_millis() as u64;
    let mut last: Option<(tokio::time::Instant, usize)> = None;
    loop {
        if let Some((at, n)) = last
            && n >= PACE_AT
        {
            tokio::time::sleep_until(at + WRITE_INTERVAL).await;
        }
        let Some(batch) = plane.writes.take(WRITE_BATCH) else {
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
        let store = host.inner.store.clone();
        let finishes: Vec<Finish> = outcomes.iter().map(|o| o.0.clone()).collect();
        let written = tokio::task::spawn_blocking(move || {
            let items: Vec<_> = publishes
                .iter()
                .map(|(event, payload, to, dedupe, _)| NewEvent {
                    event,
                    payload,
                    to,
                    dedupe: *dedupe,
                })
                .collect();
            let writes = crate::store::EventWrites {
                finishes: &finishes,
                publishes: &items,
                max_depth,
                max_topic_bytes,
                max_host_bytes,
                retention_ms,
            };
            let result = store.event_writes(&writes);
            drop(items);
            (publishes, result)
        })
        .await;
        // A panic in the transaction drops the batch: every writer in it
        // gets an error (their reply senders are gone).
        let Ok((publishes, result)) = written else {
            tracing::error!("an event-plane transaction panicked");
            continue;
        };
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
            plane.wake.notify_one();
        }
        let mut accepted = Vec::with_capacity(publishes.len());
        for ((event, payload, to, .., reply), answer) in
            publishes.into_iter().zip(written.published)
        {
            let size = || {
                event.charge(if to.is_empty() {
                    0
                } else {
                    payload.len() as u64
                })
            };
            let refused = match answer {
                Ok(()) => {
                    accepted.push(reply);
                    continue;
                }
                Err(PublishRefused::QueueFull(depth)) => EventError::QueueFull {
                    topic: event.topic,
                    depth,
                    limit: max_depth,
                },
                Err(PublishRefused::TopicQuota(held)) => EventError::TopicQuotaExceeded {
                    size: size(),
                    topic: event.topic,
                    held,
                    limit: max_topic_bytes,
                },
                Err(PublishRefused::HostQuota(held)) => EventError::HostQuotaExceeded {
                    size: size(),
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
        let host = host.clone();
        tokio::spawn(async move {
            let flushed = host.inner.store.flush().await;
            let plane = host.events();
            if flushed.is_ok() {
                for (counter, n) in plane.results.iter().zip(counts) {
                    if n > 0 {
                        counter.increment(n);
                    }
                }
                if !accepted.is_empty() {
                    plane.published.increment(accepted.len() as u64);
                    plane.wake.notify_one();
                }
            }
            for reply in accepted {
                let _ = reply.send(flushed.as_ref().map(|_| ()).map_err(batch_error));
            }
        });
    }
}

/// An event to enqueue (see [`Host::enqueue`]).
struct NewPublish<'a> {
    topic: &'a str,
    payload: Bytes,
    content_type: Option<String>,
    /// The path and headers of an asynchronous invocation or a tick.
    path: Option<String>,
    headers: Vec<(String, String)>,
    /// One delivery each.
    to: Vec<String>,
    /// A schedule tick's derived id ([`super::schedule::tick_event_id`]),
    /// instead of a fresh one.
    tick_id: Option<u64>,
}

impl Host {
    fn events(&self) -> &EventPlane {
        &self.inner.events
    }

    /// Wakes the dispatcher.
    pub(crate) fn wake_events(&self) {
        self.events().wake.notify_one();
    }

    /// Publishes `payload` on `topic`: one delivery per current subscriber.
    /// Returns once the event is durable.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        content_type: Option<String>,
    ) -> Result<Published, EventError> {
        validate_topic(topic).map_err(EventError::InvalidName)?;
        if let Some(ct) = &content_type {
            validate_content_type(ct).map_err(EventError::InvalidArgument)?;
        }
        let to = self
            .inner
            .store
            .subscriptions(Some(topic))?
            .into_iter()
            .map(|s| s.function)
            .collect();
        let event = NewPublish {
            topic,
            payload,
            content_type,
            path: None,
            headers: Vec::new(),
            to,
            tick_id: None,
        };
        self.enqueue(event).await
    }

    /// Queues an invocation of `function` (`POST` to `path` with these
    /// headers and body), delivered like an event, with retries. Returns
    /// once it is durable.
    pub async fn invoke_async(
        &self,
        function: &str,
        path: String,
        headers: Vec<(String, String)>,
        payload: Bytes,
    ) -> Result<Published, EventError> {
        if self.inner.store.function(function)?.is_none() {
            return Err(EventError::FunctionNotFound(function.to_string()));
        }
        let topic = invoke_topic(function);
        let content_type = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone());
        if let Some(ct) = &content_type {
            validate_content_type(ct).map_err(EventError::InvalidArgument)?;
        }
        let event = NewPublish {
            topic: &topic,
            payload,
            content_type,
            path: Some(path),
            headers,
            to: vec![function.to_string()],
            tick_id: None,
        };
        self.enqueue(event).await
    }

    async fn enqueue(&self, new: NewPublish<'_>) -> Result<Published, EventError> {
        let config = &self.inner.config;
        if new.payload.len() as u64 > config.event_max_payload_bytes {
            return Err(EventError::PayloadTooLarge {
                limit: config.event_max_payload_bytes,
            });
        }
        let store = &self.inner.store;
        let event = EventRecord {
            id: match new.tick_id {
                Some(id) => id,
                None => store.next_id()?,
            },
            topic: new.topic.to_string(),
            time_ms: now_ms(),
            content_type: new.content_type,
            path: new.path,
            headers: new.headers,
            size_bytes: new.payload.len() as u64,
        };
        let published = Published {
            id: format_id(event.id),
            topic: new.topic.to_string(),
            deliveries: new.to.len() as u32,
        };
        // Written with the other publishes queued now, in one transaction,
        // and answered once the flush after it is done: durable before
        // anyone is told.
        let (reply, answer) = oneshot::channel();
        self.queue_write(Write::Publish {
            event,
            payload: new.payload,
            to: new.to,
            dedupe: new.tick_id.is_some(),
            reply,
        });
        answer.await.unwrap_or_else(|_| {
            Err(EventError::Store(StoreError::Batch(
                "the publish was dropped (see the host log)".into(),
            )))
        })?;
        Ok(published)
    }

    /// Subscribes a function to a topic (or changes its subscription).
    pub async fn subscribe(&self, new: NewSubscription) -> Result<Subscription, EventError> {
        validate_topic(&new.topic).map_err(EventError::InvalidName)?;
        let config = &self.inner.config;
        let path = new.path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.parse::<axum::http::Uri>().is_err() {
            return Err(EventError::InvalidArgument(format!(
                "path {path:?} is not an absolute path (with an optional query)"
            )));
        }
        let concurrency = new.concurrency.unwrap_or(config.event_concurrency);
        if concurrency == 0 || concurrency > 1000 {
            return Err(EventError::InvalidArgument(format!(
                "concurrency must be between 1 and 1000 (got {concurrency})"
            )));
        }
        let d = config.event_retry;
        let retry = RetryPolicy {
            max_attempts: new.max_attempts.unwrap_or(d.max_attempts),
            base_delay_ms: new.retry_base_ms.unwrap_or(d.base_delay_ms),
            max_delay_ms: d.max_delay_ms.max(new.retry_base_ms.unwrap_or(0)),
            max_age_ms: new.max_age_ms.unwrap_or(d.max_age_ms),
        };
        retry.validate().map_err(EventError::InvalidArgument)?;
        let _guard = self.inner.admin_lock.lock().await;
        if self.inner.store.function(&new.function)?.is_none() {
            return Err(EventError::FunctionNotFound(new.function));
        }
        let created_at_ms = self
            .inner
            .store
            .subscription(&new.topic, &new.function)?
            .map(|s| s.created_at_ms)
            .unwrap_or_else(now_ms);
        let sub = Subscription {
            topic: new.topic,
            function: new.function,
            path,
            concurrency,
            retry,
            created_at_ms,
        };
        self.inner.store.put_subscription(&sub)?;
        self.inner.store.flush().await?;
        tracing::info!(function = %sub.function, topic = %sub.topic, "subscribed");
        Ok(sub)
    }

    /// Removes a subscription; its pending deliveries are cancelled.
    pub async fn unsubscribe(&self, function: &str, topic: &str) -> Result<(), EventError> {
        let _guard = self.inner.admin_lock.lock().await;
        if !self.inner.store.delete_subscription(topic, function)? {
            return Err(EventError::SubscriptionNotFound {
                function: function.to_string(),
                topic: topic.to_string(),
            });
        }
        self.inner.store.flush().await?;
        tracing::info!(function, topic, "unsubscribed");
        Ok(())
    }

    /// Subscriptions (of one function if given), by topic.
    pub fn subscriptions(&self, function: Option<&str>) -> Result<Vec<Subscription>, EventError> {
        let mut subs = self.inner.store.subscriptions(None)?;
        subs.retain(|s| function.is_none_or(|f| s.function == f));
        Ok(subs)
    }

    /// An event and the state of each of its deliveries.
    pub fn event(&self, id: &str) -> Result<EventInfo, EventError> {
        let not_found = || EventError::EventNotFound(id.to_string());
        let n = parse_id(id).ok_or_else(not_found)?;
        let (event, _) = self.inner.store.event(n)?.ok_or_else(not_found)?;
        Ok(EventInfo {
            id: format_id(event.id),
            topic: event.topic,
            time_ms: event.time_ms,
            content_type: event.content_type,
            size_bytes: event.size_bytes,
            deliveries: self.inner.store.deliveries_of(n)?,
        })
    }

    /// The dead-letter list of a function's subscriptions (of one topic if
    /// given), oldest first, at most `limit`.
    pub fn dead_letters(
        &self,
        function: &str,
        topic: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, EventError> {
        if self.inner.store.function(function)?.is_none() {
            return Err(EventError::FunctionNotFound(function.to_string()));
        }
        Ok(self.inner.store.dead_deliveries(function, topic, limit)?)
    }

    /// Retries dead deliveries of a function now, attempts reset.
    pub async fn redrive(
        &self,
        function: &str,
        req: RedriveRequest,
    ) -> Result<Redriven, EventError> {
        if self.inner.store.function(function)?.is_none() {
            return Err(EventError::FunctionNotFound(function.to_string()));
        }
        let ids = req
            .ids
            .iter()
            .map(|s| {
                parse_id(s)
                    .ok_or_else(|| EventError::InvalidArgument(format!("{s:?} is not an event id")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ids = (!ids.is_empty()).then_some(ids.as_slice());
        let redriven = self
            .inner
            .store
            .redrive(function, req.topic.as_deref(), ids, now_ms())?;
        self.inner.store.flush().await?;
        self.events().wake.notify_one();
        Ok(Redriven { redriven })
    }

    /// Removes a function's dead letters (of one topic if given): they can
    /// no longer be redriven, and their events go at the next sweep.
    pub async fn purge_dead_letters(
        &self,
        function: &str,
        topic: Option<&str>,
    ) -> Result<Purged, EventError> {
        if self.inner.store.function(function)?.is_none() {
            return Err(EventError::FunctionNotFound(function.to_string()));
        }
        let store = self.inner.store.clone();
        let (f, t) = (function.to_string(), topic.map(str::to_string));
        // Off the async workers: a long list is many transactions.
        let purged =
            tokio::task::spawn_blocking(move || store.purge_dead(&f, t.as_deref(), now_ms()))
                .await
                .unwrap_or_else(|e| Err(StoreError::Batch(format!("purging dead letters: {e}"))))?;
        self.inner.store.flush().await?;
        tracing::info!(function, topic, purged, "dead letters purged");
        Ok(Purged { purged })
    }

    /// Removes what the event plane keeps for `function`: subscriptions,
    /// schedules, pending and running deliveries (cancelled), dead letters;
    /// its running jobs end `cancelled` (their records stay for the
    /// retention, as history). Called when it is deleted (after its record)
    /// and before a name is deployed anew (leftovers of a delete a crash
    /// interrupted). The caller holds the admin lock. Flushed.
    pub(crate) async fn purge_function_events(&self, function: &str) -> Result<(), EventError> {
        // Jobs first: a job is marked cancelled only while it still has
        // pending indices (after the purge below it would read `failed`).
        self.cancel_jobs_of_locked(function).await?;
        let store = self.inner.store.clone();
        let retention = self.inner.config.event_retention.as_millis() as u64;
        let f = function.to_string();
        let p = tokio::task::spawn_blocking(move || {
            store.purge_function_events(&f, now_ms(), retention)
        })
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Batch(format!(
                "purging a function's events: {e}"
            )))
        })?;
        self.inner.store.flush().await?;
        if p != Default::default() {
            tracing::info!(
                function,
                subscriptions = p.subscriptions,
                schedules = p.schedules,
                cancelled = p.cancelled,
                dead_letters = p.dead_letters,
                "the function's events were removed"
            );
        }
        Ok(())
    }

    /// Adds a schedule: each tick of `cron` enqueues one event for the
    /// function (delivered like any other, with retries).
    pub async fn add_schedule(&self, new: NewSchedule) -> Result<Schedule, EventError> {
        let tz = new.tz.unwrap_or_else(|| "UTC".into());
        super::schedule::parse_new(&new.cron, &tz).map_err(EventError::InvalidArgument)?;
        let path = new.path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.parse::<axum::http::Uri>().is_err() {
            return Err(EventError::InvalidArgument(format!(
                "path {path:?} is not an absolute path (with an optional query)"
            )));
        }
        let payload = new.payload.unwrap_or_default();
        if payload.len() as u64 > self.inner.config.event_max_payload_bytes {
            return Err(EventError::PayloadTooLarge {
                limit: self.inner.config.event_max_payload_bytes,
            });
        }
        if let Some(ct) = &new.content_type {
            validate_content_type(ct).map_err(EventError::InvalidArgument)?;
        }
        let _guard = self.inner.admin_lock.lock().await;
        if self.inner.store.function(&new.function)?.is_none() {
            return Err(EventError::FunctionNotFound(new.function));
        }
        let schedule = Schedule {
            id: self.inner.store.next_id()?,
            function: new.function,
            cron: new.cron,
            tz,
            path,
            payload,
            content_type: new.content_type,
            created_at_ms: now_ms(),
            last_fired_ms: 0,
            next_ms: None,
        };
        self.inner.store.put_schedule(&schedule)?;
        self.inner.store.flush().await?;
        self.events().wake.notify_one();
        tracing::info!(function = %schedule.function, cron = %schedule.cron, id = %format_id(schedule.id), "schedule added");
        Ok(schedule.with_next(now_ms()))
    }

    /// Schedules (of one function if given), oldest first.
    pub fn schedules(&self, function: Option<&str>) -> Result<Vec<Schedule>, EventError> {
        let mut all = self.inner.store.schedules()?;
        all.retain(|s| function.is_none_or(|f| s.function == f));
        let now = now_ms();
        Ok(all.into_iter().map(|s| s.with_next(now)).collect())
    }

    /// Deletes a schedule.
    pub async fn delete_schedule(&self, id: &str) -> Result<(), EventError> {
        let not_found = || EventError::ScheduleNotFound(id.to_string());
        let n = parse_id(id).ok_or_else(not_found)?;
        let _guard = self.inner.admin_lock.lock().await;
        if !self.inner.store.delete_schedule(n)? {
            return Err(not_found());
        }
        self.inner.store.flush().await?;
        tracing::info!(id, "schedule deleted");
        Ok(())
    }

    /// Fires the schedules that are due: one event each, for the latest
    /// tick (ticks missed while the host was down collapse into one).
    async fn fire_schedules(&self) -> Result<(), EventError> {
        let now = now_ms();
        for s in self.inner.store.schedules()? {
            let spec = match super::schedule::parse(&s.cron, &s.tz) {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::warn!(id = %format_id(s.id), error = %e, "stored schedule does not parse; skipped");
                    continue;
                }
            };
            let Some(tick) = due_tick(&spec, s.created_at_ms, s.last_fired_ms, now) else {
                continue;
            };
            let topic = format!("{SCHEDULE_TOPIC_PREFIX}{}", format_id(s.id));
            // The tick's id is derived from the schedule and the tick: if
            // this tick was enqueued before a crash that lost its
            // `last_fired_ms`, it is the same event (stored once; its
            // handler sees the same id).
            let event = NewPublish {
                topic: &topic,
                payload: Bytes::from(s.payload.clone().into_bytes()),
                content_type: s.content_type.clone(),
                path: Some(s.path.clone()),
                headers: vec![("wisp-schedule-id".to_string(), format_id(s.id))],
                to: vec![s.function.clone()],
                tick_id: Some(tick_event_id(s.id, tick)),
            };
            let result = self.enqueue(event).await;
            if let Err(e) = &result {
                tracing::warn!(id = %format_id(s.id), function = %s.function, error = %e, "a schedule tick was not enqueued");
            }
            // Recorded either way: a tick is fired (or skipped) once. Under
            // the admin lock, so a schedule deleted meanwhile stays deleted.
            let _guard = self.inner.admin_lock.lock().await;
            if self.inner.store.schedules()?.iter().any(|x| x.id == s.id) {
                let fired = Schedule {
                    last_fired_ms: tick,
                    next_ms: None,
                    ..s
                };
                self.inner.store.put_schedule(&fired)?;
            }
        }
        Ok(())
    }

    /// Starts the dispatcher (once; [`Host::serve`] does it). Deliveries
    /// that were running when the host last stopped are due (their claims
    /// were not stored). Needs a tokio runtime.
    pub fn start_events(&self) -> anyhow::Result<()> {
        let mut slot = self.events().dispatcher.lock().expect("not poisoned");
        if slot.is_some() {
            return Ok(());
        }
        self.jobs_recover()?;
        let _ = self.events().stop.send(false);
        let weak = Arc::downgrade(&self.inner);
        let wake = self.events().wake.clone();
        let stop = self.events().stop.subscribe();
        *slot = Some(tokio::spawn(dispatch(weak, wake, stop)));
        Ok(())
    }

    /// Stops the dispatcher: no new deliveries start; running ones get up
    /// to `grace` to finish. Those still running then stay due in the
    /// store and are retried after the next start.
    pub async fn stop_events(&self, grace: Duration) {
        let handle = self
            .events()
            .dispatcher
            .lock()
            .expect("not poisoned")
            .take();
        let Some(mut handle) = handle else { return };
        let _ = self.events().stop.send(true);
        if tokio::time::timeout(grace, &mut handle).await.is_err() {
            tracing::warn!(
                "event deliveries still running after the grace period are left for the next start"
            );
            handle.abort();
        }
    }
}

// ------------------------------------------------------------ dispatcher

/// The subscription a delivery runs under: stored, or the implicit one of
/// asynchronous invocations (host defaults) or of a job. The outer `None`:
/// not yet (a job being created).
fn subscription_for(
    host: &Host,
    topic: &str,
    function: &str,
) -> Result<Option<Option<Subscription>>, StoreError> {
    if let Some(job) = super::job::job_of_topic(topic) {
        return Ok(match host.job_subscription(job, topic)? {
            None => Some(None),
            Some(None) => None,
            Some(Some(s)) => Some(Some(s)),
        });
    }
    if topic.starts_with(INVOKE_TOPIC_PREFIX) || topic.starts_with(SCHEDULE_TOPIC_PREFIX) {
        let c = &host.inner.config;
        return Ok(Some(Some(Subscription {
            topic: topic.to_string(),
            function: function.to_string(),
            path: "/".into(),
            concurrency: c.event_concurrency,
            retry: c.event_retry,
            created_at_ms: 0,
        })));
    }
    Ok(Some(host.inner.store.subscription(topic, function)?))
}

/// Deliveries running per subscription, keyed by `topic \0 function` (the
/// tail of a delivery key, so a due entry is looked up without allocating).
type Busy = Arc<StdMutex<HashMap<Box<[u8]>, u32>>>;

async fn dispatch(host: Weak<HostInner>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let Some(max) = host.upgrade().map(|h| h.config.event_max_in_flight) else {
        return;
    };
    let slots = Arc::new(Semaphore::new(max as usize));
    let busy: Busy = Arc::default();
    let mut tasks = JoinSet::new();
    let mut last_sweep = std::time::Instant::now();
    let mut last_event_sweep = std::time::Instant::now();
    let mut sweeping: Option<tokio::task::JoinHandle<()>> = None;
    let mut last_schedules = std::time::Instant::now() - SCHEDULE_EVERY;
    let depth_gauge = metrics::gauge!(QUEUE_DEPTH);
    let bytes_gauge = metrics::gauge!(STORED_BYTES);
    let mut further = Further::default();
    loop {
        if *stop.borrow() {
            break;
        }
        let Some(inner) = host.upgrade() else { break };
        let host = Host { inner };
        let pass = pass(&host, &slots, &busy, &mut tasks, &wake, &mut further).await;
        let wait = match pass {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "event dispatcher: store failure");
                IDLE
            }
        }
        .min(SCHEDULE_EVERY);
        if last_schedules.elapsed() >= SCHEDULE_EVERY {
            last_schedules = std::time::Instant::now();
            if let Err(e) = host.fire_schedules().await {
                tracing::error!(error = %e, "firing schedules failed");
            }
        }
        if last_event_sweep.elapsed() >= EVENT_SWEEP_EVERY
            && sweeping.as_ref().is_none_or(|t| t.is_finished())
        {
            last_event_sweep = std::time::Instant::now();
            let store = host.inner.store.clone();
            let dlq_retention = host.inner.config.event_dead_letter_retention;
            sweeping = Some(tokio::task::spawn_blocking(move || {
                // Dead letters first: the events they release are then
                // removed by the same sweep.
                expire_dead_letters(&store, dlq_retention);
                sweep_events(&store);
            }));
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = std::time::Instant::now();
            if let Err(e) = host.sweep_jobs() {
                tracing::warn!(error = %e, "removing finished jobs failed");
            }
        }
        if let Ok(n) = host.inner.store.queue_depth_total() {
            depth_gauge.set(n as f64);
        }
        bytes_gauge.set(host.inner.store.event_bytes(None) as f64);
        drop(host);
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
    // Shutdown: let the running deliveries finish and be recorded (the
    // caller bounds the wait by the grace period and aborts the rest).
    while tasks.join_next().await.is_some() {}
}

/// Removes every finished event whose retention has ended, a bounded step
/// at a time with a pause between (off the runtime: it reads and writes the
/// store).
fn sweep_events(store: &crate::store::Store) {
    let now = now_ms();
    loop {
        match store.sweep_events(now, SWEEP_BATCH) {
            Ok(0) => break,
            Ok(_) => std::thread::sleep(SWEEP_PAUSE),
            Err(e) => {
                tracing::warn!(error = %e, "removing finished events failed");
                break;
            }
        }
    }
}

/// Removes the dead letters past their retention, a bounded step at a time
/// (off the runtime, like [`sweep_events`]).
fn expire_dead_letters(store: &crate::store::Store, retention: Duration) {
    let now = now_ms();
    let retention_ms = retention.as_millis() as u64;
    loop {
        match store.expire_dead_letters(now, retention_ms, DEAD_SWEEP_BATCH) {
            Ok(0) => break,
            Ok(n) => {
                tracing::debug!(n, "expired dead letters removed");
                std::thread::sleep(SWEEP_PAUSE);
            }
            Err(e) => {
                tracing::warn!(error = %e, "removing expired dead letters failed");
                break;
            }
        }
    }
}

/// Where passes read the due index past its head (see [`pass`]).
#[derive(Default)]
struct Further {
    /// The entry the next read starts after.
    from: Option<sled::IVec>,
    /// When it was last read while the head left deliveries waiting for a
    /// slot.
    read_at: Option<std::time::Instant>,
}

/// A due delivery picked in a pass, with its slot, before it is claimed.
struct Picked {
    due_entry: sled::IVec,
    sub_key: Box<[u8]>,
    sub: Option<Subscription>,
    permit: OwnedSemaphorePermit,
}

/// The due entries a pass picks: a free slot each, within the
/// subscriptions' concurrency.
struct Picker<'a> {
    host: &'a Host,
    slots: &'a Arc<Semaphore>,
    busy: &'a Busy,
    subs: HashMap<Box<[u8]>, Option<Option<Subscription>>>,
    picked: Vec<Picked>,
    /// Something due was left for want of a slot (or a job not started).
    saturated: bool,
    /// No slot is left at all.
    full: bool,
}

impl Picker<'_> {
    /// Considers due entries until they run out or no slot is left; how
    /// many were read, and the last.
    fn consider_all(
        &mut self,
        entries: impl Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>>,
    ) -> Result<(usize, Option<sled::IVec>), StoreError> {
        let (mut n, mut last) = (0, None);
        for entry in entries {
            let (due_entry, dkey) = entry?;
            n += 1;
            last = Some(due_entry.clone());
            self.consider(due_entry, &dkey)?;
            if self.full {
                break;
            }
        }
        Ok((n, last))
    }

    /// Picks this due entry if it can run now.
    fn consider(&mut self, due_entry: sled::IVec, dkey: &[u8]) -> Result<(), StoreError> {
        let Some((_, topic, function)) = parse_delivery_key(dkey) else {
            return Ok(());
        };
        let sub_key = &dkey[8..];
        let sub = match self.subs.get(sub_key) {
            Some(s) => s.clone(),
            None => {
                let s = subscription_for(self.host, topic, function)?;
                self.subs.insert(sub_key.into(), s.clone());
                s
            }
        };
        let Some(sub) = sub else {
            // A job being created: left alone until it is running.
            self.saturated = true;
            return Ok(());
        };
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.saturated = true;
            self.full = true;
            return Ok(());
        };
        let cap = sub.as_ref().map_or(u32::MAX, |s| s.concurrency);
        {
            let mut b = self.busy.lock().expect("not poisoned");
            let n = match b.get_mut(sub_key) {
                Some(n) => n,
                None => b.entry(sub_key.into()).or_default(),
            };
            if *n >= cap {
                self.saturated = true;
                return Ok(());
            }
            *n += 1;
        }
        self.picked.push(Picked {
            due_entry,
            sub_key: sub_key.into(),
            sub,
            permit,
        });
        Ok(())
    }
}

/// One pass: picks what is due and has a free slot, claims it (in
/// memory) and starts it; returns how long to sleep before the next
/// pass (unless woken).
///
/// A pass reads a bounded part of the due index, so that a long backlog
/// of a subscription at its concurrency limit is not read again on every
/// pass (passes follow every finished delivery): the `HEAD` earliest
/// entries, then `SWEEP` entries from where the previous pass stopped
/// (`further`), wrapping around at the end of what is due. Once the head
/// alone leaves deliveries waiting for a slot, reading on (which then only
/// finds other subscriptions' deliveries behind the backlog) happens at
/// most every `FURTHER_EVERY`: such deliveries are reached within a few of
/// those.
async fn pass(
    host: &Host,
    slots: &Arc<Semaphore>,
    busy: &Busy,
    tasks: &mut JoinSet<()>,
    wake: &Arc<Notify>,
    further: &mut Further,
) -> Result<Duration, StoreError> {
    let store = &host.inner.store;
    let now = now_ms();
    let mut p = Picker {
        host,
        slots,
        busy,
        subs: HashMap::new(),
        picked: Vec::new(),
        saturated: false,
        full: false,
    };
    let (head_len, head_end) = p.consider_all(store.due_iter(now, None).take(HEAD))?;
    let mut part_way = false;
    let mut put_off = false;
    if let (false, true, Some(head_end)) = (p.full, head_len == HEAD, head_end) {
        let waiting = p.saturated;
        if waiting && further.read_at.is_some_and(|t| t.elapsed() < FURTHER_EVERY) {
            put_off = true;
        } else {
            further.read_at = waiting.then(std::time::Instant::now);
            let from = match further.from.take() {
                Some(at) if at > head_end => at,
                _ => head_end,
            };
            let (n, last) = p.consider_all(store.due_iter(now, Some(&from)).take(SWEEP))?;
            // Stopped for want of slots: the next read starts from here
            // again. Read SWEEP entries: it goes on from the last. Reached
            // the end: the next starts over.
            if p.full {
                further.from = Some(from);
            } else if n == SWEEP {
                further.from = last;
                part_way = true;
            }
        }
    }
    let Picker {
        picked,
        saturated,
        full,
        ..
    } = p;
    if !picked.is_empty() {
        let entries: Vec<_> = picked.iter().map(|p| p.due_entry.clone()).collect();
        let claimed = match store.claim(&entries, now) {
            Ok(c) => c,
            Err(e) => {
                for p in &picked {
                    release(busy, &p.sub_key);
                }
                return Err(e);
            }
        };
        for (p, claimed) in picked.into_iter().zip(claimed) {
            let Some((key, rec)) = claimed else {
                release(busy, &p.sub_key);
                continue;
            };
            let host = host.clone();
            let busy = busy.clone();
            let wake = wake.clone();
            // On a serving thread while the host serves (its runtime runs
            // the instance without cross-thread hand-offs), else here.
            let runtime = host.inner.serving.next();
            let delivery = async move {
                let (finish, result) = run_delivery(&host, key, rec, p.sub).await;
                // Queued before the slot is given back, so that the
                // dispatcher's next claim does not go ahead of it.
                let recorded = host.record_finish(finish, result);
                // The handler is done: its slot is free for the next
                // delivery while this outcome waits for its transaction.
                release(&busy, &p.sub_key);
                drop(p.permit);
                wake.notify_one();
                let _ = recorded.await;
            };
            match runtime {
                Some(r) => tasks.spawn_on(r.tracker.track_future(delivery), &r.handle),
                None => tasks.spawn(delivery),
            };
        }
    }
    if full {
        // Woken when a delivery finishes; the timer is a backstop.
        return Ok(IDLE);
    }
    if part_way {
        return Ok(SWEEP_AGAIN);
    }
    if put_off {
        return Ok(FURTHER_EVERY);
    }
    if saturated {
        return Ok(IDLE);
    }
    Ok(match store.next_due_ms()? {
        Some(due) => Duration::from_millis(due.saturating_sub(now_ms())).min(IDLE),
        None => IDLE,
    })
}

fn release(busy: &Busy, sub_key: &[u8]) {
    let mut b = busy.lock().expect("not poisoned");
    if let Some(n) = b.get_mut(sub_key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            b.remove(sub_key);
        }
    }
}

impl Host {
    /// Queues a finished attempt for the next event-plane transaction;
    /// the answer comes once it is committed.
    fn record_finish(&self, finish: Finish, result: Option<usize>) -> oneshot::Receiver<()> {
        let (reply, done) = oneshot::channel();
        self.queue_write(Write::Outcome {
            finish,
            result,
            reply,
        });
        done
    }
}

/// Runs one claimed delivery; returns its outcome to record and the
/// result it counts as (an index into [`EventPlane::results`]).
async fn run_delivery(
    host: &Host,
    key: sled::IVec,
    rec: DeliveryRecord,
    sub: Option<Subscription>,
) -> (Finish, Option<usize>) {
    let store = &host.inner.store;
    let due_entry = sled::IVec::from(&super::due_key(rec.due_ms, rec.due_seq)[..]);
    let finish = |outcome: Outcome, error: Option<&str>, charge: Option<u64>| Finish {
        key: key.clone(),
        due_entry: due_entry.clone(),
        outcome,
        error: error.map(str::to_string),
        now_ms: now_ms(),
        charge,
    };
    let Some(sub) = sub else {
        return (
            finish(
                Outcome::Cancelled,
                Some("the subscription was removed"),
                None,
            ),
            None,
        );
    };
    let event = match store.event(rec.event_id) {
        Ok(Some(e)) => e,
        Ok(None) => {
            return (
                finish(Outcome::Cancelled, Some("the event is gone"), None),
                None,
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "reading an event failed");
            return (
                finish(Outcome::Retry(now_ms() + 1000), Some("store failure"), None),
                None,
            );
        }
    };
    let (event, mut payload) = event;
    // Read here, so the outcome that finishes the event need not read it
    // again in the batch's transaction.
    let charge = Some(event.charge(payload.len() as u64));
    if let Some(job) = super::job::job_of_topic(&event.topic) {
        match host.job_payload(job) {
            Ok(Some(p)) => payload = sled::IVec::from(&p[..]),
            Ok(None) => {
                return (
                    finish(Outcome::Cancelled, Some("the job is gone"), charge),
                    None,
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "reading a job failed");
                return (
                    finish(
                        Outcome::Retry(now_ms() + 1000),
                        Some("store failure"),
                        charge,
                    ),
                    None,
                );
            }
        }
    }
    let attempt = rec.attempts + 1;
    let result = attempt_delivery(host, &sub, &event, payload, attempt).await;
    match result {
        Ok(()) => (finish(Outcome::Done, None, charge), Some(0)),
        Err(AttemptError::Saturated) => {
            // Not the function's failure: due again shortly, with no
            // attempt used up and the wait kept out of the event's age.
            let jitter = (POSTPONE_MS as f64 * rand::random::<f64>()) as u64;
            let due = now_ms() + POSTPONE_MS + jitter;
            (
                finish(Outcome::Postponed(due), Some(POSTPONED), charge),
                Some(3),
            )
        }
        Err(AttemptError::Failed(error)) => {
            // The handler's message or the guest's answer: guest-chosen, on
            // its way to the delivery's record and the host log.
            let error = crate::untrusted::clip(&error);
            let now = now_ms();
            // Time spent postponed does not age the event.
            let since = event.time_ms.saturating_add(rec.postponed_ms);
            match sub
                .retry
                .after_failure(attempt, since, now, rand::random::<f64>())
            {
                Some(due) => (finish(Outcome::Retry(due), Some(&error), charge), Some(1)),
                None => {
                    tracing::warn!(
                        event = %format_id(event.id),
                        topic = %event.topic,
                        function = %sub.function,
                        attempts = attempt,
                        error = %error,
                        "event delivery is dead (in the dead-letter list)"
                    );
                    (finish(Outcome::Dead, Some(&error), charge), Some(2))
                }
            }
        }
    }
}

/// Why an attempt did not succeed.
enum AttemptError {
    /// The host refused to start it: no invocation slot free (host-wide,
    /// or the function's share). Not the function's failure.
    Saturated,
    /// It ran and failed (the message is the delivery's last error).
    Failed(String),
}

impl From<String> for AttemptError {
    fn from(message: String) -> Self {
        AttemptError::Failed(message)
    }
}

/// One attempt: a call of the function's event handler if it exports one
/// (`Ok` is success), else a `POST` (2xx is success).
async fn attempt_delivery(
    host: &Host,
    sub: &Subscription,
    event: &EventRecord,
    payload: sled::IVec,
    attempt: u32,
) -> Result<(), AttemptError> {
    let target = host
        .inner
        .registry
        .load()
        .by_name
        .get(&sub.function)
        .cloned()
        .ok_or_else(|| format!("function {:?} is not deployed", sub.function))?;
    if let Prepared::Component(ComponentPre {
        events: Some(pre), ..
    }) = &target.pre
    {
        let event = event_for_handler(event, payload, attempt);
        return host
            .inner
            .invoker
            .handle_event(&target, pre, event)
            .await
            .map_err(|e| match e {
                HandlerFailure::NoSlot => AttemptError::Saturated,
                HandlerFailure::Failed(message) => AttemptError::Failed(message),
            });
    }
    let path = event.path.as_deref().unwrap_or(&sub.path);
    let mut req = Request::post(path);
    for (k, v) in &event.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v)) {
            req = req.header(k, v);
        }
    }
    let time = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(event.time_ms));
    let headers = req.headers_mut().expect("a valid builder");
    if let Some(ct) = event
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    let wisp_headers = [
        ("wisp-event-id", format_id(event.id)),
        ("wisp-event-topic", event.topic.clone()),
        ("wisp-event-attempt", attempt.to_string()),
        ("wisp-event-time", time.to_string()),
    ];
    for (k, v) in wisp_headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(payload.len()));
    let req = req
        .body(Body::from(Bytes::copy_from_slice(&payload)))
        .map_err(|e| AttemptError::Failed(format!("building the request: {e}")))?;
    let response = host.inner.invoker.invoke(target, req).await;
    let status = response.status();
    let (parts, mut body) = response.into_parts();
    // Read the body to its end: the guest runs until it has written it.
    let mut excerpt = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(data) = f.data_ref()
                    && excerpt.len() < ERROR_EXCERPT
                {
                    let n = (ERROR_EXCERPT - excerpt.len()).min(data.len());
                    excerpt.extend_from_slice(&data[..n]);
                }
            }
            Err(e) => return Err(format!("the response broke off: {e}").into()),
        }
    }
    if status.is_success() {
        return Ok(());
    }
    // The host's own refusal (no slot free) is marked on the response; a
    // function answering 503 itself is a failure like any other.
    if parts.extensions.get::<NoSlot>().is_some() {
        return Err(AttemptError::Saturated);
    }
    let text = String::from_utf8_lossy(&excerpt);
    Err(format!("{status}: {}", text.trim()).into())
}

/// The event as the `wisp:function/event-handler` export receives it.
fn event_for_handler(event: &EventRecord, payload: sled::IVec, attempt: u32) -> HandlerEvent {
    let header = |name: &str| {
        event
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let job = match (
        header("wisp-job-id"),
        header("wisp-job-index").and_then(|v| v.parse().ok()),
        header("wisp-job-array-size").and_then(|v| v.parse().ok()),
    ) {
        (Some(id), Some(index), Some(array_size)) => Some(JobTask {
            id: id.to_string(),
            index,
            array_size,
        }),
        _ => None,
    };
    HandlerEvent {
        id: format_id(event.id),
        topic: event.topic.clone(),
        time_ms: event.time_ms,
        content_type: event.content_type.clone(),
        payload: payload.to_vec(),
        attempt,
        job,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{DeliveryStatus, due_key};
    use crate::store::{EventWrites, PublishRefused, Store};

    fn event(id: u64, topic: &str, time_ms: u64) -> EventRecord {
        EventRecord {
            id,
            topic: topic.into(),
            time_ms,
            content_type: None,
            path: None,
            headers: Vec::new(),
            size_bytes: 1,
        }
    }

    fn to(functions: &[&str]) -> Vec<String> {
        functions.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn deliveries_move_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let subs = to(&["a", "b"]);
        store
            .publish_event(&event(1, "t", 100), b"x", &subs, 10, 1000)
            .unwrap();
        assert_eq!(store.queue_depth_total().unwrap(), 2);
        // Published without records; read as pending since the event.
        let pending: Vec<_> = store
            .deliveries_of(1)
            .unwrap()
            .into_iter()
            .map(|d| (d.function, d.status, d.attempts, d.due_ms))
            .collect();
        assert_eq!(
            pending,
            [
                ("a".into(), DeliveryStatus::Pending, 0, 100),
                ("b".into(), DeliveryStatus::Pending, 0, 100)
            ]
        );
        // Nothing is due before its time; both are at 100.
        assert!(store.due_deliveries(99, 10).unwrap().is_empty());
        let due = store.due_deliveries(100, 10).unwrap();
        assert_eq!(due.len(), 2);
        assert_eq!(store.next_due_ms().unwrap(), Some(100));

        // a: claimed, done. b: claimed, fails, retried, then dead.
        let (ka, ra) = store.claim_delivery(&due[0].0, 150).unwrap().unwrap();
        assert_eq!(ra.status, DeliveryStatus::Running);
        assert!(store.claim_delivery(&due[0].0, 150).unwrap().is_none());
        store
            .finish_delivery(&ka, Outcome::Done, None, 160, 1000)
            .unwrap();
        let (kb, _) = store.claim_delivery(&due[1].0, 150).unwrap().unwrap();
        store
            .finish_delivery(&kb, Outcome::Retry(500), Some("500"), 170, 1000)
            .unwrap();
        assert!(store.due_deliveries(499, 10).unwrap().is_empty());
        let due = store.due_deliveries(500, 10).unwrap();
        let (kb, rb) = store.claim_delivery(&due[0].0, 500).unwrap().unwrap();
        assert_eq!(rb.attempts, 1);
        assert_eq!(rb.attempt_times_ms, [150, 500]);
        store
            .finish_delivery(&kb, Outcome::Dead, Some("500"), 510, 1000)
            .unwrap();
        assert_eq!(store.queue_depth_total().unwrap(), 0);
        let dead = store.dead_deliveries("b", None, 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 2);
        assert!(store.dead_deliveries("a", None, 10).unwrap().is_empty());
        assert!(
            store
                .dead_deliveries("b", Some("other"), 10)
                .unwrap()
                .is_empty()
        );

        // Redriven: pending now, attempts reset; then done, and the event
        // goes after its retention.
        let redriven = store.redrive("b", Some("t"), None, 600).unwrap();
        assert_eq!(redriven.len(), 1);
        assert_eq!(redriven[0].attempts, 0);
        assert!(store.dead_deliveries("b", None, 10).unwrap().is_empty());
        assert_eq!(store.queue_depth_total().unwrap(), 1);
        let due = store.due_deliveries(600, 10).unwrap();
        let (kb, _) = store.claim_delivery(&due[0].0, 600).unwrap().unwrap();
        store
            .finish_delivery(&kb, Outcome::Done, None, 700, 1000)
            .unwrap();
        let statuses: Vec<_> = store
            .deliveries_of(1)
            .unwrap()
            .iter()
            .map(|d| d.status)
            .collect();
        assert_eq!(statuses, [DeliveryStatus::Done, DeliveryStatus::Done]);
        assert_eq!(store.sweep_events(1699, 10).unwrap(), 0);
        assert_eq!(store.sweep_events(1700, 10).unwrap(), 1);
        assert!(store.event(1).unwrap().is_none());
        assert!(store.deliveries_of(1).unwrap().is_empty());
    }

    #[test]
    fn a_full_topic_refuses_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let subs = to(&["a", "b"]);
        store
            .publish_event(&event(1, "t", 1), b"x", &subs, 3, 1000)
            .unwrap();
        let refused = store.publish_event(&event(2, "t", 1), b"x", &subs, 3, 1000);
        assert!(matches!(refused, Err(PublishRefused::QueueFull(2))));
        assert!(store.event(2).unwrap().is_none());
        assert_eq!(store.due_deliveries(10, 10).unwrap().len(), 2);
        // Another topic has its own queue.
        store
            .publish_event(&event(3, "u", 1), b"x", &to(&["a"]), 3, 1000)
            .unwrap();
    }

    /// Batches behave as the same writes one by one: the depth limit
    /// counts the events before in the batch, claims and outcomes of one
    /// event's deliveries in one transaction add up.
    #[test]
    fn batched_publishes_claims_and_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let subs = to(&["a", "b"]);
        let none = to(&[]);
        let events: Vec<_> = (1..=4).map(|i| event(i, "t", 10)).collect();
        let item = |i: usize, to| NewEvent {
            event: &events[i],
            payload: b"x",
            to,
            dedupe: false,
        };
        // Limit 5: events 1 and 2 fit (4 deliveries), 3 does not (it would
        // make 6), 4 has no subscriber (not counted).
        let batch = [
            item(0, &subs),
            item(1, &subs),
            item(2, &subs),
            item(3, &none),
        ];
        let writes = EventWrites {
            publishes: &batch,
            max_depth: 5,
            retention_ms: 1000,
            ..EventWrites::default()
        };
        let answers = store.event_writes(&writes).unwrap().published;
        assert_eq!(
            answers,
            [Ok(()), Ok(()), Err(PublishRefused::QueueFull(4)), Ok(())]
        );
        assert!(store.event(3).unwrap().is_none());
        assert!(store.event(4).unwrap().is_some());
        assert_eq!(store.queue_depth_total().unwrap(), 4);

        let due: Vec<_> = store.due_iter(10, None).map(|kv| kv.unwrap().0).collect();
        assert_eq!(due.len(), 4);
        // The same entry twice: claimed once.
        let mut entries = due.clone();
        entries.push(due[0].clone());
        let claimed = store.claim(&entries, 20).unwrap();
        assert_eq!(claimed.iter().filter(|c| c.is_some()).count(), 4);
        assert!(claimed[4].is_none());
        assert_eq!(store.due_iter(u64::MAX - 1, None).count(), 0);

        // Event 1: both done (its open count reaches 0: it expires); event
        // 2: one retried, one dead.
        let keys: Vec<_> = claimed.into_iter().flatten().collect();
        let finish = |i: usize, outcome| Finish {
            key: keys[i].0.clone(),
            due_entry: sled::IVec::from(&due_key(keys[i].1.due_ms, keys[i].1.due_seq)[..]),
            outcome,
            error: None,
            now_ms: 30,
            charge: None,
        };
        assert_eq!(keys[0].1.event_id, 1);
        assert_eq!(keys[1].1.event_id, 1);
        let finishes = [
            finish(0, Outcome::Done),
            finish(1, Outcome::Done),
            finish(2, Outcome::Retry(100)),
            finish(3, Outcome::Dead),
        ];
        let writes = EventWrites {
            finishes: &finishes,
            retention_ms: 1000,
            ..EventWrites::default()
        };
        store.event_writes(&writes).unwrap();
        let statuses = |id| {
            store
                .deliveries_of(id)
                .unwrap()
                .iter()
                .map(|d| d.status)
                .collect::<Vec<_>>()
        };
        assert_eq!(statuses(1), [DeliveryStatus::Done, DeliveryStatus::Done]);
        assert_eq!(statuses(2), [DeliveryStatus::Pending, DeliveryStatus::Dead]);
        // Pending: the retry only.
        assert_eq!(store.queue_depth_total().unwrap(), 1);
        assert_eq!(store.next_due_ms().unwrap(), Some(100));
        assert_eq!(store.sweep_events(1030, 10).unwrap(), 2); // events 1 and 4
        assert!(store.event(1).unwrap().is_none());
        assert!(store.event(2).unwrap().is_some());
    }

    #[test]
    fn running_deliveries_are_pending_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            store
                .publish_event(&event(1, "t", 1), b"x", &to(&["a"]), 3, 1000)
                .unwrap();
            let due = store.due_deliveries(1, 10).unwrap();
            store.claim_delivery(&due[0].0, 5).unwrap().unwrap();
            assert!(store.due_deliveries(u64::MAX - 1, 10).unwrap().is_empty());
            assert_eq!(
                store.deliveries_of(1).unwrap()[0].status,
                DeliveryStatus::Running
            );
            // Claimed, not finished: still counted in the queue.
            assert_eq!(store.queue_depth_total().unwrap(), 1);
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let due = store.due_deliveries(50, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert!(due[0].0.starts_with(&due_key(1, 0)[..8]));
        assert_eq!(
            store.deliveries_of(1).unwrap()[0].status,
            DeliveryStatus::Pending
        );
        assert_eq!(store.queue_depth_total().unwrap(), 1);
    }

    /// A sweep removes everything expired, in as many transactions as it
    /// takes (not a fixed number of events per sweep).
    #[test]
    fn a_sweep_removes_every_expired_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let events: Vec<_> = (1..=600).map(|i| event(i, "t", 1)).collect();
        let items: Vec<_> = events
            .iter()
            .map(|event| NewEvent {
                event,
                payload: b"x",
                to: &[],
                dedupe: false,
            })
            .collect();
        let writes = EventWrites {
            publishes: &items,
            max_depth: 10,
            retention_ms: 1000,
            ..EventWrites::default()
        };
        store.event_writes(&writes).unwrap();
        assert!(store.event(600).unwrap().is_some());
        sweep_events(&store);
        assert!(store.event(1).unwrap().is_none());
        assert!(store.event(600).unwrap().is_none());
        assert_eq!(store.sweep_events(u64::MAX - 1, 10).unwrap(), 0);
    }

    /// Publishes (transactions), claims and flushes from many tasks at once:
    /// all finish (sled 0.34 deadlocked here before flushes and exclusive
    /// operations were kept apart).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_and_flushes_finish() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut set = JoinSet::new();
        for t in 0..8u64 {
            let store = store.clone();
            set.spawn(async move {
                for i in 0..100u64 {
                    let id = store.next_id().unwrap();
                    let subs = to(&["a"]);
                    store
                        .publish_event(&event(id, "t", t * 1000 + i), b"x", &subs, 1 << 20, 1)
                        .unwrap();
                    store.flush().await.unwrap();
                    for (k, _) in store.due_deliveries(u64::MAX - 1, 2).unwrap() {
                        if let Some((key, _)) = store.claim_delivery(&k, 1).unwrap() {
                            store
                                .finish_delivery(&key, Outcome::Done, None, 1, 1)
                                .unwrap();
                        }
                    }
                }
            });
        }
        let all = async {
            while let Some(r) = set.join_next().await {
                r.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("no deadlock");
    }

    /// The crash between a tick's enqueue (durable) and the write of the
    /// schedule's `last_fired_ms` (not yet flushed) is simulated by
    /// putting the schedule back as it was: the tick fires again with the
    /// same id, and the store keeps the one event and delivery.
    #[tokio::test]
    async fn a_tick_fired_again_after_a_lost_write_keeps_its_id() {
        let host = Host::builder().temporary().build().unwrap();
        let store = host.inner.store.clone();
        // Yearly: its latest tick does not change while the test runs.
        let schedule = Schedule {
            id: 5,
            function: "f".into(),
            cron: "0 0 1 1 *".into(),
            tz: "UTC".into(),
            path: "/tick".into(),
            payload: "tick".into(),
            content_type: Some("text/plain".into()),
            created_at_ms: 0,
            last_fired_ms: 0,
            next_ms: None,
        };
        store.put_schedule(&schedule).unwrap();
        host.fire_schedules().await.unwrap();
        let tick = store.schedules().unwrap()[0].last_fired_ms;
        assert!(tick > 0);
        let id = tick_event_id(5, tick);
        let shown = host.event(&format_id(id)).unwrap();
        assert_eq!(shown.topic, "schedule:0000000000000005");
        assert_eq!(shown.deliveries.len(), 1);
        let bytes = store.event_bytes(None);

        store.put_schedule(&schedule).unwrap();
        host.fire_schedules().await.unwrap();
        assert_eq!(store.schedules().unwrap()[0].last_fired_ms, tick);
        assert_eq!(host.event(&format_id(id)).unwrap().deliveries.len(), 1);
        assert_eq!(store.queue_depth_total().unwrap(), 1);
        assert_eq!(store.event_bytes(None), bytes);
        assert_eq!(store.due_deliveries(u64::MAX - 1, 10).unwrap().len(), 1);
    }

    /// A content type past the cap is refused before anything is stored,
    /// on every path that takes one.
    #[tokio::test]
    async fn content_types_past_the_cap_are_refused() {
        let host = Host::builder().temporary().build().unwrap();
        let long = "x".repeat(crate::events::MAX_CONTENT_TYPE_BYTES + 1);
        let e = host
            .publish("t", Bytes::from_static(b"x"), Some(long.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, EventError::InvalidArgument(m) if m.contains("255")),
            "{e}"
        );
        let e = host
            .publish("t", Bytes::from_static(b"x"), Some("a\nb".into()))
            .await
            .unwrap_err();
        assert!(matches!(e, EventError::InvalidArgument(_)));
        let ok = "x".repeat(crate::events::MAX_CONTENT_TYPE_BYTES);
        host.publish("t", Bytes::from_static(b"x"), Some(ok))
            .await
            .unwrap();
        assert_eq!(host.inner.store.event_bytes(None), 0);
    }
}
