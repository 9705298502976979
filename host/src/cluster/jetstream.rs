//! The cluster's connection to NATS JetStream: the buckets, the object
//! store and the heartbeats (see the module above for what is kept where).
//! Compiled with the `cluster` feature.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};
use bytes::Bytes;
use futures::StreamExt as _;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;

use super::{
    ClusterConfig, ClusterError, ClusterKey, HOST_EXPIRY, Member, SharedConfig, SharedKv,
    SharedLogs, valid_node_name,
};
use crate::capabilities::settings::ConfigItem;
use crate::function::records::FunctionRecord;

/// The bucket of function records.
const FUNCTIONS: &str = "wisp-functions";
/// The object store of artifacts.
const ARTIFACTS: &str = "wisp-artifacts";
/// The bucket of heartbeats.
const HOSTS: &str = "wisp-hosts";
/// The bucket of functions' settings and (sealed) secrets.
const CONFIG: &str = "wisp-config";
/// The key, in [`CONFIG`], of a value sealed with the cluster key: a host
/// given another key finds out at start (function names cannot start with
/// `_`).
const KEY_CHECK: &str = "_key-check";
/// How often a host says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long one request to JetStream may take before the write is
/// answered `cluster_unavailable`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A host's connection to the cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    node: String,
    functions: kv::Store,
    hosts: kv::Store,
    config: kv::Store,
    kv: SharedKv,
    artifacts: object_store::ObjectStore,
    key: Option<ClusterKey>,
    /// Functions' logs; opened when the host joins (with its retention).
    logs: std::sync::OnceLock<SharedLogs>,
    /// Members seen at the latest heartbeat (for `/v1/health`, which must
    /// answer without asking NATS).
    members: AtomicUsize,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to NATS and opens (creating them on first use) the buckets
    /// and the object store. Fails, with a message naming the URLs, if no
    /// server answers within the connect timeout: a host that cannot reach
    /// its cluster at start has nothing to serve from.
    pub async fn connect(config: &ClusterConfig) -> anyhow::Result<Cluster> {
        if !valid_node_name(&config.node_name) {
            anyhow::bail!(
                "invalid --node-name {:?}: 1 to 64 letters, digits, '-' or '_'",
                config.node_name
            );
        }
        if config.urls.is_empty() {
            anyhow::bail!("--cluster needs at least one nats:// URL");
        }
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("wisp {}", config.node_name))
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(REQUEST_TIMEOUT))
            // Reconnect for as long as the host runs.
            .max_reconnects(None);
        if let Some(token) = &config.token {
            options = options.token(token.expose_secret().to_string());
        }
        if let Some(path) = &config.creds_file {
            options = options.credentials_file(path).await.map_err(|e| {
                anyhow::anyhow!("reading the NATS credentials file {}: {e}", path.display())
            })?;
        }
        let urls = config.urls.join(", ");
        let client = tokio::time::timeout(config.connect_timeout, options.connect(&config.urls))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot reach the cluster at {urls}: no answer within {:?} (is nats-server \
                     running with JetStream, -js?)",
                    config.connect_timeout
                )
            })?
            .map_err(|e| anyhow::anyhow!("cannot reach the cluster at {urls}: {e}"))?;
        let js = jetstream::new(client.clone());
        let opened = async {
            let functions =
                open_bucket(&js, FUNCTIONS, "Wisp: function records", Duration::ZERO).await?;
            let hosts = open_bucket(&js, HOSTS, "Wisp: hosts' heartbeats", HOST_EXPIRY).await?;
            let shared_config = open_bucket(
                &js,
                CONFIG,
                "Wisp: settings and sealed secrets",
                Duration::ZERO,
            )
            .await?;
            let shared_kv = open_bucket(
                &js,
                super::data::BUCKET,
                "Wisp: functions' key-value data",
                Duration::ZERO,
            )
            .await?;
            let artifacts = match js.get_object_store(ARTIFACTS).await {
                Ok(store) => store,
                Err(_) => js
                    .create_object_store(object_store::Config {
                        bucket: ARTIFACTS.into(),
                        description: Some("Wisp: uploaded wasm, by sha256".into()),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("opening the object store {ARTIFACTS}: {e}"))?,
            };
            anyhow::Ok((functions, hosts, shared_config, shared_kv, artifacts))
        };
        let key = match &config.key_file {
            Some(path) => Some(ClusterKey::from_file(path)?),
            None => None,
        };
        let (functions, hosts, shared_config, shared_kv, artifacts) =
            tokio::time::timeout(config.connect_timeout.max(REQUEST_TIMEOUT), opened)
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "cannot reach the cluster at {urls}: JetStream did not answer (is \
                         nats-server running with JetStream, -js?)"
                    )
                })?
                .map_err(|e| anyhow::anyhow!("cannot reach the cluster at {urls}: {e:#}"))?;
        let cluster = Cluster {
            inner: Arc::new(Inner {
                client: client.clone(),
                node: config.node_name.clone(),
                functions,
                hosts,
                config: shared_config,
                kv: SharedKv {
                    store: shared_kv,
                    client: client.clone(),
                },
                artifacts,
                key,
                logs: std::sync::OnceLock::new(),
                members: AtomicUsize::new(0),
            }),
        };
        cluster.check_name_is_free().await?;
        cluster.check_key().await?;
        Ok(cluster)
    }

    /// Refuses a node name another live host has. A heartbeat under this
    /// name may also be this host's own from before a restart (it lasts
    /// [`HOST_EXPIRY`] after a `kill -9`): that one does not beat again.
    async fn check_name_is_free(&self) -> anyhow::Result<()> {
        let node = &self.inner.node;
        let seen = |hosts: Vec<Member>| hosts.into_iter().find(|m| m.node == *node);
        let Some(first) = seen(self.hosts().await?) else {
            return Ok(());
        };
        tokio::time::sleep(HEARTBEAT * 2).await;
        match seen(self.hosts().await?) {
            Some(other) if other.seen_at_ms != first.seen_at_ms => anyhow::bail!(
                "node name {node:?} is taken by a live host (data plane {}): give this host \
                 another --node-name",
                other.data_url
            ),
            _ => Ok(()),
        }
    }

    /// Refuses a cluster key other than the one the cluster's secrets are
    /// sealed with; the first host with a key records it (sealed).
    async fn check_key(&self) -> anyhow::Result<()> {
        let Some(key) = &self.inner.key else {
            tracing::warn!(
                "no --cluster-key-file: secrets can be neither set nor read on this host"
            );
            return Ok(());
        };
        let sealed = match self.inner.config.get(KEY_CHECK).await {
            Ok(Some(v)) => v,
            Ok(None) => {
                let sealed = key.seal(KEY_CHECK, KEY_CHECK);
                match self.inner.config.create(KEY_CHECK, sealed.into()).await {
                    Ok(_) => return Ok(()),
                    // Another host was first: check against its key.
                    Err(_) => self
                        .inner
                        .config
                        .get(KEY_CHECK)
                        .await
                        .map_err(|e| anyhow::anyhow!("reading the cluster's key check: {e}"))?
                        .unwrap_or_default(),
                }
            }
            Err(e) => anyhow::bail!("reading the cluster's key check: {e}"),
        };
        match key.open(KEY_CHECK, &String::from_utf8_lossy(&sealed)) {
            Some(_) => Ok(()),
            None => anyhow::bail!(
                "the cluster key (--cluster-key-file) is not the one this cluster's secrets are \
                 sealed with: give every host the same key file"
            ),
        }
    }

    /// Removes this host's heartbeat (it is stopping): the others stop
    /// listing it at once rather than after [`HOST_EXPIRY`].
    pub async fn leave(&self) {
        if let Err(e) = self.inner.hosts.delete(&self.inner.node).await {
            tracing::debug!(error = %e, "heartbeat not removed (it expires)");
        }
    }

    /// Opens the shared log (creating its stream with these bounds on
    /// first use).
    pub(crate) async fn open_logs(
        &self,
        max_lines: u64,
        max_age: Duration,
    ) -> anyhow::Result<SharedLogs> {
        let js = jetstream::new(self.inner.client.clone());
        let logs = SharedLogs::open(
            &js,
            &self.inner.client,
            &self.inner.node,
            max_lines,
            max_age,
        )
        .await?;
        Ok(self.inner.logs.get_or_init(|| logs).clone())
    }

    /// The shared log, once the host has joined.
    pub(crate) fn logs(&self) -> Option<&SharedLogs> {
        self.inner.logs.get()
    }

    /// A JetStream context on this host's connection.
    pub(crate) fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.inner.client.clone())
    }

    /// This host's connection to NATS.
    pub(crate) fn client(&self) -> async_nats::Client {
        self.inner.client.clone()
    }

    /// Functions' key-value data.
    pub(crate) fn kv(&self) -> SharedKv {
        self.inner.kv.clone()
    }

    /// This host's node name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Whether the connection to NATS is up now.
    pub fn connected(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Members seen at the latest heartbeat (this host included).
    pub fn members_seen(&self) -> usize {
        self.inner.members.load(Ordering::Relaxed)
    }

    /// Fails fast, without a request, while NATS is away.
    fn check_connected(&self) -> Result<(), ClusterError> {
        if self.connected() {
            Ok(())
        } else {
            Err(ClusterError::Unavailable("not connected to NATS".into()))
        }
    }

    /// The live hosts, by node name.
    pub async fn hosts(&self) -> Result<Vec<Member>, ClusterError> {
        self.check_connected()?;
        let mut members = Vec::new();
        for key in keys_of(&self.inner.hosts).await? {
            if let Some(value) = self.inner.hosts.get(&key).await.map_err(unavailable)? {
                match serde_json::from_slice::<Member>(&value) {
                    Ok(m) => members.push(m),
                    Err(e) => tracing::warn!(key, error = %e, "ignoring an unreadable heartbeat"),
                }
            }
        }
        members.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(members)
    }

    /// Starts this host's heartbeat (every [`HEARTBEAT`], until the
    /// process ends); the first is written before this returns.
    pub(crate) async fn start_heartbeat(&self, data_url: String, admin_url: String) {
        let mut me = Member {
            node: self.inner.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            data_url,
            admin_url,
            started_at_ms: now_ms(),
            seen_at_ms: now_ms(),
        };
        self.beat(&mut me).await;
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(HEARTBEAT);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                this.beat(&mut me).await;
            }
        });
    }

    async fn beat(&self, me: &mut Member) {
        me.seen_at_ms = now_ms();
        let value = Bytes::from(serde_json::to_vec(me).expect("a member serialises"));
        if let Err(e) = self.inner.hosts.put(&me.node, value).await {
            tracing::debug!(error = %e, "heartbeat not written");
            return;
        }
        if let Ok(members) = self.hosts().await {
            self.inner.members.store(members.len(), Ordering::Relaxed);
        }
    }

    /// A function's record and its revision, if the cluster has one.
    pub(crate) async fn function(
        &self,
        name: &str,
    ) -> Result<Option<(FunctionRecord, u64)>, ClusterError> {
        self.check_connected()?;
        let entry = self
            .inner
            .functions
            .entry(name)
            .await
            .map_err(unavailable)?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => Ok(Some((decode(&e)?, e.revision))),
            _ => Ok(None),
        }
    }

    /// The names of every function in the cluster.
    pub(crate) async fn function_names(&self) -> Result<Vec<String>, ClusterError> {
        self.check_connected()?;
        Ok(keys_of(&self.inner.functions).await?.into_iter().collect())
    }

    /// Writes a function's record: created if `revision` is `None`, else
    /// updated only if it is still at `revision`.
    pub(crate) async fn put_function(
        &self,
        record: &FunctionRecord,
        revision: Option<u64>,
    ) -> Result<u64, ClusterError> {
        self.check_connected()?;
        let value = Bytes::from(serde_json::to_vec(record).expect("a record serialises"));
        let written = match revision {
            Some(rev) => self.inner.functions.update(&record.name, value, rev).await,
            None => self
                .inner
                .functions
                .create(&record.name, value)
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => {
                        kv::UpdateError::new(kv::UpdateErrorKind::WrongLastRevision)
                    }
                    _ => kv::UpdateError::new(kv::UpdateErrorKind::Other),
                }),
        };
        written.map_err(|e| match e.kind() {
            kv::UpdateErrorKind::WrongLastRevision => conflict(&record.name),
            _ => unavailable(e),
        })
    }

    /// Deletes a function's record if it is still at `revision`.
    pub(crate) async fn delete_function(
        &self,
        name: &str,
        revision: u64,
    ) -> Result<(), ClusterError> {
        self.check_connected()?;
        self.inner
            .functions
            .delete_expect_revision(name, Some(revision))
            .await
            .map_err(|e| {
                // A wrong revision comes back as JetStream's error 10071.
                if e.to_string().contains("wrong last sequence") {
                    conflict(name)
                } else {
                    unavailable(e)
                }
            })
    }

    /// A function's settings and secrets in the cluster, with the entry's
    /// revision (`None`: never set). Secrets are opened with the cluster
    /// key; without it they are left out, and `withheld` says there were
    /// some.
    pub(crate) async fn config(&self, function: &str) -> Result<SharedConfig, ClusterError> {
        self.check_connected()?;
        let entry = self
            .inner
            .config
            .entry(function)
            .await
            .map_err(unavailable)?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(SharedConfig::default());
        };
        let mut shared = self.open_config(function, &entry.value)?;
        shared.revision = Some(entry.revision);
        Ok(shared)
    }

    /// Reads a config entry's value.
    pub(crate) fn open_config(
        &self,
        function: &str,
        value: &[u8],
    ) -> Result<SharedConfig, ClusterError> {
        let wire: WireConfig = serde_json::from_slice(value).map_err(|e| {
            ClusterError::Invalid(format!("the config of {function:?} cannot be read: {e}"))
        })?;
        let mut shared = SharedConfig::default();
        for item in wire.items {
            match (item.value, item.sealed) {
                (Some(value), None) => shared.items.push(ConfigItem {
                    key: item.key,
                    value,
                    secret: false,
                }),
                (None, Some(sealed)) => {
                    let Some(key) = &self.inner.key else {
                        shared.withheld = true;
                        continue;
                    };
                    let value = key
                        .open(&format!("{function}/{}", item.key), &sealed)
                        .ok_or_else(|| {
                            ClusterError::Invalid(format!(
                                "secret {} of {function:?} does not open with this host's \
                                 cluster key",
                                item.key
                            ))
                        })?;
                    shared.items.push(ConfigItem {
                        key: item.key,
                        value,
                        secret: true,
                    });
                }
                _ => {
                    return Err(ClusterError::Invalid(format!(
                        "config item {} of {function:?} is malformed",
                        item.key
                    )));
                }
            }
        }
        Ok(shared)
    }

    /// Writes a function's settings and secrets (secrets sealed): created
    /// if `revision` is `None`, else only if still at `revision`.
    pub(crate) async fn put_config(
        &self,
        function: &str,
        items: &[ConfigItem],
        revision: Option<u64>,
    ) -> Result<(), ClusterError> {
        self.check_connected()?;
        let mut wire = WireConfig::default();
        for item in items {
            let (value, sealed) = if item.secret {
                let key = self.inner.key.as_ref().ok_or(ClusterError::NoKey)?;
                let place = format!("{function}/{}", item.key);
                (None, Some(key.seal(&place, &item.value)))
            } else {
                (Some(item.value.clone()), None)
            };
            wire.items.push(WireItem {
                key: item.key.clone(),
                value,
                sealed,
            });
        }
        let value = Bytes::from(serde_json::to_vec(&wire).expect("config serialises"));
        let written = match revision {
            Some(rev) => self.inner.config.update(function, value, rev).await,
            None => self
                .inner
                .config
                .create(function, value)
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => {
                        kv::UpdateError::new(kv::UpdateErrorKind::WrongLastRevision)
                    }
                    _ => kv::UpdateError::new(kv::UpdateErrorKind::Other),
                }),
        };
        written.map(|_| ()).map_err(|e| match e.kind() {
            kv::UpdateErrorKind::WrongLastRevision => conflict(function),
            _ => unavailable(e),
        })
    }

    /// Removes a function's settings and secrets (it was deleted).
    pub(crate) async fn delete_config(&self, function: &str) -> Result<(), ClusterError> {
        self.check_connected()?;
        self.inner
            .config
            .delete(function)
            .await
            .map_err(unavailable)
    }

    /// The changes to functions' settings and secrets (see
    /// [`Cluster::watch_functions`]).
    pub(crate) async fn watch_config(&self) -> Result<kv::Watch, ClusterError> {
        self.check_connected()?;
        self.inner
            .config
            .watch_with_history(">")
            .await
            .map_err(unavailable)
    }

    /// Stores an artifact under its sha256 unless it is there already.
    pub(crate) async fn put_artifact(
        &self,
        sha256: &str,
        wasm: &Bytes,
    ) -> Result<(), ClusterError> {
        self.check_connected()?;
        if self.inner.artifacts.info(sha256).await.is_ok() {
            return Ok(());
        }
        let mut reader: &[u8] = wasm;
        self.inner
            .artifacts
            .put(sha256, &mut reader)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// An artifact's bytes, checked against its name; at most `max` bytes.
    pub(crate) async fn artifact(&self, sha256: &str, max: u64) -> Result<Bytes, ClusterError> {
        self.check_connected()?;
        let object = self.inner.artifacts.get(sha256).await.map_err(|e| {
            if e.kind() == object_store::GetErrorKind::NotFound {
                ClusterError::Invalid(format!("artifact {sha256} is missing from {ARTIFACTS}"))
            } else {
                unavailable(e)
            }
        })?;
        let mut bytes = Vec::new();
        object
            .take(max + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(unavailable)?;
        if bytes.len() as u64 > max {
            return Err(ClusterError::Invalid(format!(
                "artifact {sha256} is over the upload limit of {max} bytes"
            )));
        }
        let sum = crate::function::load::sha256_hex(&bytes);
        if sum != sha256 {
            return Err(ClusterError::Invalid(format!(
                "artifact {sha256} does not match its hash (got {sum})"
            )));
        }
        Ok(Bytes::from(bytes))
    }

    /// The changes to function records, from the latest value of each
    /// (deleted ones included) on: the watcher's stream.
    pub(crate) async fn watch_functions(&self) -> Result<kv::Watch, ClusterError> {
        self.check_connected()?;
        self.inner
            .functions
            .watch_with_history(">")
            .await
            .map_err(unavailable)
    }
}

/// A config entry's value in the bucket.
#[derive(Default, Serialize, Deserialize)]
struct WireConfig {
    items: Vec<WireItem>,
}

/// A setting (`value`) or a secret (`sealed`).
#[derive(Serialize, Deserialize)]
struct WireItem {
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
}

/// A change to a function record, as the watcher gets it.
pub(crate) enum Change {
    /// The record is now this.
    Put(Box<FunctionRecord>),
    /// The function was deleted.
    Delete(String),
}

/// Reads a watched entry.
pub(crate) fn change(entry: &kv::Entry) -> Result<Change, ClusterError> {
    match entry.operation {
        kv::Operation::Put => Ok(Change::Put(Box::new(decode(entry)?))),
        kv::Operation::Delete | kv::Operation::Purge => Ok(Change::Delete(entry.key.clone())),
    }
}

fn decode(entry: &kv::Entry) -> Result<FunctionRecord, ClusterError> {
    serde_json::from_slice(&entry.value).map_err(|e| {
        ClusterError::Invalid(format!("the record of {:?} cannot be read: {e}", entry.key))
    })
}

/// Opens a key-value bucket, creating its stream on first use. The stream
/// is made here, as a KV bucket's stream is (the client's own
/// `create_key_value` first reads account fields nats-server 2.9 does not
/// send). Another host may create it at the same moment: the same config
/// is accepted twice.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
    max_age: Duration,
) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    js.create_stream(jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        // History 1: the latest value of each key.
        max_messages_per_subject: 1,
        max_age,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the bucket {bucket}: {e}"))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| anyhow::anyhow!("opening the bucket {bucket}: {e}"))
}

/// The keys of a bucket, each once: the client's listing follows the
/// bucket while it reads, so a key written meanwhile (a heartbeat) can come
/// twice.
async fn keys_of(bucket: &kv::Store) -> Result<std::collections::BTreeSet<String>, ClusterError> {
    let mut keys = bucket.keys().await.map_err(unavailable)?;
    let mut out = std::collections::BTreeSet::new();
    while let Some(key) = keys.next().await {
        out.insert(key.map_err(unavailable)?);
    }
    Ok(out)
}

fn unavailable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

fn conflict(name: &str) -> ClusterError {
    ClusterError::Conflict(format!(
        "function {name:?} was changed on another host at the same time; nothing was changed \
         here: try again"
    ))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
