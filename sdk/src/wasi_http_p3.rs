//! The glue between WASI 0.3's `wasi:http` (the `service` world, through
//! the `wasip3` crate) and [`Request`] / [`Response`]: the SDK's 0.3 build
//! (wisp-sdk-p3).
//!
//! The handler itself stays synchronous, as in the 0.2 build: the export
//! reads the request body to its end (awaiting the host's stream), calls
//! the handler, and returns the response with its body on a stream that a
//! task spawned for it writes after `handle` has returned, as WASI 0.3
//! bodies are written. Both bodies move in chunks as the other side takes
//! them, so neither the host nor the guest ever holds one twice.

use wasip3::http::client;
use wasip3::http::types::{
    ErrorCode, Fields, Request as WasiRequest, Response as WasiResponse, Trailers,
};
use wasip3::wit_bindgen::{StreamReader, StreamResult};
use wasip3::{wit_future, wit_stream};

use crate::http::{HttpError, MAX_RESPONSE_BODY, outgoing_fields, split_url};
use crate::wire::{self, READ_SIZE, RequestBody, internal};
use crate::{IntoResponse, Request, Response};

/// Reads the request, runs `handler` and answers its response.
///
/// If the request body cannot be read whole (the client went away, or the
/// host cut the body off at the function's size limit), the handler is not
/// called and the host's error code is returned, so the host answers with
/// the matching error (e.g. `413`) rather than the guest inventing one.
pub async fn serve<F, R>(request: WasiRequest, handler: F) -> Result<WasiResponse, ErrorCode>
where
    F: FnOnce(Request) -> R,
    R: IntoResponse,
{
    let request = read_request(request).await?;
    respond(handler(request).into_response())
}

async fn read_request(request: WasiRequest) -> Result<Request, ErrorCode> {
    let method = wire::method(request.get_method())?;
    let uri = request.get_path_with_query().unwrap_or_default();
    let headers = wire::header_map(request.get_headers().copy_all());
    let RequestBody::Read { capacity } = RequestBody::of(&method, &headers) else {
        return Ok(Request::from_parts(method, uri, headers, Vec::new()));
    };
    // The future tells the host how reading the body went; dropping its
    // writer says "fine" (its default), which is what a guest that read
    // the body to its end has to say.
    let (read, read_rx) = wit_future::new(|| Ok(()));
    let (stream, trailers) = WasiRequest::consume_body(request, read_rx);
    let body = read_to_end(stream, capacity, usize::MAX).await;
    drop(read);
    // Trailers are not exposed; their future is where the host says the
    // body did not arrive whole, and why.
    trailers.await?;
    let body = body.map_err(|_| internal("the request body does not fit in memory"))?;
    Ok(Request::from_parts(method, uri, headers, body))
}

/// Everything `stream` delivers, up to `limit` bytes (`Err(len)` past it:
/// the length read so far).
async fn read_to_end(
    mut stream: StreamReader<u8>,
    capacity: usize,
    limit: usize,
) -> Result<Vec<u8>, usize> {
    let mut bytes = Vec::with_capacity(capacity);
    loop {
        // A read fills the vector's spare capacity (at most): keep some.
        if bytes.capacity() - bytes.len() < READ_SIZE {
            bytes.reserve(READ_SIZE);
        }
        let (result, buf) = stream.read(bytes).await;
        bytes = buf;
        match result {
            StreamResult::Complete(_) if bytes.len() > limit => return Err(bytes.len()),
            StreamResult::Complete(_) => {}
            StreamResult::Dropped | StreamResult::Cancelled => return Ok(bytes),
        }
    }
}

/// The response for the host: head now, body written by a spawned task as
/// the host reads it.
fn respond(response: Response) -> Result<WasiResponse, ErrorCode> {
    let (status, headers, body) = response.into_parts();
    let fields = wire::fields(wire::response_fields(status, &headers, body.len()));
    let (writer, contents) = body_stream(&body);
    let (response, _sent) = WasiResponse::new(fields, contents, no_trailers());
    // A new response is 200 already: one host call less for most answers.
    if status != 200 && response.set_status_code(status).is_err() {
        let message = format!("the function answered an invalid status code {status}");
        return Err(internal(&message));
    }
    if let Some(mut writer) = writer {
        wasip3::spawn_local(async move {
            let unsent = writer.write_all(body).await;
            // The client is gone (or the host gave up on it); the host
            // knows the response is incomplete.
            if !unsent.is_empty() {
                eprintln!(
                    "wisp-sdk: writing the response body failed: {} bytes not sent",
                    unsent.len()
                );
            }
        });
    }
    Ok(response)
}

type BodyWriter = wasip3::wit_bindgen::StreamWriter<u8>;

/// A stream for a body, none for an empty one (no stream for the host to
/// drain).
fn body_stream(body: &[u8]) -> (Option<BodyWriter>, Option<StreamReader<u8>>) {
    if body.is_empty() {
        return (None, None);
    }
    let (writer, reader) = wit_stream::new();
    (Some(writer), Some(reader))
}

/// The trailers future of a body that has none: its writer, dropped at
/// once, resolves it to its default, `Ok(None)`.
fn no_trailers() -> wasip3::wit_bindgen::FutureReader<Result<Option<Trailers>, ErrorCode>> {
    let (_writer, reader) = wit_future::new(|| Ok(None));
    reader
}

/// [`http::send`](crate::http::send) over `wasi:http/client`: the async
/// call is driven to its end here, so handlers stay synchronous.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn send(request: Request) -> Result<Response, HttpError> {
    crate::block_on(send_async(request))
}

async fn send_async(request: Request) -> Result<Response, HttpError> {
    let (scheme, authority, path) = split_url(request.uri())?;
    let headers = Fields::new();
    for (name, value) in outgoing_fields(&request) {
        headers
            .append(&name, &value)
            .map_err(|e| HttpError::invalid_request(format!("header `{name}`: {e:?}")))?;
    }
    let method = wire::wasi_method(request.method());
    let described = format!("{} {}", request.method(), request.uri());
    let body = request.into_body();
    let (writer, contents) = body_stream(&body);
    let (outgoing, _sent) = WasiRequest::new(headers, contents, no_trailers(), None);
    let set = [
        outgoing.set_method(&method),
        outgoing.set_scheme(Some(&wire::wasi_scheme(&scheme))),
        outgoing.set_authority(Some(&authority)),
        outgoing.set_path_with_query(Some(&path)),
    ];
    if set.iter().any(Result::is_err) {
        return Err(HttpError::invalid_request(format!(
            "the host refused {described}"
        )));
    }
    // The body is written beside the call: the host sends the request as
    // `send` runs, and a body larger than its buffer would otherwise wait
    // with nobody reading it. A request the host refuses drops the stream,
    // which ends the write.
    if let Some(mut writer) = writer {
        wasip3::spawn_local(async move {
            writer.write_all(body).await;
        });
    }
    let response = client::send(outgoing).await.map_err(HttpError::from_code)?;
    let status = response.get_status_code();
    let headers = wire::header_map(response.get_headers().copy_all());
    let capacity = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .map_or(0, |len| len.min(MAX_RESPONSE_BODY));
    let (read, read_rx) = wit_future::new(|| Ok(()));
    let (stream, trailers) = WasiResponse::consume_body(response, read_rx);
    let bytes = read_to_end(stream, capacity, MAX_RESPONSE_BODY).await;
    drop(read);
    let bytes = bytes.map_err(|_| {
        HttpError::new(
            "HTTP-response-body-size",
            Some(format!("the body is larger than {MAX_RESPONSE_BODY} bytes")),
        )
    })?;
    // A body cut short (the upstream went away) ends like a whole one; the
    // trailers' future says which it was.
    trailers.await.map_err(HttpError::from_code)?;
    let mut out = Response::new(status).with_body(bytes);
    *out.headers_mut() = headers;
    Ok(out)
}
