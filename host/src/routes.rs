//! Route patterns, function names and the immutable route table.
//!
//! Pure logic: no wasmtime, no sockets. The gateway holds a [`RouteTable`]
//! behind an `ArcSwap` and replaces it whole on every deploy, delete or
//! rollback, so the request path never takes a lock.

use std::fmt;
use std::sync::Arc;

/// A route a function is reachable at on the data plane.
///
/// `/hello` matches exactly `/hello`; `/api/*` matches `/api`, and every path
/// under `/api/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// Matches one path exactly.
    Exact(String),
    /// Matches the prefix itself and everything below it (`/api/*`).
    /// Holds the prefix without the trailing `/*` (`/api`, or `` for `/*`).
    Prefix(String),
}

/// Why a route string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid route {route:?}: {reason}")]
pub struct RouteError {
    /// The route as given.
    pub route: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Route {
    /// Parses `/exact` or `/prefix/*`.
    pub fn parse(s: &str) -> Result<Route, RouteError> {
        let err = |reason| RouteError {
            route: s.to_string(),
            reason,
        };
        if !s.starts_with('/') {
            return Err(err("a route starts with '/'"));
        }
        if s.len() > 1024 {
            return Err(err("a route is at most 1024 characters"));
        }
        if s.chars()
            .any(|c| c.is_ascii_control() || c.is_whitespace() || matches!(c, '?' | '#'))
        {
            return Err(err("a route has no spaces, control characters, '?' or '#'"));
        }
        let (base, prefix) = match s.strip_suffix("/*") {
            Some(base) => (base, true),
            None => (s, false),
        };
        if base.contains('*') {
            return Err(err("'*' is only allowed as a final '/*'"));
        }
        if base.contains("//") {
            return Err(err("a route has no empty segments ('//')"));
        }
        if base.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(err("a route has no '.' or '..' segments"));
        }
        if prefix {
            Ok(Route::Prefix(base.to_string()))
        } else {
            if base.len() > 1 && base.ends_with('/') {
                return Err(err(
                    "an exact route does not end with '/' (use '/path/*' for a prefix)",
                ));
            }
            Ok(Route::Exact(base.to_string()))
        }
    }

    /// Whether this route matches a request path.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Route::Exact(p) => p == path,
            Route::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
            }
        }
    }

    /// How specific the route is: longer wins; an exact route beats a prefix
    /// route of the same length.
    fn specificity(&self) -> (usize, bool) {
        match self {
            Route::Exact(p) => (p.len(), true),
            Route::Prefix(p) => (p.len(), false),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Exact(p) => f.write_str(p),
            Route::Prefix(p) => write!(f, "{p}/*"),
        }
    }
}

/// Checks a function name: `[a-z0-9-]`, 1 to 63 characters, not starting or
/// ending with `-` (so it is a valid DNS label).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!(
            "invalid function name {name:?}: a name is 1 to 63 characters long"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "invalid function name {name:?}: use only lowercase letters, digits and '-'"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "invalid function name {name:?}: a name does not start or end with '-'"
        ));
    }
    Ok(())
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
    fn parses_routes() {
        assert_eq!(
            Route::parse("/hello").unwrap(),
            Route::Exact("/hello".into())
        );
        assert_eq!(Route::parse("/").unwrap(), Route::Exact("/".into()));
        assert_eq!(
            Route::parse("/api/*").unwrap(),
            Route::Prefix("/api".into())
        );
        assert_eq!(Route::parse("/*").unwrap(), Route::Prefix("".into()));
        assert_eq!(Route::parse("/api/*").unwrap().to_string(), "/api/*");
        for bad in [
            "", "hello", "/a*", "/a/*/b", "/a b", "/a?x", "/a//b", "/a/../b", "/a/",
        ] {
            assert!(Route::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let r = Route::parse("/api/*").unwrap();
        assert!(r.matches("/api"));
        assert!(r.matches("/api/"));
        assert!(r.matches("/api/users/1"));
        assert!(!r.matches("/apix"));
        assert!(!r.matches("/ap"));
        let root = Route::parse("/*").unwrap();
        assert!(root.matches("/"));
        assert!(root.matches("/anything/at/all"));
    }

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
