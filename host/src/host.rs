//! [`Host`]: the store, the engine and what is deployed, built once, and
//! the way into each concern: [`Host::functions`], [`Host::kv`],
//! [`Host::settings`], [`Host::logs`], [`Host::events`], [`Host::jobs`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{Request, Response};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, watch};

use crate::capabilities::kv::store::KvStore;
use crate::capabilities::logs::{LogSink, LogStore, Retention};
use crate::capabilities::settings::ConfigStore;
use crate::cluster::Cluster;
use crate::config::{HostConfig, Limits, StoreLocation};
use crate::engine::{AllocatorKind, WispEngine};
use crate::events::plane::{EventsCtx, EventsInner};
use crate::events::{Events, Jobs};
use crate::function::compiled::Compiled;
use crate::function::handles::{Kv, Logs, Settings};
use crate::function::records::Records;
use crate::function::registry::Registry;
use crate::function::{Functions, FunctionsCtx, FunctionsInner};
use crate::gateway::Gateway;
use crate::gateway::serve::{Listeners, ServeParts, Serving, ServingRuntimes};
use crate::invocation::Invoker;
use crate::invocation::admission::HostGate;
use crate::metrics::HostMetrics;
use crate::store::Store;

/// A Wisp host: cheap to clone, shared by the data plane, the admin plane
/// and any embedding code.
#[derive(Clone)]
pub struct Host {
    pub(crate) inner: Arc<HostInner>,
}

pub(crate) struct HostInner {
    pub config: HostConfig,
    /// The store: its group commit (`flush`) and writer; each domain's
    /// trees are in the fields below (and the event plane's in `events`).
    pub store: Store,
    /// Function records, versions and artifacts.
    pub records: Records,
    /// Functions' settings and secrets.
    pub settings: ConfigStore,
    /// Functions' logs.
    pub log_store: LogStore,
    pub engine: Arc<WispEngine>,
    /// What is deployed; swapped whole on every change (no lock on reads).
    pub registry: Arc<ArcSwap<Registry>>,
    /// Serialises changes (deploy, rollback, delete) so that route checks
    /// and version numbers see a consistent state. Never taken by requests.
    pub admin_lock: Arc<Mutex<()>>,
    pub invoker: Arc<Invoker>,
    pub admin_token: SecretString,
    /// The admin API's tokens (besides the bootstrap one) and audit log.
    pub tokens: crate::auth::Tokens,
    pub audit: crate::auth::Audit,
    /// Private functions' invoke keys (checked by the data plane).
    pub invoke_keys: crate::auth::InvokeKeys,
    pub prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub data_dir: Option<PathBuf>,
    /// Deploys, rollbacks, deletes and reads of functions, with the parts
    /// of the host they share.
    pub functions: FunctionsCtx,
    /// The event plane (topics, subscriptions, group commit, the
    /// dispatcher), with the parts of the host it shares.
    pub events: EventsCtx,
    /// The runtimes of the serving threads while [`Host::serve`] runs
    /// (event deliveries are spread over them); empty otherwise.
    pub serving: Arc<ServingRuntimes>,
    /// Keeps a temporary store alive for as long as the host.
    _temp: Option<tempfile::TempDir>,
}

/// Builds a [`Host`].
///
/// ```
/// # async fn demo() -> anyhow::Result<()> {
/// let host = wisp_host::Host::builder()
///     .temporary()
///     .max_in_flight(64)
///     .build()?;
/// assert!(host.functions().list()?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct HostBuilder {
    config: HostConfig,
    cluster: Option<Cluster>,
}

impl HostBuilder {
    /// Keeps the store in `dir` (created if missing).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.store = StoreLocation::Dir(dir.into());
        self
    }

    /// Uses a temporary store, deleted with the host.
    pub fn temporary(mut self) -> Self {
        self.config.store = StoreLocation::Temporary;
        self
    }

    /// Default limits for functions that do not set their own.
    pub fn default_limits(mut self, limits: Limits) -> Self {
        self.config.default_limits = limits;
        self
    }

    /// Bound on invocations running at once.
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.config.max_in_flight = n;
        self
    }

    /// Largest accepted upload in bytes.
    pub fn max_upload_bytes(mut self, n: u64) -> Self {
        self.config.max_upload_bytes = n;
        self
    }

    /// The admin token (otherwise read from, or generated into, the data
    /// directory; a temporary host generates one).
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.config.admin_token = Some(SecretString::from(token.into()));
        self
    }

    /// sled's page cache, in bytes.
    pub fn store_cache_bytes(mut self, n: u64) -> Self {
        self.config.store_cache_bytes = n;
        self
    }

    /// Use the pooling allocator (default) or not.
    pub fn pooling(mut self, on: bool) -> Self {
        self.config.pooling = on;
        self
    }

    /// Makes the host a member of a cluster (connected with
    /// [`Cluster::connect`]): function records are kept there first, and
    /// [`Host::join_cluster`] copies them in and keeps them in step.
    pub fn cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: HostConfig) -> Self {
        self.config = config;
        self
    }

    /// Opens the store, builds the engine and loads every deployed function
    /// (from their compiled code in the data directory: no recompilation).
    pub fn build(self) -> anyhow::Result<Host> {
        let config = self.config;
        let cluster = self.cluster;
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let (dir, temp) = match &config.store {
            StoreLocation::Dir(d) => (d.clone(), None),
            StoreLocation::Temporary => {
                let t = tempfile::tempdir().context("creating a temporary store")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        // Private to this user (0700), however it was made and whatever
        // the umask; the store makes what it writes inside private too.
        crate::datadir::create_private_dir(&dir)
            .with_context(|| format!("preparing the data directory {}", dir.display()))?;
        // Checked before the store opens: a refused token file stops the
        // host before it touches anything.
        let admin_token = match &config.admin_token {
            Some(t) => SecretString::from(t.expose_secret().trim()),
            None => SecretString::from(crate::datadir::load_or_create_token(&dir)?),
        };
        let store = Store::open(&dir, config.store_cache_bytes)
            .with_context(|| format!("opening the store in {}", dir.display()))?;
        let opening = || format!("opening the store in {}", dir.display());
        let records = Records::open(&store).with_context(opening)?;
        let compiled = Compiled::open(&store, &dir, &records).with_context(opening)?;
        let kv = KvStore::open(&store)
            .with_context(opening)?
            .shared_by(cluster.as_ref().map(Cluster::kv));
        let settings = ConfigStore::open(&store).with_context(opening)?;
        let log_store = LogStore::open(&store).with_context(opening)?;
        let event_store = crate::events::store::EventStore::open(&store).with_context(opening)?;
        let tokens = crate::auth::Tokens::open(&store).with_context(opening)?;
        let audit = crate::auth::Audit::open(&store).with_context(opening)?;
        let invoke_keys = crate::auth::InvokeKeys::open(&store).with_context(opening)?;
        let prometheus = crate::metrics::install(cluster.as_ref().map(Cluster::node));
        let engine = Arc::new(WispEngine::new(&config)?);
        crate::metrics::engine(config.code_engine.name());
        if let Err(e) = compiled.drop_other_engines(&[&engine.compat_key, &engine.services_key()]) {
            tracing::warn!(error = %e, "removing compiled code of other engine builds failed");
        }
        match engine.allocator {
            AllocatorKind::Pooling { pagemap_scan } => tracing::info!(
                pagemap_scan,
                max_in_flight = config.max_in_flight,
                "engine ready (pooling allocator)"
            ),
            AllocatorKind::OnDemand => tracing::info!("engine ready (on-demand allocator)"),
        }
        let logs = LogSink::start(
            log_store.clone(),
            Retention {
                max_entries: config.log_retention_entries,
                max_age: config.log_retention,
            },
        )?;
        let events = crate::events::plane::EventPlane::new(event_store);
        let metrics = HostMetrics::new();
        let invoker = Arc::new(Invoker {
            logs,
            log_limit: crate::capabilities::logs::LogLimits {
                bytes: config.log_bytes_per_invocation as usize,
                entries: config.log_entries_per_invocation as usize,
            },
            max_outbound: config.max_outbound_requests,
            cgi_max_output: config.cgi_max_output_bytes,
            engine: engine.engine.clone(),
            in_flight: Arc::new(HostGate::new(
                config.max_in_flight,
                config.host_queue,
                config.host_queue_timeout,
                metrics.overloaded.clone(),
            )),
            metrics,
            publisher: Arc::new(crate::events::EventPublisher::new(&events, &store, &config)),
        });
        let registry = Arc::new(ArcSwap::from_pointee(Registry::default()));
        let admin_lock = Arc::new(Mutex::new(()));
        let serving = Arc::new(ServingRuntimes::default());
        let events = EventsCtx {
            inner: Arc::new(EventsInner {
                config: config.clone(),
                store: store.clone(),
                records: records.clone(),
                registry: registry.clone(),
                invoker: invoker.clone(),
                admin_lock: admin_lock.clone(),
                serving: serving.clone(),
                events,
            }),
        };
        let functions = FunctionsCtx {
            inner: Arc::new(FunctionsInner {
                config: config.clone(),
                records: records.clone(),
                compiled,
                kv,
                settings: settings.clone(),
                log_store: log_store.clone(),
                engine: engine.clone(),
                registry: registry.clone(),
                admin_lock: admin_lock.clone(),
                invoker: invoker.clone(),
                data_dir: temp.is_none().then(|| dir.clone()),
                events: Arc::new(events.clone()),
                cluster: cluster.clone(),
                invoke_keys: invoke_keys.clone(),
                series: Default::default(),
            }),
        };
        let inner = Arc::new(HostInner {
            functions,
            invoker,
            store,
            records,
            settings,
            log_store,
            engine,
            registry,
            admin_lock,
            admin_token,
            tokens,
            audit,
            invoke_keys,
            prometheus,
            data_dir: temp.is_none().then(|| dir.clone()),
            events,
            serving,
            _temp: temp,
            config,
        });
        let host = Host { inner };
        host.inner.functions.load_all()?;
        // Loading may have compiled (a new engine version): free its scratch,
        // and what reading the store and the compiled code left behind.
        (host.inner.config.release_memory)();
        Ok(host)
    }
}

impl Host {
    /// Starts building a host.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// The cluster this host is a member of, if any.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.inner.functions.inner.cluster.as_ref()
    }

    /// Cluster mode: copies every function of the cluster into this host
    /// (fetching artifacts, compiling what this host has no code for) and
    /// drops those the cluster no longer has, then keeps them in step with
    /// the cluster and starts this host's heartbeat, which names the URLs
    /// it serves at. Call it once the host is built, before it serves. A
    /// host not in a cluster does nothing here.
    pub async fn join_cluster(&self, data_url: String, admin_url: String) -> anyhow::Result<()> {
        let Some(cluster) = self.cluster() else {
            return Ok(());
        };
        let logs = cluster
            .open_logs(
                self.inner.config.log_retention_entries,
                self.inner.config.log_retention,
            )
            .await?;
        self.inner
            .invoker
            .logs
            .publish_to(logs, tokio::runtime::Handle::current());
        let events = crate::events::SharedEvents::open(cluster, &self.inner.config)
            .await
            .context("opening the cluster's event plane")?;
        self.inner.events.use_cluster(events);
        self.inner.functions.join_cluster().await?;
        cluster.start_heartbeat(data_url, admin_url).await;
        Ok(())
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &SecretString {
        &self.inner.admin_token
    }

    /// The data directory, unless the store is temporary.
    pub fn data_dir(&self) -> Option<&Path> {
        self.inner.data_dir.as_deref()
    }

    /// The host configuration.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Which instance allocator the engine uses.
    pub fn allocator(&self) -> AllocatorKind {
        self.inner.engine.allocator
    }

    /// The functions: deploy, roll back, delete, read, invoke.
    pub fn functions(&self) -> Functions<'_> {
        Functions {
            host: &self.inner.functions,
        }
    }

    /// A function's key-value data (the function must be deployed).
    pub fn kv<'a>(&'a self, function: &'a str) -> Kv<'a> {
        Kv::new(&self.inner.registry, function)
    }

    /// A function's settings and secrets.
    pub fn settings<'a>(&'a self, function: &'a str) -> Settings<'a> {
        Settings {
            admin_lock: &self.inner.admin_lock,
            records: &self.inner.records,
            store: &self.inner.settings,
            registry: &self.inner.registry,
            function,
            cluster: self.cluster(),
        }
    }

    /// A function's log.
    pub fn logs<'a>(&'a self, function: &'a str) -> Logs<'a> {
        Logs {
            records: &self.inner.records,
            sink: &self.inner.invoker.logs,
            store: &self.inner.log_store,
            function,
            cluster: self.cluster(),
        }
    }

    /// The event plane: topics, subscriptions, asynchronous invocations,
    /// dead letters, schedules.
    pub fn events(&self) -> Events<'_> {
        Events {
            host: &self.inner.events,
        }
    }

    /// Batch jobs.
    pub fn jobs(&self) -> Jobs<'_> {
        Jobs {
            host: &self.inner.events,
        }
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets
    /// in-flight requests finish for up to `grace`, and flushes the store.
    ///
    /// Connections (both planes) and event deliveries run on
    /// [`HostConfig::serve_threads`](crate::HostConfig) threads of their
    /// own; the event dispatcher and the store's group commit on the
    /// caller's runtime.
    pub async fn serve(
        &self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> anyhow::Result<()> {
        self.inner.events.start_events()?;
        let (tx, rx) = watch::channel(false);
        let host = self.clone();
        let parts = ServeParts {
            gateway: self.gateway(),
            config: Arc::new(self.inner.config.clone()),
            runtimes: &self.inner.serving,
            admin: Arc::new(move || host.admin_router()),
        };
        let serving = Serving::start(parts, listeners, rx)?;

        shutdown.await;
        // Live log streams never end on their own: end them, or the drain
        // waits for them for its whole grace period.
        self.inner.invoker.logs.close_streams();
        tracing::info!(
            grace_secs = grace.as_secs_f64(),
            "shutting down: draining in-flight requests"
        );
        let _ = tx.send(true);
        let drained = tokio::time::timeout(grace, serving.stopped(&self.inner.serving));
        // At the same time: no new event deliveries; running ones get the
        // same grace period (those left stay pending for the next start).
        let (drained, ()) = tokio::join!(drained, self.inner.events.stop_events(grace));
        if drained.is_err() {
            tracing::warn!("grace period over; dropping the requests still in flight");
        }
        let host = self.clone();
        tokio::task::spawn_blocking(move || host.flush()).await??;
        tracing::info!("store flushed; bye");
        Ok(())
    }

    /// The data plane's view of this host: what is deployed and the
    /// invoker.
    pub(crate) fn gateway(&self) -> Gateway {
        Gateway {
            registry: self.inner.registry.clone(),
            invoker: self.inner.invoker.clone(),
            keys: self.inner.invoke_keys.clone(),
        }
    }

    /// Routes a data-plane request: longest matching route, or 404.
    pub async fn handle(&self, request: Request<Body>) -> Response<Body> {
        self.gateway().route(request).await
    }

    /// Flushes the store (shutdown).
    pub fn flush(&self) -> anyhow::Result<()> {
        self.inner.invoker.logs.sync_blocking();
        self.inner.store.flush_blocking()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_is_released_with_the_configured_allocator_hook() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        fn count() {
            CALLS.fetch_add(1, Ordering::SeqCst);
        }
        let config = HostConfig {
            release_memory: count,
            ..HostConfig::default()
        };
        let _host = Host::builder().config(config).temporary().build().unwrap();
        assert_eq!(
            CALLS.load(Ordering::SeqCst),
            1,
            "called once the host is built"
        );
    }
}
