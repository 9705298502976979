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

/// An immutable table from routes to targets, longest match first.
#[derive(Debug)]
pub struct RouteTable<T> {
    /// Sorted most specific first, so the first match is the longest.
    entries: Vec<(Route, Arc<T>)>,
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
    pub fn new(mut entries: Vec<(Route, Arc<T>)>) -> Self {
        entries.sort_by_key(|e| std::cmp::Reverse(e.0.specificity()));
        RouteTable { entries }
    }

    /// The most specific route matching `path`, and its target.
    pub fn lookup(&self, path: &str) -> Option<(&Route, &Arc<T>)> {
        self.entries
            .iter()
            .find(|(route, _)| route.matches(path))
            .map(|(r, t)| (r, t))
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
