//! A function's data: key-value entries, settings and secrets.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use wisp_host::{ConfigList, KeyList, SetConfig};

use crate::{Client, Error};

/// Answer to a key-value write.
#[derive(Deserialize)]
struct Stored {
    bytes: u64,
}

impl Client {
    /// `GET /v1/functions/{name}/kv/{key}`: the value, byte for byte (a
    /// missing key is an [`Error::Api`] with the code `key_not_found`).
    pub async fn kv_get(&self, name: &str, key: &str) -> Result<Bytes, Error> {
        let response = self
            .checked(self.request(Method::GET, &["v1", "functions", name, "kv", key]))
            .await?;
        response.bytes().await.map_err(|e| self.transport_error(e))
    }

    /// `PUT /v1/functions/{name}/kv/{key}`: sets a key, under the function's
    /// limits, expiring after `ttl` if given (at least 1 ms). Returns the
    /// value's size in bytes.
    pub async fn kv_set(
        &self,
        name: &str,
        key: &str,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<u64, Error> {
        let mut request = self
            .request(Method::PUT, &["v1", "functions", name, "kv", key])
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(value.into());
        if let Some(ttl) = ttl {
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            request = request.query(&[("ttl_ms", ms)]);
        }
        let stored: Stored = self.call(request).await?;
        Ok(stored.bytes)
    }

    /// `DELETE /v1/functions/{name}/kv/{key}`.
    pub async fn kv_delete(&self, name: &str, key: &str) -> Result<(), Error> {
        self.call_empty(self.request(Method::DELETE, &["v1", "functions", name, "kv", key]))
            .await
    }

    /// `GET /v1/functions/{name}/kv`: a page of at most `limit` keys (up to
    /// 1000) starting with `prefix`, after `cursor` (the previous page's).
    pub async fn kv_list(
        &self,
        name: &str,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyList, Error> {
        let mut query = vec![("prefix", prefix.to_string()), ("limit", limit.to_string())];
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_string()));
        }
        let request = self
            .request(Method::GET, &["v1", "functions", name, "kv"])
            .query(&query);
        self.call(request).await
    }

    /// `GET /v1/functions/{name}/config`: settings and secrets, secret
    /// values masked.
    pub async fn config_list(&self, name: &str) -> Result<ConfigList, Error> {
        self.call(self.request(Method::GET, &["v1", "functions", name, "config"]))
            .await
    }

    /// `PUT /v1/functions/{name}/config`: sets settings (or secrets), all
    /// or none.
    pub async fn config_set(&self, name: &str, set: &SetConfig) -> Result<ConfigList, Error> {
        let request = self
            .request(Method::PUT, &["v1", "functions", name, "config"])
            .json(set);
        self.call(request).await
    }

    /// `DELETE /v1/functions/{name}/config/{key}`.
    pub async fn config_unset(&self, name: &str, key: &str) -> Result<ConfigList, Error> {
        self.call(self.request(Method::DELETE, &["v1", "functions", name, "config", key]))
            .await
    }
}
