//! What can handle a request: functions of extractors, and routers.

use std::future::Future;

use crate::extract::{FromRequest, FromRequestParts};
use crate::{IntoResponse, Request, Response, Router, block_on};

/// Something that answers a request: what [`Router`] routes to and what
/// [`#[handler]`](crate::handler) exports.
///
/// Implemented for
/// - functions and closures (`async` too) of up to 6 arguments that are
///   [extractors](FromRequest) and return an [`IntoResponse`]: every
///   argument but the last implements [`FromRequestParts`] (it only looks
///   at the request), the last one [`FromRequest`] (it may take the body);
/// - [`Router`], and functions of no arguments that return one.
///
/// The type parameter `T` only tells the implementations apart; it is
/// inferred.
///
/// ```
/// use wisp_sdk::{Handler, Json, Method, Path, Query, Request};
///
/// #[derive(serde::Deserialize)]
/// struct Page { limit: Option<u32> }
///
/// fn handler(Path(id): Path<String>, Query(page): Query<Page>, Json(body): Json<Vec<u8>>) -> String {
///     format!("{id} {:?} {}", page.limit, body.len())
/// }
///
/// // No router here, so no path parameters: extracting one fails with 400.
/// let resp = handler.handle(Request::new(Method::POST, "/?limit=3").with_body("[1,2]"));
/// assert_eq!(resp.status(), 400);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Wisp handler",
    label = "not a handler",
    note = "a handler is a function (or `async fn`) of at most 6 extractor arguments \
            (`Path<T>`, `Query<T>`, `Json<T>`, `String`, `Vec<u8>`, `Method`, `HeaderMap`, \
            `Request`; the body-reading one last) returning a type that implements \
            `IntoResponse`, or a `Router`, or a function of no arguments returning a `Router`"
)]
pub trait Handler<T>: 'static {
    /// Answers `request`.
    fn handle(&self, request: Request) -> Response;
}

/// Types that tell the implementations of [`Handler`] apart.
#[doc(hidden)]
pub mod marker {
    /// A function returning a response.
    pub struct Blocking;
    /// An `async` function.
    pub struct Async;
    /// A function returning a [`Router`](crate::Router).
    pub struct App;
    /// A [`Router`](crate::Router) itself.
    pub struct Nested;
}

impl Handler<marker::Nested> for Router {
    fn handle(&self, request: Request) -> Response {
        self.handle(request)
    }
}

impl<F> Handler<marker::App> for F
where
    F: Fn() -> Router + 'static,
{
    fn handle(&self, request: Request) -> Response {
        self().handle(request)
    }
}

impl<F, R> Handler<(marker::Blocking,)> for F
where
    F: Fn() -> R + 'static,
    R: IntoResponse,
{
    fn handle(&self, _request: Request) -> Response {
        self().into_response()
    }
}

impl<F, Fut> Handler<(marker::Async,)> for F
where
    F: Fn() -> Fut + 'static,
    Fut: Future,
    Fut::Output: IntoResponse,
{
    fn handle(&self, _request: Request) -> Response {
        block_on(self()).into_response()
    }
}

/// Runs an extractor, answering its rejection if it fails.
macro_rules! extract {
    ($e:expr) => {
        match $e {
            Ok(value) => value,
            Err(rejection) => return rejection.into_response(),
        }
    };
}

macro_rules! impl_handler {
    ($($part:ident),* ; $last:ident) => {
        #[allow(non_snake_case)]
        impl<F, R, $($part,)* $last> Handler<(marker::Blocking, $($part,)* $last,)> for F
        where
            F: Fn($($part,)* $last) -> R + 'static,
            R: IntoResponse,
            $($part: FromRequestParts,)*
            $last: FromRequest,
        {
            fn handle(&self, request: Request) -> Response {
                $(let $part = extract!($part::from_request_parts(&request));)*
                let $last = extract!($last::from_request(request));
                self($($part,)* $last).into_response()
            }
        }

        #[allow(non_snake_case)]
        impl<F, Fut, $($part,)* $last> Handler<(marker::Async, $($part,)* $last,)> for F
        where
            F: Fn($($part,)* $last) -> Fut + 'static,
            Fut: Future,
            Fut::Output: IntoResponse,
            $($part: FromRequestParts,)*
            $last: FromRequest,
        {
            fn handle(&self, request: Request) -> Response {
                $(let $part = extract!($part::from_request_parts(&request));)*
                let $last = extract!($last::from_request(request));
                block_on(self($($part,)* $last)).into_response()
            }
        }
    };
}

impl_handler!(; T1);
impl_handler!(T1; T2);
impl_handler!(T1, T2; T3);
impl_handler!(T1, T2, T3; T4);
impl_handler!(T1, T2, T3, T4; T5);
impl_handler!(T1, T2, T3, T4, T5; T6);
