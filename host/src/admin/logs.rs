//! A function's log: its lines (stdout, stderr, log calls, host notes),
//! read page by page or followed live.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::extract::{ApiPath, ApiQuery};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Host;
use crate::capabilities::logs::{Following, LogPage, LogQuery, StoredLines};
use crate::error::{ApiError, ErrorBody};

/// The routes, each with its documentation (one `routes!` per path).
pub(super) fn routes() -> OpenApiRouter<Host> {
    OpenApiRouter::new()
        .routes(routes!(function_logs))
        .routes(routes!(stream_logs))
}

#[utoipa::path(get, path = "/v1/functions/{name}/logs",
    params(("name" = String, Path), LogQuery),
    responses(
        (status = 200, body = LogPage, description = "The function's log lines (stdout, stderr, log calls, host notes), oldest first"),
        (status = 400, body = ErrorBody, description = "invalid_argument (since, limit)"),
        (status = 404, body = ErrorBody),
    ))]
pub(super) async fn function_logs(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    Ok(Json(host.logs(&name).read(query).await?))
}

/// What to follow of a function's log.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct StreamQuery {
    /// Only lines of this invocation.
    invocation: Option<String>,
}

/// How often a stream with nothing to say sends a comment, so that
/// proxies and clients do not take it for dead.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Follows a function's log: every line stored on this host from now on,
/// as it is stored (the log writer hands each batch on once stored, well
/// within a second). Lines that other hosts of a cluster store are not
/// streamed here (each host streams its own; `GET .../logs` reads them
/// all). A stream that falls behind by more than the writer keeps for the
/// streams gets `lagged` with how many batches (each one invocation's
/// lines) it missed, and goes on.
#[utoipa::path(get, path = "/v1/functions/{name}/logs/stream",
    params(("name" = String, Path), StreamQuery),
    responses(
        (status = 200, content_type = "text/event-stream", body = String, description = "Server-sent events: `line` (data: a LogEntry as JSON) for each line stored from now on; `lagged` (data: `{\"missed\": N}`, batches missed by a client too slow); a `: keep-alive` comment every 15 s"),
        (status = 404, body = ErrorBody, description = "function_not_found"),
        (status = 503, body = ErrorBody, description = "unavailable: 64 streams are open on this host"),
    ))]
pub(super) async fn stream_logs(
    State(host): State<Host>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let following = host.logs(&name).follow()?;
    let stream = live_lines(following, name, query.invocation);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

/// The events of one function's lines (of one invocation, if given), until
/// the host shuts down. The stream owns its place among the host's
/// streams: dropped (the client went away), it frees it.
fn live_lines(
    following: Following,
    function: String,
    invocation: Option<String>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let state = (following, Arc::<str>::from(function), invocation);
    let batches = futures::stream::unfold(state, |(mut f, function, invocation)| async move {
        loop {
            let received = tokio::select! {
                () = f.closing.cancelled() => return None,
                received = f.lines.recv() => received,
            };
            let events = match received {
                Ok(batch) => line_events(&batch, &function, invocation.as_deref()),
                Err(RecvError::Lagged(missed)) => vec![
                    Event::default()
                        .event("lagged")
                        .data(format!("{{\"missed\":{missed}}}")),
                ],
                Err(RecvError::Closed) => return None,
            };
            if !events.is_empty() {
                return Some((events, (f, function, invocation)));
            }
        }
    });
    futures::StreamExt::flat_map(batches, |events| {
        futures::stream::iter(events.into_iter().map(Ok))
    })
}

/// The `line` events of a stored batch that `function`'s stream shows.
fn line_events(batch: &StoredLines, function: &str, invocation: Option<&str>) -> Vec<Event> {
    if &*batch.function != function {
        return Vec::new();
    }
    batch
        .entries
        .iter()
        .filter(|e| invocation.is_none_or(|id| e.invocation_id == id))
        .filter_map(|e| match serde_json::to_string(e) {
            Ok(json) => Some(Event::default().event("line").data(json)),
            Err(err) => {
                tracing::error!(error = %err, "a log line did not serialise");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::response::IntoResponse;
    use http_body_util::BodyExt as _;
    use tokio::sync::broadcast;

    use super::*;
    use crate::capabilities::logs::{LogEntry, LogStream};

    fn batch(function: &str, invocation: &str, message: &str) -> Arc<StoredLines> {
        Arc::new(StoredLines {
            function: function.into(),
            entries: vec![LogEntry {
                seq: 7,
                time_ms: 1,
                invocation_id: invocation.into(),
                stream: LogStream::Stdout,
                level: None,
                message: message.into(),
                node: None,
            }],
        })
    }

    /// The next event of a stream's body, as sent.
    async fn next(body: &mut Body) -> Option<String> {
        let frame = body.frame().await?.expect("no error");
        Some(String::from_utf8(frame.into_data().expect("data").to_vec()).expect("UTF-8"))
    }

    #[tokio::test]
    async fn a_stream_keeps_its_lines_and_says_how_many_batches_it_missed() {
        let (tx, rx) = broadcast::channel(2);
        let following = Following::of(rx);
        let closing = following.closing.clone();
        let stream = live_lines(following, "f".into(), Some("a".into()));
        let mut body = Sse::new(stream).into_response().into_body();
        // Three batches for a stream that keeps two: the first is missed.
        tx.send(batch("f", "a", "missed")).unwrap();
        tx.send(batch("g", "a", "another function's")).unwrap();
        tx.send(batch("f", "b", "another invocation's")).unwrap();
        tx.send(batch("f", "a", "mine")).unwrap();
        assert_eq!(
            next(&mut body).await.unwrap(),
            "event: lagged\ndata: {\"missed\":2}\n\n"
        );
        let line = next(&mut body).await.unwrap();
        assert!(line.starts_with("event: line\ndata: {"), "{line}");
        let data: serde_json::Value =
            serde_json::from_str(line.trim_end().split_once("data: ").unwrap().1).unwrap();
        assert_eq!(data["message"], "mine");
        assert_eq!(data["seq"], 7);
        // Shutdown ends it.
        closing.cancel();
        assert_eq!(next(&mut body).await, None);
    }
}
