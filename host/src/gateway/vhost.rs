//! Host-based routing (`wisp deploy --host api.example.com`): a function
//! with hosts serves its routes only to requests for those hosts, so that
//! several sites share one listener. Pure: the host patterns and how a
//! request's host is read.
//!
//! - A pattern is a DNS name (`api.example.com`) or a wildcard of one or
//!   more labels under a name (`*.example.com`, not `example.com` itself);
//!   compared without case and without the port.
//! - The request's host is HTTP/2's `:authority` or HTTP/1.1's `Host`.
//! - The route table tries a request's exact host's routes first, then the
//!   wildcards', then the routes of functions without hosts (the fallback
//!   for any host), longest match first within each.

use axum::http::{Request, header};

use crate::error::DeployError;

/// Most hosts one function may serve.
pub const MAX_HOSTS: usize = 64;

/// A host pattern, lower case: `api.example.com` or `*.example.com`.
pub(crate) fn parse_host(text: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!(
            "host {text:?}: {why} (give a DNS name such as api.example.com, or *.example.com; no \
             scheme, port or path)"
        )
    };
    let name = text.strip_prefix("*.").unwrap_or(text);
    if name.contains("://") {
        return Err(bad("a host, not a URL"));
    }
    if name.contains(':') {
        return Err(bad("no port: any port matches"));
    }
    if name.is_empty() || name.len() > 253 {
        return Err(bad("not 1 to 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(bad("not a DNS name"));
        }
    }
    Ok(text.to_ascii_lowercase())
}

/// The new version's hosts: the deploy's (`none` alone removes them) else
/// the active version's.
pub(crate) fn resolve(asked: &[String], previous: &[String]) -> Result<Vec<String>, DeployError> {
    let bad = DeployError::InvalidArgument;
    if asked.is_empty() {
        return Ok(previous.to_vec());
    }
    if asked.iter().any(|h| h.eq_ignore_ascii_case("none")) {
        if asked.len() > 1 {
            return Err(bad(
                "host none removes the hosts; it cannot be given with hosts".into(),
            ));
        }
        return Ok(Vec::new());
    }
    if asked.len() > MAX_HOSTS {
        return Err(bad(format!(
            "{} hosts; the most is {MAX_HOSTS}",
            asked.len()
        )));
    }
    let mut hosts: Vec<String> = Vec::with_capacity(asked.len());
    for h in asked {
        let h = parse_host(h).map_err(bad)?;
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    Ok(hosts)
}

/// How specific a pattern is: exact names before wildcards.
pub(crate) fn tier(pattern: Option<&str>) -> u8 {
    match pattern {
        Some(p) if p.starts_with("*.") => 1,
        Some(_) => 0,
        None => 2,
    }
}

/// Whether `host` (a request's, without its port) matches `pattern` (a
/// stored one, lower case). No allocation: compared without case in place.
pub(crate) fn matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        // `*.example.com`: at least one label before `.example.com`.
        Some(suffix) => {
            host.len() > suffix.len()
                && host.is_char_boundary(host.len() - suffix.len())
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => host.eq_ignore_ascii_case(pattern),
    }
}

/// The host a request is for, without port or trailing dot: HTTP/2's
/// `:authority` (in the URI), else the `Host` header.
pub(crate) fn request_host<B>(request: &Request<B>) -> Option<&str> {
    let authority = match request.uri().authority() {
        Some(a) => a.as_str(),
        None => request.headers().get(header::HOST)?.to_str().ok()?,
    };
    Some(strip_port(authority))
}

fn strip_port(authority: &str) -> &str {
    // A user part is not a host's (never sent by a browser).
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = if authority.starts_with('[') {
        authority
            .find(']')
            .map_or(authority, |end| &authority[..=end])
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_checked_and_lower_cased() {
        assert_eq!(parse_host("API.Example.com").unwrap(), "api.example.com");
        assert_eq!(parse_host("*.example.com").unwrap(), "*.example.com");
        assert_eq!(parse_host("localhost").unwrap(), "localhost");
        for (bad, why) in [
            ("https://a.com", "not a URL"),
            ("a.com:8080", "no port"),
            ("", "not 1 to 253"),
            ("a..com", "not a DNS name"),
            ("a.com/x", "not a DNS name"),
            ("-a.com", "not a DNS name"),
            ("*", "not a DNS name"),
            ("a.*.com", "not a DNS name"),
            ("**.a.com", "not a DNS name"),
        ] {
            let e = parse_host(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn hosts_are_set_kept_or_removed() {
        let prev = vec!["a.com".to_string()];
        assert_eq!(resolve(&[], &prev).unwrap(), prev);
        assert!(resolve(&["none".into()], &prev).unwrap().is_empty());
        assert_eq!(
            resolve(&["B.com".into(), "b.com".into()], &prev).unwrap(),
            ["b.com"]
        );
        assert!(resolve(&["none".into(), "b.com".into()], &prev).is_err());
        assert!(resolve(&["b.com:1".into()], &prev).is_err());
    }

    #[test]
    fn matching_ignores_case_and_wildcards_need_a_label() {
        assert!(matches("api.example.com", "API.example.COM"));
        assert!(!matches("api.example.com", "example.com"));
        assert!(matches("*.example.com", "a.example.com"));
        assert!(matches("*.example.com", "a.b.Example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(!matches("*.example.com", "badexample.com"));
        assert!(!matches("*.example.com", "ü"));
    }

    #[test]
    fn the_request_host_is_read_without_port() {
        let req = |host: &str| {
            Request::builder()
                .uri("/x")
                .header(header::HOST, host)
                .body(())
                .unwrap()
        };
        assert_eq!(request_host(&req("a.com:8080")), Some("a.com"));
        assert_eq!(request_host(&req("a.com")), Some("a.com"));
        assert_eq!(request_host(&req("a.com.")), Some("a.com"));
        assert_eq!(request_host(&req("[::1]:80")), Some("[::1]"));
        // HTTP/2: the authority is in the URI.
        let h2 = Request::builder()
            .uri("https://b.com:8443/x")
            .header(header::HOST, "ignored.com")
            .body(())
            .unwrap();
        assert_eq!(request_host(&h2), Some("b.com"));
        let none = Request::builder().uri("/x").body(()).unwrap();
        assert_eq!(request_host(&none), None);
    }
}
