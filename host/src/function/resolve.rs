//! What a new version's settings are: what the deploy asked for, else what
//! the active version has, else the host's defaults. Pure: no store, no
//! wasm, no sockets; every inheritance rule has a test below.

use std::collections::{BTreeMap, HashSet};

use crate::config::{LimitOverrides, Limits, Reuse};
use crate::error::DeployError;
use crate::function::records::VersionRecord;
use crate::function::wire::{DeployOptions, Setting};

/// The settings of a version about to be deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Routes, deduplicated in the order given.
    pub routes: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Outbound allow-list entries, deduplicated in the order given.
    pub allow_outbound: Vec<String>,
    /// Limits (not yet checked against the host's maxima).
    pub limits: Limits,
    /// Whether plain settings are environment variables too.
    pub config_env: bool,
    /// Whether a request may pin a version (`wisp-version`).
    pub version_pinning: bool,
    /// Who may invoke it on the data plane.
    pub auth: crate::auth::FunctionAuth,
    /// A preview-1 module's static directory.
    pub static_dir: Option<String>,
    /// CORS answered by the host.
    pub cors: Option<crate::gateway::cors::Cors>,
    /// Hosts the routes serve (empty: any).
    pub hosts: Vec<String>,
}

/// The new version's settings. `previous` is the active version (none for
/// a new function), `defaults` the host's default limits, `is_module`
/// whether the upload is a preview-1 module (only those have a static
/// directory):
///
/// - routes, environment and allow-list: the deploy's if it gives any,
///   else the active version's; a new function's routes are `/NAME/*`;
/// - each limit: the deploy's override, else the active version's, else the
///   default;
/// - `config_env`: the deploy's, else the active version's, else off;
/// - the static directory: set, removed ([`Setting::Clear`]) or inherited,
///   and dropped for a component.
pub(crate) fn resolve_version(
    name: &str,
    options: &DeployOptions,
    previous: Option<&VersionRecord>,
    defaults: Limits,
    is_module: bool,
) -> Result<Resolved, DeployError> {
    if !is_module && matches!(&options.static_dir, Setting::Set(d) if !d.is_empty()) {
        return Err(DeployError::InvalidArgument(
            "static_dir is for preview-1 modules (CGI); this upload is a component".into(),
        ));
    }
    let env = parse_env(&options.env)?;
    let routes = if !options.routes.is_empty() {
        dedup(&options.routes)
    } else if let Some(p) = previous {
        p.routes.clone()
    } else {
        vec![format!("/{name}/*")]
    };
    let env = match (env.is_empty(), previous) {
        (false, _) => env,
        (true, Some(p)) => p.env.clone(),
        (true, None) => BTreeMap::new(),
    };
    let allow_outbound = if !options.allow_outbound.is_empty() {
        dedup(&options.allow_outbound)
    } else {
        previous
            .map(|p| p.allow_outbound.clone())
            .unwrap_or_default()
    };
    let limits = LimitOverrides {
        timeout_ms: options.timeout_ms,
        memory_bytes: options.memory_bytes,
        max_body_bytes: options.max_body_bytes,
        kv_max_key_bytes: options.kv_max_key_bytes,
        kv_max_value_bytes: options.kv_max_value_bytes,
        kv_max_total_bytes: options.kv_max_total_bytes,
        concurrency: options.concurrency,
        queue: options.queue,
        queue_timeout_ms: options.queue_timeout_ms,
    }
    .apply(previous.map_or(defaults, |p| p.limits));
    let limits = crate::invocation::rate::resolve(options.rate_limit.as_deref(), limits)?;
    let config_env = options
        .config_env
        .or(previous.map(|p| p.config_env))
        .unwrap_or(false);
    let version_pinning = options
        .version_pinning
        .or(previous.map(|p| p.version_pinning))
        .unwrap_or(false);
    let auth = match options.auth.as_deref() {
        Some(a) => crate::auth::FunctionAuth::parse(a).map_err(DeployError::InvalidArgument)?,
        None => previous.map(|p| p.auth).unwrap_or_default(),
    };
    let static_dir = match &options.static_dir {
        Setting::Set(dir) if !dir.is_empty() => Some(dir.clone()),
        Setting::Set(_) | Setting::Clear => None,
        Setting::Inherit => previous.and_then(|p| p.static_dir.clone()),
    }
    .filter(|_| is_module);
    let cors = crate::gateway::cors::resolve(
        &options.cors_origin,
        options.cors_credentials,
        previous.and_then(|p| p.cors.as_ref()),
    )?;
    let hosts =
        crate::gateway::vhost::resolve(&options.hosts, previous.map_or(&[][..], |p| &p.hosts))?;
    Ok(Resolved {
        routes,
        env,
        allow_outbound,
        limits,
        config_env,
        version_pinning,
        auth,
        static_dir,
        cors,
        hosts,
    })
}

/// Most requests `--reuse` lets one instance serve.
const MAX_REUSE: u32 = 1_000_000;
/// Most requests one instance may serve at once.
const MAX_REUSE_CONCURRENCY: u32 = 1_000;
/// Longest an idle instance may be kept.
const MAX_IDLE_TIMEOUT_MS: u64 = 3_600_000;
/// How long an idle instance is kept unless the deploy says.
const DEFAULT_IDLE_TIMEOUT_MS: u64 = 10_000;

/// The new version's instance reuse: what the deploy asked for, each part
/// else the active version's (while the upload is a WASI 0.3 component);
/// `--reuse 1` turns it off. Reuse is refused for anything but a WASI 0.3
/// component, and so are zero counts and times.
pub(crate) fn resolve_reuse(
    options: &DeployOptions,
    previous: Option<&VersionRecord>,
    is_service: bool,
) -> Result<Option<Reuse>, DeployError> {
    let asked = options.reuse.is_some()
        || options.reuse_concurrency.is_some()
        || options.idle_timeout_ms.is_some();
    if asked && !is_service {
        return Err(DeployError::InvalidArgument(
            "reuse, reuse_concurrency and idle_timeout are for WASI 0.3 components (exporting \
             wasi:http/handler@0.3); this upload is a WASI 0.2 component or a preview-1 module, \
             which always get a fresh instance per request"
                .into(),
        ));
    }
    if !is_service {
        return Ok(None);
    }
    let inherited = previous.and_then(|p| p.reuse);
    let (min, max) = match options.reuse.as_deref() {
        Some(text) => parse_reuse(text)?,
        None => match inherited {
            Some(r) => (r.min, r.max),
            None => (1, 1),
        },
    };
    if let Some(0) = options.reuse_concurrency {
        return Err(DeployError::InvalidArgument(
            "reuse_concurrency must be at least 1".into(),
        ));
    }
    if let Some(c) = options.reuse_concurrency
        && c > MAX_REUSE_CONCURRENCY
    {
        return Err(DeployError::InvalidArgument(format!(
            "reuse_concurrency is {c}; the most is {MAX_REUSE_CONCURRENCY}"
        )));
    }
    match options.idle_timeout_ms {
        Some(0) => {
            return Err(DeployError::InvalidArgument(
                "idle_timeout must be more than 0".into(),
            ));
        }
        Some(ms) if ms > MAX_IDLE_TIMEOUT_MS => {
            return Err(DeployError::InvalidArgument(format!(
                "idle_timeout is {ms} ms; the most is {MAX_IDLE_TIMEOUT_MS} ms (1 hour)"
            )));
        }
        _ => {}
    }
    if max <= 1 {
        if options.reuse.is_none()
            && (options.reuse_concurrency.is_some() || options.idle_timeout_ms.is_some())
        {
            return Err(DeployError::InvalidArgument(
                "reuse_concurrency and idle_timeout need reuse (--reuse N): without it every \
                 request gets a fresh instance"
                    .into(),
            ));
        }
        return Ok(None);
    }
    Ok(Some(Reuse {
        min,
        max,
        concurrency: options
            .reuse_concurrency
            .or(inherited.map(|r| r.concurrency))
            .unwrap_or(1),
        idle_timeout_ms: options
            .idle_timeout_ms
            .or(inherited.map(|r| r.idle_timeout_ms))
            .unwrap_or(DEFAULT_IDLE_TIMEOUT_MS),
    }))
}

/// `N` or `A..B` (A ≤ B), each at least 1.
fn parse_reuse(text: &str) -> Result<(u32, u32), DeployError> {
    let bad = |why: &str| {
        DeployError::InvalidArgument(format!(
            "reuse {text:?}: {why} (give a count of requests per instance, N, or a range A..B \
             with 1 <= A <= B <= {MAX_REUSE})"
        ))
    };
    let count = |part: &str| -> Result<u32, DeployError> {
        let n: u32 = part.trim().parse().map_err(|_| bad("not a whole number"))?;
        if n == 0 {
            return Err(bad("0 requests per instance"));
        }
        if n > MAX_REUSE {
            return Err(bad("too many"));
        }
        Ok(n)
    };
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (count(a)?, count(b)?);
            if a > b {
                return Err(bad("the range is empty"));
            }
            Ok((a, b))
        }
        None => {
            let n = count(text)?;
            Ok((n, n))
        }
    }
}

impl Resolved {
    /// For a component that exports only the event handler: it serves no
    /// HTTP, so it takes no routes (and inherits none); asking for some is
    /// an error.
    pub(crate) fn without_routes(
        mut self,
        name: &str,
        asked: bool,
    ) -> Result<Resolved, DeployError> {
        if asked {
            return Err(DeployError::InvalidRoute(format!(
                "function {name:?} exports only wisp:function/event-handler (no \
                 wasi:http/incoming-handler), so it cannot have HTTP routes; deploy it without \
                 --route and subscribe it to topics"
            )));
        }
        self.routes.clear();
        Ok(self)
    }
}

fn dedup(v: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    v.iter().filter(|r| seen.insert(*r)).cloned().collect()
}

/// `KEY=VALUE` pairs; a later pair of the same key wins.
fn parse_env(pairs: &[String]) -> Result<BTreeMap<String, String>, DeployError> {
    let mut env = BTreeMap::new();
    for p in pairs {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            DeployError::InvalidArgument(format!("environment variable {p:?} is not KEY=VALUE"))
        })?;
        if k.is_empty() || k.contains('\0') || v.contains('\0') {
            return Err(DeployError::InvalidArgument(format!(
                "environment variable {p:?} has an empty name or a NUL byte"
            )));
        }
        env.insert(k.to_string(), v.to_string());
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_is_for_wasi_0_3_components_and_inherited_part_by_part() {
        let asked = |reuse: Option<&str>, c: Option<u32>, idle: Option<u64>| DeployOptions {
            reuse: reuse.map(str::to_string),
            reuse_concurrency: c,
            idle_timeout_ms: idle,
            ..DeployOptions::default()
        };
        // Default: none.
        assert_eq!(
            resolve_reuse(&asked(None, None, None), None, true).unwrap(),
            None
        );
        let r = resolve_reuse(&asked(Some("1000"), Some(16), None), None, true)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.min, r.max, r.concurrency, r.idle_timeout_ms),
            (1000, 1000, 16, 10_000)
        );
        let r = resolve_reuse(&asked(Some("5..50"), None, Some(500)), None, true)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.min, r.max, r.concurrency, r.idle_timeout_ms),
            (5, 50, 1, 500)
        );
        // Inherited part by part; `1` turns it off.
        let mut prev = previous();
        prev.reuse = Some(r);
        let kept = resolve_reuse(&asked(None, Some(4), None), Some(&prev), true)
            .unwrap()
            .unwrap();
        assert_eq!(
            (kept.min, kept.max, kept.concurrency, kept.idle_timeout_ms),
            (5, 50, 4, 500)
        );
        assert_eq!(
            resolve_reuse(&asked(Some("1"), None, None), Some(&prev), true).unwrap(),
            None
        );
        // A 0.2 component or a module: refused when asked, dropped when inherited.
        for (reuse, c, idle) in [
            (Some("10"), None, None),
            (None, Some(2), None),
            (None, None, Some(9)),
        ] {
            let e = resolve_reuse(&asked(reuse, c, idle), None, false).unwrap_err();
            assert!(e.to_string().contains("WASI 0.3"), "{e}");
        }
        assert_eq!(
            resolve_reuse(&asked(None, None, None), Some(&prev), false).unwrap(),
            None
        );
        // Zero, backwards, unparsable, too large.
        for bad in ["0", "0..5", "9..3", "ten", "-1", "1..", "2000000"] {
            let e = resolve_reuse(&asked(Some(bad), None, None), None, true).unwrap_err();
            assert!(e.to_string().contains("reuse"), "{bad}: {e}");
        }
        assert!(resolve_reuse(&asked(Some("10"), Some(0), None), None, true).is_err());
        assert!(resolve_reuse(&asked(Some("10"), None, Some(0)), None, true).is_err());
        // Concurrency or idle time alone, without reuse.
        let e = resolve_reuse(&asked(None, Some(2), None), None, true).unwrap_err();
        assert!(e.to_string().contains("need reuse"), "{e}");
    }

    fn previous() -> VersionRecord {
        VersionRecord {
            version: 3,
            sha256: "ab".repeat(32),
            size_bytes: 10,
            created_at_ms: 0,
            routes: vec!["/old".into()],
            env: BTreeMap::from([("A".into(), "1".into())]),
            limits: Limits {
                timeout_ms: 5_000,
                ..Limits::default()
            },
            allow_outbound: vec!["https://api.example.com".into()],
            config_env: true,
            version_pinning: false,
            auth: Default::default(),
            static_dir: Some("site".into()),
            reuse: None,
            precompiled: None,
            cors: None,
            hosts: Vec::new(),
        }
    }

    fn resolve(options: &DeployOptions, previous: Option<&VersionRecord>) -> Resolved {
        resolve_version("f", options, previous, Limits::default(), true).unwrap()
    }

    #[test]
    fn a_new_function_takes_the_defaults() {
        let r = resolve(&DeployOptions::default(), None);
        assert_eq!(r.routes, vec!["/f/*"]);
        assert!(r.env.is_empty());
        assert!(r.allow_outbound.is_empty());
        assert_eq!(r.limits, Limits::default());
        assert!(!r.config_env);
        assert_eq!(r.static_dir, None);
    }

    #[test]
    fn an_empty_deploy_inherits_everything() {
        let p = previous();
        let r = resolve(&DeployOptions::default(), Some(&p));
        assert_eq!(r.routes, p.routes);
        assert_eq!(r.env, p.env);
        assert_eq!(r.allow_outbound, p.allow_outbound);
        assert_eq!(r.limits, p.limits);
        assert!(r.config_env);
        assert_eq!(r.static_dir.as_deref(), Some("site"));
    }

    #[test]
    fn what_a_deploy_gives_replaces_the_whole_setting() {
        let p = previous();
        let o = DeployOptions {
            routes: vec!["/a".into(), "/b/*".into(), "/a".into()],
            env: vec!["B=2".into(), "B=3".into()],
            allow_outbound: vec!["x.example.com".into()],
            config_env: Some(false),
            ..DeployOptions::default()
        };
        let r = resolve(&o, Some(&p));
        assert_eq!(r.routes, vec!["/a", "/b/*"], "deduplicated, in order");
        assert_eq!(
            r.env,
            BTreeMap::from([("B".into(), "3".into())]),
            "not merged"
        );
        assert_eq!(r.allow_outbound, vec!["x.example.com"]);
        assert!(!r.config_env);
    }

    #[test]
    fn limits_are_overridden_one_by_one_on_the_active_versions() {
        let p = previous();
        let o = DeployOptions {
            memory_bytes: Some(1 << 20),
            ..DeployOptions::default()
        };
        let r = resolve(&o, Some(&p));
        assert_eq!(r.limits.memory_bytes, 1 << 20);
        assert_eq!(r.limits.timeout_ms, 5_000, "the active version's");
        let defaults = Limits {
            max_body_bytes: 7,
            ..Limits::default()
        };
        let r = resolve_version("f", &o, None, defaults, false).unwrap();
        assert_eq!(r.limits.max_body_bytes, 7, "a new function's default");
    }

    #[test]
    fn admission_settings_are_inherited_like_the_other_limits() {
        let mut p = previous();
        p.limits.concurrency = Some(2);
        p.limits.queue = 4;
        p.limits.queue_timeout_ms = 1500;
        let r = resolve(&DeployOptions::default(), Some(&p));
        assert_eq!(r.limits.concurrency, Some(2));
        assert_eq!(r.limits.queue, 4);
        assert_eq!(r.limits.queue_timeout_ms, 1500);
        let o = DeployOptions {
            queue: Some(0),
            ..DeployOptions::default()
        };
        let r = resolve(&o, Some(&p));
        assert_eq!(
            (
                r.limits.concurrency,
                r.limits.queue,
                r.limits.queue_timeout_ms
            ),
            (Some(2), 0, 1500)
        );
        // A new function: the host's share (no concurrency of its own), no
        // queue.
        let r = resolve(&DeployOptions::default(), None);
        assert_eq!((r.limits.concurrency, r.limits.queue), (None, 0));
    }

    #[test]
    fn the_static_directory_is_set_removed_or_inherited_and_only_for_modules() {
        let p = previous();
        let set = DeployOptions {
            static_dir: Setting::Set("other".into()),
            ..DeployOptions::default()
        };
        assert_eq!(resolve(&set, Some(&p)).static_dir.as_deref(), Some("other"));
        let clear = DeployOptions {
            static_dir: Setting::Clear,
            ..DeployOptions::default()
        };
        assert_eq!(resolve(&clear, Some(&p)).static_dir, None);
        // A component inherits none, and may not ask for one.
        let r = resolve_version(
            "f",
            &DeployOptions::default(),
            Some(&p),
            Limits::default(),
            false,
        );
        assert_eq!(r.unwrap().static_dir, None);
        let e = resolve_version("f", &set, Some(&p), Limits::default(), false).unwrap_err();
        assert!(e.to_string().contains("preview-1"), "{e}");
    }

    #[test]
    fn auth_is_set_or_inherited_and_checked() {
        use crate::auth::FunctionAuth;
        let key = |a: &str| DeployOptions {
            auth: Some(a.into()),
            ..DeployOptions::default()
        };
        assert_eq!(
            resolve(&DeployOptions::default(), None).auth,
            FunctionAuth::Public
        );
        let mut private = previous();
        private.auth = FunctionAuth::Key;
        assert_eq!(
            resolve(&DeployOptions::default(), Some(&private)).auth,
            FunctionAuth::Key
        );
        assert_eq!(
            resolve(&key("public"), Some(&private)).auth,
            FunctionAuth::Public
        );
        assert_eq!(resolve(&key("key"), None).auth, FunctionAuth::Key);
        let e = resolve_version("f", &key("foo"), None, Limits::default(), false).unwrap_err();
        assert!(e.to_string().contains("`public`"), "{e}");
    }

    #[test]
    fn bad_environment_pairs_are_refused() {
        for bad in ["nope", "=v", "A=\0"] {
            let o = DeployOptions {
                env: vec![bad.into()],
                ..DeployOptions::default()
            };
            let e = resolve_version("f", &o, None, Limits::default(), false).unwrap_err();
            assert!(matches!(e, DeployError::InvalidArgument(_)), "{bad}: {e}");
        }
        let o = DeployOptions {
            env: vec!["B=x=y".into()],
            ..DeployOptions::default()
        };
        assert_eq!(resolve(&o, None).env["B"], "x=y");
    }

    #[test]
    fn an_event_handler_only_component_takes_no_routes() {
        let r = resolve(&DeployOptions::default(), Some(&previous()));
        assert!(
            r.clone()
                .without_routes("f", false)
                .unwrap()
                .routes
                .is_empty()
        );
        assert!(r.without_routes("f", true).is_err());
    }
}
