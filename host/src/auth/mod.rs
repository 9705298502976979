//! Who may do what on the admin API: scoped, revocable tokens, and the
//! audit log of admin writes. Both live in this host's store (in a
//! cluster, each host has its own).
//!
//! - `scope`: the scopes and what each allows (pure);
//! - `tokens`: the tokens' tree and the table of them in memory that every
//!   request is checked against;
//! - `audit`: the audit log's tree, bounded;
//! - `keys`: the invoke keys of private functions (the data plane's
//!   check, not the admin API's);
//! - `secret`: what tokens and keys share (secrets kept as hashes, the
//!   constant-time check, names and expiries).
//!
//! The bootstrap token (the data directory's `admin-token`, or
//! `WISP_ADMIN_TOKEN`) is not stored here: it has every right, and creates
//! the others.

use serde::{Deserialize, Serialize};

use crate::store::StoreError;

pub(crate) mod audit;
pub(crate) mod keys;
pub(crate) mod scope;
mod secret;
pub(crate) mod tokens;

pub(crate) use self::audit::Audit;
pub(crate) use self::keys::InvokeKeys;
pub use self::keys::{CreatedKey, FunctionAuth, KeyError, KeyInfo, NewKey};
pub(crate) use self::tokens::{Caller, Refused, Tokens};

/// A token to create (`POST /v1/tokens`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Its name: 1 to 64 letters, digits, `.`, `_` or `-`; unique on this
    /// host. The audit log names the token by it. Without it, `token-` and
    /// the token's id.
    #[serde(default)]
    #[schema(example = "ci-deploy")]
    pub name: Option<String>,
    /// What it may do: `admin`, `read:*`, `deploy:*`, `deploy:NAME`,
    /// `invoke:NAME`.
    #[schema(example = json!(["deploy:hello", "read:*"]))]
    pub scopes: Vec<String>,
    /// When it expires: a duration from now (`30d`, `12h`, `90s`) or an
    /// RFC 3339 time. Never, without it.
    #[serde(default)]
    #[schema(example = "30d")]
    pub expires: Option<String>,
}

/// A token as listed: never the token, nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// Its id (random, not derived from the token).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its scopes, normalised (sorted, without repeats).
    pub scopes: Vec<String>,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it expires (ms since the Unix epoch); never, if absent.
    #[serde(default)]
    pub expires_ms: Option<u64>,
}

/// A token just created: the only time the token itself is shown.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The bearer token. Only its hash is kept: it cannot be shown again.
    pub token: String,
    /// What was created.
    pub info: TokenInfo,
}

/// Who a token is (`GET /v1/whoami`): what a client shows and what it
/// offers (a dashboard hides what the token may not do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The token's name; `bootstrap` for the bootstrap token.
    #[schema(example = "ci-deploy")]
    pub name: String,
    /// Its scopes (`admin`, `read:*`, `deploy:*`, `deploy:NAME`,
    /// `invoke:NAME`); the bootstrap token's are `["admin"]`.
    #[schema(example = json!(["deploy:hello", "read:*"]))]
    pub scopes: Vec<String>,
}

/// An admin write, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// When it was answered (ms since the Unix epoch).
    pub at_ms: u64,
    /// The token's name (`bootstrap` for the bootstrap token).
    pub who: String,
    /// The HTTP method.
    pub method: String,
    /// The path, without its query.
    pub path: String,
    /// The status answered (403 for a token that lacked the scope).
    pub status: u16,
}

/// What to read from the audit log (`GET /v1/audit`).
#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries since then: an RFC 3339 time or a duration ago (`1h`).
    pub since: Option<String>,
    /// At most this many, the latest (default 1000, at most 10000).
    pub limit: Option<usize>,
}

/// Entries of the audit log, oldest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntry>,
}

/// Why a token could not be created, revoked or the audit log read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The name is malformed or reserved.
    #[error("{0}")]
    InvalidName(String),
    /// A scope is unknown or malformed, or there are none.
    #[error("{0}")]
    InvalidScope(String),
    /// The expiry does not parse, is zero or has passed.
    #[error("{0}")]
    InvalidExpiry(String),
    /// A query parameter is out of range or malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A token of that name exists.
    #[error("a token named {0:?} exists: revoke it first, or choose another name")]
    NameTaken(String),
    /// The host keeps no more tokens.
    #[error(
        "this host has {} tokens, the most it keeps: revoke some first",
        tokens::MAX_TOKENS
    )]
    TooMany,
    /// No token of that name or id.
    #[error("no token named (or with the id) {0:?}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) use crate::capabilities::logs::now_ms;

/// Without the secret: a `{:?}` in a log line must not leak it.
impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &"***")
            .field("info", &self.info)
            .finish()
    }
}
