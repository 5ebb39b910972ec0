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
        if args.workload == BenchWorkload::LeaseAck {
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
        if target == Self::Etcd && workload != BenchWorkload::Writes {
            bail!("etcd has no work queue: only --workload writes");
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
            (Self::Etcd { http, url }, _) => {
                let key = format!("bench/{client}/{i}");
                let request = http.post(format!("{url}/v3/kv/put")).json(&json!({
                    "key": base64(key.as_bytes()),
                    "value": base64(payload.event.as_bytes()),
                }));
                expect(request).await
            }
            #[cfg(feature = "bench-nats")]
            (Self::Nats(worker), workload) => worker.step(workload, payload).await,
        }
    }
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
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.empty += other.empty;
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

/// Writes continuously through all URLs for the run; prints the longest
/// stretch without an acknowledged write (the failover window when a
/// leader is killed during the run) as JSON.
async fn failover(args: &BenchArgs) -> anyhow::Result<()> {
    let client = std::sync::Arc::new(Client::new(&args.client.config())?);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let clients = args.clients.first().copied().unwrap_or(4).max(1);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    for c in 0..clients {
        let (client, tx) = (client.clone(), tx.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                if client.post("default", &format!("failover-{c}-{i}"), None).await.is_ok() {
                    let _ = tx.send(Instant::now());
                }
            }
        });
    }
    drop(tx);
    let start = Instant::now();
    let (mut last, mut max_gap, mut acks) = (start, Duration::ZERO, 0u64);
    while let Some(at) = rx.recv().await {
        acks += 1;
        if at > last {
            max_gap = max_gap.max(at - last);
            last = at;
        }
    }
    println!(
        "{}",
        json!({ "mode": "failover", "acks": acks, "max_gap_ms": max_gap.as_millis() as u64 })
    );
    Ok(())
}
