//! Publishing events from inside a function (`wisp:function/topics`): the
//! same path as the admin API's `POST /v1/topics/{topic}/events`, with the
//! same limits, answered once the event is durable.
//!
//! An invocation reaches the event plane through a [`Publisher`], not the
//! host: what it may do is publish, and the invocation layer then depends
//! on this trait only, not on the event plane (which runs invocations).

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::capabilities::bindings::wisp::function::topics as wit;
use crate::events::plane::{EventError, Published};
use crate::invocation::InvocationState;

/// Publishes events on behalf of a guest: the narrow handle an invocation
/// holds. Implemented by the event plane's
/// [`EventPublisher`](crate::events::EventPublisher).
pub(crate) trait Publisher: Send + Sync {
    /// Publishes `payload` on `topic`, as `POST /v1/topics/{topic}/events`
    /// does: one delivery per current subscriber, the same validation and
    /// limits, answered once the event is durable.
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        payload: Bytes,
        content_type: Option<String>,
    ) -> BoxFuture<'a, Result<Published, EventError>>;
}

impl wit::Host for InvocationState {
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
            Ok(published) => Ok(published.id),
            Err(e) => Err(into_guest(e, self.function(), &topic)),
        }
    }
}

fn into_guest(e: EventError, function: &str, topic: &str) -> wit::PublishError {
    match e {
        // An invalid argument is a content type over the limit (or not
        // printable ASCII): the WIT's only case for a refused argument.
        EventError::InvalidName(m) | EventError::InvalidArgument(m) => {
            wit::PublishError::InvalidTopic(m)
        }
        EventError::PayloadTooLarge { limit } => wit::PublishError::PayloadTooLarge(limit),
        // The storage quotas too: the WIT has no case of their own, and
        // for the guest they mean the same (retry later).
        e @ (EventError::QueueFull { .. }
        | EventError::TopicQuotaExceeded { .. }
        | EventError::HostQuotaExceeded { .. }) => wit::PublishError::QueueFull(e.to_string()),
        other => {
            tracing::warn!(function, topic, error = %other, "a function's publish failed");
            wit::PublishError::Internal("the host's store failed (see the host's log)".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a guest's `publish` gets for each refusal: the quotas are
    /// `queue-full` (retry later), a refused content type `invalid-topic`
    /// (the WIT's case for a refused argument), each with the host's
    /// message.
    #[test]
    fn refusals_map_to_the_wit_errors() {
        let e = into_guest(
            EventError::TopicQuotaExceeded {
                topic: "t".into(),
                held: 10,
                size: 5,
                limit: 12,
            },
            "f",
            "t",
        );
        assert!(
            matches!(&e, wit::PublishError::QueueFull(m) if m.contains("--event-topic-quota")),
            "{e:?}"
        );
        let e = into_guest(
            EventError::HostQuotaExceeded {
                held: 10,
                size: 5,
                limit: 12,
            },
            "f",
            "t",
        );
        assert!(
            matches!(&e, wit::PublishError::QueueFull(m) if m.contains("--event-host-quota")),
            "{e:?}"
        );
        let e = into_guest(
            EventError::InvalidArgument("the content type is 300 bytes long".into()),
            "f",
            "t",
        );
        assert!(
            matches!(&e, wit::PublishError::InvalidTopic(m) if m.contains("content type")),
            "{e:?}"
        );
    }
}
