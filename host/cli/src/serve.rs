//! `wisp serve`: configuration → a running host, until SIGTERM or ctrl-c.

use std::sync::Arc;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, reload};
use wisp_host::cluster::{Cluster, ClusterConfig};
use wisp_host::{
    ConnectionLimits, DeployOptions, Host, HostConfig, Limits, Listeners, RetryPolicy,
    StoreLocation, Tls,
};

use crate::{LogFormat, ServeArgs};

/// Runs the host with its own multi-threaded runtime.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let filter = init_tracing(args.log_format, args.log_filter_file.as_deref())?;
    let open_files = raise_open_file_limit();
    let config = host_config(&args)?;
    let wanted = u64::from(config.data_connections.max_connections)
        + u64::from(config.admin_connections.max_connections);
    if let Some(limit) = open_files
        && wanted + FILES_BESIDE_CONNECTIONS > limit
    {
        tracing::warn!(
            open_file_limit = limit,
            connections = wanted,
            "the connection caps (--max-connections, --admin-max-connections) do not fit under \
             the open-file limit: past it new connections fail to be accepted; lower the caps \
             or raise the limit (ulimit -n)"
        );
    }
    private_umask();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wisp-worker")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args, config, filter))
}

/// The log filter's handle, for SIGHUP.
type FilterHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// The default filter: our info lines (one per invocation among them),
/// warnings from the libraries underneath.
const DEFAULT_FILTER: &str = "warn,wisp=info,wisp_host=info";

/// The log filter in `path`: its text, trimmed (comment lines starting with
/// `#` are skipped).
fn read_filter(path: &std::path::Path) -> anyhow::Result<EnvFilter> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the log filter file {}", path.display()))?;
    let directives: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    EnvFilter::try_new(directives.join(",")).with_context(|| {
        format!(
            "the log filter file {} does not parse (RUST_LOG syntax, e.g. warn,wisp=info)",
            path.display()
        )
    })
}

/// Descriptors kept for what is not a connection: the store's files, each
/// deployed version's compiled code, outbound requests.
const FILES_BESIDE_CONNECTIONS: u64 = 512;

/// Raises the soft limit on open files to the hard limit, as servers do:
/// each deployed version keeps its compiled code's file open (mapped), and
/// each connection a socket, and the usual default soft limit is 1024.
/// Returns the soft limit in force (`None` where it cannot be read).
fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => {
                tracing::debug!(limit, "open-file limit");
                Some(limit)
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not raise the open-file limit");
                rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
            }
        }
    }
    #[cfg(not(unix))]
    None
}

/// Sets the umask to 077, so that every file `wisp serve` creates is its
/// user's only. The library sets the modes of the data directory and of the
/// files it writes itself, whatever the umask, but sled creates files later
/// on its own (snapshots, blobs of large values) with the umask's mode:
/// inside a 0700 directory nobody else can reach them, and with this they
/// are 0600 as well. The binary may do this, a library may not (the umask is
/// the whole process's); `wisp serve` creates no file meant for others.
fn private_umask() {
    #[cfg(unix)]
    #[allow(unsafe_code)]
    // SAFETY: umask only sets the process's file-creation mask; it cannot
    // fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// Installs the log: to stderr, filtered by the filter file, else
/// `RUST_LOG`, else [`DEFAULT_FILTER`]; the filter can be replaced later
/// (SIGHUP). A filter file that cannot be read stops `wisp serve`.
fn init_tracing(
    format: LogFormat,
    filter_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<(FilterHandle, std::path::PathBuf)>> {
    let filter = match filter_file {
        Some(path) => read_filter(path)?,
        None => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
        }
    };
    let (filter, handle) = reload::Layer::new(filter);
    // Colours only for people: log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).init(),
        LogFormat::Text => registry.with(fmt).init(),
    }
    Ok(filter_file.map(|p| (handle, p.to_path_buf())))
}

/// A listener's TLS from `--tls-cert`/`--tls-key` (or the admin pair;
/// clap makes sure both or neither are given).
fn tls(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    flag: &str,
) -> anyhow::Result<Option<Arc<Tls>>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Tls::from_pem_files(cert, key)
            .map(|t| Some(Arc::new(t)))
            .with_context(|| format!("cannot serve TLS with {flag} {}", cert.display())),
        _ => Ok(None),
    }
}

/// On SIGHUP, reads the log filter file and the TLS certificates again
/// (`systemctl reload`); a filter that does not parse or a certificate that
/// cannot be used leaves the one in force, with a warning. Installed
/// whatever the flags, so that a SIGHUP never stops the host.
fn reload_on_sighup(
    filter: Option<(FilterHandle, std::path::PathBuf)>,
    tls: Vec<Arc<Tls>>,
) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                for t in &tls {
                    match t.reload() {
                        Ok(()) => tracing::warn!(
                            cert = %t.cert_path().display(),
                            "SIGHUP: TLS certificate reloaded"
                        ),
                        Err(e) => tracing::error!(
                            error = %e,
                            "SIGHUP: the TLS certificate cannot be used; still serving the previous one"
                        ),
                    }
                }
                let Some((handle, path)) = &filter else {
                    if tls.is_empty() {
                        tracing::info!("SIGHUP: nothing to reload (no --log-filter-file, no TLS)");
                    }
                    continue;
                };
                match read_filter(path).and_then(|f| {
                    let shown = f.to_string();
                    handle
                        .reload(f)
                        .map(|()| shown)
                        .map_err(anyhow::Error::from)
                }) {
                    Ok(shown) => tracing::warn!(filter = %shown, "SIGHUP: log filter reloaded"),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "SIGHUP: the log filter was not changed")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (filter, tls);
    Ok(())
}

/// The host's configuration from the options: those not given take the
/// defaults, a small device's with `--small`. Checked, and logged.
fn host_config(args: &ServeArgs) -> anyhow::Result<HostConfig> {
    let defaults = match args.small {
        true => HostConfig::small(),
        false => HostConfig::default(),
    };
    let config = HostConfig {
        store: StoreLocation::Dir(args.data_dir.clone()),
        default_limits: Limits {
            timeout_ms: args.timeout.as_millis() as u64,
            memory_bytes: args.memory,
            max_body_bytes: args.max_body,
            ..Limits::default()
        },
        max_upload_bytes: args.max_upload.unwrap_or(defaults.max_upload_bytes),
        max_in_flight: args.max_in_flight.unwrap_or(defaults.max_in_flight),
        max_in_flight_per_function: args.max_in_flight_per_function,
        data_connections: ConnectionLimits {
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args
                .max_connections
                .unwrap_or(defaults.data_connections.max_connections),
            max_header_bytes: size_u32(args.max_header_size, "--max-header-size")?,
            max_headers: args.max_headers,
            body_timeout: args.body_timeout,
            body_min_rate: args.body_min_rate,
        },
        admin_connections: ConnectionLimits {
            header_timeout: args.admin_header_timeout,
            idle_timeout: args.admin_idle_timeout,
            max_connections: args
                .admin_max_connections
                .unwrap_or(defaults.admin_connections.max_connections),
            max_header_bytes: size_u32(args.admin_max_header_size, "--admin-max-header-size")?,
            max_headers: args.admin_max_headers,
            body_timeout: args.admin_body_timeout,
            body_min_rate: args.admin_body_min_rate,
        },
        store_cache_bytes: args.cache_capacity.unwrap_or(defaults.store_cache_bytes),
        admin_token: args
            .admin_token
            .clone()
            .filter(|t| !t.expose_secret().is_empty()),
        max_outbound_requests: args.max_outbound_requests,
        log_bytes_per_invocation: args.log_bytes_per_invocation,
        cgi_max_output_bytes: args.cgi_max_output.unwrap_or(defaults.cgi_max_output_bytes),
        log_retention_entries: args.log_retention_lines,
        log_retention: args.log_retention,
        event_max_payload_bytes: args.event_max_payload,
        event_max_queue_depth: args.max_queue_depth,
        event_max_in_flight: args
            .event_max_in_flight
            .unwrap_or(defaults.event_max_in_flight),
        event_concurrency: args.event_concurrency,
        event_retry: RetryPolicy {
            max_attempts: args.event_max_attempts,
            base_delay_ms: args.event_retry_base.as_millis() as u64,
            max_delay_ms: args.event_retry_max.as_millis() as u64,
            max_age_ms: args.event_max_age.as_millis() as u64,
        },
        event_retention: args.event_retention,
        serve_threads: args.serve_threads,
        release_memory: crate::memory::release,
        log_entries_per_invocation: args.log_lines_per_invocation,
        event_topic_quota_bytes: args.event_topic_quota,
        event_host_quota_bytes: args.event_host_quota,
        event_dead_letter_retention: args.event_dlq_retention,
        host_queue: args.host_queue,
        host_queue_timeout: args.host_queue_timeout,
        code_engine: args.code_engine.into(),
        trusted_keys: args
            .trusted_keys
            .iter()
            .map(|p| wisp_host::signed::TrustedKey::from_file(p).context("--trusted-key"))
            .collect::<anyhow::Result<_>>()?,
        ..defaults
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    tracing::info!(
        small = args.small,
        max_in_flight = config.max_in_flight,
        max_connections = config.data_connections.max_connections,
        store_cache = %bytesize::ByteSize(config.store_cache_bytes).display().iec(),
        pool_keep_resident = %bytesize::ByteSize(config.pool_keep_resident_bytes).display().iec(),
        "capacity"
    );
    Ok(config)
}

/// Tells the service manager (systemd, `Type=notify`) how the host is
/// doing, when it asked (`NOTIFY_SOCKET` is set); nothing otherwise.
fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    #[cfg(unix)]
    {
        use std::os::unix::net::UnixDatagram;
        let sent = UnixDatagram::unbound().and_then(|s| {
            // An abstract socket's name starts with '@'.
            let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
            match bytes.strip_prefix(b"@") {
                #[cfg(target_os = "linux")]
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt as _;
                    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                    s.send_to_addr(state.as_bytes(), &addr)
                }
                _ => s.send_to(state.as_bytes(), &path),
            }
        });
        if let Err(e) = sent {
            tracing::warn!(error = %e, state, "telling the service manager failed");
        }
    }
}

async fn serve(
    args: ServeArgs,
    config: HostConfig,
    filter: Option<(FilterHandle, std::path::PathBuf)>,
) -> anyhow::Result<()> {
    // Certificates first: a bad file stops `wisp serve` before it listens.
    let data_tls = tls(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        "--tls-cert",
    )?;
    let admin_tls = tls(
        args.admin_tls_cert.as_deref(),
        args.admin_tls_key.as_deref(),
        "--admin-tls-cert",
    )?;
    let shutdown = shutdown_signal()?;
    reload_on_sighup(
        filter,
        [&data_tls, &admin_tls]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
    )?;
    // Told to the service manager once the signal came.
    let shutdown = async move {
        shutdown.await;
        notify("STOPPING=1");
    };
    // Bind before the (possibly slow) store load so a taken port fails fast.
    let data = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let admin = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--admin-listen)", args.admin_listen))?;
    // Cluster mode: reach NATS before anything else is loaded; a host
    // that cannot has nothing to serve from.
    let cluster = match args.cluster.is_empty() {
        true => None,
        false => Some(Cluster::connect(&cluster_config(&args)?).await?),
    };
    let host = tokio::task::spawn_blocking(move || {
        let builder = Host::builder().config(config);
        match cluster {
            Some(cluster) => builder.cluster(cluster),
            None => builder,
        }
        .build()
    })
    .await??;
    let data_scheme = if data_tls.is_some() { "https" } else { "http" };
    let admin_scheme = if admin_tls.is_some() { "https" } else { "http" };
    host.join_cluster(
        format!("{data_scheme}://{}", data.local_addr()?),
        format!("{admin_scheme}://{}", admin.local_addr()?),
    )
    .await?;

    for p in &args.deploy {
        let wasm = std::fs::read(&p.file)
            .with_context(|| format!("reading {} for --deploy {}", p.file.display(), p.name))?;
        let opts = DeployOptions {
            routes: p.routes.clone(),
            ..Default::default()
        };
        let already = host
            .functions()
            .get(&p.name)
            .ok()
            .and_then(|f| f.versions.last().map(|v| v.sha256.clone()));
        let sha = hex_sha256(&wasm);
        if already.as_deref() == Some(sha.as_str()) {
            continue; // same artifact already deployed: keep the version count stable
        }
        host.functions()
            .deploy(&p.name, wasm.into(), opts)
            .await
            .with_context(|| format!("deploying {} from {}", p.name, p.file.display()))?;
    }

    // What parsing, start-up and the deploys above left in this thread's
    // allocator caches and freed.
    (host.config().release_memory)();
    let data_addr = data.local_addr()?;
    let admin_addr = admin.local_addr()?;
    tracing::info!(data = %data_addr, admin = %admin_addr, "wisp is serving");
    // Both listeners are bound and every function is loaded: ready.
    notify("READY=1");
    // The addresses, for people and scripts. Written whole and without
    // panicking if nobody reads them any more (a script that read the line
    // it wanted and closed the pipe must not stop the host).
    let mut banner = format!(
        "wisp: data plane  {data_scheme}://{data_addr}\n\
         wisp: admin API   {admin_scheme}://{admin_addr}/v1   (token in {}/admin-token unless WISP_ADMIN_TOKEN is set)\n\
         wisp: dashboard   {admin_scheme}://{admin_addr}/ui/\n",
        args.data_dir.display()
    );
    for f in host.functions().list()? {
        for r in &f.routes {
            banner.push_str(&format!(
                "wisp:   {:<12} {data_scheme}://{data_addr}{}\n",
                f.name,
                r.trim_end_matches("/*")
            ));
        }
    }
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    }
    let served = host
        .serve(
            Listeners {
                data,
                admin: Some(admin),
                data_tls,
                admin_tls,
            },
            shutdown,
            args.grace,
        )
        .await;
    if let Some(cluster) = host.cluster() {
        cluster.leave().await;
    }
    served
}

/// What `--cluster` and the flags beside it say.
fn cluster_config(args: &ServeArgs) -> anyhow::Result<ClusterConfig> {
    let token = match &args.cluster_token_file {
        Some(path) => Some(SecretString::from(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --cluster-token-file {}", path.display()))?
                .trim(),
        )),
        None => None,
    };
    let node_name = match &args.node_name {
        Some(name) => name.clone(),
        // The machine's name, as the kernel has it.
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().replace('.', "-"))
            .unwrap_or_else(|_| "wisp".into()),
    };
    Ok(ClusterConfig {
        urls: args.cluster.clone(),
        token,
        creds_file: args.cluster_creds_file.clone(),
        node_name,
        connect_timeout: args.cluster_connect_timeout,
        key_file: args.cluster_key_file.clone(),
    })
}

/// A size flag that must fit in 32 bits.
fn size_u32(n: u64, flag: &str) -> anyhow::Result<u32> {
    u32::try_from(n).map_err(|_| anyhow::anyhow!("invalid configuration: {flag} is too large"))
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Resolves on ctrl-c or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrives while
/// the host starts (it may load and compile for a while) stops it cleanly
/// instead of killing the process with the default action.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
