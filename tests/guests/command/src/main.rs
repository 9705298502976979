//! A guest for the host's tests: a `wasi:cli` command (it exports
//! `wasi:cli/run`), not an HTTP handler, so a deploy refuses it with
//! `missing_export`.

fn main() {}
