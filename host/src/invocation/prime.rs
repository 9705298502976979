//! A WASI 0.3 response on a fresh instance waits, briefly, for its body's
//! first frame before it goes to hyper.
//!
//! A 0.3 guest returns its response from `handle` and writes the body after
//! (from a task of its own), and the body's last frame is held until the
//! invocation has ended ([`CancelOnDrop`](super::driver::CancelOnDrop)).
//! Handed to hyper at once, the response found no frame ready: hyper wrote
//! the headers alone, then the body, two writes and two TCP segments per
//! response where a 0.2 guest (which writes its body before `handle`
//! returns) needs one. Waiting up to [`PRIME_WAIT`] for the first frame
//! sends both in one write (`benches/RESULTS.md`: 12–14% less CPU per
//! request); a guest that streams (headers first, data much later) sees its
//! headers leave that much later. Reused instances do not need it (their
//! worker has written the body by the time the response is taken).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::Response;
use bytes::{Buf as _, Bytes};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt as _;

/// How long a response waits for its body's first frame.
const PRIME_WAIT: Duration = Duration::from_millis(1);

/// `response`, with its body's first frame taken in advance if it comes
/// within [`PRIME_WAIT`] (else the response as it was).
pub(super) async fn prime(response: Response<Body>) -> Response<Body> {
    let (parts, mut body) = response.into_parts();
    if body.is_end_stream() {
        return Response::from_parts(parts, body);
    }
    // Nothing in time, or the end (which the body says from now on).
    let first = tokio::time::timeout(PRIME_WAIT, body.frame())
        .await
        .ok()
        .flatten();
    Response::from_parts(parts, Body::new(Primed { first, inner: body }))
}

/// A body whose first frame was taken in advance.
struct Primed {
    first: Option<Result<Frame<Bytes>, axum::Error>>,
    inner: Body,
}

impl http_body::Body for Primed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held = match &self.first {
            Some(Ok(frame)) => frame.data_ref().map_or(0, |d| d.remaining() as u64),
            _ => 0,
        };
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint.set_lower(inner.lower().saturating_add(held));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ready_first_frame_is_sent_with_the_rest() {
        let resp = Response::new(Body::from("hello"));
        let primed = prime(resp).await;
        assert_eq!(primed.body().size_hint().exact(), Some(5));
        let bytes = primed.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
    }

    #[tokio::test]
    async fn a_late_body_is_not_waited_for_past_the_bound() {
        let (tx, rx) = futures::channel::oneshot::channel::<Bytes>();
        let late = futures::stream::once(async move {
            Ok::<_, axum::Error>(Frame::data(rx.await.expect("sent")))
        });
        let body = Body::new(http_body_util::StreamBody::new(late));
        // The frame comes only after prime has given up waiting for it.
        let primed = tokio::time::timeout(Duration::from_secs(10), prime(Response::new(body)))
            .await
            .expect("prime waits at most PRIME_WAIT");
        tx.send(Bytes::from_static(b"late")).unwrap();
        let bytes = primed.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"late");
    }
}
