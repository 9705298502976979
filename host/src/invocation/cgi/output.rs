//! A preview-1 module's stdout: CGI headers, a blank line, the body. The
//! head is parsed (with httparse) as soon as it is complete; the body
//! streams to the client through a bounded channel and is cut at the host's
//! output cap, the response then ending with an error rather than looking
//! complete.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::capabilities::logs::LogCapture;

/// Longest CGI header section; past it the output is not CGI.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Chunks of body in flight between the guest and the client. With the
/// guest's 4 KiB writes that is 64 KiB: enough to keep the socket busy,
/// small enough that a slow client stalls the guest instead of the host
/// buffering its output.
pub(super) const BODY_CHANNEL_CHUNKS: usize = 16;

/// How much the guest may write in one call before waiting for room.
const WRITE_BUDGET: usize = 64 * 1024;

/// The response head parsed from the guest's CGI headers.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
}

/// Where the end of the header section is, if it has arrived: the length
/// of the header lines and where the body starts. Scanning resumes at
/// `*from` (the start of the first line not yet seen whole).
pub(crate) fn find_head_end(buf: &[u8], from: &mut usize) -> Option<(usize, usize)> {
    while let Some(nl) = buf[*from..].iter().position(|&b| b == b'\n') {
        let end = *from + nl;
        let line = &buf[*from..end];
        if line.is_empty() || line == b"\r" {
            return Some((*from, end + 1));
        }
        *from = end + 1;
    }
    None
}

/// Parses CGI header lines into a response head: `Status: 404 Not Found`
/// sets the status, `Location` without a status redirects (302), every other
/// header is passed on (hop-by-hop ones and `Content-Length` dropped: the
/// body is streamed); a missing `Content-Type` is `text/plain`.
pub(crate) fn parse_head(block: &[u8]) -> Result<Head, String> {
    // httparse wants the blank line that ends the head; the output's end
    // may have come without it (or without the last newline).
    let mut buf = Vec::with_capacity(block.len() + 4);
    buf.extend_from_slice(block);
    if !buf.is_empty() && !buf.ends_with(b"\n") {
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let parsed = match httparse::parse_headers(&buf, &mut slots) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        Ok(httparse::Status::Partial) => return Err("the header section never ends".into()),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(format!("more than {MAX_HEADERS} header lines"));
        }
        Err(_) => return Err(bad_line(block)),
    };
    let mut status = None;
    let mut headers = HeaderMap::new();
    for h in parsed {
        let value = h.value.trim_ascii();
        let shown = || shown(format!("{}: {}", h.name, String::from_utf8_lossy(value)).as_bytes());
        if h.name.eq_ignore_ascii_case("status") {
            let code = value
                .get(..3)
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|_| value.len() == 3 || value[3] == b' ')
                .ok_or_else(|| format!("invalid Status header {:?}", shown()))?;
            status = Some(code);
            continue;
        }
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("invalid header name in {:?}", shown()))?;
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| format!("invalid header value in {:?}", shown()))?;
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || name == HeaderName::from_static("keep-alive")
            || name == header::UPGRADE
        {
            continue;
        }
        headers.append(name, value);
    }
    let redirect = status.is_none() && headers.contains_key(header::LOCATION);
    let status = status.unwrap_or(if redirect {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    if !headers.contains_key(header::CONTENT_TYPE)
        && !redirect
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
    {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    Ok(Head { status, headers })
}

/// Header lines one CGI response may have.
const MAX_HEADERS: usize = 100;

/// A header line as shown in a message: at most 80 bytes of it.
fn shown(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned()
}

/// Why httparse refused a head, naming the first line that is not a header
/// (no `:`, or a name or value with bytes a header cannot have).
fn bad_line(block: &[u8]) -> String {
    for raw in block.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return format!("header line {:?} has no ':'", shown(line));
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if HeaderName::from_bytes(name).is_err() {
            return format!("invalid header name in {:?}", shown(line));
        }
        if HeaderValue::from_bytes(value).is_err() {
            return format!("invalid header value in {:?}", shown(line));
        }
    }
    "the header lines are malformed".into()
}

/// What became of the response head when the guest finished.
pub(super) enum HeadState {
    /// Sent: the response is (or was) streaming.
    Sent,
    /// Found invalid while the guest ran (already noted in the log).
    Invalid,
    /// Never complete: why.
    Missing(String),
}

enum Phase {
    /// Collecting the header section.
    Head,
    /// Streaming the body.
    Body,
    /// Past the cap, invalid output or a client gone: writes are dropped.
    Discard,
    /// The head was invalid: writes are dropped.
    Invalid,
}

/// The guest's stdout: CGI headers, then the body streamed to the client.
/// Shared by the WASI context and the invocation task (which finishes it).
#[derive(Clone)]
pub(super) struct CgiOutput(Arc<Mutex<Output>>);

struct Output {
    phase: Phase,
    buf: Vec<u8>,
    /// Where the header scan resumes in `buf`.
    scanned: usize,
    head_tx: Option<oneshot::Sender<Result<Head, String>>>,
    /// `None` once the body has ended (cap reached, client gone).
    body_tx: Option<mpsc::Sender<Bytes>>,
    /// Room for one chunk, reserved while the guest waited (`ready`).
    permit: Option<mpsc::OwnedPermit<Bytes>>,
    /// Body bytes sent so far.
    sent: u64,
    cap: u64,
    /// Shared with the response body: set before the body ends early.
    aborted: Arc<AtomicBool>,
    log: LogCapture,
}

impl CgiOutput {
    pub(super) fn new(
        head_tx: oneshot::Sender<Result<Head, String>>,
        body_tx: mpsc::Sender<Bytes>,
        cap: u64,
        aborted: Arc<AtomicBool>,
        log: LogCapture,
    ) -> CgiOutput {
        CgiOutput(Arc::new(Mutex::new(Output {
            phase: Phase::Head,
            buf: Vec::new(),
            scanned: 0,
            head_tx: Some(head_tx),
            body_tx: Some(body_tx),
            permit: None,
            sent: 0,
            cap,
            aborted,
            log,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Output> {
        // Every update leaves the state consistent; ignore poisoning.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the output when the guest has finished: the body stream closes;
    /// a head never completed is checked once more (headers without the
    /// blank line are accepted at the end) or reported missing.
    pub(super) fn finish(&self) -> HeadState {
        let mut o = self.lock();
        o.permit = None;
        let state = match o.phase {
            Phase::Head => {
                let buf = std::mem::take(&mut o.buf);
                let result = if buf.is_empty() {
                    Err("the function wrote nothing to stdout".to_string())
                } else {
                    parse_head(&buf).map_err(|e| {
                        format!("the output ended before the blank line after the headers ({e})")
                    })
                };
                match result {
                    Ok(head) => {
                        if let Some(tx) = o.head_tx.take() {
                            let _ = tx.send(Ok(head));
                        }
                        HeadState::Sent
                    }
                    Err(msg) => {
                        if let Some(tx) = o.head_tx.take() {
                            let _ = tx.send(Err(msg.clone()));
                        }
                        HeadState::Missing(msg)
                    }
                }
            }
            Phase::Invalid => HeadState::Invalid,
            Phase::Body | Phase::Discard => HeadState::Sent,
        };
        o.body_tx = None;
        o.phase = Phase::Discard;
        state
    }
}

impl Output {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        match self.phase {
            Phase::Head => self.write_head(&bytes),
            Phase::Body => self.write_body(bytes),
            Phase::Discard | Phase::Invalid => {}
        }
        Ok(())
    }

    fn write_head(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        let Some((head_len, body_start)) = find_head_end(&self.buf, &mut self.scanned) else {
            if self.buf.len() > MAX_HEAD_BYTES {
                self.invalid(format!(
                    "no blank line within the first {MAX_HEAD_BYTES} bytes (CGI output is headers, \
                     a blank line, then the body)"
                ));
            }
            return;
        };
        if head_len > MAX_HEAD_BYTES {
            self.invalid(format!(
                "the headers are longer than {MAX_HEAD_BYTES} bytes"
            ));
            return;
        }
        match parse_head(&self.buf[..head_len]) {
            Ok(head) => {
                let rest = Bytes::copy_from_slice(&self.buf[body_start..]);
                self.buf = Vec::new();
                match self.head_tx.take().map(|tx| tx.send(Ok(head))) {
                    Some(Ok(())) => {
                        self.phase = Phase::Body;
                        if !rest.is_empty() {
                            self.write_body(rest);
                        }
                    }
                    _ => self.gone(),
                }
            }
            Err(msg) => self.invalid(msg),
        }
    }

    fn write_body(&mut self, mut bytes: Bytes) {
        let left = self.cap - self.sent;
        let over = bytes.len() as u64 > left;
        if over {
            bytes.truncate(left as usize);
        }
        if !bytes.is_empty() {
            self.sent += bytes.len() as u64;
            let sent = match (self.permit.take(), &self.body_tx) {
                (Some(permit), _) => {
                    permit.send(bytes);
                    true
                }
                // Right after the head the channel is empty: room for the
                // rest of the first write without waiting.
                (None, Some(tx)) => tx.try_send(bytes).is_ok(),
                (None, None) => false,
            };
            if !sent {
                self.gone();
                return;
            }
        }
        if over {
            self.log.note(format!(
                "output truncated at {} bytes (the host's CGI output cap); the rest was discarded \
                 and the response ended with an error",
                self.cap
            ));
            // A cut body must not pass for a complete one: the client sees
            // the chunked body aborted (no final chunk), not a clean 200.
            // Set before the sender goes, so the body sees it at the end.
            self.aborted.store(true, Ordering::Release);
            self.body_tx = None;
            self.permit = None;
            self.phase = Phase::Discard;
        }
    }

    fn invalid(&mut self, msg: String) {
        self.log.note(format!("invalid CGI output: {msg}"));
        if let Some(tx) = self.head_tx.take() {
            let _ = tx.send(Err(msg));
        }
        self.buf = Vec::new();
        self.body_tx = None;
        self.phase = Phase::Invalid;
    }

    /// The client went away: the rest of the output has nowhere to go.
    fn gone(&mut self) {
        if !matches!(self.phase, Phase::Discard) {
            self.log
                .note("the client went away; the rest of the output was discarded".into());
        }
        self.body_tx = None;
        self.permit = None;
        self.phase = Phase::Discard;
    }
}

impl IsTerminal for CgiOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CgiOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only the preview-2 stream is used by preview-1 modules.
        Box::new(tokio::io::sink())
    }
}

#[async_trait::async_trait]
impl Pollable for CgiOutput {
    async fn ready(&mut self) {
        // In the body, wait for room in the channel: a slow client slows
        // the guest down instead of growing a buffer.
        let tx = {
            let o = self.lock();
            match (&o.phase, &o.permit, &o.body_tx) {
                (Phase::Body, None, Some(tx)) => tx.clone(),
                _ => return,
            }
        };
        let reserved = tx.reserve_owned().await;
        let mut o = self.lock();
        match reserved {
            Ok(permit) if matches!(o.phase, Phase::Body) => o.permit = Some(permit),
            Ok(_) => {}
            Err(_) => o.gone(),
        }
    }
}

impl OutputStream for CgiOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.lock().write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let o = self.lock();
        Ok(match o.phase {
            Phase::Body if o.permit.is_none() => 0,
            _ => WRITE_BUDGET,
        })
    }
}

/// The response body: chunks from the guest's stdout as they come. Ends
/// with an error if the guest failed after its headers or its output was
/// cut at the cap, so the client sees a broken response rather than a
/// short one that looks complete.
pub(super) struct CgiBody {
    rx: mpsc::Receiver<Bytes>,
    aborted: Arc<AtomicBool>,
}

impl CgiBody {
    /// The body of `rx`'s chunks; `aborted` says whether its end is an
    /// error.
    pub(super) fn new(rx: mpsc::Receiver<Bytes>, aborted: Arc<AtomicBool>) -> CgiBody {
        CgiBody { rx, aborted }
    }
}

impl http_body::Body for CgiBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(None) if self.aborted.load(Ordering::Acquire) => Poll::Ready(Some(Err(
                std::io::Error::other("the function's response was cut short"),
            ))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Head {
        parse_head(s.as_bytes()).unwrap()
    }

    #[test]
    fn parses_cgi_headers() {
        let h = head("Content-Type: application/json\r\nX-A: 1\r\nX-A: 2");
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.headers["content-type"], "application/json");
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);

        let h = head("Status: 404 Not Found\nContent-Type: text/html");
        assert_eq!(h.status, StatusCode::NOT_FOUND);

        let h = head("Location: /elsewhere");
        assert_eq!(h.status, StatusCode::FOUND);
        assert!(h.headers.get("content-type").is_none());

        let h = head("Status: 301\nLocation: https://example.com/");
        assert_eq!(h.status, StatusCode::MOVED_PERMANENTLY);

        // Defaults, and hop-by-hop headers dropped.
        let h = head("Content-Length: 5\nConnection: close");
        assert_eq!(h.headers["content-type"], "text/plain; charset=utf-8");
        assert!(h.headers.get("content-length").is_none());
        assert!(h.headers.get("connection").is_none());
        assert_eq!(head("").status, StatusCode::OK);
    }

    #[test]
    fn refuses_what_is_not_cgi() {
        assert!(parse_head(b"hello world").is_err());
        assert!(parse_head(b"Status: banana").is_err());
        assert!(parse_head(b"Status: 2000").is_err());
        assert!(parse_head(b"Bad Name: x").is_err());
        assert!(parse_head(b"X: a\x01b").is_err());
    }

    #[test]
    fn finds_the_end_of_the_headers() {
        let mut from = 0;
        assert_eq!(find_head_end(b"A: 1\r\nB: 2", &mut from), None);
        let buf = b"A: 1\r\nB: 2\r\n\r\nbody";
        assert_eq!(find_head_end(buf, &mut from), Some((12, 14)));
        let mut from = 0;
        assert_eq!(find_head_end(b"\nbody", &mut from), Some((0, 1)));
        let mut from = 0;
        assert_eq!(find_head_end(b"A: 1\n\nbody\n\n", &mut from), Some((5, 6)));
    }
}
