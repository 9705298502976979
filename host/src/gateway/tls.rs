//! TLS on a listener (rustls, with the ring provider the outbound client
//! uses): a certificate chain and its key read from PEM files, offered with
//! HTTP/2 and HTTP/1.1 by ALPN.
//!
//! The files are read again without a restart: when either changes on disk
//! (checked every [`WATCH_INTERVAL`] while the host serves) and when asked
//! ([`Tls::reload`], which `wisp serve` calls on SIGHUP). A reload swaps
//! the configuration new handshakes use; connections already open keep
//! theirs, so nothing is dropped. Files that cannot be used (half-written,
//! a key that does not match) leave the current certificate in place and
//! are logged: a renewal gone wrong must not take the host off the air.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

/// How often the files are looked at for a change.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Why a certificate or key cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not PEM, or no certificate in it.
    #[error("{path} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// Not PEM, or no private key in it.
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the pair (a key that does not match the certificate,
    /// an unsupported key type, a malformed certificate).
    #[error("the certificate {cert} and the key {key} cannot be used together: {reason}")]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's words.
        reason: String,
    },
}

/// What a file looked like when it was read: a change to any of these is a
/// change to the file (a rename over it, as certificate tools do, included).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// A listener's TLS: the files, and the configuration handshakes use now.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<ServerConfig>,
    /// The files' stamps as of the last attempt to read them (successful or
    /// not: a broken file is reported once, not every interval).
    seen: Mutex<(Option<Stamp>, Option<Stamp>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks a certificate chain (`cert`: the server's
    /// certificate first, then intermediates) and its private key, both
    /// PEM. `wisp serve` calls this before it listens, so that a bad file
    /// stops it with this error.
    pub fn from_pem_files(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Result<Tls, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let seen = (stamp(&cert), stamp(&key));
        let config = load(&cert, &key)?;
        Ok(Tls {
            cert,
            key,
            current: ArcSwap::from(config),
            seen: Mutex::new(seen),
        })
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// Reads the files again now. On success new handshakes use them; on an
    /// error the current certificate stays and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let seen = (stamp(&self.cert), stamp(&self.key));
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        let config = load(&self.cert, &self.key)?;
        self.current.store(config);
        Ok(())
    }

    /// Reloads if either file changed since it was last read; logs what
    /// happened. Returns whether it reloaded.
    fn reload_if_changed(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return false;
            }
        }
        match self.reload() {
            Ok(()) => {
                tracing::info!(cert = %self.cert.display(), "TLS certificate changed on disk: reloaded");
                true
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "TLS certificate changed on disk but cannot be used: still serving the previous one"
                );
                false
            }
        }
    }

    /// The acceptor for the next handshake.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Looks at the files every [`WATCH_INTERVAL`] until `stop`.
    pub(crate) async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let tls = self.clone();
            // Reading files: off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
        }
    }
}

/// Reads the pair into a server configuration: TLS 1.2 and 1.3, HTTP/2
/// preferred over HTTP/1.1 by ALPN.
fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate {
            path: cert.to_path_buf(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey {
        path: key.to_path_buf(),
    })?;
    let refused = |e: rustls::Error| TlsError::Refused {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    };
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(refused)?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(refused)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
