//! Route patterns, function names and the immutable route table.
//!
//! Pure logic: no wasmtime, no sockets. The gateway holds a [`RouteTable`]
//! behind an `ArcSwap` and replaces it whole on every deploy, delete or
//! rollback, so the request path never takes a lock.

use std::sync::Arc;

// The route syntax and the name rule are shared with the SDK (wisp-rules);
// re-exported here so that `wisp_host::routes::Route` keeps working.
pub use wisp_rules::{Route, RouteError};

/// Checks a function name: `[a-z0-9-]`, 1 to 63 characters, not starting or
/// ending with `-` (so it is a valid DNS label). See
/// [`wisp_rules::validate_function_name`].
pub fn validate_name(name: &str) -> Result<(), String> {
    wisp_rules::validate_function_name(name).map_err(|e| e.to_string())
}

/// An immutable table from routes to targets, longest match first; a
/// route may be for one host (`--host`, see `gateway/vhost.rs`).
#[derive(Debug)]
pub struct RouteTable<T> {
    /// Sorted exact hosts first, then wildcard hosts, then host-less
    /// routes, each most specific first, so the first match is the
    /// longest for the most specific host.
    entries: Vec<(Option<Arc<str>>, Route, Arc<T>)>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable {
            entries: Vec::new(),
        }
    }
}

impl<T> RouteTable<T> {
    /// Builds a table; identical routes must already have been rejected.
    pub fn new(entries: Vec<(Route, Arc<T>)>) -> Self {
        Self::with_hosts(entries.into_iter().map(|(r, t)| (None, r, t)).collect())
    }

    /// Builds a table of routes some of which are for a host pattern
    /// (lower case); identical routes on the same host must already have
    /// been rejected.
    pub fn with_hosts(mut entries: Vec<(Option<Arc<str>>, Route, Arc<T>)>) -> Self {
        use crate::gateway::vhost::tier;
        entries.sort_by_key(|e| (tier(e.0.as_deref()), std::cmp::Reverse(e.1.specificity())));
        RouteTable { entries }
    }

    /// The most specific route matching `path` for any host (host-less
    /// routes only), and its target.
    pub fn lookup(&self, path: &str) -> Option<(&Route, &Arc<T>)> {
        self.lookup_on(None, path)
    }

    /// The most specific route matching `path` on `host` (a request's,
    /// without port): its exact host's, else a wildcard's, else a
    /// host-less one.
    pub fn lookup_on(&self, host: Option<&str>, path: &str) -> Option<(&Route, &Arc<T>)> {
        self.entries
            .iter()
            .find(|(pattern, route, _)| {
                let host_ok = match (pattern, host) {
                    (None, _) => true,
                    (Some(p), Some(h)) => crate::gateway::vhost::matches(p, h),
                    (Some(_), None) => false,
                };
                host_ok && route.matches(path)
            })
            .map(|(_, r, t)| (r, t))
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_match_wins() {
        let t = RouteTable::new(vec![
            (Route::parse("/*").unwrap(), Arc::new("root")),
            (Route::parse("/api/*").unwrap(), Arc::new("api")),
            (Route::parse("/api/users/*").unwrap(), Arc::new("users")),
            (Route::parse("/api/users").unwrap(), Arc::new("exact")),
        ]);
        let hit = |p: &str| **t.lookup(p).unwrap().1;
        assert_eq!(hit("/api/users"), "exact");
        assert_eq!(hit("/api/users/7"), "users");
        assert_eq!(hit("/api/other"), "api");
        assert_eq!(hit("/elsewhere"), "root");
        let empty: RouteTable<&str> = RouteTable::default();
        assert!(empty.lookup("/").is_none());
    }

    #[test]
    fn a_hosts_routes_come_first_then_wildcards_then_the_fallback() {
        let host = |h: &str| Some(Arc::from(h));
        let t = RouteTable::with_hosts(vec![
            (None, Route::parse("/*").unwrap(), Arc::new("fallback")),
            (None, Route::parse("/health").unwrap(), Arc::new("health")),
            (host("a.com"), Route::parse("/").unwrap(), Arc::new("a")),
            (
                host("*.a.com"),
                Route::parse("/*").unwrap(),
                Arc::new("wild"),
            ),
            (host("b.com"), Route::parse("/").unwrap(), Arc::new("b")),
        ]);
        let hit = |h: Option<&str>, p: &str| t.lookup_on(h, p).map(|(_, v)| **v);
        assert_eq!(hit(Some("A.com"), "/"), Some("a"));
        assert_eq!(hit(Some("b.com"), "/"), Some("b"));
        // a.com's routes do not match: the fallback.
        assert_eq!(hit(Some("a.com"), "/x"), Some("fallback"));
        assert_eq!(hit(Some("a.com"), "/health"), Some("health"));
        // A host's route wins over a longer host-less one.
        assert_eq!(hit(Some("x.a.com"), "/health"), Some("wild"));
        assert_eq!(hit(Some("c.com"), "/"), Some("fallback"));
        assert_eq!(hit(None, "/"), Some("fallback"));
        assert_eq!(t.lookup("/health").map(|(_, v)| **v), Some("health"));
    }

    #[test]
    fn validates_names() {
        assert!(validate_name("hello").is_ok());
        assert!(validate_name("a-1").is_ok());
        assert!(validate_name(&"a".repeat(63)).is_ok());
        for bad in ["", "Hello", "a_b", "-a", "a-", "a.b", "ü"] {
            assert!(validate_name(bad).is_err(), "{bad} should be refused");
        }
        assert!(validate_name(&"a".repeat(64)).is_err());
    }
}
