//! The key-value key and cursor encoding, against a real store.
//!
//! Two functions (whose names may be prefixes of each other) set, get,
//! delete and list keys, with expiry, on one store; a model (a sorted map
//! per function) says what each must see. Properties: keys round-trip
//! through the store encoding; one function's prefix never covers another
//! function's keys; a listing paged with its cursors returns exactly the
//! function's live keys with that prefix, in byte order; a forged cursor is
//! refused or lists only keys after it; invalid keys are refused and store
//! nothing.

#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wisp_host::fuzzing::{
    KvStore, kv_check_key, kv_decode_cursor, kv_encode_cursor, kv_ns_key, kv_ns_prefix,
    validate_name,
};

/// The default key limit (`Limits::default().kv_max_key_bytes`).
const MAX_KEY_BYTES: usize = 512;

static STORE: LazyLock<KvStore> = LazyLock::new(|| KvStore::open().expect("opening a store"));
/// Each input gets function names of its own, so inputs do not see each
/// other's keys.
static RUN: AtomicU64 = AtomicU64::new(0);

/// A key: mostly built from a few characters that collide and share
/// prefixes (including NUL, the namespace separator, and multi-byte ones);
/// sometimes any string (empty, too long).
#[derive(Arbitrary, Debug)]
enum Key {
    Small(Vec<u8>),
    Any(String),
}

impl Key {
    fn text(&self) -> String {
        const PIECES: [&str; 8] = ["a", "b", "/", "\0", "é", "\u{10ffff}", "ab", "k1."];
        match self {
            Key::Small(b) => b
                .iter()
                .take(12)
                .map(|&i| PIECES[usize::from(i) % PIECES.len()])
                .collect(),
            Key::Any(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Set {
        second: bool,
        key: Key,
        len: u8,
        ttl: Option<u8>,
    },
    Get {
        second: bool,
        key: Key,
    },
    Delete {
        second: bool,
        key: Key,
    },
    List {
        second: bool,
        prefix: Key,
        limit: u8,
    },
    Cursor {
        second: bool,
        prefix: Key,
        cursor: String,
    },
    Forged {
        second: bool,
        prefix: Key,
        after: Key,
    },
    Tick(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Name suffixes, from `[a-z0-9-]`.
    names: [Vec<u8>; 2],
    ops: Vec<Op>,
}

/// A stored entry in the model: its value and when it expires.
type Model = BTreeMap<String, (Vec<u8>, Option<u64>)>;

fn live(model: &Model, key: &str, now: u64) -> Option<Vec<u8>> {
    model
        .get(key)
        .filter(|(_, exp)| exp.is_none_or(|t| now < t))
        .map(|(v, _)| v.clone())
}

fn name(run: u64, suffix: &[u8]) -> String {
    const ALPHABET: &[u8] = b"abz09-";
    let tail: String = suffix
        .iter()
        .take(8)
        .map(|&b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect();
    format!("r{run}{tail}")
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES
}

fuzz_target!(|input: Input| {
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let names = input.names.each_ref().map(|s| name(run, s));
    if names.iter().any(|n| validate_name(n).is_err()) {
        return;
    }
    // The encoding: a key comes back whole from its function's namespace,
    // and one function's prefix never covers another's keys.
    for key in ["", "a", "\0", "é/\0x"] {
        for (i, n) in names.iter().enumerate() {
            let k = kv_ns_key(n, key);
            let p = kv_ns_prefix(n);
            assert_eq!(k.strip_prefix(p.as_slice()), Some(key.as_bytes()));
            let other = &names[1 - i];
            if other != n {
                assert!(
                    !kv_ns_key(other, key).starts_with(&p),
                    "{other:?} inside {n:?}"
                );
            }
        }
    }

    let store = &*STORE;
    let ns = names.each_ref().map(|n| store.namespace(n));
    // Equal names share one namespace, and one model.
    let mut models: HashMap<String, Model> = HashMap::new();
    let mut now = 1_000u64;
    for op in input.ops.iter().take(64) {
        match op {
            Op::Set {
                second,
                key,
                len,
                ttl,
            } => {
                let (i, key) = (usize::from(*second), key.text());
                let value = vec![*len; usize::from(*len)];
                let ttl = ttl.map(u64::from);
                let result = ns[i].set(&key, &value, ttl, now);
                assert_eq!(
                    kv_check_key(&key, MAX_KEY_BYTES as u64).is_ok(),
                    valid_key(&key)
                );
                if valid_key(&key) {
                    assert!(result.expect("set"), "a set writes");
                    let expires = ttl.map(|t| (now + t).max(1));
                    models
                        .entry(names[i].clone())
                        .or_default()
                        .insert(key, (value, expires));
                } else {
                    assert!(result.is_err(), "invalid key {key:?} accepted");
                }
            }
            Op::Get { second, key } => {
                let (i, key) = (usize::from(*second), key.text());
                let got = ns[i].get(&key, now);
                if valid_key(&key) {
                    let model = models.entry(names[i].clone()).or_default();
                    assert_eq!(got.expect("get"), live(model, &key, now), "get {key:?}");
                } else {
                    assert!(got.is_err());
                }
            }
            Op::Delete { second, key } => {
                let (i, key) = (usize::from(*second), key.text());
                let got = ns[i].delete(&key, now);
                if valid_key(&key) {
                    let model = models.entry(names[i].clone()).or_default();
                    let was = live(model, &key, now).is_some();
                    model.remove(&key);
                    assert_eq!(got.expect("delete"), was, "delete {key:?}");
                } else {
                    assert!(got.is_err());
                }
            }
            Op::List {
                second,
                prefix,
                limit,
            } => {
                let (i, prefix) = (usize::from(*second), prefix.text());
                let limit = u32::from(*limit % 5);
                let page_max = if limit == 0 { 1000 } else { limit as usize };
                let mut keys = Vec::new();
                let mut cursor: Option<String> = None;
                for _ in 0..1000 {
                    let page = ns[i]
                        .list(&prefix, cursor.as_deref(), limit, now)
                        .expect("list");
                    assert!(page.keys.len() <= page_max);
                    keys.extend(page.keys);
                    match page.cursor {
                        Some(c) => {
                            assert_eq!(kv_decode_cursor(&c, &prefix).ok().as_ref(), keys.last());
                            cursor = Some(c);
                        }
                        None => break,
                    }
                }
                let model = models.entry(names[i].clone()).or_default();
                let want: Vec<String> = model
                    .keys()
                    .filter(|k| k.starts_with(&prefix) && live(model, k, now).is_some())
                    .cloned()
                    .collect();
                assert_eq!(keys, want, "listing {prefix:?} of {}", names[i]);
            }
            Op::Cursor {
                second,
                prefix,
                cursor,
            } => {
                let (i, prefix) = (usize::from(*second), prefix.text());
                check_after(&ns[i], &prefix, cursor, now);
            }
            Op::Forged {
                second,
                prefix,
                after,
            } => {
                let (i, prefix) = (usize::from(*second), prefix.text());
                let after = after.text();
                let cursor = kv_encode_cursor(&after);
                let decoded = kv_decode_cursor(&cursor, &prefix);
                if !after.is_empty() && after.starts_with(&prefix) {
                    assert_eq!(decoded.expect("a cursor round-trips"), after);
                } else {
                    assert!(decoded.is_err());
                }
                check_after(&ns[i], &prefix, &cursor, now);
            }
            Op::Tick(dt) => now += u64::from(*dt),
        }
    }

    // Leave the store as it was found.
    for (name, model) in models {
        let n = store.namespace(&name);
        for key in model.keys() {
            n.delete(key, now).expect("cleanup");
        }
        assert!(n.list("", None, 0, now).expect("list").keys.is_empty());
    }
});

/// A page after any cursor: refused, or keys after the cursor's key that
/// start with the prefix.
fn check_after(ns: &wisp_host::fuzzing::KvNamespace, prefix: &str, cursor: &str, now: u64) {
    match ns.list(prefix, Some(cursor), 3, now) {
        Err(wisp_host::KvError::InvalidCursor) => {
            assert!(kv_decode_cursor(cursor, prefix).is_err());
        }
        Err(e) => panic!("listing after {cursor:?}: {e}"),
        Ok(page) => {
            let after = kv_decode_cursor(cursor, prefix).expect("an accepted cursor decodes");
            for k in &page.keys {
                assert!(
                    k.starts_with(prefix) && k.as_str() > after.as_str(),
                    "{k:?} after {after:?}"
                );
            }
        }
    }
}
