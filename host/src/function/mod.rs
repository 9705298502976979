//! The per-version lifetime: what a deployed version of a function is
//! (compiled, mapped, checked and pre-instantiated once, `prepare`), how it
//! is stored (`records`, `compiled`), loaded (`load`) and made active
//! (`registry`), and the orchestration of deploys, rollbacks and deletes
//! (`deploy`, with the settings a version inherits resolved in `resolve`).
//! [`Functions`] is the public face, `wire` its JSON shapes; `handles`
//! reaches a deployed function's data, settings and log.

pub(crate) mod aliases;
mod api;
pub(crate) mod compiled;
mod ctx;
mod deploy;
pub(crate) mod handles;
pub(crate) mod load;
pub(crate) mod prepare;
pub(crate) mod records;
pub(crate) mod registry;
#[cfg(feature = "cluster")]
mod replica;
#[cfg(not(feature = "cluster"))]
#[path = "replica_off.rs"]
mod replica;
pub(crate) mod resolve;
pub mod signed;
pub(crate) mod wire;

pub use api::Functions;
pub(crate) use ctx::{FunctionEvents, FunctionsCtx, FunctionsInner};
#[cfg(feature = "cluster")]
pub(crate) use replica::follow;
