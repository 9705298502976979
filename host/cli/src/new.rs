//! `wisp new`: writes a ready-to-build function crate from a template.
//!
//! The templates are in `templates/`, compiled into the binary; `__NAME__`,
//! `__CRATE__`, `__LIB__`, `__TEMPLATE__` and `__SDK_DEP__` are replaced.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

/// `wisp new`.
#[derive(Args)]
pub struct NewArgs {
    /// Function name (and crate name): lowercase letters, digits and `-`,
    /// 1 to 63 characters, as for `wisp deploy`.
    name: String,
    /// What the generated function starts as.
    #[arg(long, value_enum, default_value_t = Template::Http)]
    template: Template,
    /// Directory to create [default: ./NAME]. It must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
    /// The wisp-sdk crate to depend on (a path dependency) [default: the
    /// SDK of the Wisp source tree this binary was built from, if it is
    /// still there].
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

const CARGO_TOML: &str = include_str!("templates/Cargo.toml.tmpl");
const README: &str = include_str!("templates/README.md.tmpl");
const GITIGNORE: &str = include_str!("templates/gitignore.tmpl");

/// The SDK of the source tree this binary was built from.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk");

/// Runs `wisp new`.
pub fn run(args: NewArgs) -> Result<()> {
    wisp_host::routes::validate_name(&args.name).map_err(anyhow::Error::msg)?;
    let dir = args
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    check_empty(&dir)?;
    let sdk = match &args.sdk_path {
        Some(path) => Some(sdk_dir(path)?),
        None => sdk_dir(Path::new(BUILT_SDK)).ok(),
    };
    let files = render(&args.name, args.template, sdk.as_deref());
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
        "created function `{}` in {} ({} template)\n",
        args.name,
        dir.display(),
        args.template.name()
    );
    if sdk.is_none() {
        out.push_str(
            "warning: the Wisp SDK was not found; set the wisp-sdk dependency in Cargo.toml \
             (or run again with --sdk-path DIR)\n",
        );
    }
    let _ = write!(
        out,
        "next:\n  cd {}\n  cargo test\n  wisp deploy {} --from . --route '/{}/*'\n",
        dir.display(),
        args.name,
        args.name
    );
    print!("{out}");
    Ok(())
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

/// `path`, absolute, if it holds the wisp-sdk crate.
fn sdk_dir(path: &Path) -> Result<PathBuf> {
    let manifest = path.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("no wisp-sdk crate at {}", path.display()))?;
    if !text.contains("name = \"wisp-sdk\"") {
        bail!(
            "{} is not the wisp-sdk crate (its Cargo.toml has another name)",
            path.display()
        );
    }
    std::fs::canonicalize(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// The files of the new crate, by path relative to its directory.
fn render(name: &str, template: Template, sdk: Option<&Path>) -> Vec<(&'static str, String)> {
    let krate = crate_name(name);
    let lib = krate.replace('-', "_");
    let sdk_dep = match sdk {
        Some(path) => format!(
            "wisp-sdk = {{ path = {} }}",
            toml_string(&path.to_string_lossy())
        ),
        None => "# The Wisp SDK was not found when this crate was made: point this at the\n\
                 # `sdk` directory of a Wisp checkout, or at its git repository:\n\
                 # wisp-sdk = { path = \"../wisp/sdk\" }\n\
                 # wisp-sdk = { git = \"https://example.com/wisp.git\" }"
            .to_string(),
    };
    let fill = |text: &str| {
        text.replace("__SDK_DEP__", &sdk_dep)
            .replace("__CRATE__", &krate)
            .replace("__LIB__", &lib)
            .replace("__TEMPLATE__", template.name())
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

    fn args(name: &str, template: Template, path: &Path) -> NewArgs {
        NewArgs {
            name: name.into(),
            template,
            path: Some(path.to_path_buf()),
            sdk_path: None,
        }
    }

    #[test]
    fn renders_every_template() {
        let sdk = Path::new("/src/wisp/sdk");
        for template in [Template::Http, Template::Router, Template::Kv] {
            let files = render("my-fn", template, Some(sdk));
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
            assert!(cargo.contains("wisp-sdk = { path = \"/src/wisp/sdk\" }"));
            assert!(cargo.contains("crate-type = [\"cdylib\"]"));
            assert!(cargo.contains("\n[workspace]\n"));
            assert!(cargo.contains("strip = \"debuginfo\""));
            assert!(cargo.contains("release/my_fn.wasm"));
        }
        let files = render("my-fn", Template::Kv, None);
        assert!(files[0].1.contains("# wisp-sdk = { path"));
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
        run(args("hello", Template::Router, &dir)).unwrap();
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        // The SDK of this very source tree.
        assert!(cargo.contains("wisp-sdk = { path = \""), "{cargo}");
        assert!(dir.join("src/lib.rs").is_file());
        assert!(dir.join(".gitignore").is_file());
        let again = run(args("hello", Template::Http, &dir)).unwrap_err();
        assert!(format!("{again:#}").contains("not empty"));
        // An empty directory is fine.
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        run(args("empty", Template::Http, &empty)).unwrap();
    }

    #[test]
    fn refuses_bad_names_and_sdk_paths() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["Hello", "a_b", "", "-a", &"a".repeat(64)] {
            assert!(
                run(args(bad, Template::Http, &tmp.path().join("x"))).is_err(),
                "{bad:?}"
            );
        }
        let mut a = args("ok", Template::Http, &tmp.path().join("ok"));
        a.sdk_path = Some(tmp.path().to_path_buf());
        assert!(format!("{:#}", run(a).unwrap_err()).contains("no wisp-sdk crate"));
    }
}
