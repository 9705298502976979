//! Admin tokens (create, list, revoke) and the audit log. Each call needs
//! a token with the `admin` scope, but [`Client::whoami`].

use reqwest::Method;
use wisp_host::{AuditPage, AuditQuery, CreatedToken, NewToken, TokenInfo, WhoAmI};

use crate::{Client, Error};

impl Client {
    /// `GET /v1/whoami`: the name and scopes of this client's token (any
    /// valid token may ask).
    pub async fn whoami(&self) -> Result<WhoAmI, Error> {
        self.call(self.request(Method::GET, &["v1", "whoami"]))
            .await
    }

    /// `POST /v1/tokens`: creates a token. The answer holds the token,
    /// which the host does not keep: this is the only time it is seen.
    pub async fn token_create(&self, new: &NewToken) -> Result<CreatedToken, Error> {
        self.call(self.request(Method::POST, &["v1", "tokens"]).json(new))
            .await
    }

    /// `GET /v1/tokens`: every token of the host, by name (never a token,
    /// nor its hash).
    pub async fn token_list(&self) -> Result<Vec<TokenInfo>, Error> {
        self.call(self.request(Method::GET, &["v1", "tokens"]))
            .await
    }

    /// `DELETE /v1/tokens/{name_or_id}`: revokes a token; answers what it
    /// was.
    pub async fn token_revoke(&self, name_or_id: &str) -> Result<TokenInfo, Error> {
        self.call(self.request(Method::DELETE, &["v1", "tokens", name_or_id]))
            .await
    }

    /// `GET /v1/audit`: the latest admin writes, oldest first.
    pub async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, Error> {
        self.call(self.request(Method::GET, &["v1", "audit"]).query(query))
            .await
    }
}
