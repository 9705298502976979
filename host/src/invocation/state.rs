//! What one component invocation's `Store` holds, and the views that WASI,
//! `wasi:http` and Wisp's capabilities take of it.

use std::sync::{Arc, Weak};
use std::time::Instant;

use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::Invoker;
use super::limits::{MemoryLimiter, on_epoch_tick};
use super::target::Deployed;
use super::task::{LongRunning, Slices};
use crate::capabilities::kv::{KvCapability, KvView};
use crate::capabilities::logs::{LogCapability, LogCapture, LogLimits, LogStream, LogView};
use crate::capabilities::outbound::Outbound;
use crate::capabilities::settings::{ConfigCapability, ConfigView};
use crate::capabilities::topics::{Publisher, TopicsCapability, TopicsView};

/// Everything one invocation's `Store` holds. Built per request, dropped
/// with the instance: nothing survives from one invocation to the next.
pub struct InvocationState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: MemoryLimiter,
    /// Outbound HTTP policy: allow-list, per-invocation cap, deadline.
    hooks: Outbound,
    /// This invocation's stdout, stderr and log lines.
    pub(crate) log: LogCapture,
    /// The function's key-value namespace (`wisp:function/kv`).
    pub(crate) kv: Arc<crate::capabilities::kv::KvNamespace>,
    /// The function's settings and secrets as of this invocation's start
    /// (`wisp:function/config`).
    pub(crate) config: Arc<crate::capabilities::settings::ConfigSnapshot>,
    /// Publishes events (`wisp:function/topics`); gone once the host is
    /// (shutdown).
    pub(crate) publisher: Weak<dyn Publisher>,
    /// Wall-clock deadline, checked on every epoch tick.
    deadline: Instant,
    /// The epoch ticks the guest has run through.
    slices: Slices,
}

/// Adds Wisp's capabilities (`wisp:function/kv`, `config`, `log`,
/// `topics`) to `linker`, each given only its view of the state, as
/// `wasi:http` is given its [`WasiHttpCtxView`].
pub(crate) fn add_capabilities_to_linker(
    linker: &mut wasmtime::component::Linker<InvocationState>,
) -> anyhow::Result<()> {
    use crate::capabilities::bindings::wisp::function::{config, kv, log, topics};
    kv::add_to_linker::<_, KvCapability>(linker, |s| KvView(&s.kv))?;
    config::add_to_linker::<_, ConfigCapability>(linker, |s| ConfigView(&s.config))?;
    log::add_to_linker::<_, LogCapability>(linker, |s| LogView(&s.log))?;
    topics::add_to_linker::<_, TopicsCapability>(linker, |s| TopicsView {
        publisher: &s.publisher,
        function: &s.hooks.function,
    })?;
    Ok(())
}

impl super::driver::Bounded for InvocationState {
    fn postpone(&mut self, by: std::time::Duration) {
        self.deadline += by;
        // Outbound requests are bounded by what is left of the deadline.
        self.hooks.deadline += by;
    }

    fn long_running(&self) -> LongRunning {
        self.slices.long_running()
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl Invoker {
    /// A fresh store for one invocation of `target`: its environment, no
    /// sockets, its memory cap, and a deadline enforced on every epoch tick.
    pub(crate) fn new_store(&self, target: &Deployed, deadline: Instant) -> Store<InvocationState> {
        self.new_store_on(&self.engine, target, deadline)
    }

    /// The same on `engine` (the WASI 0.3 engine, for 0.3 components).
    pub(crate) fn new_store_on(
        &self,
        engine: &wasmtime::Engine,
        target: &Deployed,
        deadline: Instant,
    ) -> Store<InvocationState> {
        self.store_settings().store(engine, target, deadline)
    }

    /// What building a store takes from the invoker, for a pool of reused
    /// instances that builds them later.
    pub(crate) fn store_settings(&self) -> StoreSettings {
        StoreSettings {
            log_limit: self.log_limit,
            max_outbound: self.max_outbound,
            publisher: Arc::downgrade(&self.publisher),
        }
    }
}

/// What building a store takes from the invoker ([`Invoker::store_settings`]).
#[derive(Clone)]
pub(crate) struct StoreSettings {
    log_limit: LogLimits,
    max_outbound: u32,
    publisher: Weak<dyn Publisher>,
}

impl StoreSettings {
    /// A store for `target` on `engine`, as [`Invoker::new_store_on`] builds.
    pub(crate) fn store(
        &self,
        engine: &wasmtime::Engine,
        target: &Deployed,
        deadline: Instant,
    ) -> Store<InvocationState> {
        build_store(
            engine,
            target,
            deadline,
            self.log_limit,
            self.max_outbound,
            self.publisher.clone(),
        )
    }
}

/// A fresh store for one invocation (or one reused instance) of `target`.
fn build_store(
    engine: &wasmtime::Engine,
    target: &Deployed,
    deadline: Instant,
    log_limit: LogLimits,
    max_outbound: u32,
    publisher: Weak<dyn Publisher>,
) -> Store<InvocationState> {
    let log = LogCapture::new(log_limit);
    let mut store = Store::new(
        engine,
        InvocationState {
            wasi: WasiCtx::builder()
                .envs(&target.env)
                .stdout(log.stream(LogStream::Stdout))
                .stderr(log.stream(LogStream::Stderr))
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: MemoryLimiter::new(target.limits.memory_bytes as usize),
            hooks: Outbound {
                allow: target.allow_outbound.clone(),
                remaining: max_outbound,
                max: max_outbound,
                deadline,
                function: target.name_arc.clone(),
                log: log.clone(),
            },
            log,
            kv: target.kv.clone(),
            config: target.config.clone(),
            publisher,
            deadline,
            slices: Slices::default(),
        },
    );
    store.limiter(|s| &mut s.limits);
    // Checked on every epoch tick (see `on_epoch_tick`).
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        on_epoch_tick(state.deadline, &mut state.slices)
    });
    store
}
