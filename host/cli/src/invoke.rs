//! `wisp invoke`: a call of a function through the admin API, whatever its
//! routes, printed as `curl` would; `--async` queues it instead.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use tokio::io::AsyncReadExt;
use wisp_client::reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use wisp_client::reqwest::{Method, Response};
use wisp_client::{Client, Invocation};

use crate::client::Connection;
use crate::output::write_stdout;

/// `wisp invoke`.
#[derive(Args)]
pub struct InvokeArgs {
    /// Function name.
    name: String,
    /// HTTP method [default: GET, or POST with --data].
    #[arg(short = 'X', long, value_parser = parse_method)]
    method: Option<Method>,
    /// Path and query the function sees.
    #[arg(long, default_value = "/")]
    path: String,
    /// Request body: text, `@FILE` for a file's contents, `@-` for stdin.
    #[arg(short, long, value_name = "DATA")]
    data: Option<String>,
    /// Request header. Repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Print the status line and headers before the body.
    #[arg(short, long)]
    include: bool,
    /// Queue the invocation instead (an event for the event handler, or a
    /// POST; retried on failure) and print its event id once it is durable.
    #[arg(long = "async", conflicts_with_all = ["include", "method"])]
    asynchronous: bool,
    #[command(flatten)]
    pub(crate) connection: Connection,
}

pub(crate) async fn invoke(api: &Client, args: InvokeArgs) -> Result<()> {
    if !args.path.starts_with('/') {
        bail!("--path must start with `/` (got `{}`)", args.path);
    }
    let body = match &args.data {
        Some(data) => Some(read_data(DataSource::parse(data)).await?),
        None => None,
    };
    if args.asynchronous {
        let queued = api
            .invoke_async(&args.name, &args.path, &args.headers, body)
            .await?;
        return write_stdout(&format!("queued {} for {}\n", queued.id, args.name));
    }
    let method = match args.method {
        Some(method) => method,
        None if body.is_some() => Method::POST,
        None => Method::GET,
    };
    let invocation = Invocation {
        method,
        path: args.path,
        headers: args.headers,
        body,
    };
    let mut response = api.invoke(&args.name, invocation).await?;
    let status = response.status();
    let mut stdout = std::io::stdout();
    if args.include {
        write_head(&mut stdout, &response)?;
    }
    if status.is_client_error() || status.is_server_error() {
        let body = response.bytes().await.unwrap_or_default();
        // A Wisp error body is the host's own failure; anything else is
        // the function's answer.
        let wisp_error = match wisp_client::error_from_body(status, &body) {
            e @ wisp_client::Error::Api { .. } => Some(e.to_string()),
            _ => None,
        };
        // The host's own errors (unknown function, timeout, trap…) go to
        // stderr as a message; a function's error response is its output.
        if args.include || wisp_error.is_none() {
            stdout.write_all(&body)?;
        }
        stdout.flush()?;
        return Err(match wisp_error {
            Some(message) => anyhow!(message),
            None => anyhow!("{} answered {status}", args.name),
        });
    }
    // Streamed, so a large or slow answer shows up as it comes.
    while let Some(chunk) = response.chunk().await.context("the response broke off")? {
        stdout.write_all(&chunk)?;
    }
    stdout.flush()?;
    Ok(())
}

/// The status line and headers, as `curl -i` shows them.
fn write_head(out: &mut impl std::io::Write, response: &Response) -> std::io::Result<()> {
    writeln!(out, "{:?} {}", response.version(), response.status())?;
    for (name, value) in response.headers() {
        write!(out, "{name}: ")?;
        out.write_all(value.as_bytes())?;
        writeln!(out)?;
    }
    writeln!(out)
}

/// Where `--data` comes from.
#[derive(Debug, PartialEq, Eq)]
enum DataSource<'a> {
    Literal(&'a str),
    File(&'a Path),
    Stdin,
}

impl<'a> DataSource<'a> {
    fn parse(data: &'a str) -> DataSource<'a> {
        match data.strip_prefix('@') {
            Some("-") => DataSource::Stdin,
            Some(path) => DataSource::File(Path::new(path)),
            None => DataSource::Literal(data),
        }
    }
}

/// Reads a `--data` argument: text, `@FILE` or `@-` (stdin).
pub(crate) async fn read_data_arg(data: &str) -> Result<Bytes> {
    read_data(DataSource::parse(data)).await
}

async fn read_data(source: DataSource<'_>) -> Result<Bytes> {
    Ok(match source {
        DataSource::Literal(text) => Bytes::copy_from_slice(text.as_bytes()),
        DataSource::File(path) => tokio::fs::read(path)
            .await
            .with_context(|| format!("cannot read --data file {}", path.display()))?
            .into(),
        DataSource::Stdin => {
            let mut data = Vec::new();
            tokio::io::stdin()
                .read_to_end(&mut data)
                .await
                .context("cannot read the request body from stdin")?;
            data.into()
        }
    })
}

/// `-H 'Name: value'`.
fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`{}` is not a valid header name", name.trim()))?;
    if name == AUTHORIZATION {
        return Err(
            "the Authorization header carries the admin token; the function never sees it"
                .to_string(),
        );
    }
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of header `{name}` is not valid"))?;
    Ok((name, value))
}

/// `--method`, any case.
fn parse_method(s: &str) -> Result<Method, String> {
    Method::from_bytes(s.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{s}` is not an HTTP method"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_invoke_arguments() {
        let (name, value) = parse_header("X-Trace:  abc ").unwrap();
        assert_eq!(name, "x-trace");
        assert_eq!(value, "abc");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: v").is_err());
        assert!(parse_header("Authorization: Bearer x").is_err());
        assert_eq!(parse_method("patch"), Ok(Method::PATCH));
        assert!(parse_method("GE T").is_err());
        assert_eq!(DataSource::parse("hi"), DataSource::Literal("hi"));
        assert_eq!(DataSource::parse("@-"), DataSource::Stdin);
        assert_eq!(
            DataSource::parse("@body.json"),
            DataSource::File(Path::new("body.json"))
        );
    }
}
