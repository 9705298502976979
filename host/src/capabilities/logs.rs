//! Per-invocation logs: what a guest writes to stdout and stderr and its
//! `wisp:function/log` lines, bounded per invocation, kept in the store
//! with a retention bound per function.
//!
//! The request path only appends to an in-memory [`LogCapture`]; when the
//! invocation ends, its lines go to one background writer thread through a
//! bounded channel ([`LogSink`]). When the writer falls behind, batches are
//! dropped and counted (`wisp_log_batches_dropped_total`) rather than
//! queued without bound or slowing requests down.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::bindings::wisp::function::log::{Host as LogHost, Level as WitLevel};
use crate::invoke::InvocationState;
use crate::store::Store;

/// Where a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The guest's standard output.
    Stdout,
    /// The guest's standard error.
    Stderr,
    /// A line from the guest's `wisp:function/log` calls (with a level).
    Log,
    /// A note from the host about the invocation: a failure, a denied
    /// outbound request, truncation.
    Wisp,
}

/// Level of a `wisp:function/log` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected, handled.
    Warn,
    /// A failure.
    Error,
}

impl From<WitLevel> for LogLevel {
    fn from(l: WitLevel) -> Self {
        match l {
            WitLevel::Trace => LogLevel::Trace,
            WitLevel::Debug => LogLevel::Debug,
            WitLevel::Info => LogLevel::Info,
            WitLevel::Warn => LogLevel::Warn,
            WitLevel::Error => LogLevel::Error,
        }
    }
}

/// One captured line, before it is stored.
#[derive(Clone, Debug)]
pub(crate) struct LogLine {
    pub time_ms: u64,
    pub stream: LogStream,
    pub level: Option<LogLevel>,
    pub message: String,
}

/// A stored log line, as the admin API returns it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogEntry {
    /// Position in the function's log; pass it as `after` to read on.
    #[serde(default)]
    pub seq: u64,
    /// When the line was written, ms since the Unix epoch.
    pub time_ms: u64,
    /// The invocation that wrote it.
    pub invocation_id: String,
    /// Where it came from.
    pub stream: LogStream,
    /// Level, for `log` lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// The line, without its newline. Bytes that are not UTF-8 are replaced.
    pub message: String,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ------------------------------------------------------------- capture

/// The log of one invocation while it runs: lines in order, bounded by a
/// byte limit. Past the limit, bytes are counted and dropped (the guest
/// never sees an error for writing), and a note says so.
#[derive(Clone)]
pub(crate) struct LogCapture(Arc<Mutex<Capture>>);

struct Capture {
    lines: Vec<LogLine>,
    /// Message bytes kept so far.
    bytes: usize,
    limit: usize,
    /// Bytes dropped past the limit.
    dropped: u64,
    /// Unterminated last line of stdout and of stderr.
    partial: [Vec<u8>; 2],
}

impl Capture {
    fn push(&mut self, stream: LogStream, level: Option<LogLevel>, message: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes);
        let (kept, dropped) = if message.len() <= room {
            (message, 0)
        } else {
            (&message[..room], message.len() - room)
        };
        self.dropped += dropped as u64;
        if kept.is_empty() && dropped > 0 {
            return;
        }
        self.bytes += kept.len();
        self.lines.push(LogLine {
            time_ms: now_ms(),
            stream,
            level,
            message: String::from_utf8_lossy(kept).into_owned(),
        });
    }

    /// Appends stdout/stderr bytes: complete lines become entries, the rest
    /// waits for its newline (or the end of the invocation).
    fn write(&mut self, stream: LogStream, mut bytes: &[u8]) {
        let idx = usize::from(stream == LogStream::Stderr);
        // Once over the limit nothing more is kept: count, and skip the
        // line splitting.
        if self.bytes + self.partial[idx].len() >= self.limit {
            self.dropped += bytes.len() as u64;
            return;
        }
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial[idx]);
            line.extend_from_slice(&bytes[..nl]);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.push(stream, None, &line);
            bytes = &bytes[nl + 1..];
        }
        let room = self
            .limit
            .saturating_sub(self.bytes + self.partial[idx].len());
        let keep = bytes.len().min(room);
        self.partial[idx].extend_from_slice(&bytes[..keep]);
        self.dropped += (bytes.len() - keep) as u64;
    }
}

impl LogCapture {
    /// An empty capture keeping at most `limit` bytes of messages.
    pub fn new(limit: usize) -> LogCapture {
        LogCapture(Arc::new(Mutex::new(Capture {
            lines: Vec::new(),
            bytes: 0,
            limit,
            dropped: 0,
            partial: [Vec::new(), Vec::new()],
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Capture> {
        // A panic while holding this lock cannot leave it inconsistent
        // (every update is a push or a counter), so poisoning is ignored.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A leveled line from the guest.
    pub fn log(&self, level: LogLevel, message: &str) {
        self.lock()
            .push(LogStream::Log, Some(level), message.as_bytes());
    }

    /// A note from the host. Notes are kept even past the limit (they are
    /// short and few), so a failure is never hidden by a chatty guest.
    pub fn note(&self, message: String) {
        self.lock().lines.push(LogLine {
            time_ms: now_ms(),
            stream: LogStream::Wisp,
            level: None,
            message,
        });
    }

    /// A stdout or stderr stream writing into this capture.
    pub fn stream(&self, stream: LogStream) -> CaptureStream {
        CaptureStream {
            capture: self.clone(),
            stream,
        }
    }

    /// The lines, with unterminated output flushed and a truncation note
    /// if anything was dropped. Empty if the guest wrote nothing.
    pub fn finish(&self) -> Vec<LogLine> {
        let mut c = self.lock();
        for (idx, stream) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
            let rest = std::mem::take(&mut c.partial[idx]);
            if !rest.is_empty() {
                c.push(stream, None, &rest);
            }
        }
        if c.dropped > 0 {
            let note = format!(
                "log truncated: {} bytes dropped (the limit is {} bytes per invocation)",
                c.dropped, c.limit
            );
            c.lines.push(LogLine {
                time_ms: now_ms(),
                stream: LogStream::Wisp,
                level: None,
                message: note,
            });
            c.dropped = 0;
        }
        std::mem::take(&mut c.lines)
    }
}

/// The guest's stdout or stderr: every write lands in the capture. Always
/// ready, never fails: output past the limit is dropped and counted.
#[derive(Clone)]
pub(crate) struct CaptureStream {
    capture: LogCapture,
    stream: LogStream,
}

/// How much a guest may write in one call (WASI `check-write`).
const WRITE_BUDGET: usize = 64 * 1024;

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.capture.lock().write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.capture.lock().write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl LogHost for InvocationState {
    fn log(&mut self, level: WitLevel, message: String) {
        self.log.log(level.into(), &message);
    }
}

// -------------------------------------------------------------- writer

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
}

/// The request path's handle on the log writer.
#[derive(Clone)]
pub(crate) struct LogSink {
    tx: SyncSender<Msg>,
    dropped: metrics::Counter,
}

/// Batches in flight to the writer; past this, batches are dropped.
const QUEUE_BATCHES: usize = 4096;

impl LogSink {
    /// Starts the writer thread over `store`.
    pub fn start(store: Store, retention: Retention) -> io::Result<LogSink> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_BATCHES);
        std::thread::Builder::new()
            .name("wisp-log-writer".into())
            .spawn(move || writer(store, retention, rx))?;
        Ok(LogSink {
            tx,
            dropped: metrics::counter!("wisp_log_batches_dropped_total"),
        })
    }

    /// Hands an invocation's lines to the writer, without waiting.
    pub fn send(&self, function: &Arc<str>, invocation_id: &str, lines: Vec<LogLine>) {
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

    /// Forgets a deleted function's cached line count.
    pub fn forget(&self, function: &str) {
        let _ = self.tx.send(Msg::Forget(function.to_string()));
    }
}

/// The writer loop: stores batches as they come, several at a time, and
/// applies retention to the functions it wrote for.
fn writer(store: Store, retention: Retention, rx: Receiver<Msg>) {
    // Lines stored per function, counted once from the store on first use.
    let mut counts: HashMap<String, u64> = HashMap::new();
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
                    let entries: Vec<LogEntry> = lines
                        .into_iter()
                        .map(|l| LogEntry {
                            seq: 0,
                            time_ms: l.time_ms,
                            invocation_id: invocation_id.clone(),
                            stream: l.stream,
                            level: l.level,
                            message: l.message,
                        })
                        .collect();
                    let n = entries.len() as u64;
                    if let Err(e) = store.append_logs(&function, &entries) {
                        tracing::error!(target: "wisp::logs", function = %function, error = %e, "storing log lines failed");
                        continue;
                    }
                    let count = counts
                        .entry(function.to_string())
                        .or_insert_with(|| store.log_count(&function).saturating_sub(n));
                    *count += n;
                    if !touched.contains(&function) {
                        touched.push(function);
                    }
                }
                Msg::Sync(reply) => flushes.push(reply),
                Msg::Forget(function) => {
                    counts.remove(&function);
                }
            }
        }
        let oldest_kept = now_ms().saturating_sub(retention.max_age.as_millis() as u64);
        for function in touched {
            let count = counts.entry(function.to_string()).or_insert(0);
            let excess = count.saturating_sub(retention.max_entries);
            match store.prune_logs(&function, excess, oldest_kept) {
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

// ------------------------------------------------------------ reading

/// What to read from a function's log.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only lines of this invocation.
    pub invocation: Option<String>,
    /// Only lines written since then: an RFC 3339 time or a duration ago
    /// (`10m`, `2h`).
    pub since: Option<String>,
    /// Only lines after this position (the `cursor` of a previous page).
    pub after: Option<u64>,
    /// At most this many lines (default 1000, at most 10000).
    pub limit: Option<usize>,
}

/// A page of a function's log, oldest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogPage {
    /// The lines.
    pub entries: Vec<LogEntry>,
    /// Pass as `after` to read what comes next (also when following).
    pub cursor: Option<u64>,
}

/// Parses `since`: an RFC 3339 time, or a duration ago.
pub(crate) fn parse_since(s: &str, now_ms: u64) -> Result<u64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64));
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(now_ms.saturating_sub(d.as_millis() as u64)),
        Err(_) => Err(format!(
            "since must be an RFC 3339 time (2026-01-02T03:04:05Z) or a duration ago (10m, 2h), not {s:?}"
        )),
    }
}

impl crate::Host {
    /// Reads a function's log (its lines since the last delete of the
    /// function, within the retention bounds).
    pub async fn logs(&self, name: &str, q: LogQuery) -> Result<LogPage, crate::DeployError> {
        use crate::DeployError;
        if self.function(name).is_err() {
            return Err(DeployError::FunctionNotFound(name.to_string()));
        }
        let since = q
            .since
            .as_deref()
            .map(|s| parse_since(s, now_ms()))
            .transpose()
            .map_err(DeployError::InvalidArgument)?;
        let limit = q.limit.unwrap_or(1000);
        if limit == 0 || limit > 10_000 {
            return Err(DeployError::InvalidArgument(
                "limit must be between 1 and 10000".into(),
            ));
        }
        let (sink, store) = (self.inner.invoker.logs.clone(), self.inner.store.clone());
        let name = name.to_string();
        let entries = tokio::task::spawn_blocking(move || {
            sink.sync_blocking();
            store.read_logs(&name, q.after, since, q.invocation.as_deref(), limit)
        })
        .await
        .map_err(|e| DeployError::Internal(format!("log read task: {e}")))??;
        let cursor = entries.last().map(|e| e.seq).or(q.after);
        Ok(LogPage { entries, cursor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(lines: &[LogLine]) -> Vec<(LogStream, String)> {
        lines
            .iter()
            .map(|l| (l.stream, l.message.clone()))
            .collect()
    }

    #[test]
    fn output_is_split_into_lines_and_the_rest_flushed_at_the_end() {
        let c = LogCapture::new(1024);
        let mut out = c.stream(LogStream::Stdout);
        let mut err = c.stream(LogStream::Stderr);
        OutputStream::write(&mut out, Bytes::from_static(b"one\ntw")).unwrap();
        OutputStream::write(&mut err, Bytes::from_static(b"oops\r\n")).unwrap();
        OutputStream::write(&mut out, Bytes::from_static(b"o\nthree")).unwrap();
        c.log(LogLevel::Warn, "careful");
        let lines = c.finish();
        assert_eq!(
            messages(&lines),
            vec![
                (LogStream::Stdout, "one".into()),
                (LogStream::Stderr, "oops".into()),
                (LogStream::Stdout, "two".into()),
                (LogStream::Log, "careful".into()),
                (LogStream::Stdout, "three".into()),
            ]
        );
        assert_eq!(lines[3].level, Some(LogLevel::Warn));
        assert!(c.finish().is_empty(), "finish hands the lines over once");
    }

    #[test]
    fn output_past_the_limit_is_dropped_and_marked() {
        let c = LogCapture::new(10);
        let mut out = c.stream(LogStream::Stdout);
        OutputStream::write(&mut out, Bytes::from_static(b"12345\n67890abc\nmore\n")).unwrap();
        c.log(LogLevel::Info, "also dropped");
        c.note("invocation failed: trap".into());
        let lines = c.finish();
        let msgs = messages(&lines);
        assert_eq!(msgs[0], (LogStream::Stdout, "12345".into()));
        assert_eq!(msgs[1], (LogStream::Stdout, "67890".into()));
        assert_eq!(msgs[2], (LogStream::Wisp, "invocation failed: trap".into()));
        assert_eq!(msgs[3].0, LogStream::Wisp);
        assert!(
            msgs[3].1.contains("log truncated") && msgs[3].1.contains("the limit is 10 bytes"),
            "{msgs:?}"
        );
        let kept: usize = lines
            .iter()
            .filter(|l| l.stream != LogStream::Wisp)
            .map(|l| l.message.len())
            .sum();
        assert!(kept <= 10);
    }

    #[test]
    fn since_takes_times_and_durations() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_since("10m", now), Ok(now - 600_000));
        assert_eq!(
            parse_since("2027-01-15T08:00:00Z", now),
            Ok(1_800_000_000_000)
        );
        assert!(
            parse_since("yesterday-ish", now)
                .unwrap_err()
                .contains("RFC 3339")
        );
    }

    #[test]
    fn a_quiet_invocation_has_no_lines() {
        assert!(LogCapture::new(10).finish().is_empty());
    }
}
