//! A private function's invoke keys (create, list, revoke). Writes need
//! `deploy:NAME`, the list `read:*` or `deploy:NAME`.

use reqwest::Method;
use wisp_host::{CreatedKey, KeyInfo, NewKey};

use crate::{Client, Error};

impl Client {
    /// `POST /v1/functions/{name}/keys`: creates an invoke key. The answer
    /// holds the key, which the host does not keep: this is the only time
    /// it is seen.
    pub async fn key_create(&self, function: &str, new: &NewKey) -> Result<CreatedKey, Error> {
        self.call(
            self.request(Method::POST, &["v1", "functions", function, "keys"])
                .json(new),
        )
        .await
    }

    /// `GET /v1/functions/{name}/keys`: the function's keys, by name (never
    /// a key, nor its hash).
    pub async fn key_list(&self, function: &str) -> Result<Vec<KeyInfo>, Error> {
        self.call(self.request(Method::GET, &["v1", "functions", function, "keys"]))
            .await
    }

    /// `DELETE /v1/functions/{name}/keys/{name_or_id}`: revokes a key;
    /// answers what it was.
    pub async fn key_revoke(&self, function: &str, name_or_id: &str) -> Result<KeyInfo, Error> {
        self.call(self.request(
            Method::DELETE,
            &["v1", "functions", function, "keys", name_or_id],
        ))
        .await
    }
}
