//! Cluster mode: this host's store as a copy of the cluster's function
//! records ([`crate::cluster`]). At start the host copies every record in
//! (and drops what the cluster no longer has), then a watcher applies each
//! change another host makes: the artifacts it lacks are fetched, the
//! active version is loaded (compiled here if this host has no code for
//! it), the record is stored and the registry swapped, as a local deploy,
//! rollback or delete would. Admin writes on this host bring its copy up to
//! date first, then write to the cluster, then here (`deploy.rs`).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;

use super::FunctionsCtx;
use crate::capabilities::settings::replacing;
use async_nats::jetstream::kv;

use crate::cluster::{Change, Cluster, ClusterError, change};
use crate::error::DeployError;
use crate::function::handles::reconfigure;
use crate::function::records::FunctionRecord;

/// How long the watcher waits before watching again after its stream
/// ended (NATS went away; the client reconnects meanwhile).
const REWATCH: Duration = Duration::from_secs(1);

impl FunctionsCtx {
    /// The cluster, in cluster mode.
    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        self.inner.cluster.as_ref()
    }

    /// Copies every function record of the cluster into this host and
    /// removes the functions it no longer has; then starts the watcher that
    /// keeps them in step.
    pub(crate) async fn join_cluster(&self) -> anyhow::Result<()> {
        let Some(cluster) = self.cluster().cloned() else {
            return Ok(());
        };
        let names = cluster
            .function_names()
            .await
            .context("reading the cluster's functions")?;
        {
            let _guard = self.inner.admin_lock.lock().await;
            for name in &names {
                let remote = cluster.function(name).await?.map(|(r, _)| r);
                self.sync_to(name, remote.as_ref())
                    .await
                    .with_context(|| format!("copying function {name} from the cluster"))?;
            }
            for local in self.inner.records.all()? {
                if !names.contains(&local.name) {
                    self.sync_to(&local.name, None).await?;
                }
            }
        }
        tracing::info!(
            functions = names.len(),
            node = cluster.node(),
            "joined the cluster"
        );
        let (this, watched) = (self.clone(), cluster.clone());
        let functions = follow(
            "functions",
            move || {
                let cluster = watched.clone();
                async move { cluster.watch_functions().await }
            },
            move |entry| {
                let this = this.clone();
                async move { this.apply_record(&entry).await }
            },
        );
        let (this, watched) = (self.clone(), cluster);
        let config = follow(
            "config",
            {
                let watched = watched.clone();
                move || {
                    let cluster = watched.clone();
                    async move { cluster.watch_config().await }
                }
            },
            move |entry| {
                let (this, cluster) = (this.clone(), watched.clone());
                async move { this.apply_config(&cluster, &entry).await }
            },
        );
        tokio::spawn(functions);
        tokio::spawn(config);
        Ok(())
    }

    /// A change to the cluster's function records, made here too.
    async fn apply_record(&self, entry: &kv::Entry) -> Result<(), DeployError> {
        let _guard = self.inner.admin_lock.lock().await;
        match change(entry)? {
            Change::Put(record) => self.sync_to(&record.name.clone(), Some(&record)).await,
            Change::Delete(name) => self.sync_to(&name, None).await,
        }
    }

    /// A change to the cluster's settings and secrets, made here too.
    async fn apply_config(&self, cluster: &Cluster, entry: &kv::Entry) -> Result<(), DeployError> {
        // Deletes go with the function's; the key check is not a
        // function's.
        if entry.operation != kv::Operation::Put || entry.key.starts_with('_') {
            return Ok(());
        }
        let _guard = self.inner.admin_lock.lock().await;
        self.copy_config(cluster, &entry.key, &entry.value).await
    }

    /// Makes this host's settings and secrets of `name` the cluster's
    /// (`value`, the entry), if this host has the function. The caller holds
    /// the admin lock.
    async fn copy_config(
        &self,
        cluster: &Cluster,
        name: &str,
        value: &[u8],
    ) -> Result<(), DeployError> {
        let Some(record) = self.inner.records.get(name)? else {
            // Copied in with the function when it arrives.
            return Ok(());
        };
        let shared = cluster.open_config(name, value)?;
        let settings = &self.inner.settings;
        let changes = replacing(&settings.items(name)?, &shared.items);
        if changes.is_empty() {
            return Ok(());
        }
        settings.apply(name, changes).await?;
        reconfigure(&self.inner.registry, &record, settings.items(name)?);
        tracing::info!(function = name, "config copied from the cluster");
        Ok(())
    }

    /// Brings this host's copy of `name` to `remote` (`None`: the cluster
    /// has no such function). The caller holds the admin lock.
    pub(crate) async fn sync_to(
        &self,
        name: &str,
        remote: Option<&FunctionRecord>,
    ) -> Result<(), DeployError> {
        let local = self.inner.records.get(name)?;
        match (local, remote) {
            (None, None) => Ok(()),
            (Some(_), None) => {
                self.delete_locked(name).await?;
                Ok(())
            }
            (Some(local), Some(remote)) if local == *remote => Ok(()),
            (local, Some(remote)) => self.copy_in(local.is_none(), remote).await,
        }
    }

    /// Stores `remote` here and serves its active version.
    async fn copy_in(&self, is_new: bool, remote: &FunctionRecord) -> Result<(), DeployError> {
        let cluster = self
            .cluster()
            .ok_or_else(|| DeployError::Internal("not in a cluster".into()))?;
        if is_new {
            self.purge_leftovers(&remote.name).await?;
            // Its settings and secrets first: the version loaded below
            // reads them.
            let shared = cluster.config(&remote.name).await?;
            let changes = replacing(&[], &shared.items);
            if !changes.is_empty() {
                self.inner.settings.apply(&remote.name, changes).await?;
            }
        }
        let mut fetched: Vec<(String, Bytes)> = Vec::new();
        let shas: BTreeSet<&str> = remote.versions.iter().map(|v| v.sha256.as_str()).collect();
        for sha in shas {
            if !self.inner.records.has_artifact(sha)? {
                let wasm = cluster
                    .artifact(sha, self.inner.config.max_upload_bytes)
                    .await?;
                fetched.push((sha.to_string(), wasm));
            }
        }
        let active = remote
            .version(remote.active_version)
            .cloned()
            .ok_or_else(|| {
                DeployError::Internal(format!(
                    "the cluster's record of {:?} has no active version {}",
                    remote.name, remote.active_version
                ))
            })?;
        // Loaded (compiled if need be) before anything is stored: a version
        // this host cannot load is not stored, so a restart still starts.
        let this = self.clone();
        let record = remote.clone();
        let artifact = fetched
            .iter()
            .find(|(s, _)| *s == active.sha256)
            .map(|(_, b)| b.clone());
        let deployed =
            tokio::task::spawn_blocking(move || this.load_version_from(&record, &active, artifact))
                .await
                .map_err(|e| DeployError::Internal(format!("load task: {e}")))?
                .map_err(|e| DeployError::Internal(format!("{e:#}")))?;
        // Served first, then stored: whoever sees the new record here (the
        // admin API reads the store) finds it served too. The cluster
        // already has it; if storing fails, the old version serves again and
        // the next change or restart copies it anew.
        let before = self.inner.registry.load_full();
        let next = before.with(Arc::new(deployed));
        self.inner.registry.store(Arc::new(next));
        let freed = match self.inner.records.replace(remote.clone(), fetched).await {
            Ok(freed) => freed,
            Err(e) => {
                self.inner.registry.store(before);
                return Err(e.into());
            }
        };
        self.drop_compiled(&remote.name, freed).await;
        // Its aliases, once every version they may point to is stored.
        let this = self.clone();
        let record = remote.clone();
        match tokio::task::spawn_blocking(move || this.load_aliases(&record)).await {
            Ok(Ok(aliases)) => {
                let next = self
                    .inner
                    .registry
                    .load()
                    .with_aliases(&remote.name, aliases);
                self.inner.registry.store(Arc::new(next));
            }
            Ok(Err(e)) => {
                tracing::error!(function = %remote.name, error = %format!("{e:#}"), "the function's aliases copied from the cluster cannot be served")
            }
            Err(e) => tracing::error!(function = %remote.name, error = %e, "loading aliases"),
        }
        tracing::info!(
            function = %remote.name,
            version = remote.active_version,
            "copied from the cluster"
        );
        (self.inner.config.release_memory)();
        Ok(())
    }
}

/// Applies each change of the bucket `open` watches (`what`, for the log),
/// for as long as the host runs, watching again whenever the stream ends
/// (NATS went away; the client reconnects meanwhile). A change that cannot
/// be applied is logged; it is applied again at the key's next change, or
/// at the next watch or restart (each starts from every key's latest value).
pub(crate) async fn follow<O, W, A, F>(what: &'static str, open: O, apply: A)
where
    O: Fn() -> W,
    W: Future<Output = Result<kv::Watch, ClusterError>>,
    A: Fn(kv::Entry) -> F,
    F: Future<Output = Result<(), DeployError>>,
{
    loop {
        match open().await {
            Ok(mut changes) => {
                while let Some(entry) = changes.next().await {
                    let entry = match entry {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::warn!(error = %e, "watching the cluster's {what} stopped; watching again");
                            break;
                        }
                    };
                    let key = entry.key.clone();
                    if let Err(e) = apply(entry).await {
                        tracing::error!(key, error = %e, "applying a change to the cluster's {what} failed");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot watch the cluster's {what} yet"),
        }
        tokio::time::sleep(REWATCH).await;
    }
}
