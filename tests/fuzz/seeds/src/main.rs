//! Writes the `upload` target's seeds: small modules and components, each
//! the smallest example of one case the deploy checks tell apart. They are
//! written without a `.wasm` extension (the repository ignores `*.wasm`).
//!
//! Usage: `wisp-fuzz-seeds [DIR]` (default `tests/fuzz/corpus/upload`).

use std::path::PathBuf;

/// The wasi:http 0.2 resources the incoming handler takes.
const HTTP_TYPES: &str = r#"
  (import "wasi:http/types@0.2.0" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))))
  (alias export $types "incoming-request" (type $req))
  (alias export $types "response-outparam" (type $out))
"#;

/// A component exporting `wasi:http/incoming-handler` whose `handle` does
/// nothing, with `extra` spliced in before the export.
fn http_component(extra: &str) -> String {
    format!(
        r#"(component
  {HTTP_TYPES}
  (core module $m (func (export "handle") (param i32 i32)))
  (core instance $i (instantiate $m))
  (func $handle (param "request" (own $req)) (param "response-out" (own $out))
    (canon lift (core func $i "handle")))
  {extra}
  (instance $h (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $h)))"#
    )
}

fn seeds() -> Vec<(&'static str, String)> {
    vec![
        // Accepted: a preview-1 command (CGI).
        (
            "module-cgi",
            r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")))"#
                .into(),
        ),
        // Refused: an import outside wasi_snapshot_preview1.
        (
            "module-foreign-import",
            r#"(module
  (import "env" "f" (func))
  (memory (export "memory") 1)
  (func (export "_start")))"#
                .into(),
        ),
        // Refused: a WASI import of the wrong type.
        (
            "module-wasi-mistyped",
            r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")))"#
                .into(),
        ),
        // Refused: `_start` with parameters; no memory export.
        (
            "module-bad-start",
            r#"(module (func (export "_start") (param i32)))"#.into(),
        ),
        // Refused by the pooling allocator: more memories than a module may have.
        (
            "module-three-memories",
            r#"(module
  (memory (export "memory") 1) (memory 1) (memory 1)
  (func (export "_start")))"#
                .into(),
        ),
        // Refused: nothing exported.
        ("module-empty", "(module)".into()),
        // Accepted: an HTTP component.
        ("component-http", http_component("")),
        // Refused: an import the host does not provide.
        (
            "component-unknown-import",
            http_component(r#"(import "acme:thing/frob@1.0.0" (instance (export "f" (func))))"#),
        ),
        // Refused: a WASI import at a version the host does not link.
        (
            "component-wasi-0.3-import",
            http_component(
                r#"(import "wasi:cli/environment@0.3.0" (instance
    (export "get-arguments" (func (result (list string))))))"#,
            ),
        ),
        // Refused: a component without a handler.
        (
            "component-no-handler",
            r#"(component
  (core module $m (func (export "f")))
  (core instance $i (instantiate $m))
  (func $f (canon lift (core func $i "f")))
  (export "run" (func $f)))"#
                .into(),
        ),
        // Refused: a `handle` of the wrong type (accepted until the upload
        // target's seeds showed it; engine.rs checks it now).
        (
            "component-mistyped-handler",
            r#"(component
  (core module $m (func (export "handle")))
  (core instance $i (instantiate $m))
  (func $handle (canon lift (core func $i "handle")))
  (instance $h (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $h)))"#
                .into(),
        ),
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("tests/fuzz/corpus/upload"));
    std::fs::create_dir_all(&dir)?;
    for (name, text) in seeds() {
        let wasm = wat::parse_str(&text).map_err(|e| format!("{name}: {e}"))?;
        std::fs::write(dir.join(name), &wasm)?;
        println!("{name}: {} bytes", wasm.len());
    }
    Ok(())
}
