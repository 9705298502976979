//! Functions' logs, shared by every host: the JetStream stream `WISP_LOGS`,
//! one message per line on the subject `wisp.logs.<function>`, each with
//! the node name of the host that ran the invocation. Every host's log
//! writer publishes the lines it stores (and waits for JetStream's ack);
//! `wisp logs` on any host reads the stream, so it shows the invocations of
//! all hosts, in the order JetStream stored them. The stream keeps as many
//! lines per function, and for as long, as `--log-retention-lines` and
//! `--log-retention` say (the first host to create it sets them).

use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::push::OrderedConfig;
use async_nats::jetstream::{self, stream};
use futures::StreamExt as _;

use crate::capabilities::logs::LogEntry;

/// The stream.
const STREAM: &str = "WISP_LOGS";
/// How long a read waits for the next line it knows is there.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared log; cheap to clone.
#[derive(Clone)]
pub(crate) struct SharedLogs {
    js: jetstream::Context,
    client: async_nats::Client,
    stream: stream::Stream,
    node: String,
}

fn subject(function: &str) -> String {
    format!("wisp.logs.{function}")
}

impl SharedLogs {
    /// Opens the stream, creating it with these bounds on first use.
    pub(super) async fn open(
        js: &jetstream::Context,
        client: &async_nats::Client,
        node: &str,
        max_lines: u64,
        max_age: Duration,
    ) -> anyhow::Result<SharedLogs> {
        let stream = match js.get_stream(STREAM).await {
            Ok(s) => s,
            Err(_) => js
                .create_stream(stream::Config {
                    name: STREAM.into(),
                    description: Some("Wisp: functions' log lines, from every host".into()),
                    subjects: vec!["wisp.logs.>".into()],
                    max_messages_per_subject: max_lines.min(i64::MAX as u64) as i64,
                    max_age,
                    discard: stream::DiscardPolicy::Old,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("creating the stream {STREAM}: {e}"))?,
        };
        Ok(SharedLogs {
            js: js.clone(),
            client: client.clone(),
            stream,
            node: node.to_string(),
        })
    }

    /// Whether the connection to NATS is up now.
    pub(crate) fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publishes a function's lines, each tagged with this host's node
    /// name, and waits for JetStream to have stored them.
    pub(crate) async fn publish(&self, function: &str, entries: &[LogEntry]) -> anyhow::Result<()> {
        let mut acks = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut entry = entry.clone();
            entry.node = Some(self.node.clone());
            let payload = serde_json::to_vec(&entry).expect("a log entry serialises");
            acks.push(self.js.publish(subject(function), payload.into()).await?);
        }
        for ack in acks {
            ack.await?;
        }
        Ok(())
    }

    /// Up to `limit` lines of a function's log after `after` (a stream
    /// sequence), at or after `since_ms`, of one invocation if given,
    /// oldest first; each line's `seq` is its stream sequence.
    pub(crate) async fn read(
        &self,
        function: &str,
        after: Option<u64>,
        since_ms: Option<u64>,
        invocation: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<LogEntry>> {
        let deliver_policy = match (after, since_ms) {
            (Some(seq), _) => DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            },
            (None, Some(ms)) => DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                    ms as i128 * 1_000_000,
                )?,
            },
            (None, None) => DeliverPolicy::All,
        };
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                description: Some("wisp log reader".into()),
                filter_subject: subject(function),
                deliver_policy,
                ..Default::default()
            })
            .await?;
        let mut pending = consumer.cached_info().num_pending;
        let mut messages = consumer.messages().await?;
        let mut out = Vec::new();
        while pending > 0 && out.len() < limit {
            let Ok(Some(message)) = tokio::time::timeout(READ_TIMEOUT, messages.next()).await
            else {
                break;
            };
            let message = message?;
            pending -= 1;
            let Ok(mut entry) = serde_json::from_slice::<LogEntry>(&message.payload) else {
                continue;
            };
            if since_ms.is_some_and(|t| entry.time_ms < t)
                || invocation.is_some_and(|id| entry.invocation_id != id)
            {
                continue;
            }
            entry.seq = message
                .info()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .stream_sequence;
            out.push(entry);
        }
        Ok(out)
    }

    /// Removes a function's lines (it was deleted, or its name is deployed
    /// anew).
    pub(crate) async fn purge(&self, function: &str) -> anyhow::Result<()> {
        self.stream.purge().filter(subject(function)).await?;
        Ok(())
    }
}
