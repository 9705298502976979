//! Cluster mode: several hosts that share their functions through NATS
//! JetStream. Single-node Wisp does not use this module.
//!
//! What is in JetStream, and why there:
//! - the bucket `wisp-functions`: a function's record (every version, the
//!   active one, routes and limits), one key per function. It is the
//!   authority: an admin write on any host is a revision-checked update of
//!   the key, acknowledged once JetStream has stored it; every host watches
//!   the bucket and copies each change into its own store (`function/
//!   replica.rs`), where it serves from as a single node does. So the
//!   request path never touches NATS, and a host keeps serving what it has
//!   while NATS is away.
//! - the object store `wisp-artifacts`: the uploaded wasm, named by its
//!   sha256, so content-addressed and stored once. Each host compiles it
//!   itself and keeps the compiled code on its own disk.
//! - the bucket `wisp-config`: a function's settings and secrets, one key
//!   per function, written and copied in like its record. Secrets are
//!   sealed with the cluster key ([`key`]) before they leave the host; a
//!   host without the key serves everything else and refuses to set or read
//!   secrets.
//! - the bucket `wisp-hosts`: a heartbeat per host (its node name, version
//!   and addresses), expiring after [`HOST_EXPIRY`]: the members.
//!
//! - the bucket `wisp-kv`: functions' key-value data ([`data`]), read and
//!   written there by every host.
//!
//! - the stream `WISP_LOGS`: functions' log lines from every host
//!   ([`logs`]), which `wisp logs` on any host reads.
//!
//! - the streams `WISP_EVENTS` and `WISP_DEAD` and the bucket
//!   `wisp-events`: events, dead letters, subscriptions and schedules
//!   (`events/cluster.rs`).

mod key;
pub use key::ClusterKey;

#[cfg(feature = "cluster")]
mod data;
#[cfg(feature = "cluster")]
mod jetstream;
#[cfg(feature = "cluster")]
mod logs;
#[cfg(feature = "cluster")]
pub(crate) use data::SharedKv;
#[cfg(feature = "cluster")]
pub use jetstream::Cluster;
#[cfg(feature = "cluster")]
pub(crate) use jetstream::{Change, change, open_bucket};
#[cfg(feature = "cluster")]
pub(crate) use logs::SharedLogs;

// A build without cluster mode (the `cluster` feature off: the runtime-only
// edge build): the same names, none of which can be made.
#[cfg(not(feature = "cluster"))]
pub(crate) mod off;
#[cfg(not(feature = "cluster"))]
pub use off::Cluster;
#[cfg(not(feature = "cluster"))]
pub(crate) use off::{SharedKv, SharedLogs};

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::capabilities::settings::ConfigItem;
use serde::{Deserialize, Serialize};

/// How long a heartbeat counts: a host silent for longer is gone.
pub const HOST_EXPIRY: Duration = Duration::from_secs(10);

/// A function's settings and secrets as the cluster has them.
#[derive(Debug, Default)]
pub(crate) struct SharedConfig {
    /// Settings, and secrets opened with the cluster key.
    pub items: Vec<ConfigItem>,
    /// The entry's revision; `None` if it was never written.
    pub revision: Option<u64>,
    /// There are secrets this host cannot open (it has no cluster key).
    pub withheld: bool,
}

/// How a host joins a cluster (`wisp serve --cluster`).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:port`); any one reachable will do.
    pub urls: Vec<String>,
    /// A token the NATS server requires, if any.
    pub token: Option<SecretString>,
    /// A NATS credentials file (`.creds`), if the server requires one.
    pub creds_file: Option<PathBuf>,
    /// This host's name in the cluster: `[A-Za-z0-9_-]{1,64}`.
    pub node_name: String,
    /// How long start-up waits for a NATS server before giving up.
    pub connect_timeout: Duration,
    /// The cluster key file (`--cluster-key-file`): without it, secrets
    /// can be neither set nor read on this host.
    pub key_file: Option<PathBuf>,
}

/// Cluster failures.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS or JetStream cannot be reached (or did not answer in time):
    /// the write was not done.
    #[error(
        "the cluster is unavailable ({0}): nothing was changed; the host serves what it has and \
         retries the connection"
    )]
    Unavailable(String),
    /// The record changed on another host between this host's read and its
    /// write.
    #[error("{0}")]
    Conflict(String),
    /// What JetStream holds cannot be used (logged).
    #[error("cluster: {0}")]
    Invalid(String),
    /// This host was started without the cluster key, and the change needs
    /// it.
    #[error(
        "this host has no cluster key (wisp serve --cluster-key-file), so it can neither set \
         nor read secrets, nor change the settings of a function that has secrets: use a host \
         that has the key"
    )]
    NoKey,
}

/// A host's heartbeat: who it is and where it serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Member {
    /// Its node name (`--node-name`).
    pub node: String,
    /// The Wisp version it runs.
    pub version: String,
    /// Its data plane, as it listens (`http://addr`).
    pub data_url: String,
    /// Its admin API, as it listens.
    pub admin_url: String,
    /// When it started, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// Its latest heartbeat, ms since the Unix epoch.
    pub seen_at_ms: u64,
}

/// Whether `name` is a valid node name.
pub fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        assert!(valid_node_name("h1"));
        assert!(valid_node_name("edge_box-7"));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name("a.b"));
        assert!(!valid_node_name("a b"));
        assert!(!valid_node_name(&"x".repeat(65)));
    }
}
