//! Write Wisp functions in Rust.
//!
//! A Wisp HTTP function is a WASI 0.2 component that exports
//! `wasi:http/incoming-handler` (the `wasi:http/proxy` world), or a WASI 0.3
//! one that exports `wasi:http/handler` (the `service` world). This crate
//! hides the WASI plumbing and gives handlers typed access to Wisp's host
//! capabilities: key-value storage ([`kv`]), configuration and secrets
//! ([`config`]), logging ([`log`]) and outbound HTTP ([`http`]).
//!
//! # A router
//!
//! Put [`#[handler]`](handler) on a function of no arguments that returns a
//! [`Router`]. Handlers take [extractors](FromRequest) as arguments and
//! return anything that implements [`IntoResponse`]; a failed extraction
//! answers `400` with a JSON error before the handler runs.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use wisp_sdk::{kv, Error, Json, Path, Router, StatusCode};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Note { text: String }
//!
//! #[wisp_sdk::handler]
//! fn app() -> Router {
//!     Router::new()
//!         .post("/notes", create)
//!         .get("/notes/:id", show)
//! }
//!
//! fn create(Json(note): Json<Note>) -> Result<(StatusCode, Json<u64>), Error> {
//!     let id = kv::increment("next-id", 1)? as u64;
//!     kv::set_json(&format!("note:{id}"), &note)?;
//!     Ok((StatusCode::CREATED, Json(id)))
//! }
//!
//! fn show(Path(id): Path<u64>) -> Result<Json<Note>, Error> {
//!     kv::get_json(&format!("note:{id}"))?
//!         .map(Json)
//!         .ok_or_else(|| Error::not_found(format!("no note {id}")))
//! }
//!
//! // Handlers and routers are ordinary Rust, tested natively (key-value is
//! // simulated in memory outside a Wisp host):
//! use wisp_sdk::{Method, Request};
//! let created = app().handle(Request::new(Method::POST, "/notes").with_body(r#"{"text":"hi"}"#));
//! assert_eq!((created.status(), created.body()), (201, &b"1"[..]));
//! let shown = app().handle(Request::new(Method::GET, "/notes/1"));
//! assert_eq!(shown.body(), br#"{"text":"hi"}"#);
//! assert_eq!(app().handle(Request::new(Method::GET, "/notes/2")).status(), 404);
//! assert_eq!(app().handle(Request::new(Method::POST, "/notes").with_body("{")).status(), 400);
//! ```
//!
//! # A single handler
//!
//! `#[handler]` also takes one handler function, for a function with one
//! endpoint (deployed under any route):
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
//! let resp = greet(Request::new(wisp_sdk::Method::GET, "/greet?wisp")).into_response();
//! assert_eq!(resp.status(), 200);
//! assert_eq!(resp.body(), b"hello, wisp");
//! ```
//!
//! # Building and deploying
//!
//! The crate is a `cdylib` built for `wasm32-wasip2`, which makes it a
//! component (`wisp new NAME` writes such a crate):
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
//! wisp deploy greet --from . --route /greet
//! # or, by hand:
//! cargo build --release --target wasm32-wasip2
//! wisp deploy greet target/wasm32-wasip2/release/greet.wasm --route /greet
//! ```
//!
//! The request body is read completely before the handler runs, and the
//! response body is written after it returns; each invocation runs in a fresh
//! instance, so state that must outlive a request goes in [`kv`].
//!
//! # WASI 0.3
//!
//! The same code builds as a WASI 0.3 component with the SDK's 0.3 build,
//! the `wisp-sdk-p3` package (this source, compiled for `wasi:http@0.3`
//! through the `wasip3` crate), depended on under this crate's name; the
//! target stays `wasm32-wasip2`:
//!
//! ```toml
//! [dependencies]
//! wisp-sdk = { package = "wisp-sdk-p3", path = "…/sdk/p3" }
//! ```
//!
//! Handlers stay synchronous: the request body is read from its stream
//! before the handler runs, and the response body written to a stream
//! after it returns. Events reach a 0.3 component as HTTP `POST`s, so
//! [`event_handler`] is for the 0.2 build only.
//!
//! A component imports only the capabilities it calls: one that uses none of
//! [`kv`], [`config`] and [`log`] is a plain `wasi:http/proxy` component that
//! runs on any wasi:http host (`wasmtime serve`, Spin, ...).
//!
//! # Errors and panics
//!
//! Return `Result<T, E>` where both sides implement [`IntoResponse`];
//! [`Error`] is the ready-made `E`: a status and a message sent as Wisp's
//! JSON error body, and the target of `?` for the capabilities' errors.
//! Errors are responses, never traps. A panic, though, traps the instance
//! (its message goes to the function's stderr) and the host answers `500`
//! with code `trap`.
//!
//! # Async handlers
//!
//! `async fn` handlers are accepted and driven by [`block_on`]. In a WASI 0.2
//! component every WASI call made through std or this crate blocks, so this
//! is a convenience for code written against `async` APIs, not a source of
//! concurrency; in a WASI 0.3 one the handler may also await WASI 0.3
//! calls (see [`block_on`]).
//!
//! # Testing natively
//!
//! Compiled for the machine it runs on (`cargo test`), the SDK simulates
//! [`kv`] and [`config`] in memory, per thread, and prints [`log`] lines on
//! stderr; [`testing`] sets configuration and resets state. Outbound
//! [`http`] is not simulated.

#![deny(missing_docs)]

// Everything generated here is private to the SDK; `__private` re-exports
// the few items the `#[handler]` expansion needs. Generated code documents
// only what the WIT documents, hence the `allow`.
#[cfg(not(wisp_p3))]
#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        // The proxy world plus Wisp's capabilities. A guest that calls none
        // of them still makes a plain proxy component: the component is
        // built from the core module's actual imports, so unused ones are
        // dropped.
        world: "function",
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

// WASI 0.3 (wisp-sdk-p3): `wasi:http` comes from the wasip3 crate (the
// `service` world, generated by the same wit-bindgen); only Wisp's
// capabilities are generated here. They stay plain synchronous imports,
// which a 0.3 component calls like any other.
#[cfg(wisp_p3)]
#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "capabilities",
        features: ["clocks-timezone"],
    });
}

// The `wasi:http` bindings of the version this build targets: the glue
// that both versions share (wire.rs) is written against these.
#[cfg(not(wisp_p3))]
use bindings::wasi;
#[cfg(wisp_p3)]
use wasip3 as wasi;

// The event handler's export, generated apart from the `function` world
// so that a component exports it only if the crate has an
// `#[event_handler]` (and `wasi:http/incoming-handler` only if it has a
// `#[handler]`).
#[cfg(not(wisp_p3))]
#[allow(missing_docs)]
mod event_bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "events",
        pub_export_macro: true,
        export_macro_name: "export_events",
        features: ["clocks-timezone"],
    });
}

pub mod config;
mod de;
mod error;
pub mod events;
mod executor;
mod extract;
mod handlers;
pub mod http;
pub mod kv;
pub mod log;
#[cfg(not(target_arch = "wasm32"))]
mod native;
mod request;
mod response;
mod router;
#[cfg(not(wisp_p3))]
mod wasi_http;
#[cfg(wisp_p3)]
mod wasi_http_p3;
mod wire;

pub use ::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
pub use error::Error;
pub use events::Event;
pub use executor::block_on;
pub use extract::{FromRequest, FromRequestParts, Json, Path, Query};
pub use handlers::{Handler, marker};
pub use request::Request;
pub use response::{IntoResponse, IntoStatus, Response, ResponseBuilder};
pub use router::{Params, Router};

/// Helpers for native tests of handlers (`cargo test`): the in-memory
/// stand-ins of the capabilities. Only compiled outside WebAssembly.
///
/// ```
/// use wisp_sdk::{config, kv, testing};
///
/// testing::reset();
/// testing::set_config("greeting", "hi");
/// assert_eq!(config::get("greeting").as_deref(), Some("hi"));
/// kv::set("k", "v").unwrap();
/// testing::reset();
/// assert_eq!(kv::get("k").unwrap(), None);
/// ```
#[cfg(not(target_arch = "wasm32"))]
pub mod testing {
    /// Empties this thread's simulated key-value store and configuration.
    pub fn reset() {
        crate::native::reset();
    }

    /// Sets setting (or secret) `key` of this thread's simulated
    /// configuration.
    pub fn set_config(key: &str, value: &str) {
        crate::native::set_config(key, value);
    }

    /// The topics and payloads [`events::publish`](crate::events::publish)
    /// was called with on this thread since the last [`reset`], in order.
    ///
    /// ```
    /// use wisp_sdk::{events, testing};
    ///
    /// testing::reset();
    /// events::publish("orders", "42").unwrap();
    /// assert_eq!(testing::published(), [("orders".to_string(), b"42".to_vec())]);
    /// ```
    pub fn published() -> Vec<(String, Vec<u8>)> {
        crate::native::published()
    }
}

/// Marks the function that handles every HTTP request sent to this component.
///
/// The function is either
/// - a [`Handler`]: arguments that are [extractors](FromRequest) (a
///   [`Request`], a [`Json`] body, a [`Query`], ...) and a result that
///   implements [`IntoResponse`]; it may be `async` (see [`block_on`]);
/// - or a function of no arguments that returns a [`Router`] (it is called
///   once per request: each request runs in a fresh instance anyway).
///
/// A crate has at most one handler. The function itself is left as written,
/// so it can be called directly in native tests.
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

/// Marks the function that handles every event delivered to this component:
/// events on the topics it subscribes to, its asynchronous invocations, its
/// schedules' ticks and its batch jobs' tasks. The component then exports
/// `wisp:function/event-handler`, and the host calls it instead of sending
/// the event as an HTTP `POST`.
///
/// The function takes an [`Event`] and returns `Result<(), E>` where `E`
/// can be displayed (or returns nothing); it may be `async`. `Ok` marks
/// the event done; `Err` fails this attempt, and the host retries it with
/// backoff up to the subscription's attempts, then dead-letters it. A crate
/// has at most one event handler, and may have a [`handler`] beside it.
///
/// ```
/// use wisp_sdk::Event;
///
/// #[wisp_sdk::event_handler]
/// fn on_event(event: Event) -> Result<(), wisp_sdk::Error> {
///     let n = wisp_sdk::kv::increment(&format!("seen:{}", event.topic), 1)?;
///     wisp_sdk::log::info(&format!("event {} (attempt {}), {n} so far", event.id, event.attempt));
///     Ok(())
/// }
/// ```
///
/// The handler takes exactly one argument:
///
/// ```compile_fail
/// #[wisp_sdk::event_handler]
/// fn on_event() -> Result<(), String> { Ok(()) }
/// ```
pub use wisp_sdk_macros::event_handler;

/// Implementation details used by the `#[handler]` expansion and by test
/// guests that need raw access to `wasi:http`. Not a stable API.
#[doc(hidden)]
pub mod __private {
    #[cfg(not(wisp_p3))]
    pub use crate::bindings::export;
    #[cfg(not(wisp_p3))]
    pub use crate::bindings::exports;
    #[cfg(not(wisp_p3))]
    pub use crate::bindings::exports::wasi::http::incoming_handler::Guest;
    #[cfg(not(wisp_p3))]
    pub use crate::bindings::wasi;
    #[cfg(not(wisp_p3))]
    pub use crate::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
    /// The raw `wisp:function/topics` import (a content type of the
    /// guest's choosing; test guests).
    pub use crate::bindings::wisp::function::topics;
    #[cfg(not(wisp_p3))]
    pub use crate::wasi_http::{serve, write_all};
    #[cfg(wisp_p3)]
    pub use crate::wasi_http_p3::serve;
    /// The WASI 0.3 bindings the SDK's 0.3 build is made with.
    #[cfg(wisp_p3)]
    pub use wasip3;

    /// `#[event_handler]`'s expansion.
    pub use crate::__wisp_export_event_handler as export_event_handler;
    /// `#[handler]`'s expansion: the `wasi:http` export of this build's
    /// version, calling the handler.
    pub use crate::__wisp_export_handler as export_handler;

    /// What the `#[event_handler]` expansion needs.
    #[cfg(not(wisp_p3))]
    pub mod events {
        pub use crate::event_bindings::export_events as export;
        pub use crate::event_bindings::exports::wisp::function::event_handler::{
            Event, Guest, JobTask,
        };
        pub use crate::event_bindings::*;

        /// The SDK's [`Event`](crate::Event) from the host's record.
        pub fn event(e: Event) -> crate::Event {
            crate::Event {
                id: e.id,
                topic: e.topic,
                time_ms: e.time_ms,
                content_type: e.content_type,
                payload: e.payload,
                attempt: e.attempt,
                job: e.job.map(|j| crate::events::JobTask {
                    id: j.id,
                    index: j.index,
                    array_size: j.array_size,
                }),
            }
        }

        /// Calls a handler with the SDK's [`Event`](crate::Event) and turns
        /// what it returned into the export's result.
        pub fn call_sync<O: crate::events::EventOutcome>(
            handler: impl FnOnce(crate::Event) -> O,
            e: Event,
        ) -> Result<(), String> {
            crate::events::EventOutcome::into_outcome(handler(event(e)))
        }

        /// [`call_sync`] for an `async` handler, run by
        /// [`block_on`](crate::block_on).
        pub fn call_async<F>(
            handler: impl FnOnce(crate::Event) -> F,
            e: Event,
        ) -> Result<(), String>
        where
            F: core::future::Future,
            F::Output: crate::events::EventOutcome,
        {
            crate::events::EventOutcome::into_outcome(crate::block_on(handler(event(e))))
        }
    }

    /// Calls a [`Handler`](crate::Handler); the `#[handler]` expansion uses
    /// it so that the handler's type parameter is inferred.
    pub fn call<H: crate::Handler<T>, T>(handler: &H, request: crate::Request) -> crate::Response {
        handler.handle(request)
    }
}

/// The `wasi:http/incoming-handler` export (WASI 0.2) calling `$handler`.
/// In an anonymous const so the helper type cannot clash with the crate's
/// own names; the export itself is a symbol, so a second handler in the
/// crate fails to link with a duplicate export.
#[cfg(not(wisp_p3))]
#[doc(hidden)]
#[macro_export]
macro_rules! __wisp_export_handler {
    ($handler:path) => {
        const _: () = {
            struct WispHandler;

            impl $crate::__private::Guest for WispHandler {
                fn handle(
                    request: $crate::__private::IncomingRequest,
                    response_out: $crate::__private::ResponseOutparam,
                ) {
                    $crate::__private::serve(request, response_out, |request| {
                        $crate::__private::call(&$handler, request)
                    });
                }
            }

    $crate::__private::export!(WispHandler with_types_in $crate::__private);
        };
    };
}

/// The `wasi:http/handler` export (WASI 0.3, the `service` world) calling
/// `$handler`; as above.
#[cfg(wisp_p3)]
#[doc(hidden)]
#[macro_export]
macro_rules! __wisp_export_handler {
    ($handler:path) => {
        const _: () = {
            struct WispHandler;

            impl $crate::__private::wasip3::exports::http::handler::Guest for WispHandler {
                async fn handle(
                    request: $crate::__private::wasip3::http::types::Request,
                ) -> ::core::result::Result<
                    $crate::__private::wasip3::http::types::Response,
                    $crate::__private::wasip3::http::types::ErrorCode,
                > {
                    $crate::__private::serve(request, |request| {
                        $crate::__private::call(&$handler, request)
                    })
                    .await
                }
            }

            $crate::__private::wasip3::http::service::export!(
                WispHandler with_types_in $crate::__private::wasip3
            );
        };
    };
}

/// The `wisp:function/event-handler` export calling `$handler` through
/// `__private::events::$call` (`call_sync` or `call_async`); as above.
#[cfg(not(wisp_p3))]
#[doc(hidden)]
#[macro_export]
macro_rules! __wisp_export_event_handler {
    ($handler:path, $call:ident) => {
        const _: () = {
            struct WispEventHandler;

            impl $crate::__private::events::Guest for WispEventHandler {
                fn handle(
                    event: $crate::__private::events::Event,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::events::$call($handler, event)
                }
            }

            $crate::__private::events::export!(
                WispEventHandler with_types_in $crate::__private::events
            );
        };
    };
}

/// A WASI 0.3 component receives its events as HTTP `POST`s to its
/// handler: the 0.3 build has no event-handler export.
#[cfg(wisp_p3)]
#[doc(hidden)]
#[macro_export]
macro_rules! __wisp_export_event_handler {
    ($handler:path, $call:ident) => {
        ::core::compile_error!(
            "#[wisp_sdk::event_handler] needs the WASI 0.2 build (the wisp-sdk crate): \
             a WASI 0.3 component (wisp-sdk-p3) receives its events as HTTP POSTs to \
             its #[wisp_sdk::handler]"
        );
    };
}
