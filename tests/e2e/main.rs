//! End-to-end tests: the real `wisp` binary on 127.0.0.1:0, real wasm built
//! from `examples/` and `tests/guests/`, real HTTP.

mod harness;

mod admission;
mod aliases;
mod api;
mod cgi;
mod cli;
mod cluster;
mod cluster_events;
mod cluster_logs;
mod config_admin;
mod config_file;
mod datadir;
mod durability;
mod edge;
mod engine;
mod errors;
mod event_examples;
mod event_handler;
mod event_storage;
mod events;
mod examples;
mod hostile;
mod jobs;
mod keys;
mod kv_admin;
mod limits;
mod logs;
mod outbound;
mod p3;
mod precompiled;
mod rate_cors;
mod routing;
mod runtime_only;
mod sdk_p3;
mod service;
mod stats;
mod tls;
mod tokens;
mod ui;
