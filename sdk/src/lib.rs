//! Write Wisp functions in Rust.
//!
//! A Wisp HTTP function is a WASI 0.2 component that exports
//! `wasi:http/incoming-handler` (the `wasi:http/proxy` world, spelled
//! `wisp:function/http-function` in this crate's `wit/`). This crate hides the
//! WASI plumbing: put [`#[handler]`](handler) on a function that takes a
//! [`Request`] and returns anything that implements [`IntoResponse`]:
//!
//! ```
//! use wisp_sdk::{IntoResponse, Request, Response};
//!
//! #[wisp_sdk::handler]
//! fn greet(req: Request) -> impl IntoResponse {
//!     match req.query() {
//!         "" => Response::builder()
//!             .status(400)
//!             .header("content-type", "text/plain")
//!             .body("say who to greet: /greet?you"),
//!         name => Response::text(format!("hello, {name}")),
//!     }
//! }
//!
//! // The handler stays an ordinary function, so it is tested natively:
//! let resp = greet(Request::new(wisp_sdk::Method::GET, "/greet?wisp")).into_response();
//! assert_eq!(resp.status(), 200);
//! assert_eq!(resp.body(), b"hello, wisp");
//! ```
//!
//! The crate is a `cdylib` built for `wasm32-wasip2`, which makes it a
//! component:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! wisp-sdk = "0.1"
//! ```
//!
//! ```text
//! cargo build --release --target wasm32-wasip2
//! wisp deploy greet target/wasm32-wasip2/release/greet.wasm --route /greet
//! ```
//!
//! The request body is read completely before the handler runs, and the
//! response body is written after it returns; each invocation runs in a fresh
//! instance, so there is no state to share between requests.
//!
//! # Errors and panics
//!
//! Return `Result<T, E>` where both sides implement [`IntoResponse`] to answer
//! errors with a response of your choosing. A panic traps the instance (its
//! message goes to the function's stderr) and the host answers `500` with
//! code `trap`.
//!
//! # Async handlers
//!
//! `async fn` handlers are accepted and driven by [`block_on`]. Guests have no
//! asynchronous I/O yet (every WASI call made through std or this crate
//! blocks), so this is a convenience for code written against `async` APIs,
//! not a source of concurrency.

#![deny(missing_docs)]

// Everything generated here is private to the SDK; `__private` re-exports
// the few items the `#[handler]` expansion needs. Generated code documents
// only what the WIT documents, hence the `allow`.
#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "http-function",
        // The export macro must be reachable from the function's crate.
        pub_export_macro: true,
        // Generate the WASI interfaces here rather than mapping them to
        // another crate's bindings: the SDK is their only user.
        generate_all,
        // wasi:cli's `imports` world imports this unstable interface; the
        // WIT parser needs it enabled to resolve the package even though the
        // proxy world does not use it.
        features: ["clocks-timezone"],
    });
}

mod executor;
mod request;
mod response;
mod wasi_http;

pub use executor::block_on;
pub use http::{self, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
pub use request::Request;
pub use response::{IntoResponse, IntoStatus, Response, ResponseBuilder};

/// Marks the function that handles every HTTP request sent to this component.
///
/// The function takes one [`Request`] and returns a type that implements
/// [`IntoResponse`]; it may be `async` (see [`block_on`]). A crate has at most
/// one handler. The function itself is left as written, so it can be called
/// directly in native tests.
///
/// The expansion refers to this crate as `::wisp_sdk`, so the dependency must
/// keep that name.
///
/// ```
/// use wisp_sdk::{Request, StatusCode};
///
/// #[wisp_sdk::handler]
/// async fn handle(req: Request) -> Result<String, (StatusCode, &'static str)> {
///     let name = std::str::from_utf8(req.body()).map_err(|_| (StatusCode::BAD_REQUEST, "not UTF-8"))?;
///     Ok(format!("hello, {name}"))
/// }
/// ```
///
/// A handler must return something:
///
/// ```compile_fail
/// #[wisp_sdk::handler]
/// fn handle(req: wisp_sdk::Request) {}
/// ```
pub use wisp_sdk_macros::handler;

/// Implementation details used by the `#[handler]` expansion and by test
/// guests that need raw access to `wasi:http`. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::export;
    pub use crate::bindings::exports;
    pub use crate::bindings::exports::wasi::http::incoming_handler::Guest;
    pub use crate::bindings::wasi;
    pub use crate::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
    pub use crate::wasi_http::{serve, write_all};
}
