//! A small request router: method + path pattern → handler.
//!
//! Pure logic, no WASI: it is tested natively like any Rust code.

use std::fmt;

use http::{HeaderValue, Method, StatusCode};

use crate::error::error_response;
use crate::handlers::Handler;
use crate::{Request, Response};

/// Routes requests to handlers by method and path.
///
/// Patterns are paths whose segments are literals, `:name` parameters (one
/// segment) or, as the last segment, a `*name` wildcard (the rest of the
/// path, possibly empty). Handlers are functions whose arguments are
/// [extractors](crate::FromRequest) and whose result is an
/// [`IntoResponse`](crate::IntoResponse).
///
/// ```
/// use wisp_sdk::{Json, Method, Path, Request, Router};
///
/// fn list() -> &'static str { "all todos" }
/// fn show(Path(id): Path<u64>) -> String { format!("todo {id}") }
/// fn create(Json(todo): Json<serde_json::Value>) -> Json<serde_json::Value> { Json(todo) }
///
/// let app = Router::new()
///     .get("/todos", list)
///     .post("/todos", create)
///     .get("/todos/:id", show)
///     .route(Method::PATCH, "/todos/:id", |Path(id): Path<u64>| format!("patched {id}"));
///
/// assert_eq!(app.handle(Request::new(Method::GET, "/todos/7")).body(), b"todo 7");
/// let resp = app.handle(Request::new(Method::DELETE, "/todos"));
/// assert_eq!(resp.status(), 405);
/// assert_eq!(resp.headers()["allow"], "GET, HEAD, POST");
/// ```
///
/// # Matching
///
/// - The whole request path is matched, including the prefix of the host
///   route the function is deployed under: a function deployed at `/api/*`
///   sees `/api/todos`, so its router has `.get("/api/todos", ..)`.
/// - Empty segments are ignored: `/todos/` and `//todos` match `/todos`.
/// - Literal segments are compared as sent (still percent-encoded);
///   parameters are percent-decoded.
/// - When several patterns match, the most specific wins, segment by
///   segment: a literal beats a `:param`, which beats a `*wildcard`.
/// - `HEAD` is answered by the `GET` route when no `HEAD` route matches
///   (with the body left out).
/// - No route for the path: `404` (or the [`fallback`](Router::fallback));
///   routes for the path but not the method: `405` with an `Allow` header.
///   Both have Wisp's JSON error body.
pub struct Router {
    routes: Vec<Route>,
    fallback: Option<BoxedHandler>,
}

type BoxedHandler = Box<dyn Fn(Request) -> Response>;

struct Route {
    /// `None` for [`Router::any`].
    method: Option<Method>,
    pattern: Pattern,
    handler: BoxedHandler,
}

impl Router {
    /// A router with no routes: it answers `404` to everything.
    pub fn new() -> Self {
        Router {
            routes: Vec::new(),
            fallback: None,
        }
    }

    /// Routes `method` requests for paths matching `pattern` to `handler`.
    ///
    /// # Panics
    ///
    /// If `pattern` does not start with `/`, has a parameter without a name,
    /// or has a `*wildcard` before its last segment: a route is written by
    /// the function's author, so a bad one is a bug to see at the first
    /// request (and in native tests), not an error to handle.
    pub fn route<H, T>(self, method: Method, pattern: &str, handler: H) -> Self
    where
        H: Handler<T>,
    {
        self.add(Some(method), pattern, handler)
    }

    /// Routes `GET` requests (and `HEAD` ones, see [Matching](Router#matching)).
    pub fn get<H: Handler<T>, T>(self, pattern: &str, handler: H) -> Self {
        self.route(Method::GET, pattern, handler)
    }

    /// Routes `POST` requests.
    pub fn post<H: Handler<T>, T>(self, pattern: &str, handler: H) -> Self {
        self.route(Method::POST, pattern, handler)
    }

    /// Routes `PUT` requests.
    pub fn put<H: Handler<T>, T>(self, pattern: &str, handler: H) -> Self {
        self.route(Method::PUT, pattern, handler)
    }

    /// Routes `PATCH` requests.
    pub fn patch<H: Handler<T>, T>(self, pattern: &str, handler: H) -> Self {
        self.route(Method::PATCH, pattern, handler)
    }

    /// Routes `DELETE` requests.
    pub fn delete<H: Handler<T>, T>(self, pattern: &str, handler: H) -> Self {
        self.route(Method::DELETE, pattern, handler)
    }

    /// Routes requests of every method. A route for a specific method and
    /// the same pattern takes precedence.
    ///
    /// A [`Router`] is a handler too, so this mounts one router in another:
    ///
    /// ```
    /// use wisp_sdk::{Method, Request, Router};
    ///
    /// let v1 = Router::new().get("/v1/ping", || "pong");
    /// let app = Router::new().any("/v1/*rest", v1);
    /// assert_eq!(app.handle(Request::new(Method::GET, "/v1/ping")).body(), b"pong");
    /// ```
    pub fn any<H: Handler<T>, T>(self, pattern: &str, handler: H) -> Self {
        self.add(None, pattern, handler)
    }

    /// Answers requests no route matches (instead of the default `404`).
    ///
    /// ```
    /// use wisp_sdk::{Method, Request, Router, StatusCode};
    ///
    /// let app = Router::new().fallback(|req: Request| {
    ///     (StatusCode::NOT_FOUND, format!("nothing at {}", req.path()))
    /// });
    /// assert_eq!(app.handle(Request::new(Method::GET, "/x")).body(), b"nothing at /x");
    /// ```
    pub fn fallback<H: Handler<T>, T>(mut self, handler: H) -> Self {
        self.fallback = Some(Box::new(move |req| handler.handle(req)));
        self
    }

    fn add<H: Handler<T>, T>(mut self, method: Option<Method>, pattern: &str, handler: H) -> Self {
        let pattern = match Pattern::parse(pattern) {
            Ok(pattern) => pattern,
            Err(e) => panic!("wisp_sdk::Router: invalid route `{pattern}`: {e}"),
        };
        self.routes.push(Route {
            method,
            pattern,
            handler: Box::new(move |req| handler.handle(req)),
        });
        self
    }

    /// Answers `request`: runs the handler of the best matching route with
    /// the route's parameters set on the request.
    pub fn handle(&self, mut request: Request) -> Response {
        let path = request.path().to_string();
        let segments = split_path(&path);
        let method = request.method().clone();
        match self.find(&method, &segments) {
            Found::Route(route, params, is_head_via_get) => {
                request.set_params(params);
                let response = (route.handler)(request);
                if is_head_via_get {
                    strip_body(response)
                } else {
                    response
                }
            }
            Found::WrongMethod(allowed) => method_not_allowed(&method, &path, &allowed),
            Found::Nothing => match &self.fallback {
                Some(fallback) => fallback(request),
                None => error_response(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("no route for {method} {path}"),
                ),
            },
        }
    }

    fn find(&self, method: &Method, segments: &[&str]) -> Found<'_> {
        type Candidate<'r> = Option<(&'r Route, Params, (Vec<u8>, bool))>;
        let mut best: Candidate<'_> = None;
        let mut best_via_get: Candidate<'_> = None;
        let mut allowed: Vec<Method> = Vec::new();
        for route in &self.routes {
            let Some((params, rank)) = route.pattern.matches(segments) else {
                continue;
            };
            // A route for this very method beats `any` at the same rank.
            let rank_with_method = (rank, route.method.is_some());
            let slot = match &route.method {
                None => Some(&mut best),
                Some(m) if m == method => Some(&mut best),
                Some(m) if *method == Method::HEAD && *m == Method::GET => Some(&mut best_via_get),
                Some(m) => {
                    allowed.push(m.clone());
                    None
                }
            };
            if let Some(slot) = slot
                && slot.as_ref().is_none_or(|(_, _, r)| rank_with_method > *r)
            {
                *slot = Some((route, params, rank_with_method));
            }
        }
        if let Some((route, params, _)) = best {
            return Found::Route(route, params, false);
        }
        if let Some((route, params, _)) = best_via_get {
            return Found::Route(route, params, true);
        }
        if allowed.is_empty() {
            return Found::Nothing;
        }
        if allowed.contains(&Method::GET) {
            allowed.push(Method::HEAD);
        }
        allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        allowed.dedup();
        Found::WrongMethod(allowed)
    }
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|r| {
                let method = r.method.as_ref().map_or("*", Method::as_str);
                format!("{method} {}", r.pattern.source)
            })
            .collect();
        f.debug_struct("Router")
            .field("routes", &routes)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

enum Found<'a> {
    /// The route, its parameters, and whether it is a `GET` route answering
    /// a `HEAD` request.
    Route(&'a Route, Params, bool),
    WrongMethod(Vec<Method>),
    Nothing,
}

fn method_not_allowed(method: &Method, path: &str, allowed: &[Method]) -> Response {
    let list = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("{method} is not allowed on {path}; allowed: {list}"),
    );
    if let Ok(value) = HeaderValue::try_from(list) {
        response.headers_mut().insert(http::header::ALLOW, value);
    }
    response
}

/// The response to a `HEAD` request answered by a `GET` handler: same status
/// and headers, with the length the body would have had.
fn strip_body(response: Response) -> Response {
    let len = response.body().len();
    let mut response = response.with_body(Vec::new());
    response
        .headers_mut()
        .entry(http::header::CONTENT_LENGTH)
        .or_insert_with(|| HeaderValue::from(len));
    response
}

fn split_path(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// The path parameters of the route that matched a request, in the order of
/// the pattern, percent-decoded. See [`Request::params`] and
/// [`Path`](crate::Path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `(name, value)` pairs in the order of the pattern.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many parameters there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn as_slice(&self) -> &[(String, String)] {
        &self.0
    }
}

#[derive(Debug)]
struct Pattern {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Debug, PartialEq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

impl Pattern {
    fn parse(source: &str) -> Result<Pattern, &'static str> {
        if !source.starts_with('/') {
            return Err("a route starts with `/`");
        }
        let parts = split_path(source);
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = if let Some(name) = part.strip_prefix(':') {
                if name.is_empty() {
                    return Err("a `:` parameter needs a name, e.g. `:id`");
                }
                Segment::Param(name.to_string())
            } else if let Some(name) = part.strip_prefix('*') {
                if i + 1 != parts.len() {
                    return Err("a `*` wildcard must be the last segment");
                }
                Segment::Rest(name.to_string())
            } else {
                Segment::Literal(part.to_string())
            };
            segments.push(segment);
        }
        Ok(Pattern {
            source: source.to_string(),
            segments,
        })
    }

    /// The parameters if `path` matches, and the match's rank: one byte per
    /// pattern segment, higher for more specific segments, so that comparing
    /// ranks picks the most specific route.
    fn matches(&self, path: &[&str]) -> Option<(Params, Vec<u8>)> {
        let mut params = Vec::new();
        let mut rank = Vec::with_capacity(self.segments.len());
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Rest(name) => {
                    if !name.is_empty() {
                        let rest: Vec<String> = path[i.min(path.len())..]
                            .iter()
                            .map(|s| percent_decode(s))
                            .collect();
                        params.push((name.clone(), rest.join("/")));
                    }
                    rank.push(0);
                    return Some((Params(params), rank));
                }
                Segment::Literal(literal) => {
                    if path.get(i) != Some(&literal.as_str()) {
                        return None;
                    }
                    rank.push(2);
                }
                Segment::Param(name) => {
                    params.push((name.clone(), percent_decode(path.get(i)?)));
                    rank.push(1);
                }
            }
        }
        (path.len() == self.segments.len()).then_some((Params(params), rank))
    }
}

/// Decodes `%XX` escapes; invalid escapes are kept as they are, and invalid
/// UTF-8 becomes `U+FFFD`.
pub(crate) fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IntoResponse;

    fn params(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
        let pattern = Pattern::parse(pattern).unwrap();
        pattern.matches(&split_path(path)).map(|(p, _)| p.0)
    }

    fn pairs(list: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            list.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn parses_patterns() {
        let p = Pattern::parse("/a/:id/*rest").unwrap();
        assert_eq!(
            p.segments,
            [
                Segment::Literal("a".into()),
                Segment::Param("id".into()),
                Segment::Rest("rest".into())
            ]
        );
        assert!(Pattern::parse("/").unwrap().segments.is_empty());
        assert!(Pattern::parse("a").is_err());
        assert!(Pattern::parse("/:").is_err());
        assert!(Pattern::parse("/*rest/x").is_err());
    }

    #[test]
    fn matches_literals_params_and_rest() {
        assert_eq!(params("/todos", "/todos"), pairs(&[]));
        assert_eq!(params("/todos", "/todos/"), pairs(&[]));
        assert_eq!(params("/todos", "//todos"), pairs(&[]));
        assert_eq!(params("/todos", "/todo"), None);
        assert_eq!(params("/todos", "/todos/1"), None);
        assert_eq!(params("/", "/"), pairs(&[]));
        assert_eq!(params("/", "/x"), None);
        assert_eq!(params("/todos/:id", "/todos/42"), pairs(&[("id", "42")]));
        assert_eq!(params("/todos/:id", "/todos"), None);
        assert_eq!(
            params("/u/:a/p/:b", "/u/x%20y/p/%E2%9C%93"),
            pairs(&[("a", "x y"), ("b", "\u{2713}")])
        );
        assert_eq!(
            params("/files/*path", "/files/a/b%2Fc/d"),
            pairs(&[("path", "a/b/c/d")])
        );
        assert_eq!(params("/files/*path", "/files"), pairs(&[("path", "")]));
        assert_eq!(params("/files/*", "/files/x"), pairs(&[]));
        assert_eq!(params("/*rest", "/"), pairs(&[("rest", "")]));
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        assert_eq!(percent_decode("plain"), "plain");
    }

    fn call(router: &Router, method: Method, uri: &str) -> Response {
        router.handle(Request::new(method, uri))
    }

    fn body(r: &Response) -> &str {
        std::str::from_utf8(r.body()).unwrap()
    }

    #[test]
    fn most_specific_route_wins() {
        let app = Router::new()
            .get("/files/*rest", || "rest")
            .get("/files/:name", || "param")
            .get("/files/readme", || "literal")
            .any("/files/readme", || "any");
        assert_eq!(body(&call(&app, Method::GET, "/files/readme")), "literal");
        assert_eq!(body(&call(&app, Method::POST, "/files/readme")), "any");
        assert_eq!(body(&call(&app, Method::GET, "/files/x")), "param");
        assert_eq!(body(&call(&app, Method::GET, "/files/x/y")), "rest");
        assert_eq!(body(&call(&app, Method::GET, "/files")), "rest");
        // Same rank: the first registered wins.
        let app = Router::new().get("/:a", || "first").get("/:b", || "second");
        assert_eq!(body(&call(&app, Method::GET, "/x")), "first");
    }

    #[test]
    fn not_found_and_method_not_allowed() {
        let app = Router::new()
            .get("/todos", || "list")
            .post("/todos", || "create")
            .delete("/todos/:id", || "gone");
        let r = call(&app, Method::GET, "/nope?x=1");
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(
            body(&r),
            r#"{"error":{"code":"not_found","message":"no route for GET /nope"}}"#
        );
        let r = call(&app, Method::PUT, "/todos");
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "GET, HEAD, POST");
        assert!(body(&r).contains(r#""code":"method_not_allowed""#));
        let r = call(&app, Method::GET, "/todos/1");
        assert_eq!(
            (r.status(), r.headers()["allow"].as_bytes()),
            (405, &b"DELETE"[..])
        );
    }

    #[test]
    fn head_uses_get_without_the_body() {
        let app = Router::new().get("/x", || "hello");
        let r = call(&app, Method::HEAD, "/x");
        assert_eq!((r.status(), r.body()), (200, &b""[..]));
        assert_eq!(r.headers()["content-length"], "5");
        let app = app.route(Method::HEAD, "/x", || StatusCode::IM_A_TEAPOT);
        assert_eq!(call(&app, Method::HEAD, "/x").status(), 418);
    }

    #[test]
    fn fallback_and_nesting() {
        let api = Router::new().get("/api/ping", || "pong");
        let app = Router::new()
            .any("/api/*rest", api)
            .fallback(|req: Request| (StatusCode::NOT_FOUND, format!("no {}", req.path())));
        assert_eq!(body(&call(&app, Method::GET, "/api/ping")), "pong");
        // The nested router's own 404, not the outer fallback.
        let r = call(&app, Method::GET, "/api/pong");
        assert!(body(&r).contains("no route for GET /api/pong"));
        assert_eq!(body(&call(&app, Method::GET, "/other")), "no /other");
        let r = Router::default().handle(Request::new(Method::GET, "/"));
        assert_eq!(r.status(), 404);
        assert!(format!("{app:?}").contains("* /api/*rest"));
        let _ = ().into_response();
    }

    #[test]
    #[should_panic(expected = "invalid route `nope`")]
    fn bad_patterns_panic() {
        let _ = Router::new().get("nope", || "x");
    }
}
