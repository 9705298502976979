//! What is deployed right now: for each function its active version,
//! pre-instantiated, the versions its aliases point to, and the route
//! table. Immutable; the host builds a new one on every change and swaps
//! it in atomically.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub(crate) use crate::invocation::target::Deployed;
use crate::routes::{Route, RouteTable};

/// A snapshot of everything deployed.
#[derive(Default)]
pub(crate) struct Registry {
    pub by_name: HashMap<String, Arc<Deployed>>,
    /// The aliases of the functions that have any.
    pub aliases: HashMap<String, Arc<Aliases>>,
    pub routes: RouteTable<RouteTarget>,
}

/// What a route serves: a function's active version, or one of its
/// aliases (a weighted choice among versions).
pub(crate) enum RouteTarget {
    Active(Arc<Deployed>),
    Alias(Arc<Alias>),
}

impl RouteTarget {
    /// The function served.
    pub(crate) fn function(&self) -> &str {
        match self {
            RouteTarget::Active(d) => &d.name,
            RouteTarget::Alias(a) => &a.function,
        }
    }
}

/// A function's aliases, ready to serve, and the versions they point to.
pub(crate) struct Aliases {
    pub by_name: BTreeMap<String, Arc<Alias>>,
    /// Every version an alias points to, loaded (sharing the function's
    /// admission with its active version).
    pub versions: BTreeMap<u64, Arc<Deployed>>,
}

impl Aliases {
    /// The same aliases, on `versions` (the same version numbers, rebuilt:
    /// new settings).
    pub(crate) fn with_versions(&self, versions: BTreeMap<u64, Arc<Deployed>>) -> Aliases {
        let by_name = self
            .by_name
            .iter()
            .map(|(name, a)| {
                let choices = a
                    .choices
                    .iter()
                    .map(|(bound, d)| (*bound, versions.get(&d.version).unwrap_or(d).clone()))
                    .collect();
                let alias = Alias {
                    function: a.function.clone(),
                    name: a.name.clone(),
                    choices,
                    routes: a.routes.clone(),
                };
                (name.clone(), Arc::new(alias))
            })
            .collect();
        Aliases { by_name, versions }
    }
}

/// One alias: versions with their shares of the requests.
pub(crate) struct Alias {
    pub function: String,
    pub name: String,
    /// Each version with the upper bound (exclusive, out of 100) of its
    /// share: a draw in 0..100 goes to the first whose bound exceeds it.
    pub choices: Vec<(u8, Arc<Deployed>)>,
    pub routes: Vec<Route>,
}

impl Alias {
    /// The version for one request: a weighted draw.
    pub(crate) fn choose(&self) -> &Arc<Deployed> {
        if let [(_, only)] = self.choices.as_slice() {
            return only;
        }
        let draw: u8 = rand::random_range(0..100);
        self.choices
            .iter()
            .find(|(bound, _)| draw < *bound)
            .or(self.choices.last())
            .map(|(_, d)| d)
            .expect("an alias has at least one version")
    }
}

impl Registry {
    /// A new snapshot with `deployed` added (or replacing the function of the
    /// same name). A replaced function keeps its admission (the slots its
    /// invocations hold, its queue), resized to the new version's
    /// concurrency: the snapshot is always the next one stored. Its aliases
    /// stay.
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
        Registry::from_parts(by_name, self.aliases.clone())
    }

    /// A new snapshot with `name`'s aliases replaced (`None`: it has none).
    pub fn with_aliases(&self, name: &str, aliases: Option<Arc<Aliases>>) -> Registry {
        let mut all = self.aliases.clone();
        match aliases {
            Some(a) if !a.by_name.is_empty() => all.insert(name.to_string(), a),
            _ => all.remove(name),
        };
        Registry::from_parts(self.by_name.clone(), all)
    }

    /// A new snapshot without `name` (and its aliases).
    pub fn without(&self, name: &str) -> Registry {
        let mut by_name = self.by_name.clone();
        by_name.remove(name);
        let mut aliases = self.aliases.clone();
        aliases.remove(name);
        Registry::from_parts(by_name, aliases)
    }

    pub fn from_map(by_name: HashMap<String, Arc<Deployed>>) -> Registry {
        Registry::from_parts(by_name, HashMap::new())
    }

    fn from_parts(
        by_name: HashMap<String, Arc<Deployed>>,
        aliases: HashMap<String, Arc<Aliases>>,
    ) -> Registry {
        // A function without hosts serves its routes on any; its aliases
        // serve theirs on the function's hosts.
        let hosts_of = |d: &Deployed| -> Vec<Option<Arc<str>>> {
            match d.hosts.is_empty() {
                true => vec![None],
                false => d.hosts.iter().cloned().map(Some).collect(),
            }
        };
        let mut entries = Vec::new();
        for d in by_name.values() {
            let target = Arc::new(RouteTarget::Active(d.clone()));
            for h in hosts_of(d) {
                for r in &d.routes {
                    entries.push((h.clone(), r.clone(), target.clone()));
                }
            }
        }
        for a in aliases.values().flat_map(|a| a.by_name.values()) {
            let Some(d) = by_name.get(&a.function) else {
                continue;
            };
            let target = Arc::new(RouteTarget::Alias(a.clone()));
            for h in hosts_of(d) {
                for r in &a.routes {
                    entries.push((h.clone(), r.clone(), target.clone()));
                }
            }
        }
        Registry {
            routes: RouteTable::with_hosts(entries),
            by_name,
            aliases,
        }
    }

    /// Who already serves `route` on one of `hosts` (none: host-less, like
    /// the other owner's), other than `except` (a function, or an alias):
    /// a description for an error message. An alias serves on its
    /// function's hosts.
    pub fn route_owner(
        &self,
        route: &Route,
        hosts: &[String],
        except: Owner<'_>,
    ) -> Option<String> {
        let shares_a_host = |d: &Deployed| match (hosts.is_empty(), d.hosts.is_empty()) {
            (true, true) => true,
            (false, false) => d.hosts.iter().any(|h| hosts.iter().any(|x| **h == **x)),
            _ => false,
        };
        let function = self
            .by_name
            .values()
            .filter(|d| except != Owner::Function(&d.name))
            .find(|d| d.routes.contains(route) && shares_a_host(d))
            .map(|d| format!("function {:?}", d.name));
        function.or_else(|| {
            self.aliases
                .values()
                .flat_map(|a| a.by_name.values())
                .filter(|a| except != Owner::Alias(&a.function, &a.name))
                .filter(|a| {
                    self.by_name
                        .get(&a.function)
                        .is_some_and(|d| shares_a_host(d))
                })
                .find(|a| a.routes.contains(route))
                .map(|a| format!("alias {:?} of function {:?}", a.name, a.function))
        })
    }
}

/// Whose routes a route-conflict check leaves out: the function or alias
/// whose routes are being set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner<'a> {
    Function(&'a str),
    Alias(&'a str, &'a str),
}
