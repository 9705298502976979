//! What admin tokens and invoke keys have in common: a secret handed out
//! once, of which the host keeps only the sha256; a presented secret
//! checked against a table of hashes; names, ids and expiries.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::now_ms;

/// Longest name of a token or a key.
pub(super) const MAX_NAME: usize = 64;
/// Random bytes of a secret (hex-encoded after its prefix).
const SECRET_BYTES: usize = 32;

/// A stored secret as the request check holds it.
pub(super) trait Credential {
    /// Its sha256.
    fn hash(&self) -> &[u8; 32];
    fn name(&self) -> &str;
    fn id(&self) -> &str;
    /// When it expires (ms since the Unix epoch), if ever.
    fn expires_ms(&self) -> Option<u64>;
}

impl<C: Credential> Credential for Arc<C> {
    fn hash(&self) -> &[u8; 32] {
        C::hash(self)
    }
    fn name(&self) -> &str {
        C::name(self)
    }
    fn id(&self) -> &str {
        C::id(self)
    }
    fn expires_ms(&self) -> Option<u64> {
        C::expires_ms(self)
    }
}

/// Why a presented secret was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Mismatch {
    /// None has its hash (never created, or revoked).
    Unknown,
    /// The one named here expired.
    Expired(String),
}

/// The sha256 of a secret.
pub(super) fn hash(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// A new secret, `prefix` then random hex, and the hex of its hash (what
/// is stored).
pub(super) fn issue(prefix: &str) -> (String, String) {
    let secret = format!(
        "{prefix}{}",
        hex::encode(rand::random::<[u8; SECRET_BYTES]>())
    );
    let sha256 = hex::encode(hash(secret.as_bytes()));
    (secret, sha256)
}

/// A new record's id: random, not derived from its secret.
pub(super) fn new_id() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}

/// A stored hash decoded, or why it cannot be one.
pub(super) fn decode_hash(sha256: &str) -> Result<[u8; 32], String> {
    hex::decode(sha256)
        .ok()
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(|| "the hash is not a sha256".to_string())
}

/// The credential of `table` whose hash is `given`'s, unexpired. Every
/// hash is compared, each in constant time, so that the time taken says
/// nothing of which (or how much of one) matched.
pub(super) fn check<'a, C: Credential>(table: &'a [C], given: &str) -> Result<&'a C, Mismatch> {
    let given = hash(given.as_bytes());
    let mut found = None;
    for c in table {
        if bool::from(c.hash().ct_eq(&given)) {
            found = Some(c);
        }
    }
    let c = found.ok_or(Mismatch::Unknown)?;
    if c.expires_ms().is_some_and(|at| now_ms() >= at) {
        return Err(Mismatch::Expired(c.name().to_string()));
    }
    Ok(c)
}

/// The credential named `name_or_id`, or else the one with that id (what
/// a revoke names).
pub(super) fn find<'a, C: Credential>(table: &'a [C], name_or_id: &str) -> Option<&'a C> {
    table
        .iter()
        .find(|c| c.name() == name_or_id)
        .or_else(|| table.iter().find(|c| c.id() == name_or_id))
}

/// Whether a name is 1 to 64 letters, digits, `.`, `_` and `-` (a
/// token's, or an invoke key's).
pub(super) fn plain_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !name.is_empty() && name.len() <= MAX_NAME && name.chars().all(ok_char)
}

/// When a token or an invoke key expires: a duration from now (`30d`,
/// `12h`, `90s`) or an RFC 3339 time; either must be in the future.
pub(super) fn parse_expiry(s: &str, now_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    let invalid = |why: &str| format!("invalid expiry `{s}`: {why}");
    let at = if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    } else {
        let d = humantime::parse_duration(s).map_err(|_| {
            invalid("give a duration from now (30d, 12h, 90s) or an RFC 3339 time (2027-01-02T03:04:05Z)")
        })?;
        if d == Duration::ZERO {
            return Err(invalid("one that expires at once is of no use"));
        }
        now_ms.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    if at <= now_ms {
        return Err(invalid("that time has passed"));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fake {
        hash: [u8; 32],
        name: &'static str,
        id: &'static str,
        expires_ms: Option<u64>,
    }

    impl Credential for Fake {
        fn hash(&self) -> &[u8; 32] {
            &self.hash
        }
        fn name(&self) -> &str {
            self.name
        }
        fn id(&self) -> &str {
            self.id
        }
        fn expires_ms(&self) -> Option<u64> {
            self.expires_ms
        }
    }

    #[test]
    fn expiries_are_durations_or_times_in_the_future() {
        let now = 1_799_000_000_000;
        assert_eq!(parse_expiry("30d", now).unwrap(), now + 30 * 86_400_000);
        assert_eq!(parse_expiry("1s", now).unwrap(), now + 1000);
        assert_eq!(
            parse_expiry("2027-01-15T08:00:00Z", now).unwrap(),
            1_800_000_000_000
        );
        for bad in ["0s", "0", "soon", "", "-1d", "2020-01-01T00:00:00Z"] {
            let e = parse_expiry(bad, now).unwrap_err();
            assert!(e.starts_with("invalid expiry"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_secret_is_checked_by_its_hash_and_found_by_name_then_id() {
        let (secret, sha256) = issue("p_");
        assert!(secret.starts_with("p_") && secret.len() == 2 + 64);
        let (other, _) = issue("p_");
        assert_ne!(secret, other);
        let table = [
            Fake {
                hash: decode_hash(&sha256).unwrap(),
                name: "a",
                id: "b",
                expires_ms: None,
            },
            Fake {
                hash: hash(b"old"),
                name: "b",
                id: "c",
                expires_ms: Some(1),
            },
        ];
        assert_eq!(check(&table, &secret).unwrap().name, "a");
        assert_eq!(check(&table, &other).unwrap_err(), Mismatch::Unknown);
        assert_eq!(
            check(&table, "old").unwrap_err(),
            Mismatch::Expired("b".into())
        );
        // A name wins over an id.
        assert_eq!(find(&table, "b").unwrap().id, "c");
        assert_eq!(find(&table, "c").unwrap().name, "b");
        assert!(find(&table, "z").is_none());
        assert!(decode_hash("zz").is_err());
        assert!(plain_name("ci-1.x_y") && !plain_name("a b") && !plain_name(""));
    }
}
