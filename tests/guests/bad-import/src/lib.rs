//! A guest for the host's tests: it imports `acme:unknown/frobnicate@1.0.0`,
//! which no host provides, so the host must refuse to deploy it and name the
//! import. Were it ever instantiated, it would answer with `frob()`.

mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "bad-import", generate_all });
}

use wisp_sdk::{IntoResponse, Request};

#[wisp_sdk::handler]
fn handle(_req: Request) -> impl IntoResponse {
    format!("frob() = {}", bindings::acme::unknown::frobnicate::frob())
}
