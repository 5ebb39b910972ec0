//! `raftq bench`: the load generator behind `make bench`.
//!
//! Each client is one task with its own connection (keep-alive HTTPS for
//! raftq and etcd, one NATS connection for JetStream) that repeats one unit
//! of work (`--workload`) back to back for the run's duration and records
//! each unit's latency. The same loop loads every target, so the systems are
//! measured by one client design in one run on one machine:
//!
//! - `writes`: one event per request (raftq `POST /event`, etcd `PUT`,
//!   NATS one JetStream publish awaiting its ack).
//! - `batch`: `--batch-events` events per unit (raftq one NDJSON
//!   `POST /queues/bench-batch/events`, all or nothing in one log entry;
//!   NATS that many publishes sent back to back, then all their acks awaited).
//! - `lease-ack`: the queue is filled first (`--prefill`), then each worker
//!   loops lease one event, then acknowledge it (raftq `POST
//!   /queues/bench-work/lease` + `POST .../events/{seq}/ack`, both
//!   replicated; NATS fetch 1 from a shared durable pull consumer + an ack
//!   the server confirms, `double_ack`). A lease that finds the queue empty
//!   counts in `empty`, not as work.
//! - `put-delete`: even clients write one event per request, odd clients
//!   remove one (raftq `POST` / `DELETE /queues/bench-work/event` on a
//!   prefilled queue; etcd `PUT` / a `deleterange` over the `bench-pd/` keys
//!   the writers put, each one replicated write; NATS a publish / a fetch +
//!   ack from the prefilled work-queue stream). A removal that finds
//!   nothing counts in `empty`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use raftq::cli::{BenchArgs, BenchWorkload};
use raftq::client::Client;
use serde_json::json;

#[cfg(feature = "bench-nats")]
mod nats;

/// Queue of the raftq `batch` workload (apart from `writes`' default queue).
const BATCH_QUEUE: &str = "bench-batch";
/// Queue of the raftq `lease-ack` workload.
const WORK_QUEUE: &str = "bench-work";
/// Longer than any run, so no lease expires and nothing is redelivered.
const LEASE_TTL: &str = "300s";
/// A unit of work not done by then counts as an error, so that a lost
/// answer cannot stall a client past the end of its run.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Key prefix of the etcd writes.
const ETCD_PREFIX: &str = "bench/";
/// Key prefix of the `put-delete` writers, and the end of the range that
/// covers it: apart from `writes`' keys, which would otherwise make the
/// first delete-range of a run delete every key the earlier rows left.
const ETCD_PD_PREFIX: &str = "bench-pd/";
const ETCD_PD_RANGE_END: &str = "bench-pd0";
/// Concurrent publishers filling the queue before a `lease-ack` run.
const FILLERS: u64 = 16;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.failover {
        return failover(&args).await;
    }
    let url =
        args.client.url.first().context("--url is required")?.trim_end_matches('/').to_string();
    let target = Target::parse(&args.target, args.workload)?;
    let payload = Payloads::new(args.event_bytes, args.batch_events.max(1));
    let url = target.setup(&args.client.url, url, args.workload).await?;
    for &clients in &args.clients {
        let prefilled = match args.workload {
            BenchWorkload::LeaseAck => true,
            // etcd's deleters remove whatever the writers put.
            BenchWorkload::PutDelete => target != Target::Etcd,
            BenchWorkload::Writes | BenchWorkload::Batch => false,
        };
        if prefilled {
            let events = args.prefill.unwrap_or(args.seconds * 20_000);
            fill(&args, target, &url, &payload, events).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let mut tasks = Vec::new();
        for c in 0..clients {
            let conn = target.connect(&args, &url).await?;
            let (payload, workload) = (payload.clone(), args.workload);
            tasks.push(tokio::spawn(
                async move { load(conn, workload, &payload, c, deadline).await },
            ));
        }
        let mut tally = Tally::default();
        for task in tasks {
            tally.merge(task.await??);
        }
        println!("{}", tally.line(&args, clients));
    }
    Ok(())
}

/// The bodies every client sends, built once.
#[derive(Clone)]
struct Payloads {
    event: String,
    /// `batch_events` NDJSON lines of `{"event": event}`.
    ndjson: Bytes,
    batch_events: usize,
}

impl Payloads {
    fn new(event_bytes: usize, batch_events: usize) -> Self {
        let event = "x".repeat(event_bytes);
        let line = format!("{}\n", json!({ "event": event }));
        Self { ndjson: Bytes::from(line.repeat(batch_events)), event, batch_events }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Raftq,
    Etcd,
    #[cfg(feature = "bench-nats")]
    Nats,
}

impl Target {
    fn parse(name: &str, workload: BenchWorkload) -> anyhow::Result<Self> {
        let target = match name {
            "raftq" => Self::Raftq,
            "etcd" => Self::Etcd,
            #[cfg(feature = "bench-nats")]
            "nats" => Self::Nats,
            #[cfg(not(feature = "bench-nats"))]
            "nats" => bail!("--target nats needs a build with --features bench-nats"),
            other => bail!("unknown --target {other}"),
        };
        if target == Self::Etcd
            && !matches!(workload, BenchWorkload::Writes | BenchWorkload::PutDelete)
        {
            bail!("etcd has no work queue: only --workload writes or put-delete");
        }
        Ok(target)
    }

    /// Puts the target in a known state before the first run; returns the
    /// URL to load (NATS: the stream leader's among `urls`).
    async fn setup(
        self,
        urls: &[String],
        url: String,
        workload: BenchWorkload,
    ) -> anyhow::Result<String> {
        #[cfg(feature = "bench-nats")]
        if self == Self::Nats {
            return nats::setup(urls, workload).await;
        }
        let _ = (urls, workload);
        Ok(url)
    }

    async fn connect(self, args: &BenchArgs, url: &str) -> anyhow::Result<Conn> {
        Ok(match self {
            Self::Raftq => Conn::Raftq { http: http_client(args)?, url: url.to_string() },
            Self::Etcd => Conn::Etcd { http: http_client(args)?, url: url.to_string() },
            #[cfg(feature = "bench-nats")]
            Self::Nats => Conn::Nats(Box::new(nats::Worker::connect(url, args.workload).await?)),
        })
    }
}

/// One client's connection to the target.
enum Conn {
    Raftq {
        http: reqwest::Client,
        url: String,
    },
    Etcd {
        http: reqwest::Client,
        url: String,
    },
    #[cfg(feature = "bench-nats")]
    Nats(Box<nats::Worker>),
}

/// What one unit of work came to.
enum Outcome {
    Done,
    /// `lease-ack` found nothing to lease.
    Empty,
    /// The target answered with an error (e.g. an HTTP status).
    Refused(String),
}

impl Conn {
    /// One unit of `workload`; `Err` is a transport error.
    async fn step(
        &self,
        workload: BenchWorkload,
        payload: &Payloads,
        client: usize,
        i: u64,
    ) -> anyhow::Result<Outcome> {
        match (self, workload) {
            (Self::Raftq { http, url }, BenchWorkload::Writes) => {
                let request = http.post(format!("{url}/event")).body(payload.event.clone());
                expect(request.header("content-type", "text/plain")).await
            }
            (Self::Raftq { http, url }, BenchWorkload::Batch) => {
                expect(ndjson_batch(http, url, BATCH_QUEUE, payload)).await
            }
            (Self::Raftq { http, url }, BenchWorkload::LeaseAck) => {
                raftq_lease_ack(http, url).await
            }
            (Self::Raftq { http, url }, BenchWorkload::PutDelete) => {
                let event = format!("{url}/queues/{WORK_QUEUE}/event");
                if removes(workload, client) {
                    raftq_delete(http.delete(event)).await
                } else {
                    let request = http.post(event).body(payload.event.clone());
                    expect(request.header("content-type", "text/plain")).await
                }
            }
            (Self::Etcd { http, url }, _) if removes(workload, client) => {
                // Every key the writers put: one replicated delete-range
                // per request, like one dequeue.
                let request = http.post(format!("{url}/v3/kv/deleterange")).json(&json!({
                    "key": base64(ETCD_PD_PREFIX.as_bytes()),
                    "range_end": base64(ETCD_PD_RANGE_END.as_bytes()),
                }));
                expect(request).await
            }
            (Self::Etcd { http, url }, _) => {
                let prefix =
                    if workload == BenchWorkload::PutDelete { ETCD_PD_PREFIX } else { ETCD_PREFIX };
                let key = format!("{prefix}{client}/{i}");
                let request = http.post(format!("{url}/v3/kv/put")).json(&json!({
                    "key": base64(key.as_bytes()),
                    "value": base64(payload.event.as_bytes()),
                }));
                expect(request).await
            }
            #[cfg(feature = "bench-nats")]
            (Self::Nats(worker), workload) => {
                worker.step(workload, payload, removes(workload, client)).await
            }
        }
    }
}

/// Whether `client` is one of the removers of a `put-delete` run.
fn removes(workload: BenchWorkload, client: usize) -> bool {
    workload == BenchWorkload::PutDelete && client % 2 == 1
}

/// One `DELETE /event`: `200` removed one, `204` found the queue empty.
async fn raftq_delete(request: reqwest::RequestBuilder) -> anyhow::Result<Outcome> {
    let response = request.send().await?;
    let status = response.status();
    let _ = response.bytes().await;
    Ok(match status {
        reqwest::StatusCode::OK => Outcome::Done,
        reqwest::StatusCode::NO_CONTENT => Outcome::Empty,
        other => Outcome::Refused(format!("delete: {other}")),
    })
}

/// One batch publish of `payload`'s NDJSON lines to raftq's `queue`.
fn ndjson_batch(
    http: &reqwest::Client,
    url: &str,
    queue: &str,
    payload: &Payloads,
) -> reqwest::RequestBuilder {
    http.post(format!("{url}/queues/{queue}/events"))
        .header("content-type", "application/x-ndjson")
        .body(payload.ndjson.clone())
}

/// Sends `request`; any success status is one unit done.
async fn expect(request: reqwest::RequestBuilder) -> anyhow::Result<Outcome> {
    let response = request.send().await?;
    let status = response.status();
    let _ = response.bytes().await;
    Ok(if status.is_success() { Outcome::Done } else { Outcome::Refused(status.to_string()) })
}

/// Leases the oldest available event of the work queue and acks it: two
/// replicated writes, each confirmed before the next.
async fn raftq_lease_ack(http: &reqwest::Client, url: &str) -> anyhow::Result<Outcome> {
    let base = format!("{url}/queues/{WORK_QUEUE}");
    let lease = http.post(format!("{base}/lease?ttl={LEASE_TTL}")).send().await?;
    match lease.status() {
        reqwest::StatusCode::OK => {}
        reqwest::StatusCode::NO_CONTENT => return Ok(Outcome::Empty),
        other => return Ok(Outcome::Refused(format!("lease: {other}"))),
    }
    let header =
        |name: &str| lease.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (Some(seq), Some(token)) = (header("seq"), header("lease")) else {
        return Ok(Outcome::Refused("lease: 200 without Seq and Lease headers".into()));
    };
    let _ = lease.bytes().await;
    let token = percent_encoding::utf8_percent_encode(&token, percent_encoding::NON_ALPHANUMERIC);
    let ack = http.post(format!("{base}/events/{seq}/ack?lease={token}")).send().await?;
    let status = ack.status();
    let _ = ack.bytes().await;
    Ok(if status == reqwest::StatusCode::NO_CONTENT {
        Outcome::Done
    } else {
        Outcome::Refused(format!("ack: {status}"))
    })
}

/// Puts `events` events in the target's work queue, in batches from
/// [`FILLERS`] concurrent publishers, before a `lease-ack` run.
async fn fill(
    args: &BenchArgs,
    target: Target,
    url: &str,
    payload: &Payloads,
    events: u64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let batches = events.div_ceil(payload.batch_events as u64);
    let mut tasks = Vec::new();
    for f in 0..FILLERS {
        let mine = batches / FILLERS + u64::from(f < batches % FILLERS);
        let conn = target.connect(args, url).await?;
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..mine {
                let outcome = match &conn {
                    Conn::Raftq { http, url } => {
                        expect(ndjson_batch(http, url, WORK_QUEUE, &payload)).await?
                    }
                    #[cfg(feature = "bench-nats")]
                    Conn::Nats(worker) => worker.fill_batch(&payload).await?,
                    Conn::Etcd { .. } => bail!("etcd has no work queue"),
                };
                if let Outcome::Refused(why) = outcome {
                    bail!("filling the work queue: {why}");
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    eprintln!(
        "bench: {} events in the work queue in {:.1} s",
        batches * payload.batch_events as u64,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn http_client(args: &BenchArgs) -> anyhow::Result<reqwest::Client> {
    let builder =
        raftq::tls::api_client_builder(args.client.ca.as_deref(), args.client.insecure, None)?;
    Ok(builder.redirect(reqwest::redirect::Policy::none()).pool_max_idle_per_host(1).build()?)
}

/// One client's measurements.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    empty: u64,
    /// Units done by the removers of `put-delete`.
    removed: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.empty += other.empty;
        self.removed += other.removed;
    }

    /// The run's JSON line: `writes`/`writes_per_sec` keep their meaning
    /// (units of work) so older readers of the file still work; the batch
    /// and lease-ack workloads add their own names for the same figures.
    fn line(mut self, args: &BenchArgs, clients: usize) -> serde_json::Value {
        self.latencies_us.sort_unstable();
        let lat = &self.latencies_us;
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return f64::NAN;
            }
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            (lat[i] as f64 / 1000.0 * 100.0).round() / 100.0
        };
        let units = lat.len() as u64;
        let per_sec = |n: u64| (n as f64 / args.seconds as f64).round();
        let mut line = json!({
            "target": args.target,
            "workload": args.workload.name(),
            "clients": clients,
            "seconds": args.seconds,
            "writes": units,
            "errors": self.errors,
            "writes_per_sec": per_sec(units),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        });
        let extra = match args.workload {
            BenchWorkload::Writes => json!({}),
            BenchWorkload::Batch => {
                let events = units * args.batch_events as u64;
                json!({
                    "batch_events": args.batch_events,
                    "batches": units,
                    "batches_per_sec": per_sec(units),
                    "events": events,
                    "events_per_sec": per_sec(events),
                })
            }
            BenchWorkload::LeaseAck => json!({
                "acks": units,
                "acks_per_sec": per_sec(units),
                "empty": self.empty,
            }),
            BenchWorkload::PutDelete => json!({
                "puts": units - self.removed,
                "deletes": self.removed,
                "empty": self.empty,
            }),
        };
        if let (Some(line), serde_json::Value::Object(extra)) = (line.as_object_mut(), extra) {
            line.extend(extra);
        }
        line
    }
}

async fn load(
    conn: Conn,
    workload: BenchWorkload,
    payload: &Payloads,
    client: usize,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut i = 0u64;
    let report = |tally: &mut Tally, why: &str| {
        tally.errors += 1;
        if tally.errors == 1 {
            eprintln!("bench: {why}");
        }
    };
    while Instant::now() < deadline {
        i += 1;
        let start = Instant::now();
        let step = tokio::time::timeout(STEP_TIMEOUT, conn.step(workload, payload, client, i));
        match step.await.unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in {STEP_TIMEOUT:?}"))) {
            Ok(Outcome::Done) => {
                tally.removed += u64::from(removes(workload, client));
                tally.latencies_us.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Ok(Outcome::Empty) => tally.empty += 1,
            Ok(Outcome::Refused(why)) => report(&mut tally, &why),
            Err(e) => {
                report(&mut tally, &format!("{e:#}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Ok(tally)
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Per-request bound of the failover clients: a write stuck on a dead or
/// cut-off node is abandoned and retried on the next node well before the
/// failover windows being measured (about a second) would look longer.
const FAILOVER_STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// Writes continuously through all URLs for the run (client `c` starts at
/// URL `c % n` and moves to the next on any failure); prints the number of
/// acknowledged writes and the longest stretch without one (the failover
/// window when a leader is killed during the run) as JSON, and with
/// `--acks-out` the time of every acknowledged write. SIGTERM ends the run
/// early (after each client's current write), so that a script can stop it
/// once it has done its kills.
async fn failover(args: &BenchArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.target, BenchWorkload::Writes)?;
    let urls: Vec<String> =
        args.client.url.iter().map(|u| u.trim_end_matches('/').to_string()).collect();
    if urls.is_empty() {
        bail!("--url is required");
    }
    let payload = Payloads::new(args.event_bytes, 1);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    let on_term = stop.clone();
    tokio::spawn(async move {
        term.recv().await;
        on_term.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let clients = args.clients.first().copied().unwrap_or(4).max(1);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<std::time::SystemTime>();
    for c in 0..clients {
        let mut rotated = urls.clone();
        rotated.rotate_left(c % urls.len());
        let writer = FailoverWriter::new(target, args, rotated)?;
        let (tx, payload, stop) = (tx.clone(), payload.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let write =
                    tokio::time::timeout(FAILOVER_STEP_TIMEOUT, writer.write(c, i, &payload));
                match write.await {
                    Ok(true) => {
                        let _ = tx.send(std::time::SystemTime::now());
                    }
                    // A refused or timed-out write: the next node, after a
                    // pause that keeps a fully down cluster from spinning.
                    _ => {
                        writer.next_url();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        });
    }
    drop(tx);
    let (mut acks_at, mut max_gap) = (Vec::new(), Duration::ZERO);
    let mut last = std::time::SystemTime::now();
    while let Some(at) = rx.recv().await {
        if let Ok(gap) = at.duration_since(last) {
            max_gap = max_gap.max(gap);
            last = at;
        }
        acks_at.push(at);
    }
    if let Some(path) = &args.acks_out {
        let mut text = String::with_capacity(acks_at.len() * 17);
        for at in &acks_at {
            let micros = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros();
            text.push_str(&format!("{micros}\n"));
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "{}",
        json!({
            "mode": "failover",
            "target": args.target,
            "clients": clients,
            "acks": acks_at.len(),
            "max_gap_ms": max_gap.as_millis() as u64,
        })
    );
    Ok(())
}

/// One failover client: raftq's own client (which follows redirects and
/// tries the other URLs itself) or plain etcd `PUT`s to the current URL
/// (an etcd follower forwards a write to its leader).
enum FailoverWriter {
    Raftq(Client),
    Etcd { http: reqwest::Client, urls: Vec<String>, current: std::sync::atomic::AtomicUsize },
}

impl FailoverWriter {
    fn new(target: Target, args: &BenchArgs, urls: Vec<String>) -> anyhow::Result<Self> {
        Ok(match target {
            Target::Raftq => {
                let mut config = args.client.config();
                config.urls = urls;
                Self::Raftq(Client::new(&config)?)
            }
            Target::Etcd => Self::Etcd {
                http: http_client(args)?,
                urls,
                current: std::sync::atomic::AtomicUsize::new(0),
            },
            #[cfg(feature = "bench-nats")]
            Target::Nats => bail!("--failover: raftq or etcd"),
        })
    }

    /// One write; `true` once acknowledged.
    async fn write(&self, client: usize, i: u64, payload: &Payloads) -> bool {
        match self {
            Self::Raftq(raftq) => {
                raftq.post("default", &format!("failover-{client}-{i}"), None).await.is_ok()
            }
            Self::Etcd { http, urls, current } => {
                let url = &urls[current.load(std::sync::atomic::Ordering::Relaxed) % urls.len()];
                let request = http.post(format!("{url}/v3/kv/put")).json(&json!({
                    "key": base64(format!("{ETCD_PREFIX}failover/{client}/{i}").as_bytes()),
                    "value": base64(payload.event.as_bytes()),
                }));
                matches!(expect(request).await, Ok(Outcome::Done))
            }
        }
    }

    /// After a failed write: etcd clients move to the next URL (raftq's
    /// client already tried them all).
    fn next_url(&self) {
        if let Self::Etcd { current, .. } = self {
            current.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
