//! The glue between `wasi:http` resources and [`Request`] / [`Response`].
//!
//! Resource order matters in WASI 0.2: a child resource (a body's stream, a
//! request's headers) must be dropped before its parent is finished or
//! dropped, or the host traps. Each function below drops children explicitly
//! for that reason.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::bindings::wasi::http::types::{
    self as wasi, ErrorCode, Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};
use crate::bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};
use crate::{IntoResponse, Request, Response};

/// How much to ask for per read of the request body. The host hands out what
/// it has (usually less); larger reads only mean fewer calls.
const READ_SIZE: u64 = 64 * 1024;

/// Upper bound on the capacity reserved up front from a `content-length`, so
/// a lying header cannot make the guest reserve memory it never fills.
const MAX_PREALLOCATE: usize = 16 * 1024 * 1024;

/// Reads the request, runs `handler` and sends its response.
///
/// If the request body cannot be read (the client went away, or the host cut
/// the body off at the function's size limit), the handler is not called and
/// the host's error code is passed back to it through the outparam, so the
/// host answers with the matching error (e.g. `413`) rather than the guest
/// inventing one.
pub fn serve<F, R>(request: IncomingRequest, out: ResponseOutparam, handler: F)
where
    F: FnOnce(Request) -> R,
    R: IntoResponse,
{
    let request = match read_request(request) {
        Ok(request) => request,
        Err(code) => return ResponseOutparam::set(out, Err(code)),
    };
    send(handler(request).into_response(), out);
}

fn read_request(request: IncomingRequest) -> Result<Request, ErrorCode> {
    let method = method(request.method())?;
    let uri = request.path_with_query().unwrap_or_default();
    // `headers()` returns a child resource; the temporary is dropped at the
    // end of this statement, before the body is consumed.
    let headers = header_map(request.headers().entries());
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    // HTTP/1.1: a request with neither `content-length` nor
    // `transfer-encoding` has no body (RFC 9112, 6.3), nor has one with
    // `content-length: 0`. Not reading it saves the host a body stream and a
    // round trip through its executor on every GET. (HTTP/2 may send a body
    // without either header, so only methods that normally carry none are
    // taken at their word.)
    let no_body_method = matches!(
        method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    let bodiless = length == Some(0)
        || (no_body_method
            && length.is_none()
            && !headers.contains_key(http::header::TRANSFER_ENCODING));
    if bodiless {
        return Ok(Request::from_parts(method, uri, headers, Vec::new()));
    }
    let body = request
        .consume()
        .map_err(|()| internal("the request body was already consumed"))?;
    let capacity = length.map_or(0, |len| len.min(MAX_PREALLOCATE));
    let body = read_body(body, capacity)?;
    Ok(Request::from_parts(method, uri, headers, body))
}

fn method(method: wasi::Method) -> Result<Method, ErrorCode> {
    Ok(match method {
        wasi::Method::Get => Method::GET,
        wasi::Method::Head => Method::HEAD,
        wasi::Method::Post => Method::POST,
        wasi::Method::Put => Method::PUT,
        wasi::Method::Delete => Method::DELETE,
        wasi::Method::Connect => Method::CONNECT,
        wasi::Method::Options => Method::OPTIONS,
        wasi::Method::Trace => Method::TRACE,
        wasi::Method::Patch => Method::PATCH,
        wasi::Method::Other(other) => {
            Method::from_bytes(other.as_bytes()).map_err(|_| ErrorCode::HttpRequestMethodInvalid)?
        }
    })
}

/// The host has already validated every name and value (it built them from an
/// `http::HeaderMap`), so nothing is expected to be skipped here.
pub(crate) fn header_map(entries: Vec<(String, Vec<u8>)>) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(entries.len());
    for (name, value) in entries {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            map.append(name, value);
        }
    }
    map
}

fn read_body(body: IncomingBody, capacity: usize) -> Result<Vec<u8>, ErrorCode> {
    let stream = body
        .stream()
        .map_err(|()| internal("the request body stream was already taken"))?;
    let bytes = read_to_end(&stream, capacity);
    drop(stream);
    // Trailers are not exposed; finishing the body is still required to
    // release it in order.
    drop(IncomingBody::finish(body));
    bytes
}

fn read_to_end(stream: &InputStream, capacity: usize) -> Result<Vec<u8>, ErrorCode> {
    let mut bytes = Vec::with_capacity(capacity);
    loop {
        match stream.blocking_read(READ_SIZE) {
            Ok(chunk) if bytes.is_empty() && bytes.capacity() < chunk.len() => bytes = chunk,
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(bytes),
            Err(StreamError::LastOperationFailed(error)) => {
                return Err(wasi::http_error_code(&error).unwrap_or_else(|| {
                    internal(&format!(
                        "reading the request body: {}",
                        error.to_debug_string()
                    ))
                }));
            }
        }
    }
}

/// Sends `response`: headers and status through the outparam first (so the
/// host can start answering), then the body.
fn send(response: Response, out: ResponseOutparam) {
    let (status, headers, body) = response.into_parts();
    // A known length lets the host answer without chunked encoding. Statuses
    // that never have a body must not carry one (RFC 9110, 8.6).
    let bodiless = matches!(status, 100..=199 | 204 | 304);
    let mut entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    if !bodiless && !headers.contains_key(http::header::CONTENT_LENGTH) {
        entries.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let response = OutgoingResponse::new(response_fields(entries));
    // A new response is 200 already: one host call less for most answers.
    if status != 200 && response.set_status_code(status).is_err() {
        let message = format!("the function answered an invalid status code {status}");
        return ResponseOutparam::set(out, Err(internal(&message)));
    }
    let Ok(outgoing) = response.body() else {
        return ResponseOutparam::set(out, Err(internal("the response body was already taken")));
    };
    ResponseOutparam::set(out, Ok(response));
    let Ok(stream) = outgoing.write() else {
        return;
    };
    // No flush before `finish`: finishing the body hands everything written
    // to the host, and a flush would wait for the host to take each chunk
    // (a round trip through its executor) before the guest can return.
    let written = write_unflushed(&stream, &body);
    drop(stream);
    match written {
        Ok(()) => {
            if let Err(e) = OutgoingBody::finish(outgoing, None) {
                eprintln!("wisp-sdk: finishing the response body failed: {e:?}");
            }
        }
        // The client is gone (or the host gave up on it). Dropping the body
        // without `finish` tells the host the response is incomplete.
        Err(e) => eprintln!("wisp-sdk: writing the response body failed: {e:?}"),
    }
}

/// The response's header fields, in one host call when the host accepts all
/// of them. The host refuses hop-by-hop headers (`connection`, ...) it
/// manages itself; then each is added on its own and the refused ones are
/// dropped, which is what an HTTP proxy would do too.
fn response_fields(entries: Vec<(String, Vec<u8>)>) -> Fields {
    if let Ok(fields) = Fields::from_list(&entries) {
        return fields;
    }
    let fields = Fields::new();
    for (name, value) in &entries {
        if let Err(e) = fields.append(name, value) {
            eprintln!("wisp-sdk: response header {name} dropped: {e:?}");
        }
    }
    fields
}

/// Writes all of `bytes` to `stream` and flushes it.
///
/// Each write is at most what `check-write` permits (the host's buffer
/// budget), waiting on the stream's pollable whenever that budget is spent,
/// so a large body streams without the host buffering it whole.
pub fn write_all(stream: &OutputStream, bytes: &[u8]) -> Result<(), StreamError> {
    write_unflushed(stream, bytes)?;
    stream.blocking_flush()
}

/// [`write_all`] without the final flush.
fn write_unflushed(stream: &OutputStream, mut bytes: &[u8]) -> Result<(), StreamError> {
    while !bytes.is_empty() {
        let permitted = stream.check_write()?;
        if permitted == 0 {
            stream.subscribe().block();
            continue;
        }
        let n = usize::try_from(permitted)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let (now, rest) = bytes.split_at(n);
        stream.write(now)?;
        bytes = rest;
    }
    Ok(())
}

fn internal(message: &str) -> ErrorCode {
    ErrorCode::InternalError(Some(message.to_string()))
}

/// The WIT name of a `wasi:http` error code (`HTTP-request-denied`), and
/// its payload as text if it has one.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn error_code_name(code: &ErrorCode) -> (&'static str, Option<String>) {
    fn some<T: std::fmt::Display>(v: &Option<T>) -> Option<String> {
        v.as_ref().map(ToString::to_string)
    }
    fn field(p: &Option<wasi::FieldSizePayload>) -> Option<String> {
        p.as_ref().map(|p| {
            format!(
                "field {}, size {}",
                p.field_name.as_deref().unwrap_or("?"),
                some(&p.field_size).unwrap_or_else(|| "?".into())
            )
        })
    }
    match code {
        ErrorCode::DnsTimeout => ("DNS-timeout", None),
        ErrorCode::DnsError(p) => ("DNS-error", p.rcode.clone().or_else(|| some(&p.info_code))),
        ErrorCode::DestinationNotFound => ("destination-not-found", None),
        ErrorCode::DestinationUnavailable => ("destination-unavailable", None),
        ErrorCode::DestinationIpProhibited => ("destination-IP-prohibited", None),
        ErrorCode::DestinationIpUnroutable => ("destination-IP-unroutable", None),
        ErrorCode::ConnectionRefused => ("connection-refused", None),
        ErrorCode::ConnectionTerminated => ("connection-terminated", None),
        ErrorCode::ConnectionTimeout => ("connection-timeout", None),
        ErrorCode::ConnectionReadTimeout => ("connection-read-timeout", None),
        ErrorCode::ConnectionWriteTimeout => ("connection-write-timeout", None),
        ErrorCode::ConnectionLimitReached => ("connection-limit-reached", None),
        ErrorCode::TlsProtocolError => ("TLS-protocol-error", None),
        ErrorCode::TlsCertificateError => ("TLS-certificate-error", None),
        ErrorCode::TlsAlertReceived(p) => ("TLS-alert-received", p.alert_message.clone()),
        ErrorCode::HttpRequestDenied => ("HTTP-request-denied", None),
        ErrorCode::HttpRequestLengthRequired => ("HTTP-request-length-required", None),
        ErrorCode::HttpRequestBodySize(n) => ("HTTP-request-body-size", some(n)),
        ErrorCode::HttpRequestMethodInvalid => ("HTTP-request-method-invalid", None),
        ErrorCode::HttpRequestUriInvalid => ("HTTP-request-URI-invalid", None),
        ErrorCode::HttpRequestUriTooLong => ("HTTP-request-URI-too-long", None),
        ErrorCode::HttpRequestHeaderSectionSize(n) => ("HTTP-request-header-section-size", some(n)),
        ErrorCode::HttpRequestHeaderSize(p) => ("HTTP-request-header-size", field(p)),
        ErrorCode::HttpRequestTrailerSectionSize(n) => {
            ("HTTP-request-trailer-section-size", some(n))
        }
        ErrorCode::HttpRequestTrailerSize(p) => {
            ("HTTP-request-trailer-size", field(&Some(p.clone())))
        }
        ErrorCode::HttpResponseIncomplete => ("HTTP-response-incomplete", None),
        ErrorCode::HttpResponseHeaderSectionSize(n) => {
            ("HTTP-response-header-section-size", some(n))
        }
        ErrorCode::HttpResponseHeaderSize(p) => {
            ("HTTP-response-header-size", field(&Some(p.clone())))
        }
        ErrorCode::HttpResponseBodySize(n) => ("HTTP-response-body-size", some(n)),
        ErrorCode::HttpResponseTrailerSectionSize(n) => {
            ("HTTP-response-trailer-section-size", some(n))
        }
        ErrorCode::HttpResponseTrailerSize(p) => {
            ("HTTP-response-trailer-size", field(&Some(p.clone())))
        }
        ErrorCode::HttpResponseTransferCoding(s) => ("HTTP-response-transfer-coding", s.clone()),
        ErrorCode::HttpResponseContentCoding(s) => ("HTTP-response-content-coding", s.clone()),
        ErrorCode::HttpResponseTimeout => ("HTTP-response-timeout", None),
        ErrorCode::HttpUpgradeFailed => ("HTTP-upgrade-failed", None),
        ErrorCode::HttpProtocolError => ("HTTP-protocol-error", None),
        ErrorCode::LoopDetected => ("loop-detected", None),
        ErrorCode::ConfigurationError => ("configuration-error", None),
        ErrorCode::InternalError(s) => ("internal-error", s.clone()),
    }
}
