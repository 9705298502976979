//! Per-invocation logs: what a guest writes to stdout and stderr and its
//! `wisp:function/log` lines, bounded per invocation, kept in the store
//! with a retention bound per function.
//!
//! The request path only appends to an in-memory [`LogCapture`] (this
//! file); when the invocation ends, its lines go to one background writer
//! thread through a bounded channel ([`LogSink`], `sink`), which stores
//! them ([`store`]: the tree and its encoding); the admin API reads them
//! back (`read`).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::bindings::wisp::function::log::{Host as LogHost, Level as WitLevel};

mod read;
mod sink;
pub(crate) mod store;

pub(crate) use read::parse_since;
pub use read::{LogError, LogPage, LogQuery};
pub(crate) use sink::{Following, LogSink, MAX_STREAMS, Retention, StoredLines};
pub(crate) use store::LogStore;

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
    /// Cluster mode: the node name of the host that ran the invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ------------------------------------------------------------- capture

/// What one invocation's log may keep of the guest's output and log calls.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogLimits {
    /// Bytes, each entry counted at its message's length plus
    /// [`ENTRY_COST`].
    pub bytes: usize,
    /// Entries: lines of stdout and stderr, and `log` calls.
    pub entries: usize,
}

/// What an entry costs beyond its message: about what a kept line takes
/// in memory (time, stream, level, the string's header) before it is
/// stored. Without it, empty lines would be free, and a guest writing
/// millions of them would grow the host by gigabytes.
pub(crate) const ENTRY_COST: usize = 32;

/// Notes from the host kept in one invocation's log (failures, CGI output
/// notes); more are counted and dropped. Few happen per invocation: the
/// bound is for a guest that finds a way to cause many.
const MAX_NOTES: usize = 16;

/// Warnings of one kind (say, denied outbound requests) kept as notes in
/// one invocation's log, beside the [`MAX_NOTES`] other notes; the rest
/// are counted, and the host log gets one line per kind and invocation,
/// with the count.
const MAX_WARNINGS_KEPT: u64 = 10;

/// The log of one invocation while it runs: entries in order, bounded by
/// [`LogLimits`]. Past the limits, entries and bytes are counted and
/// dropped (the guest never sees an error for writing), and a note says
/// so. The host's own notes have a bound of their own, so that a failure
/// is never hidden by a chatty guest, and every note is [clipped and
/// escaped](crate::untrusted::clip) (they quote guest-chosen text).
#[derive(Clone)]
pub(crate) struct LogCapture(Arc<Mutex<Capture>>);

struct Capture {
    lines: Vec<LogLine>,
    limits: LogLimits,
    /// Guest entries kept so far, and what they cost (bytes plus
    /// [`ENTRY_COST`] each).
    kept: usize,
    cost: usize,
    /// Guest entries and bytes dropped past the limits.
    dropped_entries: u64,
    dropped_bytes: u64,
    /// The unterminated last line of stdout and of stderr.
    partial: [Partial; 2],
    /// Host notes kept, and dropped past [`MAX_NOTES`].
    notes: usize,
    dropped_notes: u64,
    warnings: Vec<Warning>,
}

/// A line of stdout or stderr still waiting for its newline.
#[derive(Default)]
struct Partial {
    /// As much of it as fits the limits.
    kept: Vec<u8>,
    /// Bytes of it that did not fit.
    dropped: u64,
    /// A line has begun (though maybe nothing of it is kept).
    open: bool,
}

/// A kind of warning an invocation caused, for the host log's summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Warning {
    /// What happened, e.g. `outbound requests denied`.
    pub what: &'static str,
    /// How often.
    pub count: u64,
    /// The first one's message, clipped and escaped.
    pub first: String,
}

/// An invocation's log once it has ended: its entries (for the store) and
/// its warnings (for the host log).
#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub lines: Vec<LogLine>,
    pub warnings: Vec<Warning>,
}

impl Capture {
    /// Bytes the next entry's message may have, or `None` when no entry
    /// fits any more.
    fn room(&self) -> Option<usize> {
        if self.kept >= self.limits.entries {
            return None;
        }
        self.limits.bytes.checked_sub(self.cost + ENTRY_COST)
    }

    /// Adds a guest entry, or as much of it as fits; `already_dropped`
    /// bytes of it were dropped before (a long unterminated line).
    fn push(
        &mut self,
        stream: LogStream,
        level: Option<LogLevel>,
        message: &[u8],
        already_dropped: u64,
    ) {
        let whole = message.len() as u64 + already_dropped;
        let keep = match self.room() {
            // Nothing of a non-empty line fits: the entry goes too.
            Some(room) if room > 0 || whole == 0 => message.len().min(room),
            _ => {
                self.dropped_entries += 1;
                self.dropped_bytes += whole;
                return;
            }
        };
        self.dropped_bytes += whole - keep as u64;
        self.kept += 1;
        self.cost += ENTRY_COST + keep;
        self.lines.push(LogLine {
            time_ms: now_ms(),
            stream,
            level,
            message: String::from_utf8_lossy(&message[..keep]).into_owned(),
        });
    }

    /// Appends stdout/stderr bytes: complete lines become entries, the rest
    /// waits for its newline (or the end of the invocation).
    fn write(&mut self, stream: LogStream, bytes: &[u8]) {
        let idx = usize::from(stream == LogStream::Stderr);
        if self.room().is_none() {
            self.count_dropped(idx, bytes);
            return;
        }
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = (&rest[..nl], &rest[nl + 1..]);
            rest = after;
            let p = &mut self.partial[idx];
            p.open = false;
            if p.kept.is_empty() && p.dropped == 0 {
                self.push(stream, None, strip_cr(line), 0);
            } else {
                let mut whole = std::mem::take(&mut p.kept);
                let dropped = std::mem::take(&mut p.dropped);
                whole.extend_from_slice(line);
                self.push(stream, None, strip_cr(&whole), dropped);
            }
            if self.room().is_none() {
                // Full: what is left of this write is only counted.
                self.count_dropped(idx, rest);
                return;
            }
        }
        if !rest.is_empty() {
            let room = self.room().unwrap_or(0);
            let p = &mut self.partial[idx];
            p.open = true;
            let keep = rest.len().min(room.saturating_sub(p.kept.len()));
            p.kept.extend_from_slice(&rest[..keep]);
            p.dropped += (rest.len() - keep) as u64;
        }
    }

    /// Once nothing more fits: counts the lines of `bytes` (each newline
    /// ends one) and their bytes, without splitting them, and drops
    /// whatever the unterminated line had kept.
    fn count_dropped(&mut self, idx: usize, bytes: &[u8]) {
        let p = &mut self.partial[idx];
        self.dropped_bytes += p.kept.len() as u64 + std::mem::take(&mut p.dropped);
        p.kept = Vec::new();
        let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
        self.dropped_entries += newlines as u64;
        self.dropped_bytes += (bytes.len() - newlines) as u64;
        if newlines > 0 {
            p.open = bytes.last() != Some(&b'\n');
        } else if !bytes.is_empty() {
            p.open = true;
        }
    }

    fn push_note(&mut self, message: &str) {
        if self.notes >= MAX_NOTES {
            self.dropped_notes += 1;
            return;
        }
        self.notes += 1;
        self.lines.push(note_line(message));
    }
}

/// A note from the host; it may quote guest-chosen text, hence the clip.
fn note_line(message: &str) -> LogLine {
    LogLine {
        time_ms: now_ms(),
        stream: LogStream::Wisp,
        level: None,
        message: crate::untrusted::clip(message).into_owned(),
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl LogCapture {
    /// An empty capture keeping at most what `limits` allow.
    pub fn new(limits: LogLimits) -> LogCapture {
        LogCapture(Arc::new(Mutex::new(Capture {
            lines: Vec::new(),
            limits,
            kept: 0,
            cost: 0,
            dropped_entries: 0,
            dropped_bytes: 0,
            partial: Default::default(),
            notes: 0,
            dropped_notes: 0,
            warnings: Vec::new(),
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
            .push(LogStream::Log, Some(level), message.as_bytes(), 0);
    }

    /// A note from the host (a failure, a CGI output problem), clipped and
    /// escaped. Kept past the guest's limits, up to a bound of their own.
    pub fn note(&self, message: String) {
        self.lock().push_note(&message);
    }

    /// A warning the guest can cause many times in one invocation (`what`
    /// happened, e.g. `outbound requests denied`): the first few of each
    /// kind are kept as notes, the rest counted; the host log gets one
    /// line per kind when the invocation ends ([`LogSink::send`]), not one
    /// per warning.
    pub fn warn(&self, what: &'static str, message: String) {
        let mut c = self.lock();
        let count = match c.warnings.iter_mut().find(|w| w.what == what) {
            Some(w) => {
                w.count += 1;
                w.count
            }
            None => {
                let first = crate::untrusted::clip(&message).into_owned();
                c.warnings.push(Warning {
                    what,
                    count: 1,
                    first,
                });
                1
            }
        };
        if count <= MAX_WARNINGS_KEPT {
            c.lines.push(note_line(&message));
        }
    }

    /// A stdout or stderr stream writing into this capture.
    pub fn stream(&self, stream: LogStream) -> CaptureStream {
        CaptureStream {
            capture: self.clone(),
            stream,
        }
    }

    /// The entries, with unterminated output flushed, a count of the
    /// warnings not kept and a truncation note if anything was dropped;
    /// and the warnings. Empty if the guest wrote nothing and nothing
    /// happened. The capture is empty again afterwards, with its limits
    /// whole (a reused instance's next request).
    pub fn finish(&self) -> Captured {
        let mut c = self.lock();
        for (idx, stream) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
            let p = std::mem::take(&mut c.partial[idx]);
            if p.open {
                c.push(stream, None, &p.kept, p.dropped);
            }
        }
        let warnings = std::mem::take(&mut c.warnings);
        for w in &warnings {
            if w.count > MAX_WARNINGS_KEPT {
                let note = format!(
                    "{}: {} in this invocation, the first {MAX_WARNINGS_KEPT} above",
                    w.what, w.count
                );
                c.lines.push(note_line(&note));
            }
        }
        let mut dropped = Vec::new();
        if c.dropped_entries > 0 || c.dropped_bytes > 0 {
            dropped.push(format!(
                "{} lines and {} bytes dropped (the limits are {} lines and {} bytes per \
                 invocation, each line counting {ENTRY_COST} bytes more than its text)",
                c.dropped_entries, c.dropped_bytes, c.limits.entries, c.limits.bytes
            ));
        }
        if c.dropped_notes > 0 {
            dropped.push(format!(
                "{} host notes dropped (at most {MAX_NOTES} per invocation)",
                c.dropped_notes
            ));
        }
        if !dropped.is_empty() {
            let note = format!("log truncated: {}", dropped.join("; "));
            c.lines.push(note_line(&note));
            (c.dropped_entries, c.dropped_bytes, c.dropped_notes) = (0, 0, 0);
        }
        // A reused instance's capture starts again for its next request.
        (c.kept, c.cost, c.notes) = (0, 0, 0);
        Captured {
            lines: std::mem::take(&mut c.lines),
            warnings,
        }
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

/// What `wisp:function/log` sees of an invocation: its log capture.
pub(crate) struct LogView<'a>(pub(crate) &'a LogCapture);

/// `wisp:function/log` in the linker: its function gets a [`LogView`] of
/// the invocation's state.
pub(crate) struct LogCapability;

impl wasmtime::component::HasData for LogCapability {
    type Data<'a> = LogView<'a>;
}

impl LogHost for LogView<'_> {
    fn log(&mut self, level: WitLevel, message: String) {
        self.0.log(level.into(), &message);
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

    fn capture(bytes: usize, entries: usize) -> LogCapture {
        LogCapture::new(LogLimits { bytes, entries })
    }

    fn write(c: &LogCapture, stream: LogStream, bytes: &'static [u8]) {
        OutputStream::write(&mut c.stream(stream), Bytes::from_static(bytes)).unwrap();
    }

    #[test]
    fn output_is_split_into_lines_and_the_rest_flushed_at_the_end() {
        let c = capture(1024, 100);
        write(&c, LogStream::Stdout, b"one\ntw");
        write(&c, LogStream::Stderr, b"oops\r\n");
        write(&c, LogStream::Stdout, b"o\n\nthree");
        c.log(LogLevel::Warn, "careful");
        let lines = c.finish().lines;
        assert_eq!(
            messages(&lines),
            vec![
                (LogStream::Stdout, "one".into()),
                (LogStream::Stderr, "oops".into()),
                (LogStream::Stdout, "two".into()),
                (LogStream::Stdout, "".into()),
                (LogStream::Log, "careful".into()),
                (LogStream::Stdout, "three".into()),
            ]
        );
        assert_eq!(lines[4].level, Some(LogLevel::Warn));
        assert!(
            c.finish().lines.is_empty(),
            "finish hands the lines over once"
        );
    }

    #[test]
    fn output_past_the_byte_limit_is_dropped_and_marked() {
        // Room for 10 bytes of text besides two entries' cost.
        let c = capture(2 * ENTRY_COST + 10, 100);
        write(&c, LogStream::Stdout, b"12345\n67890abc\nmore\n");
        c.log(LogLevel::Info, "also dropped");
        c.note("invocation failed: trap".into());
        let lines = c.finish().lines;
        let msgs = messages(&lines);
        assert_eq!(msgs[0], (LogStream::Stdout, "12345".into()));
        assert_eq!(msgs[1], (LogStream::Stdout, "67890".into()));
        assert_eq!(msgs[2], (LogStream::Wisp, "invocation failed: trap".into()));
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert_eq!(
            msgs[3],
            (
                LogStream::Wisp,
                format!(
                    "log truncated: 2 lines and 19 bytes dropped (the limits are 100 lines and {} \
                     bytes per invocation, each line counting {ENTRY_COST} bytes more than its text)",
                    2 * ENTRY_COST + 10
                )
            )
        );
    }

    #[test]
    fn empty_lines_and_empty_log_calls_count_against_the_line_limit() {
        let c = capture(64 * 1024, 1000);
        let flood: &'static [u8] = Box::leak(vec![b'\n'; 3000].into_boxed_slice());
        write(&c, LogStream::Stdout, flood);
        for _ in 0..3000 {
            c.log(LogLevel::Info, "");
        }
        let lines = c.finish().lines;
        assert_eq!(lines.len(), 1001);
        assert!(lines[..1000].iter().all(|l| l.stream == LogStream::Stdout));
        assert!(lines[999].message.is_empty());
        let note = &lines[1000];
        assert_eq!(note.stream, LogStream::Wisp);
        assert!(
            note.message
                .starts_with("log truncated: 5000 lines and 0 bytes dropped"),
            "{}",
            note.message
        );
    }

    #[test]
    fn empty_entries_cost_bytes_too() {
        // Room for three entries of nothing.
        let c = capture(3 * ENTRY_COST, 1000);
        for _ in 0..5 {
            c.log(LogLevel::Info, "");
        }
        let lines = c.finish().lines;
        assert_eq!(lines.len(), 4);
        assert!(
            lines[3]
                .message
                .starts_with("log truncated: 2 lines and 0 bytes")
        );
    }

    #[test]
    fn lines_past_the_limit_are_counted_across_writes() {
        let c = capture(1024, 2);
        write(&c, LogStream::Stdout, b"a\nb\nc");
        // Full: "c" + "d" is one dropped line, "e" (at the end) another.
        write(&c, LogStream::Stdout, b"d\ne");
        write(&c, LogStream::Stderr, b"\n\nerr");
        let lines = c.finish().lines;
        let msgs = messages(&lines);
        assert_eq!(
            msgs[..2],
            [
                (LogStream::Stdout, "a".into()),
                (LogStream::Stdout, "b".into())
            ]
        );
        assert!(
            msgs[2]
                .1
                .starts_with("log truncated: 5 lines and 6 bytes dropped"),
            "{msgs:?}"
        );
        assert_eq!(msgs.len(), 3);
    }

    #[test]
    fn a_long_unterminated_line_is_bounded_while_it_grows() {
        let c = capture(ENTRY_COST + 8, 10);
        for _ in 0..1000 {
            write(&c, LogStream::Stdout, b"0123456789");
        }
        {
            let inner = c.lock();
            assert_eq!(inner.partial[0].kept.len(), 8);
            assert_eq!(inner.partial[0].dropped, 10_000 - 8);
        }
        write(&c, LogStream::Stdout, b"\n");
        let msgs = messages(&c.finish().lines);
        assert_eq!(msgs[0], (LogStream::Stdout, "01234567".into()));
        assert!(
            msgs[1]
                .1
                .starts_with("log truncated: 0 lines and 9992 bytes"),
            "{msgs:?}"
        );
    }

    #[test]
    fn repeated_warnings_keep_a_few_notes_and_one_summary() {
        let c = capture(1024, 100);
        for i in 0..50 {
            c.warn("outbound requests denied", format!("request {i} denied"));
        }
        let captured = c.finish();
        let msgs = messages(&captured.lines);
        assert_eq!(msgs.len(), MAX_WARNINGS_KEPT as usize + 1, "{msgs:?}");
        assert_eq!(msgs[0], (LogStream::Wisp, "request 0 denied".into()));
        assert_eq!(
            msgs.last().unwrap().1,
            "outbound requests denied: 50 in this invocation, the first 10 above"
        );
        assert_eq!(
            captured.warnings,
            vec![Warning {
                what: "outbound requests denied",
                count: 50,
                first: "request 0 denied".into()
            }]
        );
    }

    #[test]
    fn notes_are_clipped_escaped_and_bounded() {
        let c = capture(1024, 100);
        c.note(format!(
            "event failed: \x1b[31mred\nforged{}",
            "x".repeat(5000)
        ));
        for i in 0..MAX_NOTES + 4 {
            c.note(format!("note {i}"));
        }
        c.warn("things", format!("\x07{}", "y".repeat(3000)));
        let captured = c.finish();
        let first = &captured.lines[0].message;
        assert!(
            first.starts_with("event failed: \\u{1b}[31mred\\nforged"),
            "{first}"
        );
        assert!(
            first.ends_with("bytes cut]") && first.len() < 1100,
            "{first}"
        );
        // The first note and 15 more; the warning has its own bound.
        let notes = captured.lines.len();
        assert_eq!(notes, MAX_NOTES + 2);
        assert!(captured.lines[notes - 2].message.starts_with("\\u{7}yyy"));
        assert!(
            captured.lines[notes - 1].message
                == "log truncated: 5 host notes dropped (at most 16 per invocation)",
            "{:?}",
            captured.lines[notes - 1]
        );
        assert!(captured.warnings[0].first.len() < 1100);
    }

    #[test]
    fn a_quiet_invocation_has_no_lines() {
        let captured = capture(10, 10).finish();
        assert!(captured.lines.is_empty() && captured.warnings.is_empty());
    }
}
