//! The per-version lifetime: what a deployed version of a function is
//! (compiled, mapped, checked and pre-instantiated once), and the
//! orchestration of deploys, rollbacks and deletes.

pub(crate) mod compiled;
pub(crate) mod prepare;
pub(crate) mod records;
pub(crate) mod registry;
pub(crate) mod resolve;
