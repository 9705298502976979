//! The engine: built once per host. Every wasmtime setting Wisp uses is set
//! here, with the reason next to it.
//!
//! Also the per-version lifetime: compiling an artifact, (de)serializing the
//! compiled code, and checking a component's imports and exports before it is
//! accepted.

use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, InstancePre, Module,
    PoolingAllocationConfig, Precompiled,
};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::capabilities::event_bindings::EventsPre;
use crate::cgi::CgiState;
use crate::config::HostConfig;
use crate::error::DeployError;
use crate::function::compiled::CodeFile;
use crate::invoke::InvocationState;

/// How often the epoch advances. Deadlines are checked, and running guests
/// yield to the executor, once per tick: small enough for accurate
/// timeouts, large enough that the ticker costs nothing measurable.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The export every HTTP function must have.
pub(crate) const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";
/// Prefix of Wisp's event-handler export's name (any 0.1.x).
pub(crate) const EVENT_HANDLER: &str = "wisp:function/event-handler@0.1";

/// Which instance allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocatorKind {
    /// Pooling allocator, slots kept resident between instances.
    Pooling {
        /// Whether dirty pages are found with `PAGEMAP_SCAN` (Linux ≥ 6.7).
        pagemap_scan: bool,
    },
    /// Plain mmap per instance (fallback, or asked for).
    OnDemand,
}

/// The host's engine, linker and epoch ticker.
pub(crate) struct WispEngine {
    pub engine: Engine,
    pub linker: Linker<InvocationState>,
    /// The core-module linker for preview-1 (CGI) modules: WASI preview 1
    /// only.
    pub cgi_linker: wasmtime::Linker<CgiState>,
    pub allocator: AllocatorKind,
    /// Identifies compiled code this engine can load: the key under which
    /// compiled code is stored (part of its file name).
    pub compat_key: String,
}

/// Settings of the pooling allocator, derived from the host configuration.
fn pooling_config(cfg: &HostConfig) -> PoolingAllocationConfig {
    let instances = cfg.max_in_flight;
    let mut p = PoolingAllocationConfig::new();
    // One component instance per in-flight invocation; the host-wide
    // in-flight bound (a semaphore) keeps the pool from running dry.
    p.total_component_instances(instances);
    // A component is several core instances (the guest, WASI adapters,
    // shims), with a few memories and tables: size the pools for that.
    p.total_core_instances(instances.saturating_mul(8));
    p.total_memories(instances.saturating_mul(2));
    p.total_tables(instances.saturating_mul(4));
    p.total_stacks(instances);
    p.max_memory_size(cfg.max_memory_bytes as usize);
    // Language runtimes (CPython, SpiderMonkey) have large function tables
    // and instance metadata; the defaults (20k elements, 1 MiB) are too small.
    p.table_elements(100_000);
    p.max_core_instance_size(4 << 20);
    p.max_component_instance_size(4 << 20);
    p.max_tables_per_module(4);
    p.max_memories_per_module(2);
    // Keep the first pages of each slot resident between instances instead
    // of returning them to the kernel: with madvise on every teardown each
    // request paid page faults and cross-CPU TLB shootdowns (PERF-NOTES.md).
    p.linear_memory_keep_resident(1 << 20);
    p.table_keep_resident(64 << 10);
    p.async_stack_keep_resident(1 << 20);
    // Reset only the pages a guest dirtied. Without it a large keep-resident
    // region is rewritten whole on every reset, which is worse than none.
    p.pagemap_scan(Enabled::Auto);
    p
}

fn base_config(cfg: &HostConfig) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    // Deadlines: one ticker thread advances the epoch; each store checks it.
    c.epoch_interruption(true);
    // Instantiate linear memories from copy-on-write images of the data
    // segments instead of copying them on every instance.
    c.memory_init_cow(true);
    // WASI 0.3 (component-model async) is not served yet. Leaving concurrency
    // support off saves ~4 µs per request (PERF-NOTES.md); turning it on is
    // the switch for WASI 0.3 guests.
    c.concurrency_support(false);
    // Compiled code is cached in the store by us; wasmtime's own file cache
    // stays off.
    c.parallel_compilation(true);
    let _ = cfg;
    c
}

impl WispEngine {
    /// Builds the engine (pooling, falling back to on-demand allocation when
    /// the address space cannot be reserved) and the linker.
    pub fn new(cfg: &HostConfig) -> anyhow::Result<WispEngine> {
        let (engine, allocator) = if cfg.pooling {
            let mut c = base_config(cfg);
            let pooling = pooling_config(cfg);
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
            match Engine::new(&c) {
                Ok(engine) => {
                    let pagemap_scan = PoolingAllocationConfig::is_pagemap_scan_available();
                    if !pagemap_scan {
                        tracing::warn!(
                            "PAGEMAP_SCAN is not available (Linux < 6.7?): instance slots are reset \
                             without it, at a higher cost per request"
                        );
                    }
                    (engine, AllocatorKind::Pooling { pagemap_scan })
                }
                Err(e) => {
                    tracing::warn!(
                        error = %format!("{e:#}"),
                        "could not reserve the pooling allocator's address space; falling back to \
                         on-demand instance allocation (slower instantiation)"
                    );
                    (Engine::new(&base_config(cfg))?, AllocatorKind::OnDemand)
                }
            }
        } else {
            (Engine::new(&base_config(cfg))?, AllocatorKind::OnDemand)
        };

        let mut linker = Linker::new(&engine);
        // The whole WASI 0.2 set (cli, clocks, filesystem, io, random,
        // sockets) so components from any toolchain instantiate; what they
        // may *use* is decided per invocation by the WASI context, which
        // grants nothing beyond the function's environment. The linker
        // matches imports at other 0.2.x patch versions by semver.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        // Wisp's own capabilities (key-value, config, log lines).
        crate::capabilities::add_to_linker(&mut linker)?;
        let cgi_linker = crate::cgi::linker(&engine)?;

        let compat_key = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("{:016x}", h.finish())
        };
        start_epoch_ticker(&engine);
        Ok(WispEngine {
            engine,
            linker,
            cgi_linker,
            allocator,
            compat_key,
        })
    }

    /// Compiles a component, or a core module (a preview-1 CGI function),
    /// whichever `wasm` is (blocking: run it on a blocking thread), and
    /// records the compile metrics.
    pub fn compile(&self, wasm: &[u8]) -> Result<Compiled, DeployError> {
        let start = Instant::now();
        let compiled = if wasmparser::Parser::is_core_wasm(wasm) {
            Module::new(&self.engine, wasm).map(Compiled::Module)
        } else {
            Component::new(&self.engine, wasm).map(Compiled::Component)
        }
        .map_err(|e| DeployError::InvalidWasm(format!("{e:#}")))?;
        crate::metrics::compiled(start.elapsed());
        Ok(compiled)
    }

    /// Maps compiled code from its file in the store (a component or a
    /// module: the file's header says which). Code pages are shared with the
    /// page cache and loaded as they are touched, not copied into the heap.
    pub fn load(&self, code: &CodeFile) -> anyhow::Result<Compiled> {
        // The open file the store verified, not whatever has its name now.
        let path = code.path();
        let path = path.as_path();
        // SAFETY: the store hands out only a file whose contents match the
        // sha256 it recorded (in the store) when it wrote the output of
        // `serialize` of this host there (an engine with the same
        // compatibility key), so this is code this host compiled, never a
        // file planted in the data directory; wasmtime still checks the
        // header and engine compatibility. The store never changes such a
        // file in place (it writes a new one and renames it over), so the
        // mapping stays valid for as long as the code is used.
        #[allow(unsafe_code)]
        let compiled = (|| -> anyhow::Result<Compiled> {
            Ok(match Engine::detect_precompiled_file(path)? {
                Some(Precompiled::Module) => {
                    Compiled::Module(unsafe { Module::deserialize_file(&self.engine, path) }?)
                }
                Some(Precompiled::Component) => {
                    Compiled::Component(unsafe { Component::deserialize_file(&self.engine, path) }?)
                }
                None => anyhow::bail!("not compiled code"),
            })
        })();
        compiled.with_context(|| format!("loading {}", code.name().display()))
    }

    /// Checks exports and imports and pre-instantiates.
    pub fn prepare(&self, compiled: &Compiled) -> Result<Prepared, DeployError> {
        match compiled {
            Compiled::Component(c) => self.prepare_component(c).map(Prepared::Component),
            Compiled::Module(m) => crate::cgi::prepare(&self.cgi_linker, m).map(Prepared::Module),
        }
    }

    fn prepare_component(&self, component: &Component) -> Result<ComponentPre, DeployError> {
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let exports_http = exports.iter().any(|n| n.starts_with(INCOMING_HANDLER));
        let exports_events = exports.iter().any(|n| n.starts_with(EVENT_HANDLER));
        if !exports_http && !exports_events {
            return Err(DeployError::MissingExport(format!(
                "the component does not export wasi:http/incoming-handler@0.2.x (the wasi:http/proxy \
                 world) nor wisp:function/event-handler@0.1.x; it exports: {}",
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            )));
        }
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            let missing = self.unsatisfied_imports(component);
            if missing.is_empty() {
                DeployError::UnsatisfiedImports(format!("{e:#}"))
            } else {
                DeployError::UnsatisfiedImports(format!(
                    "the component imports what this host does not provide: {}",
                    missing.join(", ")
                ))
            }
        })?;
        if let Some(name) = exports.iter().find(|n| n.starts_with(INCOMING_HANDLER)) {
            check_http_handler_type(&pre, name)?;
        }
        let http = exports_http
            .then(|| ProxyPre::new(pre.clone()))
            .transpose()
            .map_err(|e| DeployError::MissingExport(format!("{e:#}")))?;
        let events = exports_events
            .then(|| EventsPre::new(pre))
            .transpose()
            .map_err(|e| DeployError::MissingExport(format!("{e:#}")))?;
        Ok(ComponentPre { http, events })
    }

    /// Names of the component's imports the linker cannot satisfy, found by
    /// trying each import alone.
    fn unsatisfied_imports(&self, component: &Component) -> Vec<String> {
        let ty = component.component_type();
        let mut missing = Vec::new();
        for (name, _) in ty.imports(&self.engine) {
            if !provided_interface(name) {
                missing.push(name.to_string());
            }
        }
        missing
    }
}

/// Checks the type of the exported `handle`. `ProxyPre::new` only looks the
/// export up by name; its type is checked when an instance is loaded, so a
/// `handle` of another type was accepted at deploy and then failed every
/// request (found by the `upload` fuzz target's seeds). The same check as
/// the bindings' own, done once here.
fn check_http_handler_type(
    pre: &wasmtime::component::InstancePre<InvocationState>,
    export: &str,
) -> Result<(), DeployError> {
    use wasmtime::component::Resource;
    use wasmtime::component::types::ComponentItem;
    use wasmtime_wasi_http::p2::bindings::http::types::{IncomingRequest, ResponseOutparam};

    let component = pre.component();
    let handle = component
        .get_export_index(None, export)
        .and_then(|iface| component.get_export(Some(&iface), "handle"));
    let checked = match handle {
        Some((ComponentItem::ComponentFunc(f), _)) => f
            .typecheck::<(Resource<IncomingRequest>, Resource<ResponseOutparam>), ()>(
                &pre.instance_type(),
            ),
        Some(_) => Err(wasmtime::format_err!("`handle` is not a function")),
        None => Err(wasmtime::format_err!("it has no `handle` function")),
    };
    checked.map_err(|e| {
        DeployError::MissingExport(format!(
            "the component's wasi:http/incoming-handler export does not match wasi:http 0.2 \
             (handle: func(request: incoming-request, response-out: response-outparam)): {e:#}"
        ))
    })
}

/// Whether `name` (`pkg:ns/iface@version`) is among the interfaces linked:
/// the WASI 0.2 set and wasi:http 0.2 types and outgoing-handler.
fn provided_interface(name: &str) -> bool {
    let (path, version) = name.split_once('@').unwrap_or((name, ""));
    // Wisp's own capabilities (sdk/wit), at this package's 0.1.x.
    if version.starts_with("0.1.")
        && matches!(
            path,
            "wisp:function/kv"
                | "wisp:function/config"
                | "wisp:function/log"
                | "wisp:function/topics"
        )
    {
        return true;
    }
    if !version.starts_with("0.2.") {
        return false;
    }
    matches!(
        path.split_once('/').map(|(pkg, _)| pkg),
        Some(
            "wasi:cli"
                | "wasi:clocks"
                | "wasi:filesystem"
                | "wasi:io"
                | "wasi:random"
                | "wasi:sockets"
        )
    ) || matches!(path, "wasi:http/types" | "wasi:http/outgoing-handler")
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on one thread, for as
/// long as the engine lives.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wisp-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Compiled code of either kind of function.
pub(crate) enum Compiled {
    /// A component (`wasi:http/incoming-handler` and/or
    /// `wisp:function/event-handler`).
    Component(Component),
    /// A preview-1 core module, run CGI-style.
    Module(Module),
}

impl Compiled {
    /// The compiled code, for the store.
    pub fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Compiled::Component(c) => c.serialize(),
            Compiled::Module(m) => m.serialize(),
        }
    }
}

/// A component's pre-instantiation with the handlers it exports (at least
/// one of them).
#[derive(Clone)]
pub(crate) struct ComponentPre {
    /// `wasi:http/incoming-handler`: HTTP requests.
    pub http: Option<ProxyPre<InvocationState>>,
    /// `wisp:function/event-handler`: events, as typed calls.
    pub events: Option<EventsPre<InvocationState>>,
}

/// A function ready to serve: its pre-instantiation, built once per
/// deployed version. Cheap to clone.
#[derive(Clone)]
pub(crate) enum Prepared {
    /// A component, called through `wasi:http/incoming-handler` and/or
    /// `wisp:function/event-handler`.
    Component(ComponentPre),
    /// A preview-1 module, run CGI-style (`cgi`).
    Module(InstancePre<CgiState>),
}

impl WispEngine {
    /// Compile + serialize + prepare, for deploy. Blocking.
    pub fn compile_new(&self, wasm: &[u8]) -> Result<(Prepared, Vec<u8>), DeployError> {
        let compiled = self.compile(wasm)?;
        let prepared = self.prepare(&compiled)?;
        let serialized = compiled
            .serialize()
            .map_err(|e| DeployError::Internal(format!("serializing compiled code: {e:#}")))?;
        Ok((prepared, serialized))
    }
}

/// Returns the heap memory freed so far to the system (the default of
/// [`HostConfig::release_memory`](crate::HostConfig)). glibc keeps what the
/// compiler freed in its arenas, so a deploy that compiled would otherwise
/// leave tens of MiB resident for the life of the process (an edge device's
/// budget). Cheap enough to call after each deploy and after start-up.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim has no preconditions; it only gives free pages of
    // the allocator's arenas back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::provided_interface;

    #[test]
    fn knows_the_wasi_set() {
        assert!(provided_interface("wasi:cli/environment@0.2.0"));
        assert!(provided_interface("wasi:io/streams@0.2.6"));
        assert!(provided_interface("wasi:http/types@0.2.3"));
        assert!(!provided_interface("wasi:http/types@0.3.0"));
        assert!(!provided_interface("acme:unknown/frobnicate@1.0.0"));
        assert!(!provided_interface("wasi:keyvalue/store@0.2.0-draft"));
    }

    /// Seeds of the `upload` fuzz target (tests/fuzz/seeds).
    const HTTP_COMPONENT: &[u8] = include_bytes!("../../tests/fuzz/corpus/upload/component-http");
    const MISTYPED_HANDLER: &[u8] =
        include_bytes!("../../tests/fuzz/corpus/upload/component-mistyped-handler");

    fn engine() -> super::WispEngine {
        let config = crate::HostConfig {
            pooling: false,
            ..crate::HostConfig::default()
        };
        super::WispEngine::new(&config).unwrap()
    }

    #[test]
    fn refuses_an_http_handler_of_the_wrong_type() {
        let engine = engine();
        // `handle: func()` instead of func(incoming-request, response-outparam):
        // accepted before, then every request failed.
        let compiled = engine.compile(MISTYPED_HANDLER).unwrap();
        match engine.prepare(&compiled) {
            Err(crate::DeployError::MissingExport(m)) => {
                assert!(m.contains("incoming-handler"), "{m}");
                assert!(m.contains("handle"), "{m}");
            }
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("a mistyped handler was accepted"),
        }
        // The right type passes.
        let compiled = engine.compile(HTTP_COMPONENT).unwrap();
        let prepared = engine
            .prepare(&compiled)
            .map_err(|e| e.to_string())
            .unwrap();
        assert!(matches!(
            prepared,
            super::Prepared::Component(super::ComponentPre { http: Some(_), .. })
        ));
    }
}
