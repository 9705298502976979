//! Route parsing and the route table.
//!
//! Input (text): route patterns one per line, a blank line, then request
//! paths one per line. Every route that parses prints back to itself, and
//! the table's lookup agrees with a naive longest match written here from
//! the documented rules, for the given paths and for paths made from the
//! routes themselves (where matches are likely).

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use wisp_host::fuzzing::{Route, RouteTable};

/// The documented rule, independently: `/a` matches `/a` only; `/a/*`
/// matches `/a` and everything under `/a/`; the longest pattern wins, an
/// exact one before a prefix of the same length.
fn naive(routes: &[Route], path: &str) -> Option<usize> {
    let mut best: Option<(usize, (usize, bool))> = None;
    for (i, r) in routes.iter().enumerate() {
        let rank = match r {
            Route::Exact(p) if p == path => (p.len(), true),
            Route::Prefix(p) if path == p || path.starts_with(&format!("{p}/")) => (p.len(), false),
            _ => continue,
        };
        match best {
            Some((_, b)) if b >= rank => {
                assert_ne!(
                    b, rank,
                    "two distinct routes of the same rank match {path:?}"
                );
            }
            _ => best = Some((i, rank)),
        }
    }
    best.map(|(i, _)| i)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (route_lines, path_lines) = text.split_once("\n\n").unwrap_or((text, ""));

    let mut routes: Vec<Route> = Vec::new();
    for line in route_lines.split('\n') {
        let Ok(route) = Route::parse(line) else {
            continue;
        };
        assert_eq!(route.to_string(), line, "a route prints as it was given");
        assert_eq!(Route::parse(&route.to_string()).as_ref(), Ok(&route));
        assert!(line.starts_with('/') && line.len() <= 1024);
        assert!(
            !line
                .chars()
                .any(|c| c.is_ascii_control() || c.is_whitespace())
        );
        // Deploys refuse a route another function already has.
        if !routes.contains(&route) {
            routes.push(route);
        }
    }

    let table = RouteTable::new(
        routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.clone(), Arc::new(i)))
            .collect(),
    );
    assert_eq!(table.len(), routes.len());

    let mut paths: Vec<String> = path_lines.split('\n').map(str::to_string).collect();
    for r in &routes {
        let base = match r {
            Route::Exact(p) | Route::Prefix(p) => p.as_str(),
        };
        paths.push(base.to_string());
        paths.push(format!("{base}/"));
        paths.push(format!("{base}/x"));
        paths.push(format!("{base}x"));
        let mut shorter = base.to_string();
        shorter.pop();
        paths.push(shorter);
    }
    for path in &paths {
        let got = table.lookup(path).map(|(route, target)| {
            assert_eq!(
                &routes[**target], route,
                "the route returned is its target's"
            );
            **target
        });
        assert_eq!(
            got,
            naive(&routes, path),
            "lookup of {path:?} in {routes:?}"
        );
    }
});
