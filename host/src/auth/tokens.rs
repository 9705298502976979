//! Admin tokens: their tree, and the table of them kept in memory so that
//! checking a request's token reads no disk and takes no lock.
//!
//! Tree `admin_tokens`: id → [`TokenRecord`] (JSON). A record holds the
//! token's sha256, never the token: the token is shown once, when created.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;

use super::scope::{Need, Scope};
use super::secret::{self, Credential, MAX_NAME, Mismatch, hash, plain_name};
use super::{CreatedToken, NewToken, TokenError, TokenInfo, now_ms};
use crate::store::{Durability, Json, Store, StoreError, Tree};

/// What every token starts with, so that one is recognisable (in a
/// secret scanner, in a file it should not be in).
const PREFIX: &str = "wisp_";
/// Most tokens a host keeps: the table is in memory and each request's
/// check looks at every entry.
pub(crate) const MAX_TOKENS: usize = 1000;
/// Most scopes one token holds.
const MAX_SCOPES: usize = 64;
/// The name the bootstrap token goes by (in the audit log), which no
/// token may take.
pub(crate) const BOOTSTRAP: &str = "bootstrap";

/// A token as stored: everything but the token itself.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub id: String,
    pub name: String,
    /// Hex of the token's sha256.
    pub sha256: String,
    pub scopes: Vec<String>,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
}

impl Json for TokenRecord {}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not even the hash reaches a log line through `{:?}`.
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("created_ms", &self.created_ms)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

/// A token as the request check holds it: its hash decoded, its scopes
/// parsed (once, when the table is loaded).
pub(crate) struct Entry {
    pub record: TokenRecord,
    hash: [u8; 32],
    scopes: Vec<Scope>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The record's `Debug`, which leaves the hash out.
        self.record.fmt(f)
    }
}

impl Entry {
    fn new(record: TokenRecord) -> Result<Entry, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            key: format!("admin_tokens/{}", record.id),
            reason,
        };
        let hash = secret::decode_hash(&record.sha256).map_err(corrupt)?;
        let scopes = record
            .scopes
            .iter()
            .map(|s| Scope::parse(s))
            .collect::<Result<_, _>>()
            .map_err(corrupt)?;
        Ok(Entry {
            record,
            hash,
            scopes,
        })
    }

    /// Whether one of the token's scopes allows `need`.
    pub fn allows(&self, need: &Need) -> bool {
        self.scopes.iter().any(|s| s.allows(need))
    }

    fn info(&self) -> TokenInfo {
        let r = &self.record;
        TokenInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            scopes: r.scopes.clone(),
            created_ms: r.created_ms,
            expires_ms: r.expires_ms,
        }
    }
}

impl Credential for Entry {
    fn hash(&self) -> &[u8; 32] {
        &self.hash
    }
    fn name(&self) -> &str {
        &self.record.name
    }
    fn id(&self) -> &str {
        &self.record.id
    }
    fn expires_ms(&self) -> Option<u64> {
        self.record.expires_ms
    }
}

/// Who sent a request, once its token checked out.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// The bootstrap token (the data directory's, or `WISP_ADMIN_TOKEN`):
    /// every right.
    Bootstrap,
    /// A token created through the API.
    Token(Arc<Entry>),
}

impl Caller {
    /// The caller's name in the audit log.
    pub fn name(&self) -> &str {
        match self {
            Caller::Bootstrap => BOOTSTRAP,
            Caller::Token(t) => &t.record.name,
        }
    }

    /// Whether the caller may do what a request needs.
    pub fn allows(&self, need: &Need) -> bool {
        match self {
            Caller::Bootstrap => true,
            Caller::Token(t) => t.allows(need),
        }
    }

    /// The caller's scopes, as its token was created with them (the
    /// bootstrap token: `admin`).
    pub fn scopes(&self) -> Vec<String> {
        match self {
            Caller::Bootstrap => vec!["admin".to_string()],
            Caller::Token(t) => t.record.scopes.clone(),
        }
    }
}

/// Why a request's token was refused (401).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No such token (never created, or revoked).
    Unknown,
    /// The token named here expired.
    Expired(String),
}

/// The tokens: their tree, and the table of them in memory; cheap to
/// clone.
#[derive(Clone)]
pub(crate) struct Tokens {
    store: Store,
    tree: Tree<String, TokenRecord>,
    /// Every token, swapped whole after each create or revoke; what a
    /// request's token is checked against.
    table: Arc<ArcSwap<Vec<Arc<Entry>>>>,
    /// Serialises creates and revokes, so that a name is checked and
    /// taken (or a token found and removed) with nothing in between.
    changes: Arc<Mutex<()>>,
}

impl Tokens {
    /// Opens the tree and loads the table.
    pub fn open(store: &Store) -> Result<Tokens, StoreError> {
        let tokens = Tokens {
            store: store.clone(),
            tree: store.tree("admin_tokens")?,
            table: Arc::default(),
            changes: Arc::default(),
        };
        tokens.reload()?;
        Ok(tokens)
    }

    fn reload(&self) -> Result<(), StoreError> {
        let mut table = Vec::new();
        for item in self.tree.scan() {
            let (_, record) = item?;
            table.push(Arc::new(Entry::new(record)?));
        }
        self.table.store(Arc::new(table));
        Ok(())
    }

    /// Checks a bearer token: the bootstrap token (`bootstrap`), or one of
    /// the table's, unexpired. Only hashes are compared, each in constant
    /// time and every one of them, so that the time taken says nothing of
    /// which (or how much of one) matched.
    pub fn authenticate(&self, given: &str, bootstrap: &str) -> Result<Caller, Refused> {
        if bool::from(hash(given.as_bytes()).ct_eq(&hash(bootstrap.as_bytes()))) {
            return Ok(Caller::Bootstrap);
        }
        match secret::check(&self.table.load(), given) {
            Ok(entry) => Ok(Caller::Token(entry.clone())),
            Err(Mismatch::Unknown) => Err(Refused::Unknown),
            Err(Mismatch::Expired(name)) => Err(Refused::Expired(name)),
        }
    }

    /// Every token, by name (no token, no hash).
    pub fn list(&self) -> Vec<TokenInfo> {
        let mut list: Vec<_> = self.table.load().iter().map(|e| e.info()).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Creates a token: checks everything first (nothing is stored for a
    /// refused request), then stores its hash, durably, before answering
    /// the token.
    pub async fn create(&self, new: NewToken) -> Result<CreatedToken, TokenError> {
        let now = now_ms();
        let id = secret::new_id();
        let name = new.name.unwrap_or_else(|| format!("token-{id}"));
        validate_name(&name)?;
        if new.scopes.is_empty() {
            return Err(TokenError::InvalidScope(
                "a token needs at least one scope (--scope)".into(),
            ));
        }
        if new.scopes.len() > MAX_SCOPES {
            return Err(TokenError::InvalidScope(format!(
                "a token holds at most {MAX_SCOPES} scopes"
            )));
        }
        let mut scopes = new
            .scopes
            .iter()
            .map(|s| Scope::parse(s.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(TokenError::InvalidScope)?;
        scopes.sort();
        scopes.dedup();
        let expires_ms = new
            .expires
            .as_deref()
            .map(|e| secret::parse_expiry(e, now))
            .transpose()
            .map_err(TokenError::InvalidExpiry)?;

        let _changing = self.changes.lock().await;
        let table = self.table.load();
        if table.iter().any(|e| e.record.name == name) {
            return Err(TokenError::NameTaken(name));
        }
        if table.len() >= MAX_TOKENS {
            return Err(TokenError::TooMany);
        }
        let (token, sha256) = secret::issue(PREFIX);
        let record = TokenRecord {
            id,
            name,
            sha256,
            scopes: scopes.iter().map(ToString::to_string).collect(),
            created_ms: now,
            expires_ms,
        };
        let (tree, stored) = (self.tree.clone(), record.clone());
        self.store
            .write(Durability::Flushed, move |w| {
                tree.insert(w, &stored.id, &stored)
            })
            .await??;
        let entry = Entry::new(record)?;
        let info = entry.info();
        let mut next = Vec::clone(&table);
        next.push(Arc::new(entry));
        self.table.store(Arc::new(next));
        Ok(CreatedToken { token, info })
    }

    /// Revokes the token of that name, or else of that id; answers what
    /// it was. From the answer on, the token is refused.
    pub async fn revoke(&self, name_or_id: &str) -> Result<TokenInfo, TokenError> {
        let _changing = self.changes.lock().await;
        let table = self.table.load();
        let entry = secret::find(&table, name_or_id)
            .ok_or_else(|| TokenError::NotFound(name_or_id.to_string()))?
            .clone();
        let (tree, id) = (self.tree.clone(), entry.record.id.clone());
        self.store
            .write(Durability::Flushed, move |w| tree.remove(w, &id))
            .await??;
        let next = table
            .iter()
            .filter(|e| !Arc::ptr_eq(e, &entry))
            .cloned()
            .collect();
        self.table.store(Arc::new(next));
        Ok(entry.info())
    }
}

/// A token's name: 1 to 64 letters, digits, `.`, `_` and `-`; not the
/// bootstrap token's.
fn validate_name(name: &str) -> Result<(), TokenError> {
    if !plain_name(name) {
        return Err(TokenError::InvalidName(format!(
            "invalid token name {name:?}: 1 to {MAX_NAME} letters, digits, `.`, `_` or `-`"
        )));
    }
    if name == BOOTSTRAP {
        return Err(TokenError::InvalidName(format!(
            "the name `{BOOTSTRAP}` is the bootstrap token's"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain_and_not_the_bootstraps() {
        for good in ["ci", "deploy-bot.prod", "A_1"] {
            validate_name(good).unwrap();
        }
        for bad in ["", "a b", "x/y", &"n".repeat(65), "bootstrap"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_token_is_stored_as_its_hash_and_checked_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let tokens = Tokens::open(&store).unwrap();
        let created = tokens
            .create(NewToken {
                name: Some("ci".into()),
                scopes: vec!["deploy:hello".into(), "read:*".into(), "read:*".into()],
                expires: None,
            })
            .await
            .unwrap();
        assert!(created.token.starts_with("wisp_"));
        assert_eq!(created.token.len(), 5 + 64);
        assert_eq!(created.info.scopes, ["deploy:hello", "read:*"]);
        // The tree holds the hash, never the token.
        let stored = tokens.tree.get(&created.info.id).unwrap().unwrap();
        assert_eq!(stored.sha256, hex::encode(hash(created.token.as_bytes())));
        assert!(
            !serde_json::to_string(&stored)
                .unwrap()
                .contains(&created.token)
        );

        let caller = tokens.authenticate(&created.token, "boot").unwrap();
        assert_eq!(caller.name(), "ci");
        assert!(caller.allows(&Need::Deploy("hello".into())));
        assert!(!caller.allows(&Need::Deploy("other".into())));
        assert_eq!(
            tokens.authenticate("wisp_nope", "boot").unwrap_err(),
            Refused::Unknown
        );
        assert_eq!(
            tokens.authenticate("boot", "boot").unwrap().name(),
            BOOTSTRAP
        );

        // A second host on the same store sees it (the table loads from
        // the tree).
        let again = Tokens::open(&store).unwrap();
        assert_eq!(again.list(), tokens.list());

        let dup = tokens
            .create(NewToken {
                name: Some("ci".into()),
                scopes: vec!["admin".into()],
                expires: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(dup, TokenError::NameTaken(_)), "{dup}");

        tokens.revoke(&created.info.id).await.unwrap();
        assert_eq!(
            tokens.authenticate(&created.token, "boot").unwrap_err(),
            Refused::Unknown
        );
        assert!(tokens.list().is_empty());
        assert!(Tokens::open(&store).unwrap().list().is_empty());
        assert!(matches!(
            tokens.revoke("ci").await.unwrap_err(),
            TokenError::NotFound(_)
        ));

        // Without a name, the id makes one.
        let unnamed = tokens
            .create(NewToken {
                name: None,
                scopes: vec!["read:*".into()],
                expires: None,
            })
            .await
            .unwrap();
        assert_eq!(unnamed.info.name, format!("token-{}", unnamed.info.id));
    }
}
