//! The event plane at work: publishing with group commit, subscriptions,
//! dead letters, and the dispatcher that delivers due events to functions.
//!
//! The queue lives in the store, not in memory: the dispatcher
//! (`dispatcher`) scans the due index for what is due, claims a bounded
//! batch (at most the free delivery slots; a claim is held in memory, so it
//! costs no write and a crash leaves the delivery due), and runs each
//! claimed delivery (`delivery`) through the same
//! [`Invoker`](crate::invocation::Invoker) as HTTP requests (a call of the
//! event-handler export, or a `POST`).
//!
//! Writes are batched (`batcher`): publishes (`publish`) and outcomes
//! queued at the same time share one store transaction and one flush. A
//! publisher is answered only after the flush that covers its event; an
//! outcome is counted in the metrics once it is flushed. What the control
//! plane manages (subscriptions, schedules, dead letters) is in `manage`.
//!
//! This file: the plane's errors and API types, its per-host state, and
//! starting and stopping the dispatcher.

use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use super::DeliveryRecord;
use super::batcher::{Batcher, Write};
use super::cluster::SharedEvents;
use super::store::EventStore;
use crate::config::HostConfig;
use crate::function::records::Records;
use crate::function::registry::Registry;
use crate::gateway::serve::ServingRuntimes;
use crate::invocation::Invoker;
use crate::store::{Store, StoreError};

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
    /// NATS or JetStream cannot be reached (cluster mode): nothing was done.
    #[error(
        "the cluster is unavailable ({0}): nothing was changed; the host serves what it has and \
         retries the connection"
    )]
    ClusterUnavailable(String),
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

/// The event plane and what it needs of the host (configuration, store,
/// function records, what is deployed, the invoker, the admin lock, the
/// serving threads), shared with the host rather than reached through it.
/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct EventsCtx {
    pub(crate) inner: Arc<EventsInner>,
}

/// What an [`EventsCtx`] shares.
pub(crate) struct EventsInner {
    pub(crate) config: HostConfig,
    pub(crate) store: Store,
    pub(crate) records: Records,
    pub(crate) registry: Arc<ArcSwap<Registry>>,
    pub(crate) invoker: Arc<Invoker>,
    /// Serialises changes with deploys, rollbacks and deletes.
    pub(crate) admin_lock: Arc<tokio::sync::Mutex<()>>,
    /// The serving threads' runtimes (deliveries run on them).
    pub(crate) serving: Arc<ServingRuntimes>,
    /// Topics, subscriptions, group commit and the event dispatcher.
    pub(crate) events: EventPlane,
}

/// Per-host event state: the dispatcher and its wake-up, and the queues of
/// writes waiting to be batched.
pub(crate) struct EventPlane {
    /// The event plane's trees, and what it keeps in memory beside them.
    pub(super) store: EventStore,
    /// Wakes the dispatcher: a publish, a finished delivery, a redrive.
    pub(super) wake: Arc<Notify>,
    /// Set to stop the dispatcher (shutdown).
    stop: watch::Sender<bool>,
    dispatcher: StdMutex<Option<tokio::task::JoinHandle<()>>>,
    /// Publishes and outcomes waiting for their transaction.
    pub(super) writes: Batcher<Write>,
    pub(super) published: metrics::Counter,
    /// Delivery attempts by result: success, failure, dead, and
    /// deliveries postponed because the host was saturated (counted once
    /// the outcome is on disk).
    pub(super) results: [metrics::Counter; 4],
    /// Cluster mode: the cluster's event plane, set when the host joins
    /// (events then live in JetStream, not in this host's store).
    pub(super) shared: Arc<OnceLock<SharedEvents>>,
}

impl EventPlane {
    pub(crate) fn new(store: EventStore) -> EventPlane {
        metrics::describe_counter!(PUBLISHED, "Events published (and async invocations).");
        metrics::describe_counter!(DELIVERIES, "Event delivery attempts by result.");
        metrics::describe_gauge!(QUEUE_DEPTH, "Pending and running event deliveries.");
        metrics::describe_gauge!(
            STORED_BYTES,
            "Bytes of events held for pending, running or dead deliveries."
        );
        EventPlane {
            store,
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
            shared: Arc::default(),
        }
    }
}

impl EventsCtx {
    pub(super) fn plane(&self) -> &EventPlane {
        &self.inner.events
    }

    /// The cluster's event plane, in cluster mode once the host joined.
    pub(super) fn shared(&self) -> Option<&SharedEvents> {
        self.inner.events.shared.get()
    }

    /// Cluster mode: events, subscriptions and schedules are the
    /// cluster's from now on (before the host serves).
    pub(crate) fn use_cluster(&self, shared: SharedEvents) {
        let _ = self.inner.events.shared.set(shared);
    }

    /// The event plane's store.
    pub(super) fn event_store(&self) -> &EventStore {
        &self.inner.events.store
    }

    /// Wakes the dispatcher.
    pub(crate) fn wake_events(&self) {
        self.plane().wake.notify_one();
    }

    /// Starts the dispatcher (once; [`Host::serve`] does it). Deliveries
    /// that were running when the host last stopped are due (their claims
    /// were not stored). Needs a tokio runtime.
    pub(crate) fn start_events(&self) -> anyhow::Result<()> {
        let mut slot = self.plane().dispatcher.lock().expect("not poisoned");
        if slot.is_some() {
            return Ok(());
        }
        if let Some(shared) = self.shared() {
            shared.start(self);
            *slot = Some(tokio::spawn(async {}));
            return Ok(());
        }
        self.jobs_recover()?;
        let _ = self.plane().stop.send(false);
        let weak = Arc::downgrade(&self.inner);
        let wake = self.plane().wake.clone();
        let stop = self.plane().stop.subscribe();
        *slot = Some(tokio::spawn(super::dispatcher::dispatch(weak, wake, stop)));
        Ok(())
    }

    /// Stops the dispatcher: no new deliveries start; running ones get up
    /// to `grace` to finish. Those still running then stay due in the
    /// store and are retried after the next start.
    pub(crate) async fn stop_events(&self, grace: Duration) {
        let handle = self.plane().dispatcher.lock().expect("not poisoned").take();
        let Some(mut handle) = handle else { return };
        if let Some(shared) = self.shared() {
            shared.stop();
            return;
        }
        let _ = self.plane().stop.send(true);
        if tokio::time::timeout(grace, &mut handle).await.is_err() {
            tracing::warn!(
                "event deliveries still running after the grace period are left for the next start"
            );
            handle.abort();
        }
    }
}
