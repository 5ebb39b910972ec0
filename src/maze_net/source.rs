//! The event source (TCP, `--maze-source-addr`), on any node.
//!
//! A new connection starts a new stream: it first proposes `Reset` and
//! tags every later batch with the epoch that returned. Lines are read as
//! raw bytes (each keeps its own line ending), grouped into batches by
//! [`Coalescer`] (a trickle goes out at once; under load lines from many
//! reads share one batch for up to `--maze-coalesce-ms`, because each
//! batch is one Raft entry and one fsync per node), and proposed through
//! [`Replica::submit`] with at most `IN_FLIGHT_MAX` batches in flight. A batch that
//! fails (leader change, timeout) is proposed again until it is known
//! committed: the state machine drops seqs it has already seen, so a repeat
//! is harmless. Only one source is active at a time: a new connection
//! cancels the previous one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::maze::coalesce::{CoalesceLimits, Coalescer, Decision};
use crate::maze::{MazeCommand, MazeLimits, MazeOutcome};
use crate::maze::{
    SOURCE_BATCH_BYTES_MAX as BATCH_BYTES_MAX, SOURCE_BATCH_LINES_MAX as BATCH_LINES_MAX,
};
use crate::raft::types::{Op, Reply};
use crate::replica::Replica;
/// Batches proposed and not yet known committed.
const IN_FLIGHT_MAX: usize = 8;
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a new source waits for its stream to be started before giving up.
const RESET_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct SourceCounters {
    pub connections: AtomicU64,
    pub lines: AtomicU64,
    /// Over-long or non-UTF-8 lines dropped before proposing.
    pub rejected_lines: AtomicU64,
    pub batches: AtomicU64,
    pub retries: AtomicU64,
}

pub async fn run(
    listener: TcpListener,
    replica: Replica,
    limits: MazeLimits,
    coalesce_delay: Duration,
    counters: Arc<SourceCounters>,
    shutdown: CancellationToken,
) {
    let current: Arc<Mutex<Option<CancellationToken>>> = Arc::new(Mutex::new(None));
    loop {
        let Some((stream, peer)) = super::accept(&listener, &shutdown, "maze source").await else {
            return;
        };
        tracing::info!(%peer, "maze event source connected: new stream");
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let token = shutdown.child_token();
        if let Some(previous) = current.lock().await.replace(token.clone()) {
            previous.cancel();
        }
        let (replica, counters) = (replica.clone(), counters.clone());
        tokio::spawn(async move {
            if let Err(e) = serve(stream, replica, limits, coalesce_delay, counters, token).await {
                tracing::warn!(%peer, error = %e, "maze event source ended");
            }
        });
    }
}

/// Proposes `op` until it is committed or `cancel` fires.
async fn submit_until_done(
    replica: &Replica,
    op: Op,
    counters: &SourceCounters,
    cancel: &CancellationToken,
) -> Option<Reply> {
    loop {
        if cancel.is_cancelled() {
            return None;
        }
        match replica.submit(op.clone()).await {
            Ok(reply) => return Some(reply),
            Err(e) => {
                counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "maze batch not committed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
}

async fn serve(
    stream: TcpStream,
    replica: Replica,
    limits: MazeLimits,
    coalesce_delay: Duration,
    counters: Arc<SourceCounters>,
    cancel: CancellationToken,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let reset = tokio::time::timeout(
        RESET_DEADLINE,
        submit_until_done(&replica, Op::Maze(MazeCommand::Reset), &counters, &cancel),
    )
    .await
    .map_err(|_| "no leader to start the stream".to_string())?;
    let epoch = match reset {
        Some(Reply::Maze(MazeOutcome::Reset { epoch })) => epoch,
        Some(other) => return Err(format!("unexpected reply to reset: {other:?}")),
        None => return Ok(()),
    };
    tracing::info!(epoch, "maze stream started");

    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let mut tasks = JoinSet::new();
    let mut batch = Coalescer::new(CoalesceLimits {
        lines_max: BATCH_LINES_MAX,
        bytes_max: BATCH_BYTES_MAX,
        delay: coalesce_delay,
    });
    let mut line = Vec::with_capacity(128);
    // A read interrupted by the coalescing deadline keeps what it had read
    // of its line in `line` (`read_until` is cancel safe that way).
    let mut partial = false;
    let line_max = limits.line_bytes_max;
    loop {
        let busy = IN_FLIGHT_MAX - in_flight.available_permits();
        let due = match batch.decide(Instant::now(), busy, !reader.buffer().is_empty()) {
            Decision::Flush => {
                let permit = tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    p = in_flight.clone().acquire_owned() => p.map_err(|e| e.to_string())?,
                };
                let op = Op::Maze(MazeCommand::Lines { epoch, lines: batch.take() });
                counters.batches.fetch_add(1, Ordering::Relaxed);
                let (replica, counters, cancel) =
                    (replica.clone(), counters.clone(), cancel.clone());
                tasks.spawn(async move {
                    submit_until_done(&replica, op, &counters, &cancel).await;
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
                continue;
            }
            Decision::Read => None,
            Decision::ReadUntil(due) => Some(tokio::time::Instant::from_std(due)),
        };
        if !partial {
            line.clear();
        }
        let room = (line_max + 1).saturating_sub(line.len()) as u64;
        let mut limited = (&mut reader).take(room);
        let waiting = due.is_some();
        let far = tokio::time::Instant::now() + RESET_DEADLINE;
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            n = limited.read_until(b'\n', &mut line) => {
                n.map_err(|e| e.to_string())?;
                partial = false;
            }
            // The batch is due, or an in-flight batch is done: decide again.
            _ = tokio::time::sleep_until(due.unwrap_or(far)), if waiting => {
                partial = true;
                continue;
            }
            Some(_) = tasks.join_next(), if waiting && !tasks.is_empty() => {
                partial = true;
                continue;
            }
        }
        if line.is_empty() {
            break;
        }
        if line.len() > line_max && line.last() != Some(&b'\n') {
            // Over-long: drop it and the rest of it, up to its line ending.
            counters.rejected_lines.fetch_add(1, Ordering::Relaxed);
            loop {
                line.clear();
                let n = (&mut reader)
                    .take(64 * 1024)
                    .read_until(b'\n', &mut line)
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 || line.last() == Some(&b'\n') {
                    break;
                }
            }
            continue;
        }
        counters.lines.fetch_add(1, Ordering::Relaxed);
        match String::from_utf8(std::mem::take(&mut line)) {
            Ok(text) => batch.push(text, Instant::now()),
            Err(_) => {
                counters.rejected_lines.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if !batch.is_empty() {
        let op = Op::Maze(MazeCommand::Lines { epoch, lines: batch.take() });
        counters.batches.fetch_add(1, Ordering::Relaxed);
        submit_until_done(&replica, op, &counters, &cancel).await;
    }
    while tasks.join_next().await.is_some() {}
    tracing::info!(epoch, "maze event source closed");
    Ok(())
}
