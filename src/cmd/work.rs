//! `raftq work --queue Q -- CMD [ARGS...]`: the simplest at-least-once
//! worker (SPEC §5, docs/consumers.md).
//!
//! It leases one event at a time (long poll), runs CMD with the event body
//! on its stdin and `RAFTQ_SEQ`, `RAFTQ_DELIVERIES`, `RAFTQ_QUEUE` and
//! `RAFTQ_LEASE` in its environment, extends the lease every third of
//! `--ttl` while CMD runs, then acks on exit status 0 and nacks otherwise.
//! CMD's stdout and stderr are the worker's; the worker logs to stderr.
//!
//! Settling: a `409 lease_lost` on an ack or nack means the event is no
//! longer this worker's (the lease expired and it was leased again, or an
//! earlier attempt whose response was lost already settled it): logged, not
//! an error. An ack whose outcome stays unknown is logged too: if it did not
//! take effect, the lease expires and the event is delivered again. A lost
//! extend stops the extending; CMD still runs to its end and its ack is
//! then refused. CMD must therefore tolerate running twice for one event.
//!
//! Stopping: the first SIGTERM or SIGINT lets the current job finish and be
//! settled, then the worker exits 0 (give systemd a `TimeoutStopSec` above
//! your longest job). A second signal kills CMD, nacks its event so that it
//! is offered again at once, and exits 130. A lease request in flight when
//! the signal arrives is dropped; whatever it leased expires after `--ttl`.
//!
//! Exit codes: 0 stopped cleanly (signal or `--max-jobs`), 1 bad flags or
//! setup, 2 CMD could not be started (its event was nacked), 130 stopped by
//! a second signal mid-job.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use raftq::cli::WorkArgs;
use raftq::client::{Client, ClientError, Lease, Settle};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Exit code when CMD cannot be started.
const EXIT_SPAWN: i32 = 2;
/// Exit code when a second signal abandoned a job.
const EXIT_ABANDONED: i32 = 130;
/// Pause before asking again after a lease request failed.
const LEASE_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// The server's longest long poll.
const WAIT_MAX: Duration = Duration::from_secs(60);

/// SIGTERM or SIGINT, whichever comes.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("install SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("install SIGINT handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// How one job ended.
enum Job {
    Settled,
    /// A second signal: CMD was killed and the event nacked.
    Abandoned,
}

pub async fn run(args: WorkArgs) -> anyhow::Result<()> {
    if args.ttl < Duration::from_millis(300) {
        bail!("--ttl must be at least 300ms (the lease is extended every third of it)");
    }
    if args.wait > WAIT_MAX {
        bail!("--wait must be at most 60s");
    }
    let client = Client::new(&args.client.config())?;
    let mut signals = Signals::install()?;
    let mut stopping = false;
    let mut jobs = 0u64;
    tracing::info!(queue = args.queue, ttl = ?args.ttl, command = ?args.command, "working");
    while !stopping && args.max_jobs.is_none_or(|max| jobs < max) {
        let leased = tokio::select! {
            leased = client.lease(&args.queue, args.ttl, 1, args.wait) => leased,
            _ = signals.recv() => break,
        };
        let leases = match leased {
            Ok(leases) => leases,
            Err(e) => {
                tracing::warn!(error = %e, "lease request failed; asking again");
                tokio::select! {
                    _ = tokio::time::sleep(LEASE_RETRY_PAUSE) => continue,
                    _ = signals.recv() => break,
                }
            }
        };
        for lease in leases {
            jobs += 1;
            match run_job(&client, &args, &lease, &mut signals, &mut stopping).await? {
                Job::Settled => {}
                Job::Abandoned => std::process::exit(EXIT_ABANDONED),
            }
        }
    }
    tracing::info!(jobs, "worker stopped");
    Ok(())
}

/// Runs CMD on one leased event and settles the lease.
async fn run_job(
    client: &Client,
    args: &WorkArgs,
    lease: &Lease,
    signals: &mut Signals,
    stopping: &mut bool,
) -> anyhow::Result<Job> {
    let (program, rest) = args.command.split_first().context("no CMD given")?;
    let spawned = tokio::process::Command::new(program)
        .args(rest)
        .env("RAFTQ_SEQ", lease.seq.to_string())
        .env("RAFTQ_DELIVERIES", lease.deliveries.to_string())
        .env("RAFTQ_QUEUE", &args.queue)
        .env("RAFTQ_LEASE", &lease.lease)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            tracing::error!(seq = lease.seq, error = %e, program, "cannot start CMD; nacking");
            settle(client, args, lease, Settle::Nack { delay: None }).await;
            std::process::exit(EXIT_SPAWN);
        }
    };
    // Written by a task so that a large body cannot block the extends; a
    // CMD that does not read its stdin is not an error.
    if let Some(mut stdin) = child.stdin.take() {
        let body = lease.event.clone().into_bytes();
        tokio::spawn(async move {
            let _ = stdin.write_all(&body).await;
        });
    }
    let every = args.ttl / 3;
    let mut extend = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut extending = true;
    let status: ExitStatus = loop {
        tokio::select! {
            status = child.wait() => break status.context("wait for CMD")?,
            _ = extend.tick(), if extending => {
                match client.settle(&args.queue, lease.seq, &lease.lease, Settle::Extend { ttl: args.ttl }).await {
                    Ok(()) => {}
                    Err(e @ ClientError::LeaseLost { .. }) => {
                        tracing::warn!(seq = lease.seq, error = %e, "lease lost while CMD runs; its ack will be refused");
                        extending = false;
                    }
                    // The next tick tries again; the lease still has two
                    // thirds of its time.
                    Err(e) => tracing::warn!(seq = lease.seq, error = %e, "extend failed"),
                }
            }
            _ = signals.recv() => {
                if *stopping {
                    tracing::warn!(seq = lease.seq, "second signal: killing CMD and nacking its event");
                    let _ = child.kill().await;
                    settle(client, args, lease, Settle::Nack { delay: None }).await;
                    return Ok(Job::Abandoned);
                }
                tracing::info!(seq = lease.seq, "stopping after the current job (signal again to abandon it)");
                *stopping = true;
            }
        }
    };
    let how = if status.success() { Settle::Ack } else { Settle::Nack { delay: args.nack_delay } };
    if !status.success() {
        tracing::warn!(seq = lease.seq, deliveries = lease.deliveries, %status, "CMD failed");
    }
    settle(client, args, lease, how).await;
    Ok(Job::Settled)
}

/// Acks or nacks, logging the result (see the module docs: nothing here
/// is a reason to stop the worker).
async fn settle(client: &Client, args: &WorkArgs, lease: &Lease, how: Settle) {
    let what = if how == Settle::Ack { "acked" } else { "nacked" };
    match client.settle(&args.queue, lease.seq, &lease.lease, how).await {
        Ok(()) => tracing::info!(seq = lease.seq, deliveries = lease.deliveries, "{what}"),
        Err(ClientError::LeaseLost { maybe_ours, .. }) => tracing::warn!(
            seq = lease.seq,
            deliveries = lease.deliveries,
            maybe_ours,
            "not {what}: lease lost (expired and leased again, or settled by an earlier attempt)"
        ),
        Err(e) => tracing::warn!(
            seq = lease.seq,
            deliveries = lease.deliveries,
            error = %e,
            "not {what}: if it did not take effect, the lease expires and the event comes back"
        ),
    }
}
