//! HTTP: the `http` crate (its types re-exported) and an outbound
//! client over `wasi:http/outgoing-handler`.
//!
//! [`Request`] and [`Response`] here are the SDK's (the same as
//! [`wisp_sdk::Request`](crate::Request) and
//! [`wisp_sdk::Response`](crate::Response)), so one type describes both the
//! requests a function receives and the ones it sends.
//!
//! ```no_run
//! use wisp_sdk::http::{self, Method, Request};
//!
//! fn call_upstream() -> Result<String, wisp_sdk::Error> {
//!     let resp = http::get("http://127.0.0.1:3000/status")?;
//!     let posted = http::send(
//!         Request::new(Method::POST, "http://127.0.0.1:3000/events")
//!             .with_header("content-type", "application/json")
//!             .with_body(r#"{"kind":"ping"}"#),
//!     )?;
//!     Ok(format!("{} then {}", resp.status(), posted.status()))
//! }
//! ```
//!
//! The host decides which hosts a function may call (`wisp deploy
//! --allow-outbound HOST`): a request to any
//! other fails with [`HttpError::code`] `HTTP-request-denied`.
//!
//! Calls block until the response head has arrived, then read the body
//! into memory, up to [`MAX_RESPONSE_BODY`] bytes. Outside a Wisp host
//! (`cargo test`), every call fails with code `unsupported`.

use std::fmt;
// The glob below brings `http::Result`; std's is the one meant in this
// module (and `wisp_sdk::http::Result` stays `http::Result`).
#[allow(hidden_glob_reexports)]
use std::result::Result;

pub use ::http::*;

pub use crate::{Request, Response};

/// The largest response body [`send`] reads; a longer body fails with code
/// `HTTP-response-body-size`, so a runaway upstream cannot exhaust the
/// function's memory.
pub const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

/// Sends `request` and returns the response, body read in full.
///
/// The request's [`uri`](Request::uri) is an absolute URL
/// (`http://host:port/path?query` or `https://...`). A `content-length` is
/// added when the body is not empty and none is set.
///
/// ```no_run
/// use wisp_sdk::http::{self, Method, Request};
///
/// let resp = http::send(Request::new(Method::GET, "https://example.com/").with_header("accept", "text/html"))?;
/// println!("{} bytes", resp.body().len());
/// # Ok::<(), wisp_sdk::http::HttpError>(())
/// ```
pub fn send(request: Request) -> Result<Response, HttpError> {
    imp::send(request)
}

/// `GET url`.
///
/// ```no_run
/// let resp = wisp_sdk::http::get("http://127.0.0.1:3000/")?;
/// assert_eq!(resp.status(), 200);
/// # Ok::<(), wisp_sdk::http::HttpError>(())
/// ```
pub fn get(url: &str) -> Result<Response, HttpError> {
    send(Request::new(Method::GET, url))
}

/// Why an outbound request failed: the host's `wasi:http` error code (e.g.
/// `HTTP-request-denied`, `connection-refused`, `DNS-error`), or
/// `invalid-url` / `invalid-request` / `unsupported` for requests the SDK
/// could not send.
///
/// `?` in a handler turns it into a [`wisp_sdk::Error`](crate::Error)
/// answering `502 Bad Gateway` (`500` for a request the function built
/// wrong), with this error's text.
///
/// ```
/// let e = wisp_sdk::http::HttpError::new("HTTP-request-denied", None);
/// assert_eq!(e.to_string(), "outbound HTTP request failed: HTTP-request-denied");
/// assert_eq!(wisp_sdk::Error::from(e).status(), 502);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    code: String,
    detail: Option<String>,
}

impl HttpError {
    /// An error with `code` (a `wasi:http` error-code name) and an optional
    /// detail.
    pub fn new(code: impl Into<String>, detail: Option<String>) -> Self {
        HttpError {
            code: code.into(),
            detail,
        }
    }

    /// The error code, as named in `wasi:http` (`HTTP-request-denied`,
    /// `connection-refused`, ...) or by the SDK (`invalid-url`,
    /// `invalid-request`, `unsupported`).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// More about the error, if the host or the SDK said more.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    fn is_request_error(&self) -> bool {
        matches!(self.code.as_str(), "invalid-url" | "invalid-request")
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "outbound HTTP request failed: {}", self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for crate::Error {
    fn from(e: HttpError) -> Self {
        let status = if e.is_request_error() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_GATEWAY
        };
        crate::Error::new(status, e.to_string()).with_code("upstream_error")
    }
}

/// The header fields of an outbound request: its headers, plus a
/// `content-length` when the body is not empty and none is set.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn outgoing_fields(request: &Request) -> Vec<(String, Vec<u8>)> {
    let mut entries: Vec<(String, Vec<u8>)> = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    if !request.body().is_empty() && !request.headers().contains_key(header::CONTENT_LENGTH) {
        entries.push((
            "content-length".into(),
            request.body().len().to_string().into_bytes(),
        ));
    }
    entries
}

/// Splits an absolute URL into scheme, authority and path-and-query.
pub(crate) fn split_url(url: &str) -> Result<(uri::Scheme, String, String), HttpError> {
    let invalid = |why: &str| HttpError::new("invalid-url", Some(format!("`{url}`: {why}")));
    let uri: Uri = url.parse().map_err(|e| invalid(&format!("{e}")))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| invalid("not an absolute URL (expected http://host/...)"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| invalid("no host"))?
        .to_string();
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.to_string());
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    Ok((scheme, authority, path))
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::*;

    pub(super) fn send(request: Request) -> Result<Response, HttpError> {
        split_url(request.uri())?;
        Err(HttpError::new(
            "unsupported",
            Some("outbound HTTP needs a Wisp host (it is not simulated in native tests)".into()),
        ))
    }
}

// WASI 0.3: `wasi:http/client`, in wasi_http_p3.rs.
#[cfg(all(target_arch = "wasm32", wisp_p3))]
mod imp {
    pub(super) use crate::wasi_http_p3::send;
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
impl HttpError {
    /// The error for a `wasi:http` error code.
    pub(crate) fn from_code(code: crate::wasi::http::types::ErrorCode) -> HttpError {
        let (name, detail) = crate::wire::error_code_name(&code);
        HttpError::new(name, detail)
    }

    /// The error for a request the SDK could not send as built.
    pub(crate) fn invalid_request(why: String) -> HttpError {
        HttpError::new("invalid-request", Some(why))
    }
}

// WASI 0.2: `wasi:http/outgoing-handler`.
#[cfg(all(target_arch = "wasm32", not(wisp_p3)))]
mod imp {
    use super::*;
    use crate::bindings::wasi::http::outgoing_handler;
    use crate::bindings::wasi::http::types::{Fields, IncomingBody, OutgoingBody, OutgoingRequest};
    use crate::bindings::wasi::io::streams::StreamError;
    use crate::wasi_http::write_all;
    use crate::wire::{self, header_map};

    fn from_code(code: crate::wasi::http::types::ErrorCode) -> HttpError {
        HttpError::from_code(code)
    }

    fn invalid_request(why: String) -> HttpError {
        HttpError::invalid_request(why)
    }

    pub(super) fn send(request: Request) -> Result<Response, HttpError> {
        let (scheme, authority, path) = split_url(request.uri())?;
        let headers = Fields::new();
        for (name, value) in outgoing_fields(&request) {
            headers
                .append(&name, &value)
                .map_err(|e| invalid_request(format!("header `{name}`: {e:?}")))?;
        }
        let outgoing = OutgoingRequest::new(headers);
        let method = wire::wasi_method(request.method());
        let scheme = wire::wasi_scheme(&scheme);
        let set = [
            outgoing.set_method(&method),
            outgoing.set_scheme(Some(&scheme)),
            outgoing.set_authority(Some(&authority)),
            outgoing.set_path_with_query(Some(&path)),
        ];
        if set.iter().any(Result::is_err) {
            return Err(invalid_request(format!(
                "the host refused {} {}",
                request.method(),
                request.uri()
            )));
        }
        let body = outgoing
            .body()
            .map_err(|()| invalid_request("the request body was already taken".into()))?;
        // The body is written after `handle`: the host starts sending the
        // request then, and a body larger than its buffer would otherwise
        // block with nobody reading it.
        let pending = outgoing_handler::handle(outgoing, None).map_err(from_code)?;
        {
            let stream = body.write().map_err(|()| {
                invalid_request("the request body stream was already taken".into())
            })?;
            let written = if request.body().is_empty() {
                Ok(())
            } else {
                write_all(&stream, request.body())
            };
            drop(stream);
            if let Err(e) = written {
                // A request the host refused (denied, unreachable) closes
                // the body stream: the response's error says why.
                pending.subscribe().block();
                if let Some(Ok(Err(code))) = pending.get() {
                    return Err(from_code(code));
                }
                return Err(match e {
                    StreamError::LastOperationFailed(e) => {
                        crate::bindings::wasi::http::types::http_error_code(&e)
                            .map(from_code)
                            .unwrap_or_else(|| {
                                HttpError::new("internal-error", Some(e.to_debug_string()))
                            })
                    }
                    StreamError::Closed => HttpError::new("connection-terminated", None),
                });
            }
        }
        if let Err(code) = OutgoingBody::finish(body, None) {
            pending.subscribe().block();
            if let Some(Ok(Err(code))) = pending.get() {
                return Err(from_code(code));
            }
            return Err(from_code(code));
        }

        let response = loop {
            match pending.get() {
                Some(result) => break result,
                None => pending.subscribe().block(),
            }
        };
        let response = response
            .map_err(|()| {
                HttpError::new(
                    "internal-error",
                    Some("the response was already taken".into()),
                )
            })?
            .map_err(from_code)?;
        let status = response.status();
        let headers = header_map(response.headers().entries());
        let body = response.consume().map_err(|()| {
            HttpError::new(
                "internal-error",
                Some("the response body was already taken".into()),
            )
        })?;
        let bytes = read_limited(&body, &headers);
        drop(body);
        drop(response);
        drop(pending);
        let bytes = bytes?;
        let mut out = Response::new(status).with_body(bytes);
        *out.headers_mut() = headers;
        Ok(out)
    }

    fn read_limited(body: &IncomingBody, headers: &HeaderMap) -> Result<Vec<u8>, HttpError> {
        let stream = body.stream().map_err(|()| {
            HttpError::new(
                "internal-error",
                Some("the response body stream was already taken".into()),
            )
        })?;
        let capacity = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .map_or(0, |len| len.min(MAX_RESPONSE_BODY));
        let mut bytes = Vec::with_capacity(capacity);
        let result = loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if bytes.len() + chunk.len() > MAX_RESPONSE_BODY {
                        break Err(HttpError::new(
                            "HTTP-response-body-size",
                            Some(format!("the body is larger than {MAX_RESPONSE_BODY} bytes")),
                        ));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break Ok(bytes),
                Err(StreamError::LastOperationFailed(e)) => {
                    break Err(crate::bindings::wasi::http::types::http_error_code(&e)
                        .map(from_code)
                        .unwrap_or_else(|| {
                            HttpError::new("HTTP-response-incomplete", Some(e.to_debug_string()))
                        }));
                }
            }
        };
        drop(stream);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let (scheme, authority, path) = split_url("http://127.0.0.1:8080/a?b=1").unwrap();
        assert_eq!(
            (scheme.as_str(), authority.as_str(), path.as_str()),
            ("http", "127.0.0.1:8080", "/a?b=1")
        );
        let (_, _, path) = split_url("https://example.com").unwrap();
        assert_eq!(path, "/");
        assert_eq!(split_url("/relative").unwrap_err().code(), "invalid-url");
        assert_eq!(split_url("http://").unwrap_err().code(), "invalid-url");
    }

    #[test]
    fn outbound_requests_get_a_length_for_their_body() {
        let get = Request::new(Method::GET, "http://a/").with_header("accept", "text/plain");
        assert_eq!(
            outgoing_fields(&get),
            [("accept".to_string(), b"text/plain".to_vec())]
        );
        let post = Request::new(Method::POST, "http://a/").with_body("hello");
        assert_eq!(
            outgoing_fields(&post),
            [("content-length".to_string(), b"5".to_vec())]
        );
        let set = post.with_header("content-length", "5");
        assert_eq!(outgoing_fields(&set).len(), 1);
    }

    #[test]
    fn errors_become_responses() {
        let e = HttpError::new("connection-refused", Some("port 1".into()));
        assert_eq!(
            e.to_string(),
            "outbound HTTP request failed: connection-refused (port 1)"
        );
        let e = crate::Error::from(e);
        assert_eq!((e.status().as_u16(), e.code()), (502, "upstream_error"));
        let e = crate::Error::from(HttpError::new("invalid-url", None));
        assert_eq!(e.status(), 500);
        assert_eq!(
            get("http://127.0.0.1:1/").unwrap_err().code(),
            "unsupported"
        );
    }
}
