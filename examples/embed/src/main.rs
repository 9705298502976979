//! Wisp inside another axum service: the service's own route beside the
//! functions, and the admin API nested under `/admin`.
//!
//! Build and run (from the workspace root):
//!
//! ```sh
//! cargo build --release --target wasm32-wasip2 --target-dir target/wasm -p hello
//! cargo run -p embed -- target/wasm/wasm32-wasip2/release/hello.wasm
//! curl localhost:3000/status        # the service's own route
//! curl localhost:3000/hello/world   # the hello function, served by Wisp
//! ```
//!
//! `EMBED_LISTEN` changes the address (default 127.0.0.1:3000).

use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;
use wisp_host::{DeployOptions, Host};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let wasm_path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: embed HELLO.wasm"))?;
    let listen = std::env::var("EMBED_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());

    // A temporary store: this service deploys its functions at start-up.
    let host = Host::builder().temporary().max_in_flight(256).build()?;
    let wasm = std::fs::read(&wasm_path)?;
    host.functions()
        .deploy(
            "hello",
            wasm.into(),
            DeployOptions::default().route("/hello/*"),
        )
        .await?;

    let app = Router::new()
        .route("/status", get(|| async { "embedder ok" }))
        .nest("/admin", host.admin_router())
        // Everything else goes to the functions.
        .fallback_service(host.gateway_router());

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("embed: listening on http://{}", listener.local_addr()?);
    // Functions stream their responses (head, then body): without
    // TCP_NODELAY a small response can wait for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}
