//! `wisp new`: writes a ready-to-build function crate from a template.
//!
//! The templates are in `templates/`, compiled into the binary; `__NAME__`,
//! `__CRATE__`, `__LIB__`, `__TEMPLATE__`, `__WASI__` and `__SDK_DEP__` are
//! replaced. The crate depends on the SDK's source that the binary carries
//! too, written to a cache directory (`sdk`), so it builds with nothing but
//! `wisp` and the Rust toolchain.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

mod sdk;

/// `wisp new`.
#[derive(Args)]
pub struct NewArgs {
    /// Function name (and crate name): lowercase letters, digits and `-`,
    /// 1 to 63 characters, as for `wisp deploy`.
    name: String,
    /// What the generated function starts as.
    #[arg(long, value_enum, default_value_t = Template::Http)]
    template: Template,
    /// The WASI version the component is built for: 0.2 (it exports
    /// `wasi:http/incoming-handler`, the `wasi:http/proxy` world) or 0.3
    /// (`wasi:http/handler`, the `service` world). The code is the same;
    /// only the SDK dependency in Cargo.toml differs.
    #[arg(long, value_enum, default_value_t = Wasi::P2)]
    wasi: Wasi,
    /// Directory to create [default: ./NAME]. It must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
    /// The wisp-sdk crate to depend on: a Wisp checkout's `sdk` directory
    /// (its WASI 0.3 build is `p3` in it) [default: a copy of the SDK this
    /// binary carries, written to $XDG_CACHE_HOME/wisp/sdk/VERSION, or
    /// ~/.cache/wisp/sdk/VERSION].
    #[arg(long, value_name = "DIR")]
    sdk_path: Option<PathBuf>,
}

/// The templates of `wisp new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Template {
    /// One `#[handler]` function answering every request.
    Http,
    /// A router with path parameters and JSON bodies.
    Router,
    /// A router over the function's key-value store.
    Kv,
}

impl Template {
    fn name(self) -> &'static str {
        match self {
            Template::Http => "http",
            Template::Router => "router",
            Template::Kv => "kv",
        }
    }

    fn lib_rs(self) -> &'static str {
        match self {
            Template::Http => include_str!("templates/http.rs.tmpl"),
            Template::Router => include_str!("templates/router.rs.tmpl"),
            Template::Kv => include_str!("templates/kv.rs.tmpl"),
        }
    }
}

/// The WASI version of the component `wisp new` sets up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Wasi {
    /// WASI 0.2: wasi:http/proxy, through wisp-sdk.
    #[value(name = "0.2")]
    P2,
    /// WASI 0.3: wasi:http/service, through wisp-sdk-p3.
    #[value(name = "0.3")]
    P3,
}

impl Wasi {
    fn name(self) -> &'static str {
        match self {
            Wasi::P2 => "0.2",
            Wasi::P3 => "0.3",
        }
    }
}

const CARGO_TOML: &str = include_str!("templates/Cargo.toml.tmpl");
const README: &str = include_str!("templates/README.md.tmpl");
const GITIGNORE: &str = include_str!("templates/gitignore.tmpl");

/// Runs `wisp new`.
pub fn run(args: NewArgs) -> Result<()> {
    let cache = || {
        let var = |name| std::env::var(name).ok();
        sdk::cache_root(var("XDG_CACHE_HOME").as_deref(), var("HOME").as_deref())
    };
    print!("{}", create(&args, cache)?);
    Ok(())
}

/// Makes the crate, taking the SDK from `--sdk-path` or writing it under
/// `cache` (called only then); returns what to tell the user.
fn create(args: &NewArgs, cache: impl FnOnce() -> Result<PathBuf>) -> Result<String> {
    wisp_host::routes::validate_name(&args.name).map_err(anyhow::Error::msg)?;
    let dir = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    check_empty(&dir)?;
    let sdk = match &args.sdk_path {
        Some(path) => sdk_dir(path, "wisp-sdk")?,
        None => sdk::ensure(&cache()?)?.join("sdk"),
    };
    if args.wasi == Wasi::P3 {
        sdk_dir(&sdk.join("p3"), "wisp-sdk-p3")
            .context("the SDK has no WASI 0.3 build (p3/ in it)")?;
    }
    let files = render(&args.name, args.template, args.wasi, &sdk);
    for (relative, contents) in &files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut out = format!(
        "created function `{}` in {} ({} template, WASI {})
the Wisp SDK: {}
",
        args.name,
        dir.display(),
        args.template.name(),
        args.wasi.name(),
        sdk.display()
    );
    let _ = write!(
        out,
        "next:\n  cd {}\n  cargo test\n  wisp deploy {} --from . --route '/{}/*'\n",
        dir.display(),
        args.name,
        args.name
    );
    Ok(out)
}

/// Refuses a directory that exists and has anything in it.
fn check_empty(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} already exists and is not empty; pick another name or --path",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            bail!("{} already exists and is not a directory", dir.display())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// `path`, absolute, if it holds the crate `package` (wisp-sdk or
/// wisp-sdk-p3).
fn sdk_dir(path: &Path, package: &str) -> Result<PathBuf> {
    let manifest = path.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("no {package} crate at {}", path.display()))?;
    if !text.contains(&format!("name = \"{package}\"")) {
        bail!(
            "{} is not the {package} crate (its Cargo.toml has another name)",
            path.display()
        );
    }
    std::fs::canonicalize(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// The files of the new crate, by path relative to its directory. `sdk`
/// is the wisp-sdk crate; its WASI 0.3 build is `p3` in it.
fn render(name: &str, template: Template, wasi: Wasi, sdk: &Path) -> Vec<(&'static str, String)> {
    let krate = crate_name(name);
    let lib = krate.replace('-', "_");
    let p2 = format!(
        "wisp-sdk = {{ path = {} }}",
        toml_string(&sdk.to_string_lossy())
    );
    let p3 = format!(
        "wisp-sdk = {{ package = \"wisp-sdk-p3\", path = {} }}",
        toml_string(&sdk.join("p3").to_string_lossy())
    );
    // The line that switches the WASI version, with the other choice in a
    // comment beside it.
    let sdk_dep = match wasi {
        Wasi::P2 => format!(
            "# A WASI 0.2 component (wasi:http/proxy). The same code builds as a\n\
             # WASI 0.3 one (wasi:http/service) with this line instead:\n\
             # {p3}\n{p2}"
        ),
        Wasi::P3 => format!(
            "# A WASI 0.3 component (wasi:http/service). The same code builds as a\n\
             # WASI 0.2 one (wasi:http/proxy) with this line instead:\n\
             # {p2}\n{p3}"
        ),
    };
    let fill = |text: &str| {
        text.replace("__SDK_DEP__", &sdk_dep)
            .replace("__CRATE__", &krate)
            .replace("__LIB__", &lib)
            .replace("__TEMPLATE__", template.name())
            .replace("__WASI__", wasi.name())
            .replace("__NAME__", name)
    };
    vec![
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(template.lib_rs())),
        ("README.md", fill(README)),
        (".gitignore", fill(GITIGNORE)),
    ]
}

/// The crate's name: the function's name, unless Cargo would refuse it (a
/// leading digit, a Rust keyword, a name of the standard library), then
/// `fn-NAME`.
fn crate_name(name: &str) -> String {
    const RESERVED: &[&str] = &[
        "abstract",
        "alloc",
        "as",
        "async",
        "await",
        "become",
        "box",
        "break",
        "const",
        "continue",
        "core",
        "crate",
        "do",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "final",
        "fn",
        "for",
        "gen",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "macro",
        "match",
        "mod",
        "move",
        "mut",
        "override",
        "priv",
        "proc-macro",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "std",
        "struct",
        "super",
        "test",
        "trait",
        "true",
        "try",
        "type",
        "typeof",
        "unsafe",
        "unsized",
        "use",
        "virtual",
        "where",
        "while",
        "yield",
    ];
    if name.starts_with(|c: char| c.is_ascii_digit()) || RESERVED.contains(&name) {
        format!("fn-{name}")
    } else {
        name.to_string()
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK of this source tree.
    const SOURCE_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk");

    fn args(name: &str, template: Template, path: &Path) -> NewArgs {
        NewArgs {
            name: name.into(),
            template,
            wasi: Wasi::P2,
            path: Some(path.to_path_buf()),
            sdk_path: None,
        }
    }

    fn no_cache() -> Result<PathBuf> {
        panic!("the cache is not used with --sdk-path")
    }

    #[test]
    fn renders_every_template_for_both_wasi_versions() {
        let sdk = Path::new("/src/wisp/sdk");
        for wasi in [Wasi::P2, Wasi::P3] {
            for template in [Template::Http, Template::Router, Template::Kv] {
                let files = render("my-fn", template, wasi, sdk);
                let names: Vec<_> = files.iter().map(|(n, _)| *n).collect();
                assert_eq!(
                    names,
                    ["Cargo.toml", "src/lib.rs", "README.md", ".gitignore"]
                );
                for (file, text) in &files {
                    assert!(
                        !text.contains("__"),
                        "{file} of {template:?} has a placeholder left"
                    );
                }
                let cargo = &files[0].1;
                assert!(cargo.contains("name = \"my-fn\""));
                assert!(cargo.contains("crate-type = [\"cdylib\"]"));
                assert!(cargo.contains("\n[workspace]\n"));
                assert!(cargo.contains("strip = \"debuginfo\""));
                assert!(cargo.contains("release/my_fn.wasm"));
                // The same code either way: only the dependency differs.
                assert_eq!(files[1].1, render("my-fn", template, Wasi::P2, sdk)[1].1);
                assert!(files[2].1.contains(&format!("WASI {}", wasi.name())));
            }
        }
        let dependency = |wasi| {
            let cargo = &render("f", Template::Http, wasi, sdk)[0].1;
            let active: Vec<String> = cargo
                .lines()
                .filter(|l| l.starts_with("wisp-sdk"))
                .map(String::from)
                .collect();
            let commented: Vec<String> = cargo
                .lines()
                .filter(|l| l.starts_with("# wisp-sdk"))
                .map(String::from)
                .collect();
            (active, commented)
        };
        let p2 = "wisp-sdk = { path = \"/src/wisp/sdk\" }";
        let p3 = "wisp-sdk = { package = \"wisp-sdk-p3\", path = \"/src/wisp/sdk/p3\" }";
        assert_eq!(
            dependency(Wasi::P2),
            (vec![p2.into()], vec![format!("# {p3}")])
        );
        assert_eq!(
            dependency(Wasi::P3),
            (vec![p3.into()], vec![format!("# {p2}")])
        );
    }

    #[test]
    fn crate_names_cargo_accepts() {
        assert_eq!(crate_name("hello"), "hello");
        assert_eq!(crate_name("1st"), "fn-1st");
        assert_eq!(crate_name("test"), "fn-test");
        assert_eq!(crate_name("fn"), "fn-fn");
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"C:\a "b""#), r#""C:\\a \"b\"""#);
    }

    #[test]
    fn creates_a_crate_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hello");
        let mut a = args("hello", Template::Router, &dir);
        a.sdk_path = Some(SOURCE_SDK.into());
        let out = create(&a, no_cache).unwrap();
        assert!(out.contains("(router template, WASI 0.2)"), "{out}");
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let sdk = std::fs::canonicalize(SOURCE_SDK).unwrap();
        assert!(
            cargo.contains(&format!("wisp-sdk = {{ path = \"{}\" }}", sdk.display())),
            "{cargo}"
        );
        assert!(dir.join("src/lib.rs").is_file());
        assert!(dir.join(".gitignore").is_file());
        let again = create(&a, no_cache).unwrap_err();
        assert!(format!("{again:#}").contains("not empty"));
        // An empty directory is fine.
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let mut a = args("empty", Template::Http, &empty);
        a.sdk_path = Some(SOURCE_SDK.into());
        create(&a, no_cache).unwrap();
    }

    #[test]
    fn the_default_sdk_is_the_cached_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache/wisp/sdk");
        for (name, wasi) in [("two", Wasi::P2), ("three", Wasi::P3)] {
            let dir = tmp.path().join(name);
            let mut a = args(name, Template::Kv, &dir);
            a.wasi = wasi;
            let out = create(&a, || Ok(cache.clone())).unwrap();
            assert!(out.contains(&format!("WASI {}", wasi.name())), "{out}");
            let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            let copy = cache.join(sdk::ID).join("sdk");
            let expected = match wasi {
                Wasi::P2 => format!("\nwisp-sdk = {{ path = \"{}\" }}", copy.display()),
                Wasi::P3 => format!(
                    "\nwisp-sdk = {{ package = \"wisp-sdk-p3\", path = \"{}\" }}",
                    copy.join("p3").display()
                ),
            };
            assert!(cargo.contains(&expected), "{cargo}");
            assert!(copy.join("p3/Cargo.toml").is_file());
        }
    }

    #[test]
    fn refuses_bad_names_and_sdk_paths() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["Hello", "a_b", "", "-a", &"a".repeat(64)] {
            assert!(
                create(&args(bad, Template::Http, &tmp.path().join("x")), no_cache).is_err(),
                "{bad:?}"
            );
        }
        assert!(!tmp.path().join("x").exists());
        let mut a = args("ok", Template::Http, &tmp.path().join("ok"));
        a.sdk_path = Some(tmp.path().to_path_buf());
        assert!(format!("{:#}", create(&a, no_cache).unwrap_err()).contains("no wisp-sdk crate"));
        // An SDK without its WASI 0.3 build.
        let old = tmp.path().join("old-sdk");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("Cargo.toml"), "[package]\nname = \"wisp-sdk\"\n").unwrap();
        let mut a = args("ok", Template::Http, &tmp.path().join("ok"));
        a.sdk_path = Some(old);
        a.wasi = Wasi::P3;
        let err = format!("{:#}", create(&a, no_cache).unwrap_err());
        assert!(err.contains("no WASI 0.3 build"), "{err}");
        assert!(!tmp.path().join("ok").exists());
        // No cache directory to be had.
        let a = args("ok", Template::Http, &tmp.path().join("ok"));
        let err = create(&a, || sdk::cache_root(None, None)).unwrap_err();
        assert!(format!("{err:#}").contains("XDG_CACHE_HOME"), "{err:#}");
        assert!(!tmp.path().join("ok").exists());
    }
}
