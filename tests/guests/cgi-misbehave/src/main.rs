//! A preview-1 guest for the host's CGI tests: one behaviour per path
//! (`PATH_INFO`), parameters in the query string.
//!
//! `/ok`, `/echo` (the body back, with the method and length as headers),
//! `/status`, `/redirect`, `/loop`, `/garbage`, `/noheaders`,
//! `/big?mb=N`, `/exit?code=N`, `/exit-after-headers?code=N`,
//! `/read?file=PATH`, `/stderr`, `/trap`, `/env`.

use std::io::{Read, Write};

fn param(name: &str) -> Option<String> {
    let query = std::env::var("QUERY_STRING").unwrap_or_default();
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == name).then(|| v.to_string())
    })
}

fn main() {
    let path = std::env::var("PATH_INFO").unwrap_or_default();
    let mut out = std::io::stdout().lock();
    match path.as_str() {
        "/ok" => {
            let _ = out.write_all(b"Content-Type: text/plain\r\n\r\nok");
        }
        "/echo" => {
            let mut body = Vec::new();
            std::io::stdin().read_to_end(&mut body).unwrap();
            let method = std::env::var("REQUEST_METHOD").unwrap_or_default();
            let _ = write!(
                out,
                "Content-Type: application/octet-stream\r\nX-Method: {method}\r\nX-Length: {}\r\n\r\n",
                body.len()
            );
            for chunk in body.chunks(64 * 1024) {
                out.write_all(chunk).unwrap();
            }
        }
        "/status" => {
            let _ = out.write_all(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nX-Custom: yes\r\n\r\nnot here");
        }
        "/redirect" => {
            let _ = out.write_all(b"Location: https://example.com/next\r\n\r\n");
        }
        "/loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "/garbage" => {
            let _ = out.write_all(b"this is not CGI at all\n\n\x00\x01\x02 just bytes");
        }
        "/noheaders" => {
            let _ = out.write_all(b"hello without headers");
        }
        "/big" => {
            let mb: usize = param("mb").and_then(|m| m.parse().ok()).unwrap_or(1);
            let _ = out.write_all(b"Content-Type: application/octet-stream\r\n\r\n");
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..mb * 16 {
                out.write_all(&chunk).unwrap();
            }
        }
        "/exit" => {
            let code = param("code").and_then(|c| c.parse().ok()).unwrap_or(3);
            eprintln!("exiting with {code}");
            std::process::exit(code);
        }
        "/exit-after-headers" => {
            let code = param("code").and_then(|c| c.parse().ok()).unwrap_or(3);
            let _ = out.write_all(b"Content-Type: text/plain\r\n\r\npartial");
            let _ = out.flush();
            std::process::exit(code);
        }
        "/read" => {
            let file = param("file").unwrap_or_default();
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    let _ = write!(out, "Content-Type: text/plain\r\n\r\n{text}");
                }
                Err(e) => {
                    let _ = write!(
                        out,
                        "Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nerror: {e}"
                    );
                }
            }
        }
        "/stderr" => {
            eprintln!("a line on stderr");
            eprintln!("another line on stderr");
            let _ = out.write_all(b"Content-Type: text/plain\r\n\r\nok");
        }
        "/trap" => std::process::abort(),
        "/env" => {
            let _ = out.write_all(b"Content-Type: text/plain\r\n\r\n");
            let mut vars: Vec<(String, String)> = std::env::vars().collect();
            vars.sort();
            for (k, v) in vars {
                let _ = writeln!(out, "{k}={v}");
            }
            for a in std::env::args() {
                let _ = writeln!(out, "arg={a}");
            }
        }
        other => {
            let _ = write!(
                out,
                "Status: 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nno behaviour {other:?}"
            );
        }
    }
}
