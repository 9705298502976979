//! Functions and their versions: deploy, list, info, versions, rollback,
//! delete, invoke, logs, stats.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Method, Response};
use secrecy::ExposeSecret;
use serde::Serialize;
use wisp_host::{
    AliasInfo, AliasSpec, DeployOptions, FunctionInfo, FunctionStats, FunctionSummary, HostStats,
    LogPage, LogQuery, Setting, StatsQuery, VersionInfo,
};

use crate::{Client, Error};

/// Deadline of a deploy: the host compiles the component before it answers,
/// which takes seconds for a large one on a slow machine.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// An artifact to upload: its bytes, or a stream of them and their length.
pub struct Upload {
    body: reqwest::Body,
    len: u64,
}

impl Upload {
    /// A streamed upload of `len` bytes (for a progress bar, or a file too
    /// large to hold in memory).
    pub fn stream(body: reqwest::Body, len: u64) -> Upload {
        Upload { body, len }
    }
}

impl From<Vec<u8>> for Upload {
    fn from(wasm: Vec<u8>) -> Upload {
        let len = wasm.len() as u64;
        Upload {
            body: wasm.into(),
            len,
        }
    }
}

impl From<Bytes> for Upload {
    fn from(wasm: Bytes) -> Upload {
        let len = wasm.len() as u64;
        Upload {
            body: wasm.into(),
            len,
        }
    }
}

/// A synchronous call of a function through the admin API
/// ([`Client::invoke`]).
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The method the function sees.
    pub method: Method,
    /// Path and query the function sees (`/x?q=1`).
    pub path: String,
    /// Headers the function sees (besides those the host adds).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request body.
    pub body: Option<Bytes>,
}

/// The query of a deploy: `route`, `env` and `allow_outbound` repeated, the
/// rest once. (The host reads it with `serde_html_form`, which repeats keys
/// for lists; reqwest's `query` cannot write lists.)
pub(crate) fn deploy_query(o: &DeployOptions) -> Vec<(&'static str, String)> {
    let mut query: Vec<(&str, String)> = Vec::new();
    query.extend(o.routes.iter().map(|r| ("route", r.clone())));
    query.extend(o.env.iter().map(|e| ("env", e.clone())));
    let numbers = [
        ("timeout_ms", o.timeout_ms),
        ("memory_bytes", o.memory_bytes),
        ("max_body_bytes", o.max_body_bytes),
        ("kv_max_key_bytes", o.kv_max_key_bytes),
        ("kv_max_value_bytes", o.kv_max_value_bytes),
        ("kv_max_total_bytes", o.kv_max_total_bytes),
        ("concurrency", o.concurrency.map(u64::from)),
        ("queue", o.queue.map(u64::from)),
        ("queue_timeout_ms", o.queue_timeout_ms),
        ("reuse_concurrency", o.reuse_concurrency.map(u64::from)),
        ("idle_timeout_ms", o.idle_timeout_ms),
    ];
    query.extend(
        numbers
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v.to_string()))),
    );
    if let Some(on) = o.config_env {
        query.push(("config_env", on.to_string()));
    }
    if let Some(on) = o.version_pinning {
        query.push(("version_pinning", on.to_string()));
    }
    if let Some(reuse) = &o.reuse {
        query.push(("reuse", reuse.clone()));
    }
    if let Some(rate) = &o.rate_limit {
        query.push(("rate_limit", rate.clone()));
    }
    query.extend(o.cors_origin.iter().map(|c| ("cors_origin", c.clone())));
    if let Some(on) = o.cors_credentials {
        query.push(("cors_credentials", on.to_string()));
    }
    query.extend(o.hosts.iter().map(|h| ("host", h.clone())));
    if let Some(auth) = &o.auth {
        query.push(("auth", auth.clone()));
    }
    query.extend(
        o.allow_outbound
            .iter()
            .map(|h| ("allow_outbound", h.clone())),
    );
    match &o.static_dir {
        Setting::Inherit => {}
        Setting::Set(dir) => query.push(("static_dir", dir.clone())),
        // An empty value removes the directory.
        Setting::Clear => query.push(("static_dir", String::new())),
    }
    query
}

/// Body of a rollback.
#[derive(Serialize)]
struct Rollback {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
}

impl Client {
    /// `POST /v1/functions/{name}`: uploads a new version of a function
    /// (created if new) and makes it active once it is compiled and
    /// durable. Unset options are inherited from the active version.
    pub async fn deploy(
        &self,
        name: &str,
        wasm: Upload,
        options: &DeployOptions,
    ) -> Result<FunctionInfo, Error> {
        let request = self
            .request(Method::POST, &["v1", "functions", name])
            .timeout(DEPLOY_TIMEOUT)
            .query(&deploy_query(options))
            .header(CONTENT_TYPE, "application/wasm")
            // Sent although the body may be a stream, so that the host can
            // refuse an oversized upload before reading it.
            .header(CONTENT_LENGTH, wasm.len)
            .body(wasm.body);
        self.call(request).await
    }

    /// `GET /v1/functions`: every function.
    pub async fn list(&self) -> Result<Vec<FunctionSummary>, Error> {
        self.call(self.request(Method::GET, &["v1", "functions"]))
            .await
    }

    /// `GET /v1/functions/{name}`: a function, its active version's
    /// settings and every version.
    pub async fn info(&self, name: &str) -> Result<FunctionInfo, Error> {
        self.call(self.request(Method::GET, &["v1", "functions", name]))
            .await
    }

    /// `GET /v1/functions/{name}/versions`.
    pub async fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, Error> {
        self.call(self.request(Method::GET, &["v1", "functions", name, "versions"]))
            .await
    }

    /// `POST /v1/functions/{name}/rollback`: makes `version` active again;
    /// without one, the newest version older than the active one.
    pub async fn rollback(&self, name: &str, version: Option<u64>) -> Result<FunctionInfo, Error> {
        let request = self
            .request(Method::POST, &["v1", "functions", name, "rollback"])
            .json(&Rollback { version });
        self.call(request).await
    }

    /// `DELETE /v1/functions/{name}`: the function and every version (a
    /// function with aliases is refused, 409 `conflict`).
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        self.call_empty(self.request(Method::DELETE, &["v1", "functions", name]))
            .await
    }

    /// `DELETE /v1/functions/{name}?force=true`: the same, aliases or not.
    pub async fn delete_forced(&self, name: &str) -> Result<(), Error> {
        let request = self
            .request(Method::DELETE, &["v1", "functions", name])
            .query(&[("force", "true")]);
        self.call_empty(request).await
    }

    /// `PUT /v1/functions/{name}/aliases/{alias}`: creates or changes an
    /// alias.
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        spec: &AliasSpec,
    ) -> Result<AliasInfo, Error> {
        let request = self
            .request(Method::PUT, &["v1", "functions", name, "aliases", alias])
            .json(spec);
        self.call(request).await
    }

    /// `GET /v1/functions/{name}/aliases`.
    pub async fn aliases(&self, name: &str) -> Result<Vec<AliasInfo>, Error> {
        self.call(self.request(Method::GET, &["v1", "functions", name, "aliases"]))
            .await
    }

    /// `DELETE /v1/functions/{name}/aliases/{alias}`.
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<(), Error> {
        let path = ["v1", "functions", name, "aliases", alias];
        self.call_empty(self.request(Method::DELETE, &path)).await
    }

    /// `{method} /v1/functions/{name}/invoke?path=...`: calls the function
    /// whatever its routes. The answer is the function's, returned whatever
    /// its status (a failure of the host itself, such as a timeout, is a
    /// Wisp error body: see [`error_from_body`](crate::error_from_body)).
    /// No deadline of the client's own: the host enforces the function's.
    pub async fn invoke(&self, name: &str, invocation: Invocation) -> Result<Response, Error> {
        let mut request = self
            .http
            .request(
                invocation.method,
                self.url(&["v1", "functions", name, "invoke"]),
            )
            .bearer_auth(self.token.expose_secret())
            .query(&[("path", invocation.path)]);
        for (name, value) in invocation.headers {
            request = request.header(name, value);
        }
        if let Some(body) = invocation.body {
            request = request.body(body);
        }
        self.send(request).await
    }

    /// `GET /v1/functions/{name}/logs`: a page of the function's log, oldest
    /// first; pass its `cursor` as `after` to read on.
    pub async fn logs(&self, name: &str, query: &LogQuery) -> Result<LogPage, Error> {
        let request = self
            .request(Method::GET, &["v1", "functions", name, "logs"])
            .query(query);
        self.call(request).await
    }

    /// `GET /v1/functions/{name}/stats`: the function's last hour on the
    /// host, oldest first, in steps of `step` seconds (a multiple of 10;
    /// the host's default, 10, without it).
    pub async fn stats(&self, name: &str, step: Option<u64>) -> Result<FunctionStats, Error> {
        let request = self
            .request(Method::GET, &["v1", "functions", name, "stats"])
            .query(&StatsQuery { step });
        self.call(request).await
    }

    /// `GET /v1/stats`: the last hour of every function the token may
    /// read, in steps of `step` seconds (the host's default, 60, without
    /// it).
    pub async fn all_stats(&self, step: Option<u64>) -> Result<HostStats, Error> {
        let request = self
            .request(Method::GET, &["v1", "stats"])
            .query(&StatsQuery { step });
        self.call(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_query_reads_back_as_the_same_options() {
        let options = DeployOptions {
            routes: vec!["/hello".into(), "/api/*".into()],
            env: vec!["A=1".into(), "B=x=y".into()],
            timeout_ms: Some(1500),
            memory_bytes: Some(64 << 20),
            max_body_bytes: None,
            allow_outbound: vec!["https://api.example.com".into(), "*.example.org".into()],
            config_env: Some(false),
            version_pinning: Some(true),
            auth: Some("key".into()),
            kv_max_key_bytes: Some(100),
            kv_max_value_bytes: None,
            kv_max_total_bytes: Some(1 << 20),
            static_dir: Setting::Clear,
            concurrency: Some(2),
            queue: Some(0),
            queue_timeout_ms: Some(1500),
            reuse: Some("10..20".into()),
            reuse_concurrency: Some(4),
            idle_timeout_ms: Some(2500),
            rate_limit: Some("100/s,burst=200".into()),
            cors_origin: vec!["https://app.example.com".into(), "*".into()],
            cors_credentials: Some(true),
            hosts: vec!["api.example.com".into(), "*.example.net".into()],
        };
        let query = deploy_query(&options);
        assert_eq!(
            query[..3],
            [
                ("route", "/hello".to_string()),
                ("route", "/api/*".to_string()),
                ("env", "A=1".to_string()),
            ]
        );
        // What the host parses the query into (admin: serde_html_form) is
        // what was sent: the two cannot drift apart unnoticed.
        let encoded = serde_html_form::to_string(&query).unwrap();
        let parsed: DeployOptions = serde_html_form::from_str(&encoded).unwrap();
        assert_eq!(parsed, options);
        let parsed: DeployOptions = serde_html_form::from_str(
            &serde_html_form::to_string(deploy_query(&DeployOptions::default())).unwrap(),
        )
        .unwrap();
        assert_eq!(parsed, DeployOptions::default());
    }

    #[test]
    fn log_queries_leave_out_what_is_unset() {
        let query = LogQuery {
            since: Some("10m".into()),
            limit: Some(1000),
            ..LogQuery::default()
        };
        let client = Client::new("http://127.0.0.1:9090", "t").unwrap();
        let request = client
            .request(Method::GET, &["v1", "functions", "f", "logs"])
            .query(&query)
            .build()
            .unwrap();
        assert_eq!(request.url().query(), Some("since=10m&limit=1000"));
    }
}
