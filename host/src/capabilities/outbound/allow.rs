//! The allow-list: its entries (`https://api.example.com`, `*.example.com`,
//! `http://127.0.0.1:8080`, `host:*`), how they are parsed and refused, and
//! how a request's scheme, host and port are matched against them.
//!
//! Pure logic, no sockets: which *addresses* a name may reach is decided
//! apart, against [`reserved`](super::reserved), when the request is sent.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One allow-list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    /// `http` or `https`; none allows both.
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// Exactly this host name (lower case).
    Exact(String),
    /// Any host ending in this suffix, which starts with a dot.
    Subdomains(String),
    /// This IP address, written literally (`[...]` for IPv6). The only
    /// pattern that lets a function reach a reserved address.
    Ip(IpAddr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortPattern {
    /// The default port of the request's scheme (80 or 443).
    Default,
    Exact(u16),
    Any,
}

/// A function's outbound allow-list, parsed once per deployed version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<Rule>,
}

/// Why an allow-list entry was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct BadRule(String);

impl fmt::Display for BadRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(super) fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

impl Rule {
    fn parse(entry: &str) -> Result<Rule, BadRule> {
        let bad = |why: &str| {
            BadRule(format!(
                "invalid outbound allow-list entry {entry:?}: {why}"
            ))
        };
        let entry_trim = entry.trim();
        if entry_trim.is_empty() {
            return Err(bad("it is empty"));
        }
        let (scheme, rest) = match entry_trim.split_once("://") {
            Some((s, rest)) => {
                let s = s.to_ascii_lowercase();
                if s != "http" && s != "https" {
                    return Err(bad("the scheme must be http or https"));
                }
                (Some(s), rest)
            }
            None => (None, entry_trim),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("give a host (and port), not a path or credentials"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 literal in brackets has colons of its own.
            Some((h, p)) if !p.contains(']') => {
                let port = if p == "*" {
                    PortPattern::Any
                } else {
                    PortPattern::Exact(
                        p.parse()
                            .map_err(|_| bad("the port must be 1-65535 or *"))?,
                    )
                };
                if port == PortPattern::Exact(0) {
                    return Err(bad("the port must be 1-65535 or *"));
                }
                (h, port)
            }
            _ => (rest, PortPattern::Default),
        };
        let host = host.to_ascii_lowercase();
        let host = if let Some(ip) = ip_literal(&host) {
            HostPattern::Ip(ip)
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if !valid_host(suffix) {
                return Err(bad("the host after *. is not a valid host name"));
            }
            HostPattern::Subdomains(format!(".{suffix}"))
        } else {
            if !valid_host(&host) {
                return Err(bad("not a valid host name or IP address"));
            }
            HostPattern::Exact(host)
        };
        Ok(Rule { scheme, host, port })
    }

    fn scheme_and_port_match(&self, scheme: &str, port: u16) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        match self.port {
            PortPattern::Default => port == default_port(scheme),
            PortPattern::Exact(p) => port == p,
            PortPattern::Any => true,
        }
    }

    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host_ok = match &self.host {
            HostPattern::Exact(h) => host == h,
            HostPattern::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            HostPattern::Ip(ip) => ip_literal(host).is_some_and(|h| same_address(h, *ip)),
        };
        host_ok && self.scheme_and_port_match(scheme, port)
    }

    fn names_address(&self, scheme: &str, ip: IpAddr, port: u16) -> bool {
        matches!(self.host, HostPattern::Ip(a) if same_address(a, ip))
            && self.scheme_and_port_match(scheme, port)
    }
}

/// An IP address written as a URI host: dotted IPv4 (only the four-part
/// decimal form: `127.1` and `2130706433` are names here, checked by what
/// they resolve to) or IPv6 in brackets.
pub(super) fn ip_literal(host: &str) -> Option<IpAddr> {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The same address, whether written as IPv4 or as its IPv4-mapped IPv6
/// form (`::ffff:127.0.0.1`).
fn same_address(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

fn valid_host(h: &str) -> bool {
    if h.starts_with('[') && h.ends_with(']') {
        return h[1..h.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
    }
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl AllowList {
    /// Parses allow-list entries; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, BadRule> {
        let rules = entries
            .iter()
            .map(|e| Rule::parse(e.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(AllowList { rules })
    }

    /// Whether a request to `scheme://host:port` is allowed by name.
    /// `host` is compared case-insensitively; an IP address (IPv6 in
    /// brackets) matches an entry of the same address. The addresses a name
    /// resolves to are checked apart ([`AllowList::names_address`]).
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let scheme = scheme.to_ascii_lowercase();
        self.rules.iter().any(|r| r.allows(&scheme, &host, port))
    }

    /// Whether an entry names `ip` literally for this scheme and port: what
    /// lets a request reach a [`reserved`](super::reserved) address.
    pub fn names_address(&self, scheme: &str, ip: IpAddr, port: u16) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        self.rules
            .iter()
            .any(|r| r.names_address(&scheme, ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(entries).expect("valid entries")
    }

    #[test]
    fn empty_list_denies_everything() {
        let l = AllowList::default();
        assert!(!l.allows("https", "example.com", 443));
    }

    #[test]
    fn scheme_and_host_use_the_default_port() {
        let l = list(&["https://api.example.com"]);
        assert!(l.allows("https", "api.example.com", 443));
        assert!(l.allows("https", "API.Example.COM", 443));
        assert!(!l.allows("http", "api.example.com", 80));
        assert!(!l.allows("https", "api.example.com", 8443));
        assert!(!l.allows("https", "other.example.com", 443));
        assert!(!l.allows("https", "api.example.com.evil.net", 443));
    }

    #[test]
    fn bare_host_allows_both_schemes_on_their_ports() {
        let l = list(&["api.example.com"]);
        assert!(l.allows("http", "api.example.com", 80));
        assert!(l.allows("https", "api.example.com", 443));
        assert!(!l.allows("http", "api.example.com", 443));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let l = list(&["*.example.com"]);
        assert!(l.allows("https", "a.example.com", 443));
        assert!(l.allows("https", "a.b.example.com", 443));
        assert!(!l.allows("https", "example.com", 443));
        assert!(!l.allows("https", "badexample.com", 443));
    }

    #[test]
    fn ports_exact_and_any() {
        let l = list(&["http://127.0.0.1:8080", "internal:*"]);
        assert!(l.allows("http", "127.0.0.1", 8080));
        assert!(!l.allows("http", "127.0.0.1", 8081));
        assert!(!l.allows("https", "127.0.0.1", 8080));
        assert!(l.allows("http", "internal", 1234));
        assert!(l.allows("https", "internal", 443));
    }

    #[test]
    fn ipv6_literals() {
        let l = list(&["http://[::1]:9000"]);
        assert!(l.allows("http", "[::1]", 9000));
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        for (entry, why) in [
            ("", "empty"),
            ("ftp://example.com", "scheme"),
            ("https://example.com/path", "not a path"),
            ("https://user@example.com", "credentials"),
            ("example.com:http", "port"),
            ("example.com:0", "port"),
            ("exa mple.com", "valid host"),
            ("*.", "after *."),
        ] {
            let err = AllowList::parse(&[entry]).expect_err(entry).to_string();
            assert!(err.contains(why), "{entry:?}: {err}");
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn only_literal_entries_name_addresses() {
        let l = list(&[
            "http://127.0.0.1:8080",
            "localhost:*",
            "*.internal",
            "https://[fd00::1]",
            "10.0.0.5",
        ]);
        assert!(l.names_address("http", ip("127.0.0.1"), 8080));
        // The IPv4-mapped form is the same address.
        assert!(l.names_address("http", ip("::ffff:127.0.0.1"), 8080));
        // Scheme and port as the entry says.
        assert!(!l.names_address("http", ip("127.0.0.1"), 8081));
        assert!(!l.names_address("https", ip("127.0.0.1"), 8080));
        assert!(!l.names_address("http", ip("127.0.0.2"), 8080));
        assert!(l.names_address("https", ip("fd00::1"), 443));
        assert!(l.names_address("https", ip("fd00:0:0:0:0:0:0:1"), 443));
        assert!(!l.names_address("http", ip("fd00::1"), 80));
        assert!(l.names_address("http", ip("10.0.0.5"), 80));
        assert!(l.names_address("https", ip("10.0.0.5"), 443));
        // Names never name an address, whatever they resolve to.
        assert!(!l.names_address("http", ip("::1"), 8080));
        assert!(!l.names_address("http", ip("10.0.0.6"), 80));

        // By name, IP literals match however they are written.
        assert!(l.allows("http", "127.0.0.1", 8080));
        assert!(l.allows("http", "[::ffff:127.0.0.1]", 8080));
        assert!(l.allows("https", "[fd00:0::1]", 443));
        assert!(!l.allows("https", "fd00::1", 443));
        // Other spellings of 127.0.0.1 are names, not literals.
        assert_eq!(ip_literal("127.1"), None);
        assert_eq!(ip_literal("2130706433"), None);
        assert_eq!(ip_literal("0x7f.0.0.1"), None);
        assert!(!l.names_address("http", ip("127.0.0.1"), 80));
    }

    #[test]
    fn trailing_slash_is_accepted() {
        assert!(list(&["https://api.example.com/"]).allows("https", "api.example.com", 443));
    }
}
