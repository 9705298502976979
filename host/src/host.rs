//! [`Host`]: the store, the engine and what is deployed, and the operations
//! on them (deploy, rollback, delete, invoke).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{Request, Response};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Semaphore};

use crate::api::{DeployOptions, FunctionInfo, FunctionSummary, VersionInfo};
use crate::capabilities::kv::store::KvStore;
use crate::capabilities::logs::LogStore;
use crate::capabilities::logs::{LogSink, Retention};
use crate::capabilities::outbound::AllowList;
use crate::capabilities::settings::ConfigStore;
use crate::config::{HostConfig, Limits, StoreLocation};
use crate::engine::{AllocatorKind, ComponentPre, Prepared, WispEngine};
use crate::error::DeployError;
use crate::function::compiled::Compiled;
use crate::function::records::{FunctionRecord, NewVersion, Records, VersionRecord};
use crate::function::resolve::resolve_version;
use crate::invocation::Invoker;
use crate::metrics::{FunctionMetrics, HostMetrics};
use crate::registry::{Deployed, Registry};
use crate::routes::{Route, validate_name};
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
    /// Compiled code beside the store.
    pub compiled: Compiled,
    /// Functions' key-value data.
    pub kv: KvStore,
    /// Functions' settings and secrets.
    pub settings: ConfigStore,
    /// Functions' logs.
    pub log_store: LogStore,
    pub engine: Arc<WispEngine>,
    /// What is deployed; swapped whole on every change (no lock on reads).
    pub registry: ArcSwap<Registry>,
    /// Serialises changes (deploy, rollback, delete) so that route checks
    /// and version numbers see a consistent state. Never taken by requests.
    pub admin_lock: Mutex<()>,
    pub invoker: Invoker,
    pub admin_token: SecretString,
    pub prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub data_dir: Option<PathBuf>,
    /// Topics, subscriptions, group commit and the event dispatcher.
    pub events: crate::events::plane::EventPlane,
    /// The runtimes of the serving threads while [`Host::serve`] runs
    /// (event deliveries are spread over them); empty otherwise.
    pub serving: crate::gateway::serve::ServingRuntimes,
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
/// assert!(host.functions()?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct HostBuilder {
    config: HostConfig,
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

    /// Replaces the whole configuration.
    pub fn config(mut self, config: HostConfig) -> Self {
        self.config = config;
        self
    }

    /// Opens the store, builds the engine and loads every deployed function
    /// (from their compiled code in the data directory: no recompilation).
    pub fn build(self) -> anyhow::Result<Host> {
        let config = self.config;
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
        let kv = KvStore::open(&store).with_context(opening)?;
        let settings = ConfigStore::open(&store).with_context(opening)?;
        let log_store = LogStore::open(&store).with_context(opening)?;
        let event_store = crate::events::store::EventStore::open(&store).with_context(opening)?;
        let prometheus = crate::metrics::install();
        let engine = Arc::new(WispEngine::new(&config)?);
        if let Err(e) = compiled.drop_other_engines(&engine.compat_key) {
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
        let inner = Arc::new(HostInner {
            invoker: Invoker {
                logs,
                log_limit: crate::capabilities::logs::LogLimits {
                    bytes: config.log_bytes_per_invocation as usize,
                    entries: config.log_entries_per_invocation as usize,
                },
                max_outbound: config.max_outbound_requests,
                cgi_max_output: config.cgi_max_output_bytes,
                engine: engine.engine.clone(),
                in_flight: Arc::new(Semaphore::new(config.max_in_flight as usize)),
                function_share: config.function_share(),
                metrics: HostMetrics::new(),
                publisher: Arc::new(crate::events::EventPublisher::new(&events, &store, &config)),
            },
            store,
            records,
            compiled,
            kv,
            settings,
            log_store,
            engine,
            registry: ArcSwap::from_pointee(Registry::default()),
            admin_lock: Mutex::new(()),
            admin_token,
            prometheus,
            data_dir: temp.is_none().then(|| dir.clone()),
            events,
            serving: Default::default(),
            _temp: temp,
            config,
        });
        let host = Host { inner };
        host.load_all()?;
        // Loading may have compiled (a new engine version): free its scratch,
        // and what reading the store and the compiled code left behind.
        (host.inner.config.release_memory)();
        Ok(host)
    }
}

/// Writes compiled code to its file in the store (durably) and maps it
/// back, so the function runs on the mapped file rather than a heap copy,
/// as after a restart. Blocking.
fn store_and_load(
    compiled: &Compiled,
    engine: &WispEngine,
    sha256: &str,
    serialized: &[u8],
) -> Result<crate::engine::Compiled, DeployError> {
    // Mapped through the descriptor written, not the name: see `CodeFile`.
    let code = compiled.put(sha256, &engine.compat_key, serialized)?;
    engine
        .load(&code)
        .map_err(|e| DeployError::Internal(format!("loading compiled code back: {e:#}")))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Host {
    /// Starts building a host.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
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

    /// Loads the active version of every stored function.
    fn load_all(&self) -> anyhow::Result<()> {
        let mut by_name = HashMap::new();
        for record in self.inner.records.all()? {
            let deployed = self
                .load_version(&record, record.active())
                .with_context(|| format!("loading function {}", record.name))?;
            by_name.insert(record.name.clone(), Arc::new(deployed));
        }
        let n = by_name.len();
        self.inner
            .registry
            .store(Arc::new(Registry::from_map(by_name)));
        tracing::info!(functions = n, "functions loaded");
        Ok(())
    }

    /// Builds a [`Deployed`] from stored compiled code, compiling (and
    /// storing the result) only when there is none for this engine.
    fn load_version(&self, record: &FunctionRecord, v: &VersionRecord) -> anyhow::Result<Deployed> {
        let engine = &self.inner.engine;
        let compiled_code = &self.inner.compiled;
        // Only code that matches its checksum in the store is run (a file
        // that does not is removed, and logged, by the store).
        let loaded = match compiled_code.code(&v.sha256, &engine.compat_key)? {
            Some(code) => match engine.load(&code) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(function = %record.name, error = %e, "stored compiled code unusable; recompiling");
                    None
                }
            },
            None => None,
        };
        let component = match loaded {
            Some(c) => c,
            None => {
                tracing::info!(function = %record.name, version = v.version, "compiling from the stored artifact (no verified compiled code for this engine)");
                let wasm = self
                    .inner
                    .records
                    .artifact(&v.sha256)?
                    .with_context(|| format!("artifact {} missing from the store", v.sha256))?;
                let compiled = engine.compile(&wasm)?.serialize()?;
                store_and_load(compiled_code, engine, &v.sha256, &compiled)?
            }
        };
        let pre = engine.prepare(&component)?;
        Ok(deployed(
            &self.inner.kv,
            &self.inner.settings,
            self.data_dir(),
            record,
            v,
            pre,
            self.inner.config.function_share(),
        )?)
    }

    /// Deploys `wasm` as a new version of `name` and makes it active.
    /// Everything is checked before anything is stored; the new version is
    /// durable when this returns.
    pub async fn deploy(
        &self,
        name: &str,
        wasm: bytes::Bytes,
        options: DeployOptions,
    ) -> Result<FunctionInfo, DeployError> {
        validate_name(name).map_err(DeployError::InvalidName)?;
        if wasm.len() as u64 > self.inner.config.max_upload_bytes {
            return Err(DeployError::TooLarge(format!(
                "the artifact is {} bytes; the limit is {} bytes",
                wasm.len(),
                self.inner.config.max_upload_bytes
            )));
        }
        crate::function::prepare::check_binary(&wasm)?;
        let is_module = wasmparser::Parser::is_core_wasm(&wasm);
        for r in &options.routes {
            Route::parse(r).map_err(|e| DeployError::InvalidRoute(e.to_string()))?;
        }
        AllowList::parse(&options.allow_outbound)
            .map_err(|e| DeployError::InvalidArgument(e.to_string()))?;

        let _guard = self.inner.admin_lock.lock().await;
        let existing = self.inner.records.get(name)?;
        let resolved = resolve_version(
            name,
            &options,
            existing.as_ref().map(|r| r.active()),
            self.inner.config.default_limits,
            is_module,
        )?;
        self.inner
            .config
            .check_limits(&resolved.limits)
            .map_err(DeployError::InvalidArgument)?;
        let parsed = parse_routes(&resolved.routes)?;
        self.check_route_conflicts(name, &parsed)?;
        if let Some(dir) = &resolved.static_dir {
            self.static_dir_path(dir)?;
        }

        // Compile on a blocking thread: large components take seconds.
        let engine = self.inner.engine.clone();
        let wasm2 = wasm.clone();
        let (prepared, compiled) = tokio::task::spawn_blocking(move || engine.compile_new(&wasm2))
            .await
            .map_err(|e| DeployError::Internal(format!("compile task: {e}")))??;
        // A component that exports only the event handler serves no HTTP:
        // it takes no routes (and does not inherit the previous version's).
        let resolved = match &prepared {
            Prepared::Component(ComponentPre { http: None, .. }) => {
                resolved.without_routes(name, !options.routes.is_empty())?
            }
            _ => resolved,
        };

        let now = now_ms();
        let sha256 = sha256_hex(&wasm);
        let mut record = existing.unwrap_or(FunctionRecord {
            name: name.to_string(),
            active_version: 0,
            created_at_ms: now,
            updated_at_ms: now,
            versions: Vec::new(),
        });
        let version = VersionRecord {
            version: record.next_version(),
            sha256: sha256.clone(),
            size_bytes: wasm.len() as u64,
            created_at_ms: now,
            routes: resolved.routes,
            env: resolved.env,
            limits: resolved.limits,
            allow_outbound: resolved.allow_outbound,
            config_env: resolved.config_env,
            static_dir: resolved.static_dir,
        };
        record.active_version = version.version;
        record.updated_at_ms = now;
        record.versions.push(version.clone());
        if record.versions.len() == 1 {
            // A new name starts with no key-value data and no config, even
            // if a crash (or a write racing the delete) left some behind.
            self.inner.kv.purge(name).await?;
            self.inner.settings.purge(name).await?;
            // Nor log lines, subscriptions, schedules, deliveries or dead
            // letters of an earlier function of that name (a delete a
            // crash interrupted leaves them after the record).
            self.inner.invoker.logs.sync_blocking_async().await;
            self.inner.log_store.purge(name).await?;
            self.inner.invoker.logs.forget(name);
            self.purge_function_events(name)
                .await
                .map_err(|e| DeployError::Internal(format!("removing leftover events: {e}")))?;
        }
        // Checked (prepared from the compiler's output); from here the
        // function runs on its compiled code's file, mapped rather than
        // copied into the heap, as after a restart.
        drop(prepared);
        let compiled_code = self.inner.compiled.clone();
        let engine = self.inner.engine.clone();
        let sha = sha256.clone();
        let stored = async {
            let prepared = tokio::task::spawn_blocking(move || {
                engine.prepare(&store_and_load(&compiled_code, &engine, &sha, &compiled)?)
            })
            .await
            .map_err(|e| DeployError::Internal(format!("compile task: {e}")))??;
            self.store_version(&record, &version, &sha256, wasm, prepared)
                .await
        }
        .await;
        let deployed = match stored {
            Ok(d) => d,
            Err(e) => {
                // The code file goes unless the artifact is stored (another
                // version uses it, or the write went through after all).
                let compiled_code = self.inner.compiled.clone();
                let forgotten =
                    tokio::task::spawn_blocking(move || compiled_code.forget(&sha256)).await;
                if let Ok(Err(e)) = forgotten {
                    tracing::warn!(error = %e, "removing compiled code of a failed deploy failed (removed on the next start)");
                }
                return Err(e);
            }
        };
        let next = self.inner.registry.load().with(deployed);
        self.inner.registry.store(Arc::new(next));
        tracing::info!(function = name, version = record.active_version, "deployed");
        // The compiler's scratch memory is free now: give it back.
        tokio::task::spawn_blocking(self.inner.config.release_memory);
        Ok(self.info(&record))
    }

    /// The deploy's transaction (artifact, reference count, record),
    /// flushed: durable before anyone is told.
    async fn store_version(
        &self,
        record: &FunctionRecord,
        version: &VersionRecord,
        sha256: &str,
        wasm: bytes::Bytes,
        prepared: Prepared,
    ) -> Result<Arc<Deployed>, DeployError> {
        let deployed = Arc::new(deployed(
            &self.inner.kv,
            &self.inner.settings,
            self.data_dir(),
            record,
            version,
            prepared,
            self.inner.config.function_share(),
        )?);
        // On the store's writer, answered once flushed.
        self.inner
            .records
            .put_version(NewVersion {
                record: record.clone(),
                sha256: sha256.to_string(),
                artifact: wasm,
            })
            .await?;
        Ok(deployed)
    }

    /// Where a static directory (`static_dir`, relative) is on the host;
    /// it must exist, under `<data-dir>/static/`.
    fn static_dir_path(&self, rel: &str) -> Result<PathBuf, DeployError> {
        let Some(data_dir) = self.data_dir() else {
            return Err(DeployError::InvalidArgument(
                "static_dir needs a data directory; this host uses a temporary store".into(),
            ));
        };
        let path = crate::invocation::cgi::static_dir_path(data_dir, rel)
            .map_err(DeployError::InvalidArgument)?;
        if !path.is_dir() {
            return Err(DeployError::InvalidArgument(format!(
                "static_dir {rel:?}: {} is not a directory",
                path.display()
            )));
        }
        Ok(path)
    }

    fn check_route_conflicts(&self, name: &str, routes: &[Route]) -> Result<(), DeployError> {
        let registry = self.inner.registry.load();
        for r in routes {
            if let Some(owner) = registry.route_owner(r, name) {
                return Err(DeployError::RouteConflict(format!(
                    "route {r} is already served by function {owner:?}"
                )));
            }
        }
        Ok(())
    }

    /// Makes an earlier version active again (by default the newest one
    /// older than the active one), without recompiling.
    pub async fn rollback(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<FunctionInfo, DeployError> {
        let _guard = self.inner.admin_lock.lock().await;
        let mut record = self
            .inner
            .records
            .get(name)?
            .ok_or_else(|| DeployError::FunctionNotFound(name.to_string()))?;
        let target = match version {
            Some(v) => record.version(v).cloned().ok_or_else(|| {
                DeployError::VersionNotFound(format!("function {name:?} has no version {v}"))
            })?,
            None => record
                .versions
                .iter()
                .filter(|v| v.version < record.active_version)
                .max_by_key(|v| v.version)
                .cloned()
                .ok_or_else(|| {
                    DeployError::InvalidArgument(format!(
                        "function {name:?} has no version older than the active version {}",
                        record.active_version
                    ))
                })?,
        };
        let routes = parse_routes(&target.routes)?;
        self.check_route_conflicts(name, &routes)?;
        record.active_version = target.version;
        record.updated_at_ms = now_ms();
        let this = self.clone();
        let rec2 = record.clone();
        let deployed = tokio::task::spawn_blocking(move || this.load_version(&rec2, &target))
            .await
            .map_err(|e| DeployError::Internal(format!("load task: {e}")))?
            .map_err(|e| DeployError::Internal(format!("{e:#}")))?;
        self.inner.records.update(record.clone()).await?;
        let next = self.inner.registry.load().with(Arc::new(deployed));
        self.inner.registry.store(Arc::new(next));
        tracing::info!(
            function = name,
            version = record.active_version,
            "rolled back"
        );
        Ok(self.info(&record))
    }

    /// Deletes a function, all its versions and the artifacts nothing else
    /// uses.
    pub async fn delete(&self, name: &str) -> Result<(), DeployError> {
        let _guard = self.inner.admin_lock.lock().await;
        // On the store's writer, answered once flushed.
        let Some(freed) = self.inner.records.delete(name).await? else {
            return Err(DeployError::FunctionNotFound(name.to_string()));
        };
        let next = self.inner.registry.load().without(name);
        self.inner.registry.store(Arc::new(next));
        // Mapped code stays valid after its file is removed: invocations
        // still running finish on it.
        let compiled_code = self.inner.compiled.clone();
        let dropped = tokio::task::spawn_blocking(move || compiled_code.drop_freed(&freed)).await;
        if let Ok(Err(e)) = dropped {
            tracing::warn!(function = name, error = %e, "removing compiled code failed (removed on the next start)");
        }
        // The function's log goes with it (after the record: a crash in
        // between leaves lines no function owns, which a redeploy under the
        // same name would show; purged again on the next delete).
        self.inner.invoker.logs.sync_blocking_async().await;
        if let Err(e) = self.inner.log_store.purge(name).await {
            tracing::warn!(function = name, error = %e, "purging the deleted function's log failed");
        }
        self.inner.invoker.logs.forget(name);
        // Its key-value data and config too, after the record for the same
        // reason (leftovers are purged when the name is deployed again).
        let purged = match self.inner.kv.purge(name).await {
            Ok(()) => self.inner.settings.purge(name).await,
            Err(e) => Err(e),
        };
        if let Err(e) = purged {
            tracing::warn!(function = name, error = %e, "purging the deleted function's data failed");
        }
        // And what the event plane keeps for it: subscriptions,
        // schedules, deliveries pending or running on any topic (its
        // asynchronous invocations, ticks and job tasks included: a new
        // function of the same name must not receive them) and dead
        // letters; its running jobs end cancelled. After the record, for
        // the same reason; a crash part-way leaves the rest to the next
        // deploy of the name.
        if let Err(e) = self.purge_function_events(name).await {
            tracing::warn!(function = name, error = %e, "removing the deleted function's events failed");
        }
        tracing::info!(function = name, "deleted");
        Ok(())
    }

    /// A function's record.
    pub fn function(&self, name: &str) -> Result<FunctionInfo, DeployError> {
        self.inner
            .records
            .get(name)?
            .map(|r| self.info(&r))
            .ok_or_else(|| DeployError::FunctionNotFound(name.to_string()))
    }

    /// A function's record, with what its deployed version handles.
    fn info(&self, record: &FunctionRecord) -> FunctionInfo {
        let mut info = FunctionInfo::from(record);
        if let Some(d) = self.inner.registry.load().by_name.get(&record.name) {
            info.handlers = match &d.pre {
                Prepared::Component(c) => {
                    [("http", c.http.is_some()), ("events", c.events.is_some())]
                        .into_iter()
                        .filter(|(_, has)| *has)
                        .map(|(h, _)| h.to_string())
                        .collect()
                }
                Prepared::Module(_) => vec!["cgi".to_string()],
            };
        }
        info
    }

    /// All functions, by name.
    pub fn functions(&self) -> Result<Vec<FunctionSummary>, DeployError> {
        Ok(self
            .inner
            .records
            .all()?
            .iter()
            .map(FunctionSummary::from)
            .collect())
    }

    /// A function's versions, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, DeployError> {
        Ok(self.function(name)?.versions)
    }

    /// Invokes a function directly (no route lookup). The request's URI is
    /// the path and query the guest sees.
    pub async fn invoke(
        &self,
        name: &str,
        request: Request<Body>,
    ) -> Result<Response<Body>, DeployError> {
        let target = self
            .inner
            .registry
            .load()
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| DeployError::FunctionNotFound(name.to_string()))?;
        Ok(self.inner.invoker.invoke(target, request).await)
    }

    /// Instantiates the active version of `name` in a fresh store and drops
    /// it, without calling the handler: the per-request instantiation cost
    /// on its own, for benchmarks. Not part of the stable API.
    #[doc(hidden)]
    pub async fn instantiate_only(&self, name: &str) -> anyhow::Result<()> {
        let target = self
            .inner
            .registry
            .load()
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| DeployError::FunctionNotFound(name.to_string()))?;
        self.inner.invoker.instantiate_only(&target).await?;
        Ok(())
    }

    /// Routes a data-plane request: longest matching route, or 404.
    pub async fn handle(&self, request: Request<Body>) -> Response<Body> {
        crate::gateway::route(self, request).await
    }

    /// Number of distinct artifacts in the store (deduplicated by hash).
    pub fn stored_artifacts(&self) -> usize {
        self.inner.records.artifact_count()
    }

    /// Flushes the store (shutdown).
    pub fn flush(&self) -> anyhow::Result<()> {
        self.inner.invoker.logs.sync_blocking();
        self.inner.store.flush_blocking()?;
        Ok(())
    }
}

fn deployed(
    kv: &KvStore,
    settings: &ConfigStore,
    data_dir: Option<&Path>,
    record: &FunctionRecord,
    v: &VersionRecord,
    pre: crate::engine::Prepared,
    share: u32,
) -> Result<Deployed, DeployError> {
    // Checked at deploy; a directory removed since then fails the
    // invocations (500, logged), not the load.
    let static_dir = match (&v.static_dir, data_dir) {
        (Some(rel), Some(dir)) => Some(
            crate::invocation::cgi::static_dir_path(dir, rel)
                .map_err(|e| DeployError::Internal(format!("stored static_dir: {e}")))?,
        ),
        _ => None,
    };
    let name_arc: Arc<str> = Arc::from(record.name.as_str());
    let config = crate::capabilities::settings::load_snapshot(settings, &record.name)?;
    let kv = crate::capabilities::kv::KvNamespace::new(kv.clone(), name_arc.clone(), &v.limits);
    let allow_outbound = crate::capabilities::outbound::effective(
        &v.allow_outbound,
        config.get(crate::capabilities::outbound::CONFIG_KEY),
    )
    .map_err(|e| DeployError::Internal(format!("stored allow-list: {e}")))?;
    Ok(Deployed {
        name: record.name.clone(),
        name_arc,
        allow_outbound: Arc::new(allow_outbound),
        version: v.version,
        pre,
        static_dir,
        limits: v.limits,
        env: crate::capabilities::settings::guest_env(&v.env, v.config_env, &config),
        routes: parse_routes(&v.routes)?,
        metrics: FunctionMetrics::new(&record.name),
        kv: Arc::new(kv),
        config,
        slots: Arc::new(Semaphore::new(share as usize)),
    })
}

fn parse_routes(routes: &[String]) -> Result<Vec<Route>, DeployError> {
    routes
        .iter()
        .map(|r| Route::parse(r).map_err(|e| DeployError::InvalidRoute(e.to_string())))
        .collect()
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
