//! What is deployed right now: for each function its active version,
//! pre-instantiated, and the route table. Immutable; the host builds a new
//! one on every change and swaps it in atomically.

use std::collections::HashMap;
use std::sync::Arc;

pub(crate) use crate::invocation::target::Deployed;
use crate::routes::{Route, RouteTable};

/// A snapshot of everything deployed.
#[derive(Default)]
pub(crate) struct Registry {
    pub by_name: HashMap<String, Arc<Deployed>>,
    pub routes: RouteTable<Deployed>,
}

impl Registry {
    /// A new snapshot with `deployed` added (or replacing the function of the
    /// same name). A replaced function keeps its admission (the slots its
    /// invocations hold, its queue), resized to the new version's
    /// concurrency: the snapshot is always the next one stored.
    pub fn with(&self, deployed: Arc<Deployed>) -> Registry {
        let mut by_name = self.by_name.clone();
        let deployed = match by_name.get(&deployed.name) {
            Some(old) if !Arc::ptr_eq(&old.admission, &deployed.admission) => {
                old.admission.adopt(&deployed.admission);
                let mut d = Deployed::clone(&deployed);
                d.admission = old.admission.clone();
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
            .flat_map(|d| {
                // A function without hosts serves its routes on any.
                let hosts: Vec<Option<Arc<str>>> = match d.hosts.is_empty() {
                    true => vec![None],
                    false => d.hosts.iter().cloned().map(Some).collect(),
                };
                hosts.into_iter().flat_map(move |h| {
                    d.routes
                        .iter()
                        .map(move |r| (h.clone(), r.clone(), d.clone()))
                })
            })
            .collect();
        Registry {
            routes: RouteTable::with_hosts(entries),
            by_name,
        }
    }

    /// The function (other than `except`) that already serves `route` on
    /// one of `hosts` (none: host-less, like the route's other owner).
    pub fn route_owner(&self, route: &Route, hosts: &[String], except: &str) -> Option<&str> {
        self.by_name
            .values()
            .filter(|d| d.name != except)
            .find(|d| {
                d.routes.contains(route)
                    && match (hosts.is_empty(), d.hosts.is_empty()) {
                        (true, true) => true,
                        (false, false) => d.hosts.iter().any(|h| hosts.iter().any(|x| **h == **x)),
                        _ => false,
                    }
            })
            .map(|d| d.name.as_str())
    }
}
