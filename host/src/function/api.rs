//! [`Functions`]: deploying and managing functions, and invoking them
//! directly, as the admin API and embedders do (`Host::functions`).

use axum::body::Body;
use axum::http::{Request, Response};

use std::sync::Arc;
use std::time::Instant;

use super::FunctionsCtx;
use crate::error::DeployError;
use crate::function::prepare::Prepared;
use crate::function::records::FunctionRecord;
use crate::function::registry::Deployed;
use crate::function::wire::{DeployOptions, FunctionInfo, FunctionSummary, VersionInfo};
use crate::metrics::series::{FunctionStats, HostStats, check_step, end_unix};

/// The functions of a host (`Host::functions`): deploy, roll back,
/// delete, read, invoke. Errors are [`DeployError`]s.
pub struct Functions<'a> {
    pub(crate) host: &'a FunctionsCtx,
}

impl Functions<'_> {
    /// Deploys `wasm` as a new version of `name` (created if new) and makes
    /// it active. Everything is checked before anything is stored; the new
    /// version is durable when this returns.
    pub async fn deploy(
        &self,
        name: &str,
        wasm: bytes::Bytes,
        options: DeployOptions,
    ) -> Result<FunctionInfo, DeployError> {
        self.host.deploy(name, wasm, options).await
    }

    /// Makes an earlier version active again (by default the newest one
    /// older than the active one), without recompiling.
    pub async fn rollback(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<FunctionInfo, DeployError> {
        self.host.rollback(name, version).await
    }

    /// Deletes a function, all its versions, its data, log and events,
    /// and the artifacts nothing else uses.
    /// A function with aliases is refused (409): see [`Self::delete_forced`].
    pub async fn delete(&self, name: &str) -> Result<(), DeployError> {
        self.host.delete(name, false).await
    }

    /// Deletes a function even if it has aliases.
    pub async fn delete_forced(&self, name: &str) -> Result<(), DeployError> {
        self.host.delete(name, true).await
    }

    /// Creates or changes an alias of function `name`.
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        spec: crate::function::aliases::AliasSpec,
    ) -> Result<crate::function::aliases::AliasInfo, DeployError> {
        self.host.set_alias(name, alias, spec).await
    }

    /// Removes an alias of function `name`.
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<(), DeployError> {
        self.host.delete_alias(name, alias).await
    }

    /// Function `name`'s aliases, by name.
    pub fn aliases(
        &self,
        name: &str,
    ) -> Result<Vec<crate::function::aliases::AliasInfo>, DeployError> {
        self.host.aliases(name)
    }

    /// A function's record.
    pub fn get(&self, name: &str) -> Result<FunctionInfo, DeployError> {
        self.host.function(name)
    }

    /// All functions, by name.
    pub fn list(&self) -> Result<Vec<FunctionSummary>, DeployError> {
        let registry = self.host.inner.registry.load();
        Ok(self
            .host
            .inner
            .records
            .all()?
            .iter()
            .map(|r| FunctionSummary {
                kind: registry
                    .by_name
                    .get(&r.name)
                    .map(|d| kind_of(&d.pre).to_string()),
                ..FunctionSummary::from(r)
            })
            .collect())
    }

    /// A function's versions, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, DeployError> {
        Ok(self.host.function(name)?.versions)
    }

    /// Function `name`'s last hour on this host, in steps of `step` seconds
    /// (default 10): invocations, 5xx answers and latency percentiles.
    pub fn stats(&self, name: &str, step: Option<u64>) -> Result<FunctionStats, DeployError> {
        let step = check_step(step.unwrap_or(10)).map_err(DeployError::InvalidArgument)?;
        self.deployed(name)?;
        let series = self
            .host
            .inner
            .series
            .get(name)
            .ok_or_else(|| DeployError::FunctionNotFound(name.to_string()))?;
        let now = Instant::now();
        Ok(FunctionStats {
            step_seconds: step,
            end_unix: end_unix(now),
            series: series.columns(name, now, step),
        })
    }

    /// The last hour of every function on this host that `include` keeps
    /// (those the caller may read), by name, in steps of `step` seconds
    /// (default 60).
    pub fn all_stats(
        &self,
        step: Option<u64>,
        include: impl Fn(&str) -> bool,
    ) -> Result<HostStats, DeployError> {
        let step = check_step(step.unwrap_or(60)).map_err(DeployError::InvalidArgument)?;
        let registry = self.host.inner.registry.load();
        let mut names: Vec<&str> = registry
            .by_name
            .keys()
            .map(String::as_str)
            .filter(|n| include(n))
            .collect();
        names.sort_unstable();
        let now = Instant::now();
        let functions = names
            .into_iter()
            .filter_map(|name| {
                let series = self.host.inner.series.get(name)?;
                Some(series.columns(name, now, step))
            })
            .collect();
        Ok(HostStats {
            step_seconds: step,
            end_unix: end_unix(now),
            functions,
        })
    }

    /// The active version of `name`, as requests find it.
    fn deployed(&self, name: &str) -> Result<Arc<Deployed>, DeployError> {
        self.host
            .inner
            .registry
            .load()
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| DeployError::FunctionNotFound(name.to_string()))
    }

    /// Invokes a function directly (no route lookup). The request's URI is
    /// the path and query the guest sees.
    pub async fn invoke(
        &self,
        name: &str,
        request: Request<Body>,
    ) -> Result<Response<Body>, DeployError> {
        let target = self.deployed(name)?;
        Ok(self.host.inner.invoker.invoke(target, request).await)
    }

    /// Instantiates the active version of `name` in a fresh store and drops
    /// it, without calling the handler: the per-request instantiation cost
    /// on its own, for benchmarks. Not part of the stable API.
    #[doc(hidden)]
    pub async fn instantiate_only(&self, name: &str) -> anyhow::Result<()> {
        let target = self.deployed(name)?;
        self.host.inner.invoker.instantiate_only(&target).await?;
        Ok(())
    }

    /// The admission check of `name`'s invocations on its own, for
    /// benchmarks: the function is looked up once, and each call of the
    /// returned closure admits one invocation (a slot, or a place in a
    /// queue) and lets it go at once, answering whether it was admitted.
    /// Not part of the stable API.
    #[doc(hidden)]
    pub fn admission_probe(
        &self,
        name: &str,
    ) -> Result<impl Fn() -> bool + Send + Sync + 'static, DeployError> {
        let target = self.deployed(name)?;
        let invoker = self.host.inner.invoker.clone();
        Ok(move || invoker.admit(&target).is_ok())
    }

    /// Number of distinct artifacts in the store (deduplicated by hash).
    pub fn stored_artifacts(&self) -> usize {
        self.host.inner.records.artifact_count()
    }
}

impl FunctionsCtx {
    /// A function's record.
    pub(crate) fn function(&self, name: &str) -> Result<FunctionInfo, DeployError> {
        self.inner
            .records
            .get(name)?
            .map(|r| self.info(&r))
            .ok_or_else(|| DeployError::FunctionNotFound(name.to_string()))
    }

    /// A function's record, with what its deployed version handles.
    pub(crate) fn info(&self, record: &FunctionRecord) -> FunctionInfo {
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
                Prepared::Service(_) => vec!["http".to_string()],
                Prepared::Module(_) => vec!["cgi".to_string()],
            };
            info.kind = Some(kind_of(&d.pre).to_string());
            info.engine = Some(self.inner.config.code_engine.name().to_string());
        }
        info.effective_concurrency = self.inner.config.concurrency_of(&record.active().limits);
        info
    }
}

/// What a loaded function is, as `wisp info` and the API name it.
fn kind_of(pre: &Prepared) -> &'static str {
    match pre {
        Prepared::Component(_) => "wasi-0.2-component",
        Prepared::Service(_) => "wasi-0.3-component",
        Prepared::Module(_) => "wasi-preview1-module",
    }
}
