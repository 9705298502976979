//! TLS and HTTP/2: `wisp serve --tls-cert/--tls-key` on the data plane and
//! `--admin-tls-cert/--admin-tls-key` on the admin API, with certificates of
//! a CA made here (rcgen); HTTP/2 by ALPN over TLS and h2c on plain
//! listeners; a certificate replaced on disk or reloaded on SIGHUP without
//! a restart or a dropped connection; bad files refused before anything
//! listens; the CLI verifying the admin certificate (`WISP_ADMIN_CA`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use reqwest::Version;
use reqwest::blocking::Client;

use crate::harness::*;

/// A certificate authority of the test's own.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Its certificate, PEM (what clients trust).
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    /// A server certificate for 127.0.0.1 and localhost: (chain PEM, key PEM).
    fn leaf(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a leaf's certificate and key as `<dir>/<name>.pem` and
    /// `<dir>/<name>.key`.
    fn write_leaf(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.leaf();
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path)
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).unwrap();
        path
    }
}

/// A client that trusts `ca` only (no public roots).
fn client_trusting(ca: &Ca) -> reqwest::blocking::ClientBuilder {
    Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
}

/// Replaces `path` the way certificate tools do: write aside, rename over.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A host with TLS on both planes, the certificates signed by `ca`.
fn start_tls(ca: &Ca, dir: &Path) -> Wisp {
    let (cert, key) = ca.write_leaf(dir, "data");
    let (admin_cert, admin_key) = ca.write_leaf(dir, "admin");
    Wisp::start_with(
        Opts::default()
            .arg("--tls-cert")
            .arg(cert.to_str().unwrap())
            .arg("--tls-key")
            .arg(key.to_str().unwrap())
            .arg("--admin-tls-cert")
            .arg(admin_cert.to_str().unwrap())
            .arg("--admin-tls-key")
            .arg(admin_key.to_str().unwrap()),
    )
}

/// The CLI against `w`'s admin API, trusting `ca_file` (if any).
fn cli(w: &Wisp, ca_file: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wisp"));
    cmd.args(args)
        .env("WISP_ADMIN_URL", &w.admin_url)
        .env("WISP_ADMIN_TOKEN", &w.token)
        .env_remove("WISP_ADMIN_CA");
    if let Some(ca) = ca_file {
        cmd.env("WISP_ADMIN_CA", ca);
    }
    cmd.output().unwrap()
}

#[test]
fn https_and_http2_on_both_planes_and_the_cli_verifies_the_admin_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("wisp test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let w = start_tls(&ca, dir.path());
    assert!(w.data_url.starts_with("https://"), "{}", w.data_url);
    assert!(w.admin_url.starts_with("https://"), "{}", w.admin_url);

    // The CLI refuses a certificate it cannot verify, and says why.
    let hello = guest("hello");
    let hello = hello.to_str().unwrap();
    let cgi = wasip1_guest("cgi-rust");
    let err = fails(cli(
        &w,
        None,
        &["deploy", "hello", hello, "--route", "/hello"],
    ));
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // Trusting the CA (WISP_ADMIN_CA), it deploys over HTTPS.
    ok(cli(
        &w,
        Some(&ca_file),
        &["deploy", "hello", hello, "--route", "/hello"],
    ));
    ok(cli(
        &w,
        Some(&ca_file),
        &["deploy", "cgi", cgi.to_str().unwrap(), "--route", "/cgi/*"],
    ));
    let list = ok(cli(&w, Some(&ca_file), &["list"]));
    assert!(list.contains("hello") && list.contains("cgi"), "{list}");

    // HTTP/2 by ALPN, and HTTP/1.1 for a client that offers only that.
    let h2 = client_trusting(&ca).build().unwrap();
    let r = h2.get(format!("{}/hello", w.data_url)).send().unwrap();
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.text().unwrap(), "hello from wisp at /hello");
    let h1 = client_trusting(&ca).http1_only().build().unwrap();
    let r = h1.get(format!("{}/hello", w.data_url)).send().unwrap();
    assert_eq!(r.version(), Version::HTTP_11);
    assert_eq!(r.text().unwrap(), "hello from wisp at /hello");
    // The function knows it was called over TLS (CGI's REQUEST_SCHEME).
    let j: serde_json::Value = h2
        .get(format!("{}/cgi/x", w.data_url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(j["scheme"], "https", "{j}");

    // The admin API over HTTP/2 too, with the same token check.
    let r = h2
        .get(format!("{}/v1/functions", w.admin_url))
        .bearer_auth(&w.token)
        .send()
        .unwrap();
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let r = h2
        .get(format!("{}/v1/functions", w.admin_url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    // The limits are the listener's whatever the protocol: a head past
    // the data plane's limit is refused over TLS as over plain HTTP.
    // The host answers 431 and closes without reading the rest of the
    // head, so a client still writing it may see the connection reset
    // before it reads the answer: a reset is a refusal too, but at least
    // one of a few tries must read the 431 itself.
    let big = "x".repeat(200 << 10);
    let statuses: Vec<_> = (0..5)
        .map(|_| {
            h1.get(format!("{}/hello", w.data_url))
                .header("x-big", &big)
                .send()
                .map(|r| r.status().as_u16())
        })
        .collect();
    assert!(
        statuses
            .iter()
            .all(|s| s.as_ref().map_or(true, |s| *s == 431))
            && statuses.iter().any(|s| matches!(s, Ok(431))),
        "{statuses:?}"
    );
    let r = h2
        .get(format!("{}/hello", w.data_url))
        .header("x-big", &big)
        .send();
    assert!(
        r.as_ref().map_or(true, |r| r.status() == 431),
        "{:?}",
        r.map(|r| r.status())
    );

    // Plain HTTP to the TLS port gets nothing served.
    let plain = client()
        .get(w.data_url.replace("https://", "http://") + "/hello")
        .send();
    assert!(plain.map_or(true, |r| !r.status().is_success()));
}

#[test]
fn plain_listeners_speak_h2c() {
    let w = Wisp::start();
    w.admin().deploy_guest("hello", "hello", &["/hello"]);
    let h2c = Client::builder().http2_prior_knowledge().build().unwrap();
    let r = h2c.get(format!("{}/hello", w.data_url)).send().unwrap();
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.text().unwrap(), "hello from wisp at /hello");
    let j: serde_json::Value = {
        let cgi = std::fs::read(wasip1_guest("cgi-rust")).unwrap();
        let r = w.admin().deploy("cgi", &cgi, &[("route", "/cgi/*")]);
        assert_eq!(r.status(), 201);
        h2c.get(format!("{}/cgi/x", w.data_url))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    assert_eq!(j["scheme"], "http", "{j}");
    let r = h2c
        .get(format!("{}/v1/functions", w.admin_url))
        .bearer_auth(&w.token)
        .send()
        .unwrap();
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.status(), 200);
}

#[test]
fn a_certificate_replaced_on_disk_or_reloaded_on_sighup_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let (cert, key) = old_ca.write_leaf(dir.path(), "data");
    let w = Wisp::start_with(
        Opts::default()
            .arg("--tls-cert")
            .arg(cert.to_str().unwrap())
            .arg("--tls-key")
            .arg(key.to_str().unwrap()),
    );
    w.admin().deploy_guest("hello", "hello", &["/hello"]);
    let url = format!("{}/hello", w.data_url);
    // A client with a connection open (kept alive), trusting the old CA only.
    let kept = client_trusting(&old_ca).build().unwrap();
    assert_eq!(kept.get(&url).send().unwrap().status(), 200);
    let trusts_new = || {
        client_trusting(&new_ca)
            .build()
            .unwrap()
            .get(&url)
            .send()
            .is_ok_and(|r| r.status() == 200)
    };
    assert!(!trusts_new(), "the new CA's clients cannot connect yet");

    // Renewed on disk (key first, then certificate, as a renewal does).
    let (new_cert, new_key) = new_ca.leaf();
    replace(&key, &new_key);
    replace(&cert, &new_cert);
    wait_for("the renewed certificate", trusts_new);
    assert!(
        w.log_text()
            .contains("TLS certificate changed on disk: reloaded"),
        "{}",
        w.log_text()
    );
    // The connection opened before is still served (a new one from this
    // client would fail: it trusts only the old CA).
    for _ in 0..3 {
        assert_eq!(kept.get(&url).send().unwrap().status(), 200);
    }
    let fresh_old = client_trusting(&old_ca).build().unwrap().get(&url).send();
    assert!(
        fresh_old.is_err(),
        "new connections get the new certificate"
    );

    // A broken file (a half-finished copy) keeps the current certificate.
    replace(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n");
    wait_for("the broken file to be reported", || {
        w.log_text()
            .contains("cannot be used: still serving the previous one")
    });
    assert!(trusts_new(), "still serving the renewed certificate");

    // SIGHUP reads the files again at once.
    let (cert_pem, key_pem) = old_ca.leaf();
    std::fs::write(&key, key_pem).unwrap();
    std::fs::write(&cert, cert_pem).unwrap();
    let pid = w.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for("the SIGHUP reload", || {
        w.log_text().contains("SIGHUP: TLS certificate reloaded")
    });
    wait_for("the old CA's certificate again", || {
        client_trusting(&old_ca)
            .build()
            .unwrap()
            .get(&url)
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
}

/// `wisp serve` with `args` (and free ports): must fail before listening.
/// Returns its stderr; checks it created no data directory.
fn serve_refused(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("WISP_TLS_CERT")
        .env_remove("WISP_TLS_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success(), "wisp serve {args:?} started");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("wisp: data plane"), "{stdout}");
    assert!(
        !data.exists(),
        "wisp serve {args:?} created its data directory"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_certificates_and_keys_stop_serve_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("wisp test CA");
    let (cert, key) = ca.write_leaf(dir.path(), "good");
    let (_, other_key) = ca.write_leaf(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let (cert, key, other_key, garbage, missing) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        other_key.to_str().unwrap(),
        garbage.to_str().unwrap(),
        missing.to_str().unwrap(),
    );

    let e = serve_refused(&["--tls-cert", cert]);
    assert!(e.contains("--tls-key"), "{e}");
    let e = serve_refused(&["--admin-tls-key", key]);
    assert!(e.contains("--admin-tls-cert"), "{e}");
    let e = serve_refused(&["--tls-cert", missing, "--tls-key", key]);
    assert!(
        e.contains("cannot read") && e.contains("missing.pem"),
        "{e}"
    );
    let e = serve_refused(&["--tls-cert", garbage, "--tls-key", key]);
    assert!(
        e.contains("holds no PEM certificate") && e.contains("garbage.pem"),
        "{e}"
    );
    let e = serve_refused(&["--tls-cert", cert, "--tls-key", cert]);
    assert!(e.contains("holds no PEM private key"), "{e}");
    let e = serve_refused(&["--tls-cert", cert, "--tls-key", other_key]);
    assert!(e.contains("cannot be used together"), "{e}");
    let e = serve_refused(&["--admin-tls-cert", garbage, "--admin-tls-key", key]);
    assert!(e.contains("--admin-tls-cert"), "{e}");
}
