//! Group commit: many concurrent commands, one Raft entry.
//!
//! One entry per command would cost one log record, one apply and one
//! response per write. The proposer gathers whatever commands arrived while
//! earlier batches were in flight into one [`Request`] (bounded by count and
//! bytes), and keeps a few batches in flight so that they overlap in the
//! pipeline (openraft 0.10 replicates an entry while the leader's own fsync
//! of it runs, and merges queued appends into one storage write). Each
//! caller gets its own [`Reply`] back.
//!
//! A batch in flight on a leader that loses its quorum (an isolated leader)
//! or its leadership is answered at once with an unknown outcome (a `503`
//! the client retries with its `Idempotency-Key`) instead of waiting for
//! the commit timeout: openraft itself rejects new writes there
//! (`ForwardToLeader`, lease expired), but keeps those already appended.
//!
//! Batches are handed to openraft in the order they were formed
//! (`client_write_ff` from this one task). Nothing waits for their results:
//! openraft runs each batch's [`CallbackResponder`] where it completes the
//! write, which answers the batch's callers directly; one watchdog task
//! fails the batches in flight when the leadership or the quorum is lost.
//! (A lone write passes through enough tasks as it is: HTTP, this one,
//! openraft's core, log store, state machine.)
//!
//! Every write of the node passes [`Proposer::propose`] (API, compactor,
//! maze source and gap timer, forwarded batches), so the two write gates
//! sit here: the disk watermark, and the pause a leadership transfer takes
//! ([`Proposer::hold_writes`], see `replica::transfer`).

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot, OwnedRwLockWriteGuard, OwnedSemaphorePermit, RwLock, Semaphore};
use tokio_util::sync::CancellationToken;

use super::types::{Node, NodeId, Op, Raft, Reply, Request, TypeConfig};
use crate::queue::Limits;
use crate::sm::MazeLimits;

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
/// How often a batch in flight checks that its leader still has a quorum.
const QUORUM_CHECK_EVERY: Duration = Duration::from_millis(25);

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

struct Pending {
    op: Op,
    reply: oneshot::Sender<Result<Reply, ProposeError>>,
}

#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
    /// The one place every write passes: API, maze source, forwarded batches.
    disk: Arc<crate::node::disk::DiskGuard>,
    /// Each proposal holds it shared until it is answered; a leadership
    /// transfer holds it exclusively, since any write would refresh the
    /// followers' leases that the transfer waits out.
    gate: Arc<RwLock<()>>,
}

/// New proposals wait while this lives (see [`Proposer::hold_writes`]).
pub struct WritesHeld {
    _guard: OwnedRwLockWriteGuard<()>,
}

impl Proposer {
    /// Starts the batching task; `limits` is stamped into every entry. A
    /// batch in flight fails (outcome unknown) once the leader has gone
    /// `quorum_timeout` without hearing from a quorum.
    pub fn spawn(
        raft: Raft,
        limits: Limits,
        maze_limits: MazeLimits,
        disk: Arc<crate::node::disk::DiskGuard>,
        quorum_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        let batcher = Batcher { raft, limits, maze_limits, quorum_timeout };
        tokio::spawn(run(batcher, rx, shutdown));
        Proposer { tx, disk, gate: Arc::new(RwLock::new(())) }
    }

    /// Pauses new proposals (once those in flight are answered) until the
    /// guard is dropped.
    pub async fn hold_writes(&self) -> WritesHeld {
        WritesHeld { _guard: self.gate.clone().write_owned().await }
    }

    /// Proposes one operation and waits until it is committed and applied.
    /// Below the disk watermark, one that adds data is refused first
    /// ([`ProposeError::DiskFull`]); the maze source retries it, which
    /// stops it reading its socket until space returns.
    pub async fn propose(&self, op: Op) -> Result<Reply, ProposeError> {
        self.propose_within(op, None).await
    }

    /// [`Proposer::propose`], giving up after `commit_timeout` (the outcome
    /// is then unknown). The wait at the transfer gate does not count: a
    /// transfer bounds itself, and a write held by one must still end in a
    /// redirect to the new leader, not in a timeout.
    pub async fn propose_within(
        &self,
        op: Op,
        commit_timeout: Option<Duration>,
    ) -> Result<Reply, ProposeError> {
        let _gate = self.gate.read().await;
        if Op::adds_data(&op) {
            if let Some(why) = self.disk.refuse_writes() {
                return Err(ProposeError::DiskFull(why));
            }
        }
        let commit = async {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Pending { op, reply })
                .await
                .map_err(|_| ProposeError::Unavailable("proposer stopped".into()))?;
            rx.await.map_err(|_| ProposeError::Unavailable("proposal dropped".into()))?
        };
        match commit_timeout {
            None => commit.await,
            Some(limit) => tokio::time::timeout(limit, commit).await.unwrap_or_else(|_| {
                Err(ProposeError::Unavailable("timed out waiting for the write to commit".into()))
            }),
        }
    }
}

/// What the batching task needs besides its queue.
struct Batcher {
    raft: Raft,
    limits: Limits,
    maze_limits: MazeLimits,
    quorum_timeout: Duration,
}

async fn run(batcher: Batcher, mut rx: mpsc::Receiver<Pending>, shutdown: CancellationToken) {
    let Batcher { raft, limits, maze_limits, quorum_timeout } = batcher;
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let watched = Arc::new(Watched::default());
    tokio::spawn(watchdog(raft.clone(), watched.clone(), quorum_timeout, shutdown.clone()));
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
        let mut bytes = Op::payload_bytes(&first.op);
        let mut batch = vec![first];
        while batch.len() < BATCH_COMMANDS_MAX && bytes < BATCH_BYTES_MAX {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += Op::payload_bytes(&p.op);
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
            let metrics = metrics.borrow_watched();
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
        let batch = Arc::new(InFlight::new(waiters, permit));
        let responder = {
            let (batch, me) = (batch.clone(), *raft.node_id());
            CallbackResponder::new(move |result: openraft::raft::ClientWriteResult<TypeConfig>| {
                batch.finish(match result {
                    Ok(written) => Ok(written.data.replies),
                    Err(e) => Err(map_write_error(e, me)),
                });
            })
        };
        watched.push(batch.clone());
        if let Err(fatal) = raft.client_write_ff(request, Some(responder)).await {
            batch.finish(Err(ProposeError::Unavailable(fatal.to_string())));
        }
    }
}

/// openraft's write responder here: a callback, run where openraft
/// completes the write (on the state machine task, right after the apply),
/// so that a batch's callers are answered without a task of its own in
/// between. Dropped unanswered (Raft shut down), its waiters see their
/// channels close: an unknown outcome.
pub struct CallbackResponder<T>(Box<dyn FnOnce(T) + Send>);

impl<T> CallbackResponder<T> {
    pub fn new(f: impl FnOnce(T) + Send + 'static) -> Self {
        CallbackResponder(Box::new(f))
    }
}

impl<T: openraft::OptionalSend + 'static> openraft::raft::responder::Responder<TypeConfig, T>
    for CallbackResponder<T>
{
    fn on_complete(self, result: T) {
        (self.0)(result)
    }
}

/// A batch handed to openraft and not answered yet. Whichever comes first
/// answers it: openraft's responder (the normal way), or the watchdog
/// (leadership or quorum lost while it was in flight). Answering also
/// frees its in-flight permit.
struct InFlight {
    waiting: std::sync::Mutex<Option<(Waiters, OwnedSemaphorePermit)>>,
    submitted: std::time::Instant,
}

type Waiters = Vec<oneshot::Sender<Result<Reply, ProposeError>>>;

impl InFlight {
    fn new(waiters: Waiters, permit: OwnedSemaphorePermit) -> Self {
        InFlight {
            waiting: std::sync::Mutex::new(Some((waiters, permit))),
            submitted: std::time::Instant::now(),
        }
    }

    fn finish(&self, result: Result<Vec<Reply>, ProposeError>) {
        let taken = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((waiters, permit)) = taken {
            answer(waiters, result);
            drop(permit);
        }
    }

    fn is_finished(&self) -> bool {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).is_none()
    }
}

/// The batches the watchdog looks after (at most `IN_FLIGHT_MAX` live).
#[derive(Default)]
struct Watched {
    batches: std::sync::Mutex<Vec<Arc<InFlight>>>,
    added: tokio::sync::Notify,
}

impl Watched {
    fn push(&self, batch: Arc<InFlight>) {
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        batches.retain(|b| !b.is_finished());
        batches.push(batch);
        drop(batches);
        self.added.notify_one();
    }

    /// The batches still unanswered (the answered ones are dropped).
    fn unfinished(&self) -> Vec<Arc<InFlight>> {
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        batches.retain(|b| !b.is_finished());
        batches.clone()
    }
}

/// Fails the batches in flight once this node stops being a leader with a
/// quorum: it is no longer leader, or (with other voters) no quorum
/// acknowledged it for `quorum_timeout` while a batch was in flight. (A
/// quorum that was quiet before the batch, e.g. a single voter's, or one
/// being changed, does not count against it.) The answer says why, for the
/// client. It ticks only while something is in flight.
async fn watchdog(
    raft: Raft,
    watched: Arc<Watched>,
    quorum_timeout: Duration,
    shutdown: CancellationToken,
) {
    let metrics = raft.metrics();
    loop {
        let batches = watched.unfinished();
        if batches.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = watched.added.notified() => continue,
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(QUORUM_CHECK_EVERY) => {}
        }
        let why = {
            let m = metrics.borrow_watched();
            if m.state != openraft::ServerState::Leader {
                Some((None, LEADERSHIP_CHANGED))
            } else {
                let alone = m.membership_config.membership().voter_ids().all(|id| id == m.id);
                let silent = m
                    .last_quorum_acked
                    .as_ref()
                    .is_some_and(|at| openraft::Instant::elapsed(&**at) > quorum_timeout);
                (!alone && silent).then_some((Some(quorum_timeout), QUORUM_LOST))
            }
        };
        if let Some((in_flight_for, why)) = why {
            for batch in batches {
                if in_flight_for.is_none_or(|t| batch.submitted.elapsed() > t) {
                    batch.finish(Err(ProposeError::Unavailable(why.into())));
                }
            }
        }
    }
}

const LEADERSHIP_CHANGED: &str = "leadership changed while the write was in flight: its outcome \
                                  is unknown; retry with the same Idempotency-Key (or check the \
                                  queue)";
const QUORUM_LOST: &str = "the leader lost contact with its quorum while the write was in \
                           flight: its outcome is unknown; retry with the same Idempotency-Key \
                           (or check the queue)";

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

/// openraft 0.10 answers `ForwardToLeader` only for a write it refused
/// before appending (not leader, a transfer under way, or a leader whose
/// quorum lease expired): nothing was written, so the client may go to the
/// leader it names (a 307), or retry later (a 503) when it names none or
/// this node. `LogEntryDiscarded` means the entry was appended and then
/// overwritten here, but another node may hold it and a later leader may
/// still commit it: the outcome is unknown, a 503 the client retries with
/// its `Idempotency-Key`, never a redirect that `curl -L` would follow into
/// a duplicate.
fn map_write_error(e: ClientWriteError<TypeConfig>, me: NodeId) -> ProposeError {
    match e {
        ClientWriteError::ForwardToLeader(f) => ProposeError::NotLeader {
            leader: f.leader_id.filter(|id| *id != me).zip(f.leader_node),
        },
        ClientWriteError::LogEntryDiscarded(_) => {
            ProposeError::Unavailable(LEADERSHIP_CHANGED.into())
        }
        ClientWriteError::ChangeMembershipError(e) => ProposeError::Unavailable(e.to_string()),
        ClientWriteError::PreconditionFailed(e) => ProposeError::Unavailable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::node::disk::{DiskGuard, MinFree};
    use crate::queue::Command;

    /// A proposer whose batching task is the test: proposals arrive on the
    /// returned receiver.
    fn proposer(min_free: MinFree) -> (Proposer, mpsc::Receiver<Pending>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(8);
        let disk = DiskGuard::new(dir.path(), min_free);
        (Proposer { tx, disk, gate: Arc::new(RwLock::new(())) }, rx, dir)
    }

    fn dequeue() -> Op {
        Op::Queue(Command::Dequeue { queue: "q".into(), expect_seq: None })
    }

    #[tokio::test]
    async fn a_held_gate_keeps_every_proposal_out_until_it_is_released() {
        let (proposer, mut rx, _dir) = proposer(MinFree::Bytes(0));
        let held = proposer.hold_writes().await;
        let waiting = tokio::spawn({
            let proposer = proposer.clone();
            async move { proposer.propose(dequeue()).await }
        });
        let early = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
        assert!(early.is_err(), "a proposal passed a held gate");
        drop(held);
        let pending = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
        let pending = pending.unwrap();
        assert_eq!(pending.op, dequeue());
        pending.reply.send(Ok(Reply::Empty)).unwrap();
        assert!(matches!(waiting.await.unwrap(), Ok(Reply::Empty)));
    }

    #[tokio::test]
    async fn the_commit_timeout_does_not_count_the_wait_at_the_gate() {
        let (proposer, mut rx, _dir) = proposer(MinFree::Bytes(0));
        let held = proposer.hold_writes().await;
        let waiting = tokio::spawn({
            let proposer = proposer.clone();
            async move { proposer.propose_within(dequeue(), Some(Duration::from_millis(100))).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
        let pending = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
        pending.unwrap().reply.send(Ok(Reply::Empty)).unwrap();
        assert!(matches!(waiting.await.unwrap(), Ok(Reply::Empty)));
        // Past the gate the limit holds: nobody answers this one.
        let lost = proposer.propose_within(dequeue(), Some(Duration::from_millis(100))).await;
        assert!(matches!(lost, Err(ProposeError::Unavailable(_))), "{lost:?}");
    }

    #[tokio::test]
    async fn below_the_disk_watermark_only_writes_that_add_data_are_refused() {
        let (proposer, mut rx, _dir) = proposer(MinFree::Bytes(u64::MAX));
        let enqueue = Op::Queue(Command::Enqueue {
            queue: "q".into(),
            event: "e".into(),
            idempotency_key: None,
        });
        assert!(matches!(proposer.propose(enqueue).await, Err(ProposeError::DiskFull(_))));
        let drain = tokio::spawn({
            let proposer = proposer.clone();
            async move { proposer.propose(dequeue()).await }
        });
        let pending = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
        pending.unwrap().reply.send(Ok(Reply::Empty)).unwrap();
        assert!(matches!(drain.await.unwrap(), Ok(Reply::Empty)));
    }
}
