//! Wisp's host capabilities for guests: the `wisp:function/capabilities`
//! world (key-value, config and secrets, log lines) and the policy for
//! outbound HTTP (`wasi:http/outgoing-handler`).
//!
//! Each capability keeps its per-invocation state in a field of
//! [`InvocationState`]; the generated `Host` traits are implemented on
//! `InvocationState` in the capability's own module. Capability code with
//! no wasm in it (quota accounting, allow-list matching) is plain Rust and
//! unit-tested there.

pub(crate) mod kv;
pub(crate) mod logs;
pub(crate) mod outbound;
pub(crate) mod settings;
pub(crate) mod topics;

/// Bindings generated from sdk/wit, the WIT package shared with the SDK.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "wisp:function/capabilities",
        imports: {
            // Key-value calls may wait for the store (a write is flushed
            // before the guest is told it succeeded). Failures are WIT
            // error values for the guest, never traps.
            "wisp:function/kv": async,
            // A publish returns once the event is durable (group commit).
            "wisp:function/topics": async,
        },
    });
}

/// Bindings of the event handler a function may export
/// (`wisp:function/event-handler`), from the same WIT package.
pub(crate) mod event_bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "wisp:function/events",
        exports: { default: async },
    });
}

/// Adds Wisp's capability interfaces to the linker, beside WASI. A
/// component that imports none of them links exactly as before.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<crate::invocation::InvocationState>,
) -> anyhow::Result<()> {
    use wasmtime::component::HasSelf;
    bindings::Capabilities::add_to_linker::<_, HasSelf<crate::invocation::InvocationState>>(
        linker,
        |s| s,
    )?;
    Ok(())
}
