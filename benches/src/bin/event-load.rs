//! The load driver of the event benchmark (`benches/events.sh`).
//!
//! `event-load publish`: N publishers, each on its own keep-alive HTTP/1.1
//! connection to the admin API, `POST /v1/topics/{topic}/events` small
//! payloads back to back (closed loop) for a fixed time or count, recording
//! each publish's latency (the host answers 202 only once the event is
//! durable). Then it waits until every event is handled, from the host's
//! Prometheus counters (`wisp_event_deliveries_total` by result, before and
//! after), and checks a sample of events through `GET /v1/events/{id}`:
//! every delivery `done`, and how long each took from publish to handled
//! (an event already removed after the retention counts as swept).
//!
//! `event-load sled`: the same closed loop in process against a bare sled
//! tree: insert an event-sized record, then wait for a group-commit flush
//! shared by all writers (one flushing thread, as the host's store does).
//! The floor of a durable publish on this disk, with no HTTP, no
//! transaction and no delivery.
//!
//! Both print one JSON line (the results) on stdout and a summary on
//! stderr.
//!
//! ```text
//! cargo build --release -p wisp-benches --bin event-load
//! target/release/event-load publish --admin http://127.0.0.1:9090 \
//!     --token "$(cat wisp-data/admin-token)" --topic bench --publishers 32 --duration 10
//! target/release/event-load sled --dir /tmp/sled-bench --writers 32 --duration 10
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Parser)]
#[command(about = "Load driver of the event benchmark (benches/events.sh)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish through the admin API and wait until everything is handled.
    Publish(PublishArgs),
    /// Durable inserts with group commit into a bare sled tree (baseline).
    Sled(SledArgs),
}

#[derive(Args)]
struct Load {
    /// Publishers (writers) running at once, each in a closed loop.
    #[arg(long, default_value_t = 32)]
    publishers: usize,
    /// Stop publishing after this many seconds...
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// ...or after this many events, whichever comes first.
    #[arg(long, default_value_t = u64::MAX)]
    events: u64,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
}

#[derive(Args)]
struct PublishArgs {
    /// Base URL of the admin API.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    admin: String,
    /// Admin bearer token.
    #[arg(long, env = "WISP_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// The topic to publish on.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Successful deliveries expected per event (its subscribers); 0: only
    /// measure publishing.
    #[arg(long, default_value_t = 1)]
    deliveries_per_event: u64,
    /// Give up waiting for the deliveries after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    drain_timeout: f64,
    /// More hosts whose deliveries count (admin URLs): the hosts of a
    /// cluster, whose deliveries are spread over them.
    #[arg(long)]
    count_at: Vec<String>,
    /// Events checked through `GET /v1/events/{id}` afterwards.
    #[arg(long, default_value_t = 200)]
    sample: usize,
    /// Then wait up to this many seconds until the host has removed the
    /// last event published (its retention over), so that the next run does
    /// not pay for this one's sweep (0: do not wait).
    #[arg(long, default_value_t = 0.0)]
    wait_swept: f64,
    #[command(flatten)]
    load: Load,
}

#[derive(Args)]
struct SledArgs {
    /// Directory of the sled database (created; should be empty).
    #[arg(long)]
    dir: std::path::PathBuf,
    /// Bytes per inserted record (an event's JSON record plus its payload is
    /// about 200).
    #[arg(long, default_value_t = 200)]
    record_bytes: usize,
    #[command(flatten)]
    load: Load,
}

// One core for the driver: the host under test gets the other one.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Publish(a) => publish(a).await,
        Command::Sled(a) => sled_baseline(a).await,
    }
}

// ------------------------------------------------------------ statistics

/// Latencies in µs, sorted.
struct Latencies(Vec<u64>);

impl Latencies {
    fn new(mut v: Vec<u64>) -> Latencies {
        v.sort_unstable();
        Latencies(v)
    }

    /// The q-quantile (nearest rank), in ms.
    fn ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1] as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.0.last().map_or(f64::NAN, |v| *v as f64 / 1000.0)
    }
}

/// What every closed loop shares: when to stop, and the ids it handed out.
struct Clock {
    start: Instant,
    deadline: Instant,
    limit: u64,
    next: AtomicU64,
}

impl Clock {
    fn new(load: &Load) -> Clock {
        let start = Instant::now();
        Clock {
            start,
            deadline: start + Duration::from_secs_f64(load.duration),
            limit: load.events,
            next: AtomicU64::new(0),
        }
    }

    /// The next event's number, or `None` when the run is over.
    fn take(&self) -> Option<u64> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n < self.limit).then_some(n)
    }
}

fn payload(n: usize) -> Bytes {
    // JSON-ish and small, like a typical notification.
    let mut s = String::from("{\"n\":\"");
    while s.len() + 2 < n {
        s.push('x');
    }
    s.push_str("\"}");
    Bytes::from(s)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

// ----------------------------------------------------------------- HTTP

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    send: SendRequest<Full<Bytes>>,
    host: String,
    token: String,
}

impl Conn {
    async fn open(base: &str, token: &str) -> Result<Conn> {
        let host = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--admin must be an http:// URL"))?
            .trim_end_matches('/')
            .to_string();
        let tcp = tokio::net::TcpStream::connect(&host)
            .await
            .with_context(|| format!("connecting to {host}"))?;
        tcp.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            send,
            host,
            token: token.to_string(),
        })
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(Bytes, &str)>,
    ) -> Result<(StatusCode, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        let body = match body {
            Some((b, ct)) => {
                req = req.header(header::CONTENT_TYPE, ct);
                b
            }
            None => Bytes::new(),
        };
        self.send.ready().await?;
        let res = self.send.send_request(req.body(Full::new(body))?).await?;
        let status = res.status();
        let bytes = res.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}

/// The host's delivery counters and published counter, from `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    success: u64,
    failure: u64,
    dead: u64,
    published: u64,
}

async fn counters(conn: &mut Conn) -> Result<Counters> {
    let (status, body) = conn.call("GET", "/metrics", None).await?;
    if !status.is_success() {
        bail!("GET /metrics answered {status}");
    }
    let text = std::str::from_utf8(&body)?;
    let mut c = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value = value.parse::<f64>().unwrap_or(0.0) as u64;
        // A cluster host's metrics carry a `node` label too.
        let (base, labels) = name.split_once('{').unwrap_or((name, ""));
        let result = |r: &str| labels.contains(&format!("result=\"{r}\""));
        match base {
            "wisp_events_published_total" => c.published = value,
            "wisp_event_deliveries_total" if result("success") => c.success = value,
            "wisp_event_deliveries_total" if result("failure") => c.failure = value,
            "wisp_event_deliveries_total" if result("dead") => c.dead = value,
            _ => {}
        }
    }
    Ok(c)
}

/// The counters of every host counted (`--admin` and `--count-at`), summed.
async fn total(controls: &mut [Conn]) -> Result<Counters> {
    let mut sum = Counters::default();
    for conn in controls {
        let c = counters(conn).await?;
        sum.success += c.success;
        sum.failure += c.failure;
        sum.dead += c.dead;
        sum.published += c.published;
    }
    Ok(sum)
}

// -------------------------------------------------------------- publish

async fn publish(a: PublishArgs) -> Result<()> {
    // The first also reads the sampled events afterwards: every control
    // connection is busy all along (a host closes one that sends no
    // request within its header timeout).
    let mut controls = vec![Conn::open(&a.admin, &a.token).await?];
    for url in &a.count_at {
        controls.push(Conn::open(url, &a.token).await?);
    }
    let before = total(&mut controls).await?;
    let path = format!("/v1/topics/{}/events", a.topic);
    let body = payload(a.load.payload_bytes);

    // Connect every publisher before the clock starts.
    let mut conns = Vec::with_capacity(a.load.publishers);
    for _ in 0..a.load.publishers {
        conns.push(Conn::open(&a.admin, &a.token).await?);
    }
    let clock = Arc::new(Clock::new(&a.load));
    let failed = Arc::new(AtomicBool::new(false));
    let first_publish_ms = now_ms();
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in conns {
        let clock = clock.clone();
        let failed = failed.clone();
        let path = path.clone();
        let body = body.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut ids = Vec::new();
            let mut errors = 0u64;
            while !failed.load(Ordering::Relaxed) && clock.take().is_some() {
                let t = Instant::now();
                let (status, answer) = conn
                    .call("POST", &path, Some((body.clone(), "application/json")))
                    .await?;
                let took = t.elapsed();
                if status != StatusCode::ACCEPTED {
                    errors += 1;
                    eprintln!(
                        "event-load: publish answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                    if errors >= 10 {
                        failed.store(true, Ordering::Relaxed);
                    }
                    continue;
                }
                lat.push(took.as_micros() as u64);
                let v: Value = serde_json::from_slice(&answer)?;
                if let Some(id) = v["id"].as_str() {
                    ids.push(id.to_string());
                }
            }
            anyhow::Ok((lat, ids, errors, Instant::now()))
        });
    }
    let mut lat = Vec::new();
    let mut ids = Vec::new();
    let mut errors = 0;
    let mut last_answer = clock.start;
    while let Some(r) = tasks.join_next().await {
        let (l, i, e, end) = r??;
        lat.extend(l);
        ids.extend(i);
        errors += e;
        last_answer = last_answer.max(end);
    }
    let published = lat.len() as u64;
    let publish_secs = (last_answer - clock.start).as_secs_f64();
    let lat = Latencies::new(lat);

    // Until every event is handled (counted by the host), polled.
    let want = published * a.deliveries_per_event;
    let drain_deadline = Instant::now() + Duration::from_secs_f64(a.drain_timeout);
    let mut after = total(&mut controls).await?;
    let mut handled_at = Instant::now();
    while after.success - before.success < want {
        if Instant::now() > drain_deadline {
            bail!(
                "only {} of {want} deliveries succeeded within {} s",
                after.success - before.success,
                a.drain_timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        after = total(&mut controls).await?;
        handled_at = Instant::now();
    }
    let handled = after.success - before.success;
    let e2e_secs = (handled_at - clock.start).as_secs_f64();

    // A sample of events, spread over the run: each delivery done, and its
    // time from publish to handled (the host's timestamps, ms).
    let mut sample_lat = Vec::new();
    let mut not_done = 0;
    let mut swept = 0;
    if a.deliveries_per_event > 0 && !ids.is_empty() {
        ids.sort();
        let step = (ids.len() / a.sample.max(1)).max(1);
        for id in ids.iter().step_by(step).chain(ids.last()) {
            let (status, body) = controls[0]
                .call("GET", &format!("/v1/events/{id}"), None)
                .await?;
            // Only finished events are removed (after the retention).
            if status == StatusCode::NOT_FOUND {
                swept += 1;
                continue;
            }
            if !status.is_success() {
                bail!("GET /v1/events/{id} answered {status}");
            }
            let v: Value = serde_json::from_slice(&body)?;
            let time = v["time_ms"].as_u64().unwrap_or(0);
            for d in v["deliveries"].as_array().into_iter().flatten() {
                if d["status"] == "done" {
                    let updated = d["updated_ms"].as_u64().unwrap_or(0);
                    sample_lat.push(updated.saturating_sub(time) * 1000);
                } else {
                    not_done += 1;
                }
            }
        }
    }
    let sample_lat = Latencies::new(sample_lat);

    // The host sweeps expired events in expiry order: once the last event
    // published is gone, so are (about) all of this run's.
    let mut swept_secs = None;
    if a.wait_swept > 0.0
        && let Some(last) = ids
            .iter()
            .max_by_key(|id| u64::from_str_radix(id, 16).unwrap_or(0))
    {
        let deadline = Instant::now() + Duration::from_secs_f64(a.wait_swept);
        loop {
            let (status, _) = controls[0]
                .call("GET", &format!("/v1/events/{last}"), None)
                .await?;
            if status == StatusCode::NOT_FOUND {
                swept_secs = Some((Instant::now() - last_answer).as_secs_f64());
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let result = serde_json::json!({
        "mode": "publish",
        "publishers": a.load.publishers,
        "payload_bytes": a.load.payload_bytes,
        "published": published,
        "publish_errors": errors,
        "publish_secs": publish_secs,
        "published_per_s": published as f64 / publish_secs,
        "publish_p50_ms": lat.ms(0.50),
        "publish_p99_ms": lat.ms(0.99),
        "publish_max_ms": lat.max_ms(),
        "handled": handled,
        "e2e_secs": e2e_secs,
        "handled_per_s": if want > 0 { handled as f64 / e2e_secs } else { 0.0 },
        "deliveries_failed": after.failure - before.failure,
        "deliveries_dead": after.dead - before.dead,
        "host_published": after.published - before.published,
        "sampled_deliveries": sample_lat.0.len(),
        "sampled_not_done": not_done,
        "sampled_swept": swept,
        "swept_after_s": swept_secs,
        "handled_latency_p50_ms": sample_lat.ms(0.50),
        "handled_latency_p99_ms": sample_lat.ms(0.99),
        "first_publish_ms": first_publish_ms,
    });
    eprintln!(
        "event-load: {} publishers: {published} published in {publish_secs:.2} s ({:.0}/s), \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {handled} handled in {e2e_secs:.2} s ({:.0}/s); \
         failed {}, dead {}, errors {errors}",
        a.load.publishers,
        published as f64 / publish_secs,
        lat.ms(0.5),
        lat.ms(0.99),
        lat.max_ms(),
        if want > 0 {
            handled as f64 / e2e_secs
        } else {
            0.0
        },
        after.failure - before.failure,
        after.dead - before.dead,
    );
    println!("{result}");
    if errors > 0 || not_done > 0 || after.failure > before.failure {
        bail!("the run had errors (see above)");
    }
    Ok(())
}

// ----------------------------------------------------------------- sled

/// Group commit, as the host's store does it: writers take a ticket after
/// their insert; one thread flushes up to the newest ticket and publishes
/// how far it got.
struct GroupCommit {
    requested: std::sync::Mutex<u64>,
    wake: std::sync::Condvar,
    done: tokio::sync::watch::Sender<u64>,
}

impl GroupCommit {
    fn start(db: sled::Db, stop: Arc<AtomicBool>) -> Arc<GroupCommit> {
        let gc = Arc::new(GroupCommit {
            requested: std::sync::Mutex::new(0),
            wake: std::sync::Condvar::new(),
            done: tokio::sync::watch::channel(0).0,
        });
        let g = gc.clone();
        std::thread::spawn(move || {
            let mut flushed = 0;
            loop {
                let target = {
                    let mut r = g.requested.lock().unwrap();
                    while *r == flushed && !stop.load(Ordering::Relaxed) {
                        r = g
                            .wake
                            .wait_timeout(r, Duration::from_millis(100))
                            .unwrap()
                            .0;
                    }
                    if *r == flushed {
                        return;
                    }
                    *r
                };
                db.flush().expect("flush");
                flushed = target;
                g.done.send_replace(target);
            }
        });
        gc
    }

    async fn commit(&self) {
        let mut done = self.done.subscribe();
        let ticket = {
            let mut r = self.requested.lock().unwrap();
            *r += 1;
            *r
        };
        self.wake.notify_one();
        let _ = done.wait_for(|d| *d >= ticket).await;
    }
}

async fn sled_baseline(a: SledArgs) -> Result<()> {
    let db = sled::Config::new()
        .path(&a.dir)
        .cache_capacity(16 << 20)
        .mode(sled::Mode::LowSpace)
        .open()?;
    let tree = db.open_tree("events")?;
    let stop = Arc::new(AtomicBool::new(false));
    let gc = GroupCommit::start(db.clone(), stop.clone());
    let value = vec![b'x'; a.record_bytes];
    let clock = Arc::new(Clock::new(&a.load));
    // Writers on the blocking pool would be closer to the host's shape, but
    // a sled insert is microseconds: tasks on this one thread suffice, and
    // the flushing thread runs beside them.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.load.publishers {
        let (tree, gc, clock, value) = (tree.clone(), gc.clone(), clock.clone(), value.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            while let Some(n) = clock.take() {
                let t = Instant::now();
                tree.insert(n.to_be_bytes(), value.as_slice())?;
                gc.commit().await;
                lat.push(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok((lat, Instant::now()))
        });
    }
    let mut lat = Vec::new();
    let mut end = clock.start;
    while let Some(r) = tasks.join_next().await {
        let (l, e) = r??;
        lat.extend(l);
        end = end.max(e);
    }
    stop.store(true, Ordering::Relaxed);
    let secs = (end - clock.start).as_secs_f64();
    let n = lat.len() as u64;
    let lat = Latencies::new(lat);
    let result = serde_json::json!({
        "mode": "sled",
        "publishers": a.load.publishers,
        "record_bytes": a.record_bytes,
        "published": n,
        "publish_secs": secs,
        "published_per_s": n as f64 / secs,
        "publish_p50_ms": lat.ms(0.50),
        "publish_p99_ms": lat.ms(0.99),
        "publish_max_ms": lat.max_ms(),
    });
    eprintln!(
        "event-load sled: {} writers: {n} durable inserts in {secs:.2} s ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms",
        a.load.publishers,
        n as f64 / secs,
        lat.ms(0.5),
        lat.ms(0.99)
    );
    println!("{result}");
    Ok(())
}
