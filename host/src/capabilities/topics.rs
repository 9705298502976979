//! Publishing events from inside a function (`wisp:function/topics`): the
//! same path as the admin API's `POST /v1/topics/{topic}/events`, with the
//! same limits, answered once the event is durable.
//!
//! An invocation reaches the event plane through a [`Publisher`], not the
//! host: what it may do is publish, and the invocation layer then depends
//! on this trait only, not on the event plane (which runs invocations).

use std::sync::Weak;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::capabilities::bindings::wisp::function::topics as wit;

/// Publishes events on behalf of a guest: the narrow handle an invocation
/// holds. Implemented by the event plane's `EventPublisher`, which maps
/// its errors into the [`PublishRefused`] a guest can be told.
pub(crate) trait Publisher: Send + Sync {
    /// Publishes `payload` on `topic`, as `POST /v1/topics/{topic}/events`
    /// does: one delivery per current subscriber, the same validation and
    /// limits, answered once the event is durable. Returns the event's id.
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        payload: Bytes,
        content_type: Option<String>,
    ) -> BoxFuture<'a, Result<String, PublishRefused>>;
}

/// Why a [`Publisher`] refused a publish, in the cases a guest is told
/// apart (the WIT's `publish-error`), each with the host's message.
#[derive(Debug)]
pub(crate) enum PublishRefused {
    /// The topic is malformed, or another argument is refused (a content
    /// type over the limit, or not printable ASCII): the WIT's only case
    /// for a refused argument.
    InvalidTopic(String),
    /// The payload is over the host's limit, in bytes.
    PayloadTooLarge(u64),
    /// The topic's queue or a storage quota is full: retry later.
    QueueFull(String),
    /// The host failed (its store): the message is for the host's log,
    /// not for the guest.
    Internal(String),
}

/// What `wisp:function/topics` sees of an invocation: the publisher and
/// the function's name (for its log).
pub(crate) struct TopicsView<'a> {
    pub(crate) publisher: &'a Weak<dyn Publisher>,
    pub(crate) function: &'a str,
}

/// `wisp:function/topics` in the linker: its function gets a
/// [`TopicsView`] of the invocation's state.
pub(crate) struct TopicsCapability;

impl wasmtime::component::HasData for TopicsCapability {
    type Data<'a> = TopicsView<'a>;
}

impl wit::Host for TopicsView<'_> {
    async fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        content_type: Option<String>,
    ) -> Result<String, wit::PublishError> {
        // The publisher lives as long as the host (its invoker holds it),
        // which outlives its invocations except during shutdown.
        let Some(publisher) = self.publisher.upgrade() else {
            return Err(wit::PublishError::Internal(
                "the host is shutting down".into(),
            ));
        };
        match publisher
            .publish(&topic, Bytes::from(payload), content_type)
            .await
        {
            Ok(id) => Ok(id),
            Err(e) => Err(into_guest(e, self.function, &topic)),
        }
    }
}

/// What a guest's `publish` gets for `refused`; a failure of the host is
/// logged here, with the function and topic, and not shown to the guest.
pub(crate) fn into_guest(
    refused: PublishRefused,
    function: &str,
    topic: &str,
) -> wit::PublishError {
    match refused {
        PublishRefused::InvalidTopic(m) => wit::PublishError::InvalidTopic(m),
        PublishRefused::PayloadTooLarge(limit) => wit::PublishError::PayloadTooLarge(limit),
        PublishRefused::QueueFull(m) => wit::PublishError::QueueFull(m),
        PublishRefused::Internal(error) => {
            tracing::warn!(function, topic, %error, "a function's publish failed");
            wit::PublishError::Internal("the host's store failed (see the host's log)".into())
        }
    }
}
