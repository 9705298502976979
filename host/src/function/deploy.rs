//! The per-version orchestration: deploy (check, resolve the settings,
//! compile, store, activate), rollback and delete. Serialised by the admin
//! lock; each change is durable before the registry shows it.

use std::path::PathBuf;
use std::sync::Arc;

use super::FunctionsCtx;
use crate::capabilities::outbound::AllowList;
use crate::error::DeployError;
use crate::function::load::{deployed, now_ms, parse_routes, sha256_hex, store_and_load};
use crate::function::prepare::{ComponentPre, Prepared};
use crate::function::records::{FunctionRecord, NewVersion, PrecompiledFrom, VersionRecord};
use crate::function::registry::{Deployed, Owner};
use crate::function::resolve::{resolve_reuse, resolve_version};
use crate::function::wire::{DeployOptions, FunctionInfo};
use crate::routes::{Route, validate_name};

impl FunctionsCtx {
    /// Deploys `wasm` as a new version of `name` and makes it active.
    /// Everything is checked before anything is stored; the new version is
    /// durable when this returns.
    pub(crate) async fn deploy(
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
        // Precompiled code: refused here unless signed by a trusted key.
        let signed = if crate::function::signed::is_signed_artifact(&wasm) {
            let trusted = &self.inner.config.trusted_keys;
            Some(crate::function::signed::open(&wasm, trusted)?.0)
        } else {
            None
        };
        let (is_module, is_service) = match &signed {
            Some(h) => (h.kind == "module", h.kind == "service"),
            None => {
                let is_module = wasmparser::Parser::is_core_wasm(&wasm);
                (
                    is_module,
                    !is_module && crate::function::prepare::uses_wasi_p3(&wasm),
                )
            }
        };
        for r in &options.routes {
            Route::parse(r).map_err(|e| DeployError::InvalidRoute(e.to_string()))?;
        }
        AllowList::parse(&options.allow_outbound)
            .map_err(|e| DeployError::InvalidArgument(e.to_string()))?;

        let _guard = self.inner.admin_lock.lock().await;
        let (existing, revision) = self.current(name).await?;
        let resolved = resolve_version(
            name,
            &options,
            existing.as_ref().map(|r| r.active()),
            self.inner.config.default_limits,
            is_module,
        )?;
        let reuse = resolve_reuse(&options, existing.as_ref().map(|r| r.active()), is_service)?;
        self.inner
            .config
            .check_limits(&resolved.limits)
            .map_err(DeployError::InvalidArgument)?;
        let parsed = parse_routes(&resolved.routes)?;
        self.check_route_conflicts(Owner::Function(name), &parsed, &resolved.hosts)?;
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
            aliases: Default::default(),
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
            version_pinning: resolved.version_pinning,
            auth: resolved.auth,
            static_dir: resolved.static_dir,
            reuse,
            cors: resolved.cors,
            hosts: resolved.hosts,
            precompiled: signed.map(|h| PrecompiledFrom {
                source_sha256: h.source_sha256,
                signed_by: h.key_id,
                target: h.target,
            }),
        };
        record.active_version = version.version;
        record.updated_at_ms = now;
        record.versions.push(version.clone());
        if record.versions.len() == 1 {
            self.purge_leftovers(name).await?;
            // Cluster mode: the shared data too, by the host the deploy is
            // made on (never by those that copy it in: by then the
            // function may have written some).
            if let Some(shared) = self.inner.kv.shared() {
                shared.purge(name).await.map_err(|e| match e {
                    crate::KvError::ClusterUnavailable(m) => DeployError::ClusterUnavailable(m),
                    e => DeployError::Internal(e.to_string()),
                })?;
            }
            if let Some(logs) = self.cluster().and_then(|c| c.logs()) {
                logs.purge(name)
                    .await
                    .map_err(|e| DeployError::ClusterUnavailable(format!("{e:#}")))?;
            }
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
            // Cluster mode: the cluster first (acknowledged once JetStream
            // has it), then this host.
            if let Some(cluster) = self.cluster() {
                cluster.put_artifact(&sha256, &wasm).await?;
                cluster.put_function(&record, revision).await?;
            }
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

    /// The function's record to change: in cluster mode the cluster's, with
    /// its revision (this host's copy brought up to date with it first),
    /// else this host's. The caller holds the admin lock.
    pub(super) async fn current(
        &self,
        name: &str,
    ) -> Result<(Option<FunctionRecord>, Option<u64>), DeployError> {
        let Some(cluster) = self.cluster() else {
            return Ok((self.inner.records.get(name)?, None));
        };
        let remote = cluster.function(name).await?;
        self.sync_to(name, remote.as_ref().map(|(r, _)| r)).await?;
        Ok(match remote {
            Some((record, revision)) => (Some(record), Some(revision)),
            None => (None, None),
        })
    }

    /// A new name starts with no key-value data and no config, even if a
    /// crash (or a write racing the delete) left some behind; nor log
    /// lines, subscriptions, schedules, deliveries or dead letters of an
    /// earlier function of that name (a delete a crash interrupted leaves
    /// them after the record).
    pub(super) async fn purge_leftovers(&self, name: &str) -> Result<(), DeployError> {
        self.inner.kv.purge(name).await?;
        self.inner.settings.purge(name).await?;
        self.inner.invoke_keys.purge(name).await?;
        self.inner.invoker.logs.sync_blocking_async().await;
        self.inner.log_store.purge(name).await?;
        self.inner.invoker.logs.forget(name);
        self.inner
            .events
            .purge_function_events(name)
            .await
            .map_err(|e| DeployError::Internal(format!("removing leftover events: {e}")))
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
        let deployed = Arc::new(deployed(&self.inner, record, version, prepared)?);
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

    pub(super) fn check_route_conflicts(
        &self,
        owner: Owner<'_>,
        routes: &[Route],
        hosts: &[String],
    ) -> Result<(), DeployError> {
        let registry = self.inner.registry.load();
        for r in routes {
            if let Some(other) = registry.route_owner(r, hosts, owner) {
                let on = match hosts {
                    [] => String::new(),
                    hosts => format!(" on host {}", hosts.join(", ")),
                };
                return Err(DeployError::RouteConflict(format!(
                    "route {r}{on} is already served by {other}"
                )));
            }
        }
        Ok(())
    }

    /// Makes an earlier version active again (by default the newest one
    /// older than the active one), without recompiling.
    pub(crate) async fn rollback(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<FunctionInfo, DeployError> {
        let _guard = self.inner.admin_lock.lock().await;
        let (record, revision) = self.current(name).await?;
        let mut record = record.ok_or_else(|| DeployError::FunctionNotFound(name.to_string()))?;
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
        self.check_route_conflicts(Owner::Function(name), &routes, &target.hosts)?;
        // Who may call the function is not the code's to say: a rollback
        // keeps the current `--auth` (a private function never turns
        // public by going back to a version deployed before it was).
        let mut target = target;
        target.auth = record.active().auth;
        if let Some(v) = record
            .versions
            .iter_mut()
            .find(|v| v.version == target.version)
        {
            v.auth = target.auth;
        }
        record.active_version = target.version;
        record.updated_at_ms = now_ms();
        let this = self.clone();
        let rec2 = record.clone();
        let deployed = tokio::task::spawn_blocking(move || this.load_version(&rec2, &target))
            .await
            .map_err(|e| DeployError::Internal(format!("load task: {e}")))?
            .map_err(|e| DeployError::Internal(format!("{e:#}")))?;
        if let Some(cluster) = self.cluster() {
            cluster.put_function(&record, revision).await?;
        }
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
    /// A function with aliases is deleted only when `force`d: its aliases
    /// may be what serves its public routes.
    pub(crate) async fn delete(&self, name: &str, force: bool) -> Result<(), DeployError> {
        let _guard = self.inner.admin_lock.lock().await;
        let (record, revision) = self.current(name).await?;
        if let Some(r) = &record
            && !r.aliases.is_empty()
            && !force
        {
            let aliases: Vec<String> = r
                .aliases
                .iter()
                .map(|(n, a)| format!("{n} → {}", a.version))
                .collect();
            return Err(DeployError::Conflict(format!(
                "function {name:?} has aliases ({}): delete them first, or delete with --force \
                 (`force=true`)",
                aliases.join(", ")
            )));
        }
        if let Some(cluster) = self.cluster() {
            match (record, revision) {
                (Some(_), Some(revision)) => cluster.delete_function(name, revision).await?,
                _ => return Err(DeployError::FunctionNotFound(name.to_string())),
            }
            // Its settings and secrets go with it (left behind, a new
            // function of the name would not get them: see
            // `purge_leftovers`, and replica.rs's copy of new functions).
            if let Err(e) = cluster.delete_config(name).await {
                tracing::warn!(function = name, error = %e, "removing the deleted function's config from the cluster failed");
            }
            if let Some(shared) = self.inner.kv.shared()
                && let Err(e) = shared.purge(name).await
            {
                tracing::warn!(function = name, error = %e, "removing the deleted function's key-value data from the cluster failed (removed when the name is deployed again)");
            }
            if let Err(e) = self.inner.events.forget_in_cluster(name).await {
                tracing::warn!(function = name, error = %e, "removing the deleted function's subscriptions, schedules and dead letters from the cluster failed");
            }
            if let Some(logs) = cluster.logs()
                && let Err(e) = logs.purge(name).await
            {
                tracing::warn!(function = name, error = %e, "removing the deleted function's log from the cluster failed (removed when the name is deployed again)");
            }
        }
        if self.delete_locked(name).await? || self.cluster().is_some() {
            Ok(())
        } else {
            Err(DeployError::FunctionNotFound(name.to_string()))
        }
    }

    /// Removes compiled code nothing uses any more (`freed` artifacts).
    /// Mapped code stays valid after its file is removed: invocations still
    /// running finish on it.
    pub(super) async fn drop_compiled(&self, name: &str, freed: Vec<String>) {
        if freed.is_empty() {
            return;
        }
        let compiled_code = self.inner.compiled.clone();
        let dropped = tokio::task::spawn_blocking(move || compiled_code.drop_freed(&freed)).await;
        if let Ok(Err(e)) = dropped {
            tracing::warn!(function = name, error = %e, "removing compiled code failed (removed on the next start)");
        }
    }

    /// Deletes a function here: false if there is none. The caller holds
    /// the admin lock.
    pub(super) async fn delete_locked(&self, name: &str) -> Result<bool, DeployError> {
        // On the store's writer, answered once flushed.
        let Some(freed) = self.inner.records.delete(name).await? else {
            return Ok(false);
        };
        let next = self.inner.registry.load().without(name);
        self.inner.registry.store(Arc::new(next));
        self.inner.series.remove(name);
        self.drop_compiled(name, freed).await;
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
        // Its invoke keys: a new function of the name starts with none.
        if let Err(e) = self.inner.invoke_keys.purge(name).await {
            tracing::warn!(function = name, error = %e, "purging the deleted function's invoke keys failed");
        }
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
        if let Err(e) = self.inner.events.purge_function_events(name).await {
            tracing::warn!(function = name, error = %e, "removing the deleted function's events failed");
        }
        tracing::info!(function = name, "deleted");
        Ok(true)
    }
}
