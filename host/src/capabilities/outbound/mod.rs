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
//! Names are not the whole check: every address the host name resolves to
//! is checked too. Loopback, link-local (the cloud metadata address
//! 169.254.169.254 among them), unspecified, private, shared (CGNAT),
//! multicast and other non-global ranges, in IPv4 and IPv6 and in IPv6's
//! forms of IPv4 addresses, are refused unless an entry names that address
//! literally (`http://127.0.0.1:8080` reaches 127.0.0.1; `localhost:*` does
//! not). The connection then goes to the address that was checked, not to
//! a second lookup's answer (DNS rebinding), with TLS still verified against
//! the host name.
//!
//! A denied request fails in the guest with `HTTP-request-denied`, and a
//! note goes to the invocation's log; the host's log gets one line per
//! invocation with the count of denials and the first.
//!
//! This file holds what runs per invocation: the state
//! `wasmtime-wasi-http` calls for each request ([`Outbound`]), the checks
//! in the order they run (name, count, addresses), and the config key that
//! adds entries. The entries and their matching are in `allow`, the
//! reserved ranges in `reserved`, the connection and TLS in `wire`: each
//! has its own tests, and the first two are pure logic.

mod allow;
mod reserved;
mod wire;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

pub use self::allow::{AllowList, BadRule};
use self::allow::{default_port, ip_literal};
pub use self::reserved::reserved;
use self::wire::{SendOk, not_found, send_to};
use super::logs::LogCapture;

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
/// every request the guest sends. Cloned into a request's future so that a
/// refusal found there (an address) is reported by the same `deny`.
#[derive(Clone)]
pub(crate) struct Outbound {
    pub allow: Arc<AllowList>,
    /// Requests this invocation may still send.
    pub remaining: u32,
    pub max: u32,
    pub deadline: Instant,
    pub function: Arc<str>,
    pub log: LogCapture,
}

type SendResult = Result<SendOk, HttpError>;

/// Where a request goes, from its URI.
struct Target {
    scheme: String,
    host: String,
    port: u16,
}

impl Target {
    fn of(uri: &http::Uri) -> Target {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or_else(|| default_port(&scheme));
        Target {
            host: uri.host().unwrap_or("").to_ascii_lowercase(),
            scheme,
            port,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Why the addresses of a request's host cannot be used.
enum Refused {
    /// An address is reserved and not named literally: a denial to note.
    Address(String),
    /// The name did not resolve (or not in time): an error for the guest.
    Lookup(HttpError),
}

impl Outbound {
    /// Decides on one request by name and count: `Ok` with what is left of
    /// the deadline, or the error the guest gets (after logging why).
    fn admit(&mut self, target: &Target) -> Result<Duration, HttpError> {
        let Target { scheme, host, port } = target;
        let (scheme, port) = (scheme.as_str(), *port);
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

    /// The addresses to connect to: every address `target`'s host resolves
    /// to (or the address it is), each checked against [`reserved`]. One
    /// refused address refuses the request, so an answer mixing a public
    /// address with 127.0.0.1 cannot try its luck.
    async fn vet(&self, target: &Target, timeout: Duration) -> Result<Vec<SocketAddr>, Refused> {
        let addrs: Vec<SocketAddr> = match ip_literal(&target.host) {
            Some(ip) => vec![SocketAddr::new(ip, target.port)],
            None => {
                let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
                match tokio::time::timeout(timeout, lookup).await {
                    Err(_) => return Err(Refused::Lookup(HttpError::DnsTimeout)),
                    Ok(Err(_)) => return Err(Refused::Lookup(not_found())),
                    Ok(Ok(addrs)) => addrs.collect(),
                }
            }
        };
        if addrs.is_empty() {
            return Err(Refused::Lookup(not_found()));
        }
        for addr in &addrs {
            let ip = addr.ip();
            let Some(why) = reserved(ip) else { continue };
            if self.allow.names_address(&target.scheme, ip, target.port) {
                continue;
            }
            let literal = SocketAddr::new(ip, target.port);
            let subject = if ip_literal(&target.host).is_some() {
                format!("{ip} is")
            } else {
                format!("{} resolves to {ip},", target.host)
            };
            return Err(Refused::Address(format!(
                "outbound request to {target} denied: {subject} {why}, which is reached only \
                 through an allow-list entry naming that address (such as {}://{literal})",
                target.scheme
            )));
        }
        Ok(addrs)
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
        let target = Target::of(request.uri());
        let left = match self.admit(&target) {
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
        let this = self.clone();
        Box::new(async move {
            let sent = tokio::time::timeout(left, async {
                let connect_timeout = options.connect_timeout.unwrap_or(left);
                let addrs = match this.vet(&target, connect_timeout).await {
                    Ok(addrs) => addrs,
                    Err(Refused::Address(why)) => {
                        this.deny(why);
                        return Err(HttpError::HttpRequestDenied);
                    }
                    Err(Refused::Lookup(e)) => return Err(e),
                };
                send_to(request, &target, &addrs, options).await
            })
            .await;
            match sent {
                Err(_elapsed) => Err(HttpError::ConnectionReadTimeout),
                Ok(r) => r,
            }
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

    fn outbound(entries: &[&str]) -> Outbound {
        Outbound {
            allow: Arc::new(list(entries)),
            remaining: 16,
            max: 16,
            deadline: Instant::now() + Duration::from_secs(10),
            function: Arc::from("f"),
            log: LogCapture::new(crate::capabilities::logs::LogLimits {
                bytes: 64 * 1024,
                entries: 1000,
            }),
        }
    }

    fn target(url: &str) -> Target {
        Target::of(&url.parse().unwrap())
    }

    async fn vet(o: &Outbound, url: &str) -> Result<Vec<SocketAddr>, String> {
        o.vet(&target(url), Duration::from_secs(5))
            .await
            .map_err(|e| match e {
                Refused::Address(why) => why,
                Refused::Lookup(e) => format!("lookup: {e}"),
            })
    }

    #[tokio::test]
    async fn addresses_are_vetted_before_connecting() {
        let o = outbound(&["localhost:*", "http://127.0.0.1:8080", "https://[::1]:8443"]);
        // A literal entry: that address, no lookup.
        assert_eq!(
            vet(&o, "http://127.0.0.1:8080/x").await.unwrap(),
            [SocketAddr::from(([127, 0, 0, 1], 8080))]
        );
        assert_eq!(
            vet(&o, "https://[::1]:8443/").await.unwrap(),
            ["[::1]:8443".parse::<SocketAddr>().unwrap()]
        );
        // A name resolving to loopback (from /etc/hosts, no DNS server
        // needed) is refused: the name is allowed, the address is not named.
        let why = vet(&o, "http://localhost:9000/").await.unwrap_err();
        assert!(why.contains("localhost resolves to"), "{why}");
        assert!(why.contains("loopback address"), "{why}");
        assert!(why.contains("naming that address"), "{why}");
        // A literal reserved address the list does not name.
        let o = outbound(&["*.0.5"]);
        let why = vet(&o, "http://10.0.0.5/").await.unwrap_err();
        assert!(
            why.starts_with("outbound request to http://10.0.0.5:80 denied: 10.0.0.5 is a private address in 10.0.0.0/8,"),
            "{why}"
        );
        assert!(why.contains("such as http://10.0.0.5:80"), "{why}");
        // A name that does not resolve is a lookup error, not a denial.
        let why = vet(&o, "http://nothing.invalid/").await.unwrap_err();
        assert!(why.starts_with("lookup:"), "{why}");
    }
}
