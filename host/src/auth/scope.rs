//! Scopes of admin tokens and what each allows: pure rules, no store, no
//! HTTP (the admin router works out which [`Need`] a request has).
//!
//! - `admin`: everything.
//! - `deploy:NAME`: every write on that function (deploy, rollback, delete,
//!   its settings and secrets, its key-value data) and every read under
//!   `/v1/functions/NAME`; `deploy:*` the same for every function.
//! - `read:*`: every read (GET) but the token list and the audit log.
//! - `invoke:NAME`: the admin API's invoke endpoints of that function.
//!
//! A wildcard exists only as `deploy:*` and `read:*`: reading is not split
//! by function (`read:hello` is refused), and an invoke scope names its
//! function.

use std::fmt;

use crate::routes::validate_name;

/// A scope a token holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Scope {
    /// `admin`: everything.
    Admin,
    /// `deploy:*`: writes and reads of every function.
    DeployAll,
    /// `deploy:NAME`: writes and reads of one function.
    Deploy(String),
    /// `read:*`: every read but tokens and the audit log.
    ReadAll,
    /// `invoke:NAME`: invoking one function through the admin API.
    Invoke(String),
}

impl Scope {
    /// Parses a scope as a token is created with it; the error says what
    /// the scopes are.
    pub fn parse(s: &str) -> Result<Scope, String> {
        let refuse = |why: &str| {
            format!(
                "invalid scope `{s}`: {why} (scopes: admin, read:*, deploy:*, deploy:NAME, invoke:NAME)"
            )
        };
        let (kind, target) = match s.split_once(':') {
            Some((kind, target)) => (kind, Some(target)),
            None => (s, None),
        };
        let function = |target: &str| {
            validate_name(target)
                .map(|()| target.to_string())
                .map_err(|e| refuse(&format!("`{target}` is not a function name: {e}")))
        };
        match (kind, target) {
            ("admin", None) => Ok(Scope::Admin),
            ("read", Some("*")) => Ok(Scope::ReadAll),
            ("read", Some(_)) => Err(refuse("reading is granted for every function (`read:*`)")),
            ("deploy", Some("*")) => Ok(Scope::DeployAll),
            ("deploy", Some(name)) => function(name).map(Scope::Deploy),
            ("invoke", Some("*")) => Err(refuse("an invoke scope names its function")),
            ("invoke", Some(name)) => function(name).map(Scope::Invoke),
            ("read" | "deploy" | "invoke", None) => {
                Err(refuse(&format!("`{kind}` needs a target (`{kind}:...`)")))
            }
            ("admin", Some(_)) => Err(refuse("`admin` takes no target")),
            _ => Err(refuse("unknown scope")),
        }
    }

    /// Whether this scope allows what a request needs.
    pub fn allows(&self, need: &Need) -> bool {
        match (self, need) {
            (Scope::Admin, _) | (_, Need::Any) => true,
            (Scope::ReadAll, Need::Read | Need::ReadFunction(_)) => true,
            (Scope::DeployAll, Need::Deploy(_) | Need::ReadFunction(_)) => true,
            (Scope::Deploy(mine), Need::Deploy(f) | Need::ReadFunction(f)) => mine == f,
            (Scope::Invoke(mine), Need::Invoke(f)) => mine == f,
            _ => false,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::DeployAll => f.write_str("deploy:*"),
            Scope::Deploy(name) => write!(f, "deploy:{name}"),
            Scope::ReadAll => f.write_str("read:*"),
            Scope::Invoke(name) => write!(f, "invoke:{name}"),
        }
    }
}

/// What a request needs (the admin router decides it from the route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any valid token: routes that answer each caller with what it may
    /// see (`/v1/whoami`, `/v1/stats`).
    Any,
    /// Token management, the audit log, events, schedules and jobs
    /// writes, and any write not listed below: `admin`.
    Admin,
    /// A read not about one function: `read:*`.
    Read,
    /// A read under `/v1/functions/NAME`: `read:*`, `deploy:*` or
    /// `deploy:NAME`.
    ReadFunction(String),
    /// A write of a function: `deploy:*` or `deploy:NAME`.
    Deploy(String),
    /// Invoking a function: `invoke:NAME`.
    Invoke(String),
}

impl Need {
    /// The scopes that would do, for the 403's message ("this token lacks
    /// the scope `deploy:hello`"); `admin` always would, and is named only
    /// when nothing else would.
    pub fn wanted(&self) -> String {
        match self {
            Need::Any => "any".into(),
            Need::Admin => "`admin`".into(),
            Need::Read => "`read:*`".into(),
            Need::ReadFunction(f) => format!("`read:*` or `deploy:{f}`"),
            Need::Deploy(f) => format!("`deploy:{f}`"),
            Need::Invoke(f) => format!("`invoke:{f}`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print_back() {
        for s in [
            "admin",
            "read:*",
            "deploy:*",
            "deploy:hello",
            "invoke:my-fn",
        ] {
            assert_eq!(Scope::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            Scope::parse("deploy:hello").unwrap(),
            Scope::Deploy("hello".into())
        );
    }

    #[test]
    fn unknown_and_malformed_scopes_are_refused() {
        for (s, why) in [
            ("", "unknown scope"),
            ("deploy", "needs a target"),
            ("read", "needs a target"),
            ("invoke", "needs a target"),
            ("foo:bar", "unknown scope"),
            ("read:hello", "`read:*`"),
            ("invoke:*", "names its function"),
            ("admin:x", "takes no target"),
            ("deploy:Hello", "not a function name"),
            ("deploy:a/b", "not a function name"),
            ("deploy:", "not a function name"),
            ("Admin", "unknown scope"),
            ("deploy:he*", "not a function name"),
        ] {
            let e = Scope::parse(s).unwrap_err();
            assert!(e.starts_with(&format!("invalid scope `{s}`")), "{e}");
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn each_scope_allows_what_it_says_and_nothing_else() {
        let f = |s: &str| s.to_string();
        let needs = [
            Need::Any,
            Need::Admin,
            Need::Read,
            Need::ReadFunction(f("hello")),
            Need::ReadFunction(f("other")),
            Need::Deploy(f("hello")),
            Need::Deploy(f("other")),
            Need::Invoke(f("hello")),
            Need::Invoke(f("other")),
        ];
        let allowed = |scope: &str| -> Vec<&Need> {
            let scope = Scope::parse(scope).unwrap();
            needs.iter().filter(|n| scope.allows(n)).collect()
        };
        assert_eq!(allowed("admin").len(), needs.len());
        assert_eq!(
            allowed("read:*"),
            [&needs[0], &needs[2], &needs[3], &needs[4]]
        );
        assert_eq!(
            allowed("deploy:*"),
            [&needs[0], &needs[3], &needs[4], &needs[5], &needs[6]]
        );
        assert_eq!(allowed("deploy:hello"), [&needs[0], &needs[3], &needs[5]]);
        assert_eq!(allowed("invoke:hello"), [&needs[0], &needs[7]]);
    }

    #[test]
    fn refusals_name_the_scope_wanted() {
        assert_eq!(Need::Deploy("hello".into()).wanted(), "`deploy:hello`");
        assert_eq!(Need::Read.wanted(), "`read:*`");
        assert_eq!(Need::Admin.wanted(), "`admin`");
    }
}
