//! Aliases: named pointers to versions of a function, each optionally
//! splitting its requests between versions by weight (`live` → 7, with 10%
//! to 8), with routes of their own. A new version can then be deployed
//! without taking traffic (the public routes are the alias's), tried with
//! `wisp-version` or `wisp-alias`, and given a growing share.
//!
//! Stored in the function's record (so deletes, rollbacks and cluster
//! copies carry them); served from the registry, where each alias holds
//! the versions it points to, loaded, sharing the function's admission.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::FunctionsCtx;
use super::load::{now_ms, parse_routes};
use super::records::FunctionRecord;
use super::registry::{Alias, Aliases, Deployed, Owner};
use crate::error::DeployError;
use crate::routes::validate_name;

/// Aliases one function may have.
pub const MAX_ALIASES: usize = 32;
/// Versions one alias may split its requests between.
pub const MAX_VERSIONS_PER_ALIAS: usize = 8;

/// An alias as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    /// The version that gets what the weights leave.
    pub version: u64,
    /// Other versions and their percentages of the requests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<u64, u8>,
    /// Routes that serve this alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Last change, ms since the epoch.
    pub updated_at_ms: u64,
}

impl AliasRecord {
    /// Each version with its percentage, the alias's own version first.
    pub fn shares(&self) -> Vec<(u64, u8)> {
        let others: u32 = self.weights.values().map(|&p| u32::from(p)).sum();
        let own = 100u32.saturating_sub(others) as u8;
        std::iter::once((self.version, own))
            .chain(self.weights.iter().map(|(&v, &p)| (v, p)))
            .collect()
    }

    /// The versions it points to.
    pub fn versions(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.version).chain(self.weights.keys().copied())
    }
}

/// What `PUT /v1/functions/{name}/aliases/{alias}` (`wisp alias set`)
/// asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasSpec {
    /// The version the alias points to; it gets the requests the weights
    /// leave.
    pub version: u64,
    /// Other versions and their whole percentages (1 to 99) of the
    /// requests, `{"8": 10}`; together under 100.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, u8>)]
    pub weights: BTreeMap<u64, u8>,
    /// Routes that serve the alias (`/exact`, `/prefix/*`); absent: the
    /// alias keeps the ones it has (none for a new alias); `[]` removes
    /// them.
    #[serde(default)]
    pub routes: Option<Vec<String>>,
}

/// An alias, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AliasInfo {
    /// Its name.
    pub name: String,
    /// The version it points to.
    pub version: u64,
    /// Every version it serves with its percentage, its own version first.
    pub shares: Vec<Share>,
    /// Routes that serve it.
    pub routes: Vec<String>,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

/// A version's share of an alias's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Share {
    /// The version.
    pub version: u64,
    /// Its percentage of the requests.
    pub percent: u8,
}

impl AliasInfo {
    pub(crate) fn new(name: &str, a: &AliasRecord) -> AliasInfo {
        AliasInfo {
            name: name.to_string(),
            version: a.version,
            shares: a
                .shares()
                .into_iter()
                .map(|(version, percent)| Share { version, percent })
                .collect(),
            routes: a.routes.clone(),
            updated_at: super::wire::rfc3339(a.updated_at_ms),
        }
    }
}

/// Checks `spec` against the function's record: the versions exist, the
/// weights add up, the routes parse. The previous alias of the name (if
/// any) supplies routes the spec leaves out.
fn checked(
    record: &FunctionRecord,
    alias: &str,
    spec: &AliasSpec,
    previous: Option<&AliasRecord>,
) -> Result<AliasRecord, DeployError> {
    let name = &record.name;
    validate_name(alias).map_err(|e| DeployError::InvalidName(format!("alias name: {e}")))?;
    let exists = |v: u64| {
        record.version(v).map(|_| ()).ok_or_else(|| {
            DeployError::VersionNotFound(format!("function {name:?} has no version {v}"))
        })
    };
    exists(spec.version)?;
    if spec.weights.len() + 1 > MAX_VERSIONS_PER_ALIAS {
        return Err(DeployError::InvalidArgument(format!(
            "an alias splits its requests between at most {MAX_VERSIONS_PER_ALIAS} versions"
        )));
    }
    let mut total = 0u32;
    for (&v, &percent) in &spec.weights {
        if v == spec.version {
            return Err(DeployError::InvalidArgument(format!(
                "version {v} is the alias's own version: it gets what the weights of the others \
                 leave; give weights for other versions only"
            )));
        }
        exists(v)?;
        if !(1..=99).contains(&percent) {
            return Err(DeployError::InvalidArgument(format!(
                "the weight of version {v} is {percent}%: a weight is a whole percentage from 1 \
                 to 99"
            )));
        }
        total += u32::from(percent);
    }
    if total >= 100 {
        return Err(DeployError::InvalidArgument(format!(
            "the weights add up to {total}%, leaving nothing to version {}: together they must \
             stay under 100%",
            spec.version
        )));
    }
    let routes = match &spec.routes {
        Some(r) => r.clone(),
        None => previous.map(|p| p.routes.clone()).unwrap_or_default(),
    };
    parse_routes(&routes)?;
    Ok(AliasRecord {
        version: spec.version,
        weights: spec.weights.clone(),
        routes,
        updated_at_ms: now_ms(),
    })
}

impl FunctionsCtx {
    /// Creates or changes an alias of `name`.
    pub(crate) async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        spec: AliasSpec,
    ) -> Result<AliasInfo, DeployError> {
        let _guard = self.inner.admin_lock.lock().await;
        let (record, revision) = self.current(name).await?;
        let mut record = record.ok_or_else(|| DeployError::FunctionNotFound(name.to_string()))?;
        let next = checked(&record, alias, &spec, record.aliases.get(alias))?;
        if !record.aliases.contains_key(alias) && record.aliases.len() >= MAX_ALIASES {
            return Err(DeployError::InvalidArgument(format!(
                "function {name:?} has {MAX_ALIASES} aliases already, the most it may have"
            )));
        }
        let routes = parse_routes(&next.routes)?;
        self.check_route_conflicts(Owner::Alias(name, alias), &routes, &record.active().hosts)?;
        record.aliases.insert(alias.to_string(), next.clone());
        self.store_aliases(record, revision).await?;
        tracing::info!(function = name, alias, version = next.version, "alias set");
        Ok(AliasInfo::new(alias, &next))
    }

    /// Removes an alias of `name`.
    pub(crate) async fn delete_alias(&self, name: &str, alias: &str) -> Result<(), DeployError> {
        let _guard = self.inner.admin_lock.lock().await;
        let (record, revision) = self.current(name).await?;
        let mut record = record.ok_or_else(|| DeployError::FunctionNotFound(name.to_string()))?;
        if record.aliases.remove(alias).is_none() {
            return Err(DeployError::AliasNotFound(format!(
                "function {name:?} has no alias {alias:?}"
            )));
        }
        self.store_aliases(record, revision).await?;
        tracing::info!(function = name, alias, "alias deleted");
        Ok(())
    }

    /// `name`'s aliases.
    pub(crate) fn aliases(&self, name: &str) -> Result<Vec<AliasInfo>, DeployError> {
        let record = self
            .inner
            .records
            .get(name)?
            .ok_or_else(|| DeployError::FunctionNotFound(name.to_string()))?;
        Ok(record
            .aliases
            .iter()
            .map(|(n, a)| AliasInfo::new(n, a))
            .collect())
    }

    /// Serves `record`'s aliases (loading the versions they point to
    /// first), then stores the record. The caller holds the admin lock.
    async fn store_aliases(
        &self,
        mut record: FunctionRecord,
        revision: Option<u64>,
    ) -> Result<(), DeployError> {
        record.updated_at_ms = now_ms();
        let this = self.clone();
        let rec = record.clone();
        let aliases = tokio::task::spawn_blocking(move || this.load_aliases(&rec))
            .await
            .map_err(|e| DeployError::Internal(format!("load task: {e}")))?
            .map_err(|e| DeployError::Internal(format!("{e:#}")))?;
        if let Some(cluster) = self.cluster() {
            cluster.put_function(&record, revision).await?;
        }
        self.inner.records.update(record.clone()).await?;
        let next = self
            .inner
            .registry
            .load()
            .with_aliases(&record.name, aliases);
        self.inner.registry.store(Arc::new(next));
        Ok(())
    }

    /// `record`'s aliases, ready to serve: the versions they point to
    /// taken from what is deployed when they are loaded already (the
    /// active version, another alias's), else loaded from their compiled
    /// code. Blocking.
    pub(crate) fn load_aliases(
        &self,
        record: &FunctionRecord,
    ) -> anyhow::Result<Option<Arc<Aliases>>> {
        if record.aliases.is_empty() {
            return Ok(None);
        }
        let registry = self.inner.registry.load();
        let active = registry.by_name.get(&record.name);
        let current = registry.aliases.get(&record.name);
        let mut versions: BTreeMap<u64, Arc<Deployed>> = BTreeMap::new();
        for v in record.aliases.values().flat_map(AliasRecord::versions) {
            if versions.contains_key(&v) {
                continue;
            }
            let loaded = match (active, current.and_then(|c| c.versions.get(&v))) {
                (Some(a), _) if a.version == v => a.clone(),
                (_, Some(d)) => d.clone(),
                _ => {
                    let vr = record
                        .version(v)
                        .ok_or_else(|| anyhow::anyhow!("alias to missing version {v}"))?;
                    let mut d = self.load_version(record, vr)?;
                    // One function, one set of slots, whichever version runs.
                    if let Some(a) = active {
                        d.admission = a.admission.clone();
                    }
                    Arc::new(d)
                }
            };
            versions.insert(v, loaded);
        }
        let by_name = record
            .aliases
            .iter()
            .map(|(name, a)| {
                let mut bound = 0u8;
                let choices = a
                    .shares()
                    .into_iter()
                    .filter(|&(_, p)| p > 0)
                    .map(|(v, p)| {
                        bound += p;
                        (bound, versions[&v].clone())
                    })
                    .collect();
                let alias = Alias {
                    function: record.name.clone(),
                    name: name.clone(),
                    choices,
                    routes: parse_routes(&a.routes)?,
                };
                Ok((name.clone(), Arc::new(alias)))
            })
            .collect::<Result<_, DeployError>>()?;
        Ok(Some(Arc::new(Aliases { by_name, versions })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::function::records::tests::record;

    fn spec(version: u64, weights: &[(u64, u8)]) -> AliasSpec {
        AliasSpec {
            version,
            weights: weights.iter().copied().collect(),
            routes: None,
        }
    }

    #[test]
    fn weights_must_leave_the_alias_version_a_share() {
        let r = record("f", &[(1, "a"), (2, "b"), (3, "c")]);
        let a = checked(&r, "live", &spec(1, &[(2, 10)]), None).unwrap();
        assert_eq!(a.shares(), [(1, 90), (2, 10)]);
        let a = checked(&r, "live", &spec(1, &[(2, 10), (3, 89)]), None).unwrap();
        assert_eq!(a.shares(), [(1, 1), (2, 10), (3, 89)]);
        for (bad, words) in [
            (spec(1, &[(2, 60), (3, 40)]), "add up to 100%"),
            (spec(1, &[(2, 0)]), "from 1 to 99"),
            (spec(1, &[(2, 100)]), "from 1 to 99"),
            (spec(1, &[(1, 10)]), "own version"),
        ] {
            let e = checked(&r, "live", &bad, None).unwrap_err().to_string();
            assert!(e.contains(words), "{e}");
        }
        let e = checked(&r, "live", &spec(9, &[]), None).unwrap_err();
        assert!(matches!(e, DeployError::VersionNotFound(_)), "{e}");
        let e = checked(&r, "live", &spec(1, &[(7, 5)]), None).unwrap_err();
        assert!(matches!(e, DeployError::VersionNotFound(_)), "{e}");
        let e = checked(&r, "Live!", &spec(1, &[]), None).unwrap_err();
        assert!(matches!(e, DeployError::InvalidName(_)), "{e}");
    }

    #[test]
    fn routes_are_kept_unless_given() {
        let r = record("f", &[(1, "a")]);
        let mut s = spec(1, &[]);
        s.routes = Some(vec!["/live/*".into()]);
        let first = checked(&r, "live", &s, None).unwrap();
        let kept = checked(&r, "live", &spec(1, &[]), Some(&first)).unwrap();
        assert_eq!(kept.routes, ["/live/*"]);
        s.routes = Some(vec![]);
        assert!(
            checked(&r, "live", &s, Some(&first))
                .unwrap()
                .routes
                .is_empty()
        );
        s.routes = Some(vec!["no-slash".into()]);
        assert!(checked(&r, "live", &s, None).is_err());
    }
}
