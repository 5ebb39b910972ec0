//! `raftq maze-verify`: the follower-maze reference verification program
//! (SPEC §3), rebuilt so that a run needs nothing but this binary.
//!
//! Like the reference program it opens the event source connection first
//! and sends nothing yet, connects the user clients one by one (each writes
//! its id and a newline at once), then streams `totalEvents` events in
//! shuffled batches, and checks that every connected user receives exactly
//! its expected lines, in order.
//!
//! ```text
//!  Workload ──batch──▶ one write ──▶ source socket ──▶ server
//!     │                                                   │ notifications
//!     └─expected lines per user─▶ bounded channel ──▶ client task ◀──┘
//!                                 (one per user)     compares line by line
//! ```
//!
//! Memory stays bounded for any `totalEvents`: expected lines are handed to
//! the client tasks batch by batch, and a full channel (a client behind)
//! holds the generator back. Any client failure (a wrong line, 20 s of
//! silence while lines are still owed, a closed connection, an extra line)
//! ends the whole run at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::io::{ErrorKind, Write};

use anyhow::{anyhow, bail, Context};
use futures_util::future::BoxFuture;
use raftq::cli::{MazePacing, MazeVerifyArgs};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use workload::{Settings, Workload};

/// The seeded event generator and its model of who must receive what: test
/// machinery of this subcommand, not part of the product, so it lives here.
mod workload;

/// `--pacing reference`: the batch encoding and the per-line client check.
mod reference;

/// How long to keep retrying a connection that is refused.
const CONNECT_RETRY_FOR: Duration = Duration::from_secs(10);
/// Pause between connection attempts.
const CONNECT_RETRY_EVERY: Duration = Duration::from_millis(100);
/// Pause between the last client connection and the first event. Our nodes
/// register a user asynchronously (the id line is read by the client task
/// and only then does the user count as connected), so an event sent right
/// away could be routed before its recipient is known. The reference program
/// has no explicit pause, but its events also take time to reach a server.
const REGISTRATION_SETTLE: Duration = Duration::from_millis(500);
/// After its last expected line, each client listens this long for lines it
/// should not get.
const EXTRA_LINE_GRACE: Duration = Duration::from_millis(300);
/// Batches of expected lines queued per client before the generator waits.
const EXPECTED_BATCHES_MAX: usize = 10_000;
/// How long the writer waits, when a checker has gone, for the watcher to
/// report that checker's own (more precise) failure.
const CHECKER_FAILURE_WAIT: Duration = Duration::from_secs(5);

/// What a run did, reported in the summary line whether it passed or not.
#[derive(Debug, Default)]
struct Stats {
    /// Events written to the source.
    events: u64,
    /// Users connected.
    clients: usize,
    /// Notifications received and checked (whole per-batch chunks).
    notifications: Arc<AtomicU64>,
    /// When the first event went out.
    started: Option<Instant>,
}

impl Stats {
    fn seconds(&self) -> f64 {
        self.started.map_or(0.0, |started| started.elapsed().as_secs_f64())
    }

    fn summary(&self, error: Option<&anyhow::Error>) -> serde_json::Value {
        let seconds = self.seconds();
        let rate = if seconds > 0.0 { self.events as f64 / seconds } else { 0.0 };
        let mut summary = serde_json::json!({
            "result": if error.is_some() { "fail" } else { "pass" },
            "events": self.events,
            "clients": self.clients,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "events_per_sec": rate.round() as u64,
            "notifications": self.notifications.load(Ordering::Relaxed),
        });
        if let Some(error) = error {
            summary["error"] = format!("{error:#}").into();
        }
        summary
    }
}

/// Run the verification; prints a one-line JSON summary to stdout and fails
/// (exit status 1) when any client did not get exactly its expected lines.
pub async fn run(args: MazeVerifyArgs) -> anyhow::Result<()> {
    let mut stats = Stats::default();
    let result = verify(&args, &mut stats).await;
    println!("{}", stats.summary(result.as_ref().err()));
    result
}

fn settings(args: &MazeVerifyArgs) -> anyhow::Result<Settings> {
    if args.max_event_source_batch_size == 0 {
        bail!("maxEventSourceBatchSize must be at least 1");
    }
    if args.concurrency_level > 0 && args.clients.is_empty() {
        bail!("--clients needs at least one address");
    }
    let default_users = (args.concurrency_level as u64).saturating_mul(10);
    let number_of_users = args.number_of_users.unwrap_or(default_users).max(1);
    Ok(Settings {
        total_events: args.total_events,
        concurrency_level: args.concurrency_level,
        number_of_users,
        random_seed: args.random_seed,
        max_batch: args.max_event_source_batch_size,
    })
}

async fn verify(args: &MazeVerifyArgs, stats: &mut Stats) -> anyhow::Result<()> {
    let workload = Workload::new(&settings(args)?);
    let read_timeout = Duration::from_millis(args.timeout);

    let source = connect(&args.source).await.context("event source")?;
    let mut streams = Vec::with_capacity(workload.connected_users().len());
    for (i, user) in workload.connected_users().iter().enumerate() {
        let addr = &args.clients[i % args.clients.len()];
        let mut stream = connect(addr).await.with_context(|| format!("client of user {user}"))?;
        stream
            .write_all(format!("{user}\n").as_bytes())
            .await
            .with_context(|| format!("user {user}: sending its id to {addr}"))?;
        streams.push((*user, stream));
    }
    stats.clients = streams.len();

    let mut expected = HashMap::with_capacity(streams.len());
    let mut checkers = Vec::with_capacity(streams.len());
    for (user, stream) in streams {
        let (sender, receiver) = mpsc::channel(EXPECTED_BATCHES_MAX);
        expected.insert(user, sender);
        checkers.push((user, stream, receiver));
    }
    let checked = stats.notifications.clone();
    let watch = match args.pacing {
        MazePacing::Bulk => watch_on_every_core(checkers, read_timeout, checked),
        MazePacing::Reference => watch_on_one_thread(checkers, read_timeout, checked)?,
    };
    tokio::time::sleep(REGISTRATION_SETTLE).await;

    let started = Instant::now();
    stats.started = Some(started);
    let progress =
        Progress { sent: Arc::new(AtomicU64::new(0)), every: args.log_interval, started };
    let sent = progress.sent.clone();
    let produce = async {
        let (source, pacing) = (source.into_std()?, args.pacing);
        tokio::task::spawn_blocking(move || {
            produce(workload, source, expected, read_timeout, progress, pacing)
        })
        .await
        .context("the event source writer panicked")?
    };
    // Fails as soon as either side fails; the source stays open until every
    // client is done.
    let result = tokio::try_join!(produce, watch);
    stats.events = sent.load(Ordering::Relaxed);
    let (source, ()) = result?;
    drop(source);
    Ok(())
}

/// Events written so far, and the progress lines on stderr.
struct Progress {
    sent: Arc<AtomicU64>,
    every: u64,
    started: Instant,
}

impl Progress {
    fn add(&self, events: usize) {
        let before = self.sent.fetch_add(events as u64, Ordering::Relaxed);
        let now = before + events as u64;
        if self.every > 0 && now / self.every > before / self.every {
            let seconds = self.started.elapsed().as_secs_f64();
            eprintln!(
                "maze-verify: {now} events sent, {seconds:.1} s, {:.0} events/s",
                now as f64 / seconds.max(1e-9)
            );
        }
    }

    fn next_event(&self) -> u64 {
        self.sent.load(Ordering::Relaxed) + 1
    }
}

type Expected = HashMap<u64, mpsc::Sender<Vec<String>>>;
type Checker = (u64, TcpStream, mpsc::Receiver<Vec<String>>);

/// Writes the workload to the event source on its own thread, one blocking
/// write per batch (as the reference program does). `--pacing reference`
/// also leaves Nagle on (the JVM's default: the reference never sets
/// TCP_NODELAY); `--pacing bulk` turns it off.
fn produce(
    mut workload: Workload,
    mut source: std::net::TcpStream,
    expected: Expected,
    read_timeout: Duration,
    progress: Progress,
    pacing: MazePacing,
) -> anyhow::Result<std::net::TcpStream> {
    source.set_nonblocking(false)?;
    source.set_nodelay(matches!(pacing, MazePacing::Bulk))?;
    source.set_write_timeout(Some(read_timeout))?;
    while let Some(batch) = workload.next_batch() {
        match source.write_all(&reference::batch_bytes(&batch)) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => bail!(
                "the event source accepted nothing for {} ms (at event {})",
                read_timeout.as_millis(),
                progress.next_event()
            ),
            Err(e) => return Err(e).context("writing to the event source"),
        }
        progress.add(batch.len());
        for (user, lines) in workload.take_expected() {
            let sender = expected.get(&user).expect("expectations only for connected users");
            if sender.blocking_send(lines).is_err() {
                // That client task has ended with its failure: the watcher
                // reports it. Wait for it rather than reporting a vaguer
                // error here.
                std::thread::sleep(CHECKER_FAILURE_WAIT);
                bail!("user {user}: its checker stopped without reporting why");
            }
        }
    }
    // Closing the channels (dropping `expected`) tells each checker that
    // nothing more is owed; the source stays open until the checkers end.
    drop(expected);
    Ok(source)
}

/// `--pacing bulk`: one task per client, spread over every core.
fn watch_on_every_core(
    checkers: Vec<Checker>,
    read_timeout: Duration,
    checked: Arc<AtomicU64>,
) -> BoxFuture<'static, anyhow::Result<()>> {
    let mut clients = JoinSet::new();
    for (user, stream, receiver) in checkers {
        clients.spawn(check_client(user, stream, receiver, read_timeout, checked.clone(), None));
    }
    Box::pin(async move {
        while let Some(joined) = clients.join_next().await {
            joined.context("a client checker panicked")??;
        }
        Ok(())
    })
}

/// `--pacing reference`: every client on one thread, each notification
/// parsed and its order checked, as the reference program does.
fn watch_on_one_thread(
    checkers: Vec<Checker>,
    read_timeout: Duration,
    checked: Arc<AtomicU64>,
) -> anyhow::Result<BoxFuture<'static, anyhow::Result<()>>> {
    let mut moved = Vec::with_capacity(checkers.len());
    for (user, stream, receiver) in checkers {
        moved.push((user, stream.into_std()?, receiver));
    }
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("maze-clients".into()).spawn(move || {
        let run = async move {
            let mut clients = JoinSet::new();
            for (user, stream, receiver) in moved {
                let stream = TcpStream::from_std(stream)?;
                let order = Some(reference::OrderCheck::default());
                clients.spawn(check_client(
                    user,
                    stream,
                    receiver,
                    read_timeout,
                    checked.clone(),
                    order,
                ));
            }
            while let Some(joined) = clients.join_next().await {
                joined.context("a client checker panicked")??;
            }
            anyhow::Ok(())
        };
        let outcome = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(run),
            Err(e) => Err(e).context("starting the client thread's runtime"),
        };
        let _ = done.send(outcome);
    })?;
    Ok(Box::pin(async move { result.await.context("the client thread ended without a result")? }))
}
/// Connect to `addr`, retrying for a while: the server may still be starting.
async fn connect(addr: &str) -> anyhow::Result<TcpStream> {
    let deadline = Instant::now() + CONNECT_RETRY_FOR;
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(addr, %error, "connect failed; retrying");
                tokio::time::sleep(CONNECT_RETRY_EVERY).await;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("connecting to {addr}"));
            }
        }
    }
}

/// Check one user's connection against the lines it is owed, which arrive
/// on `expected` batch by batch; the channel closes once all events are out.
/// Returns how many lines it checked.
async fn check_client(
    user: u64,
    stream: TcpStream,
    mut expected: mpsc::Receiver<Vec<String>>,
    read_timeout: Duration,
    checked: Arc<AtomicU64>,
    mut order: Option<reference::OrderCheck>,
) -> anyhow::Result<u64> {
    let mut reader = BufReader::new(stream);
    let mut got = Vec::with_capacity(128);
    let mut index: u64 = 0;
    while let Some(lines) = expected.recv().await {
        for want in &lines {
            got.clear();
            let read = tokio::time::timeout(read_timeout, reader.read_until(b'\n', &mut got));
            match read.await {
                Err(_) => bail!(
                    "user {user}: nothing received for {} ms; expected line #{index} {want:?}",
                    read_timeout.as_millis()
                ),
                Ok(Err(error)) => {
                    bail!("user {user}: read failed ({error}); expected line #{index} {want:?}")
                }
                Ok(Ok(0)) => {
                    bail!("user {user}: connection closed; expected line #{index} {want:?}")
                }
                Ok(Ok(_)) => {
                    if let Some(order) = order.as_mut() {
                        if let Err(e) = order.check(&got) {
                            bail!("user {user}: line #{index}: {e}");
                        }
                    }
                    if got != want.as_bytes() {
                        bail!(
                            "user {user}: line #{index}: expected {want:?}, got {:?}",
                            String::from_utf8_lossy(&got)
                        );
                    }
                    index += 1;
                }
            }
        }
        checked.fetch_add(lines.len() as u64, Ordering::Relaxed);
    }
    got.clear();
    match tokio::time::timeout(EXTRA_LINE_GRACE, reader.read_until(b'\n', &mut got)).await {
        Ok(Ok(n)) if n > 0 => Err(anyhow!(
            "user {user}: unexpected line after its {index} expected lines: {:?}",
            String::from_utf8_lossy(&got)
        )),
        // Silence, or the server closing the connection: nothing extra.
        _ => Ok(index),
    }
}

#[cfg(test)]
mod tests {
    //! An end-to-end self-test against a tiny in-process follower-maze
    //! server (single process, no Raft), plus fault-injecting variants of it
    //! that the verifier must catch.

    use std::collections::{BTreeMap, HashSet};
    use std::sync::Mutex;

    use tokio::io::BufWriter;
    use tokio::net::TcpListener;

    use super::*;

    /// A fault for the reference server to inject.
    #[derive(Debug, Clone, Copy)]
    enum Fault {
        None,
        /// Do not deliver the n-th notification (1-based) to a connected user.
        DropNotification(u64),
        /// After delivering this seq, send every user a line nobody expects.
        ExtraLineAfter(u64),
        /// Hold back the first notification from this seq on and deliver it
        /// after the next notification to the same user.
        SwapFrom(u64),
    }

    type Registry = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<String>>>>;

    /// Start the reference server; returns (source address, client address).
    async fn start_server(fault: Fault) -> (String, String) {
        let source = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let clients = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs =
            (source.local_addr().unwrap().to_string(), clients.local_addr().unwrap().to_string());
        let registry = Registry::default();
        tokio::spawn(accept_clients(clients, registry.clone()));
        tokio::spawn(async move {
            while let Ok((stream, _)) = source.accept().await {
                tokio::spawn(serve_source(stream, registry.clone(), fault));
            }
        });
        addrs
    }

    async fn accept_clients(listener: TcpListener, registry: Registry) {
        while let Ok((stream, _)) = listener.accept().await {
            let registry = registry.clone();
            tokio::spawn(async move {
                let (read, write) = stream.into_split();
                let mut reader = BufReader::new(read);
                let mut line = String::new();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let Ok(user) = line.trim_end().parse::<u64>() else { return };
                let (sender, mut receiver) = mpsc::unbounded_channel::<String>();
                registry.lock().unwrap().insert(user, sender);
                let mut writer = BufWriter::new(write);
                while let Some(line) = receiver.recv().await {
                    if writer.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                    while let Ok(line) = receiver.try_recv() {
                        if writer.write_all(line.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    if writer.flush().await.is_err() {
                        return;
                    }
                }
                drop(reader);
            });
        }
    }

    /// Reorder one source's lines by seq and route them per the protocol.
    async fn serve_source(stream: TcpStream, registry: Registry, fault: Fault) {
        let mut reader = BufReader::new(stream);
        let mut pending: BTreeMap<u64, String> = BTreeMap::new();
        let mut next = 1;
        let mut followers: HashMap<u64, HashSet<u64>> = HashMap::new();
        let mut delivered = 0;
        // The notification held back by `Fault::SwapFrom`, and whether the
        // swap is done.
        let mut held: Option<(u64, String)> = None;
        let mut swapped = false;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let Some(seq) = line.split('|').next().and_then(|seq| seq.parse().ok()) else {
                continue;
            };
            pending.insert(seq, line.clone());
            while let Some(line) = pending.remove(&next) {
                let seq = next;
                next += 1;
                let fields: Vec<&str> = line.trim_end().split('|').collect();
                let user = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
                let recipients: Vec<u64> = match (fields.get(1).copied(), user(2), user(3)) {
                    (Some("F"), Some(from), Some(to)) => {
                        followers.entry(to).or_default().insert(from);
                        vec![to]
                    }
                    (Some("U"), Some(from), Some(to)) => {
                        followers.entry(to).or_default().remove(&from);
                        vec![]
                    }
                    (Some("B"), _, _) => registry.lock().unwrap().keys().copied().collect(),
                    (Some("P"), Some(_), Some(to)) => vec![to],
                    (Some("S"), Some(from), _) => {
                        followers.get(&from).into_iter().flatten().copied().collect()
                    }
                    _ => vec![],
                };
                let registry = registry.lock().unwrap();
                for user in recipients {
                    let Some(sender) = registry.get(&user) else { continue };
                    delivered += 1;
                    match fault {
                        Fault::DropNotification(n) if delivered == n => continue,
                        Fault::SwapFrom(s) if seq >= s && !swapped && held.is_none() => {
                            held = Some((user, line.clone()));
                            continue;
                        }
                        _ => {}
                    }
                    let _ = sender.send(line.clone());
                    if let Some((_, line)) = held.take_if(|(held_user, _)| *held_user == user) {
                        let _ = sender.send(line);
                        swapped = true;
                    }
                }
                if matches!(fault, Fault::ExtraLineAfter(s) if seq == s) {
                    for sender in registry.values() {
                        let _ = sender.send("999999999|B\n".to_owned());
                    }
                }
            }
        }
    }

    fn args(source: String, clients: Vec<String>) -> MazeVerifyArgs {
        MazeVerifyArgs {
            source,
            clients,
            total_events: 20_000,
            concurrency_level: 20,
            number_of_users: None,
            random_seed: 666,
            timeout: 3_000,
            max_event_source_batch_size: 100,
            log_interval: 10_000,
            pacing: MazePacing::Bulk,
        }
    }

    async fn verify_against(fault: Fault) -> (Stats, anyhow::Result<()>) {
        verify_paced(fault, MazePacing::Bulk).await
    }

    async fn verify_paced(fault: Fault, pacing: MazePacing) -> (Stats, anyhow::Result<()>) {
        let (source, client) = start_server(fault).await;
        // Two entries for the one client port exercise the round-robin.
        let args = MazeVerifyArgs { pacing, ..args(source, vec![client.clone(), client]) };
        let mut stats = Stats::default();
        let result = verify(&args, &mut stats).await;
        (stats, result)
    }

    #[test]
    fn settings_follow_the_reference_defaults() {
        let mut a = args("s".into(), vec!["c".into()]);
        let settings = settings(&a).unwrap();
        assert_eq!(settings.number_of_users, 200, "10 x concurrencyLevel");
        assert_eq!(
            (settings.total_events, settings.random_seed, settings.max_batch),
            (20_000, 666, 100)
        );
        a.number_of_users = Some(7);
        assert_eq!(super::settings(&a).unwrap().number_of_users, 7);
        a.max_event_source_batch_size = 0;
        assert!(super::settings(&a).is_err());
        let no_clients = args("s".into(), vec![]);
        assert!(super::settings(&no_clients).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_against_a_correct_server() {
        let (stats, result) = verify_against(Fault::None).await;
        result.unwrap();
        assert_eq!((stats.events, stats.clients), (20_000, 20));
        let notifications = stats.notifications.load(Ordering::Relaxed);
        assert!(notifications > 500, "a meaningful run: {notifications} notifications");
        let summary = stats.summary(None);
        assert_eq!(summary["result"], "pass");
        assert_eq!(summary["notifications"], notifications);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fails_when_a_notification_is_dropped() {
        let (stats, result) = verify_against(Fault::DropNotification(50)).await;
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains(": expected \"") && error.contains(", got \""), "{error}");
        assert_eq!(stats.summary(Some(&anyhow!(error)))["result"], "fail");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fails_when_notifications_are_out_of_order() {
        let (_, result) = verify_against(Fault::SwapFrom(5_000)).await;
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains(": expected \"") && error.contains(", got \""), "{error}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fails_on_an_extra_line_after_the_last_event() {
        let (_, result) = verify_against(Fault::ExtraLineAfter(20_000)).await;
        let error = format!("{:#}", result.unwrap_err());
        assert!(
            error.contains("unexpected line after") && error.contains("999999999|B"),
            "{error}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reference_pacing_passes_against_a_correct_server() {
        let (stats, result) = verify_paced(Fault::None, MazePacing::Reference).await;
        result.unwrap();
        assert_eq!((stats.events, stats.clients), (20_000, 20));
        assert!(stats.notifications.load(Ordering::Relaxed) > 500);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reference_pacing_catches_drops_swaps_and_extra_lines() {
        for (fault, wants) in [
            (Fault::DropNotification(50), ", got \""),
            (Fault::SwapFrom(5_000), ", got \""),
            (Fault::ExtraLineAfter(20_000), "unexpected line after"),
        ] {
            let (stats, result) = verify_paced(fault, MazePacing::Reference).await;
            let error = format!("{:#}", result.unwrap_err());
            assert!(error.contains(wants), "{fault:?}: {error}");
            assert!(stats.events > 0, "{fault:?}: events counted on failure too");
        }
    }
}
