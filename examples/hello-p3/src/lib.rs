//! The smallest Wisp function, built as a WASI 0.3 component: a component
//! exporting `wasi:http/handler@0.3` (the `service` world). The code is
//! `examples/hello`'s; only the dependency differs (`wisp-sdk-p3` for
//! `wisp-sdk`, see Cargo.toml).
//!
//! Build and deploy it (from the workspace root, with `wisp serve` running):
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p hello-p3
//! wisp deploy hello-p3 target/wasm32-wasip2/release/hello_p3.wasm --route '/hello-p3/*'
//! curl http://127.0.0.1:8080/hello-p3
//! ```
//!
//! (`wasm32-wasip2` is the target: Rust has no stable WASI 0.3 target yet,
//! and the component's `wasi:http` is 0.3 all the same.)

use wisp_sdk::{IntoResponse, Request, Response};

#[wisp_sdk::handler]
fn hello(req: Request) -> impl IntoResponse {
    Response::text(format!("hello from wisp (WASI 0.3) at {}", req.path()))
}

#[cfg(test)]
mod tests {
    use wisp_sdk::{IntoResponse, Method, Request};

    #[test]
    fn says_hello() {
        let resp = super::hello(Request::new(Method::GET, "/hello-p3/x")).into_response();
        assert_eq!(resp.body(), b"hello from wisp (WASI 0.3) at /hello-p3/x");
    }
}
