//! A typed client of Wisp's admin API (`/v1/...` behind a bearer token):
//! one method per endpoint, taking and returning the wire types that
//! `wisp-host` defines (and this crate re-exports), so that the client and
//! the server cannot disagree on a field.
//!
//! The `wisp` CLI is built on it, and so are the end-to-end tests; a service
//! that manages a Wisp host can use it the same way:
//!
//! ```no_run
//! use wisp_client::{Client, DeployOptions, NewSubscription};
//!
//! # async fn demo() -> Result<(), wisp_client::Error> {
//! let token = std::env::var("WISP_ADMIN_TOKEN").unwrap_or_default();
//! let wisp = Client::new("http://127.0.0.1:9090", token)?;
//!
//! let wasm = std::fs::read("hello.wasm").expect("a component");
//! let info = wisp
//!     .deploy("hello", wasm.into(), &DeployOptions::default().route("/hello"))
//!     .await?;
//! println!("hello is at version {}", info.active_version);
//!
//! wisp.subscribe(&NewSubscription {
//!     function: "hello".into(),
//!     topic: "greetings".into(),
//!     ..Default::default()
//! })
//! .await?;
//! for f in wisp.list().await? {
//!     println!("{} {:?}", f.name, f.routes);
//! }
//! # Ok(()) }
//! ```
//!
//! Every refusal of the server (`{"error": {"code", "message"}}`) is an
//! [`Error::Api`] holding its status, code and message; a failure to get an
//! answer at all is one of the other [`Error`] variants, each with a message
//! fit to show as is.
//!
//! The token is a [`SecretString`]: it is sent as the bearer token and never
//! appears in `Debug` output or in an error.

#![deny(missing_docs)]

use std::net::IpAddr;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

mod data;
mod events;
mod functions;
mod keys;
mod tokens;

pub use functions::{Invocation, Upload};

// The HTTP client underneath, for the types [`Client::invoke`] hands back.
pub use reqwest;
pub use secrecy;

// The wire types, as wisp-host defines them.
/// A host of a cluster, as `GET /v1/hosts` lists it.
pub use wisp_host::cluster::Member;
pub use wisp_host::{
    AliasInfo, AliasSpec, ConfigEntry, ConfigList, DeliveryRecord, DeliveryStatus, DeployOptions,
    ErrorBody, ErrorDetail, EventInfo, FunctionInfo, FunctionSummary, JobCounts, JobInfo, JobState,
    JobTask, KeyList, LimitOverrides, Limits, LogEntry, LogLevel, LogPage, LogQuery, LogStream,
    NewJob, NewSchedule, NewSubscription, Published, Purged, RedriveRequest, Redriven, RetryPolicy,
    Schedule, SetConfig, Share, Subscription, VersionInfo,
};
pub use wisp_host::{AuditEntry, AuditPage, AuditQuery, CreatedToken, NewToken, TokenInfo, WhoAmI};
pub use wisp_host::{CreatedKey, FunctionAuth, KeyInfo, NewKey};
pub use wisp_host::{FunctionStats, HostStats, StatsQuery, StatsSeries};

/// How long to wait for the admin API to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of an admin call other than deploy and invoke.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The admin API refused the call with one of Wisp's JSON errors. Its
    /// `Display` is the server's message (with the invocation id, if any).
    #[error("{message}{}", invocation_suffix(.invocation_id))]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The error code (`function_not_found`, `invalid_name`, ...).
        code: String,
        /// The server's message.
        message: String,
        /// The invocation the error is about, for invocation failures.
        invocation_id: Option<String>,
    },
    /// The admin API answered an error status without a Wisp error body
    /// (a proxy in front of it, most likely).
    #[error("the admin API answered {status}{excerpt}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// `": "` and the first line of the body, or nothing.
        excerpt: String,
    },
    /// No connection could be made.
    #[error("cannot reach the Wisp admin API at {url}: is `wisp serve` running?")]
    Connect {
        /// The admin API's base URL.
        url: String,
        /// What the HTTP client said.
        error: reqwest::Error,
    },
    /// The admin API is served over TLS with a certificate this client
    /// does not trust (or for another name).
    #[error(
        "cannot verify the TLS certificate of the Wisp admin API at {url}: {reason} (a \
         private CA is trusted with WISP_ADMIN_CA=FILE in the CLI, `trust_pem` in this crate)"
    )]
    Certificate {
        /// The admin API's base URL.
        url: String,
        /// What the TLS library said.
        reason: String,
    },
    /// No answer within the deadline.
    #[error("the Wisp admin API at {url} did not answer in time")]
    Timeout {
        /// The admin API's base URL.
        url: String,
        /// What the HTTP client said.
        error: reqwest::Error,
    },
    /// Any other failure to send the request or read the answer.
    #[error("talking to the Wisp admin API at {url} failed")]
    Transport {
        /// The admin API's base URL.
        url: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// A successful answer that is not JSON.
    #[error("the admin API answered something other than JSON")]
    NotJson(#[source] serde_json::Error),
    /// A JSON answer of another shape than this client knows.
    #[error("unexpected answer from the admin API (is the client older than the host?)")]
    Decode(#[source] serde_json::Error),
    /// The base URL is not an `http` or `https` URL.
    #[error("invalid admin URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client")]
    Setup(#[source] reqwest::Error),
}

fn invocation_suffix(id: &Option<String>) -> String {
    match id {
        Some(id) => format!(" (invocation {id})"),
        None => String::new(),
    }
}

impl Error {
    /// The server's error code, for a refusal of the admin API.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status the admin API answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. } | Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one Wisp host's admin API. Cheap to clone (the connection
/// pool is shared).
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base_url: Url,
    token: SecretString,
}

/// Builds a [`Client`] with settings other than the defaults.
#[derive(Debug)]
pub struct ClientBuilder {
    base_url: String,
    token: SecretString,
    user_agent: String,
    roots: Vec<reqwest::Certificate>,
}

impl ClientBuilder {
    /// Trusts the certificates of `pem` (one or more, PEM) as well as the
    /// public roots, for an admin API served over TLS with a certificate of
    /// a private CA (`WISP_ADMIN_CA`). The server's certificate is always
    /// verified.
    pub fn trust_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(Error::Setup)?;
        self.roots.extend(certs);
        Ok(self)
    }

    /// The `User-Agent` of every call (default `wisp-client/VERSION`).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// The client.
    pub fn build(self) -> Result<Client, Error> {
        let base_url = parse_admin_url(&self.base_url)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(self.user_agent);
        // An `http_proxy` in the environment must not capture calls to a
        // host on this machine, which is where the admin API usually is.
        if is_loopback(&base_url) {
            builder = builder.no_proxy();
        }
        for root in self.roots {
            builder = builder.add_root_certificate(root);
        }
        let http = builder.build().map_err(Error::Setup)?;
        Ok(Client {
            http,
            base_url,
            token: self.token,
        })
    }
}

impl Client {
    /// A client of the admin API at `base_url` (`http://127.0.0.1:9090`;
    /// `/v1/...` is appended to its path), calling it with `token`.
    pub fn new(base_url: &str, token: impl Into<SecretString>) -> Result<Client, Error> {
        Client::builder(base_url, token).build()
    }

    /// A builder, for settings other than the defaults.
    pub fn builder(base_url: &str, token: impl Into<SecretString>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.to_string(),
            token: token.into(),
            user_agent: concat!("wisp-client/", env!("CARGO_PKG_VERSION")).to_string(),
            roots: Vec::new(),
        }
    }

    /// The admin API's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// `GET /v1/health` (no token needed): whether the host answers.
    pub async fn health(&self) -> Result<(), Error> {
        let request = self
            .http
            .get(self.url(&["v1", "health"]))
            .timeout(ADMIN_TIMEOUT);
        self.call_empty(request).await
    }

    /// `GET /v1/hosts`: the live hosts of the cluster, by node name (none
    /// for a host not in a cluster).
    pub async fn hosts(&self) -> Result<Vec<Member>, Error> {
        #[derive(Deserialize)]
        struct Hosts {
            hosts: Vec<Member>,
        }
        let hosts: Hosts = self
            .call(self.request(Method::GET, &["v1", "hosts"]))
            .await?;
        Ok(hosts.hosts)
    }

    /// `GET /metrics`: the host's metrics in Prometheus' text format.
    pub async fn metrics(&self) -> Result<String, Error> {
        let response = self
            .checked(self.request(Method::GET, &["metrics"]))
            .await?;
        response.text().await.map_err(|e| self.transport_error(e))
    }

    /// The URL of an endpoint: the base URL's path plus `segments`, each
    /// percent-encoded (so a function name or a key can never escape its
    /// segment).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request with the token and the usual deadline.
    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http
            .request(method, self.url(segments))
            .bearer_auth(self.token.expose_secret())
            .timeout(ADMIN_TIMEOUT)
    }

    /// Sends `request`; a failure to get any answer becomes a clear error.
    async fn send(&self, request: RequestBuilder) -> Result<Response, Error> {
        request.send().await.map_err(|e| self.transport_error(e))
    }

    /// Sends `request` and turns an error status into an [`Error`].
    async fn checked(&self, request: RequestBuilder) -> Result<Response, Error> {
        let response = self.send(request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(error_from_body(status, &body))
    }

    /// Sends `request` and reads a successful JSON answer as `T`.
    async fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, Error> {
        let response = self.checked(request).await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(Error::NotJson)?;
        serde_json::from_value(value).map_err(Error::Decode)
    }

    /// Sends `request`; any successful answer will do.
    async fn call_empty(&self, request: RequestBuilder) -> Result<(), Error> {
        self.checked(request).await.map(drop)
    }

    fn transport_error(&self, e: reqwest::Error) -> Error {
        let url = self.base_url.as_str().trim_end_matches('/').to_string();
        if let Some(reason) = certificate_error(&e) {
            Error::Certificate { url, reason }
        } else if e.is_connect() {
            Error::Connect { url, error: e }
        } else if e.is_timeout() {
            Error::Timeout { url, error: e }
        } else {
            Error::Transport { url, source: e }
        }
    }
}

/// What rustls said, if `e` is a failure to verify the server's
/// certificate: found by its words, the error types in between being
/// private to reqwest and hyper.
fn certificate_error(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        let text = s.to_string();
        if text.contains("CaUsedAsEndEntity") {
            // What `openssl req -x509` makes by default: a CA certificate,
            // which webpki refuses to take for a server's.
            return Some(format!(
                "{text}: the server's certificate is a CA certificate; give the server one a CA \
                 signs, or a self-signed one made with `-addext basicConstraints=critical,CA:FALSE`"
            ));
        }
        if text.contains("certificate") {
            return Some(text);
        }
        // io::Error's `source` skips the error it wraps: look inside.
        source = match s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => s.source(),
        };
    }
    None
}

/// Checks an admin URL: `http` or `https`, usable as a base; its query and
/// fragment are dropped.
fn parse_admin_url(s: &str) -> Result<Url, Error> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: s.to_string(),
        reason,
    };
    let mut url = Url::parse(s).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(invalid(
            "expected http://HOST:PORT or https://HOST:PORT".to_string(),
        ));
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // IPv6 hosts come bracketed: `[::1]`.
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The shape of every error the host answers (read leniently: fields this
/// client does not know are ignored).
#[derive(Deserialize)]
struct Envelope {
    error: Detail,
}

#[derive(Deserialize)]
struct Detail {
    #[serde(default)]
    code: String,
    message: String,
    #[serde(default)]
    invocation_id: Option<String>,
}

/// The error an answer with status `status` and body `body` stands for.
pub fn error_from_body(status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => Error::Api {
            status,
            code: error.code,
            message: error.message,
            invocation_id: error.invocation_id,
        },
        Err(_) => Error::Status {
            status,
            excerpt: excerpt(body),
        },
    }
}

/// `": <first line>"` of a non-Wisp error body, for context, or nothing.
fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let Ok(text) = std::str::from_utf8(body) else {
        return String::new();
    };
    let line = text.trim().lines().next().unwrap_or_default();
    if line.is_empty() {
        return String::new();
    }
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!(": {}…", &line[..cut]),
        None => format!(": {line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls() {
        assert!(parse_admin_url("http://127.0.0.1:9090").is_ok());
        assert!(parse_admin_url("https://wisp.example/admin/").is_ok());
        assert!(parse_admin_url("127.0.0.1:9090").is_err());
        assert!(parse_admin_url("ftp://host").is_err());
        let e = parse_admin_url("mailto:me@example.com").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid admin URL `mailto:me@example.com`: expected http://HOST:PORT or https://HOST:PORT"
        );
    }

    #[test]
    fn endpoint_urls_keep_the_base_path_and_encode_segments() {
        let client = |base: &str| Client::new(base, "t").unwrap();
        assert_eq!(
            client("http://127.0.0.1:9090")
                .url(&["v1", "functions"])
                .as_str(),
            "http://127.0.0.1:9090/v1/functions"
        );
        assert_eq!(
            client("https://h/admin/?q=1#f")
                .url(&["v1", "functions", "a/b"])
                .as_str(),
            "https://h/admin/v1/functions/a%2Fb"
        );
    }

    #[test]
    fn loopback_detection() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(is_loopback(&url("http://127.0.0.1:9090")));
        assert!(is_loopback(&url("http://localhost:9090")));
        assert!(is_loopback(&url("http://[::1]:9090")));
        assert!(!is_loopback(&url("http://10.0.0.1:9090")));
        assert!(!is_loopback(&url("https://wisp.example")));
    }

    #[test]
    fn the_token_never_shows() {
        let client = Client::new("http://127.0.0.1:9090", "s3cret-t0ken").unwrap();
        assert!(!format!("{client:?}").contains("s3cret"));
    }

    #[test]
    fn reads_wisp_errors() {
        let body = br#"{"error":{"code":"function_not_found","message":"no function named x"}}"#;
        let e = error_from_body(StatusCode::NOT_FOUND, body);
        assert_eq!(e.to_string(), "no function named x");
        assert_eq!(e.code(), Some("function_not_found"));
        assert_eq!(e.status(), Some(StatusCode::NOT_FOUND));
        let body = br#"{"error":{"code":"timeout","message":"timed out","invocation_id":"abc"}}"#;
        assert_eq!(
            error_from_body(StatusCode::GATEWAY_TIMEOUT, body).to_string(),
            "timed out (invocation abc)"
        );
        let e = error_from_body(StatusCode::BAD_GATEWAY, b"<html>oops</html>");
        assert_eq!(
            e.to_string(),
            "the admin API answered 502 Bad Gateway: <html>oops</html>"
        );
        assert_eq!(e.code(), None);
        let e = error_from_body(StatusCode::BAD_REQUEST, br#"{"error":"flat"}"#);
        assert!(matches!(e, Error::Status { .. }));
    }

    #[test]
    fn excerpts_of_other_bodies() {
        assert_eq!(excerpt(b""), "");
        assert_eq!(excerpt(b"\n  bad gateway\nmore"), ": bad gateway");
        assert_eq!(excerpt(&[0xff, 0xfe]), "");
        assert_eq!(
            excerpt("x".repeat(300).as_bytes()).chars().count(),
            2 + 200 + 1
        );
    }

    #[tokio::test]
    async fn no_host_is_a_clear_error() {
        // Port 9 (discard) on loopback: nothing listens there.
        let client = Client::new("http://127.0.0.1:9", "t").unwrap();
        let e = client.list().await.unwrap_err();
        assert!(matches!(e, Error::Connect { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "cannot reach the Wisp admin API at http://127.0.0.1:9: is `wisp serve` running?"
        );
    }
}
