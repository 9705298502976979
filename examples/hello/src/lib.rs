//! The smallest Wisp function: answers `hello from wisp at <path>`.
//!
//! Build and deploy it (from the workspace root, with `wisp serve` running):
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p hello
//! wisp deploy hello target/wasm32-wasip2/release/hello.wasm --route /hello
//! curl http://127.0.0.1:8080/hello
//! ```

use wisp_sdk::{IntoResponse, Request, Response};

#[wisp_sdk::handler]
fn hello(req: Request) -> impl IntoResponse {
    Response::text(format!("hello from wisp at {}", req.path()))
}
