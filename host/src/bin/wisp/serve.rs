//! `wisp serve`: configuration → a running host, until SIGTERM or ctrl-c.

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;
use wisp_host::{DeployOptions, Host, HostConfig, Limits, Listeners, RetryPolicy, StoreLocation};

use crate::{LogFormat, ServeArgs};

/// Runs the host with its own multi-threaded runtime.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wisp-worker")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

/// Raises the soft limit on open files to the hard limit, as servers do:
/// each deployed version keeps its compiled code's file open (mapped), and
/// each connection a socket, and the usual default soft limit is 1024.
fn raise_open_file_limit() {
    #[cfg(unix)]
    #[allow(unsafe_code)]
    // SAFETY: getrlimit and setrlimit only read and write the local struct
    // they are given a valid pointer to.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::debug!(
                from = soft,
                to = limit.rlim_max,
                "raised the open-file limit"
            );
        } else {
            tracing::debug!(limit = soft, "could not raise the open-file limit");
        }
    }
}

fn init_tracing(format: LogFormat) {
    // Default: our info lines (one per invocation among them), warnings
    // from the libraries underneath.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,wisp=info,wisp_host=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for people: log collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = HostConfig {
        store: StoreLocation::Dir(args.data_dir.clone()),
        default_limits: Limits {
            timeout_ms: args.timeout.as_millis() as u64,
            memory_bytes: args.memory,
            max_body_bytes: args.max_body,
            ..Limits::default()
        },
        max_upload_bytes: args.max_upload,
        max_in_flight: args.max_in_flight,
        store_cache_bytes: args.cache_capacity,
        admin_token: args.admin_token.clone().filter(|t| !t.is_empty()),
        max_outbound_requests: args.max_outbound_requests,
        log_bytes_per_invocation: args.log_bytes_per_invocation,
        cgi_max_output_bytes: args.cgi_max_output,
        log_retention_entries: args.log_retention_lines,
        log_retention: args.log_retention,
        event_max_payload_bytes: args.event_max_payload,
        event_max_queue_depth: args.max_queue_depth,
        event_max_in_flight: args.event_max_in_flight,
        event_concurrency: args.event_concurrency,
        event_retry: RetryPolicy {
            max_attempts: args.event_max_attempts,
            base_delay_ms: args.event_retry_base.as_millis() as u64,
            max_delay_ms: args.event_retry_max.as_millis() as u64,
            max_age_ms: args.event_max_age.as_millis() as u64,
        },
        event_retention: args.event_retention,
        serve_threads: args.serve_threads,
        #[cfg(feature = "jemalloc")]
        release_memory: crate::release_jemalloc_memory,
        event_topic_quota_bytes: args.event_topic_quota,
        event_host_quota_bytes: args.event_host_quota,
        event_dead_letter_retention: args.event_dlq_retention,
        ..HostConfig::default()
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    // Bind before the (possibly slow) store load so a taken port fails fast.
    let data = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let admin = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--admin-listen)", args.admin_listen))?;
    let host =
        tokio::task::spawn_blocking(move || Host::builder().config(config).build()).await??;

    for p in &args.deploy {
        let wasm = std::fs::read(&p.file)
            .with_context(|| format!("reading {} for --deploy {}", p.file.display(), p.name))?;
        let opts = DeployOptions {
            routes: p.routes.clone(),
            ..Default::default()
        };
        let already = host
            .function(&p.name)
            .ok()
            .and_then(|f| f.versions.last().map(|v| v.sha256.clone()));
        let sha = hex_sha256(&wasm);
        if already.as_deref() == Some(sha.as_str()) {
            continue; // same artifact already deployed: keep the version count stable
        }
        host.deploy(&p.name, wasm.into(), opts)
            .await
            .with_context(|| format!("deploying {} from {}", p.name, p.file.display()))?;
    }

    // What parsing, start-up and the deploys above left in this thread's
    // allocator caches and freed.
    (host.config().release_memory)();
    let data_addr = data.local_addr()?;
    let admin_addr = admin.local_addr()?;
    tracing::info!(data = %data_addr, admin = %admin_addr, "wisp is serving");
    println!("wisp: data plane  http://{data_addr}");
    println!(
        "wisp: admin API   http://{admin_addr}/v1   (token in {}/admin-token unless WISP_ADMIN_TOKEN is set)",
        args.data_dir.display()
    );
    for f in host.functions()? {
        for r in &f.routes {
            println!(
                "wisp:   {:<12} http://{data_addr}{}",
                f.name,
                r.trim_end_matches("/*")
            );
        }
    }
    host.serve(
        Listeners {
            data,
            admin: Some(admin),
        },
        shutdown_signal(),
        args.grace,
    )
    .await
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
