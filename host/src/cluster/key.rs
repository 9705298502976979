//! The cluster key: secrets are sealed with it (AES-256-GCM, ring) before
//! they leave a host, so NATS never holds one in clear. Every host of a
//! cluster is given the same key (`--cluster-key-file`; `wisp cluster
//! keygen` writes one).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};

/// Bytes of a key.
const KEY_LEN: usize = 32;

/// A cluster key, read from its file. Its bytes are never shown.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub struct ClusterKey(LessSafeKey);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(********)")
    }
}

#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
impl ClusterKey {
    /// Writes a new random key to `path` (hex, mode 0600); refuses to
    /// replace a file that exists.
    pub fn generate(path: &Path) -> anyhow::Result<()> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        writeln!(file, "{}", hex::encode(bytes))?;
        file.sync_all()?;
        Ok(())
    }

    /// Reads a key written by [`ClusterKey::generate`].
    pub fn from_file(path: &Path) -> anyhow::Result<ClusterKey> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the cluster key {}: {e}", path.display()))?;
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == KEY_LEN)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} is not a cluster key ({} hex characters; `wisp cluster keygen FILE` \
                     writes one)",
                    path.display(),
                    KEY_LEN * 2
                )
            })?;
        Ok(ClusterKey::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8]) -> ClusterKey {
        let key = UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte key");
        ClusterKey(LessSafeKey::new(key))
    }

    /// Seals `value`, bound to `place` (which function and key it belongs
    /// to: a sealed value copied elsewhere does not open). Hex of nonce,
    /// ciphertext and tag.
    pub(crate) fn seal(&self, place: &str, value: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut data = value.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(place.as_bytes()),
                &mut data,
            )
            .expect("sealing a value under 4 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        hex::encode(out)
    }

    /// Opens a value sealed for `place`; `None` if it was sealed with
    /// another key (or for another place, or altered).
    pub(crate) fn open(&self, place: &str, sealed: &str) -> Option<String> {
        let bytes = hex::decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = rest.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(place.as_bytes()), &mut data)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_their_key_and_place_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        ClusterKey::generate(&path).unwrap();
        assert!(ClusterKey::generate(&path).is_err(), "never overwritten");
        let key = ClusterKey::from_file(&path).unwrap();
        let sealed = key.seal("f/TOKEN", "s3cret");
        assert!(!sealed.contains("s3cret"));
        assert_eq!(key.open("f/TOKEN", &sealed).as_deref(), Some("s3cret"));
        assert_eq!(key.open("g/TOKEN", &sealed), None, "bound to its place");
        let other = ClusterKey::from_bytes(&[7; KEY_LEN]);
        assert_eq!(other.open("f/TOKEN", &sealed), None);
        let mut tampered = sealed.clone();
        tampered.replace_range(30..32, if &sealed[30..32] == "00" { "01" } else { "00" });
        assert_eq!(key.open("f/TOKEN", &tampered), None);
        assert_eq!(format!("{key:?}"), "ClusterKey(********)");
    }

    #[test]
    fn a_file_that_is_not_a_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "not hex").unwrap();
        let e = ClusterKey::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("is not a cluster key"), "{e}");
    }
}
