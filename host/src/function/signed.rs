//! Precompiled, signed artifacts: code compiled ahead of time on a build
//! machine (`wisp compile`), signed with an ed25519 key (`wisp keygen`),
//! and accepted by a host only when the signature verifies against a key
//! it trusts (`wisp serve --trusted-key`). wasmtime's loading of compiled
//! code is only safe for trusted input, so unsigned or badly signed code is
//! refused before wasmtime sees a byte of it.
//!
//! The file (`.cwasm`): [`MAGIC`], the header's length (u32, little
//! endian), the header (JSON: what the code is, for which target and
//! engine settings, the sha256 of the wasm it was compiled from, the
//! signing key's id and the signature), then the compiled code. The
//! signature covers [`MAGIC`], the header without its signature, and the
//! code's sha256.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::DeployError;

/// The first bytes of a signed precompiled artifact (never `\0asm`).
pub const MAGIC: &[u8; 12] = b"WISP-CWASM1\n";
/// The longest header accepted.
const MAX_HEADER: usize = 16 << 10;
/// The first line of a signing key file.
const PRIVATE_PREFIX: &str = "wisp-signing-key-ed25519 ";
/// The first word of a public key file.
const PUBLIC_PREFIX: &str = "wisp-ed25519 ";

/// What a precompiled artifact says of itself (signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// `component` (WASI 0.2), `service` (WASI 0.3) or `module`
    /// (preview 1).
    pub kind: String,
    /// The target triple the code is for.
    pub target: String,
    /// `cranelift` or `pulley`.
    pub engine: String,
    /// The engine settings the code needs (the host's compiled-code key for
    /// that kind of function).
    pub settings: String,
    /// The sha256 of the wasm it was compiled from.
    pub source_sha256: String,
    /// The sha256 of the code.
    pub code_sha256: String,
    /// The signing key's id ([`key_id`]).
    pub key_id: String,
    /// The signature (base64), empty while signing.
    #[serde(default)]
    pub signature: String,
}

/// Whether `bytes` is a signed precompiled artifact (by its first bytes).
pub fn is_signed_artifact(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// The id of a public key: the first 16 hex digits of its sha256.
pub fn key_id(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

fn message(header: &Header) -> Vec<u8> {
    let mut unsigned = header.clone();
    unsigned.signature.clear();
    let mut m = MAGIC.to_vec();
    m.extend_from_slice(&serde_json::to_vec(&unsigned).expect("a header serialises"));
    m
}

/// A trusted public key (`--trusted-key FILE`).
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// Its id.
    pub id: String,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedKey({})", self.id)
    }
}

impl TrustedKey {
    /// Reads a public key file written by [`generate_keys`].
    pub fn from_file(path: &Path) -> anyhow::Result<TrustedKey> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the public key {}: {e}", path.display()))?;
        let bytes = text
            .trim()
            .strip_prefix(PUBLIC_PREFIX)
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} is not a Wisp public key (`wisp keygen NAME` writes NAME.pub)",
                    path.display()
                )
            })?;
        Ok(TrustedKey {
            id: key_id(&bytes),
            bytes,
        })
    }
}

/// A signing key (`wisp compile --sign FILE`).
pub struct SigningKey(Ed25519KeyPair);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(********)")
    }
}

impl SigningKey {
    /// Reads a signing key file written by [`generate_keys`].
    pub fn from_file(path: &Path) -> anyhow::Result<SigningKey> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the signing key {}: {e}", path.display()))?;
        let pair = text
            .trim()
            .strip_prefix(PRIVATE_PREFIX)
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|der| Ed25519KeyPair::from_pkcs8(&der).ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} is not a Wisp signing key (`wisp keygen NAME` writes one)",
                    path.display()
                )
            })?;
        Ok(SigningKey(pair))
    }

    /// Its public key's id.
    pub fn id(&self) -> String {
        key_id(self.0.public_key().as_ref())
    }
}

/// Writes a new key pair: `path` (the signing key, mode 0600) and
/// `path.pub` (the public key, for hosts' `--trusted-key`). Refuses to
/// replace either file. Returns the public key's path and id.
pub fn generate_keys(path: &Path) -> anyhow::Result<(PathBuf, String)> {
    let public_path = PathBuf::from(format!("{}.pub", path.display()));
    if public_path.exists() {
        anyhow::bail!("{} exists: not overwritten", public_path.display());
    }
    let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    let pair = Ed25519KeyPair::from_pkcs8(der.as_ref()).expect("a key just generated");
    let b64 = &base64::engine::general_purpose::STANDARD;
    let write = |p: &Path, mode: u32, text: String| -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(p)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        Ok(())
    };
    write(
        path,
        0o600,
        format!("{PRIVATE_PREFIX}{}\n", b64.encode(der.as_ref())),
    )?;
    let public = pair.public_key().as_ref();
    write(
        &public_path,
        0o644,
        format!("{PUBLIC_PREFIX}{}\n", b64.encode(public)),
    )?;
    Ok((public_path, key_id(public)))
}

/// Wraps compiled `code` in a signed artifact.
pub fn seal(mut header: Header, code: &[u8], key: &SigningKey) -> Vec<u8> {
    header.code_sha256 = hex::encode(Sha256::digest(code));
    header.key_id = key.id();
    header.signature.clear();
    let signature = key.0.sign(&message(&header));
    header.signature = base64::engine::general_purpose::STANDARD.encode(signature.as_ref());
    let json = serde_json::to_vec(&header).expect("a header serialises");
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + json.len() + code.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(code);
    out
}

/// Reads a signed artifact and checks its signature against `trusted`:
/// its header and code, or why it is refused. Nothing here trusts the
/// code; the caller must still check that the header's engine settings
/// are its own before loading it.
pub fn open<'a>(
    bytes: &'a [u8],
    trusted: &[TrustedKey],
) -> Result<(Header, &'a [u8]), DeployError> {
    let invalid = |m: &str| DeployError::InvalidWasm(format!("the precompiled artifact {m}"));
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| invalid("has no Wisp header"))?;
    if rest.len() < 4 {
        return Err(invalid("is cut short"));
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_HEADER || rest.len() < 4 + len {
        return Err(invalid("has a header of a bad length"));
    }
    let header: Header = serde_json::from_slice(&rest[4..4 + len])
        .map_err(|e| invalid(&format!("has an unreadable header ({e})")))?;
    let code = &rest[4 + len..];
    if trusted.is_empty() {
        return Err(DeployError::Untrusted(
            "this host trusts no signing key, so it loads no precompiled code: start it with \
             --trusted-key FILE (the .pub file `wisp keygen` wrote), or upload the .wasm"
                .into(),
        ));
    }
    let Some(key) = trusted.iter().find(|k| k.id == header.key_id) else {
        return Err(DeployError::Untrusted(format!(
            "the precompiled artifact is signed with key {}, which this host does not trust \
             (--trusted-key); nothing was stored",
            header.key_id
        )));
    };
    let signature = base64::engine::general_purpose::STANDARD
        .decode(&header.signature)
        .unwrap_or_default();
    let mut checked = header.clone();
    checked.code_sha256 = hex::encode(Sha256::digest(code));
    let verified = checked.code_sha256 == header.code_sha256
        && UnparsedPublicKey::new(&ED25519, &key.bytes)
            .verify(&message(&checked), &signature)
            .is_ok();
    if !verified {
        return Err(DeployError::Untrusted(format!(
            "the precompiled artifact's signature does not verify with key {} (it was changed \
             after signing, or signed by another key of that id); nothing was stored",
            key.id
        )));
    }
    Ok((header, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            kind: "component".into(),
            target: "x86_64-unknown-linux-gnu".into(),
            engine: "cranelift".into(),
            settings: "0123456789abcdef".into(),
            source_sha256: "ab".repeat(32),
            code_sha256: String::new(),
            key_id: String::new(),
            signature: String::new(),
        }
    }

    fn keys(dir: &Path, name: &str) -> (SigningKey, TrustedKey) {
        let path = dir.join(name);
        let (public, id) = generate_keys(&path).unwrap();
        let key = SigningKey::from_file(&path).unwrap();
        let trusted = TrustedKey::from_file(&public).unwrap();
        assert_eq!((key.id(), &trusted.id), (id.clone(), &id));
        (key, trusted)
    }

    #[test]
    fn a_signed_artifact_opens_with_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let (key, trusted) = keys(dir.path(), "k");
        let (_, other) = keys(dir.path(), "other");
        let sealed = seal(header(), b"code bytes", &key);
        assert!(is_signed_artifact(&sealed));
        let (h, code) = open(&sealed, std::slice::from_ref(&trusted)).unwrap();
        assert_eq!((h.kind.as_str(), code), ("component", &b"code bytes"[..]));
        assert_eq!(h.key_id, trusted.id);

        let e = open(&sealed, std::slice::from_ref(&other)).unwrap_err();
        assert!(e.to_string().contains("does not trust"), "{e}");
        let e = open(&sealed, &[]).unwrap_err();
        assert!(e.to_string().contains("trusts no signing key"), "{e}");
        // Any byte changed, in the code or in the header: refused.
        for at in [sealed.len() - 1, MAGIC.len() + 4 + 10] {
            let mut tampered = sealed.clone();
            tampered[at] ^= 1;
            let e = open(&tampered, &[trusted.clone(), other.clone()]).unwrap_err();
            assert!(
                matches!(e, DeployError::Untrusted(_) | DeployError::InvalidWasm(_)),
                "{e}"
            );
        }
        let e = open(&sealed[..MAGIC.len() + 2], std::slice::from_ref(&trusted)).unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
    }

    #[test]
    fn keys_are_never_overwritten_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        keys(dir.path(), "k");
        assert!(generate_keys(&dir.path().join("k")).is_err());
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "nonsense").unwrap();
        let e = TrustedKey::from_file(&bad).unwrap_err().to_string();
        assert!(e.contains("not a Wisp public key"), "{e}");
        let e = SigningKey::from_file(&bad).unwrap_err().to_string();
        assert!(e.contains("not a Wisp signing key"), "{e}");
    }
}
