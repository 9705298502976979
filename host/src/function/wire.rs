//! The function domain's JSON shapes in the admin API (also returned by
//! the library methods): deploy options, functions and their versions.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{Limits, Reuse};
use crate::function::records::{FunctionRecord, PrecompiledFrom, VersionRecord};
use crate::gateway::cors::Cors;

/// One version of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionInfo {
    /// Version number (1, 2, …).
    pub version: u64,
    /// sha256 of the artifact, hex.
    pub sha256: String,
    /// Artifact size in bytes.
    pub size_bytes: u64,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Whether this version serves requests.
    pub active: bool,
    /// Routes of this version.
    pub routes: Vec<String>,
    /// Environment variables of this version.
    pub env: BTreeMap<String, String>,
    /// Limits of this version.
    pub limits: Limits,
    /// For precompiled code: the wasm it came from and who signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precompiled: Option<PrecompiledFrom>,
}

/// A function with its active configuration and versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunctionInfo {
    /// Name.
    pub name: String,
    /// The version serving requests.
    pub active_version: u64,
    /// Routes of the active version.
    pub routes: Vec<String>,
    /// Environment of the active version.
    pub env: BTreeMap<String, String>,
    /// Limits of the active version.
    pub limits: Limits,
    /// Outbound HTTP allow-list of the active version.
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    /// Whether plain settings are environment variables of the guest.
    #[serde(default)]
    pub config_env: bool,
    /// Whether a request may pin a serving version (`wisp-version`).
    #[serde(default)]
    pub version_pinning: bool,
    /// Who may invoke it on the data plane: `public` (anyone), or `key`
    /// (a request needs one of its invoke keys).
    #[serde(default)]
    pub auth: crate::auth::FunctionAuth,
    /// The function's aliases.
    #[serde(default)]
    pub aliases: Vec<crate::function::aliases::AliasInfo>,
    /// For a preview-1 module: the read-only directory granted to it (at
    /// `/static` in the guest), relative to `<data-dir>/static/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_dir: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last deploy or rollback (RFC 3339).
    pub updated_at: String,
    /// All versions, oldest first.
    pub versions: Vec<VersionInfo>,
    /// What the active version handles: `http` (it exports
    /// `wasi:http/incoming-handler`), `events` (it exports
    /// `wisp:function/event-handler`: events are calls of it, not POSTs),
    /// `cgi` (a preview-1 module).
    #[serde(default)]
    pub handlers: Vec<String>,
    /// Invocations the function may run at once: `limits.concurrency`, or
    /// the host's per-function share when it sets none.
    #[serde(default)]
    pub effective_concurrency: u32,
    /// What the active version is: `wasi-0.2-component`,
    /// `wasi-0.3-component` (it exports `wasi:http/handler@0.3`) or
    /// `wasi-preview1-module` (run CGI-style). Absent while it is not
    /// loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// How the host runs its code: `cranelift` (machine code) or `pulley`
    /// (wasmtime's interpreter), as `wisp serve --engine` says. Absent
    /// while it is not loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Instance reuse of the active version (a WASI 0.3 component); absent:
    /// a fresh instance per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<Reuse>,
    /// CORS answered by the host for the active version (absent: none;
    /// `OPTIONS` requests reach the function).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Hosts the routes serve (absent: any host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// A line of `GET /v1/functions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunctionSummary {
    /// Name.
    pub name: String,
    /// The version serving requests.
    pub active_version: u64,
    /// Routes of the active version.
    pub routes: Vec<String>,
    /// Number of versions.
    pub versions: u64,
    /// Hosts the routes serve (absent: any host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Last deploy or rollback (RFC 3339).
    pub updated_at: String,
    /// What the active version is, as in [`FunctionInfo::kind`]. Absent
    /// while it is not loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

pub(crate) fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

impl VersionInfo {
    pub(crate) fn from_record(v: &VersionRecord, active: u64) -> VersionInfo {
        VersionInfo {
            version: v.version,
            sha256: v.sha256.clone(),
            size_bytes: v.size_bytes,
            created_at: rfc3339(v.created_at_ms),
            active: v.version == active,
            routes: v.routes.clone(),
            env: v.env.clone(),
            limits: v.limits,
            precompiled: v.precompiled.clone(),
        }
    }
}

impl From<&FunctionRecord> for FunctionInfo {
    fn from(r: &FunctionRecord) -> FunctionInfo {
        let active = r.active();
        FunctionInfo {
            name: r.name.clone(),
            active_version: r.active_version,
            routes: active.routes.clone(),
            env: active.env.clone(),
            limits: active.limits,
            allow_outbound: active.allow_outbound.clone(),
            config_env: active.config_env,
            version_pinning: active.version_pinning,
            auth: active.auth,
            aliases: r
                .aliases
                .iter()
                .map(|(n, a)| crate::function::aliases::AliasInfo::new(n, a))
                .collect(),
            static_dir: active.static_dir.clone(),
            created_at: rfc3339(r.created_at_ms),
            updated_at: rfc3339(r.updated_at_ms),
            versions: r
                .versions
                .iter()
                .map(|v| VersionInfo::from_record(v, r.active_version))
                .collect(),
            handlers: Vec::new(),
            effective_concurrency: 0,
            kind: None,
            engine: None,
            reuse: active.reuse,
            cors: active.cors.clone(),
            hosts: active.hosts.clone(),
        }
    }
}

impl From<&FunctionRecord> for FunctionSummary {
    fn from(r: &FunctionRecord) -> FunctionSummary {
        FunctionSummary {
            name: r.name.clone(),
            active_version: r.active_version,
            routes: r.active().routes.clone(),
            versions: r.versions.len() as u64,
            hosts: r.active().hosts.clone(),
            updated_at: rfc3339(r.updated_at_ms),
            kind: None,
        }
    }
}

/// What a deploy sets besides the artifact. Unset fields are inherited from
/// the active version (or take the defaults for a new function).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct DeployOptions {
    /// Routes (`/x`, `/api/*`); empty inherits.
    #[serde(default, rename = "route")]
    pub routes: Vec<String>,
    /// `KEY=VALUE` pairs; empty inherits.
    #[serde(default, rename = "env")]
    pub env: Vec<String>,
    /// Timeout override, ms.
    pub timeout_ms: Option<u64>,
    /// Memory cap override, bytes.
    pub memory_bytes: Option<u64>,
    /// Body cap override, bytes.
    pub max_body_bytes: Option<u64>,
    /// Hosts the function may send HTTP requests to (`https://api.example.com`,
    /// `*.example.com`, `host:port`); empty inherits.
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    /// Whether the function's plain settings (`wisp config set`) are also
    /// environment variables of the guest; unset inherits (default false).
    #[serde(default)]
    pub config_env: Option<bool>,
    /// Whether a request may pin one of the function's serving versions
    /// with the `wisp-version` header; unset inherits (default false).
    #[serde(default)]
    pub version_pinning: Option<bool>,
    /// Who may invoke the function on the data plane: `public` or `key`
    /// (a request needs one of its invoke keys); unset inherits (default
    /// public).
    #[serde(default)]
    pub auth: Option<String>,
    /// Key-value key size override, bytes.
    #[serde(default)]
    pub kv_max_key_bytes: Option<u64>,
    /// Key-value value size override, bytes.
    #[serde(default)]
    pub kv_max_value_bytes: Option<u64>,
    /// Key-value total (keys + values) override, bytes.
    #[serde(default)]
    pub kv_max_total_bytes: Option<u64>,
    /// For a preview-1 module: a directory under `<data-dir>/static/`
    /// granted read-only at `/static` in the guest (default: none). In a
    /// query, `static_dir=DIR` sets it and `static_dir=` (empty) removes it.
    #[serde(default, deserialize_with = "set_or_clear")]
    pub static_dir: Setting<String>,
    /// Invocations running at once (1 to the host's max in-flight);
    /// unset inherits (a new function: the host's per-function share).
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Requests that may wait for a slot beyond `concurrency` (0: refused
    /// at once with 429); unset inherits (a new function: 0).
    #[serde(default)]
    pub queue: Option<u32>,
    /// How long one request may wait for a slot, ms (at least 1); unset
    /// inherits (a new function: 10 s).
    #[serde(default)]
    pub queue_timeout_ms: Option<u64>,
    /// For a WASI 0.3 component: requests one instance serves before it is
    /// retired, `N` or a range `A..B` (a count picked at random per
    /// instance); `1` turns reuse off (a fresh instance per request, the
    /// default). Unset inherits.
    #[serde(default)]
    pub reuse: Option<String>,
    /// With reuse: requests one instance serves at once (default 1); unset
    /// inherits.
    #[serde(default)]
    pub reuse_concurrency: Option<u32>,
    /// With reuse: how long an idle instance is kept, ms (default 10 s);
    /// unset inherits.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Rate limit on the data plane: `N/s`, `N/m` or `N/h`, optionally
    /// `,burst=B`; `none` or `off` removes it. Unset inherits (a new
    /// function: none).
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// Origins whose browsers may call the function (`https://app.example.com`,
    /// `*`): the host answers their preflights and marks responses.
    /// `none` removes CORS; empty inherits (a new function: none).
    #[serde(default)]
    pub cors_origin: Vec<String>,
    /// With CORS origins: allow credentials (never with `*`); unset
    /// inherits (default false).
    #[serde(default)]
    pub cors_credentials: Option<bool>,
    /// Hosts (`api.example.com`, `*.example.com`) whose requests the
    /// routes serve; `none` removes them (any host); empty inherits (a new
    /// function: any host).
    #[serde(default, rename = "host")]
    pub hosts: Vec<String>,
}

/// A deploy's wish for one setting of the new version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Setting<T> {
    /// As the active version has it (a new function: the default).
    #[default]
    Inherit,
    /// This value.
    Set(T),
    /// None at all.
    Clear,
}

impl From<Option<String>> for Setting<String> {
    /// A string setting as a flag or a query gives it: absent inherits,
    /// empty clears.
    fn from(value: Option<String>) -> Self {
        match value {
            None => Setting::Inherit,
            Some(s) if s.is_empty() => Setting::Clear,
            Some(s) => Setting::Set(s),
        }
    }
}

/// A string setting as a query gives it: absent inherits, empty clears.
fn set_or_clear<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Setting<String>, D::Error> {
    String::deserialize(d).map(|s| {
        if s.is_empty() {
            Setting::Clear
        } else {
            Setting::Set(s)
        }
    })
}

impl DeployOptions {
    /// Adds a route.
    pub fn route(mut self, route: impl Into<String>) -> Self {
        self.routes.push(route.into());
        self
    }

    /// Allows outbound HTTP requests to a host (see the allow-list syntax
    /// in the README).
    pub fn allow_outbound(mut self, entry: impl Into<String>) -> Self {
        self.allow_outbound.push(entry.into());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push(format!("{key}={value}"));
        self
    }
}
