//! The event plane in cluster mode: events, deliveries and dead letters in
//! NATS JetStream, shared by every host ([`crate::cluster`]). Single-node
//! hosts do not use this module.
//!
//! - The stream `WISP_EVENTS` holds events until every subscriber has
//!   handled them (interest retention). A publish on a topic is the subject
//!   `wisp.ev.<topic>._`; a delivery meant for one function only (a
//!   redriven dead letter) is `wisp.ev.<topic>.<function>`; a function's
//!   own deliveries (asynchronous invocations, schedule ticks) are
//!   `wisp.fn.<function>`. In a subject a topic's dots become `~` (a topic
//!   has no `~`), so one topic's subjects never match another's.
//! - A subscription is a durable pull consumer of the topic's subjects,
//!   shared by all hosts: JetStream hands each event to one host at a time.
//!   Each function has one more consumer, of its own subject. Every host
//!   pulls from each consumer no more than the subscription's concurrency
//!   (per host), runs the delivery as a single host does
//!   (`delivery::attempt_delivery`), and acknowledges it once the handler
//!   answered 2xx. A failure is handed back with the subscription's backoff
//!   as the delay; past its attempts (or its maximum age) the delivery goes
//!   to the stream `WISP_DEAD` (subject `wisp.dead.<function>`) and is
//!   terminated. A host that dies mid-delivery sends no more progress, so
//!   after [`ACK_WAIT`] JetStream redelivers to another.
//! - Subscriptions and schedules are in the bucket `wisp-events`; every
//!   host watches it and keeps them in memory (for listing, and for the
//!   consumers it pulls from).
//! - Schedules: every host fires each tick, publishing with a message id
//!   made of the schedule id and the tick's time; JetStream keeps one of
//!   the copies (its duplicate window is [`DUPLICATE_WINDOW`]).
//!
//! What differs from a single host: an event is readable with
//! `GET /v1/events/{id}` only while a delivery of it is outstanding; the
//! storage quota is the stream's size (`--event-host-quota`, for the whole
//! cluster), with no per-topic quota or queue depth; batch jobs are not
//! supported yet.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind, kv, stream};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::delivery::{AttemptError, attempt_delivery};
use super::job::{JOB_MAX_AGE_MS, JOB_TOPIC_PREFIX, JobRecord, JobState, JobTask, job_of_topic};
use super::plane::{EventError, EventInfo, EventsCtx, Published, now_ms};
use super::schedule::{Schedule, due_tick};
use super::{
    DeliveryRecord, DeliveryStatus, EventRecord, INVOKE_TOPIC_PREFIX, SCHEDULE_TOPIC_PREFIX,
    Subscription, format_id,
};
use crate::cluster::Cluster;
use crate::config::HostConfig;

/// The stream of events.
const EVENTS: &str = "WISP_EVENTS";
/// The stream of dead letters.
const DEAD: &str = "WISP_DEAD";
/// The bucket of subscriptions and schedules.
const BUCKET: &str = "wisp-events";
/// The bucket of batch jobs (`job.<id>`) and their tasks' states
/// (`task.<id>.<index>`).
const JOBS: &str = "wisp-jobs";
/// How long a job and its tasks' states are kept after their last change.
const JOB_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Job tasks published before their acks are awaited.
const JOB_PUBLISH_WINDOW: usize = 1000;
/// How long a delivery may go without word from the host running it before
/// JetStream hands it to another host.
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(10);
/// How often a running delivery tells JetStream it is still at work.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// How long JetStream remembers a message id (a schedule tick's): ticks
/// fired by several hosts within it are stored once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The message header holding the event's record (JSON).
const EVENT_HEADER: &str = "wisp-event";
/// The dead letter's header holding its delivery record (JSON).
const DELIVERY_HEADER: &str = "wisp-delivery";
/// How long one pull request waits for events. A pull request JetStream
/// lost (NATS restarted) is given up on this much later too, so a host
/// pulls again within about this long after a reconnect.
const PULL_WAIT: Duration = Duration::from_secs(2);
/// How often a host compares the consumers it pulls from with the
/// subscriptions and functions it has (also woken on each change).
const RECONCILE_EVERY: Duration = Duration::from_secs(2);
/// How often a host looks for due schedule ticks.
const SCHEDULE_EVERY: Duration = Duration::from_millis(250);
/// How long a delivery waits for an invocation slot on a saturated host
/// before it is handed back (using up no attempt it has not started).
const SATURATED_WAIT: Duration = Duration::from_secs(30);
/// Dead letters read at most by one redrive or listing.
const DEAD_SCAN_MAX: usize = 10_000;

/// The cluster's event plane, as one host sees it; cheap to clone.
#[derive(Clone)]
pub(crate) struct SharedEvents {
    inner: Arc<Shared>,
}

struct Shared {
    js: jetstream::Context,
    client: async_nats::Client,
    events: stream::Stream,
    dead: stream::Stream,
    bucket: kv::Store,
    jobs_bucket: kv::Store,
    /// Batch jobs by id, as the bucket has them.
    jobs: RwLock<BTreeMap<u64, JobRecord>>,
    /// Subscriptions by (topic, function), as the bucket has them.
    subs: RwLock<BTreeMap<(String, String), Subscription>>,
    /// Schedules by id, as the bucket has them.
    schedules: RwLock<BTreeMap<u64, Schedule>>,
    /// Functions' own consumers known to exist.
    made: Mutex<HashSet<String>>,
    /// The consumers this host pulls from, by consumer name.
    runners: Mutex<HashMap<String, Runner>>,
    /// The latest tick each schedule fired here.
    fired: Mutex<HashMap<u64, u64>>,
    /// Wakes the reconciler (a subscription or function changed).
    changed: Notify,
    /// The watcher, reconciler and ticker were started.
    started: AtomicBool,
    /// The stream's size bound (`--event-host-quota` of the host that
    /// created it; this host's figure, for messages).
    quota: u64,
    /// This host delivers (between `start` and `stop`).
    delivering: AtomicBool,
}

/// A consumer this host pulls from.
struct Runner {
    sub: Subscription,
    task: tokio::task::AbortHandle,
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn topic_token(topic: &str) -> String {
    topic.replace('.', "~")
}

/// The subject of an event published on `topic`, for every subscriber.
fn broadcast_subject(topic: &str) -> String {
    format!("wisp.ev.{}._", topic_token(topic))
}

/// The subject of an event on `topic` for `function`'s subscription only.
fn targeted_subject(topic: &str, function: &str) -> String {
    format!("wisp.ev.{}.{function}", topic_token(topic))
}

/// The subject of `function`'s own deliveries.
fn function_subject(function: &str) -> String {
    format!("wisp.fn.{function}")
}

fn dead_subject(function: &str) -> String {
    format!("wisp.dead.{function}")
}

/// A subscription's consumer: named by a hash, as a topic and a function
/// name may both hold characters a consumer name cannot, or `_`.
fn subscription_consumer(function: &str, topic: &str) -> String {
    let sum = crate::function::load::sha256_hex(format!("{function}\n{topic}").as_bytes());
    format!("sub-{}", &sum[..24])
}

fn function_consumer(function: &str) -> String {
    format!("fn-{function}")
}

fn job_consumer(id: u64) -> String {
    format!("job-{}", format_id(id))
}

/// The subject of a job's tasks (in the stream's `wisp.fn.>`, apart from
/// the function's own consumer's subject).
fn job_subject(function: &str, id: u64) -> String {
    format!("wisp.fn.{function}.job.{}", format_id(id))
}

fn subscription_key(function: &str, topic: &str) -> String {
    format!("sub/{function}/{topic}")
}

fn schedule_key(id: u64) -> String {
    format!("schedule/{}", format_id(id))
}

fn unavailable(e: impl std::fmt::Display) -> EventError {
    EventError::ClusterUnavailable(e.to_string())
}

/// Creates a stream unless it exists (another host may create it at the
/// same moment: the same config is accepted twice).
async fn open_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> anyhow::Result<stream::Stream> {
    if let Ok(s) = js.get_stream(&config.name).await {
        return Ok(s);
    }
    let name = config.name.clone();
    js.get_or_create_stream(config)
        .await
        .map_err(|e| anyhow::anyhow!("creating the stream {name}: {e}"))
}

impl SharedEvents {
    /// Opens the streams and the bucket (creating them on first use, with
    /// this host's limits) and reads the subscriptions and schedules.
    pub(crate) async fn open(
        cluster: &Cluster,
        config: &HostConfig,
    ) -> anyhow::Result<SharedEvents> {
        let js = cluster.jetstream();
        let quota = config.event_host_quota_bytes.min(i64::MAX as u64) as i64;
        let events = open_stream(
            &js,
            stream::Config {
                name: EVENTS.into(),
                description: Some("Wisp: events until every subscriber has handled them".into()),
                subjects: vec!["wisp.ev.>".into(), "wisp.fn.>".into()],
                retention: stream::RetentionPolicy::Interest,
                max_bytes: quota,
                discard: stream::DiscardPolicy::New,
                duplicate_window: DUPLICATE_WINDOW,
                allow_direct: true,
                ..Default::default()
            },
        )
        .await?;
        let dead = open_stream(
            &js,
            stream::Config {
                name: DEAD.into(),
                description: Some("Wisp: dead letters, by function".into()),
                subjects: vec!["wisp.dead.>".into()],
                max_bytes: quota,
                max_age: config.event_dead_letter_retention,
                discard: stream::DiscardPolicy::Old,
                allow_direct: true,
                ..Default::default()
            },
        )
        .await?;
        let bucket = crate::cluster::open_bucket(
            &js,
            BUCKET,
            "Wisp: subscriptions and schedules",
            Duration::ZERO,
        )
        .await?;
        let jobs_bucket =
            crate::cluster::open_bucket(&js, JOBS, "Wisp: batch jobs and their tasks", JOB_KEPT)
                .await?;
        let shared = SharedEvents {
            inner: Arc::new(Shared {
                js,
                client: cluster.client(),
                events,
                dead,
                bucket,
                jobs_bucket,
                jobs: RwLock::default(),
                subs: RwLock::default(),
                schedules: RwLock::default(),
                made: Mutex::default(),
                runners: Mutex::default(),
                fired: Mutex::default(),
                changed: Notify::new(),
                started: AtomicBool::new(false),
                quota: config.event_host_quota_bytes,
                delivering: AtomicBool::new(false),
            }),
        };
        let mut keys = shared.inner.bucket.keys().await?;
        while let Some(key) = keys.next().await {
            let key = key?;
            let value = shared.inner.bucket.get(&key).await?;
            shared.apply(&key, value.as_deref());
        }
        let mut keys = shared.inner.jobs_bucket.keys().await?;
        while let Some(key) = keys.next().await {
            let key = key?;
            if key.starts_with("job.") {
                let value = shared.inner.jobs_bucket.get(&key).await?;
                shared.apply_job(&key, value.as_deref());
            }
        }
        Ok(shared)
    }

    /// Whether the connection to NATS is up now.
    fn check_connected(&self) -> Result<(), EventError> {
        if self.inner.client.connection_state() == async_nats::connection::State::Connected {
            Ok(())
        } else {
            Err(EventError::ClusterUnavailable(
                "not connected to NATS".into(),
            ))
        }
    }

    /// A change of the bucket: a subscription or schedule set (`Some`) or
    /// removed.
    fn apply(&self, key: &str, value: Option<&[u8]>) {
        if let Some(rest) = key.strip_prefix("sub/") {
            let Some((function, topic)) = rest.split_once('/') else {
                return;
            };
            let at = (topic.to_string(), function.to_string());
            let mut subs = self.inner.subs.write().expect("not poisoned");
            match value.map(serde_json::from_slice::<Subscription>) {
                Some(Ok(sub)) => {
                    subs.insert(at, sub);
                }
                Some(Err(e)) => {
                    tracing::warn!(key, error = %e, "ignoring an unreadable subscription")
                }
                None => {
                    subs.remove(&at);
                }
            }
        } else if let Some(id) = key.strip_prefix("schedule/").and_then(super::parse_id) {
            let mut schedules = self.inner.schedules.write().expect("not poisoned");
            match value.map(serde_json::from_slice::<Schedule>) {
                Some(Ok(s)) => {
                    schedules.insert(id, s);
                }
                Some(Err(e)) => tracing::warn!(key, error = %e, "ignoring an unreadable schedule"),
                None => {
                    schedules.remove(&id);
                }
            }
        }
        self.inner.changed.notify_one();
    }

    /// A change of a job's record (`Some`), or its removal.
    fn apply_job(&self, key: &str, value: Option<&[u8]>) {
        let Some(id) = key.strip_prefix("job.").and_then(super::parse_id) else {
            return;
        };
        let mut jobs = self.inner.jobs.write().expect("not poisoned");
        match value.map(serde_json::from_slice::<JobRecord>) {
            Some(Ok(job)) => {
                jobs.insert(id, job);
            }
            Some(Err(e)) => tracing::warn!(key, error = %e, "ignoring an unreadable job"),
            None => {
                jobs.remove(&id);
            }
        }
        self.inner.changed.notify_one();
    }

    /// A job, unless it is still being created.
    pub(super) fn job(&self, id: u64) -> Option<JobRecord> {
        let jobs = self.inner.jobs.read().expect("not poisoned");
        jobs.get(&id)
            .filter(|j| j.state != JobState::Creating)
            .cloned()
    }

    /// Jobs (not those being created), oldest first.
    pub(super) fn jobs(&self) -> Vec<JobRecord> {
        let jobs = self.inner.jobs.read().expect("not poisoned");
        let mut all: Vec<JobRecord> = jobs
            .values()
            .filter(|j| j.state != JobState::Creating)
            .cloned()
            .collect();
        all.sort_by_key(|j| (j.created_ms, j.id));
        all
    }

    /// Writes a job's record.
    async fn put_job(&self, job: &JobRecord) -> Result<(), EventError> {
        let key = format!("job.{}", format_id(job.id));
        self.put_applied(&self.inner.jobs_bucket, &key, job, SharedEvents::apply_job)
            .await
    }

    /// Writes `value` under `key` in `bucket`, then applies it here at once
    /// (`apply`, as the watcher will again), so this host's next read has it.
    async fn put_applied(
        &self,
        bucket: &kv::Store,
        key: &str,
        value: &impl serde::Serialize,
        apply: fn(&SharedEvents, &str, Option<&[u8]>),
    ) -> Result<(), EventError> {
        let value = serde_json::to_vec(value).expect("a record serialises");
        bucket
            .put(key, value.clone().into())
            .await
            .map_err(unavailable)?;
        apply(self, key, Some(&value));
        Ok(())
    }

    /// Removes `key` from the subscriptions' bucket, here at once too.
    async fn delete_applied(&self, key: &str) -> Result<(), EventError> {
        self.inner.bucket.delete(key).await.map_err(unavailable)?;
        self.apply(key, None);
        Ok(())
    }

    /// Starts a job: its record (creating), the consumer of its tasks
    /// (parallelism: tasks out at once across the cluster), one event per
    /// index, then the record running. A failure part-way cancels it.
    pub(super) async fn start_job(
        &self,
        job: &JobRecord,
        indices: &[u32],
    ) -> Result<(), EventError> {
        self.check_connected()?;
        let mut creating = job.clone();
        creating.state = JobState::Creating;
        self.put_job(&creating).await?;
        let published = async {
            self.inner
                .events
                .get_or_create_consumer(
                    &job_consumer(job.id),
                    pull::Config {
                        durable_name: Some(job_consumer(job.id)),
                        description: Some(format!(
                            "wisp: job {} of {}",
                            format_id(job.id),
                            job.function
                        )),
                        filter_subject: job_subject(&job.function, job.id),
                        deliver_policy: DeliverPolicy::All,
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: ACK_WAIT,
                        max_deliver: -1,
                        max_ack_pending: job.parallelism as i64,
                        ..Default::default()
                    },
                )
                .await
                .map_err(unavailable)?;
            let topic = format!("{JOB_TOPIC_PREFIX}{}", format_id(job.id));
            let size = indices.len().to_string();
            for chunk in indices.chunks(JOB_PUBLISH_WINDOW) {
                let mut acks = Vec::with_capacity(chunk.len());
                for &index in chunk {
                    let event = EventRecord {
                        id: 0,
                        topic: topic.clone(),
                        time_ms: job.created_ms,
                        content_type: job.content_type.clone(),
                        path: Some(job.path.clone()),
                        headers: vec![
                            ("wisp-job-id".into(), format_id(job.id)),
                            ("wisp-job-index".into(), index.to_string()),
                            ("wisp-job-array-size".into(), size.clone()),
                        ],
                        size_bytes: job.payload.len() as u64,
                    };
                    let mut headers = HeaderMap::new();
                    headers.insert(
                        EVENT_HEADER,
                        serde_json::to_string(&event).expect("an event serialises"),
                    );
                    acks.push(
                        self.inner
                            .js
                            .publish_with_headers(
                                job_subject(&job.function, job.id),
                                headers,
                                Bytes::new(),
                            )
                            .await
                            .map_err(unavailable)?,
                    );
                }
                for ack in acks {
                    ack.await.map_err(unavailable)?;
                }
            }
            Ok::<_, EventError>(())
        }
        .await;
        let mut done = job.clone();
        if let Err(e) = published {
            // Never acknowledged: cancelled, its tasks never run.
            done.state = JobState::Cancelled;
            done.finished_ms = Some(now_ms());
            let _ = self.put_job(&done).await;
            let _ = self
                .inner
                .events
                .delete_consumer(&job_consumer(job.id))
                .await;
            return Err(e);
        }
        self.put_job(&done).await
    }

    /// Cancels a job: its tasks not yet handed out are dropped with its
    /// consumer; running ones finish.
    pub(super) async fn cancel_job(&self, mut job: JobRecord) -> Result<JobRecord, EventError> {
        self.check_connected()?;
        job.state = JobState::Cancelled;
        job.finished_ms = Some(now_ms());
        self.put_job(&job).await?;
        if let Err(e) = self
            .inner
            .events
            .delete_consumer(&job_consumer(job.id))
            .await
        {
            tracing::debug!(error = %e, "the job's consumer was not deleted");
        }
        Ok(job)
    }

    /// Notes that a job is finished and removes its consumer.
    async fn finish_job(&self, id: u64) {
        let job = self
            .inner
            .jobs
            .read()
            .expect("not poisoned")
            .get(&id)
            .cloned();
        if let Some(mut job) = job.filter(|j| j.finished_ms.is_none()) {
            job.finished_ms = Some(now_ms());
            if let Err(e) = self.put_job(&job).await {
                tracing::debug!(error = %e, "a finished job was not recorded (seen again later)");
                return;
            }
        }
        let _ = self.inner.events.delete_consumer(&job_consumer(id)).await;
    }

    /// The states of a job's tasks that have started, by index.
    pub(super) async fn job_tasks(&self, job: &JobRecord) -> Result<Vec<JobTask>, EventError> {
        self.check_connected()?;
        let stream = self
            .inner
            .js
            .get_stream(format!("KV_{JOBS}"))
            .await
            .map_err(unavailable)?;
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.inner.client.new_inbox(),
                description: Some("wisp job reader".into()),
                filter_subject: format!("$KV.{JOBS}.task.{}.>", format_id(job.id)),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let mut pending = consumer.cached_info().num_pending;
        let mut messages = consumer.messages().await.map_err(unavailable)?;
        let mut tasks = BTreeMap::new();
        while pending > 0 {
            let Ok(Some(message)) = tokio::time::timeout(PULL_WAIT, messages.next()).await else {
                break;
            };
            let message = message.map_err(unavailable)?;
            pending -= 1;
            if let Ok(task) = serde_json::from_slice::<JobTask>(&message.payload) {
                tasks.insert(task.index, task);
            }
        }
        Ok(tasks.into_values().collect())
    }

    /// Records where a job's task stands (for `wisp job status`).
    async fn put_task(&self, job: u64, task: JobTask) {
        let key = format!("task.{}.{}", format_id(job), task.index);
        let value = serde_json::to_vec(&task).expect("a task serialises");
        if let Err(e) = self.inner.jobs_bucket.put(&key, value.into()).await {
            tracing::warn!(error = %e, "a job task's state was not recorded");
        }
    }

    /// Subscriptions (of one topic if given), by topic.
    pub(super) fn subscriptions(&self, topic: Option<&str>) -> Vec<Subscription> {
        let subs = self.inner.subs.read().expect("not poisoned");
        subs.values()
            .filter(|s| topic.is_none_or(|t| s.topic == t))
            .cloned()
            .collect()
    }

    /// Schedules, oldest first.
    pub(super) fn schedules(&self) -> Vec<Schedule> {
        let schedules = self.inner.schedules.read().expect("not poisoned");
        let fired = self.inner.fired.lock().expect("not poisoned");
        let mut all: Vec<Schedule> = schedules
            .values()
            .map(|s| Schedule {
                // The latest tick this host fired (or saw fired).
                last_fired_ms: fired.get(&s.id).copied().unwrap_or(s.last_fired_ms),
                ..s.clone()
            })
            .collect();
        all.sort_by_key(|s| (s.created_at_ms, s.id));
        all
    }

    // ------------------------------------------------------------ writes

    /// Stores a subscription in the cluster, its consumer first (so that
    /// events published once this returns are kept for it).
    pub(super) async fn put_subscription(&self, sub: &Subscription) -> Result<(), EventError> {
        self.check_connected()?;
        self.consumer(
            &subscription_consumer(&sub.function, &sub.topic),
            format!("wisp.ev.{}.>", topic_token(&sub.topic)),
            format!("wisp: {} on {}", sub.function, sub.topic),
        )
        .await?;
        let key = subscription_key(&sub.function, &sub.topic);
        self.put_applied(&self.inner.bucket, &key, sub, SharedEvents::apply)
            .await
    }

    /// Removes a subscription and its consumer (its pending deliveries go
    /// with it). Whether there was one.
    pub(super) async fn delete_subscription(
        &self,
        function: &str,
        topic: &str,
    ) -> Result<bool, EventError> {
        self.check_connected()?;
        let existed = self
            .inner
            .subs
            .read()
            .expect("not poisoned")
            .contains_key(&(topic.to_string(), function.to_string()));
        if !existed {
            return Ok(false);
        }
        let key = subscription_key(function, topic);
        self.delete_applied(&key).await?;
        if let Err(e) = self
            .inner
            .events
            .delete_consumer(&subscription_consumer(function, topic))
            .await
        {
            tracing::debug!(error = %e, "the subscription's consumer was not deleted");
        }
        Ok(true)
    }

    /// Stores a schedule in the cluster.
    pub(super) async fn put_schedule(&self, schedule: &Schedule) -> Result<(), EventError> {
        self.check_connected()?;
        let key = schedule_key(schedule.id);
        self.put_applied(&self.inner.bucket, &key, schedule, SharedEvents::apply)
            .await
    }

    /// Removes a schedule. Whether there was one.
    pub(super) async fn delete_schedule(&self, id: u64) -> Result<bool, EventError> {
        self.check_connected()?;
        if !self
            .inner
            .schedules
            .read()
            .expect("not poisoned")
            .contains_key(&id)
        {
            return Ok(false);
        }
        let key = schedule_key(id);
        self.delete_applied(&key).await?;
        Ok(true)
    }

    /// Removes what the cluster keeps for a deleted function: its
    /// subscriptions, schedules, consumers and dead letters.
    pub(crate) async fn forget_function(&self, function: &str) -> Result<(), EventError> {
        let subs: Vec<Subscription> = self
            .subscriptions(None)
            .into_iter()
            .filter(|s| s.function == function)
            .collect();
        for s in subs {
            self.delete_subscription(function, &s.topic).await?;
        }
        let schedules: Vec<u64> = self
            .schedules()
            .into_iter()
            .filter(|s| s.function == function)
            .map(|s| s.id)
            .collect();
        for id in schedules {
            self.delete_schedule(id).await?;
        }
        for job in self.jobs() {
            if job.function == function && job.finished_ms.is_none() {
                self.cancel_job(job).await?;
            }
        }
        let name = function_consumer(function);
        self.inner.made.lock().expect("not poisoned").remove(&name);
        if let Err(e) = self.inner.events.delete_consumer(&name).await {
            tracing::debug!(error = %e, "the function's consumer was not deleted");
        }
        self.inner
            .dead
            .purge()
            .filter(dead_subject(function))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// A durable consumer of `filter`, created unless it exists.
    async fn consumer(
        &self,
        name: &str,
        filter: String,
        description: String,
    ) -> Result<PullConsumer, EventError> {
        self.inner
            .events
            .get_or_create_consumer(
                name,
                pull::Config {
                    durable_name: Some(name.to_string()),
                    description: Some(description),
                    filter_subject: filter,
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_deliver: -1,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(unavailable)
    }

    /// The consumer of `function`'s own deliveries, created unless this
    /// host knows it exists.
    async fn function_consumer(&self, function: &str) -> Result<PullConsumer, EventError> {
        let name = function_consumer(function);
        let consumer = self
            .consumer(
                &name,
                function_subject(function),
                format!("wisp: {function}'s own deliveries"),
            )
            .await?;
        self.inner.made.lock().expect("not poisoned").insert(name);
        Ok(consumer)
    }

    /// Publishes an event on `subject` and waits for JetStream's ack; the
    /// event's id is its stream sequence unless it has one (a redrive).
    async fn send(
        &self,
        subject: String,
        event: &EventRecord,
        payload: Bytes,
        message_id: Option<String>,
    ) -> Result<u64, EventError> {
        self.check_connected()?;
        let mut headers = HeaderMap::new();
        headers.insert(
            EVENT_HEADER,
            serde_json::to_string(event).expect("an event serialises"),
        );
        if let Some(id) = message_id {
            headers.insert("Nats-Msg-Id", id);
        }
        let size = payload.len() as u64;
        let ack = self
            .inner
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(unavailable)?
            .await
            .map_err(|e| {
                let text = e.to_string();
                if e.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded {
                    EventError::PayloadTooLarge {
                        limit: self.inner.client.server_info().max_payload as u64,
                    }
                } else if text.contains("maximum bytes") || text.contains("resource limits") {
                    // The stream is full: it holds (about) its bound.
                    EventError::HostQuotaExceeded {
                        held: self.inner.quota,
                        size,
                        limit: self.inner.quota,
                    }
                } else {
                    unavailable(text)
                }
            })?;
        Ok(ack.sequence)
    }

    /// Publishes on a topic: one delivery per subscription.
    pub(super) async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        content_type: Option<String>,
    ) -> Result<Published, EventError> {
        let event = EventRecord {
            id: 0,
            topic: topic.to_string(),
            time_ms: now_ms(),
            content_type,
            path: None,
            headers: Vec::new(),
            size_bytes: payload.len() as u64,
        };
        let seq = self
            .send(broadcast_subject(topic), &event, payload, None)
            .await?;
        Ok(Published {
            id: format_id(seq),
            topic: topic.to_string(),
            deliveries: self.subscriptions(Some(topic)).len() as u32,
        })
    }

    /// Queues a delivery for `function` itself (an asynchronous invocation
    /// or a schedule tick); `message_id` de-duplicates.
    pub(super) async fn send_to_function(
        &self,
        function: &str,
        event: EventRecord,
        payload: Bytes,
        message_id: Option<String>,
    ) -> Result<Published, EventError> {
        self.check_connected()?;
        if !self
            .inner
            .made
            .lock()
            .expect("not poisoned")
            .contains(&function_consumer(function))
        {
            self.function_consumer(function).await?;
        }
        let seq = self
            .send(function_subject(function), &event, payload, message_id)
            .await?;
        Ok(Published {
            id: format_id(seq),
            topic: event.topic,
            deliveries: 1,
        })
    }

    // ------------------------------------------------------ reading events

    /// An event still held (a delivery of it outstanding), with the state
    /// of each subscription's delivery.
    pub(super) async fn event(&self, id: &str, seq: u64) -> Result<EventInfo, EventError> {
        self.check_connected()?;
        let not_held = || EventError::EventNotFound(id.to_string());
        let message = match self.inner.events.direct_get(seq).await {
            Ok(m) => m,
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return Err(not_held()),
            Err(e) => return Err(unavailable(e)),
        };
        let event = decode_event(Some(&message.headers), seq).ok_or_else(not_held)?;
        let mut deliveries = Vec::new();
        let targets: Vec<Subscription> = if message.subject.starts_with("wisp.fn.") {
            let function = message.subject.trim_start_matches("wisp.fn.").to_string();
            vec![self.implicit(&function, &event.topic)]
        } else {
            self.subscriptions(Some(&event.topic))
        };
        for sub in targets {
            let name = if message.subject.starts_with("wisp.fn.") {
                function_consumer(&sub.function)
            } else {
                subscription_consumer(&sub.function, &sub.topic)
            };
            let status = match self.inner.events.consumer_info(&name).await {
                Ok(info) if info.ack_floor.stream_sequence >= seq => DeliveryStatus::Done,
                Ok(_) => DeliveryStatus::Pending,
                Err(_) => continue,
            };
            deliveries.push(DeliveryRecord {
                event_id: event.id,
                topic: event.topic.clone(),
                function: sub.function,
                status,
                attempts: 0,
                last_error: None,
                due_ms: event.time_ms,
                due_seq: 0,
                attempt_times_ms: Vec::new(),
                postponed_ms: 0,
                updated_ms: now_ms(),
            });
        }
        Ok(EventInfo {
            id: format_id(event.id),
            topic: event.topic,
            time_ms: event.time_ms,
            content_type: event.content_type,
            size_bytes: event.size_bytes,
            deliveries,
        })
    }

    /// The subscription a function's own deliveries run under: the host's
    /// defaults.
    fn implicit(&self, function: &str, topic: &str) -> Subscription {
        Subscription {
            topic: topic.to_string(),
            function: function.to_string(),
            path: "/".into(),
            concurrency: 0,
            retry: Default::default(),
            created_at_ms: 0,
        }
    }

    /// A function's dead letters (stream sequence, record, event and
    /// payload), of one topic if given, oldest first, at most `limit`.
    async fn dead(
        &self,
        function: &str,
        topic: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(u64, DeliveryRecord, EventRecord, Bytes)>, EventError> {
        self.check_connected()?;
        let mut out = Vec::new();
        let mut from = 1;
        let subject = dead_subject(function);
        for _ in 0..DEAD_SCAN_MAX {
            if out.len() >= limit {
                break;
            }
            let message = match self
                .inner
                .dead
                .direct_get_next_for_subject(subject.clone(), Some(from))
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => break,
                Err(e) => return Err(unavailable(e)),
            };
            from = message.sequence + 1;
            let record = message
                .headers
                .get(DELIVERY_HEADER)
                .and_then(|v| serde_json::from_str::<DeliveryRecord>(v.as_str()).ok());
            let event = decode_event(Some(&message.headers), 0);
            let (Some(record), Some(event)) = (record, event) else {
                tracing::warn!(seq = message.sequence, "ignoring an unreadable dead letter");
                continue;
            };
            if topic.is_some_and(|t| record.topic != t) {
                continue;
            }
            out.push((message.sequence, record, event, message.payload));
        }
        Ok(out)
    }

    /// A function's dead letters, of one topic if given, oldest first.
    pub(super) async fn dead_letters(
        &self,
        function: &str,
        topic: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, EventError> {
        Ok(self
            .dead(function, topic, limit)
            .await?
            .into_iter()
            .map(|(_, record, _, _)| record)
            .collect())
    }

    /// Delivers dead letters again (all of the function's, of one topic,
    /// or these event ids), attempts starting over; each leaves the list
    /// once it is queued again.
    pub(super) async fn redrive(
        &self,
        function: &str,
        topic: Option<&str>,
        ids: Option<Vec<u64>>,
    ) -> Result<Vec<DeliveryRecord>, EventError> {
        let mut redriven = Vec::new();
        for (seq, mut record, event, payload) in self.dead(function, topic, DEAD_SCAN_MAX).await? {
            if ids
                .as_ref()
                .is_some_and(|ids| !ids.contains(&record.event_id))
            {
                continue;
            }
            let subscribed = self
                .inner
                .subs
                .read()
                .expect("not poisoned")
                .contains_key(&(record.topic.clone(), function.to_string()));
            if subscribed {
                self.send(
                    targeted_subject(&record.topic, function),
                    &event,
                    payload,
                    None,
                )
                .await?;
            } else if record.topic.starts_with(INVOKE_TOPIC_PREFIX)
                || record.topic.starts_with(SCHEDULE_TOPIC_PREFIX)
            {
                self.send_to_function(function, event, payload, None)
                    .await?;
            } else {
                // Unsubscribed since: nothing would receive it.
                continue;
            }
            self.inner
                .dead
                .delete_message(seq)
                .await
                .map_err(unavailable)?;
            record.status = DeliveryStatus::Pending;
            record.attempts = 0;
            record.updated_ms = now_ms();
            redriven.push(record);
        }
        Ok(redriven)
    }

    /// Removes a function's dead letters (of one topic if given).
    pub(super) async fn purge_dead(
        &self,
        function: &str,
        topic: Option<&str>,
    ) -> Result<u64, EventError> {
        self.check_connected()?;
        if topic.is_none() {
            let purged = self
                .inner
                .dead
                .purge()
                .filter(dead_subject(function))
                .await
                .map_err(unavailable)?;
            return Ok(purged.purged);
        }
        let mut purged = 0;
        for (seq, ..) in self.dead(function, topic, DEAD_SCAN_MAX).await? {
            if self
                .inner
                .dead
                .delete_message(seq)
                .await
                .map_err(unavailable)?
            {
                purged += 1;
            }
        }
        Ok(purged)
    }

    // --------------------------------------------------------- delivering

    /// Starts this host's part: the watcher of subscriptions and schedules,
    /// the consumers it pulls from, and the schedule ticker.
    pub(super) fn start(&self, host: &EventsCtx) {
        self.inner.delivering.store(true, Ordering::SeqCst);
        self.inner.changed.notify_one();
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        self.follow(
            "subscriptions",
            self.inner.bucket.clone(),
            ">",
            SharedEvents::apply,
        );
        self.follow(
            "jobs",
            self.inner.jobs_bucket.clone(),
            "job.>",
            SharedEvents::apply_job,
        );
        let (this, host_ref) = (self.clone(), host.clone());
        tokio::spawn(async move {
            loop {
                this.reconcile(&host_ref);
                let _ = tokio::time::timeout(RECONCILE_EVERY, this.inner.changed.notified()).await;
            }
        });
        let (this, host_ref) = (self.clone(), host.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SCHEDULE_EVERY);
            loop {
                ticks.tick().await;
                if this.inner.delivering.load(Ordering::SeqCst) {
                    this.fire_schedules(&host_ref).await;
                }
            }
        });
    }

    /// Applies every change of `bucket`'s `keys` (from each key's latest
    /// value on) with `apply`, for as long as the host runs.
    fn follow(
        &self,
        what: &'static str,
        bucket: kv::Store,
        keys: &'static str,
        apply: fn(&SharedEvents, &str, Option<&[u8]>),
    ) {
        let this = self.clone();
        tokio::spawn(crate::function::follow(
            what,
            move || {
                let bucket = bucket.clone();
                async move {
                    bucket
                        .watch_with_history(keys)
                        .await
                        .map_err(|e| crate::cluster::ClusterError::Unavailable(e.to_string()))
                }
            },
            move |entry: kv::Entry| {
                let value = (entry.operation == kv::Operation::Put).then_some(entry.value);
                apply(&this, &entry.key, value.as_deref());
                async { Ok(()) }
            },
        ));
    }

    /// Stops pulling: running deliveries are aborted (JetStream hands them
    /// to another host after [`ACK_WAIT`]).
    pub(super) fn stop(&self) {
        self.inner.delivering.store(false, Ordering::SeqCst);
        self.inner.runners.lock().expect("not poisoned").clear();
    }

    /// Pulls from the consumers of the subscriptions of the functions
    /// deployed here and of those functions' own deliveries; stops pulling
    /// from the others.
    fn reconcile(&self, host: &EventsCtx) {
        if !self.inner.delivering.load(Ordering::SeqCst) {
            self.inner.runners.lock().expect("not poisoned").clear();
            return;
        }
        let registry = host.inner.registry.load();
        let config = &host.inner.config;
        let mut wanted: HashMap<String, (Subscription, String, bool)> = HashMap::new();
        for name in registry.by_name.keys() {
            let sub = Subscription {
                topic: format!("{INVOKE_TOPIC_PREFIX}{name}"),
                function: name.clone(),
                path: "/".into(),
                concurrency: config.event_concurrency,
                retry: config.event_retry,
                created_at_ms: 0,
            };
            wanted.insert(function_consumer(name), (sub, function_subject(name), true));
        }
        for sub in self.subscriptions(None) {
            if registry.by_name.contains_key(&sub.function) {
                let filter = format!("wisp.ev.{}.>", topic_token(&sub.topic));
                wanted.insert(
                    subscription_consumer(&sub.function, &sub.topic),
                    (sub, filter, false),
                );
            }
        }
        for job in self.jobs() {
            if job.state == JobState::Running
                && job.finished_ms.is_none()
                && registry.by_name.contains_key(&job.function)
            {
                let sub = Subscription {
                    topic: format!("{JOB_TOPIC_PREFIX}{}", format_id(job.id)),
                    function: job.function.clone(),
                    path: job.path.clone(),
                    concurrency: job.parallelism,
                    retry: crate::config::RetryPolicy {
                        max_attempts: job.retries + 1,
                        max_age_ms: JOB_MAX_AGE_MS,
                        ..config.event_retry
                    },
                    created_at_ms: job.created_ms,
                };
                let filter = job_subject(&job.function, job.id);
                wanted.insert(job_consumer(job.id), (sub, filter, false));
            }
        }
        let mut runners = self.inner.runners.lock().expect("not poisoned");
        runners.retain(|name, r| wanted.get(name).is_some_and(|(sub, ..)| *sub == r.sub));
        for (name, (sub, filter, own)) in wanted {
            if runners.contains_key(&name) {
                continue;
            }
            let task = tokio::spawn(pull_loop(
                host.clone(),
                self.clone(),
                sub.clone(),
                name.clone(),
                filter,
                own,
            ));
            runners.insert(
                name,
                Runner {
                    sub,
                    task: task.abort_handle(),
                },
            );
        }
    }

    /// Fires the schedules' due ticks: one event each for the latest tick
    /// (published by every host, stored once).
    async fn fire_schedules(&self, host: &EventsCtx) {
        let now = now_ms();
        for s in self.schedules() {
            if !host.inner.registry.load().by_name.contains_key(&s.function) {
                continue;
            }
            let Ok(spec) = super::schedule::parse(&s.cron, &s.tz) else {
                continue;
            };
            let last = self
                .inner
                .fired
                .lock()
                .expect("not poisoned")
                .get(&s.id)
                .copied()
                .unwrap_or(s.created_at_ms);
            let Some(tick) = due_tick(&spec, s.created_at_ms, last, now) else {
                continue;
            };
            let topic = format!("{SCHEDULE_TOPIC_PREFIX}{}", format_id(s.id));
            let event = EventRecord {
                id: super::schedule::tick_event_id(s.id, tick),
                topic,
                time_ms: tick,
                content_type: s.content_type.clone(),
                path: Some(s.path.clone()),
                headers: vec![("wisp-schedule-id".to_string(), format_id(s.id))],
                size_bytes: s.payload.len() as u64,
            };
            let message_id = format!("tick-{}-{tick}", format_id(s.id));
            let payload = Bytes::from(s.payload.clone().into_bytes());
            match self
                .send_to_function(&s.function, event, payload, Some(message_id))
                .await
            {
                Ok(_) => {
                    self.inner
                        .fired
                        .lock()
                        .expect("not poisoned")
                        .insert(s.id, tick);
                }
                Err(e) => {
                    tracing::debug!(id = %format_id(s.id), error = %e, "a schedule tick was not published (retried)")
                }
            }
        }
    }
}

/// Reads an event's record from its message; its id is `seq` unless the
/// record has one (a redriven dead letter keeps its event's id).
fn decode_event(headers: Option<&HeaderMap>, seq: u64) -> Option<EventRecord> {
    let value = headers?.get(EVENT_HEADER)?;
    let mut event: EventRecord = serde_json::from_str(value.as_str()).ok()?;
    if event.id == 0 {
        event.id = seq;
    }
    Some(event)
}

/// Pulls from one consumer for as long as this host wants it: no more
/// deliveries at once than the subscription's concurrency.
async fn pull_loop(
    host: EventsCtx,
    shared: SharedEvents,
    sub: Subscription,
    name: String,
    filter: String,
    own: bool,
) {
    let permits = Arc::new(Semaphore::new(sub.concurrency.max(1) as usize));
    loop {
        let consumer = if own {
            shared.function_consumer(&sub.function).await
        } else {
            shared
                .inner
                .events
                .get_consumer::<pull::Config>(&name)
                .await
                .map_err(unavailable)
        };
        let consumer = match consumer {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(consumer = name, filter, error = %e, "cannot pull yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let Ok(first) = permits.clone().acquire_owned().await else {
                return;
            };
            let mut held = vec![first];
            while let Ok(p) = permits.clone().try_acquire_owned() {
                held.push(p);
            }
            let batch = consumer
                .batch()
                .max_messages(held.len())
                .expires(PULL_WAIT)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(consumer = name, error = %e, "pulling failed; pulling again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            };
            let mut failed = false;
            let mut got = 0;
            // Bounded here as well: a request lost with the connection
            // would otherwise be noticed only by a missed heartbeat.
            let end = tokio::time::Instant::now() + PULL_WAIT + Duration::from_millis(500);
            while let Ok(Some(message)) = tokio::time::timeout_at(end, batch.next()).await {
                match message {
                    Ok(m) => {
                        let Some(permit) = held.pop() else { break };
                        got += 1;
                        spawn_delivery(&host, shared.clone(), sub.clone(), m, permit);
                    }
                    Err(e) => {
                        tracing::debug!(consumer = name, error = %e, "pulling stopped");
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                tokio::time::sleep(Duration::from_millis(500)).await;
                break;
            }
            drop(held);
            // A job whose tasks are all handed out and settled is
            // finished: its consumer goes (any host may see it first).
            if let Some(job) = job_of_topic(&sub.topic)
                && got == 0
                && permits.available_permits() == sub.concurrency.max(1) as usize
            {
                let mut c = consumer.clone();
                if let Ok(info) = c.info().await
                    && info.num_pending == 0
                    && info.num_ack_pending == 0
                {
                    shared.finish_job(job).await;
                    return;
                }
            }
        }
    }
}

fn spawn_delivery(
    host: &EventsCtx,
    shared: SharedEvents,
    sub: Subscription,
    message: jetstream::Message,
    permit: OwnedSemaphorePermit,
) {
    let host2 = host.clone();
    let delivery = async move {
        deliver(&host2, &shared, sub, message).await;
        drop(permit);
    };
    // On a serving thread while the host serves, as on a single host.
    match host.inner.serving.next() {
        Some(r) => {
            r.handle.spawn(r.tracker.track_future(delivery));
        }
        None => {
            tokio::spawn(delivery);
        }
    }
}

/// Runs one delivery of `message` and settles it with JetStream.
async fn deliver(
    host: &EventsCtx,
    shared: &SharedEvents,
    sub: Subscription,
    message: jetstream::Message,
) {
    let Ok(info) = message.info() else { return };
    let (seq, delivered) = (info.stream_sequence, info.delivered.max(1) as u32);
    // A redrive meant for another function's subscription of the topic.
    let target = message.subject.rsplit('.').next().unwrap_or("_");
    if message.subject.starts_with("wisp.ev.") && target != "_" && target != sub.function {
        settle(&message, AckKind::Ack).await;
        return;
    }
    let Some(event) = decode_event(message.headers.as_ref(), seq) else {
        tracing::warn!(seq, "an unreadable event was dropped");
        settle(&message, AckKind::Term).await;
        return;
    };
    let results = &host.plane().results;
    // A job's task: the job holds the payload, and the task's state is
    // recorded at each step.
    let job = job_of_topic(&event.topic).map(|id| (id, shared.job(id)));
    let task = |status, attempts, last_error: Option<&str>| JobTask {
        index: header(&event, "wisp-job-index")
            .and_then(|i| i.parse().ok())
            .unwrap_or(0),
        status,
        attempts,
        event_id: format_id(event.id),
        last_error: last_error.map(str::to_string),
    };
    let payload = match &job {
        Some((_, Some(j))) if j.state == JobState::Running => {
            Bytes::from(j.payload.clone().into_bytes())
        }
        Some((id, _)) => {
            shared
                .put_task(*id, task(DeliveryStatus::Cancelled, delivered - 1, None))
                .await;
            settle(&message, AckKind::Term).await;
            return;
        }
        None => message.payload.clone(),
    };
    // The attempt before this one was the last, and its host went away
    // mid-delivery: the delivery is out of attempts.
    if delivered > sub.retry.max_attempts {
        let error = "the host running the last attempt stopped before it finished";
        if let Some((id, _)) = job {
            shared
                .put_task(id, task(DeliveryStatus::Dead, delivered - 1, Some(error)))
                .await;
            settle(&message, AckKind::Term).await;
        } else {
            dead_letter(shared, &sub, &event, &message, delivered - 1, error).await;
        }
        results[2].increment(1);
        return;
    }
    if let Some((id, _)) = job {
        shared
            .put_task(id, task(DeliveryStatus::Running, delivered - 1, None))
            .await;
    }
    // Tell JetStream the delivery is at work while it runs.
    let progress = {
        let message_ack = message.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let _ = message_ack.ack_with(AckKind::Progress).await;
            }
        })
    };
    let started = std::time::Instant::now();
    let outcome = loop {
        match attempt_delivery(host, &sub, &event, payload.clone(), delivered).await {
            Err(AttemptError::Saturated) if started.elapsed() < SATURATED_WAIT => {
                // Not the function's failure: wait for a slot here.
                let jitter = rand::random::<u64>() % 500;
                tokio::time::sleep(Duration::from_millis(500 + jitter)).await;
            }
            other => break other,
        }
    };
    progress.abort();
    match outcome {
        Ok(()) => {
            if let Some((id, _)) = job {
                shared
                    .put_task(id, task(DeliveryStatus::Done, delivered, None))
                    .await;
            }
            if let Err(e) = message.double_ack().await {
                tracing::warn!(seq, error = %e, "a delivery's ack was not confirmed (it may run again)");
            }
            results[0].increment(1);
        }
        Err(AttemptError::Saturated) => {
            if let Some((id, _)) = job {
                shared
                    .put_task(id, task(DeliveryStatus::Pending, delivered - 1, None))
                    .await;
            }
            settle(&message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            results[3].increment(1);
        }
        Err(AttemptError::Failed(error)) => {
            let error = crate::untrusted::clip(&error);
            let now = now_ms();
            match sub
                .retry
                .after_failure(delivered, event.time_ms, now, rand::random::<f64>())
            {
                Some(due) => {
                    if let Some((id, _)) = job {
                        let t = task(DeliveryStatus::Pending, delivered, Some(&error));
                        shared.put_task(id, t).await;
                    }
                    let delay = Duration::from_millis(due.saturating_sub(now));
                    settle(&message, AckKind::Nak(Some(delay))).await;
                    results[1].increment(1);
                }
                None if job.is_some() => {
                    if let Some((id, _)) = job {
                        let t = task(DeliveryStatus::Dead, delivered, Some(&error));
                        shared.put_task(id, t).await;
                    }
                    settle(&message, AckKind::Term).await;
                    results[2].increment(1);
                }
                None => {
                    dead_letter(shared, &sub, &event, &message, delivered, &error).await;
                    results[2].increment(1);
                }
            }
        }
    }
}

/// A header of an event (its request headers).
fn header<'a>(event: &'a EventRecord, name: &str) -> Option<&'a str> {
    event
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Acks, naks or terminates; a lost settle means the delivery runs again
/// after [`ACK_WAIT`] (at least once).
async fn settle(message: &jetstream::Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::debug!(error = %e, "settling a delivery failed");
    }
}

/// Moves a delivery out of attempts to the function's dead letters, then
/// ends it (the dead letter is stored before the event is let go).
async fn dead_letter(
    shared: &SharedEvents,
    sub: &Subscription,
    event: &EventRecord,
    message: &jetstream::Message,
    attempts: u32,
    error: &str,
) {
    tracing::warn!(
        event = %format_id(event.id),
        topic = %event.topic,
        function = %sub.function,
        attempts,
        error = %error,
        "event delivery is dead (in the dead-letter list)"
    );
    let now = now_ms();
    let record = DeliveryRecord {
        event_id: event.id,
        topic: event.topic.clone(),
        function: sub.function.clone(),
        status: DeliveryStatus::Dead,
        attempts,
        last_error: Some(error.to_string()),
        due_ms: now,
        due_seq: 0,
        attempt_times_ms: Vec::new(),
        postponed_ms: 0,
        updated_ms: now,
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        EVENT_HEADER,
        serde_json::to_string(event).expect("an event serialises"),
    );
    headers.insert(
        DELIVERY_HEADER,
        serde_json::to_string(&record).expect("a delivery serialises"),
    );
    let stored = async {
        shared
            .inner
            .js
            .publish_with_headers(
                dead_subject(&sub.function),
                headers,
                message.payload.clone(),
            )
            .await?
            .await?;
        anyhow::Ok(())
    }
    .await;
    match stored {
        Ok(()) => settle(message, AckKind::Term).await,
        Err(e) => {
            // Not stored: handed back, to die again on its next delivery.
            tracing::warn!(error = %e, "a dead letter was not stored; the delivery is retried");
            settle(message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subject's tokens as NATS matches them (`*` one token, `>` the
    /// rest).
    fn matches(filter: &str, subject: &str) -> bool {
        let (f, s): (Vec<&str>, Vec<&str>) =
            (filter.split('.').collect(), subject.split('.').collect());
        for (i, t) in f.iter().enumerate() {
            match *t {
                ">" => return s.len() > i,
                "*" if i < s.len() => continue,
                t if s.get(i) == Some(&t) => continue,
                _ => return false,
            }
        }
        f.len() == s.len()
    }

    #[test]
    fn one_topics_subjects_never_match_anothers_filter() {
        let topics = [
            "orders",
            "orders.created",
            "orders.created.eu",
            "a-b_c",
            "invoke:f",
        ];
        for t in topics {
            let filter = format!("wisp.ev.{}.>", topic_token(t));
            for other in topics {
                for subject in [broadcast_subject(other), targeted_subject(other, "f")] {
                    assert_eq!(
                        matches(&filter, &subject),
                        t == other,
                        "{filter} ~ {subject}"
                    );
                }
            }
            // A function's own deliveries are apart from every topic's.
            assert!(!matches(&filter, &function_subject("f")));
        }
        // A job's tasks are apart from the function's own deliveries.
        assert!(!matches(&function_subject("f"), &job_subject("f", 7)));
        assert!(matches(&job_subject("f", 7), &job_subject("f", 7)));
    }

    #[test]
    fn consumer_names_are_valid_and_distinct() {
        let pairs = [
            ("a_b", "c"),
            ("a", "b_c"),
            ("f", "orders.created"),
            ("f", "orders~created"),
        ];
        let names: std::collections::HashSet<String> = pairs
            .iter()
            .map(|(f, t)| subscription_consumer(f, t))
            .collect();
        assert_eq!(names.len(), pairs.len());
        for name in names
            .iter()
            .chain([&function_consumer("f"), &job_consumer(9)])
        {
            assert!(
                !name.contains(['.', '*', '>', ' ']) && name.len() <= 64,
                "{name}"
            );
        }
    }

    #[test]
    fn an_event_keeps_its_id_when_redriven() {
        let event = EventRecord {
            id: 0,
            topic: "orders".into(),
            time_ms: 1,
            content_type: None,
            path: None,
            headers: Vec::new(),
            size_bytes: 3,
        };
        let mut headers = HeaderMap::new();
        headers.insert(EVENT_HEADER, serde_json::to_string(&event).unwrap());
        // A first publish: the stream sequence is the id.
        assert_eq!(decode_event(Some(&headers), 42).unwrap().id, 42);
        // Redriven: the record carries the original id.
        let mut kept = HeaderMap::new();
        let redriven = EventRecord { id: 42, ..event };
        kept.insert(EVENT_HEADER, serde_json::to_string(&redriven).unwrap());
        assert_eq!(decode_event(Some(&kept), 99).unwrap().id, 42);
        assert!(decode_event(None, 1).is_none());
        assert!(decode_event(Some(&HeaderMap::new()), 1).is_none());
    }
}
