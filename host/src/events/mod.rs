//! The event plane: topics, subscriptions, asynchronous invocation, retries
//! and dead letters.
//!
//! - This module: the records and the pure logic (names, retry delays),
//!   with no store, socket or wasm in it.
//! - `store`: the trees, key encodings and the writes that keep them
//!   consistent (on the typed layer of [`crate::store`]).
//! - `plane`: the plane's errors, API types and per-host state; `publish`,
//!   `batcher` (group commit), `manage` (what the control plane manages),
//!   `dispatcher`, `delivery` and `sweeps`; `job` and `schedule`.
//!
//! Semantics: at least once. A delivery is marked done only after the
//! handler answered 2xx; anything else is retried with exponential backoff
//! and jitter until the subscription's attempts are used up or the event is
//! older than its maximum age; then the delivery is dead (kept per
//! subscription until redriven, purged, or its retention ends). An attempt
//! the host could not start (no invocation slot free) is postponed: it uses
//! up no attempt and its wait does not count toward the maximum age.
//!
//! Storage is bounded: an event counts against its topic's quota and the
//! host's ([`EventRecord::charge`] bytes) while any of its deliveries is
//! pending, running, retrying or dead; past either a publish is refused.

use serde::{Deserialize, Serialize};

mod api;
mod batcher;
#[cfg(feature = "cluster")]
mod cluster;
#[cfg(not(feature = "cluster"))]
#[path = "cluster_off.rs"]
mod cluster;
mod delivery;
mod dispatcher;
pub(crate) mod job;
mod manage;
pub(crate) mod plane;
mod publish;
pub(crate) mod schedule;
pub(crate) mod store;
mod sweeps;

pub use api::{Events, Jobs};
pub(crate) use cluster::SharedEvents;
pub use job::{JobCounts, JobInfo, JobRecord, JobState, JobTask, NewJob, parse_array};
pub use plane::{
    EventError, EventInfo, NewSchedule, NewSubscription, Published, Purged, RedriveRequest,
    Redriven,
};
pub(crate) use publish::EventPublisher;
pub use schedule::Schedule;

// Defined beside the host config (which holds the defaults) so that
// config needs nothing of the event plane; named here as before.
pub use crate::config::RetryPolicy;

/// Prefix of the implicit topic of a function's asynchronous invocations
/// (`invoke:NAME`); `:` never appears in a topic name, so it cannot clash.
pub const INVOKE_TOPIC_PREFIX: &str = "invoke:";

/// Prefix of a schedule's implicit topic (`schedule:ID`).
pub const SCHEDULE_TOPIC_PREFIX: &str = "schedule:";

/// The implicit topic of `name`'s asynchronous invocations.
pub fn invoke_topic(function: &str) -> String {
    format!("{INVOKE_TOPIC_PREFIX}{function}")
}

/// Longest content type a publisher (admin API, guest, schedule, job) may
/// give, in bytes: far more than any real media type needs (the longest
/// registered ones are under 130), and short enough that stored events
/// and delivery headers stay small whatever a guest passes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;

/// Checks a publisher's content type: at most [`MAX_CONTENT_TYPE_BYTES`],
/// printable ASCII (what an HTTP header value may carry, so a `POST`
/// delivery passes it on unchanged).
pub fn validate_content_type(content_type: &str) -> Result<(), String> {
    if content_type.len() > MAX_CONTENT_TYPE_BYTES {
        return Err(format!(
            "the content type is {} bytes long; the limit is {MAX_CONTENT_TYPE_BYTES}",
            content_type.len()
        ));
    }
    if let Some(c) = content_type
        .chars()
        .find(|c| !matches!(c, ' '..='~' | '\t'))
    {
        return Err(format!(
            "the content type may only contain printable ASCII (found {c:?})"
        ));
    }
    Ok(())
}

/// Checks a topic name: `[a-z0-9._-]`, 1 to 63 characters. The rule is
/// shared with the SDK: [`wisp_rules::validate_topic`].
pub fn validate_topic(topic: &str) -> Result<(), String> {
    wisp_rules::validate_topic(topic).map_err(|e| e.to_string())
}

/// A subscription: `function` gets every event published on `topic` after
/// it subscribed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subscription {
    /// The topic.
    pub topic: String,
    /// The subscribed function.
    pub function: String,
    /// Path of the `POST` each event is delivered as (default `/`), for a
    /// function without an event handler.
    pub path: String,
    /// Deliveries of this subscription running at once.
    pub concurrency: u32,
    /// Retries.
    pub retry: RetryPolicy,
    /// When it was created, ms since the epoch.
    pub created_at_ms: u64,
}

/// Status of one delivery (one event to one subscription).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its due time (first attempt or a retry).
    Pending,
    /// Being delivered now (after a crash: pending again on start).
    Running,
    /// The handler answered 2xx.
    Done,
    /// Out of attempts (or too old): in the subscription's dead-letter list.
    Dead,
    /// The subscription was removed before the delivery ran.
    Cancelled,
}

/// A stored event (its payload is stored beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Unique, increasing.
    pub id: u64,
    /// The topic it was published on.
    pub topic: String,
    /// When it was published, ms since the epoch.
    pub time_ms: u64,
    /// The publisher's `content-type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// For an asynchronous invocation: the path and query the function sees
    /// (instead of the subscription's path) and the request's headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Extra request headers (asynchronous invocations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Payload size in bytes.
    pub size_bytes: u64,
}

/// Bytes an event is counted for beside its payload and the strings it
/// carries (its id, times, sizes and the record's encoding): so that a
/// flood of empty events is bounded by the storage quotas too.
pub const EVENT_OVERHEAD_BYTES: u64 = 64;

impl EventRecord {
    /// What the event counts against the storage quotas while a delivery
    /// of it is pending, running, retrying or dead: the payload as stored
    /// (`stored_payload`: a job's tasks store none, the job holds it once),
    /// the topic, content type, path and headers, and
    /// [`EVENT_OVERHEAD_BYTES`]. Computed the same way at publish, when the
    /// event is finished and when the store is opened, so the counts add up.
    pub fn charge(&self, stored_payload: u64) -> u64 {
        let strings = self.topic.len()
            + self.content_type.as_ref().map_or(0, String::len)
            + self.path.as_ref().map_or(0, String::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        stored_payload + strings as u64 + EVENT_OVERHEAD_BYTES
    }
}

/// Attempt start times kept per delivery (the most recent ones).
pub const KEPT_ATTEMPT_TIMES: usize = 20;

/// One event's delivery to one subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryRecord {
    /// The event.
    #[schema(value_type = String)]
    #[serde(with = "id_string")]
    pub event_id: u64,
    /// The subscription's topic.
    pub topic: String,
    /// The subscription's function.
    pub function: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts finished so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it is (or was) due, ms since the epoch.
    pub due_ms: u64,
    /// Sequence number of its entry in the due index.
    #[serde(default)]
    pub due_seq: u64,
    /// Start times of the latest attempts, ms since the epoch.
    #[serde(default)]
    pub attempt_times_ms: Vec<u64>,
    /// Milliseconds it waited, in all, because the host was saturated (no
    /// invocation slot free): such waits use up no attempt and are not
    /// counted toward the subscription's maximum age.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub postponed_ms: u64,
    /// Last change, ms since the epoch.
    pub updated_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How a finished attempt changes a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Succeeded: done.
    Done,
    /// Failed; retried at this time (ms since the epoch).
    Retry(u64),
    /// Not run: the host was saturated (no invocation slot free). Due again
    /// at this time, with no attempt used up.
    Postponed(u64),
    /// Failed for good: dead.
    Dead,
    /// The subscription is gone.
    Cancelled,
}

/// Event ids on the wire: 16 hex digits (sortable as text).
pub fn format_id(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses an event id as [`format_id`] writes it.
pub fn parse_id(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

mod id_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_id(*id))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_id(&s).ok_or_else(|| serde::de::Error::custom("bad event id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["a", "orders", "orders.created", "a-b_c.d", &"x".repeat(63)] {
            assert!(validate_topic(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Orders", "a b", "a/b", "invoke:x", &"x".repeat(64), "é"] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
        assert!(validate_topic(&invoke_topic("f")).is_err());
    }

    #[test]
    fn content_types_are_capped_and_printable() {
        assert!(validate_content_type("application/json; charset=utf-8").is_ok());
        assert!(validate_content_type(&"x".repeat(MAX_CONTENT_TYPE_BYTES)).is_ok());
        let e = validate_content_type(&"x".repeat(MAX_CONTENT_TYPE_BYTES + 1)).unwrap_err();
        assert!(e.contains("256 bytes") && e.contains("255"), "{e}");
        for bad in ["text/plain\r\nx-evil: 1", "a\u{7f}", "é", "\0"] {
            let e = validate_content_type(bad).unwrap_err();
            assert!(e.contains("printable ASCII"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn an_event_is_charged_its_payload_and_strings() {
        let mut e = EventRecord {
            id: 1,
            topic: "orders".into(),
            time_ms: 0,
            content_type: None,
            path: None,
            headers: Vec::new(),
            size_bytes: 1000,
        };
        // The stored payload counts, not the declared size (a job's tasks
        // store none).
        assert_eq!(e.charge(0), 6 + EVENT_OVERHEAD_BYTES);
        assert_eq!(e.charge(1000), 1006 + EVENT_OVERHEAD_BYTES);
        e.content_type = Some("text/plain".into());
        e.path = Some("/x".into());
        e.headers = vec![("a".into(), "bc".into())];
        assert_eq!(e.charge(0), 6 + 10 + 2 + 3 + EVENT_OVERHEAD_BYTES);
    }

    #[test]
    fn ids_round_trip() {
        assert_eq!(format_id(255), "00000000000000ff");
        assert_eq!(parse_id("00000000000000ff"), Some(255));
        assert_eq!(parse_id("zz"), None);
        assert_eq!(parse_id(""), None);
        assert_eq!(parse_id("00000000000000000"), None);
    }
}
