//! How an invocation can fail, and the one table that turns each failure
//! into the status, code and message a client gets (the same status is
//! counted in the metrics of an event delivery that never answers HTTP).

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};

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
    /// No invocation slot free host-wide (503).
    Overloaded,
    /// The function holds its whole share of the host's invocation slots
    /// (429): other functions still have theirs.
    FunctionBusy {
        /// The share: invocations one function may have in flight.
        share: u32,
    },
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
            Failure::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Failure::FunctionBusy { .. } => (StatusCode::TOO_MANY_REQUESTS, "function_busy"),
            Failure::NoHttpHandler => (StatusCode::NOT_IMPLEMENTED, "no_http_handler"),
        }
    }

    /// The HTTP status this failure is answered (and counted) with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    /// Whether the function never ran for want of an invocation slot.
    pub(crate) fn is_no_slot(&self) -> bool {
        matches!(self, Failure::Overloaded | Failure::FunctionBusy { .. })
    }

    /// What happened, for the function's log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Failure::Timeout => "the deadline passed".into(),
            Failure::Memory(d) | Failure::Trap(d) | Failure::GuestError(d) => d.clone(),
            Failure::BodyTooLarge => "the request body is over the limit".into(),
            Failure::NoResponse => "returned without sending a response".into(),
            Failure::Overloaded => "too many invocations in flight".into(),
            Failure::FunctionBusy { .. } => {
                "the function has its share of the host's invocations in flight".into()
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
            Failure::FunctionBusy { share } => format!(
                "function {:?} has {share} invocations in flight, its share of the host's; retry \
                 shortly",
                target.name
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
