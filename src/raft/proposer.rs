//! Group commit: many concurrent commands, one Raft entry.
//!
//! openraft 0.9 appends and fsyncs each `client_write` on its own, so a
//! request-per-entry design tops out at one write per fsync. The proposer
//! gathers whatever commands arrived while earlier batches were in flight
//! into one [`Request`] (bounded by count and bytes), and keeps a few batches
//! in flight so that the leader's fsync of one overlaps the replication of
//! the previous. Each caller gets its own [`Reply`] back.
//!
//! Batches are handed to openraft in the order they were formed
//! (`client_write_ff` from this one task); only the waiting for results runs
//! concurrently.

use std::sync::Arc;

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use super::types::{Node, NodeId, Op, Raft, Reply, Request};
use crate::maze::{MazeCommand, MazeLimits};
use crate::queue::{Command, Limits};

/// Most commands in one entry.
const BATCH_COMMANDS_MAX: usize = 1024;
/// Most event bytes in one entry (a larger single event still goes alone).
/// Kept well under what one AppendEntries can carry within openraft's
/// deadline (the heartbeat interval).
const BATCH_BYTES_MAX: usize = 256 * 1024;
/// Entries proposed but not yet answered.
const IN_FLIGHT_MAX: usize = 3;
/// Commands waiting to be batched before callers are pushed back.
const QUEUE_MAX: usize = 16 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is where to go, if known.
    #[error("not the leader")]
    NotLeader { leader: Option<(NodeId, Node)> },
    /// Raft is shutting down or failed; the outcome of the write is unknown.
    #[error("raft unavailable: {0}")]
    Unavailable(String),
    /// Free disk space is below `--min-free-disk` (here or on a voter):
    /// refused before proposing, so nothing was written.
    #[error("{0}")]
    DiskFull(String),
}

/// Operations that add data wait for disk space; dequeues, compaction,
/// removals and maze skips only shrink what is stored (and must go on, or a
/// full disk could never drain).
fn adds_data(op: &Op) -> bool {
    matches!(
        op,
        Op::Queue(
            Command::Enqueue { .. } | Command::EnqueueBatch { .. } | Command::AllocSeq { .. }
        ) | Op::Maze(MazeCommand::Lines { .. } | MazeCommand::Reset)
    )
}

struct Pending {
    op: Op,
    reply: oneshot::Sender<Result<Reply, ProposeError>>,
}

#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
    /// The one place every write passes: API, maze source, forwarded batches.
    disk: Arc<crate::node::disk::DiskGuard>,
}

impl Proposer {
    /// Starts the batching task; `limits` is stamped into every entry.
    pub fn spawn(
        raft: Raft,
        limits: Limits,
        maze_limits: MazeLimits,
        disk: Arc<crate::node::disk::DiskGuard>,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        tokio::spawn(run(raft, limits, maze_limits, rx, shutdown));
        Proposer { tx, disk }
    }

    /// Proposes one operation and waits until it is committed and applied.
    /// Below the disk watermark, one that adds data is refused first
    /// ([`ProposeError::DiskFull`]); the maze source retries it, which
    /// stops it reading its socket until space returns.
    pub async fn propose(&self, op: Op) -> Result<Reply, ProposeError> {
        if adds_data(&op) {
            if let Some(why) = self.disk.refuse_writes() {
                return Err(ProposeError::DiskFull(why));
            }
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { op, reply })
            .await
            .map_err(|_| ProposeError::Unavailable("proposer stopped".into()))?;
        rx.await.map_err(|_| ProposeError::Unavailable("proposal dropped".into()))?
    }
}

fn op_bytes(op: &Op) -> usize {
    match op {
        Op::Queue(command) => command_bytes(command),
        Op::Maze(MazeCommand::Lines { lines, .. }) => lines.iter().map(String::len).sum(),
        Op::Maze(_) | Op::RetireNode { .. } => 16,
    }
}

fn command_bytes(command: &Command) -> usize {
    match command {
        Command::Enqueue { queue, event, idempotency_key } => {
            queue.len() + event.len() + idempotency_key.as_ref().map_or(0, String::len)
        }
        Command::Dequeue { queue, .. } => queue.len(),
        Command::AllocSeq { name, .. } => name.len(),
        Command::Compact { queue, .. } => queue.len(),
        Command::EnqueueBatch { queue, events, idempotency_key, .. } => {
            queue.len()
                + events.iter().map(String::len).sum::<usize>()
                + idempotency_key.as_ref().map_or(0, String::len)
        }
        Command::Lease { queue, .. }
        | Command::Ack { queue, .. }
        | Command::Nack { queue, .. }
        | Command::Extend { queue, .. }
        | Command::SetPolicy { queue, .. }
        | Command::SetCursor { queue, .. } => queue.len() + 64,
        Command::Sweep { queue, .. } => queue.as_ref().map_or(0, String::len),
    }
}

async fn run(
    raft: Raft,
    limits: Limits,
    maze_limits: MazeLimits,
    mut rx: mpsc::Receiver<Pending>,
    shutdown: CancellationToken,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    loop {
        // Take the permit first: everything that arrives while we wait for
        // it joins this batch.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            first = rx.recv() => match first {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = op_bytes(&first.op);
        let mut batch = vec![first];
        while batch.len() < BATCH_COMMANDS_MAX && bytes < BATCH_BYTES_MAX {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += op_bytes(&p.op);
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let (commands, waiters): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.op, p.reply)).unzip();
        // Redirect only what certainly never reached the log: once openraft
        // has appended an entry, a lost leadership makes its outcome
        // unknown (see `map_write_error`).
        let not_leader = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            (metrics.state != openraft::ServerState::Leader).then(|| {
                metrics.current_leader.and_then(|id| {
                    metrics.membership_config.membership().get_node(&id).map(|n| (id, n.clone()))
                })
            })
        };
        if let Some(leader) = not_leader {
            answer(waiters, Err(ProposeError::NotLeader { leader }));
            continue;
        }
        let request = Request { limits, maze_limits, ops: commands, time_ms: unix_ms() };
        match raft.client_write_ff(request).await {
            Ok(response) => {
                tokio::spawn(async move {
                    let result = match response.await {
                        Ok(Ok(written)) => Ok(written.data.replies),
                        Ok(Err(e)) => Err(map_write_error(e)),
                        Err(_) => Err(ProposeError::Unavailable("raft dropped the write".into())),
                    };
                    answer(waiters, result);
                    drop(permit);
                });
            }
            Err(fatal) => answer(waiters, Err(ProposeError::Unavailable(fatal.to_string()))),
        }
    }
}

/// Wall-clock Unix milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn answer(
    waiters: Vec<oneshot::Sender<Result<Reply, ProposeError>>>,
    result: Result<Vec<Reply>, ProposeError>,
) {
    match result {
        Ok(replies) if replies.len() == waiters.len() => {
            for (waiter, reply) in waiters.into_iter().zip(replies) {
                let _ = waiter.send(Ok(reply));
            }
        }
        Ok(replies) => {
            // One reply per command is the state machine's contract; a
            // mismatch is a bug, reported rather than misattributed.
            tracing::error!(
                replies = replies.len(),
                commands = waiters.len(),
                "reply count mismatch"
            );
            for waiter in waiters {
                let _ = waiter.send(Err(ProposeError::Unavailable("reply count mismatch".into())));
            }
        }
        Err(e) => {
            for waiter in waiters {
                let _ = waiter.send(Err(e.clone()));
            }
        }
    }
}

/// openraft answers `ForwardToLeader` both when it refuses a write (not
/// leader) and when it truncates an entry it had appended (a new leader
/// overwrote it here). The second is no proof of failure: another node may
/// hold the entry and a later leader may still commit it. Both arrive the
/// same way, and the proposer has just seen itself leader, so the outcome is
/// unknown: a 503 the client retries with its `Idempotency-Key`, never a
/// redirect that `curl -L` would follow into a duplicate.
fn map_write_error(e: ClientWriteError<NodeId, Node>) -> ProposeError {
    match e {
        ClientWriteError::ForwardToLeader(_) => ProposeError::Unavailable(
            "leadership changed while the write was in flight: its outcome is unknown; retry \
             with the same Idempotency-Key (or check the queue)"
                .into(),
        ),
        ClientWriteError::ChangeMembershipError(e) => ProposeError::Unavailable(e.to_string()),
    }
}
