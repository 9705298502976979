//! Publishing events from inside a function (`wisp:function/topics`): the
//! same path as the admin API's `POST /v1/topics/{topic}/events`, with the
//! same limits, answered once the event is durable.

use bytes::Bytes;

use crate::capabilities::bindings::wisp::function::topics as wit;
use crate::events::plane::EventError;
use crate::host::Host;
use crate::invoke::InvocationState;

impl wit::Host for InvocationState {
    async fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        content_type: Option<String>,
    ) -> Result<String, wit::PublishError> {
        // The host outlives its invocations except during shutdown.
        let Some(inner) = self.host.upgrade() else {
            return Err(wit::PublishError::Internal(
                "the host is shutting down".into(),
            ));
        };
        let host = Host { inner };
        match host
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
        EventError::InvalidName(m) | EventError::InvalidArgument(m) => {
            wit::PublishError::InvalidTopic(m)
        }
        EventError::PayloadTooLarge { limit } => wit::PublishError::PayloadTooLarge(limit),
        e @ EventError::QueueFull { .. } => wit::PublishError::QueueFull(e.to_string()),
        other => {
            tracing::warn!(function, topic, error = %other, "a function's publish failed");
            wit::PublishError::Internal("the host's store failed (see the host's log)".into())
        }
    }
}
