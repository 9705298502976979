//! Route patterns: `/exact` and `/prefix/*`.

use std::fmt;

/// Longest route, in bytes.
pub const MAX_ROUTE_LEN: usize = 1024;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// The route as given.
    pub route: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid route {:?}: {}", self.route, self.reason)
    }
}

impl std::error::Error for RouteError {}

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
        if s.len() > MAX_ROUTE_LEN {
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

    /// How specific the route is, for a longest-match table: longer wins;
    /// an exact route beats a prefix route of the same length.
    pub fn specificity(&self) -> (usize, bool) {
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
        assert!(Route::parse(&format!("/{}", "a".repeat(MAX_ROUTE_LEN))).is_err());
        assert_eq!(
            Route::parse("x").unwrap_err().to_string(),
            "invalid route \"x\": a route starts with '/'"
        );
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
    fn exact_beats_prefix_of_the_same_length() {
        let exact = Route::parse("/api").unwrap().specificity();
        let prefix = Route::parse("/api/*").unwrap().specificity();
        let longer = Route::parse("/api/users/*").unwrap().specificity();
        assert!(exact > prefix);
        assert!(longer > exact);
    }
}
