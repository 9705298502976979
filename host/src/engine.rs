//! The engine: built once per host. Every wasmtime setting Wisp uses is set
//! here, with the reason next to it: the engine, the linkers (what guests may
//! import), the instance allocator, the epoch ticker. What is built per
//! deployed version (compiling, checking, pre-instantiating) is in
//! `function::prepare`.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::{CodeEngine, HostConfig};
use crate::error::DeployError;
use crate::invocation::InvocationState;
use crate::invocation::cgi::CgiState;

/// How often the epoch advances. Deadlines are checked, and running guests
/// yield to the executor, once per tick: small enough for accurate
/// timeouts, large enough that the ticker costs nothing measurable.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

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

/// The host's engine, linkers and epoch ticker.
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
    /// WASI 0.3 components' engine, built on first use ([`Self::services`]).
    #[cfg(feature = "p3")]
    services: std::sync::OnceLock<Result<ServiceEngine, String>>,
    /// What the WASI 0.3 engine is built from.
    pub(crate) config: HostConfig,
}

/// The engine of WASI 0.3 components (`wasi:http/handler@0.3`, the
/// `service` world): the same settings plus component-model async, which
/// needs concurrency support in every store. That costs each store ~4 µs
/// (PERF-NOTES.md), so WASI 0.2 components and preview-1 modules run on an
/// engine without it; and a host with no 0.3 function never builds this one
/// (its pool, its ticker thread).
#[cfg(feature = "p3")]
pub(crate) struct ServiceEngine {
    pub engine: Engine,
    /// WASI 0.3 and 0.2 (a 0.3 component may import either), `wasi:http`
    /// 0.3 and Wisp's capabilities.
    pub linker: Linker<InvocationState>,
}

/// A build without WASI 0.3 (the `p3` feature) never makes one.
#[cfg(not(feature = "p3"))]
pub(crate) struct ServiceEngine {
    pub never: crate::invocation::reuse::NoService,
}

#[cfg(not(feature = "p3"))]
impl ServiceEngine {
    pub fn engine(&self) -> &Engine {
        match self.never {}
    }
}

/// Why a build without WASI 0.3 refuses a WASI 0.3 component.
#[cfg(not(feature = "p3"))]
const NO_P3: &str = "the component uses WASI 0.3 (wasi:http 0.3, the service world), which this \
    build of Wisp leaves out (built without its `p3` feature, as the runtime-only edge build is): \
    deploy it to a build with WASI 0.3 (`--features runtime,p3`), or build it for WASI 0.2";

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
    let keep = usize::try_from(cfg.pool_keep_resident_bytes).unwrap_or(usize::MAX);
    p.linear_memory_keep_resident(keep);
    p.table_keep_resident(keep.min(64 << 10));
    p.async_stack_keep_resident(keep);
    // Reset only the pages a guest dirtied. Without it a large keep-resident
    // region is rewritten whole on every reset, which is worse than none.
    p.pagemap_scan(Enabled::Auto);
    p
}

/// Which of the host's engines: WASI 0.2 components and preview-1 modules,
/// or WASI 0.3 components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EngineKind {
    /// Without concurrency support (cheaper stores).
    Sync,
    /// With component-model async (WASI 0.3).
    Async,
}

fn base_config(cfg: &HostConfig, kind: EngineKind) -> anyhow::Result<Config> {
    let mut c = Config::new();
    if cfg.code_engine == CodeEngine::Pulley {
        // Pulley bytecode for this host's word size and byte order: run by
        // the interpreter compiled into wasmtime. Deadlines (epochs), memory
        // caps and the pooling allocator work as with machine code.
        let target = match (
            cfg!(target_pointer_width = "64"),
            cfg!(target_endian = "big"),
        ) {
            (true, false) => "pulley64",
            (true, true) => "pulley64be",
            (false, false) => "pulley32",
            (false, true) => "pulley32be",
        };
        c.target(target)?;
    }
    c.wasm_component_model(true);
    // Deadlines: one ticker thread advances the epoch; each store checks it.
    c.epoch_interruption(true);
    // Instantiate linear memories from copy-on-write images of the data
    // segments instead of copying them on every instance.
    c.memory_init_cow(true);
    // Concurrency support costs every store ~4 µs (PERF-NOTES.md): only the
    // engine of WASI 0.3 components, which need it, has it.
    match kind {
        EngineKind::Sync => {
            c.concurrency_support(false);
        }
        #[cfg(feature = "p3")]
        EngineKind::Async => {
            c.concurrency_support(true);
            c.wasm_component_model_async(true);
        }
        #[cfg(not(feature = "p3"))]
        EngineKind::Async => anyhow::bail!(NO_P3),
    }
    // Compiled code is cached in the store by us; wasmtime's own file cache
    // stays off.
    #[cfg(feature = "cranelift")]
    c.parallel_compilation(true);
    Ok(c)
}

impl WispEngine {
    /// Builds the engine (pooling, falling back to on-demand allocation when
    /// the address space cannot be reserved) and the linker.
    pub fn new(cfg: &HostConfig) -> anyhow::Result<WispEngine> {
        let (engine, allocator) = build_engine(cfg, EngineKind::Sync)?;
        let mut linker = Linker::new(&engine);
        // The whole WASI 0.2 set (cli, clocks, filesystem, io, random,
        // sockets) so components from any toolchain instantiate; what they
        // may *use* is decided per invocation by the WASI context, which
        // grants nothing beyond the function's environment. The linker
        // matches imports at other 0.2.x patch versions by semver.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        // Wisp's own capabilities (key-value, config, log lines).
        crate::invocation::add_capabilities_to_linker(&mut linker)?;
        let cgi_linker = crate::invocation::cgi::linker(&engine)?;

        // The key is part of compiled code's file names, which outlive the
        // process: std's DefaultHasher may change between Rust releases (a
        // rebuild would then recompile everything), SipHash-1-3 with fixed
        // keys does not.
        let compat_key = settings_key(&engine);
        start_epoch_ticker(&engine);
        Ok(WispEngine {
            engine,
            linker,
            cgi_linker,
            allocator,
            compat_key,
            #[cfg(feature = "p3")]
            services: std::sync::OnceLock::new(),
            config: cfg.clone(),
        })
    }

    /// The engine of WASI 0.3 components: none in a build without them.
    #[cfg(not(feature = "p3"))]
    pub fn services(&self) -> Result<&ServiceEngine, DeployError> {
        Err(DeployError::UnsatisfiedImports(NO_P3.to_string()))
    }

    /// The engine of WASI 0.3 components, built on the first call.
    #[cfg(feature = "p3")]
    pub fn services(&self) -> Result<&ServiceEngine, DeployError> {
        self.services
            .get_or_init(|| ServiceEngine::new(&self.config).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| DeployError::Internal(format!("building the WASI 0.3 engine: {e}")))
    }

    /// The key under which the WASI 0.3 engine's compiled code is stored:
    /// derived from [`Self::compat_key`] (the two engines differ by fixed
    /// settings only), so it is known without building that engine, for
    /// start-up's clean-up of other builds' code. wasmtime still checks
    /// compatibility when the code is loaded.
    pub fn services_key(&self) -> String {
        services_key_of(&self.compat_key)
    }
}

/// The key of compiled code an engine built from `config` can load.
#[cfg(feature = "cranelift")]
fn settings_key(engine: &Engine) -> String {
    let mut h = siphasher::sip::SipHasher13::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A runtime-only build has no compiler to ask: its key names the build
/// (Wisp's version, which pins wasmtime's) and the engine's target; the
/// code it stores is what it loaded, which wasmtime checked.
#[cfg(not(feature = "cranelift"))]
fn settings_key(engine: &Engine) -> String {
    let mut h = siphasher::sip::SipHasher13::new();
    (
        env!("CARGO_PKG_VERSION"),
        "runtime-only",
        engine.is_pulley(),
        std::env::consts::ARCH,
    )
        .hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The WASI 0.3 engine's key, from the other engine's (see
/// [`WispEngine::services_key`]).
fn services_key_of(compat_key: &str) -> String {
    let mut h = siphasher::sip::SipHasher13::new();
    (compat_key, "wasi-0.3").hash(&mut h);
    format!("{:016x}", h.finish())
}

/// This build's target triple, as a host without `--target` compiles for.
pub fn host_target() -> String {
    let env = if cfg!(target_env = "musl") {
        "musl"
    } else {
        "gnu"
    };
    format!(
        "{}-unknown-{}-{env}",
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

/// Compiles `wasm` ahead of time for a host with `cfg`'s engine settings
/// (`wisp compile`), for `target` (a triple; `None`: this machine, or
/// Pulley bytecode if `cfg` says so). Returns the header of the signed
/// artifact (kind, target, engine and the settings key such a host
/// checks; not yet signed) and the code.
#[cfg(feature = "cranelift")]
pub fn precompile(
    cfg: &HostConfig,
    target: Option<&str>,
    wasm: &[u8],
) -> anyhow::Result<(crate::function::signed::Header, Vec<u8>)> {
    crate::function::prepare::check_binary(wasm)?;
    let (kind_name, kind) = if wasmparser::Parser::is_core_wasm(wasm) {
        ("module", EngineKind::Sync)
    } else if crate::function::prepare::uses_wasi_p3(wasm) {
        ("service", EngineKind::Async)
    } else {
        ("component", EngineKind::Sync)
    };
    let config_for = |kind| -> anyhow::Result<Config> {
        let mut c = base_config(cfg, kind)?;
        if let Some(t) = target {
            c.target(t)
                .map_err(|e| anyhow::anyhow!("cannot compile for target {t:?}: {e:#}"))?;
        }
        Ok(c)
    };
    let sync = Engine::new(&config_for(EngineKind::Sync)?)
        .map_err(|e| anyhow::anyhow!("cannot compile for this target: {e:#}"))?;
    let sync_key = settings_key(&sync);
    let (engine, settings) = match kind {
        EngineKind::Sync => (sync, sync_key),
        EngineKind::Async => (
            Engine::new(&config_for(EngineKind::Async)?)?,
            services_key_of(&sync_key),
        ),
    };
    let code = if kind_name == "module" {
        engine.precompile_module(wasm)?
    } else {
        engine.precompile_component(wasm)?
    };
    let target = match (target, cfg.code_engine) {
        (Some(t), _) => t.to_string(),
        (None, CodeEngine::Pulley) => "pulley64".to_string(),
        (None, CodeEngine::Cranelift) => host_target(),
    };
    let header = crate::function::signed::Header {
        kind: kind_name.into(),
        target,
        engine: cfg.code_engine.name().into(),
        settings,
        source_sha256: crate::function::load::sha256_hex(wasm),
        code_sha256: String::new(),
        key_id: String::new(),
        signature: String::new(),
    };
    Ok((header, code))
}

#[cfg(feature = "p3")]
impl ServiceEngine {
    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn new(cfg: &HostConfig) -> anyhow::Result<ServiceEngine> {
        let (engine, _) = build_engine(cfg, EngineKind::Async)?;
        let mut linker = Linker::new(&engine);
        // Both WASI sets: 0.3 (cli, clocks, filesystem, random, sockets;
        // wasi:http types and client) and 0.2, which a 0.3 component may
        // still import. The WASI context grants the same as for 0.2.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        crate::invocation::add_capabilities_to_linker(&mut linker)?;
        start_epoch_ticker(&engine);
        tracing::info!("WASI 0.3 engine built");
        Ok(ServiceEngine { engine, linker })
    }
}

/// An engine of `kind`: pooling, falling back to on-demand allocation when
/// the address space cannot be reserved.
fn build_engine(cfg: &HostConfig, kind: EngineKind) -> anyhow::Result<(Engine, AllocatorKind)> {
    if !cfg.pooling {
        return on_demand(cfg, kind);
    }
    if let Some(cpu) = emulated_on() {
        // qemu-user grants the reservation, but keeps a record of every
        // reserved page: terabytes of it took qemu 7.2 tens of GiB. Said
        // once, for the first of the host's engines.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(
                cpu = %cpu,
                "this {} build runs emulated (the CPU is {cpu}: qemu-user?), where reserving the \
                 pooling allocator's address space costs real memory; falling back to on-demand \
                 instance allocation (slower instantiation)",
                std::env::consts::ARCH
            )
        });
        return on_demand(cfg, kind);
    }
    let mut c = base_config(cfg, kind)?;
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(cfg)));
    match Engine::new(&c) {
        Ok(engine) => {
            let pagemap_scan = PoolingAllocationConfig::is_pagemap_scan_available();
            if !pagemap_scan && kind == EngineKind::Sync {
                tracing::warn!(
                    "PAGEMAP_SCAN is not available (Linux < 6.7?): instance slots are reset \
                     without it, at a higher cost per request"
                );
            }
            Ok((engine, AllocatorKind::Pooling { pagemap_scan }))
        }
        Err(e) => {
            tracing::warn!(
                error = %format!("{e:#}"),
                "could not reserve the pooling allocator's address space; falling back to \
                 on-demand instance allocation (slower instantiation)"
            );
            on_demand(cfg, kind)
        }
    }
}

/// An engine of `kind` that maps each instance's memory when it starts.
fn on_demand(cfg: &HostConfig, kind: EngineKind) -> anyhow::Result<(Engine, AllocatorKind)> {
    Ok((
        Engine::new(&base_config(cfg, kind)?)?,
        AllocatorKind::OnDemand,
    ))
}

/// The architecture of the CPU this process really runs on, when it is not
/// the one the binary was built for: an aarch64 `wisp` under qemu-user on
/// an x86_64 machine (or the other way round) sees the real CPU in
/// `/proc/cpuinfo`. `None` when native, or when there is no telling.
fn emulated_on() -> Option<&'static str> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let has = |field: &str| {
        cpuinfo
            .lines()
            .any(|l| l.split(':').next().is_some_and(|k| k.trim() == field))
    };
    // x86 names its vendor; Arm its implementer.
    let arch = std::env::consts::ARCH;
    let (real, native) = if has("vendor_id") {
        ("x86_64", matches!(arch, "x86" | "x86_64"))
    } else if has("CPU implementer") {
        ("aarch64", matches!(arch, "arm" | "aarch64"))
    } else {
        return None;
    };
    (!native).then_some(real)
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

#[cfg(test)]
mod tests {
    /// The tests run natively: a host must not take itself for an emulated
    /// one (it would give up the pooling allocator). scripts/test-edge.sh
    /// checks the other side, under qemu-aarch64.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_native_build_does_not_think_it_is_emulated() {
        assert_eq!(super::emulated_on(), None);
    }
}
