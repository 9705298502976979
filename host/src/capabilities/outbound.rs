//! Outbound HTTP policy (`wasi:http/outgoing-handler`): deny by default,
//! a per-function allow-list of hosts, a cap per invocation, and the
//! invocation's deadline.
//!
//! Allow-list entries (`wisp deploy --allow-outbound ...`):
//!
//! | entry | allows |
//! |---|---|
//! | `https://api.example.com` | that scheme and host, on the scheme's default port (443) |
//! | `api.example.com` | http on port 80 and https on 443 |
//! | `*.example.com` | any subdomain (not `example.com` itself) |
//! | `http://127.0.0.1:8080` | that port only |
//! | `api.example.com:*` | any port |
//!
//! A denied request fails in the guest with `HTTP-request-denied`, and a
//! note goes to the invocation's log; the host's log gets one line per
//! invocation with the count of denials and the first.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::logs::LogCapture;

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
    /// Exactly this host (lower case).
    Exact(String),
    /// Any host ending in this suffix, which starts with a dot.
    Subdomains(String),
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

fn default_port(scheme: &str) -> u16 {
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
        let host = if let Some(suffix) = host.strip_prefix("*.") {
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

    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        let port_ok = match self.port {
            PortPattern::Default => port == default_port(scheme),
            PortPattern::Exact(p) => port == p,
            PortPattern::Any => true,
        };
        let host_ok = match &self.host {
            HostPattern::Exact(h) => host == h,
            HostPattern::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        };
        port_ok && host_ok
    }
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

    /// Whether a request to `scheme://host:port` is allowed. `host` is
    /// compared case-insensitively.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let scheme = scheme.to_ascii_lowercase();
        self.rules.iter().any(|r| r.allows(&scheme, &host, port))
    }
}

/// The config key whose value (entries separated by commas or spaces) adds
/// to the allow-list of the active version: `wisp config set NAME
/// wisp.allow-outbound=https://api.example.com`. Changes take effect at the
/// next invocation, like any config change.
pub(crate) const CONFIG_KEY: &str = "wisp.allow-outbound";

/// Splits the config value of [`CONFIG_KEY`] into entries.
pub(crate) fn config_entries(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
}

/// The allow-list of a version's entries plus those of the config key.
pub(crate) fn effective(
    version_entries: &[String],
    config_value: Option<&str>,
) -> Result<AllowList, BadRule> {
    let mut entries: Vec<&str> = version_entries.iter().map(String::as_str).collect();
    entries.extend(config_value.map(config_entries).into_iter().flatten());
    AllowList::parse(&entries)
}

/// Per-invocation outbound state: the hooks `wasmtime-wasi-http` calls for
/// every request the guest sends.
pub(crate) struct Outbound {
    pub allow: Arc<AllowList>,
    /// Requests this invocation may still send.
    pub remaining: u32,
    pub max: u32,
    pub deadline: Instant,
    pub function: Arc<str>,
    pub log: LogCapture,
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

impl Outbound {
    /// Decides on one request: `Ok` with what is left of the deadline, or
    /// the error the guest gets (after logging why).
    fn admit(&mut self, uri: &http::Uri) -> Result<Duration, HttpError> {
        let scheme = uri.scheme_str().unwrap_or("https");
        let host = uri.host().unwrap_or("");
        let port = uri.port_u16().unwrap_or_else(|| default_port(scheme));
        let target = format!("{scheme}://{host}:{port}");
        if !self.allow.allows(scheme, host, port) {
            self.deny(format!(
                "outbound request to {target} denied: not on the function's allow-list"
            ));
            return Err(HttpError::HttpRequestDenied);
        }
        if self.remaining == 0 {
            self.deny(format!(
                "outbound request to {target} denied: more than {} outbound requests in one invocation",
                self.max
            ));
            return Err(HttpError::HttpRequestDenied);
        }
        self.remaining -= 1;
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpError::ConnectionTimeout);
        }
        Ok(left)
    }

    fn deny(&self, why: String) {
        // A guest can be denied thousands of times in one invocation: its
        // log keeps the first few, and the host log gets one line per
        // invocation with the count and the first (`LogCapture::warn`).
        self.log.warn("outbound requests denied", why);
    }
}

/// The smaller of a timeout the guest asked for and what is left.
fn clip(asked: Option<Duration>, left: Duration) -> Option<Duration> {
    Some(asked.map_or(left, |a| a.min(left)))
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        drop(fut);
        let left = match self.admit(request.uri()) {
            Ok(left) => left,
            Err(e) => return Box::new(async move { Err(e) }),
        };
        let asked = options.unwrap_or_default();
        // Every phase is bounded by what is left of the invocation's
        // deadline, and so is the whole exchange up to the response head.
        let options = RequestOptions {
            connect_timeout: clip(asked.connect_timeout, left),
            first_byte_timeout: clip(asked.first_byte_timeout, left),
            between_bytes_timeout: clip(asked.between_bytes_timeout, left),
        };
        Box::new(async move {
            let sent = tokio::time::timeout(
                left,
                wasmtime_wasi_http::default_send_request(request, Some(options)),
            )
            .await;
            let (response, io) = match sent {
                Err(_elapsed) => return Err(HttpError::ConnectionReadTimeout),
                Ok(r) => r?,
            };
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
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

    #[test]
    fn config_entries_add_to_the_version_list() {
        let l = effective(
            &["https://a.example.com".to_string()],
            Some("b.example.com, http://127.0.0.1:9000  *.c.example.com"),
        )
        .unwrap();
        assert!(l.allows("https", "a.example.com", 443));
        assert!(l.allows("http", "b.example.com", 80));
        assert!(l.allows("http", "127.0.0.1", 9000));
        assert!(l.allows("https", "x.c.example.com", 443));
        assert!(!l.allows("https", "d.example.com", 443));
        assert!(effective(&[], Some("ftp://x")).is_err());
        assert_eq!(effective(&[], Some(" , ")).unwrap(), AllowList::default());
    }

    #[test]
    fn trailing_slash_is_accepted() {
        assert!(list(&["https://api.example.com/"]).allows("https", "api.example.com", 443));
    }
}
