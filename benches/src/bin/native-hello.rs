//! The native baseline of the load benchmark: an axum hello-world server that
//! answers exactly what the hello guest (examples/hello) answers, so that
//! `load.sh` can report Wisp as a ratio of what the same machine does with no
//! WebAssembly at all.
//!
//! Build and run:
//!
//! ```text
//! cargo build --release -p wisp-benches --bin native-hello
//! target/release/native-hello --listen 127.0.0.1:8081
//! curl http://127.0.0.1:8081/hello      # hello from wisp at /hello
//! ```

use std::net::SocketAddr;

use axum::Router;
use axum::http::{Uri, header};
use axum::response::IntoResponse;
use clap::Parser;

/// A native hello-world server (the baseline of benches/load.sh).
#[derive(Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
}

/// The hello guest's answer, byte for byte: the path it was called at
/// (without the query), as `wisp_sdk::Response::text` sends it.
async fn hello(uri: Uri) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("hello from wisp at {}", uri.path()),
    )
}

// Tokio's multi-threaded runtime, one worker per core: what `wisp serve`
// runs on, so the comparison is runtime for runtime.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let app = Router::new().fallback(hello);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "native-hello: listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}
