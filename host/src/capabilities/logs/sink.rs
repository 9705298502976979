//! The log writer: one thread that stores the invocations' lines as they
//! come, several batches at a time, and applies each function's retention.
//!
//! The request path only hands a finished invocation's lines to it through
//! a bounded channel ([`LogSink::send`]), never waiting: when the writer
//! falls behind, batches are dropped and counted
//! (`wisp_log_batches_dropped_total`) rather than queued without bound or
//! slowing requests down.
//!
//! Once stored, a batch is also handed to the live streams
//! (`GET .../logs/stream`, [`LogSink::follow`]) through a bounded
//! broadcast channel: a stream that falls behind misses batches (and is
//! told how many), it never holds the writer up.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use super::store::LogStore;
use super::{Captured, LogEntry, LogLine, now_ms};
use crate::cluster::SharedLogs;

/// How long and how many lines each function's log keeps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retention {
    pub max_entries: u64,
    pub max_age: Duration,
}

enum Msg {
    Lines {
        function: Arc<str>,
        invocation_id: String,
        lines: Vec<LogLine>,
    },
    /// Reply once everything sent before is stored (not necessarily
    /// flushed to disk: the host's shutdown flush does that).
    Sync(SyncSender<()>),
    /// The function was deleted: forget its line count.
    Forget(String),
    /// Cluster mode: from now on, also publish the lines stored to the
    /// cluster's log (on this runtime).
    PublishTo(Box<(SharedLogs, tokio::runtime::Handle)>),
}

/// The request path's handle on the log writer.
#[derive(Clone)]
pub(crate) struct LogSink {
    tx: SyncSender<Msg>,
    dropped: metrics::Counter,
    /// Batches as stored, for the live streams.
    live: broadcast::Sender<Arc<StoredLines>>,
    /// One permit per live stream open: they are bounded like connections.
    streams: Arc<Semaphore>,
    /// Cancelled at shutdown: the live streams end, so that they do not
    /// hold the shutdown's drain for its whole grace period.
    closing: CancellationToken,
}

/// Batches in flight to the writer; past this, batches are dropped.
const QUEUE_BATCHES: usize = 4096;
/// Stored batches kept for the live streams: a stream this far behind
/// misses the oldest (and is told how many). The channel keeps the last
/// this many batches whether or not a stream still wants them, so this
/// bounds what streams cost in memory: a batch is one invocation's lines,
/// at most `log_bytes_per_invocation` (64 KiB by default), so about 4 MiB
/// of lines by default. With 1024, 60 streams that never read held the
/// host's RSS 75 MiB up under a flood of 500-line invocations.
const LIVE_BATCHES: usize = 64;
/// Live streams open at once on a host; past it, a new one is refused.
pub(crate) const MAX_STREAMS: usize = 64;

/// One invocation's lines, as the writer stored them (each with its
/// `seq`).
#[derive(Debug)]
pub(crate) struct StoredLines {
    pub function: Arc<str>,
    pub entries: Vec<LogEntry>,
}

/// A live stream's hold on the stored batches, and on one of the
/// [`MAX_STREAMS`] places: both go when it is dropped.
pub(crate) struct Following {
    pub lines: broadcast::Receiver<Arc<StoredLines>>,
    /// Ends the stream at shutdown.
    pub closing: CancellationToken,
    _place: OwnedSemaphorePermit,
}

#[cfg(test)]
impl Following {
    /// A hold on `lines` that no sink counts.
    pub(crate) fn of(lines: broadcast::Receiver<Arc<StoredLines>>) -> Following {
        let place = Arc::new(Semaphore::new(1)).try_acquire_owned();
        Following {
            lines,
            closing: CancellationToken::new(),
            _place: place.expect("a fresh semaphore has a permit"),
        }
    }
}

impl LogSink {
    /// Starts the writer thread over `store`.
    pub fn start(store: LogStore, retention: Retention) -> io::Result<LogSink> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_BATCHES);
        let (live, _) = broadcast::channel(LIVE_BATCHES);
        let to_streams = live.clone();
        std::thread::Builder::new()
            .name("wisp-log-writer".into())
            .spawn(move || writer(store, retention, rx, to_streams))?;
        Ok(LogSink {
            tx,
            dropped: metrics::counter!("wisp_log_batches_dropped_total"),
            live,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            closing: CancellationToken::new(),
        })
    }

    /// The batches stored from now on, every function's, or `None` when
    /// [`MAX_STREAMS`] streams are open already.
    pub fn follow(&self) -> Option<Following> {
        let place = self.streams.clone().try_acquire_owned().ok()?;
        Some(Following {
            lines: self.live.subscribe(),
            closing: self.closing.clone(),
            _place: place,
        })
    }

    /// Ends every live stream, and those opened later at once (shutdown).
    pub fn close_streams(&self) {
        self.closing.cancel();
    }

    /// Writes the invocation's warnings to the host log, one line per
    /// kind, and hands its lines to the writer, without waiting.
    pub fn send(&self, function: &Arc<str>, invocation_id: &str, captured: Captured) {
        for w in &captured.warnings {
            tracing::warn!(
                target: "wisp::invocation",
                function = %function,
                invocation_id,
                count = w.count,
                "{}: {}; first: {}",
                w.what,
                w.count,
                w.first
            );
        }
        let lines = captured.lines;
        if lines.is_empty() {
            return;
        }
        let msg = Msg::Lines {
            function: function.clone(),
            invocation_id: invocation_id.to_string(),
            lines,
        };
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.increment(1);
                tracing::warn!(
                    target: "wisp::logs",
                    function = %function,
                    invocation_id,
                    "log writer is behind; this invocation's log lines were dropped"
                );
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits until every batch sent so far is stored (admin reads,
    /// shutdown). Blocking: call from a blocking context.
    pub fn sync_blocking(&self) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self.tx.send(Msg::Sync(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// [`Self::sync_blocking`] on a blocking thread.
    pub async fn sync_blocking_async(&self) {
        let sink = self.clone();
        let _ = tokio::task::spawn_blocking(move || sink.sync_blocking()).await;
    }

    /// Cluster mode: publishes every line stored from now on to the
    /// cluster's log too, on `runtime` (the writer thread waits for each
    /// batch's ack there, so a read after [`Self::sync_blocking`] sees
    /// it).
    pub fn publish_to(&self, logs: SharedLogs, runtime: tokio::runtime::Handle) {
        let _ = self.tx.send(Msg::PublishTo(Box::new((logs, runtime))));
    }

    /// Forgets a deleted function's cached line count.
    pub fn forget(&self, function: &str) {
        let _ = self.tx.send(Msg::Forget(function.to_string()));
    }
}

/// How long the writer waits for the cluster to take one batch.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Publishes stored lines to the cluster's log; while NATS is away they
/// stay in this host's log only (and a warning says so).
fn publish_lines(
    logs: &SharedLogs,
    runtime: &tokio::runtime::Handle,
    function: &str,
    entries: &[LogEntry],
) {
    if !logs.connected() {
        tracing::debug!(target: "wisp::logs", function, "the cluster is unreachable: log lines kept on this host only");
        return;
    }
    // The timer is made inside: only there is the runtime's context entered.
    let published = runtime.block_on(async {
        tokio::time::timeout(PUBLISH_TIMEOUT, logs.publish(function, entries)).await
    });
    match published {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(target: "wisp::logs", function, error = %e, "publishing log lines to the cluster failed; kept on this host only")
        }
        Err(_) => {
            tracing::warn!(target: "wisp::logs", function, "publishing log lines to the cluster timed out; kept on this host only")
        }
    }
}

/// The writer loop: stores batches as they come, several at a time, and
/// applies retention to the functions it wrote for.
fn writer(
    store: LogStore,
    retention: Retention,
    rx: Receiver<Msg>,
    live: broadcast::Sender<Arc<StoredLines>>,
) {
    // Lines stored per function, counted once from the store on first use.
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut publish: Option<(SharedLogs, tokio::runtime::Handle)> = None;
    while let Ok(first) = rx.recv() {
        let mut msgs = vec![first];
        while msgs.len() < 256 {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        let mut touched: Vec<Arc<str>> = Vec::new();
        for msg in msgs {
            match msg {
                Msg::Lines {
                    function,
                    invocation_id,
                    lines,
                } => {
                    let mut entries: Vec<LogEntry> = lines
                        .into_iter()
                        .map(|l| LogEntry {
                            seq: 0,
                            time_ms: l.time_ms,
                            invocation_id: invocation_id.clone(),
                            stream: l.stream,
                            level: l.level,
                            message: l.message,
                            node: None,
                        })
                        .collect();
                    let n = entries.len() as u64;
                    if let Err(e) = store.append_blocking(&function, &mut entries) {
                        tracing::error!(target: "wisp::logs", function = %function, error = %e, "storing log lines failed");
                        continue;
                    }
                    if let Some((logs, runtime)) = &publish {
                        publish_lines(logs, runtime, &function, &entries);
                    }
                    let count = counts
                        .entry(function.to_string())
                        .or_insert_with(|| store.count(&function).saturating_sub(n));
                    *count += n;
                    // Only when someone follows: no copy, no allocation
                    // otherwise. A send fails only with no receiver.
                    if live.receiver_count() > 0 {
                        let _ = live.send(Arc::new(StoredLines {
                            function: function.clone(),
                            entries,
                        }));
                    }
                    if !touched.contains(&function) {
                        touched.push(function);
                    }
                }
                Msg::Sync(reply) => flushes.push(reply),
                Msg::Forget(function) => {
                    counts.remove(&function);
                }
                Msg::PublishTo(to) => publish = Some(*to),
            }
        }
        let oldest_kept = now_ms().saturating_sub(retention.max_age.as_millis() as u64);
        for function in touched {
            let count = counts.entry(function.to_string()).or_insert(0);
            let excess = count.saturating_sub(retention.max_entries);
            match store.prune_blocking(&function, excess, oldest_kept) {
                Ok(removed) => *count = count.saturating_sub(removed),
                Err(e) => {
                    tracing::error!(target: "wisp::logs", function = %function, error = %e, "pruning logs failed")
                }
            }
        }
        for reply in flushes {
            let _ = reply.send(());
        }
    }
}
