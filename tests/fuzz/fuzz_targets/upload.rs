//! Upload validation: the checks a deploy runs on the uploaded bytes before
//! anything is stored (header, compile, import/export checks,
//! pre-instantiation), on the engine `wisp serve` builds.
//!
//! Each input is compiled with Cranelift, as a deploy does: slower than a
//! wasmparser-only target, but it exercises what a deploy really runs,
//! including the pooling allocator's per-module limits and the linkers'
//! type checks. Most mutated inputs fail validation before any code is
//! generated, so the rate stays in the hundreds per second.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use wasmparser::{Parser, Validator, WasmFeatures};
use wisp_host::fuzzing::{Upload, UploadValidator};

static VALIDATOR: LazyLock<UploadValidator> =
    LazyLock::new(|| UploadValidator::new(16).expect("building the engine"));

fuzz_target!(|wasm: &[u8]| {
    let Ok(upload) = VALIDATOR.validate(wasm) else {
        // Refused with an error: what a client is told. Never a panic.
        return;
    };
    // Accepted: a valid binary of the kind its header says, with a handler.
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(wasm)
        .expect("an accepted upload is valid WebAssembly");
    match upload {
        Upload::Module => assert!(Parser::is_core_wasm(wasm)),
        Upload::Service => assert!(Parser::is_component(wasm)),
        Upload::Component { http, events } => {
            assert!(Parser::is_component(wasm));
            assert!(http || events, "an accepted component exports a handler");
        }
    }
});
