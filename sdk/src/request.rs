//! The request a handler receives.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::router::Params;

/// An HTTP request, with its body already read in full.
///
/// The SDK builds one for each invocation; [`Request::new`] and the `with_*`
/// methods build one by hand, to test a handler natively.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    /// Path and query as the client sent them (still percent-encoded).
    uri: String,
    headers: HeaderMap,
    body: Vec<u8>,
    /// The parameters of the [`Router`](crate::Router) route that matched;
    /// empty outside a router.
    params: Params,
}

impl Request {
    /// A request with no headers and an empty body. `uri` is the path and
    /// query, e.g. `/items?page=2`; an empty `uri` stands for `/`.
    pub fn new(method: Method, uri: impl Into<String>) -> Self {
        let mut uri = uri.into();
        if uri.is_empty() {
            uri.push('/');
        }
        Request {
            method,
            uri,
            headers: HeaderMap::new(),
            body: Vec::new(),
            params: Params::default(),
        }
    }

    /// Adds a header value (keeping any earlier values of the same name).
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name or `value` not a valid value.
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
        self.headers.append(name, value);
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub(crate) fn from_parts(
        method: Method,
        uri: String,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Self {
        let mut request = Request::new(method, uri);
        request.headers = headers;
        request.body = body;
        request
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path and query, as sent (percent-encoding included), e.g.
    /// `/a%20b?x=1`.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The path, as sent (percent-encoding included), without the query.
    /// This is the full path the client asked for, including the prefix of
    /// the route that matched it.
    pub fn path(&self) -> &str {
        match self.uri.split_once('?') {
            Some((path, _)) => path,
            None => &self.uri,
        }
    }

    /// The raw query string, without the `?`; empty if there is none.
    pub fn query(&self) -> &str {
        self.uri.split_once('?').map_or("", |(_, query)| query)
    }

    /// All headers. Names are lowercase; a name sent several times has
    /// several values (see [`HeaderMap::get_all`]).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The first value of header `name` (any case), if it is present and is
    /// visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, taking it out of the request.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The body as text; invalid UTF-8 is replaced by `U+FFFD`.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The path parameters of the [`Router`](crate::Router) route that
    /// matched (`:id`, `*rest`), percent-decoded; empty outside a router.
    /// The [`Path`](crate::Path) extractor is the typed way to read them.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The path parameter `name`, percent-decoded, if the route has it.
    ///
    /// ```
    /// use wisp_sdk::{Method, Request, Router};
    ///
    /// let app = Router::new().get("/users/:id", |req: Request| {
    ///     format!("user {}", req.param("id").unwrap_or_default())
    /// });
    /// let resp = app.handle(Request::new(Method::GET, "/users/a%20b"));
    /// assert_eq!(resp.body(), b"user a b");
    /// ```
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    pub(crate) fn set_params(&mut self, params: Params) {
        self.params = params;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query() {
        let r = Request::new(Method::GET, "/a%20b?x=1&y=?");
        assert_eq!(r.path(), "/a%20b");
        assert_eq!(r.query(), "x=1&y=?");
        assert_eq!(r.uri(), "/a%20b?x=1&y=?");
        let r = Request::new(Method::GET, "/p");
        assert_eq!((r.path(), r.query()), ("/p", ""));
        let r = Request::new(Method::GET, "");
        assert_eq!((r.path(), r.query()), ("/", ""));
    }

    #[test]
    fn headers_and_body() {
        let r = Request::new(Method::POST, "/")
            .with_header("X-Multi", "a")
            .with_header("x-multi", "b")
            .with_body("h\u{e9}llo");
        assert_eq!(r.header("X-MULTI"), Some("a"));
        assert_eq!(r.headers().get_all("x-multi").iter().count(), 2);
        assert_eq!(r.header("absent"), None);
        assert_eq!(r.text(), "h\u{e9}llo");
        assert_eq!(r.into_body(), "h\u{e9}llo".as_bytes());
    }
}
