//! Loading deployed versions: at start-up every function's active version,
//! on rollback an earlier one; from stored compiled code when it verifies,
//! else compiled again from the stored artifact. Also what turns a stored
//! version into the registry's [`Deployed`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use sha2::{Digest, Sha256};

use super::{FunctionsCtx, FunctionsInner};
use crate::engine::{EngineKind, WispEngine};
use crate::error::DeployError;
use crate::function::compiled::Compiled;
use crate::function::prepare::Serialized;
use crate::function::records::{FunctionRecord, VersionRecord};
use crate::function::registry::{Deployed, Registry};
use crate::invocation::admission::Admission;
use crate::metrics::FunctionMetrics;
use crate::routes::Route;

impl FunctionsCtx {
    /// Loads the active version of every stored function.
    pub(crate) fn load_all(&self) -> anyhow::Result<()> {
        let mut by_name = HashMap::new();
        let records = self.inner.records.all()?;
        for record in &records {
            let deployed = self
                .load_version(record, record.active())
                .with_context(|| format!("loading function {}", record.name))?;
            by_name.insert(record.name.clone(), Arc::new(deployed));
        }
        let n = by_name.len();
        self.inner
            .registry
            .store(Arc::new(Registry::from_map(by_name)));
        // Then the versions their aliases point to (sharing the active
        // versions' admission, which is why they come second).
        for record in records.iter().filter(|r| !r.aliases.is_empty()) {
            let aliases = self
                .load_aliases(record)
                .with_context(|| format!("loading the aliases of function {}", record.name))?;
            let next = self
                .inner
                .registry
                .load()
                .with_aliases(&record.name, aliases);
            self.inner.registry.store(Arc::new(next));
        }
        tracing::info!(functions = n, "functions loaded");
        Ok(())
    }

    /// Builds a [`Deployed`] from stored compiled code, compiling (and
    /// storing the result) only when there is none for this engine.
    pub(super) fn load_version(
        &self,
        record: &FunctionRecord,
        v: &VersionRecord,
    ) -> anyhow::Result<Deployed> {
        self.load_version_from(record, v, None)
    }

    /// The same, compiling from `artifact` (one fetched from the cluster,
    /// not yet stored) rather than the store's copy when it must.
    pub(super) fn load_version_from(
        &self,
        record: &FunctionRecord,
        v: &VersionRecord,
        artifact: Option<bytes::Bytes>,
    ) -> anyhow::Result<Deployed> {
        let engine = &self.inner.engine;
        let compiled_code = &self.inner.compiled;
        // Only code that matches its checksum in the store is run (a file
        // that does not is removed, and logged, by the store).
        // Compiled for one of the two engines (WASI 0.3 components for the
        // other one).
        let mut loaded = None;
        for kind in [EngineKind::Sync, EngineKind::Async] {
            let Some(code) = compiled_code.code(&v.sha256, &engine.key(kind))? else {
                continue;
            };
            match engine.load(&code, kind) {
                Ok(c) => {
                    loaded = Some(c);
                    break;
                }
                Err(e) => {
                    tracing::warn!(function = %record.name, error = %e, "stored compiled code unusable; recompiling");
                }
            }
        }
        let component = match loaded {
            Some(c) => c,
            None => {
                tracing::info!(function = %record.name, version = v.version, "compiling from the stored artifact (no verified compiled code for this engine)");
                let wasm =
                    match artifact {
                        Some(wasm) => wasm,
                        None => self.inner.records.artifact(&v.sha256)?.with_context(|| {
                            format!("artifact {} missing from the store", v.sha256)
                        })?,
                    };
                let (_, serialized) = engine.compile_serialized(&wasm)?;
                store_and_load(compiled_code, engine, &v.sha256, &serialized)?
            }
        };
        let pre = engine.prepare(&component)?;
        Ok(deployed(&self.inner, record, v, pre)?)
    }
}

/// Writes compiled code to its file in the store (durably) and maps it
/// back, so the function runs on the mapped file rather than a heap copy,
/// as after a restart. Blocking.
pub(super) fn store_and_load(
    compiled: &Compiled,
    engine: &WispEngine,
    sha256: &str,
    serialized: &Serialized,
) -> Result<crate::function::prepare::Compiled, DeployError> {
    // Mapped through the descriptor written, not the name: see `CodeFile`.
    let code = compiled.put(sha256, &engine.key(serialized.kind), &serialized.bytes)?;
    engine
        .load(&code, serialized.kind)
        .map_err(|e| DeployError::Internal(format!("loading compiled code back: {e:#}")))
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Version `v` of function `record`, ready to serve on `pre`, with what
/// the host keeps for the function: its key-value namespace, settings and
/// the ring of its last hour (shared with its other versions).
pub(super) fn deployed(
    host: &FunctionsInner,
    record: &FunctionRecord,
    v: &VersionRecord,
    pre: crate::function::prepare::Prepared,
) -> Result<Deployed, DeployError> {
    let (kv, settings, data_dir) = (&host.kv, &host.settings, host.data_dir.as_deref());
    let concurrency = host.config.concurrency_of(&v.limits);
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
        version_pinning: v.version_pinning,
        auth: v.auth,
        pre,
        static_dir,
        limits: v.limits,
        env: crate::capabilities::settings::guest_env(&v.env, v.config_env, &config),
        routes: parse_routes(&v.routes)?,
        metrics: FunctionMetrics::new(&record.name, v.version, host.series.of(&record.name)),
        kv: Arc::new(kv),
        config,
        admission: Arc::new(Admission::new(&record.name, concurrency)),
        reuse: v.reuse.map(crate::invocation::reuse::ReusePool::new),
        cors: v.cors.clone().map(Arc::new),
        hosts: v.hosts.iter().map(|h| Arc::from(h.as_str())).collect(),
    })
}

pub(super) fn parse_routes(routes: &[String]) -> Result<Vec<Route>, DeployError> {
    routes
        .iter()
        .map(|r| Route::parse(r).map_err(|e| DeployError::InvalidRoute(e.to_string())))
        .collect()
}
