//! The glue between `wasi:http` resources and [`Request`] / [`Response`].
//!
//! Resource order matters in WASI 0.2: a child resource (a body's stream, a
//! request's headers) must be dropped before its parent is finished or
//! dropped, or the host traps. Each function below drops children explicitly
//! for that reason.

use crate::bindings::wasi::http::types::{
    self as wasi, ErrorCode, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};
use crate::bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};
use crate::wire::{self, READ_SIZE, RequestBody, internal};
use crate::{IntoResponse, Request, Response};

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
    let method = wire::method(request.method())?;
    let uri = request.path_with_query().unwrap_or_default();
    // `headers()` returns a child resource; the temporary is dropped at the
    // end of this statement, before the body is consumed.
    let headers = wire::header_map(request.headers().entries());
    let RequestBody::Read { capacity } = RequestBody::of(&method, &headers) else {
        return Ok(Request::from_parts(method, uri, headers, Vec::new()));
    };
    let body = request
        .consume()
        .map_err(|()| internal("the request body was already consumed"))?;
    let body = read_body(body, capacity)?;
    Ok(Request::from_parts(method, uri, headers, body))
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
        match stream.blocking_read(READ_SIZE as u64) {
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
    let entries = wire::response_fields(status, &headers, body.len());
    let response = OutgoingResponse::new(wire::fields(entries));
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
