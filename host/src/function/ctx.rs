//! [`FunctionsCtx`]: the function domain's state, shared with the host
//! rather than reached through it, and the one thing it asks of the event
//! plane ([`FunctionEvents`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use tokio::sync::Mutex;

use crate::capabilities::kv::store::KvStore;
use crate::capabilities::logs::LogStore;
use crate::capabilities::settings::ConfigStore;
use crate::cluster::Cluster;
use crate::config::HostConfig;
use crate::engine::WispEngine;
use crate::function::compiled::Compiled;
use crate::function::records::Records;
use crate::function::registry::Registry;
use crate::invocation::Invoker;

/// What deploys, rollbacks, deletes and reads of functions work on.
/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct FunctionsCtx {
    pub(crate) inner: Arc<FunctionsInner>,
}

/// What a [`FunctionsCtx`] shares with the host.
pub(crate) struct FunctionsInner {
    pub(crate) config: HostConfig,
    /// Function records, versions and artifacts.
    pub(crate) records: Records,
    /// Compiled code beside the store.
    pub(crate) compiled: Compiled,
    /// A new name starts without the key-value data, settings and log
    /// lines an earlier function of that name left; a delete removes them.
    pub(crate) kv: KvStore,
    pub(crate) settings: ConfigStore,
    pub(crate) log_store: LogStore,
    pub(crate) engine: Arc<WispEngine>,
    /// What is deployed; swapped whole on every change.
    pub(crate) registry: Arc<ArcSwap<Registry>>,
    /// Serialises changes (deploy, rollback, delete, config) so that route
    /// checks and version numbers see a consistent state.
    pub(crate) admin_lock: Arc<Mutex<()>>,
    /// Runs direct invocations; its log sink is synced before a purge.
    pub(crate) invoker: Arc<Invoker>,
    pub(crate) data_dir: Option<PathBuf>,
    /// The event plane's part of a function, removed with it.
    pub(crate) events: Arc<dyn FunctionEvents>,
    /// Cluster mode: where function records are kept first
    /// (`function/replica.rs`).
    pub(crate) cluster: Option<Cluster>,
    /// Private functions' invoke keys: they go with their function.
    pub(crate) invoke_keys: crate::auth::InvokeKeys,
    /// Each function's last hour of counts (`GET .../stats`), one ring per
    /// name that every version loaded counts into; it goes with the
    /// function.
    pub(crate) series: crate::metrics::series::SeriesMap,
}

impl FunctionsCtx {
    /// The data directory, unless the store is temporary.
    pub(crate) fn data_dir(&self) -> Option<&Path> {
        self.inner.data_dir.as_deref()
    }
}

/// What the event plane keeps for a function (subscriptions, schedules,
/// deliveries, dead letters, running jobs): removed when it is deleted and
/// before its name is deployed anew. Implemented by the event plane, which
/// runs functions and so sits above this module.
pub(crate) trait FunctionEvents: Send + Sync {
    /// Removes it; flushed when this returns. The caller holds the admin
    /// lock.
    fn purge_function_events<'a>(&'a self, function: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Cluster mode: removes what the cluster keeps for it (subscriptions,
    /// schedules, queued deliveries, dead letters). Called by the host
    /// that deletes it.
    fn forget_in_cluster<'a>(&'a self, function: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
}
