//! Running one claimed delivery: a call of the function's event handler,
//! or a `POST` to it, and what follows from the answer (done, a retry with
//! backoff, postponed, dead).

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, header};
use bytes::Bytes;
use http_body_util::BodyExt as _;

use super::plane::EventsCtx;
use super::plane::now_ms;
use super::store::{DeliveryKey, Finish};
use super::{DeliveryRecord, EventRecord, Outcome, Subscription, format_id};
use crate::capabilities::event_bindings::exports::wisp::function::event_handler::{
    Event as HandlerEvent, JobTask,
};
use crate::function::prepare::{ComponentPre, Prepared};
use crate::invocation::{HandlerFailure, NoSlot};

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

/// Runs one claimed delivery; returns its outcome to record and the
/// result it counts as (an index into [`EventPlane::results`](super::plane::EventPlane)).
pub(super) async fn run_delivery(
    host: &EventsCtx,
    key: DeliveryKey,
    rec: DeliveryRecord,
    sub: Option<Subscription>,
) -> (Finish, Option<usize>) {
    let store = host.event_store();
    let due = rec.due_key();
    let finish = |outcome: Outcome, error: Option<&str>, charge: Option<u64>| Finish {
        key: key.clone(),
        due,
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
            Ok(Some(p)) => payload = p,
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
pub(super) enum AttemptError {
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
pub(super) async fn attempt_delivery(
    host: &EventsCtx,
    sub: &Subscription,
    event: &EventRecord,
    payload: Bytes,
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
        .body(Body::from(payload))
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
fn event_for_handler(event: &EventRecord, payload: Bytes, attempt: u32) -> HandlerEvent {
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
