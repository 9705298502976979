//! An event to a component's `wisp:function/event-handler` export: a typed
//! call, with the same limits, log capture and metrics as a request.

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use metrics::Histogram;
use wasmtime::Store;

use super::driver::{Call, Invocation, Record};
use super::failure::{Failure, HandlerFailure};
use super::target::Deployed;
use super::{InvocationState, Invoker, next_invocation_id};
use crate::capabilities::event_bindings::EventsPre;
use crate::capabilities::event_bindings::exports::wisp::function::event_handler::Event;

/// The `handle` call of one event; its output is the handler's own result.
struct EventCall {
    pre: EventsPre<InvocationState>,
    event: Event,
}

impl Call for EventCall {
    type State = InvocationState;
    type Output = Result<(), String>;

    async fn call(
        &mut self,
        store: &mut Store<InvocationState>,
        instantiation: &Histogram,
    ) -> wasmtime::Result<Result<(), String>> {
        let t = Instant::now();
        let instance = self.pre.instantiate_async(&mut *store).await?;
        instantiation.record(t.elapsed().as_secs_f64());
        instance
            .wisp_function_event_handler()
            .call_handle(&mut *store, &self.event)
            .await
    }

    fn finish(&mut self, result: &Result<Result<(), String>, Failure>) -> Option<String> {
        match result {
            Ok(Ok(())) => None,
            Ok(Err(message)) => Some(format!("event {} failed: {message}", self.event.id)),
            Err(f) => Some(format!("invocation failed: {}", f.describe())),
        }
    }
}

impl Invoker {
    /// Runs one event through a fresh instance of `target`'s
    /// `wisp:function/event-handler` export. `Err` says why the attempt did
    /// not succeed: no slot (the handler never ran), or the handler's error,
    /// a trap, the deadline... for the delivery's record; the invocation's
    /// log has it too.
    pub(crate) async fn handle_event(
        &self,
        target: &Arc<Deployed>,
        pre: &EventsPre<InvocationState>,
        event: Event,
    ) -> Result<(), HandlerFailure> {
        let id = next_invocation_id();
        let event_id = event.id.clone();
        let mut record = Record {
            target,
            id: &id,
            event_id: Some(&event_id),
            start: Instant::now(),
            status: None,
        };
        let result = match self.admit(target) {
            Ok(slot) => {
                let deadline = record.start + target.limits.timeout();
                let store = self.new_store(target, deadline);
                let log = store.data().log.clone();
                let call = EventCall {
                    pre: pre.clone(),
                    event,
                };
                let invocation = Invocation {
                    store,
                    slot,
                    log,
                    deadline,
                };
                self.start(invocation, target, &id, call).await
            }
            Err(f) => Err(f),
        };
        record.status = Some(
            match &result {
                Ok(Ok(())) => StatusCode::OK,
                Ok(Err(_)) => StatusCode::INTERNAL_SERVER_ERROR,
                Err(f) => f.status(),
            }
            .as_u16(),
        );
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(HandlerFailure::Failed(format!(
                "the handler returned an error: {message}"
            ))),
            Err(f) if f.is_no_slot() => Err(HandlerFailure::NoSlot),
            Err(f) => Err(HandlerFailure::Failed(format!(
                "{} (invocation {id})",
                f.describe()
            ))),
        }
    }
}
