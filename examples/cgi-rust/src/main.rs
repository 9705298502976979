//! A Wisp function with no SDK and no component tooling: a plain Rust
//! program (std only) built for `wasm32-wasip1` and run CGI-style. The
//! request arrives in environment variables (`REQUEST_METHOD`, `PATH_INFO`,
//! `QUERY_STRING`, `HTTP_*`, …) and on stdin; the response goes to stdout as
//! CGI headers, a blank line and the body. This one answers the request back
//! as JSON.
//!
//! Build and deploy it (from the workspace root, with `wisp serve` running):
//!
//! ```text
//! cargo build --release --target wasm32-wasip1 -p cgi-rust
//! wisp deploy cgi-rust target/wasm32-wasip1/release/cgi-rust.wasm --route '/cgi-rust/*'
//! curl -X POST --data 'hi' 'http://127.0.0.1:8080/cgi-rust/items/7?color=red'
//! ```

use std::fmt::Write as _;
use std::io::{Read, Write};

fn main() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        // stderr lands in the function's invocation log.
        eprintln!("reading the request body failed: {e}");
    }

    let mut headers: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| {
            Some((
                k.strip_prefix("HTTP_")?
                    .to_ascii_lowercase()
                    .replace('_', "-"),
                v,
            ))
        })
        .collect();
    headers.sort();

    let mut json = String::from("{");
    for (key, value) in [
        ("method", var("REQUEST_METHOD")),
        ("script_name", var("SCRIPT_NAME")),
        ("path_info", var("PATH_INFO")),
        ("query", var("QUERY_STRING")),
        ("content_type", var("CONTENT_TYPE")),
        ("remote_addr", var("REMOTE_ADDR")),
        ("scheme", var("REQUEST_SCHEME")),
        (
            "server",
            format!("{}:{}", var("SERVER_NAME"), var("SERVER_PORT")),
        ),
        ("greeting", var("GREETING")),
    ] {
        let _ = write!(json, "{}:{},", quote(key), quote(&value));
    }
    json.push_str("\"args\":[");
    let args: Vec<String> = std::env::args().map(|a| quote(&a)).collect();
    json.push_str(&args.join(","));
    json.push_str("],\"headers\":{");
    let pairs: Vec<String> = headers
        .iter()
        .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
        .collect();
    json.push_str(&pairs.join(","));
    let _ = write!(
        json,
        "}},\"body_bytes\":{},\"body\":{}}}",
        body.len(),
        quote(&String::from_utf8_lossy(&body[..body.len().min(1024)]))
    );

    let mut out = std::io::stdout().lock();
    let _ = write!(
        out,
        "Content-Type: application/json\r\nX-Powered-By: wasm32-wasip1\r\n\r\n{json}\n"
    );
    let _ = out.flush();
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
