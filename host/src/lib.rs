//! Wisp: a WebAssembly function-as-a-service host.
//!
//! A [`Host`] keeps functions (WebAssembly components exporting
//! `wasi:http/incoming-handler`) in an embedded store, and serves each
//! request with a fresh instance from a pooled engine, under a deadline and
//! memory and body caps. The `wisp` binary is a thin CLI over this library;
//! another axum service can embed the same host:
//!
//! ```no_run
//! use axum::serve::ListenerExt;
//! use wisp_host::{DeployOptions, Host};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let host = Host::builder().data_dir("wisp-data").build()?;
//! let wasm = std::fs::read("hello.wasm")?;
//! host.deploy("hello", wasm.into(), DeployOptions::default().route("/hello")).await?;
//!
//! // Functions beside a route of your own; the admin API on its own port.
//! let app = axum::Router::new()
//!     .route("/own", axum::routing::get(|| async { "mine" }))
//!     .merge(host.gateway_router());
//! // Responses are streamed (head, then body): set TCP_NODELAY, or a small
//! // one can wait for the client's delayed ACK.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080")
//!     .await?
//!     .tap_io(|tcp| {
//!         let _ = tcp.set_nodelay(true);
//!     });
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! The three lifetimes live in three places: the engine and linker, once per
//! host ([`engine`](crate::engine)); the compiled, pre-instantiated
//! component, once per deployed version (`registry`); the `Store`, once per
//! invocation (`invoke`).

#![deny(missing_docs)]

mod admin;
mod api;
mod capabilities;
mod cgi;
mod config;
mod connection;
mod datadir;
mod engine;
mod error;
mod events;
mod gateway;
mod host;
mod invoke;
mod metrics;
mod registry;
pub mod routes;
mod serve;
mod store;
pub mod untrusted;

pub use admin::openapi;
pub use api::{DeployOptions, FunctionInfo, FunctionSummary, VersionInfo};
pub use capabilities::kv::{KeyList, KvError};
pub use capabilities::settings::{ConfigEntry, ConfigError, ConfigList, SetConfig};
pub use config::{ConnectionLimits, HostConfig, LimitOverrides, Limits, StoreLocation};
pub use engine::AllocatorKind;
pub use error::{ApiError, DeployError, ErrorBody, ErrorDetail};
pub use events::{
    DeliveryRecord, DeliveryStatus, EventError, EventInfo, NewSchedule, NewSubscription, Published,
    RedriveRequest, Redriven, RetryPolicy, Schedule, Subscription,
};
pub use events::{JobCounts, JobInfo, JobState, JobTask, NewJob, parse_array};
pub use host::{Host, HostBuilder};
pub use invoke::INVOCATION_ID_HEADER;
pub use serve::Listeners;
pub use store::StoreError;

impl Host {
    /// The data-plane router: requests to functions by route.
    pub fn gateway_router(&self) -> axum::Router {
        gateway::router(self.clone())
    }

    /// The admin router: `/v1/...`, `/metrics`, `/v1/openapi.json`.
    pub fn admin_router(&self) -> axum::Router {
        admin::router(self.clone())
    }
}
