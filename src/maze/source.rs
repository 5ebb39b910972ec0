//! The event source (TCP, `--maze-source-addr`), on any node.
//!
//! A new connection starts a new stream: it first proposes `Reset` and
//! tags every later batch with the epoch that returned. Lines are read as
//! raw bytes (each keeps its own line ending), grouped into batches that
//! are flushed whenever the socket has nothing more buffered (so a trickle
//! goes out at once and a flood goes out in large batches), and proposed
//! through the [`Submitter`] with a few batches in flight. A batch that
//! fails (leader change, timeout) is proposed again until it is known
//! committed: the state machine drops seqs it has already seen, so a repeat
//! is harmless. Only one source is active at a time: a new connection
//! cancels the previous one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{MazeCommand, MazeLimits, MazeOutcome};
use crate::raft::submit::Submitter;
use crate::raft::types::{Op, Reply};

/// Lines per proposed batch, at most.
const BATCH_LINES_MAX: usize = 2048;
/// Bytes per proposed batch, at most.
const BATCH_BYTES_MAX: usize = 64 * 1024;
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
    submitter: Submitter,
    limits: MazeLimits,
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
        let (submitter, counters) = (submitter.clone(), counters.clone());
        tokio::spawn(async move {
            if let Err(e) = serve(stream, submitter, limits, counters, token).await {
                tracing::warn!(%peer, error = %e, "maze event source ended");
            }
        });
    }
}

/// Proposes `op` until it is committed or `cancel` fires.
/// What the leader accepts on `/internal/propose`: only what a follower's
/// maze source and gap timer forward, within the bounds that source keeps
/// (a peer certificate is not a licence to write anything else, nor
/// batches no source of ours would build).
pub fn check_forwarded(op: &Op, limits: &MazeLimits) -> Result<(), String> {
    match op {
        Op::Maze(MazeCommand::Reset | MazeCommand::Skip { .. }) => Ok(()),
        Op::Maze(MazeCommand::Lines { lines, .. }) => {
            let line_max = limits.line_bytes_max + 1;
            if lines.len() > BATCH_LINES_MAX {
                return Err(format!(
                    "{} lines in one batch (at most {BATCH_LINES_MAX})",
                    lines.len()
                ));
            }
            if let Some(long) = lines.iter().find(|l| l.len() > line_max) {
                return Err(format!("a {}-byte line (at most {line_max})", long.len()));
            }
            let bytes: usize = lines.iter().map(String::len).sum();
            if bytes > BATCH_BYTES_MAX + line_max {
                return Err(format!(
                    "a {bytes}-byte batch (at most {})",
                    BATCH_BYTES_MAX + line_max
                ));
            }
            Ok(())
        }
        other => Err(format!(
            "only follower-maze batches are forwarded between nodes, not {}",
            match other {
                Op::Queue(_) => "queue commands",
                Op::RetireNode { .. } => "node removals",
                Op::Maze(_) => "this",
            }
        )),
    }
}

async fn submit_until_done(
    submitter: &Submitter,
    op: Op,
    counters: &SourceCounters,
    cancel: &CancellationToken,
) -> Option<Reply> {
    loop {
        if cancel.is_cancelled() {
            return None;
        }
        match submitter.submit(op.clone()).await {
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
    submitter: Submitter,
    limits: MazeLimits,
    counters: Arc<SourceCounters>,
    cancel: CancellationToken,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let reset = tokio::time::timeout(
        RESET_DEADLINE,
        submit_until_done(&submitter, Op::Maze(MazeCommand::Reset), &counters, &cancel),
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
    let mut batch: Vec<String> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut line = Vec::with_capacity(128);
    let line_max = limits.line_bytes_max;
    loop {
        // Flush when the next read could block: nothing else is buffered.
        let full = batch.len() >= BATCH_LINES_MAX || batch_bytes >= BATCH_BYTES_MAX;
        if !batch.is_empty() && (full || reader.buffer().is_empty()) {
            let permit = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                p = in_flight.clone().acquire_owned() => p.map_err(|e| e.to_string())?,
            };
            let op = Op::Maze(MazeCommand::Lines { epoch, lines: std::mem::take(&mut batch) });
            batch_bytes = 0;
            counters.batches.fetch_add(1, Ordering::Relaxed);
            let (submitter, counters, cancel) =
                (submitter.clone(), counters.clone(), cancel.clone());
            tasks.spawn(async move {
                submit_until_done(&submitter, op, &counters, &cancel).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        line.clear();
        let mut limited = (&mut reader).take(line_max as u64 + 1);
        let n = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            n = limited.read_until(b'\n', &mut line) => n.map_err(|e| e.to_string())?,
        };
        if n == 0 {
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
            Ok(text) => {
                batch_bytes += text.len();
                batch.push(text);
            }
            Err(_) => {
                counters.rejected_lines.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if !batch.is_empty() {
        let op = Op::Maze(MazeCommand::Lines { epoch, lines: batch });
        counters.batches.fetch_add(1, Ordering::Relaxed);
        submit_until_done(&submitter, op, &counters, &cancel).await;
    }
    while tasks.join_next().await.is_some() {}
    tracing::info!(epoch, "maze event source closed");
    Ok(())
}

#[cfg(test)]
mod forwarded_tests {
    use super::*;
    use crate::queue::Command;

    #[test]
    fn only_bounded_maze_batches_may_be_forwarded() {
        let limits = MazeLimits::default();
        let lines = |n: usize, len: usize| {
            Op::Maze(MazeCommand::Lines { epoch: 1, lines: vec!["x".repeat(len); n] })
        };
        assert_eq!(check_forwarded(&Op::Maze(MazeCommand::Reset), &limits), Ok(()));
        assert_eq!(
            check_forwarded(&Op::Maze(MazeCommand::Skip { epoch: 1, seq: 3 }), &limits),
            Ok(())
        );
        assert_eq!(check_forwarded(&lines(BATCH_LINES_MAX, 8), &limits), Ok(()));
        assert!(check_forwarded(&lines(BATCH_LINES_MAX + 1, 8), &limits).is_err());
        assert!(check_forwarded(&lines(1, limits.line_bytes_max + 2), &limits).is_err());
        assert!(check_forwarded(&lines(200, limits.line_bytes_max), &limits).is_err());
        assert!(check_forwarded(&Op::RetireNode { id: 2 }, &limits).is_err());
        let enqueue = Op::Queue(Command::Enqueue {
            queue: "default".into(),
            event: "x".into(),
            idempotency_key: None,
        });
        assert!(check_forwarded(&enqueue, &limits).unwrap_err().contains("queue commands"));
    }
}
