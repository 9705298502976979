//! Precompiled, signed artifacts: `wisp keygen` makes a key pair, `wisp
//! compile --sign` compiles a function ahead of time for a host's engine,
//! and a host started with `--trusted-key` loads it without compiling. A
//! wrong key, a changed byte, another engine's code, unsigned compiled code
//! and a host that trusts no key: each refused, with nothing stored.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::harness::*;

/// `wisp keygen DIR/NAME`: the signing key and the public key's path.
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(name);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .arg("keygen")
        .arg(&key)
        .output()
        .unwrap();
    let said = ok(out);
    let public = dir.join(format!("{name}.pub"));
    assert!(said.is_empty() || said.contains("wrote"), "{said}");
    (key, public)
}

/// `wisp compile WASM --sign KEY -o OUT [extra...]`; the output's path.
fn compile(wasm: &Path, key: &Path, out: &Path, extra: &[&str]) -> PathBuf {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .arg("compile")
        .arg(wasm)
        .arg("--sign")
        .arg(key)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    ok(status);
    out.to_path_buf()
}

fn trusting(public: &Path) -> Opts {
    Opts::default()
        .arg("--trusted-key")
        .arg(public.to_str().unwrap())
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Deploys `artifact` as `name` on route `/{name}`.
fn deploy(w: &Wisp, name: &str, artifact: &Path) -> reqwest::blocking::Response {
    w.admin().deploy(
        name,
        &std::fs::read(artifact).unwrap(),
        &[("route", &format!("/{name}"))],
    )
}

#[test]
fn a_signed_precompiled_component_deploys_and_serves_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "build");
    // The signing key is private; neither file is ever overwritten.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .arg("keygen")
        .arg(&key)
        .output()
        .unwrap();
    assert!(fails(again).contains("exists"));

    let hello = guest("hello");
    let cwasm = compile(&hello, &key, &dir.path().join("hello.cwasm"), &[]);
    let mut w = Wisp::start_with(trusting(&public));
    let r = deploy(&w, "hello", &cwasm);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let resp = w.get("/hello");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().unwrap(), "hello from wisp at /hello");
    // Loaded, not compiled here.
    assert_eq!(w.metric("wisp_compiles_total"), 0.0);
    // The CLI uploads a .cwasm as it does a .wasm.
    let said = ok(w.cli(&["deploy", "cli", cwasm.to_str().unwrap(), "--route", "/cli"]));
    assert!(said.contains("deployed cli version 1"), "{said}");
    assert_eq!(w.get("/cli").text().unwrap(), "hello from wisp at /cli");
    assert_eq!(w.metric("wisp_compiles_total"), 0.0);

    // Where the code came from: the wasm's sha256 and the signing key.
    let info: Value = w.admin().get("/v1/functions/hello").json().unwrap();
    let from = &info["versions"][0]["precompiled"];
    assert_eq!(from["source_sha256"], sha256_of(&hello), "{info}");
    let key_id = from["signed_by"].as_str().unwrap().to_string();
    assert_eq!(key_id.len(), 16, "{info}");
    let shown = ok(w.cli(&["info", "hello"]));
    assert!(
        shown.contains("precompiled") && shown.contains(&key_id),
        "{shown}"
    );

    // A restart serves it from the stored code, still without compiling.
    w.terminate();
    let w2 = w.restart_on(trusting(&public));
    assert_eq!(w2.get("/hello").status(), 200);
    assert_eq!(w2.metric("wisp_compiles_total"), 0.0);
}

#[test]
fn precompiled_code_is_refused_unless_signed_by_a_trusted_key_for_this_engine() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "build");
    let (other_key, _) = keygen(dir.path(), "other");
    let hello = guest("hello");
    let good = compile(&hello, &key, &dir.path().join("good.cwasm"), &[]);
    let w = Wisp::start_with(trusting(&public));
    let a = w.admin();
    let nothing_stored = |what: &str| {
        assert!(a.functions().is_empty(), "{what}: a function was stored");
        assert!(
            compiled_files(&w).is_empty(),
            "{what}: compiled code was stored"
        );
    };

    // Signed by a key the host does not trust.
    let wrong = compile(&hello, &other_key, &dir.path().join("wrong.cwasm"), &[]);
    let m = assert_error(deploy(&w, "f", &wrong), 400, "untrusted_artifact");
    assert!(m.contains("does not trust"), "{m}");
    nothing_stored("wrong key");

    // One byte changed after signing, in the code and in the header.
    let bytes = std::fs::read(&good).unwrap();
    for at in [bytes.len() - 100, 40] {
        let mut tampered = bytes.clone();
        tampered[at] ^= 0x01;
        let path = dir.path().join("tampered.cwasm");
        std::fs::write(&path, &tampered).unwrap();
        let r = deploy(&w, "f", &path);
        let status = r.status().as_u16();
        let body: Value = r.json().unwrap();
        assert_eq!(status, 400, "{body}");
        let code = body["error"]["code"].as_str().unwrap();
        assert!(
            code == "untrusted_artifact" || code == "invalid_wasm",
            "byte {at}: {body}"
        );
        nothing_stored("tampered");
    }

    // Compiled for another engine (Pulley bytecode for a Cranelift host).
    let pulley = compile(
        &hello,
        &key,
        &dir.path().join("pulley.cwasm"),
        &["--engine", "pulley"],
    );
    let m = assert_error(deploy(&w, "f", &pulley), 400, "engine_mismatch");
    assert!(m.contains("pulley") && m.contains("wisp compile"), "{m}");
    nothing_stored("engine mismatch");

    // wasmtime's compiled code without Wisp's signature around it.
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let raw = dir.path().join("raw.cwasm");
    std::fs::write(&raw, &bytes[16 + header_len..]).unwrap();
    let m = assert_error(deploy(&w, "f", &raw), 400, "invalid_wasm");
    assert!(m.contains("signed"), "{m}");
    nothing_stored("unsigned");

    // A host that trusts no key loads no precompiled code at all.
    let plain = Wisp::start();
    let m = assert_error(deploy(&plain, "f", &good), 400, "untrusted_artifact");
    assert!(m.contains("--trusted-key"), "{m}");
    assert!(plain.admin().functions().is_empty());

    // The good one still deploys on the trusting host.
    assert_eq!(deploy(&w, "f", &good).status(), 201);
    assert_eq!(w.get("/f").status(), 200);
}

#[test]
fn pulley_hosts_and_preview1_modules_take_precompiled_code_too() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "build");
    let pulley = compile(
        &guest("hello"),
        &key,
        &dir.path().join("hello-pulley.cwasm"),
        &["--engine", "pulley"],
    );
    let w = Wisp::start_with(trusting(&public).arg("--engine").arg("pulley"));
    assert_eq!(deploy(&w, "hello", &pulley).status(), 201);
    assert_eq!(w.get("/hello").status(), 200);
    assert_eq!(w.metric("wisp_compiles_total"), 0.0);

    // A preview-1 (CGI) module, precompiled for a Cranelift host.
    let module = compile(
        &wasip1_guest("cgi-rust"),
        &key,
        &dir.path().join("cgi.cwasm"),
        &[],
    );
    let w = Wisp::start_with(trusting(&public));
    let r = deploy(&w, "cgi", &module);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let resp = w.get("/cgi");
    assert_eq!(resp.status(), 200, "{}", w.log_text());
    let info: Value = w.admin().get("/v1/functions/cgi").json().unwrap();
    assert_eq!(info["kind"], "wasi-preview1-module", "{info}");

    // A WASI 0.3 component: loaded into the host's WASI 0.3 engine.
    let p3 = compile(
        &guest("hello-p3"),
        &key,
        &dir.path().join("hello-p3.cwasm"),
        &[],
    );
    let r = deploy(&w, "p3", &p3);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert_eq!(w.get("/p3").status(), 200, "{}", w.log_text());
    let info: Value = w.admin().get("/v1/functions/p3").json().unwrap();
    assert_eq!(info["kind"], "wasi-0.3-component", "{info}");
    assert_eq!(w.metric("wisp_compiles_total"), 0.0);
}

#[test]
fn wisp_compile_refuses_bad_input_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "build");
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
            .arg("compile")
            .args(args)
            .output()
            .unwrap()
    };
    let not_wasm = dir.path().join("notes.txt");
    std::fs::write(&not_wasm, "not wasm").unwrap();
    let out = dir.path().join("out.cwasm");
    let m = fails(run(&[
        not_wasm.as_os_str(),
        "--sign".as_ref(),
        key.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]));
    assert!(m.contains("not a WebAssembly binary"), "{m}");
    // The public key is not a signing key.
    let m = fails(run(&[
        guest("hello").as_os_str(),
        "--sign".as_ref(),
        public.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]));
    assert!(m.contains("not a Wisp signing key"), "{m}");
    let m = fails(run(&[
        guest("hello").as_os_str(),
        "--sign".as_ref(),
        key.as_os_str(),
        "--target".as_ref(),
        "nonsense-target".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]));
    assert!(m.contains("nonsense-target"), "{m}");
    assert!(!out.exists());
    // A host given a file that is not a public key does not start.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--trusted-key")
        .arg(&key)
        .output()
        .unwrap();
    let m = fails(status);
    assert!(
        m.contains("--trusted-key") && m.contains("not a Wisp public key"),
        "{m}"
    );
}
