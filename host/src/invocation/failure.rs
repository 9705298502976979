//! How an invocation can fail, and the one table that turns each failure
//! into the status, code and message a client gets (the same status is
//! counted in the metrics of an event delivery that never answers HTTP).

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};

use super::admission::Refusal;
use super::limits::{DeadlineExceeded, MemoryLimitExceeded};
use super::target::Deployed;
use crate::error::ApiError;

/// How an invocation failed.
#[derive(Clone)]
pub(crate) enum Failure {
    /// The deadline passed (also inside a tight loop).
    Timeout,
    /// The guest grew its memories and tables past its cap.
    Memory(String),
    /// The request body is over the function's limit.
    BodyTooLarge,
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access).
    Trap(String),
    /// The guest returned without setting a response.
    NoResponse,
    /// The guest answered with a `wasi:http` error code.
    GuestError(String),
    /// No instance free in the engine's pool (503).
    Overloaded,
    /// No invocation slot free host-wide, nor (in time) a place in the
    /// host's queue (503).
    HostBusy(Refusal),
    /// The function runs its whole concurrency (by default its share of
    /// the host's invocation slots), and its queue is full or the wait
    /// ended (429): other functions still have their slots.
    FunctionBusy(Refusal),
    /// The function exports only the event handler.
    NoHttpHandler,
}

/// Marks a response the host gave because no invocation slot was free (its
/// own 503 `overloaded` or 429 `function_busy`), not the function's answer:
/// an event delivery that gets it is postponed, not failed. A response
/// extension, so no guest can forge it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NoSlot;

/// Why an event handler's invocation did not succeed.
pub(crate) enum HandlerFailure {
    /// No invocation slot was free: the handler never ran.
    NoSlot,
    /// It ran and failed: the handler's error, a trap, the deadline...
    Failed(String),
}

impl Failure {
    /// The status and code this failure is answered (and counted) with: the
    /// one table.
    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Failure::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Failure::Memory(_) => (StatusCode::INTERNAL_SERVER_ERROR, "memory_limit"),
            Failure::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Failure::Trap(_) => (StatusCode::INTERNAL_SERVER_ERROR, "trap"),
            Failure::NoResponse => (StatusCode::BAD_GATEWAY, "bad_response"),
            Failure::GuestError(_) => (StatusCode::INTERNAL_SERVER_ERROR, "function_error"),
            Failure::Overloaded | Failure::HostBusy(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
            }
            Failure::FunctionBusy(_) => (StatusCode::TOO_MANY_REQUESTS, "function_busy"),
            Failure::NoHttpHandler => (StatusCode::NOT_IMPLEMENTED, "no_http_handler"),
        }
    }

    /// The HTTP status this failure is answered (and counted) with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    /// Whether the function never ran for want of an invocation slot.
    pub(crate) fn is_no_slot(&self) -> bool {
        matches!(
            self,
            Failure::Overloaded | Failure::HostBusy(_) | Failure::FunctionBusy(_)
        )
    }

    /// What happened, for the function's log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Failure::Timeout => "the deadline passed".into(),
            Failure::Memory(d) | Failure::Trap(d) | Failure::GuestError(d) => d.clone(),
            Failure::BodyTooLarge => "the request body is over the limit".into(),
            Failure::NoResponse => "returned without sending a response".into(),
            Failure::Overloaded => "too many invocations in flight".into(),
            Failure::HostBusy(refusal) => host_busy(refusal),
            Failure::FunctionBusy(refusal) => {
                format!("the function {}", function_busy(refusal, None))
            }
            Failure::NoHttpHandler => "the function has no HTTP handler".into(),
        }
    }

    /// The response a client gets: the table's status and code, a message
    /// for people, the invocation id. Details that may hold guest-chosen
    /// text go to the host log, clipped and escaped, under that id.
    pub(crate) fn response(self, target: &Deployed, id: &str) -> Response<Body> {
        let (status, code) = self.status_and_code();
        let limits = &target.limits;
        let message = match self {
            Failure::Timeout => format!(
                "the function did not finish within its timeout of {} ms",
                limits.timeout_ms
            ),
            Failure::Memory(detail) => {
                tracing::warn!(invocation_id = id, function = %target.name, "{detail}");
                format!(
                    "the function exceeded its memory limit of {} bytes",
                    limits.memory_bytes
                )
            }
            Failure::BodyTooLarge => format!(
                "the request body is larger than the function's limit of {} bytes",
                limits.max_body_bytes
            ),
            Failure::Trap(detail) => {
                // A backtrace names the guest's own functions: guest-chosen.
                let detail = crate::untrusted::clip(&detail);
                tracing::warn!(invocation_id = id, function = %target.name, error = %detail, "guest trapped");
                "the function failed (trap); see the host log for this invocation id".into()
            }
            Failure::NoResponse => "the function returned without sending a response".into(),
            Failure::GuestError(detail) => {
                // The guest's own error code, with its message.
                let detail = crate::untrusted::clip(&detail);
                tracing::warn!(invocation_id = id, function = %target.name, error = %detail, "guest answered an error");
                format!("the function reported an error: {detail}")
            }
            Failure::NoHttpHandler => format!(
                "function {:?} exports only wisp:function/event-handler: it handles events, not \
                 HTTP requests (publish to a topic it subscribes to, or invoke it with --async)",
                target.name
            ),
            Failure::Overloaded => "too many invocations in flight; retry shortly".into(),
            Failure::HostBusy(refusal) => format!("{}; retry shortly", host_busy(&refusal)),
            Failure::FunctionBusy(refusal) => format!(
                "function {:?} {}; retry shortly",
                target.name,
                function_busy(&refusal, Some(limits))
            ),
        };
        let mut error = ApiError::new(status, code, message).invocation(id);
        let no_slot = matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        );
        if no_slot {
            error = error.retry_after(1);
        }
        let mut resp = axum::response::IntoResponse::into_response(error);
        if no_slot {
            resp.extensions_mut().insert(NoSlot);
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is not read: the client must not send its
            // next request on this connection.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// Which bound a function's refusal hit, after "function NAME": its
/// concurrency (named as the host's share when `limits` says the function
/// sets none), its queue, or its queue timeout.
fn function_busy(refusal: &Refusal, limits: Option<&crate::config::Limits>) -> String {
    let own = limits.is_none_or(|l| l.concurrency.is_some());
    match *refusal {
        Refusal::Full { slots } if own => {
            format!("has {slots} invocations in flight, its concurrency, and no queue")
        }
        Refusal::Full { slots } => {
            format!("has {slots} invocations in flight, its share of the host's")
        }
        Refusal::QueueFull { slots, queue } => format!(
            "has {slots} invocations in flight (its concurrency) and its queue of {queue} is full"
        ),
        Refusal::TimedOut { slots, timeout_ms } => format!(
            "had {slots} invocations in flight (its concurrency) for its whole queue timeout of \
             {timeout_ms} ms"
        ),
    }
}

/// Which bound the host's refusal hit: its in-flight bound, its queue, or
/// its queue timeout.
fn host_busy(refusal: &Refusal) -> String {
    match *refusal {
        Refusal::Full { .. } => "too many invocations in flight".into(),
        Refusal::QueueFull { slots, queue } => format!(
            "too many invocations in flight: the host has {slots} (its --max-in-flight) and its \
             queue of {queue} is full"
        ),
        Refusal::TimedOut { slots, timeout_ms } => format!(
            "too many invocations in flight: the host had {slots} (its --max-in-flight) for its \
             whole queue timeout of {timeout_ms} ms"
        ),
    }
}

/// What a wasmtime error from instantiating or calling a guest means.
pub(crate) fn classify(e: wasmtime::Error) -> Failure {
    if e.downcast_ref::<DeadlineExceeded>().is_some()
        || matches!(
            e.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        )
    {
        return Failure::Timeout;
    }
    if let Some(m) = e.downcast_ref::<MemoryLimitExceeded>() {
        return Failure::Memory(m.to_string());
    }
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return Failure::Overloaded;
    }
    Failure::Trap(format!("{e:?}"))
}
