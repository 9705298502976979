//! What is deployed right now: for each function its active version,
//! pre-instantiated, and the route table. Immutable; the host builds a new
//! one on every change and swaps it in atomically.

use std::collections::HashMap;
use std::sync::Arc;

use crate::capabilities::kv::KvNamespace;
use crate::capabilities::outbound::AllowList;
use crate::capabilities::settings::ConfigSnapshot;
use crate::config::Limits;
use crate::function::prepare::Prepared;
use crate::metrics::FunctionMetrics;
use crate::routes::{Route, RouteTable};

/// The active version of one function, ready to instantiate. Cloned (cheap:
/// handles and `Arc`s) to swap in a new config snapshot without a redeploy.
#[derive(Clone)]
pub(crate) struct Deployed {
    pub name: String,
    /// The name again, shared cheaply with each invocation's state.
    pub name_arc: Arc<str>,
    pub version: u64,
    /// Built once per deployed version; instantiation per request starts
    /// here. A component, or a preview-1 module run CGI-style.
    pub pre: Prepared,
    /// The read-only directory granted to a preview-1 module (at `/static`
    /// in the guest), under `<data-dir>/static/`.
    pub static_dir: Option<std::path::PathBuf>,
    pub limits: Limits,
    pub env: Vec<(String, String)>,
    pub routes: Vec<Route>,
    /// Hosts the function may send HTTP requests to.
    pub allow_outbound: Arc<AllowList>,
    pub metrics: FunctionMetrics,
    /// The function's key-value namespace (store handle and its limits).
    pub kv: Arc<KvNamespace>,
    /// The function's settings and secrets as of the last change; replaced
    /// (with a new registry) when they change.
    pub config: Arc<ConfigSnapshot>,
    /// The function's share of the host's invocation slots. One semaphore
    /// per function name, kept across versions and config changes (see
    /// [`Registry::with`]), so a deploy does not hand a busy function a
    /// fresh share while its old invocations still hold the old one.
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// A snapshot of everything deployed.
#[derive(Default)]
pub(crate) struct Registry {
    pub by_name: HashMap<String, Arc<Deployed>>,
    pub routes: RouteTable<Deployed>,
}

impl Registry {
    /// A new snapshot with `deployed` added (or replacing the function of the
    /// same name).
    pub fn with(&self, deployed: Arc<Deployed>) -> Registry {
        let mut by_name = self.by_name.clone();
        let deployed = match by_name.get(&deployed.name) {
            Some(old) if !Arc::ptr_eq(&old.slots, &deployed.slots) => {
                let mut d = Deployed::clone(&deployed);
                d.slots = old.slots.clone();
                Arc::new(d)
            }
            _ => deployed,
        };
        by_name.insert(deployed.name.clone(), deployed);
        Registry::from_map(by_name)
    }

    /// A new snapshot without `name`.
    pub fn without(&self, name: &str) -> Registry {
        let mut by_name = self.by_name.clone();
        by_name.remove(name);
        Registry::from_map(by_name)
    }

    pub fn from_map(by_name: HashMap<String, Arc<Deployed>>) -> Registry {
        let entries = by_name
            .values()
            .flat_map(|d| d.routes.iter().map(move |r| (r.clone(), d.clone())))
            .collect();
        Registry {
            routes: RouteTable::new(entries),
            by_name,
        }
    }

    /// The function (other than `except`) that already serves `route`.
    pub fn route_owner(&self, route: &Route, except: &str) -> Option<&str> {
        self.by_name
            .values()
            .filter(|d| d.name != except)
            .find(|d| d.routes.contains(route))
            .map(|d| d.name.as_str())
    }
}
