//! Wisp: a WebAssembly function-as-a-service host.
//!
//! A [`Host`] keeps functions (WebAssembly components exporting
//! `wasi:http/incoming-handler` or Wisp's event handler, and preview-1
//! modules run CGI-style) in an embedded store, and serves each request
//! with a fresh instance from a pooled engine, under a deadline and memory
//! and body caps. The `wisp` binary (crate `wisp-cli`) is a thin CLI over
//! this library and the `wisp-client` crate; another Rust service can
//! embed the same host.
//!
//! # Three lifetimes
//!
//! What Wisp builds lives for one of three spans, each in a module of its
//! own, and the example below walks them in order:
//!
//! 1. **Per host** (`engine`, `store`): [`Host::builder`] builds the
//!    wasmtime engine (its settings, the pooling instance allocator, the
//!    epoch ticker that enforces deadlines), the linkers that say what
//!    guests may import, and opens the embedded store. Once.
//! 2. **Per deployed version** (`function`): [`Functions::deploy`] checks
//!    the upload, resolves the version's settings from the options, the
//!    active version and the host's defaults, compiles it once, stores the
//!    compiled code beside the artifact, maps it back and pre-instantiates
//!    it against the linkers. The result is swapped into the registry that
//!    routes read without a lock. A rollback or a restart maps the stored
//!    code again instead of compiling.
//! 3. **Per invocation** (`invocation`): a request routed by the gateway,
//!    [`Functions::invoke`], or an event delivery takes an invocation slot
//!    (the function's, then the host's; if none is free, it waits in their
//!    bounded queues or is refused), builds a wasmtime
//!    `Store` with the invocation's state (deadline, memory cap, log
//!    capture, and a view for each capability: key-value, config,
//!    outbound HTTP, topics), instantiates from the pre-instantiated
//!    version, runs the handler, classifies a failure into one status
//!    table, records metrics and log lines, and drops it all.
//!
//! Each concern of a function is reached through a narrow handle with its
//! own error type: [`Host::functions`] ([`DeployError`]), [`Host::kv`]
//! ([`KvError`]), [`Host::settings`] ([`ConfigError`]), [`Host::logs`]
//! ([`LogError`]), [`Host::events`] and [`Host::jobs`] ([`EventError`]).
//!
//! ```no_run
//! use axum::body::Body;
//! use axum::http::Request;
//! use axum::serve::ListenerExt;
//! use wisp_host::{DeployOptions, Host, LogQuery};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! // 1. Per host: the engine, linkers, instance pool and store, once.
//! let host = Host::builder()
//!     .data_dir("wisp-data")
//!     .max_in_flight(64)
//!     .build()?;
//!
//! // 2. Per version: checked, compiled and pre-instantiated once; durable
//! //    and routed when `deploy` returns.
//! let wasm = std::fs::read("hello.wasm")?;
//! let info = host
//!     .functions()
//!     .deploy("hello", wasm.into(), DeployOptions::default().route("/hello"))
//!     .await?;
//! println!("hello is at version {}", info.active_version);
//!
//! // 3. Per invocation: a fresh instance in a store of its own, under the
//! //    version's deadline and memory cap, dropped when the response ends.
//! let request = Request::get("/hello").body(Body::empty())?;
//! let response = host.functions().invoke("hello", request).await?;
//! assert!(response.status().is_success());
//!
//! // The function's data and log, as its own calls see them.
//! host.kv("hello").set("greeting", b"hi", None).await?;
//! assert_eq!(host.kv("hello").get("greeting").await?, b"hi");
//! let page = host.logs("hello").read(LogQuery::default()).await?;
//! println!("{} log lines", page.entries.len());
//!
//! // Serving: the functions beside a route of your own (the admin API
//! // would be `host.admin_router()`, on a port of its own). Responses are
//! // streamed (head, then body): set TCP_NODELAY, or a small one can wait
//! // for the client's delayed ACK.
//! let app = axum::Router::new()
//!     .route("/own", axum::routing::get(|| async { "mine" }))
//!     .merge(host.gateway_router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080")
//!     .await?
//!     .tap_io(|tcp| {
//!         let _ = tcp.set_nodelay(true);
//!     });
//! // Event deliveries need the dispatcher ([`Host::serve`] starts it).
//! host.events().start()?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod admin;
mod auth;
mod capabilities;
pub mod cluster;
mod config;
mod datadir;
mod engine;
mod error;
mod events;
mod function;
mod gateway;
mod host;
mod invocation;
mod metrics;
pub mod routes;
mod store;
pub mod untrusted;

pub use admin::openapi;
pub use auth::{
    AuditEntry, AuditPage, AuditQuery, CreatedKey, CreatedToken, FunctionAuth, KeyError, KeyInfo,
    NewKey, NewToken, TokenError, TokenInfo, WhoAmI,
};
pub use capabilities::kv::{KeyList, KvError};
pub use capabilities::settings::{ConfigEntry, ConfigError, ConfigList, SetConfig};
pub use config::{
    CodeEngine, ConnectionLimits, HostConfig, LimitOverrides, Limits, Reuse, StoreLocation,
    release_free_memory,
};
#[cfg(feature = "cranelift")]
pub use engine::precompile;
pub use engine::{AllocatorKind, host_target};
pub use error::{ApiError, DeployError, ErrorBody, ErrorDetail};
pub use events::{
    DeliveryRecord, DeliveryStatus, EventError, EventInfo, NewSchedule, NewSubscription, Published,
    RedriveRequest, Redriven, RetryPolicy, Schedule, Subscription,
};
pub use events::{Events, JobCounts, JobInfo, JobState, JobTask, Jobs, NewJob, parse_array};
pub use function::Functions;
pub use function::aliases::{AliasInfo, AliasSpec, Share};
pub use function::handles::{Kv, Logs, Settings};
pub use function::records::PrecompiledFrom;
pub use function::signed;
pub use function::wire::{DeployOptions, FunctionInfo, FunctionSummary, Setting, VersionInfo};
pub use gateway::cors::Cors;
pub use gateway::{Listeners, Tls, TlsError};
pub use host::{Host, HostBuilder};
pub use invocation::INVOCATION_ID_HEADER;
pub use invocation::rate::RateLimit;
pub use metrics::{FunctionStats, HostStats, StatsQuery, StatsSeries};
pub use store::StoreError;
// Wire types of the admin API that only its clients name (wisp-client).
pub use capabilities::logs::{LogEntry, LogError, LogLevel, LogPage, LogQuery, LogStream};
pub use events::Purged;

impl Host {
    /// The data-plane router: requests to functions by route.
    pub fn gateway_router(&self) -> axum::Router {
        gateway::router(self.gateway())
    }

    /// The admin router: `/v1/...`, `/metrics`, `/v1/openapi.json`.
    pub fn admin_router(&self) -> axum::Router {
        admin::router(self.clone())
    }
}

/// Entry points for the cargo-fuzz targets in `tests/fuzz`: thin wrappers
/// over the parsers and checks that untrusted input reaches. **Not part of
/// the stable API**: hidden from the docs, and free to change with the
/// internals it wraps.
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::Arc;

    pub use crate::routes::{Route, RouteTable, validate_name};

    // -------------------------------------------------- upload validation

    /// What an accepted upload turned out to be.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Upload {
        /// A preview-1 core module, run CGI-style.
        Module,
        /// A WASI 0.3 component (exports `wasi:http/handler@0.3`).
        Service,
        /// A WASI 0.2 component, with the handlers it exports (at least one).
        Component {
            /// Exports `wasi:http/incoming-handler`.
            http: bool,
            /// Exports `wisp:function/event-handler`.
            events: bool,
        },
    }

    /// The checks a deploy runs on the uploaded bytes before anything is
    /// stored: the header check, compilation (wasmparser validation,
    /// the pooling allocator's per-module limits, Cranelift), the
    /// import/export checks and pre-instantiation against the host's
    /// linkers, and serialization of the compiled code.
    pub struct UploadValidator {
        engine: crate::engine::WispEngine,
    }

    impl UploadValidator {
        /// An engine configured as `wisp serve`'s, with the pooling
        /// allocator sized for `max_in_flight` instances (the per-module
        /// limits a deploy checks do not depend on it; a small pool keeps
        /// the address-space reservation small).
        pub fn new(max_in_flight: u32) -> anyhow::Result<UploadValidator> {
            let config = crate::HostConfig {
                max_in_flight,
                ..crate::HostConfig::default()
            };
            let engine = crate::engine::WispEngine::new(&config)?;
            anyhow::ensure!(
                matches!(engine.allocator, crate::AllocatorKind::Pooling { .. }),
                "the pooling allocator is not available: its per-module limits would go unchecked"
            );
            Ok(UploadValidator { engine })
        }

        /// Validates `wasm` as [`Functions::deploy`](crate::Functions::deploy) does
        /// before it stores anything.
        pub fn validate(&self, wasm: &[u8]) -> Result<Upload, crate::DeployError> {
            crate::function::prepare::check_binary(wasm)?;
            let (prepared, _compiled) = self.engine.compile_new(wasm)?;
            Ok(match prepared {
                crate::function::prepare::Prepared::Module(_) => Upload::Module,
                crate::function::prepare::Prepared::Service(_) => Upload::Service,
                crate::function::prepare::Prepared::Component(c) => Upload::Component {
                    http: c.http.is_some(),
                    events: c.events.is_some(),
                },
            })
        }
    }

    // ------------------------------------------------------- CGI output

    /// Longest CGI header section the host accepts.
    pub const CGI_MAX_HEAD_BYTES: usize = crate::invocation::cgi::output::MAX_HEAD_BYTES;

    /// See `cgi::find_head_end`: the end of the header section in `buf`, if
    /// it has arrived, resuming the scan at `*from`.
    pub fn cgi_find_head_end(buf: &[u8], from: &mut usize) -> Option<(usize, usize)> {
        crate::invocation::cgi::output::find_head_end(buf, from)
    }

    /// See `cgi::parse_head`: the status and headers of a CGI header
    /// section.
    pub fn cgi_parse_head(block: &[u8]) -> Result<(http::StatusCode, http::HeaderMap), String> {
        crate::invocation::cgi::output::parse_head(block).map(|h| (h.status, h.headers))
    }

    // --------------------------------------------------------------- cron

    pub use crate::events::schedule::{CronSpec, due_tick, parse as parse_cron};

    // ---------------------------------------------------------- key-value

    /// The store key of `key` in `function`'s namespace.
    pub fn kv_ns_key(function: &str, key: &str) -> Vec<u8> {
        use crate::store::Key as _;
        crate::capabilities::kv::store::NsKey::new(function, key).encode()
    }

    /// The prefix every store key of `function`'s namespace starts with.
    pub fn kv_ns_prefix(function: &str) -> Vec<u8> {
        use crate::store::Prefix as _;
        crate::capabilities::kv::store::Namespace(function).encode_prefix()
    }

    /// Checks a key against a limit of `max` bytes, as every key-value
    /// operation does.
    pub fn kv_check_key(key: &str, max: u64) -> Result<(), crate::KvError> {
        crate::capabilities::kv::check_key(key, max)
    }

    /// The cursor a listing returns after `last_key`.
    pub fn kv_encode_cursor(last_key: &str) -> String {
        crate::capabilities::kv::encode_cursor(last_key)
    }

    /// The key a cursor stands for, if a listing of `prefix` could have
    /// returned it.
    pub fn kv_decode_cursor(cursor: &str, prefix: &str) -> Result<String, crate::KvError> {
        crate::capabilities::kv::decode_cursor(cursor, prefix)
    }

    /// A real store in a temporary directory, and functions' key-value
    /// namespaces in it (default limits).
    pub struct KvStore {
        store: crate::capabilities::kv::store::KvStore,
        _dir: tempfile::TempDir,
    }

    impl KvStore {
        /// Opens a store in a new temporary directory.
        pub fn open() -> anyhow::Result<KvStore> {
            let dir = tempfile::tempdir()?;
            let store = crate::store::Store::open(dir.path(), 8 << 20)?;
            let store = crate::capabilities::kv::store::KvStore::open(&store)?;
            Ok(KvStore { store, _dir: dir })
        }

        /// `function`'s namespace.
        pub fn namespace(&self, function: &str) -> KvNamespace {
            KvNamespace(crate::capabilities::kv::KvNamespace::new(
                self.store.clone(),
                Arc::from(function),
                &crate::Limits::default(),
            ))
        }
    }

    /// One function's key-value namespace, with the clock passed in.
    pub struct KvNamespace(crate::capabilities::kv::KvNamespace);

    impl KvNamespace {
        /// Sets `key` (expiring `ttl_ms` after `now`, if given); whether
        /// anything was written.
        pub fn set(
            &self,
            key: &str,
            value: &[u8],
            ttl_ms: Option<u64>,
            now: u64,
        ) -> Result<bool, crate::KvError> {
            self.0.set_at(key, value, ttl_ms, now)
        }

        /// The live value of `key` at `now`.
        pub fn get(&self, key: &str, now: u64) -> Result<Option<Vec<u8>>, crate::KvError> {
            self.0.get_at(key, now)
        }

        /// Removes `key`; whether it was live at `now`.
        pub fn delete(&self, key: &str, now: u64) -> Result<bool, crate::KvError> {
            self.0.delete_at(key, now).map(|(was_live, _)| was_live)
        }

        /// One page of keys starting with `prefix`, after `cursor`.
        pub fn list(
            &self,
            prefix: &str,
            cursor: Option<&str>,
            limit: u32,
            now: u64,
        ) -> Result<crate::KeyList, crate::KvError> {
            self.0.list_at(prefix, cursor, limit, now)
        }
    }
}
