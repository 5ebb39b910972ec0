//! Issue 5, consumers: the real `raftq consume` binary follows a queue
//! through two leader kills, the death of the node it reads from and a 30 s
//! blackhole of its connection (iptables DROP on the API port of the node it
//! reads from then; the consumer names that node in its log), and prints
//! exactly the acknowledged events once each in seq order; a consumer from before the retention horizon reports the loss
//! and carries on from the oldest retained event.
//!
//! Both delivery paths run side by side: one consumer with SSE streams (and
//! its polling fallback), one with `--poll` only. When the nodes do not
//! serve `GET /events/watch` yet, the first one runs on its fallback alone,
//! and the test says so loudly.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::harness::{form_event, http_client, send, wait_until, Cluster, BIN, FORM};

// ---------------------------------------------------------------------------
// Client processes
// ---------------------------------------------------------------------------

/// One `raftq` client subcommand process (consume, seq) with stdout and
/// stderr in files. SIGKILLed on drop.
pub struct ClientProc {
    pub name: String,
    child: Option<Child>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl ClientProc {
    /// Spawn `raftq <args>`; output goes to `<dir>/<name>.out` / `.err`.
    pub fn spawn(dir: &Path, name: &str, args: &[String]) -> ClientProc {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create stdout file"))
            .stderr(File::options().create(true).append(true).open(&stderr).expect("stderr file"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RAFTQ_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: spawn {BIN}: {e}"));
        ClientProc { name: name.to_string(), child: Some(child), stdout, stderr }
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stdout).unwrap_or_default()).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Wait for the process to exit by itself; panics after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("process spawned");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for client process") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!(
                    "{} still running after {timeout:?}; killed. stderr:\n{}",
                    self.name,
                    tail(&self.stderr_text(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then reap it (the work-queue fault test's dead worker).
    pub fn kill9(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.as_ref().expect("process spawned").id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.wait(Duration::from_secs(20)).await
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- {} stderr (tail) -----\n{}", self.name, tail(&self.stderr_text(), 30));
        }
    }
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `--url ... --ca ...` for a client subcommand, URLs in the order given.
pub fn client_flags(c: &Cluster, nodes: &[usize]) -> Vec<String> {
    let urls: Vec<String> = nodes.iter().map(|&i| c.nodes[i].api_url()).collect();
    vec![
        "--url".into(),
        urls.join(","),
        "--ca".into(),
        c.certs.join("ca.pem").display().to_string(),
    ]
}

fn consume_args(c: &Cluster, nodes: &[usize], checkpoint: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["consume".to_string()];
    args.extend(client_flags(c, nodes));
    args.extend(["--checkpoint".into(), checkpoint.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Parse `SEQ<TAB>escaped` lines with the library's own decoder.
fn parse_output(text: &str) -> Vec<(u64, String)> {
    text.lines()
        .map(|l| {
            raftq::consumer::line::parse_line(l)
                .unwrap_or_else(|e| panic!("bad consumer output line {l:?}: {e}"))
        })
        .collect()
}

/// The `key=value` counters of the consumer's final stderr summary line.
fn summary(stderr: &str) -> BTreeMap<String, u64> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("raftq consume: stopped at"))
        .unwrap_or_else(|| panic!("no summary line in consumer stderr:\n{}", tail(stderr, 20)));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or_else(|_| panic!("bad {k}={v:?}"))))
        .collect()
}

/// The node a consumer said it reads from last (its `reading from` log line).
fn current_node(c: &Cluster, p: &ClientProc) -> Option<usize> {
    let err = p.stderr_text();
    let line = err.lines().rev().find(|l| l.contains("consumer: reading from"))?;
    const PREFIX: &str = "https://127.0.0.1:";
    let at = line.find(PREFIX)? + PREFIX.len();
    let port: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
    let port: u16 = port.parse().ok()?;
    c.nodes.iter().position(|n| n.ports.api == port)
}

fn read_checkpoint(path: &Path) -> u64 {
    let text = fs::read_to_string(path).expect("read checkpoint");
    text.trim().parse().unwrap_or_else(|_| panic!("checkpoint holds {text:?}"))
}

/// Does node `i` serve `GET /events/watch` as an SSE stream?
async fn watch_supported(c: &Cluster, i: usize) -> bool {
    let client = http_client(&c.ca_pem, false, Duration::from_secs(5));
    let response = client.get(c.url(i, "/events/watch?after=0")).send().await;
    match response {
        Ok(r) => {
            r.status() == StatusCode::OK
                && r.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("text/event-stream"))
        }
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// Blackhole
// ---------------------------------------------------------------------------

/// iptables rules dropping every TCP packet to and from one local port;
/// removed on drop, even when the test panics.
struct Blackhole {
    rules: Vec<Vec<String>>,
}

fn iptables(args: &[String]) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| format!("run iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("iptables {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl Blackhole {
    /// `Err` when iptables is missing or not permitted.
    fn drop_port(port: u16) -> Result<Blackhole, String> {
        let p = port.to_string();
        let mut hole = Blackhole { rules: Vec::new() };
        for (chain, dir) in [("INPUT", "--dport"), ("OUTPUT", "--sport")] {
            let rule: Vec<String> =
                [chain, "-p", "tcp", dir, p.as_str(), "-j", "DROP"].map(str::to_string).to_vec();
            let mut insert = vec!["-I".to_string()];
            insert.extend(rule.iter().cloned());
            iptables(&insert)?;
            hole.rules.push(rule);
        }
        Ok(hole)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        for rule in self.rules.drain(..) {
            let mut delete = vec!["-D".to_string()];
            delete.extend(rule.iter().cloned());
            if let Err(e) = iptables(&delete) {
                eprintln!("WARNING: could not remove iptables rule {rule:?}: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Producers
// ---------------------------------------------------------------------------

/// `n` producers POST `p{t}-{i}` events through every node in turn until
/// `stop`, each with its own Idempotency-Key and retried (next node) until
/// acknowledged, so the log holds exactly the acknowledged events. Returns
/// the acknowledged `(seq, event)` pairs.
async fn produce(
    c: &Cluster,
    n: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinSet<Vec<(u64, String)>> {
    let client = http_client(&c.ca_pem, true, Duration::from_secs(5));
    let bases = c.api_urls();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..n {
        let (client, bases, stop) = (client.clone(), bases.clone(), stop.clone());
        tasks.spawn(async move {
            let mut acked = Vec::new();
            let mut node = t;
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let event = format!("p{t}-{i} body with\ttab and\nnewline");
                let key = format!("p{t}-{i}");
                let started = Instant::now();
                loop {
                    let url = format!("{}/event", bases[node % bases.len()]);
                    node += 1;
                    let headers = [("idempotency-key", key.as_str())];
                    let body = Some((FORM, form_event(&event)));
                    match send(&client, Method::POST, &url, body, &headers).await {
                        Ok(r) if r.status == StatusCode::CREATED => {
                            acked.push((r.expect_seq(), event));
                            break;
                        }
                        Ok(_) | Err(_) => {
                            assert!(
                                started.elapsed() < Duration::from_secs(90),
                                "producer {t}: event {i} not acknowledged in 90 s"
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        });
    }
    tasks
}

// ---------------------------------------------------------------------------
// Acceptance 1
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_survives_leader_kills_own_node_death_and_blackhole() {
    let mut c = Cluster::start(3).await;
    let l0 = c.wait_for_voters(3, Duration::from_secs(30)).await;
    assert!(watch_supported(&c, l0).await, "the nodes serve GET /events/watch as SSE");
    // The consumers start on a follower, listed first.
    let first = (0..3).find(|&i| i != l0).expect("a follower");
    let order: Vec<usize> = std::iter::once(first).chain((0..3).filter(|&i| i != first)).collect();
    let work = c.dir().join("consumers");
    fs::create_dir_all(&work).expect("mkdir");
    let mut watcher = ClientProc::spawn(
        &work,
        "consume-sse",
        &consume_args(&c, &order, &work.join("sse.ckpt"), &[]),
    );
    let mut poller = ClientProc::spawn(
        &work,
        "consume-poll",
        &consume_args(&c, &order, &work.join("poll.ckpt"), &["--poll"]),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = produce(&c, 3, stop.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The leader is killed and restarted, twice.
    for round in 0..2 {
        let l = c.leader().await;
        eprintln!("round {round}: kill -9 leader {}", c.nodes[l].name);
        c.nodes[l].kill9();
        let new = c.wait_for_voters(3, Duration::from_secs(30)).await;
        assert_ne!(new, l);
        tokio::time::sleep(Duration::from_secs(2)).await;
        c.restart(l).await;
        c.wait_for_voters(3, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The node each consumer reads from dies and comes back (one at a time,
    // so that the cluster keeps its quorum).
    let mut killed = Vec::new();
    for p in [&watcher, &poller] {
        let Some(own) = current_node(&c, p) else {
            panic!("{} never said which node it reads from:\n{}", p.name, p.stderr_text())
        };
        if killed.contains(&own) {
            continue;
        }
        eprintln!("kill -9 {}, the node {} reads from", c.nodes[own].name, p.name);
        c.nodes[own].kill9();
        tokio::time::sleep(Duration::from_secs(4)).await;
        c.restart(own).await;
        c.wait_for_voters(3, Duration::from_secs(30)).await;
        killed.push(own);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The API port of the node each consumer reads from now is blackholed
    // for 30 s (the figure): the packets vanish, no error comes.
    let mut targets: Vec<usize> =
        [&watcher, &poller].iter().filter_map(|p| current_node(&c, p)).collect();
    targets.dedup();
    let mut holes = Vec::new();
    for &t in &targets {
        match Blackhole::drop_port(c.nodes[t].ports.api) {
            Ok(hole) => holes.push(hole),
            Err(e) => {
                eprintln!("\n!!!!! SKIPPED the blackhole step: iptables unavailable ({e}) !!!!!\n");
                break;
            }
        }
    }
    if !holes.is_empty() {
        let names: Vec<&str> = targets.iter().map(|&t| c.nodes[t].name.as_str()).collect();
        eprintln!("blackholing the API port of {names:?} for 30 s");
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(holes);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked: Vec<(u64, String)> = Vec::new();
    while let Some(done) = producers.join_next().await {
        acked.extend(done.expect("producer panicked"));
    }
    acked.sort();
    assert!(acked.len() > 100, "too few events were written: {}", acked.len());
    // The log holds exactly the acknowledged events (producers retried every
    // event until acknowledged, with an idempotency key).
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let log = c.check_acked(l, &acked).await;
    assert_eq!(log, acked, "the log holds events no producer saw acknowledged");

    let last = acked.last().expect("events").0;
    for p in [&watcher, &poller] {
        wait_until(
            Duration::from_secs(60),
            &format!("{} to print seq {last}", p.name),
            async || {
                let out = parse_output(&p.stdout_text());
                match out.last() {
                    Some((seq, _)) if *seq >= last => Ok(()),
                    other => Err(format!("{} lines, last {other:?}", out.len())),
                }
            },
        )
        .await;
    }
    for (p, ckpt) in [(&mut watcher, "sse.ckpt"), (&mut poller, "poll.ckpt")] {
        let status = p.terminate().await;
        assert!(status.success(), "{} exited with {status}", p.name);
        let out = parse_output(&p.stdout_text());
        assert_eq!(out.len(), acked.len(), "{}: line count", p.name);
        assert_eq!(out, acked, "{}: output is not exactly the acknowledged events", p.name);
        assert_eq!(read_checkpoint(&work.join(ckpt)), last, "{}: checkpoint", p.name);
        assert!(!p.stderr_text().contains("LOST"), "{}: reported a loss", p.name);
    }

    let sse_stats = summary(&watcher.stderr_text());
    let poll_stats = summary(&poller.stderr_text());
    eprintln!("sse consumer: {sse_stats:?}\npoll consumer: {poll_stats:?}");
    assert_eq!(poll_stats["streams_opened"], 0);
    assert_eq!(poll_stats["from_pages"], acked.len() as u64);
    assert!(poll_stats["page_failures"] > 0, "the poller never saw a node fail");
    assert!(sse_stats["streams_opened"] >= 2, "the SSE consumer never moved streams");
    assert!(sse_stats["from_stream"] > 0, "the SSE consumer delivered nothing from streams");
    assert!(sse_stats["stream_failures"] >= 2, "its node's death and the blackhole");
    assert_eq!(sse_stats["from_stream"] + sse_stats["from_pages"], acked.len() as u64);
}

// ---------------------------------------------------------------------------
// Acceptance 2 (client half)
// ---------------------------------------------------------------------------

async fn post_and_ack(c: &Cluster, i: usize, event: &str) -> (u64, String) {
    let r = c.request(i, Method::POST, "/event", Some((FORM, form_event(event))), &[], true).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    (r.expect_seq(), event.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_behind_retention_reports_loss_and_recovers() {
    const RETENTION: u64 = 5;
    let c = Cluster::builder()
        .nodes(1)
        .args(["--retention-events", &RETENTION.to_string()])
        .start()
        .await;
    c.wait_for_voters(1, Duration::from_secs(30)).await;
    let work = c.dir().join("consumers");
    fs::create_dir_all(&work).expect("mkdir");
    let ckpt = work.join("c.ckpt");

    let mut events = Vec::new();
    for i in 1..=10 {
        events.push(post_and_ack(&c, 0, &format!("e{i}")).await);
    }
    // A consumer reads the first 10 and stops cleanly.
    let mut first = ClientProc::spawn(&work, "first", &consume_args(&c, &[0], &ckpt, &[]));
    wait_until(Duration::from_secs(30), "10 lines", async || {
        let n = parse_output(&first.stdout_text()).len();
        if n >= 10 {
            Ok(())
        } else {
            Err(format!("{n} lines"))
        }
    })
    .await;
    assert!(first.terminate().await.success());
    assert_eq!(parse_output(&first.stdout_text()), events);
    assert_eq!(read_checkpoint(&ckpt), 10);

    // While it is away, 30 more events are written and all 40 are
    // dequeued: retention keeps only the last 5 dequeued (36..=40).
    for i in 11..=40 {
        events.push(post_and_ack(&c, 0, &format!("e{i}")).await);
    }
    for _ in 0..40 {
        let r = c.delete_event(0, true).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
    }
    let gone = c.get(0, "/events?after=10").await;
    gone.assert_json_error(StatusCode::GONE);
    assert_eq!(gone.json()["oldest"], 36, "{gone:?}");

    // Resumed from its checkpoint: the loss is reported, then 36.. follow.
    let mut resumed = ClientProc::spawn(&work, "resumed", &consume_args(&c, &[0], &ckpt, &[]));
    // And a fresh consumer from seq 1, JSON lines, polling only.
    let fresh_ckpt = work.join("fresh.ckpt");
    let mut fresh = ClientProc::spawn(
        &work,
        "fresh",
        &consume_args(&c, &[0], &fresh_ckpt, &["--from", "1", "--json", "--poll"]),
    );
    for i in 41..=45 {
        events.push(post_and_ack(&c, 0, &format!("e{i}")).await);
    }
    let want: Vec<(u64, String)> = events[35..].to_vec();
    wait_until(Duration::from_secs(30), "the resumed consumer to reach 45", async || {
        let n = parse_output(&resumed.stdout_text()).len();
        if n >= want.len() {
            Ok(())
        } else {
            Err(format!("{n} lines"))
        }
    })
    .await;
    wait_until(Duration::from_secs(30), "the fresh consumer to reach 45", async || {
        let n = fresh.stdout_text().lines().count();
        if n >= want.len() {
            Ok(())
        } else {
            Err(format!("{n} lines"))
        }
    })
    .await;
    assert!(resumed.terminate().await.success());
    assert!(fresh.terminate().await.success());

    assert_eq!(parse_output(&resumed.stdout_text()), want);
    let err = resumed.stderr_text();
    assert!(
        err.contains("LOST events 11..=35 of queue \"default\""),
        "the resumed consumer must report exactly 11..=35 lost:\n{err}"
    );
    assert_eq!(summary(&err)["lost"], 25);
    assert_eq!(read_checkpoint(&ckpt), 45);

    let json: Vec<(u64, String)> = fresh
        .stdout_text()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            (v["seq"].as_u64().expect("seq"), v["event"].as_str().expect("event").to_string())
        })
        .collect();
    assert_eq!(json, want);
    let err = fresh.stderr_text();
    assert!(err.contains("LOST events 1..=35 of queue \"default\""), "{err}");
    assert_eq!(read_checkpoint(&fresh_ckpt), 45);

    // A checkpoint past the loss resumes without reporting it again.
    let mut again = ClientProc::spawn(&work, "again", &consume_args(&c, &[0], &ckpt, &[]));
    let last = post_and_ack(&c, 0, "e46").await;
    wait_until(Duration::from_secs(30), "seq 46", async || {
        let out = parse_output(&again.stdout_text());
        if out == vec![last.clone()] {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        }
    })
    .await;
    assert!(again.terminate().await.success());
    assert!(!again.stderr_text().contains("LOST"), "{}", again.stderr_text());
}
