//! Events: receiving them with [`#[event_handler]`](crate::event_handler)
//! and publishing them with [`publish`].
//!
//! A function gets events from the topics it subscribes to
//! (`wisp subscribe NAME TOPIC`), from its asynchronous invocations
//! (`wisp invoke NAME --async`), from its schedules and from its batch
//! jobs' tasks. With an event handler it receives each one as an [`Event`];
//! returning `Err` (or panicking, or running past the deadline) makes the
//! host retry it with backoff, then put it in the dead-letter list.
//!
//! ```no_run
//! use wisp_sdk::events::{self, Event};
//!
//! #[wisp_sdk::event_handler]
//! fn on_event(event: Event) -> Result<(), wisp_sdk::Error> {
//!     let order: serde_json::Value = event.json()?;
//!     wisp_sdk::kv::set_json(&format!("order:{}", event.id), &order)?;
//!     events::publish("orders.recorded", event.id.as_bytes())?;
//!     Ok(())
//! }
//! ```
//!
//! Outside a Wisp host (`cargo test`), [`publish`] records what it would
//! publish; [`testing::published`](crate::testing::published) returns it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StatusCode;

#[cfg(target_arch = "wasm32")]
use crate::bindings::wisp::function::topics as sys;
#[cfg(not(target_arch = "wasm32"))]
use crate::native::topics as sys;

/// One event, as the host delivers it to an event handler.
///
/// Delivery is at least once: the same event (same [`id`](Event::id)) can
/// arrive again, with a higher [`attempt`](Event::attempt), so a handler
/// should be idempotent (key-value writes keyed by the event id are).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// The event's id, the same on every attempt.
    pub id: String,
    /// The topic it was published on: a topic name, `invoke:NAME` (an
    /// asynchronous invocation), `schedule:ID` (a schedule's tick) or
    /// `job:ID` (a batch job's task).
    pub topic: String,
    /// When it was published, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The publisher's content type, if it gave one.
    pub content_type: Option<String>,
    /// The payload, as published.
    pub payload: Vec<u8>,
    /// 1 on the first attempt, then 2, 3...
    pub attempt: u32,
    /// Set when the event is a batch job's task.
    pub job: Option<JobTask>,
}

/// The task of a batch job an event runs (`wisp job run NAME --array ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobTask {
    /// The job's id (`wisp job status ID`).
    pub id: String,
    /// This task's index in the job's array.
    pub index: u32,
    /// How many indices the job's array has.
    pub array_size: u32,
}

impl Event {
    /// An event with this topic and payload, attempt 1, published now: for
    /// calling a handler in native tests.
    ///
    /// ```
    /// let event = wisp_sdk::events::Event::new("orders", br#"{"id":1}"#.to_vec());
    /// assert_eq!(event.attempt, 1);
    /// assert_eq!(event.text().unwrap(), r#"{"id":1}"#);
    /// ```
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Event {
        Event {
            id: "0".into(),
            topic: topic.into(),
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default(),
            content_type: None,
            payload: payload.into(),
            attempt: 1,
            job: None,
        }
    }

    /// The same event as a batch job's task `index` of `array_size` (native
    /// tests).
    pub fn with_job(mut self, index: u32, array_size: u32) -> Event {
        self.job = Some(JobTask {
            id: "0".into(),
            index,
            array_size,
        });
        self
    }

    /// The payload as UTF-8 text; a `400`-style [`Error`](crate::Error) if
    /// it is not.
    pub fn text(&self) -> Result<&str, crate::Error> {
        std::str::from_utf8(&self.payload).map_err(|e| {
            crate::Error::new(
                StatusCode::BAD_REQUEST,
                format!("the event payload is not UTF-8: {e}"),
            )
        })
    }

    /// The payload parsed as JSON into `T`; a `400`-style
    /// [`Error`](crate::Error) saying what did not parse.
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// struct Order { id: u32 }
    ///
    /// let event = wisp_sdk::events::Event::new("orders", br#"{"id":7}"#.to_vec());
    /// assert_eq!(event.json::<Order>().unwrap().id, 7);
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, crate::Error> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            crate::Error::new(
                StatusCode::BAD_REQUEST,
                format!("the event payload is not the expected JSON: {e}"),
            )
        })
    }

    /// When the event was published.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.time_ms)
    }
}

/// Why [`publish`] failed; nothing was published. Converts into a
/// [`wisp_sdk::Error`](crate::Error) with a fitting status, so `?` works in
/// handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic name is not valid (`a-z`, `0-9`, `-`, `.`, `_`; 1 to 63
    /// characters); the message says why.
    InvalidTopic(String),
    /// The payload is larger than the host's limit, in bytes.
    PayloadTooLarge(u64),
    /// A subscriber's queue on this topic is full; try again later.
    QueueFull(String),
    /// The payload could not be serialized ([`publish_json`]).
    Json(String),
    /// The host's store failed; the details are in the host's log.
    Internal(String),
}

impl PublishError {
    /// The HTTP status a handler answers with when it returns this error.
    pub fn status(&self) -> StatusCode {
        match self {
            PublishError::InvalidTopic(_) | PublishError::Json(_) => StatusCode::BAD_REQUEST,
            PublishError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            PublishError::QueueFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            PublishError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::InvalidTopic(m) | PublishError::QueueFull(m) => f.write_str(m),
            PublishError::PayloadTooLarge(limit) => {
                write!(
                    f,
                    "the event payload is larger than the limit of {limit} bytes"
                )
            }
            PublishError::Json(m) => write!(f, "the event payload cannot be serialized: {m}"),
            PublishError::Internal(m) => write!(f, "publishing failed: {m}"),
        }
    }
}

impl std::error::Error for PublishError {}

impl From<PublishError> for crate::Error {
    fn from(e: PublishError) -> Self {
        crate::Error::new(e.status(), e.to_string()).with_code("publish_failed")
    }
}

#[cfg(target_arch = "wasm32")]
impl From<sys::PublishError> for PublishError {
    fn from(e: sys::PublishError) -> Self {
        match e {
            sys::PublishError::InvalidTopic(m) => PublishError::InvalidTopic(m),
            sys::PublishError::PayloadTooLarge(n) => PublishError::PayloadTooLarge(n),
            sys::PublishError::QueueFull(m) => PublishError::QueueFull(m),
            sys::PublishError::Internal(m) => PublishError::Internal(m),
        }
    }
}

/// Publishes `payload` on `topic`: every function subscribed to the topic
/// gets it. Returns the event's id once the event is durable on the host.
///
/// ```no_run
/// let id = wisp_sdk::events::publish("orders", b"order 42")?;
/// # Ok::<(), wisp_sdk::events::PublishError>(())
/// ```
// `?` converts the host's error type on wasm32 (natively it is the same type).
#[allow(clippy::needless_question_mark)]
pub fn publish(topic: &str, payload: impl AsRef<[u8]>) -> Result<String, PublishError> {
    Ok(sys::publish(topic, payload.as_ref(), None)?)
}

/// Publishes `value` as JSON (content type `application/json`) on `topic`.
///
/// ```no_run
/// #[derive(serde::Serialize)]
/// struct Order { id: u32, total_cents: u64 }
///
/// wisp_sdk::events::publish_json("orders", &Order { id: 42, total_cents: 1999 })?;
/// # Ok::<(), wisp_sdk::events::PublishError>(())
/// ```
#[allow(clippy::needless_question_mark)]
pub fn publish_json<T: Serialize + ?Sized>(topic: &str, value: &T) -> Result<String, PublishError> {
    let payload = serde_json::to_vec(value).map_err(|e| PublishError::Json(e.to_string()))?;
    Ok(sys::publish(topic, &payload, Some("application/json"))?)
}

/// What an event handler may return: `Result<(), E>` with an error that
/// can be shown, or nothing. An `Err` fails this attempt (the host retries
/// it); its text is kept in the function's log.
pub trait EventOutcome {
    /// `Ok` if the event was handled, else why not.
    fn into_outcome(self) -> Result<(), String>;
}

impl EventOutcome for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> EventOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_helpers() {
        let event = Event::new("orders", b"{\"n\":1}".to_vec()).with_job(3, 10);
        assert_eq!(event.text().unwrap(), "{\"n\":1}");
        let v: serde_json::Value = event.json().unwrap();
        assert_eq!(v["n"], 1);
        assert_eq!(event.job.as_ref().unwrap().index, 3);
        let bad = Event::new("orders", vec![0xff]);
        assert_eq!(bad.text().unwrap_err().status(), 400);
        assert_eq!(bad.json::<serde_json::Value>().unwrap_err().status(), 400);
    }

    #[test]
    fn outcomes() {
        assert_eq!(().into_outcome(), Ok(()));
        assert_eq!(Ok::<(), &str>(()).into_outcome(), Ok(()));
        assert_eq!(Err::<(), _>("nope").into_outcome(), Err("nope".to_string()));
    }

    #[test]
    fn native_publish_is_recorded() {
        crate::testing::reset();
        let id = publish("orders", "one").unwrap();
        publish_json("orders", &serde_json::json!({"n": 2})).unwrap();
        assert_eq!(
            publish("Bad Topic", "x"),
            Err(PublishError::InvalidTopic(
                "topic name \"Bad Topic\" may only contain a-z, 0-9, '-', '.' and '_' (found 'B')"
                    .into()
            ))
        );
        let published = crate::testing::published();
        assert_eq!(published.len(), 2);
        assert_eq!(published[0].0, "orders");
        assert_eq!(published[0].1, b"one");
        assert_eq!(published[1].1, br#"{"n":2}"#);
        assert_ne!(id, "");
        let e: crate::Error = PublishError::QueueFull("full".into()).into();
        assert_eq!(e.status(), 503);
    }
}
