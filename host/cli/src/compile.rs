//! `wisp compile`: a function compiled ahead of time for a host's engine
//! and signed (see wisp-host's `signed` module for the file's layout).

use std::path::PathBuf;

use clap::Args;

use crate::EngineArg;

/// Arguments of `wisp compile`.
#[derive(Args, Debug)]
pub struct CompileArgs {
    /// The function: a component or a preview-1 module (`.wasm`).
    pub file: PathBuf,
    /// The signing key (`wisp keygen NAME` writes NAME).
    #[arg(long, value_name = "KEY")]
    pub sign: PathBuf,
    /// The target triple of the hosts that will run it [default: this
    /// machine's, or Pulley bytecode with `--engine pulley`].
    #[arg(long, value_name = "TRIPLE")]
    pub target: Option<String>,
    /// The engine of the hosts that will run it (`wisp serve --engine`).
    #[arg(long, value_enum, default_value = "cranelift")]
    pub engine: EngineArg,
    /// Where to write it [default: FILE with the extension `.cwasm`].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// A runtime-only build has no compiler.
#[cfg(not(feature = "cranelift"))]
pub fn run(_args: CompileArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "this wisp is a runtime-only build (no compiler): run `wisp compile` with a full build \
         of the same version"
    )
}

#[cfg(feature = "cranelift")]
pub fn run(args: CompileArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use wisp_host::{HostConfig, signed};
    let key = signed::SigningKey::from_file(&args.sign)?;
    let wasm =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let config = HostConfig {
        code_engine: args.engine.into(),
        ..HostConfig::default()
    };
    let (header, code) = wisp_host::precompile(&config, args.target.as_deref(), &wasm)
        .with_context(|| format!("compiling {}", args.file.display()))?;
    let summary = format!(
        "{} for {} (engine {}), from sha256 {}",
        header.kind, header.target, header.engine, header.source_sha256
    );
    let sealed = signed::seal(header, &code, &key);
    let output = args
        .output
        .unwrap_or_else(|| args.file.with_extension("cwasm"));
    std::fs::write(&output, &sealed).with_context(|| format!("writing {}", output.display()))?;
    eprintln!(
        "wrote {} ({} bytes): {summary}, signed by key {}",
        output.display(),
        sealed.len(),
        key.id()
    );
    Ok(())
}
