//! The guest of the event benchmark (`benches/events.sh`): a typed event
//! handler that does nothing and succeeds. It exports only
//! `wisp:function/event-handler` (no HTTP handler, no routes), so each
//! delivery costs the host an instantiation and one call, and the run
//! measures the event plane: publish, group commit, dispatch, claim and
//! acknowledgement.
//!
//! Build: `cargo build --release --target wasm32-wasip2 --target-dir target/wasm -p noop-events`.

#[wisp_sdk::event_handler]
fn on_event(_event: wisp_sdk::Event) -> Result<(), String> {
    Ok(())
}
