//! Extractors: handler arguments built from the request.

use std::ops::{Deref, DerefMut};

use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::de::ParamsDeserializer;
use crate::error::error_response;
use crate::router::Params;
use crate::{Error, IntoResponse, Request, Response};

/// A handler argument built from the request without taking its body:
/// any argument of a [`Handler`](crate::Handler) may be one.
///
/// A failed extraction answers the request with its [`Error`] (a `400` for
/// the SDK's extractors) and the handler is not called.
///
/// Implement it for your own types to share request parsing between
/// handlers:
///
/// ```
/// use wisp_sdk::{Error, FromRequestParts, Method, Request, Router};
///
/// struct User(String);
///
/// impl FromRequestParts for User {
///     fn from_request_parts(req: &Request) -> Result<Self, Error> {
///         match req.header("x-user") {
///             Some(user) => Ok(User(user.to_string())),
///             None => Err(Error::new(401, "who are you? (x-user)")),
///         }
///     }
/// }
///
/// let app = Router::new().get("/me", |User(name): User| format!("hi {name}"));
/// let resp = app.handle(Request::new(Method::GET, "/me"));
/// assert_eq!(resp.status(), 401);
/// let resp = app.handle(Request::new(Method::GET, "/me").with_header("x-user", "ann"));
/// assert_eq!(resp.body(), b"hi ann");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be extracted from a request's head",
    note = "only the last argument of a handler may read the body (`Json<T>`, `String`, `Vec<u8>`, `Request`); \
            the others must implement `FromRequestParts` (`Path<T>`, `Query<T>`, `Method`, `HeaderMap`, `Params`)"
)]
pub trait FromRequestParts: Sized {
    /// Builds the value from `request`, or rejects it.
    fn from_request_parts(request: &Request) -> Result<Self, Error>;
}

/// A handler argument that may take the request's body: the last argument
/// of a [`Handler`](crate::Handler) may be one. Every [`FromRequestParts`]
/// is one too.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be extracted from a request",
    note = "handler arguments are extractors: `Path<T>`, `Query<T>`, `Json<T>`, `String`, `Vec<u8>`, \
            `Method`, `HeaderMap`, `Params`, `Request`, or your own `FromRequest` type"
)]
pub trait FromRequest: Sized {
    /// Builds the value from `request`, or rejects it.
    fn from_request(request: Request) -> Result<Self, Error>;
}

impl<T: FromRequestParts> FromRequest for T {
    fn from_request(request: Request) -> Result<Self, Error> {
        T::from_request_parts(&request)
    }
}

/// The path parameters of the matched [`Router`](crate::Router) route,
/// deserialized into `T`: one value when the route has one parameter
/// (`Path<u64>`, `Path<String>`), a tuple in the pattern's order, or a
/// struct (or map) by name. Values are percent-decoded and parsed from text
/// (`"42"` into a number). A value that does not parse answers `400`.
///
/// ```
/// use wisp_sdk::{Method, Path, Request, Router};
///
/// #[derive(serde::Deserialize)]
/// struct Ids { user: String, post: u32 }
///
/// let app = Router::new()
///     .get("/users/:user", |Path(user): Path<String>| user)
///     .get("/users/:user/posts/:post", |Path(ids): Path<Ids>| {
///         format!("{} #{}", ids.user, ids.post)
///     })
///     .get("/pairs/:a/:b", |Path((a, b)): Path<(u8, u8)>| format!("{}", a + b));
///
/// let get = |uri| app.handle(Request::new(Method::GET, uri));
/// assert_eq!(get("/users/ann%20b").body(), b"ann b");
/// assert_eq!(get("/users/ann/posts/3").body(), b"ann #3");
/// assert_eq!(get("/pairs/2/3").body(), b"5");
/// assert_eq!(get("/users/ann/posts/x").status(), 400);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts for Path<T> {
    fn from_request_parts(request: &Request) -> Result<Self, Error> {
        T::deserialize(ParamsDeserializer(request.params().as_slice()))
            .map(Path)
            .map_err(|e| Error::bad_request(format!("invalid path parameters: {e}")))
    }
}

/// The query string deserialized into `T` (a struct, or a map), as an HTML
/// form would send it: `?tag=a&tag=b&limit=10` fills `tag: Vec<String>` and
/// `limit: u32`; use `Option` for parameters that may be missing. A query
/// that does not fit `T` answers `400`.
///
/// ```
/// use wisp_sdk::{Method, Query, Request, Router};
///
/// #[derive(serde::Deserialize)]
/// struct Search { q: String, limit: Option<u32> }
///
/// let app = Router::new().get("/search", |Query(s): Query<Search>| {
///     format!("{} ({})", s.q, s.limit.unwrap_or(10))
/// });
/// let resp = app.handle(Request::new(Method::GET, "/search?q=wasm%20fn"));
/// assert_eq!(resp.body(), b"wasm fn (10)");
/// let resp = app.handle(Request::new(Method::GET, "/search?limit=3"));
/// assert_eq!(resp.status(), 400);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts for Query<T> {
    fn from_request_parts(request: &Request) -> Result<Self, Error> {
        serde_html_form::from_str(request.query())
            .map(Query)
            .map_err(|e| Error::bad_request(format!("invalid query string: {e}")))
    }
}

/// A JSON body: as an argument, the request body deserialized into `T`
/// (`400` if it is not valid JSON for `T`); as a return value, `T`
/// serialized with `content-type: application/json`.
///
/// The request's `content-type` is not checked, so `curl -d '{...}'` works
/// without `-H 'content-type: application/json'`.
///
/// ```
/// use wisp_sdk::{Json, Method, Request, Router};
///
/// #[derive(serde::Deserialize, serde::Serialize)]
/// struct Todo { title: String, done: bool }
///
/// let app = Router::new().post("/todos", |Json(todo): Json<Todo>| Json(todo));
///
/// let resp = app.handle(Request::new(Method::POST, "/todos")
///     .with_body(r#"{"title":"write docs","done":false}"#));
/// assert_eq!(resp.headers()["content-type"], "application/json");
///
/// let resp = app.handle(Request::new(Method::POST, "/todos").with_body("{"));
/// assert_eq!(resp.status(), 400);
/// let body = String::from_utf8(resp.into_body()).unwrap();
/// assert!(body.starts_with(r#"{"error":{"code":"bad_request","message":"invalid JSON body: "#));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Json<T> {
    fn from_request(request: Request) -> Result<Self, Error> {
        if request.body().is_empty() {
            return Err(Error::bad_request(
                "invalid JSON body: the body is empty, expected JSON",
            ));
        }
        serde_json::from_slice(request.body())
            .map(Json)
            .map_err(|e| Error::bad_request(format!("invalid JSON body: {e}")))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => Response::ok(body).with_header(CONTENT_TYPE, "application/json"),
            Err(e) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_server_error",
                &format!("the response could not be serialized as JSON: {e}"),
            ),
        }
    }
}

impl<T> Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Json<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// The method.
impl FromRequestParts for Method {
    fn from_request_parts(request: &Request) -> Result<Self, Error> {
        Ok(request.method().clone())
    }
}

/// All headers (a copy).
impl FromRequestParts for HeaderMap {
    fn from_request_parts(request: &Request) -> Result<Self, Error> {
        Ok(request.headers().clone())
    }
}

/// The route's parameters, untyped.
impl FromRequestParts for Params {
    fn from_request_parts(request: &Request) -> Result<Self, Error> {
        Ok(request.params().clone())
    }
}

/// The whole request, body included.
impl FromRequest for Request {
    fn from_request(request: Request) -> Result<Self, Error> {
        Ok(request)
    }
}

/// The raw body.
impl FromRequest for Vec<u8> {
    fn from_request(request: Request) -> Result<Self, Error> {
        Ok(request.into_body())
    }
}

/// The body as text; a body that is not UTF-8 answers `400`.
impl FromRequest for String {
    fn from_request(request: Request) -> Result<Self, Error> {
        String::from_utf8(request.into_body())
            .map_err(|e| Error::bad_request(format!("the body is not UTF-8 text: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{Handler, Router};

    #[test]
    fn body_extractors() {
        let echo = |body: String| body;
        let r = echo.handle(Request::new(Method::POST, "/").with_body("h\u{e9}"));
        assert_eq!(r.body(), "h\u{e9}".as_bytes());
        let r = echo.handle(Request::new(Method::POST, "/").with_body(vec![0xff]));
        assert_eq!(r.status(), 400);
        let raw = |body: Vec<u8>| body.len().to_string();
        assert_eq!(
            raw.handle(Request::new(Method::POST, "/").with_body("abc"))
                .body(),
            b"3"
        );
        let json = |Json(v): Json<BTreeMap<String, u8>>| Json(v);
        let r = json.handle(Request::new(Method::POST, "/").with_body(r#"{"a":1}"#));
        assert_eq!((r.status(), r.body()), (200, &br#"{"a":1}"#[..]));
        let r = json.handle(Request::new(Method::POST, "/"));
        assert!(String::from_utf8_lossy(r.body()).contains("the body is empty"));
        let r = json.handle(Request::new(Method::POST, "/").with_body(r#"{"a":"x"}"#));
        assert_eq!(r.status(), 400);
        assert!(String::from_utf8_lossy(r.body()).contains("invalid JSON body: invalid type"));
    }

    #[test]
    fn head_extractors_and_many_arguments() {
        let all = |m: Method,
                   h: HeaderMap,
                   Path(id): Path<u32>,
                   Query(q): Query<BTreeMap<String, String>>,
                   p: Params,
                   req: Request| {
            format!(
                "{m} {} {id} {:?} {} {}",
                h.len(),
                q,
                p.len(),
                req.body().len()
            )
        };
        let app = Router::new().put("/x/:id", all);
        let r = app.handle(
            Request::new(Method::PUT, "/x/5?a=1&b=%20")
                .with_header("x-y", "z")
                .with_body("xy"),
        );
        assert_eq!(
            String::from_utf8(r.into_body()).unwrap(),
            r#"PUT 1 5 {"a": "1", "b": " "} 1 2"#
        );
    }

    #[test]
    fn async_handlers_and_results() {
        async fn show(Path(id): Path<u32>) -> Result<Json<u32>, Error> {
            if id == 0 {
                Err(Error::not_found("no zero"))
            } else {
                Ok(Json(id * 2))
            }
        }
        async fn ping() -> &'static str {
            "pong"
        }
        let app = Router::new().get("/n/:id", show).get("/ping", ping);
        let get = |uri: &str| app.handle(Request::new(Method::GET, uri));
        assert_eq!(get("/n/21").body(), b"42");
        assert_eq!(get("/n/0").status(), 404);
        assert_eq!(get("/ping").body(), b"pong");
    }

    #[test]
    fn router_factories_are_handlers() {
        fn app() -> Router {
            Router::new().get("/", || "root")
        }
        assert_eq!(app.handle(Request::new(Method::GET, "/")).body(), b"root");
    }
}
