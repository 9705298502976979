//! The response a handler returns, and the conversions into it.

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const OCTET_STREAM: &str = "application/octet-stream";

/// An HTTP response: status, headers and a body held in memory.
///
/// The SDK writes it to the host after the handler returns, adding a
/// `content-length` header unless one is set.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Response {
    /// A response with `status` (a `u16` or a [`StatusCode`]), no headers and
    /// an empty body.
    ///
    /// A status outside `100..=999` is not checked here: the host rejects it
    /// and answers `500` instead.
    pub fn new(status: impl IntoStatus) -> Self {
        Response {
            status: status.into_status(),
            headers: HeaderMap::new(),
            body: Vec::new(),
        }
    }

    /// A builder, starting from status `200`:
    ///
    /// ```
    /// # use wisp_sdk::Response;
    /// let resp = Response::builder()
    ///     .status(201)
    ///     .header("location", "/items/7")
    ///     .body("created");
    /// assert_eq!(resp.status(), 201);
    /// ```
    pub fn builder() -> ResponseBuilder {
        ResponseBuilder {
            response: Response::new(200),
        }
    }

    /// `200 OK` with `body` and no `content-type`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Response::new(200).with_body(body)
    }

    /// `200 OK` with a `text/plain; charset=utf-8` body.
    pub fn text(body: impl Into<String>) -> Self {
        Response::ok(body.into()).with_header(CONTENT_TYPE, TEXT_PLAIN)
    }

    /// `404 Not Found` with a short plain-text body.
    pub fn not_found() -> Self {
        (StatusCode::NOT_FOUND, "not found").into_response()
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The headers, to change them.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, taking it out of the response.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// Replaces the status.
    pub fn with_status(mut self, status: impl IntoStatus) -> Self {
        self.status = status.into_status();
        self
    }

    /// Sets a header, replacing any values it had.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name or `value` not a valid header
    /// value (for names and values computed at run time, build them with
    /// [`HeaderName::try_from`] and [`HeaderValue::try_from`] and use
    /// [`headers_mut`](Self::headers_mut)).
    pub fn with_header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        K::Error: Into<http::Error>,
        V: TryInto<HeaderValue>,
        V::Error: Into<http::Error>,
    {
        let name = name
            .try_into()
            .map_err(Into::into)
            .expect("invalid header name");
        let value = value
            .try_into()
            .map_err(Into::into)
            .expect("invalid header value");
        self.headers.insert(name, value);
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets `content-type` to `value` unless the response has one.
    fn default_content_type(mut self, value: &'static str) -> Self {
        self.headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static(value));
        self
    }

    pub(crate) fn into_parts(self) -> (u16, HeaderMap, Vec<u8>) {
        (self.status, self.headers, self.body)
    }
}

/// Builds a [`Response`]; see [`Response::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.body(..)` is called"]
pub struct ResponseBuilder {
    response: Response,
}

impl ResponseBuilder {
    /// Sets the status (a `u16` or a [`StatusCode`]).
    pub fn status(mut self, status: impl IntoStatus) -> Self {
        self.response.status = status.into_status();
        self
    }

    /// Adds a header value (keeping earlier values of the same name).
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name or `value` not a valid header
    /// value, like [`Response::with_header`].
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        K::Error: Into<http::Error>,
        V: TryInto<HeaderValue>,
        V::Error: Into<http::Error>,
    {
        let name = name
            .try_into()
            .map_err(Into::into)
            .expect("invalid header name");
        let value = value
            .try_into()
            .map_err(Into::into)
            .expect("invalid header value");
        self.response.headers.append(name, value);
        self
    }

    /// Sets the body and returns the finished response.
    pub fn body(self, body: impl Into<Vec<u8>>) -> Response {
        self.response.with_body(body)
    }

    /// Returns the response with an empty body.
    pub fn empty(self) -> Response {
        self.response
    }
}

/// An HTTP status code: a `u16` (e.g. `404`) or a [`StatusCode`].
pub trait IntoStatus {
    /// The code as a number.
    fn into_status(self) -> u16;
}

impl IntoStatus for u16 {
    fn into_status(self) -> u16 {
        self
    }
}

impl IntoStatus for StatusCode {
    fn into_status(self) -> u16 {
        self.as_u16()
    }
}

/// What a handler may return: anything that converts into a [`Response`].
///
/// | type | response |
/// |------|----------|
/// | [`Response`] | itself |
/// | `String`, `&'static str` | `200`, `text/plain; charset=utf-8` |
/// | `Vec<u8>` | `200`, `application/octet-stream` |
/// | [`Json<T>`](crate::Json) | `200`, `application/json` (`500` if `T` fails to serialize) |
/// | [`StatusCode`] | that status, empty body |
/// | `()` | `204 No Content` |
/// | [`Error`](crate::Error) | its status, Wisp's JSON error body |
/// | `(u16, T)`, `(StatusCode, T)` | `T`'s response with that status |
/// | `Result<T, E>` | `T`'s or `E`'s response |
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be turned into a response",
    label = "not a response",
    note = "a handler returns a type that implements `wisp_sdk::IntoResponse`: \
            `Response`, `String`, `&'static str`, `Vec<u8>`, `Json<T>`, `StatusCode`, `()`, \
            `wisp_sdk::Error`, `(StatusCode, T)` or `Result<T, E>` of those"
)]
pub trait IntoResponse {
    /// Converts `self` into a response.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::ok(self).default_content_type(TEXT_PLAIN)
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        Response::ok(self).default_content_type(TEXT_PLAIN)
    }
}

impl IntoResponse for Vec<u8> {
    fn into_response(self) -> Response {
        Response::ok(self).default_content_type(OCTET_STREAM)
    }
}

impl IntoResponse for StatusCode {
    fn into_response(self) -> Response {
        Response::new(self)
    }
}

impl IntoResponse for () {
    fn into_response(self) -> Response {
        Response::new(StatusCode::NO_CONTENT)
    }
}

impl<S: IntoStatus, T: IntoResponse> IntoResponse for (S, T) {
    fn into_response(self) -> Response {
        self.1.into_response().with_status(self.0)
    }
}

impl<T: IntoResponse, E: IntoResponse> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(ok) => ok.into_response(),
            Err(err) => err.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_type(r: &Response) -> &str {
        r.headers()[CONTENT_TYPE].to_str().unwrap()
    }

    #[test]
    fn conversions() {
        let r = "hi".into_response();
        assert_eq!(
            (r.status(), r.body(), content_type(&r)),
            (200, &b"hi"[..], TEXT_PLAIN)
        );
        let r = String::from("hi").into_response();
        assert_eq!(content_type(&r), TEXT_PLAIN);
        let r = vec![1u8, 2].into_response();
        assert_eq!((r.body(), content_type(&r)), (&[1u8, 2][..], OCTET_STREAM));
        let r = (404, "gone").into_response();
        assert_eq!((r.status(), r.body()), (404, &b"gone"[..]));
        let r = (StatusCode::CREATED, Response::ok("x")).into_response();
        assert_eq!(r.status(), 201);
        assert!(r.headers().is_empty());
        let r: Result<&'static str, (u16, String)> = Err((400, "bad".into()));
        assert_eq!(r.into_response().status(), 400);
        let r: Result<&'static str, (u16, String)> = Ok("good");
        assert_eq!(r.into_response().body(), b"good");
        let r = StatusCode::ACCEPTED.into_response();
        assert_eq!((r.status(), r.body()), (202, &b""[..]));
        assert_eq!(().into_response().status(), 204);
        assert_eq!((StatusCode::OK, ()).into_response().status(), 200);
    }

    #[test]
    fn builder_and_helpers() {
        let r = Response::builder()
            .status(StatusCode::ACCEPTED)
            .header("x-a", "1")
            .header("x-a", "2")
            .header("content-type", "application/json")
            .body("{}");
        assert_eq!(r.status(), 202);
        assert_eq!(r.headers().get_all("x-a").iter().count(), 2);
        // A content-type already set is kept by the conversions.
        assert_eq!(content_type(&r.into_response()), "application/json");
        assert_eq!(Response::builder().empty(), Response::new(200));
        let r = Response::text("t");
        assert_eq!((r.status(), content_type(&r)), (200, TEXT_PLAIN));
        assert_eq!(Response::not_found().status(), 404);
        let r = Response::ok("x")
            .with_header("x-b", "1")
            .with_header("x-b", "2");
        assert_eq!(r.headers().get_all("x-b").iter().count(), 1);
    }
}
