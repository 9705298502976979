//! `wisp serve --config FILE`: the options of `wisp serve` from a TOML file,
//! and `--print-config`, the configuration in force written back as one.
//!
//! ```toml
//! data-dir = "/var/lib/wisp"
//! max-in-flight = 200
//! default-timeout = "10s"
//! small = true
//! deploy = ["hello=/opt/wisp/hello.wasm:/hello"]
//! ```
//!
//! The keys are the options' long names, taken from clap's own definition
//! of `wisp serve`: an option added to `ServeArgs` can be set in the file
//! with no code here, and its value is read by the option's own parser.
//! Precedence: flags, then `WISP_*` variables, then the file, then the
//! defaults.
//!
//! How: the command line is parsed once, as ever. The file's settings of
//! the options whose value came neither from the command line nor from the
//! environment become `--name=value` arguments appended to it, and it is
//! parsed again: clap types and checks them exactly as flags, and
//! `ServeArgs` knows nothing of files. Before that, every setting of the
//! file is checked on its own (a known key, the right TOML type, a value
//! the option's parser takes), so that a mistake is reported with its file
//! and line rather than as a flag nobody typed. All of it happens before
//! `wisp serve` touches its data directory or listens.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};

/// The subcommand that reads a config file.
const SERVE: &str = "serve";
/// The ids of its `--config` and `--print-config`: command-line options
/// only (a file naming another file, or printing itself, makes no sense).
const CONFIG: &str = "config";
const PRINT_CONFIG: &str = "print_config";

/// Options whose value is a secret, masked by `--print-config`. Beside
/// these, any option whose values clap hides (`hide_env_values`, as every
/// `SecretString` option has) or whose name says it holds a token, key,
/// password or secret (but not one whose value is a path to a file holding
/// it, like `--cluster-token-file` or `--trusted-key`) is masked too, so that
/// a secret option added later is masked without being listed here.
const SECRETS: &[&str] = &["admin-token"];

/// What `--print-config` shows of a secret.
const MASK: &str = "***";

/// `wisp`'s command line, parsed.
pub struct Parsed {
    /// All of it, `wisp serve`'s config file merged in.
    pub matches: ArgMatches,
    /// `wisp serve --print-config`: the configuration in force, as TOML.
    /// The caller prints it and stops there.
    pub print_config: Option<String>,
}

/// Parses `argv` with `cli` as `Parser::parse` does (usage errors and
/// `--help` exit the process, as ever), and for `wisp serve --config FILE`
/// merges the file's settings in. An error is the config file's.
pub fn parse(cli: Command, argv: Vec<OsString>) -> anyhow::Result<Parsed> {
    // Leniently first, only to learn which file to read and where each
    // value came from: an option the file is to supply, or one it
    // requires, is no error yet. (`--help` and `--version` exit here.)
    let lenient = cli.clone().ignore_errors(true).get_matches_from(&argv);
    let serve = cli
        .find_subcommand(SERVE)
        .context("`wisp serve` is not defined")?;
    let given = match lenient.subcommand() {
        Some((SERVE, given)) => Some(given),
        _ => None,
    };
    let file = given
        .and_then(|g| g.get_one::<PathBuf>(CONFIG))
        .map(|path| ConfigFile::read(path, serve))
        .transpose()?;
    let matches = match (&file, given) {
        (Some(file), Some(given)) => {
            let mut merged = argv.clone();
            merged.extend(file.args_below(given));
            match cli.clone().try_get_matches_from(merged) {
                Ok(matches) => matches,
                // A mistake on the command line is clap's to report, as
                // without a file; what only the merge brings (an option of
                // the file that needs another) is the file's.
                Err(e) => match cli.clone().try_get_matches_from(&argv) {
                    Err(own) if own.kind() != ErrorKind::MissingRequiredArgument => own.exit(),
                    _ => bail!("{}: {}", file.path.display(), clap_message(&e)),
                },
            }
        }
        _ => cli.clone().get_matches_from(&argv),
    };
    let print_config = match (matches.subcommand(), given) {
        (Some((SERVE, merged)), Some(given)) if merged.get_flag(PRINT_CONFIG) => {
            Some(render(serve, given, merged, file.as_ref()))
        }
        _ => None,
    };
    Ok(Parsed {
        matches,
        print_config,
    })
}

/// A config file, read and checked.
struct ConfigFile {
    path: PathBuf,
    /// Its settings, in the file's order.
    settings: Vec<Setting>,
}

/// One setting of the file: the option and the arguments it stands for.
struct Setting {
    id: clap::Id,
    args: Vec<OsString>,
}

impl ConfigFile {
    /// Reads and checks `path` against the options of `serve`. The errors
    /// name the file, the line and the key; none shows a value of a secret.
    fn read(path: &Path, serve: &Command) -> anyhow::Result<ConfigFile> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {shown}"))?;
        let table = DeTable::parse(&text).map_err(|e| {
            // The message alone: toml's Display quotes the line, which may
            // hold a token.
            let at = e
                .span()
                .map(|s| Position::of(&text, s.start).to_string())
                .unwrap_or_default();
            anyhow!("{shown}{at}: {}", e.message())
        })?;
        let mut entries: Vec<_> = table.get_ref().iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        let mut settings = Vec::new();
        let mut secrets = Vec::new();
        for (key, value) in entries {
            let name: &str = key.get_ref();
            let line = Position::of(&text, key.span().start).line;
            let Some(arg) = settable(serve).find(|a| a.get_long() == Some(name)) else {
                if serve.get_arguments().any(|a| a.get_long() == Some(name)) {
                    bail!("{shown}:{line}: `{name}` cannot be set in a config file");
                }
                bail!(
                    "{shown}:{line}: unknown option `{name}`{}",
                    suggestion(name, settable(serve).filter_map(Arg::get_long))
                );
            };
            let line = Position::of(&text, value.span().start).line;
            let given = read_value(arg, value.get_ref())
                .map_err(|e| anyhow!("{shown}:{line}: `{name}` {e}"))?;
            check(arg, &given).map_err(|e| {
                let message = clap_message(&e);
                match (is_secret(arg), value.get_ref()) {
                    (true, _) => anyhow!("{shown}:{line}: invalid value for `{name}`"),
                    (false, DeValue::String(s)) => {
                        anyhow!("{shown}:{line}: invalid value `{s}` for `{name}`: {message}")
                    }
                    (false, _) => anyhow!("{shown}:{line}: invalid value for `{name}`: {message}"),
                }
            })?;
            if is_secret(arg) {
                secrets.push(name.to_string());
            }
            settings.push(Setting {
                id: arg.get_id().clone(),
                args: given.args(name),
            });
        }
        warn_if_readable(path, &secrets);
        Ok(ConfigFile {
            path: path.to_path_buf(),
            settings,
        })
    }

    /// The arguments of the settings that neither the command line nor the
    /// environment overrides (`given`: `wisp serve`'s first parse).
    fn args_below(&self, given: &ArgMatches) -> Vec<OsString> {
        self.settings
            .iter()
            .filter(|s| !overridden(given, &s.id))
            .flat_map(|s| s.args.iter().cloned())
            .collect()
    }

    fn sets(&self, id: &clap::Id) -> bool {
        self.settings.iter().any(|s| &s.id == id)
    }
}

/// Whether the value of `id` came from the command line or its `WISP_*`
/// variable, which both win over the file.
fn overridden(given: &ArgMatches, id: &clap::Id) -> bool {
    matches!(
        given.value_source(id.as_str()),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The options of `serve` a file may set: every one with a long name and a
/// value or a switch, but `--config` and `--print-config` (and `--help`).
fn settable(serve: &Command) -> impl Iterator<Item = &Arg> {
    serve.get_arguments().filter(|a| {
        a.get_long().is_some()
            && ![CONFIG, PRINT_CONFIG].contains(&a.get_id().as_str())
            && matches!(
                a.get_action(),
                ArgAction::Set | ArgAction::Append | ArgAction::SetTrue | ArgAction::SetFalse
            )
    })
}

/// What a setting gives its option.
enum Given {
    /// A switch's value (`small = true`).
    Switch(bool),
    /// Values, as the command line spells them: one, or a list's.
    Values(Vec<String>),
}

impl Given {
    /// The command-line arguments it stands for: a switch's flag (or
    /// nothing, when it says what the switch's default says), `--name=value`
    /// for each value (`=`: a value may start with `-`).
    fn args(&self, name: &str) -> Vec<OsString> {
        match self {
            Given::Switch(true) => vec![format!("--{name}").into()],
            Given::Switch(false) => Vec::new(),
            Given::Values(values) => values
                .iter()
                .map(|v| format!("--{name}={v}").into())
                .collect(),
        }
    }
}

/// What a TOML value gives an option: a switch takes a boolean, a
/// repeatable option a list (or one value alone), any other one value.
/// `Err` says what the option takes instead.
fn read_value(arg: &Arg, value: &DeValue<'_>) -> Result<Given, String> {
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            // `--no-thing` (SetFalse) is on when the setting is false.
            DeValue::Boolean(b) => Ok(Given::Switch(
                *b == matches!(arg.get_action(), ArgAction::SetTrue),
            )),
            other => Err(format!("is a switch: true or false, not {}", a_type(other))),
        },
        ArgAction::Append => match value {
            DeValue::Array(items) => items
                .iter()
                .map(|item| scalar(item.get_ref()))
                .collect::<Result<_, _>>()
                .map(Given::Values)
                .map_err(|t| format!("takes a list of strings or numbers, not one holding {t}")),
            other => scalar(other)
                .map(|v| Given::Values(vec![v]))
                .map_err(|t| format!("takes a list of strings or numbers, not {t}")),
        },
        _ => match value {
            DeValue::Array(_) => Err("takes one value, not a list".into()),
            other => scalar(other)
                .map(|v| Given::Values(vec![v]))
                .map_err(|t| format!("takes a string or a number, not {t}")),
        },
    }
}

/// A value as the command line would spell it: a string as it is, a number
/// or a boolean as written. Lists, tables and dates are no option's value:
/// `Err` is the type found.
fn scalar(value: &DeValue<'_>) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(n) => i128::from_str_radix(&n.as_str().replace('_', ""), n.radix())
            .map(|n| n.to_string())
            .map_err(|_| "a number that large".to_string()),
        DeValue::Float(f) => Ok(f.as_str().to_string()),
        DeValue::Boolean(b) => Ok(b.to_string()),
        other => Err(a_type(other)),
    }
}

/// "a string", "an array"…: a TOML type in a sentence.
fn a_type(value: &DeValue<'_>) -> String {
    let name = value.type_str();
    match name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        true => format!("an {name}"),
        false => format!("a {name}"),
    }
}

/// Parses a setting's values with the option's own parser, each alone:
/// the option's action, delimiter and value parser, none of its
/// environment, default or relations to other options (which the full parse
/// checks).
fn check(arg: &Arg, given: &Given) -> Result<(), clap::Error> {
    let Given::Values(values) = given else {
        return Ok(());
    };
    for value in values {
        let mut alone = Arg::new(arg.get_id().clone())
            .action(arg.get_action().clone())
            .value_parser(arg.get_value_parser().clone());
        if let Some(delimiter) = arg.get_value_delimiter() {
            alone = alone.value_delimiter(delimiter);
        }
        // `--`: the value is one even when it starts with `-`.
        Command::new(SERVE)
            .no_binary_name(true)
            .disable_help_flag(true)
            .arg(alone)
            .try_get_matches_from(["--", value.as_str()])?;
    }
    Ok(())
}

/// A clap error in one line: the parser's own message where there is one
/// ("invalid digit found in string"), the possible values of an enum, else
/// clap's text without its advice.
fn clap_message(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    if let Some(source) = std::error::Error::source(e) {
        return source.to_string();
    }
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        return format!("possible values: {}", valid.join(", "));
    }
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `--print-config` masks the option's value (see [`SECRETS`]).
fn is_secret(arg: &Arg) -> bool {
    let name = arg.get_long().unwrap_or_default();
    let names_a_secret = name
        .split('-')
        .any(|w| matches!(w, "token" | "key" | "password" | "passphrase" | "secret"));
    let is_path = arg.get_value_parser().type_id() == std::any::TypeId::of::<PathBuf>();
    SECRETS.contains(&name) || arg.is_hide_env_values_set() || (names_a_secret && !is_path)
}

/// A token in a config file is fine (it is common), but then the file must
/// be its owner's only, as `<data-dir>/admin-token` is. Says so, once and
/// without the value, when other users may read it.
fn warn_if_readable(path: &Path, secrets: &[String]) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let Some(first) = secrets.first() else {
            return;
        };
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o004 != 0
        {
            eprintln!(
                "warning: {} sets `{first}` and every user can read it: `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, secrets);
}

/// "; did you mean `max-in-flight`?" when a valid key is close to `name`
/// (a typo, or snake_case for kebab-case), else nothing.
fn suggestion<'a>(name: &str, valid: impl Iterator<Item = &'a str>) -> String {
    let wanted = name.replace('_', "-").to_ascii_lowercase();
    valid
        .map(|v| (edit_distance(&wanted, v), v))
        .filter(|(d, v)| *d <= (v.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| format!("; did you mean `{v}`?"))
        .unwrap_or_default()
}

/// Levenshtein distance: the fewest insertions, deletions and substitutions
/// of characters that turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// A place in the file, 1-based, shown as `:LINE:COLUMN`.
struct Position {
    line: usize,
    column: usize,
}

impl Position {
    /// The position of byte `offset` of `text`.
    fn of(text: &str, offset: usize) -> Position {
        let before = &text[..offset.min(text.len())];
        let line_start = before.rfind('\n').map_or(0, |at| at + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, ":{}:{}", self.line, self.column)
    }
}

/// `--print-config`: every option of `serve` with the value in force
/// (`merged`), where it came from (`given`, the command line and the
/// environment before the file, and the file), secrets masked and commented
/// out, options without a value commented out. `--config` reads it back.
fn render(
    serve: &Command,
    given: &ArgMatches,
    merged: &ArgMatches,
    file: Option<&ConfigFile>,
) -> String {
    let mut out = String::from(
        "# The configuration of `wisp serve` in force: flags, then WISP_* variables, then the\n\
         # config file, then defaults. `wisp serve --config FILE` reads it back. Secrets are\n\
         # masked and commented out; so are options without a value.\n",
    );
    if let Some(file) = file {
        let _ = writeln!(out, "# Config file: {}", file.path.display());
    }
    out.push('\n');
    for arg in settable(serve) {
        let id = arg.get_id();
        let name = arg.get_long().unwrap_or_default();
        let origin = match given.value_source(id.as_str()) {
            Some(ValueSource::CommandLine) => "flag".to_string(),
            Some(ValueSource::EnvVariable) => arg
                .get_env()
                .map_or("environment".into(), |v| v.to_string_lossy().into_owned()),
            _ if file.is_some_and(|f| f.sets(id)) => "config file".into(),
            _ => "default".into(),
        };
        let value = match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => {
                Some(merged.get_flag(id.as_str()).to_string())
            }
            _ => {
                let raw: Vec<String> = merged
                    .get_raw(id.as_str())
                    .into_iter()
                    .flatten()
                    .map(|v| toml_value(&v.to_string_lossy()))
                    .collect();
                match (arg.get_action(), raw.as_slice()) {
                    (_, []) => None,
                    (ArgAction::Append, values) => Some(format!("[{}]", values.join(", "))),
                    (_, values) => Some(values.join(", ")),
                }
            }
        };
        let _ = match value {
            None => writeln!(out, "# {name}: not set"),
            Some(_) if is_secret(arg) => {
                writeln!(out, "# {name} = \"{MASK}\"  # {origin}; masked")
            }
            Some(value) => writeln!(out, "{name} = {value}  # {origin}"),
        };
    }
    out
}

/// A raw value as TOML: a whole number bare (it reads back as the same
/// text), anything else a string.
fn toml_value(raw: &str) -> String {
    match raw.parse::<i64>() {
        Ok(n) if n.to_string() == raw => raw.to_string(),
        _ => toml::Value::String(raw.to_string()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn serve() -> Command {
        crate::Cli::command()
            .find_subcommand(SERVE)
            .expect("serve")
            .clone()
    }

    /// Parses `wisp serve ARGS --config FILE` with FILE holding `toml`.
    fn parse_with(toml: &str, args: &[&str]) -> anyhow::Result<Parsed> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wisp.toml");
        std::fs::write(&path, toml).unwrap();
        let mut argv: Vec<OsString> = vec!["wisp".into(), "serve".into()];
        argv.extend(args.iter().map(OsString::from));
        argv.extend(["--config".into(), path.into_os_string()]);
        parse(crate::Cli::command(), argv)
    }

    fn serve_args(parsed: &Parsed) -> crate::ServeArgs {
        use clap::FromArgMatches as _;
        match crate::Cli::from_arg_matches(&parsed.matches)
            .unwrap()
            .command
        {
            crate::Command::Serve(args) => args,
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn the_ids_this_module_names_exist() {
        let serve = serve();
        for id in [CONFIG, PRINT_CONFIG] {
            assert!(serve.get_arguments().any(|a| a.get_id() == id), "{id}");
        }
    }

    #[test]
    fn the_secrets_of_wisp_serve_are_the_admin_token() {
        let serve = serve();
        let secrets: Vec<_> = settable(&serve)
            .filter(|a| is_secret(a))
            .filter_map(Arg::get_long)
            .collect();
        assert_eq!(secrets, ["admin-token"]);
    }

    #[test]
    fn file_settings_apply_below_flags() {
        let parsed = parse_with(
            "max-in-flight = 7\nsmall = true\ndefault-timeout = \"5s\"\n\
             deploy = [\"a=a.wasm:/a\", \"b=b.wasm\"]\nlog-format = \"json\"\n",
            &["--default-timeout", "9s"],
        )
        .unwrap();
        let args = serve_args(&parsed);
        assert_eq!(args.max_in_flight, Some(7));
        assert!(args.small);
        assert_eq!(args.timeout, std::time::Duration::from_secs(9));
        assert_eq!(args.deploy.len(), 2);
        assert_eq!(args.log_format, crate::LogFormat::Json);
        assert!(parsed.print_config.is_none());
    }

    /// A `wisp serve` with two options that need each other, as a pair of
    /// TLS files would: the file may supply either, or both.
    #[test]
    fn options_that_need_each_other_may_come_from_the_file() {
        let cli = Command::new("wisp").subcommand(
            Command::new(SERVE)
                .arg(
                    Arg::new(CONFIG)
                        .long("config")
                        .value_parser(clap::value_parser!(PathBuf)),
                )
                .arg(
                    Arg::new(PRINT_CONFIG)
                        .long("print-config")
                        .action(ArgAction::SetTrue),
                )
                .arg(Arg::new("cert").long("cert").requires("key"))
                .arg(Arg::new("key").long("key").requires("cert")),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wisp.toml");
        let run = |toml: &str, args: &[&str]| {
            std::fs::write(&path, toml).unwrap();
            let mut argv: Vec<OsString> = vec!["wisp".into(), "serve".into()];
            argv.extend(args.iter().map(OsString::from));
            argv.extend(["--config".into(), path.clone().into_os_string()]);
            parse(cli.clone(), argv)
        };
        let value = |parsed: &Parsed, id: &str| {
            let (_, serve) = parsed.matches.subcommand().unwrap();
            serve.get_one::<String>(id).cloned()
        };
        let parsed = run("cert = \"c.pem\"\n", &["--key", "k.pem"]).unwrap();
        assert_eq!(value(&parsed, "cert").as_deref(), Some("c.pem"));
        assert_eq!(value(&parsed, "key").as_deref(), Some("k.pem"));
        let parsed = run("cert = \"c.pem\"\nkey = \"k.pem\"\n", &["--print-config"]).unwrap();
        let printed = parsed.print_config.unwrap();
        assert!(
            printed.contains("cert = \"c.pem\"  # config file"),
            "{printed}"
        );
        // `key` names a secret, and its value is no path: masked.
        assert!(printed.contains("# key = \"***\""), "{printed}");
        let e = format!("{:#}", run("cert = \"c.pem\"\n", &[]).err().unwrap());
        assert!(
            e.contains("wisp.toml: the following required arguments"),
            "{e}"
        );
        assert!(e.contains("--key"), "{e}");
        assert!(!e.contains("Usage"), "{e}");
    }

    #[test]
    fn mistakes_name_the_file_line_and_key() {
        let err = |toml: &str| format!("{:#}", parse_with(toml, &[]).err().unwrap());
        let e = err("listen = \"127.0.0.1:1\"\nmax-in-flite = 3\n");
        assert!(
            e.contains("wisp.toml:2: unknown option `max-in-flite`"),
            "{e}"
        );
        assert!(e.contains("did you mean `max-in-flight`?"), "{e}");
        let e = err("max_body = \"1M\"\n");
        assert!(e.contains("did you mean `max-body`?"), "{e}");
        let e = err("\n\nmax-in-flight = \"lots\"\n");
        assert!(
            e.contains("wisp.toml:3: invalid value `lots` for `max-in-flight`"),
            "{e}"
        );
        let e = err("small = \"yes\"\n");
        assert!(
            e.contains(":1: `small` is a switch: true or false, not a string"),
            "{e}"
        );
        let e = err("deploy = [{ name = \"x\" }]\n");
        assert!(
            e.contains(":1: `deploy` takes a list of strings or numbers, not one holding a table"),
            "{e}"
        );
        let e = err("node-name = { a = 1 }\n");
        assert!(
            e.contains(":1: `node-name` takes a string or a number, not a table"),
            "{e}"
        );
        let e = err("listen = [\"a\"]\n");
        assert!(
            e.contains(":1: `listen` takes one value, not a list"),
            "{e}"
        );
        let e = err("log-format = \"xml\"\n");
        assert!(e.contains("possible values: text, json"), "{e}");
        let e = err("a = 1\nb = = 2\n");
        assert!(e.contains("wisp.toml:2:"), "{e}");
        let e = err("config = \"other.toml\"\n");
        assert!(e.contains("`config` cannot be set in a config file"), "{e}");
        let e = err("admin-token = [\"s3cret-s3cret-s3cret\"]\n");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn suggests_only_close_keys() {
        let valid = ["max-in-flight", "listen", "data-dir"];
        assert_eq!(
            suggestion("max-inflight", valid.into_iter()),
            "; did you mean `max-in-flight`?"
        );
        assert_eq!(suggestion("colour", valid.into_iter()), "");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn positions_are_lines_and_columns() {
        let text = "a = 1\nbé = 2\n";
        let p = Position::of(text, text.find('=').unwrap());
        assert_eq!((p.line, p.column), (1, 3));
        let p = Position::of(text, text.rfind('2').unwrap());
        assert_eq!((p.line, p.column), (2, 6));
    }

    #[test]
    fn print_config_masks_secrets_and_reads_back() {
        let parsed = parse_with(
            "admin-token = \"s3cret-s3cret-s3cret\"\nmax-in-flight = 7\ndeploy = [\"a=a.wasm:/a\"]\n",
            &["--print-config", "--node-name", "n1"],
        )
        .unwrap();
        let printed = parsed.print_config.unwrap();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("# admin-token = \"***\""), "{printed}");
        assert!(
            printed.contains("max-in-flight = 7  # config file"),
            "{printed}"
        );
        assert!(printed.contains("node-name = \"n1\"  # flag"), "{printed}");
        assert!(printed.contains("# max-upload: not set"), "{printed}");
        let again = serve_args(&parse_with(&printed, &[]).unwrap());
        assert_eq!(again.max_in_flight, Some(7));
        assert_eq!(again.node_name.as_deref(), Some("n1"));
        assert_eq!(again.deploy.len(), 1);
        assert!(again.admin_token.is_none());
    }
}
