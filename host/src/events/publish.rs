//! Publishing: events on topics, asynchronous invocations, and schedule
//! ticks. Each is written with the other writes queued at the same time
//! (see `batcher`) and answered once durable.
//!
//! All of them go through an [`EventPublisher`], which holds only what
//! publishing needs. Invocations hold one (as a
//! [`Publisher`](crate::capabilities::topics::Publisher)) for a guest's
//! `wisp:function/topics` publish, instead of the host.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::batcher::{EventWriter, Write};
use super::cluster::SharedEvents;
use super::plane::EventsCtx;
use super::plane::{EventError, EventPlane, Published, now_ms};
use super::schedule::{Schedule, due_tick, tick_event_id};
use super::{
    EventRecord, SCHEDULE_TOPIC_PREFIX, format_id, invoke_topic, validate_content_type,
    validate_topic,
};
use crate::capabilities::topics::{PublishRefused, Publisher};
use crate::config::HostConfig;
use crate::store::{Durability, Store, StoreError};

/// An event to enqueue (see [`EventPublisher::enqueue`]).
pub(super) struct NewPublish<'a> {
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

/// Publishes events without the host: the event plane's store (whom an
/// event goes to, fresh ids), the queue of writes with what draining it
/// needs (see [`EventWriter`]), and the payload limit. Handles, cheap to
/// clone; it does not keep the host alive, so the host gives invocations
/// a weak reference to the one its invoker holds (a publish after the
/// host is gone is refused, as during shutdown).
#[derive(Clone)]
pub(crate) struct EventPublisher {
    writer: EventWriter,
    /// Largest payload accepted (`--event-max-payload`).
    max_payload_bytes: u64,
    /// Cluster mode: events go to JetStream instead (see
    /// [`EventPlane`]'s `shared`).
    shared: Arc<OnceLock<SharedEvents>>,
}

impl EventPublisher {
    /// The publisher of `plane`, whose trees are in `store`, with the
    /// limits of `config`.
    pub(crate) fn new(plane: &EventPlane, store: &Store, config: &HostConfig) -> EventPublisher {
        EventPublisher {
            writer: EventWriter::new(plane, store, config),
            max_payload_bytes: config.event_max_payload_bytes,
            shared: plane.shared.clone(),
        }
    }

    /// Writes `new` with the other writes queued now; returns once it is
    /// durable.
    pub(super) async fn enqueue(&self, new: NewPublish<'_>) -> Result<Published, EventError> {
        self.check_size(&new.payload)?;
        let event = EventRecord {
            id: match new.tick_id {
                Some(id) => id,
                None => self.writer.store.next_id()?,
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
        self.writer.queue(Write::Publish {
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

    /// Refuses a payload over the limit.
    fn check_size(&self, payload: &Bytes) -> Result<(), EventError> {
        if payload.len() as u64 > self.max_payload_bytes {
            return Err(EventError::PayloadTooLarge {
                limit: self.max_payload_bytes,
            });
        }
        Ok(())
    }

    /// Publishes `payload` on `topic`: one delivery per current subscriber.
    /// Returns once the event is durable.
    async fn publish_event(
        &self,
        topic: &str,
        payload: Bytes,
        content_type: Option<String>,
    ) -> Result<Published, EventError> {
        validate_topic(topic).map_err(EventError::InvalidName)?;
        if let Some(ct) = &content_type {
            validate_content_type(ct).map_err(EventError::InvalidArgument)?;
        }
        if let Some(shared) = self.shared.get() {
            self.check_size(&payload)?;
            return shared.publish(topic, payload, content_type).await;
        }
        let to = self
            .writer
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
}

impl Publisher for EventPublisher {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        payload: Bytes,
        content_type: Option<String>,
    ) -> BoxFuture<'a, Result<String, PublishRefused>> {
        Box::pin(async move {
            self.publish_event(topic, payload, content_type)
                .await
                .map(|published| published.id)
                .map_err(refusal)
        })
    }
}

/// What a guest is told of `e`: see [`PublishRefused`].
fn refusal(e: EventError) -> PublishRefused {
    match e {
        EventError::InvalidName(m) | EventError::InvalidArgument(m) => {
            PublishRefused::InvalidTopic(m)
        }
        EventError::PayloadTooLarge { limit } => PublishRefused::PayloadTooLarge(limit),
        // The storage quotas too: the WIT has no case of their own, and
        // for the guest they mean the same (retry later).
        e @ (EventError::QueueFull { .. }
        | EventError::TopicQuotaExceeded { .. }
        | EventError::HostQuotaExceeded { .. }) => PublishRefused::QueueFull(e.to_string()),
        other => PublishRefused::Internal(other.to_string()),
    }
}

impl EventsCtx {
    /// This host's publisher: handles cloned from the host, for the
    /// publishes the host makes itself.
    fn publisher(&self) -> EventPublisher {
        EventPublisher::new(self.plane(), &self.inner.store, &self.inner.config)
    }

    /// Publishes `payload` on `topic`: one delivery per current subscriber.
    /// Returns once the event is durable.
    pub(crate) async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        content_type: Option<String>,
    ) -> Result<Published, EventError> {
        // The same path as a guest's publish.
        self.publisher()
            .publish_event(topic, payload, content_type)
            .await
    }

    /// Queues an invocation of `function` (`POST` to `path` with these
    /// headers and body), delivered like an event, with retries. Returns
    /// once it is durable.
    pub(crate) async fn invoke_async(
        &self,
        function: &str,
        path: String,
        headers: Vec<(String, String)>,
        payload: Bytes,
    ) -> Result<Published, EventError> {
        if self.inner.records.get(function)?.is_none() {
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
        if let Some(shared) = self.shared() {
            self.publisher().check_size(&payload)?;
            let event = EventRecord {
                id: 0,
                topic,
                time_ms: now_ms(),
                content_type,
                path: Some(path),
                headers,
                size_bytes: payload.len() as u64,
            };
            return shared
                .send_to_function(function, event, payload, None)
                .await;
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
        self.publisher().enqueue(event).await
    }

    /// Fires the schedules that are due: one event each, for the latest
    /// tick (ticks missed while the host was down collapse into one).
    pub(super) async fn fire_schedules(&self) -> Result<(), EventError> {
        let now = now_ms();
        let store = self.event_store();
        let publisher = self.publisher();
        for s in store.schedules()? {
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
            let result = publisher.enqueue(event).await;
            if let Err(e) = &result {
                tracing::warn!(id = %format_id(s.id), function = %s.function, error = %e, "a schedule tick was not enqueued");
            }
            // Recorded either way: a tick is fired (or skipped) once. Under
            // the admin lock, so a schedule deleted meanwhile stays deleted.
            let _guard = self.inner.admin_lock.lock().await;
            if store.schedules()?.iter().any(|x| x.id == s.id) {
                let fired = Schedule {
                    last_fired_ms: tick,
                    next_ms: None,
                    ..s
                };
                store.put_schedule(fired, Durability::Committed).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Host;

    /// The crash between a tick's enqueue (durable) and the write of the
    /// schedule's `last_fired_ms` (not yet flushed) is simulated by
    /// putting the schedule back as it was: the tick fires again with the
    /// same id, and the store keeps the one event and delivery.
    #[tokio::test]
    async fn a_tick_fired_again_after_a_lost_write_keeps_its_id() {
        let host = Host::builder().temporary().build().unwrap();
        let store = host.inner.events.event_store().clone();
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
        store
            .put_schedule(schedule.clone(), Durability::Committed)
            .await
            .unwrap();
        host.inner.events.fire_schedules().await.unwrap();
        let tick = store.schedules().unwrap()[0].last_fired_ms;
        assert!(tick > 0);
        let id = tick_event_id(5, tick);
        let shown = host.inner.events.event(&format_id(id)).await.unwrap();
        assert_eq!(shown.topic, "schedule:0000000000000005");
        assert_eq!(shown.deliveries.len(), 1);
        let bytes = store.event_bytes(None);

        store
            .put_schedule(schedule.clone(), Durability::Committed)
            .await
            .unwrap();
        host.inner.events.fire_schedules().await.unwrap();
        assert_eq!(store.schedules().unwrap()[0].last_fired_ms, tick);
        assert_eq!(
            host.inner
                .events
                .event(&format_id(id))
                .await
                .unwrap()
                .deliveries
                .len(),
            1
        );
        assert_eq!(store.queue_depth_total(), 1);
        assert_eq!(store.event_bytes(None), bytes);
        assert_eq!(store.due_deliveries(u64::MAX - 1, 10).unwrap().len(), 1);
    }

    /// What guests publish through: the invoker's publisher writes where
    /// the host's own publishes go, refuses what the host refuses, and is
    /// gone with the host (a guest publishing during shutdown is refused
    /// with `the host is shutting down`, see `capabilities/topics.rs`).
    #[tokio::test]
    async fn the_invokers_publisher_publishes_and_goes_with_the_host() {
        let host = Host::builder().temporary().build().unwrap();
        let weak = std::sync::Arc::downgrade(&host.inner.invoker.publisher);
        let publisher = weak.upgrade().expect("alive with the host");
        let published = publisher
            .publish("t", Bytes::from_static(b"x"), Some("text/plain".into()))
            .await
            .unwrap();
        let shown = host.inner.events.event(&published).await.unwrap();
        assert_eq!(shown.topic, "t");
        assert_eq!(shown.content_type.as_deref(), Some("text/plain"));
        let next = host
            .inner
            .events
            .publish("t", Bytes::from_static(b"y"), None)
            .await
            .unwrap();
        assert!(next.id > published, "{next:?} after {published:?}");

        let e = publisher
            .publish("no spaces", Bytes::from_static(b"x"), None)
            .await
            .unwrap_err();
        assert!(matches!(e, PublishRefused::InvalidTopic(_)), "{e:?}");
        let limit = host.config().event_max_payload_bytes;
        let big = Bytes::from(vec![0u8; limit as usize + 1]);
        let e = publisher.publish("t", big, None).await.unwrap_err();
        assert!(
            matches!(e, PublishRefused::PayloadTooLarge(l) if l == limit),
            "{e:?}"
        );

        drop(publisher);
        drop(host);
        assert!(weak.upgrade().is_none(), "the publisher outlived the host");
    }

    /// A content type past the cap is refused before anything is stored,
    /// on every path that takes one.
    #[tokio::test]
    async fn content_types_past_the_cap_are_refused() {
        let host = Host::builder().temporary().build().unwrap();
        let long = "x".repeat(crate::events::MAX_CONTENT_TYPE_BYTES + 1);
        let e = host
            .inner
            .events
            .publish("t", Bytes::from_static(b"x"), Some(long.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, EventError::InvalidArgument(m) if m.contains("255")),
            "{e}"
        );
        let e = host
            .inner
            .events
            .publish("t", Bytes::from_static(b"x"), Some("a\nb".into()))
            .await
            .unwrap_err();
        assert!(matches!(e, EventError::InvalidArgument(_)));
        let ok = "x".repeat(crate::events::MAX_CONTENT_TYPE_BYTES);
        host.inner
            .events
            .publish("t", Bytes::from_static(b"x"), Some(ok))
            .await
            .unwrap();
        assert_eq!(host.inner.events.event_store().event_bytes(None), 0);
    }

    /// What a guest's `publish` gets for each refusal: the quotas are
    /// `queue-full` (retry later), a refused content type `invalid-topic`
    /// (the WIT's case for a refused argument), each with the host's
    /// message.
    #[test]
    fn refusals_map_to_the_wit_errors() {
        use crate::capabilities::bindings::wisp::function::topics as wit;
        use crate::capabilities::topics::into_guest;

        let e = into_guest(
            refusal(EventError::TopicQuotaExceeded {
                topic: "t".into(),
                held: 10,
                size: 5,
                limit: 12,
            }),
            "f",
            "t",
        );
        assert!(
            matches!(&e, wit::PublishError::QueueFull(m) if m.contains("--event-topic-quota")),
            "{e:?}"
        );
        let e = into_guest(
            refusal(EventError::HostQuotaExceeded {
                held: 10,
                size: 5,
                limit: 12,
            }),
            "f",
            "t",
        );
        assert!(
            matches!(&e, wit::PublishError::QueueFull(m) if m.contains("--event-host-quota")),
            "{e:?}"
        );
        let e = into_guest(
            refusal(EventError::InvalidArgument(
                "the content type is 300 bytes long".into(),
            )),
            "f",
            "t",
        );
        assert!(
            matches!(&e, wit::PublishError::InvalidTopic(m) if m.contains("content type")),
            "{e:?}"
        );
    }
}
