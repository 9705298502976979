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

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use ipnet::{Ipv4Net, Ipv6Net};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
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
fn ip_literal(host: &str) -> Option<IpAddr> {
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
    /// lets a request reach a [`reserved`] address.
    pub fn names_address(&self, scheme: &str, ip: IpAddr, port: u16) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        self.rules
            .iter()
            .any(|r| r.names_address(&scheme, ip, port))
    }
}

// ------------------------------------------------------------ addresses

/// A range of addresses that a function reaches only through an allow-list
/// entry naming the address literally: not globally reachable, or the host's
/// own (loopback, link-local, private networks, cloud metadata).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// The range, e.g. `127.0.0.0/8`.
    pub range: ipnet::IpNet,
    /// What it is, e.g. `a loopback address`.
    pub what: &'static str,
    /// For an IPv6 form of an IPv4 address (mapped, NAT64, 6to4): which
    /// form, and the IPv4 address it stands for (whose range is `range`).
    pub embeds: Option<(&'static str, Ipv4Addr)>,
}

impl fmt::Display for Reserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((form, v4)) = self.embeds {
            write!(f, "the {form} form of {v4}, ")?;
        }
        write!(f, "{} in {}", self.what, self.range)
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, what: &'static str) -> (Ipv4Net, &'static str) {
    (Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len), what)
}

const fn v6(segments: [u16; 8], len: u8, what: &'static str) -> (Ipv6Net, &'static str) {
    let [a, b, c, d, e, f, g, h] = segments;
    (
        Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len),
        what,
    )
}

/// IANA's special-purpose IPv4 ranges that are not globally reachable, plus
/// multicast and the reserved class E (RFC 6890 and its registry).
const RESERVED_V4: &[(Ipv4Net, &str)] = &[
    v4(0, 0, 0, 0, 8, "a \"this network\" (unspecified) address"),
    v4(10, 0, 0, 0, 8, "a private address"),
    v4(100, 64, 0, 0, 10, "a shared (carrier-grade NAT) address"),
    v4(127, 0, 0, 0, 8, "a loopback address"),
    v4(169, 254, 0, 0, 16, "a link-local address (cloud metadata)"),
    v4(172, 16, 0, 0, 12, "a private address"),
    v4(192, 0, 0, 0, 24, "an IETF protocol assignment"),
    v4(192, 0, 2, 0, 24, "a documentation address"),
    v4(192, 88, 99, 0, 24, "a 6to4 relay anycast address"),
    v4(192, 168, 0, 0, 16, "a private address"),
    v4(198, 18, 0, 0, 15, "a benchmarking address"),
    v4(198, 51, 100, 0, 24, "a documentation address"),
    v4(203, 0, 113, 0, 24, "a documentation address"),
    v4(224, 0, 0, 0, 4, "a multicast address"),
    v4(240, 0, 0, 0, 4, "a reserved address (class E, broadcast)"),
];

/// The same for IPv6 (the forms that carry an IPv4 address are handled
/// before this table; the first match names the range).
const RESERVED_V6: &[(Ipv6Net, &str)] = &[
    v6([0; 8], 128, "an unspecified address"),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "a loopback address"),
    v6([0; 8], 96, "an IPv4-compatible address (deprecated)"),
    v6(
        [0, 0, 0, 0, 0xffff, 0, 0, 0],
        96,
        "an IPv4-translated address",
    ),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "a local-use NAT64 address",
    ),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "a discard-only address"),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "a Teredo address"),
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, "a benchmarking address"),
    v6(
        [0x2001, 0x10, 0, 0, 0, 0, 0, 0],
        28,
        "an ORCHID address (deprecated)",
    ),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "a documentation address",
    ),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "a documentation address"),
    v6(
        [0x5f00, 0, 0, 0, 0, 0, 0, 0],
        16,
        "a segment-routing (SRv6) address",
    ),
    v6(
        [0xfc00, 0, 0, 0, 0, 0, 0, 0],
        7,
        "a unique local (private) address",
    ),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "a link-local address"),
    v6(
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        "a site-local address (deprecated)",
    ),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "a multicast address"),
];

/// Whether `ip` is in a reserved range, and which; `None` for a globally
/// reachable address. An IPv6 address that carries an IPv4 one (mapped
/// `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`) is
/// judged by the IPv4 address it reaches.
pub fn reserved(ip: IpAddr) -> Option<Reserved> {
    let v6 = match ip {
        IpAddr::V4(v4) => return reserved_v4(v4),
        IpAddr::V6(v6) => v6,
    };
    let o = v6.octets();
    let embedded = if let Some(v4) = v6.to_ipv4_mapped() {
        Some(("IPv4-mapped", v4))
    } else if o[..12] == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0] {
        Some(("NAT64", Ipv4Addr::new(o[12], o[13], o[14], o[15])))
    } else if o[..2] == [0x20, 0x02] {
        Some(("6to4", Ipv4Addr::new(o[2], o[3], o[4], o[5])))
    } else {
        None
    };
    if let Some((form, v4)) = embedded {
        return reserved_v4(v4).map(|r| Reserved {
            embeds: Some((form, v4)),
            ..r
        });
    }
    RESERVED_V6
        .iter()
        .find(|(net, _)| net.contains(&v6))
        .map(|(net, what)| Reserved {
            range: (*net).into(),
            what,
            embeds: None,
        })
}

fn reserved_v4(ip: Ipv4Addr) -> Option<Reserved> {
    RESERVED_V4
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(net, what)| Reserved {
            range: (*net).into(),
            what,
            embeds: None,
        })
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

// ----------------------------------------------------------- the wire

/// What the guest sees when a name does not resolve (as wasmtime-wasi-http
/// reports a failed lookup).
fn not_found() -> HttpError {
    HttpError::DnsError {
        rcode: Some("address not available".into()),
        info_code: None,
    }
}

/// A connection, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

/// The TLS settings: the webpki roots and the ring provider, as
/// wasmtime-wasi-http's default uses; built once per process.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, HttpError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        // The provider is named, not taken from the process default, which
        // depends on which rustls features the whole build happens to have.
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|e| e.to_string())
    });
    config
        .clone()
        .map_err(|e| HttpError::InternalError(Some(format!("TLS configuration: {e}"))))
}

/// Connects to the first of `addrs` that answers, each attempt bounded by
/// the connect timeout; the last failure if none does.
async fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, HttpError> {
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = Some(HttpError::Connect(e)),
            Err(_) => last = Some(HttpError::ConnectionTimeout),
        }
    }
    Err(last.unwrap_or(HttpError::ConnectionTimeout))
}

/// Sends `request` over a connection to one of the vetted `addrs`: what
/// `wasmtime_wasi_http::default_send_request` does, except that it connects
/// to these addresses instead of looking the name up again (which a DNS
/// answer changed in between would turn to 127.0.0.1). TLS still verifies
/// the certificate against the host name, which is also the SNI.
async fn send_to(
    mut request: http::Request<WasiBody>,
    target: &Target,
    addrs: &[SocketAddr],
    options: RequestOptions,
) -> Result<SendOk, HttpError> {
    let forever = Duration::from_secs(600);
    let connect_timeout = options.connect_timeout.unwrap_or(forever);
    let first_byte_timeout = options.first_byte_timeout.unwrap_or(forever);
    // Tokio panics on a zero interval; 1 ns is as good as zero.
    let between_bytes_timeout = options
        .between_bytes_timeout
        .unwrap_or(forever)
        .max(Duration::from_nanos(1));

    let tcp = connect(addrs, connect_timeout).await?;
    let stream: Box<dyn Stream> = if target.scheme == "https" {
        let host = target.host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(tls_config()?);
        let tls = tokio::time::timeout(connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| HttpError::ConnectionTimeout)?
            .map_err(HttpError::Tls)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;

    // The request carries scheme and authority; on the wire (not to a
    // proxy) only the path and query go, and `Host` is already a header.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;

    let send = async move {
        let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)??;
        let mut timeout = tokio::time::interval(between_bytes_timeout);
        timeout.reset();
        Ok::<_, HttpError>(response.map(|incoming| ResponseBody { incoming, timeout }))
    };
    // Drive the connection while waiting for the response head; once it is
    // here, the connection's future goes to wasmtime-wasi-http, which
    // drives it while the guest reads the body.
    let mut send = std::pin::pin!(send);
    let mut conn = Some(conn);
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = send.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        let Some(c) = conn.as_mut() else {
            return Poll::Pending;
        };
        let done = ready!(Pin::new(c).poll(cx));
        conn = None;
        match done {
            Ok(()) => send.as_mut().poll(cx),
            Err(e) => Poll::Ready(Err(HttpError::from(e))),
        }
    })
    .await?;
    let io = async move {
        match conn {
            None => Ok(()),
            Some(conn) => conn.await.map_err(|e| {
                if e.is_timeout() {
                    HttpError::HttpResponseTimeout
                } else {
                    HttpError::from(e)
                }
            }),
        }
    };
    Ok((
        response.map(BodyExt::boxed_unsync),
        Box::new(io) as Box<dyn Future<Output = _> + Send>,
    ))
}

/// What a sent request gives wasmtime-wasi-http: the response, and the
/// connection's I/O to drive while its body is read.
type SendOk = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
);

/// The response body, failing if the upstream pauses longer than the
/// between-bytes timeout (as wasmtime-wasi-http's own body does).
struct ResponseBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(HttpError::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(HttpError::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// The range an address falls in, or "global".
    fn range_of(s: &str) -> String {
        reserved(ip(s)).map_or("global".into(), |r| r.range.to_string())
    }

    #[test]
    fn every_reserved_ipv4_range_is_refused_at_both_ends() {
        for (net, _) in RESERVED_V4 {
            let first = net.network();
            let last = net.broadcast();
            for addr in [first, last] {
                assert_eq!(range_of(&addr.to_string()), net.to_string(), "{addr}");
            }
        }
        for (addr, range) in [
            ("0.0.0.0", "0.0.0.0/8"),
            ("10.0.0.5", "10.0.0.0/8"),
            ("100.64.0.1", "100.64.0.0/10"),
            ("100.100.100.200", "100.64.0.0/10"),
            ("127.0.0.1", "127.0.0.0/8"),
            ("127.255.255.254", "127.0.0.0/8"),
            ("169.254.169.254", "169.254.0.0/16"),
            ("172.16.0.1", "172.16.0.0/12"),
            ("172.31.255.255", "172.16.0.0/12"),
            ("192.0.0.8", "192.0.0.0/24"),
            ("192.0.2.1", "192.0.2.0/24"),
            ("192.168.1.1", "192.168.0.0/16"),
            ("198.19.0.1", "198.18.0.0/15"),
            ("224.0.0.1", "224.0.0.0/4"),
            ("255.255.255.255", "240.0.0.0/4"),
        ] {
            assert_eq!(range_of(addr), range, "{addr}");
        }
        // Just outside the ranges, and ordinary public addresses.
        for addr in [
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
        ] {
            assert_eq!(range_of(addr), "global", "{addr}");
        }
    }

    #[test]
    fn every_reserved_ipv6_range_is_refused() {
        for (addr, range) in [
            ("::", "::/128"),
            ("::1", "::1/128"),
            ("::5", "::/96"),
            ("::ffff:0:a00:5", "::ffff:0:0:0/96"),
            ("64:ff9b:1::1", "64:ff9b:1::/48"),
            ("100::1", "100::/64"),
            ("2001::1", "2001::/32"),
            ("2001:2::1", "2001:2::/48"),
            ("2001:10::1", "2001:10::/28"),
            ("2001:db8::1", "2001:db8::/32"),
            ("3fff::1", "3fff::/20"),
            ("5f00::1", "5f00::/16"),
            ("fc00::1", "fc00::/7"),
            ("fd12:3456::1", "fc00::/7"),
            ("fe80::1", "fe80::/10"),
            ("febf::1", "fe80::/10"),
            ("fec0::1", "fec0::/10"),
            ("ff02::1", "ff00::/8"),
        ] {
            assert_eq!(range_of(addr), range, "{addr}");
        }
        for addr in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450::1",
            "fbff::1",
            "fe7f::1",
        ] {
            assert_eq!(range_of(addr), "global", "{addr}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_judged_by_the_ipv4_address() {
        for (addr, v4, range, form) in [
            (
                "::ffff:127.0.0.1",
                "127.0.0.1",
                "127.0.0.0/8",
                "IPv4-mapped",
            ),
            (
                "::ffff:169.254.169.254",
                "169.254.169.254",
                "169.254.0.0/16",
                "IPv4-mapped",
            ),
            ("::ffff:10.0.0.5", "10.0.0.5", "10.0.0.0/8", "IPv4-mapped"),
            (
                "::ffff:172.16.0.1",
                "172.16.0.1",
                "172.16.0.0/12",
                "IPv4-mapped",
            ),
            (
                "::ffff:192.168.0.1",
                "192.168.0.1",
                "192.168.0.0/16",
                "IPv4-mapped",
            ),
            (
                "::ffff:100.64.0.1",
                "100.64.0.1",
                "100.64.0.0/10",
                "IPv4-mapped",
            ),
            ("::ffff:0.0.0.0", "0.0.0.0", "0.0.0.0/8", "IPv4-mapped"),
            ("64:ff9b::127.0.0.1", "127.0.0.1", "127.0.0.0/8", "NAT64"),
            (
                "64:ff9b::a9fe:a9fe",
                "169.254.169.254",
                "169.254.0.0/16",
                "NAT64",
            ),
            ("2002:7f00:1::", "127.0.0.1", "127.0.0.0/8", "6to4"),
            ("2002:c0a8:101::1", "192.168.1.1", "192.168.0.0/16", "6to4"),
        ] {
            let r = reserved(ip(addr)).unwrap_or_else(|| panic!("{addr} passed"));
            assert_eq!(r.range.to_string(), range, "{addr}");
            assert_eq!(r.embeds, Some((form, v4.parse().unwrap())), "{addr}");
            assert!(r.to_string().contains(v4), "{r}");
        }
        // The same forms of public addresses are public.
        for addr in ["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"] {
            assert_eq!(range_of(addr), "global", "{addr}");
        }
        let r = reserved(ip("169.254.169.254")).unwrap();
        assert_eq!(
            r.to_string(),
            "a link-local address (cloud metadata) in 169.254.0.0/16"
        );
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

    fn get(url: &str) -> http::Request<WasiBody> {
        http::Request::get(url)
            .header(http::header::HOST, "example.invalid")
            .body(
                http_body_util::Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap()
    }

    /// A loopback listener that accepts one connection and hands back what
    /// the client sent first, after answering `reply`.
    async fn one_shot(reply: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = conn.read(&mut buf).await.unwrap();
            buf.truncate(n);
            let _ = conn.write_all(reply).await;
            buf
        });
        (addr, task)
    }

    #[tokio::test]
    async fn connects_to_the_vetted_address_without_looking_the_name_up_again() {
        // The host name does not resolve at all: the request can only have
        // gone to the address it was given.
        let (addr, seen) =
            one_shot(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi").await;
        let url = format!("http://example.invalid:{}/path?q=1", addr.port());
        let (response, io) = send_to(get(&url), &target(&url), &[addr], RequestOptions::default())
            .await
            .expect("sent");
        tokio::spawn(Box::into_pin(io));
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hi");
        let head = String::from_utf8(seen.await.unwrap()).unwrap();
        // Origin form on the wire, the name in `Host`.
        assert!(head.starts_with("GET /path?q=1 HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_lowercase().contains("host: example.invalid"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn tls_to_a_vetted_address_names_the_host() {
        // The TLS client hello goes to the vetted address and carries the
        // host name (SNI), which the certificate is checked against.
        let (addr, seen) = one_shot(b"").await;
        let url = format!("https://api.example.invalid:{}/", addr.port());
        let result = send_to(get(&url), &target(&url), &[addr], RequestOptions::default()).await;
        assert!(result.is_err(), "no TLS server there");
        let hello = seen.await.unwrap();
        assert_eq!(hello.first(), Some(&0x16), "a TLS handshake record");
        assert!(
            hello.windows(19).any(|w| w == b"api.example.invalid"),
            "no SNI in {hello:?}"
        );
    }

    #[test]
    fn trailing_slash_is_accepted() {
        assert!(list(&["https://api.example.com/"]).allows("https", "api.example.com", 443));
    }
}
