//! Background writers that behave like real clients of a cluster under
//! faults: each POSTs unique events with an `Idempotency-Key`, follows `307`
//! itself (so every hop is attributed to the node that answered it), and on
//! a `503`, any other refusal or a client timeout retries the same event
//! with the same key against the next node. Every attempt is recorded with
//! its start, duration and outcome, so a test can measure throughput per
//! window and what one node answered while it was cut off.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::harness::{error_chain, form_event, Cluster, FORM};

/// Pause before retrying an event elsewhere, so a node that refuses at once
/// is not hammered in a tight loop.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Redirects followed for one attempt before it counts as refused.
const MAX_HOPS: usize = 5;

/// What one HTTP request of a writer got.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `201` with this `Seq`.
    Created(u64),
    /// `307` (followed by the next hop).
    Redirect,
    /// Any other status (`503`, `429`, ...): retried elsewhere.
    Refused(StatusCode),
    /// No answer within the client timeout, or a transport error.
    Failed(String),
}

/// One HTTP request: to node `node` (index into the bases), when, how long.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub node: usize,
    pub started: Instant,
    pub took: Duration,
    pub outcome: Outcome,
}

impl Attempt {
    pub fn ended(&self) -> Instant {
        self.started + self.took
    }
}

/// Everything one writer did.
#[derive(Debug, Default)]
pub struct WriterLog {
    /// Acknowledged `(seq, event)` in order, with the instant of the ack and
    /// how long the event took from its first send to its ack.
    pub acked: Vec<(u64, String)>,
    pub acked_at: Vec<(Instant, Duration)>,
    pub attempts: Vec<Attempt>,
}

/// Writers running in the background until [`Writers::finish`].
pub struct Writers {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<(usize, WriterLog)>,
    n: usize,
}

impl Writers {
    /// `n` writers; writer `t`'s `i`th event is `{prefix}{t}-{i}` (also its
    /// idempotency key), first sent to `bases[(t + i) % bases.len()]` with
    /// `client` (which must not follow redirects). `limit`: events per
    /// writer, or `None` to write until [`Writers::finish`].
    pub fn start(
        client: &reqwest::Client,
        bases: &[String],
        prefix: &str,
        n: usize,
        limit: Option<usize>,
    ) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..n {
            let (client, bases, prefix, stop) =
                (client.clone(), bases.to_vec(), prefix.to_string(), stop.clone());
            tasks.spawn(async move {
                let mut log = WriterLog::default();
                let mut i = 0;
                while limit.is_none_or(|l| i < l) && !stop.load(Ordering::Relaxed) {
                    let event = format!("{prefix}{t}-{i}");
                    let first_sent = Instant::now();
                    let mut node = (t + i) % bases.len();
                    loop {
                        if let Some(seq) = attempt(&client, &bases, node, &event, &mut log).await {
                            log.acked.push((seq, event));
                            log.acked_at.push((Instant::now(), first_sent.elapsed()));
                            break;
                        }
                        // Outcome unknown: the event stays unacknowledged.
                        if stop.load(Ordering::Relaxed) {
                            return (t, log);
                        }
                        node = (node + 1) % bases.len();
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    i += 1;
                }
                (t, log)
            });
        }
        Writers { stop, tasks, n }
    }

    /// Ask every writer to stop after its current event, and collect the
    /// logs (index = writer).
    pub async fn finish(self) -> Vec<WriterLog> {
        self.stop.store(true, Ordering::Relaxed);
        self.join().await
    }

    /// Wait until every writer has written its `limit` events (forever
    /// without a limit), and collect the logs.
    pub async fn join(mut self) -> Vec<WriterLog> {
        let mut out: Vec<WriterLog> = (0..self.n).map(|_| WriterLog::default()).collect();
        while let Some(joined) = self.tasks.join_next().await {
            let (t, log) = joined.expect("writer task panicked");
            out[t] = log;
        }
        out
    }
}

/// Send `event` to `bases[node]`, following `307` by hand; `Some(seq)` once
/// a node answers `201`.
async fn attempt(
    client: &reqwest::Client,
    bases: &[String],
    mut node: usize,
    event: &str,
    log: &mut WriterLog,
) -> Option<u64> {
    let mut url = format!("{}/event", bases[node]);
    for _ in 0..MAX_HOPS {
        let started = Instant::now();
        let sent = client
            .request(Method::POST, &url)
            .header(raftq::wire::header::IDEMPOTENCY_KEY, event)
            .header(reqwest::header::CONTENT_TYPE, FORM)
            .body(form_event(event))
            .send()
            .await;
        let (outcome, location) = match sent {
            Err(e) => (Outcome::Failed(error_chain(&e)), None),
            Ok(r) => {
                let status = r.status();
                let location = r
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                let seq = r
                    .headers()
                    .get(raftq::wire::header::SEQ)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.trim().parse::<u64>().ok());
                // Read the body so the connection is reusable and a late
                // failure counts as one.
                match r.bytes().await {
                    Err(e) => (Outcome::Failed(error_chain(&e)), None),
                    Ok(_) if status == StatusCode::CREATED => match seq {
                        Some(seq) => (Outcome::Created(seq), None),
                        None => panic!("POST {url}: 201 without a Seq header"),
                    },
                    Ok(_) if status == StatusCode::TEMPORARY_REDIRECT => {
                        (Outcome::Redirect, location)
                    }
                    Ok(_) => (Outcome::Refused(status), None),
                }
            }
        };
        let created = match outcome {
            Outcome::Created(seq) => Some(seq),
            _ => None,
        };
        log.attempts.push(Attempt { node, started, took: started.elapsed(), outcome });
        if created.is_some() {
            return created;
        }
        let next = location?;
        node = bases.iter().position(|b| next.starts_with(b.as_str()))?;
        url = next;
    }
    None
}

/// Acknowledgements in `[from, to)` per second.
pub fn ack_rate(logs: &[WriterLog], from: Instant, to: Instant) -> f64 {
    let n = logs
        .iter()
        .flat_map(|l| l.acked_at.iter())
        .filter(|(at, _)| *at >= from && *at < to)
        .count();
    n as f64 / to.saturating_duration_since(from).as_secs_f64().max(1e-3)
}

/// Every writer's acknowledged `(seq, event)`, merged.
pub fn all_acked(logs: &[WriterLog]) -> Vec<(u64, String)> {
    logs.iter().flat_map(|l| l.acked.iter().cloned()).collect()
}

/// [`Cluster::check_acked`] on every live node, and more: every event in
/// the log was written by these writers (`prefix`), and none is there twice
/// (the writers' bodies are unique, so a second copy is a retry applied
/// twice).
pub async fn check_acked_once(c: &Cluster, acked: &[(u64, String)], prefix: &str) {
    for i in c.live() {
        let name = &c.nodes[i].name;
        let events = c.check_acked(i, acked).await;
        let mut seen: HashMap<&str, u64> = HashMap::new();
        for (seq, event) in &events {
            assert!(event.starts_with(prefix), "{name}: an event nobody wrote at {seq}: {event:?}");
            if let Some(first) = seen.insert(event, *seq) {
                panic!(
                    "{name}: event {event:?} is in the log twice (seqs {first} and {seq}): a retry was applied twice"
                );
            }
        }
    }
}
