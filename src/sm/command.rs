//! The replicated log's payload and answers: what one entry carries
//! ([`Request`], a batch of [`Op`]s), what applying it answers ([`Response`],
//! one [`Reply`] per op), and what a membership names ([`NodeId`], [`Node`]).
//!
//! Plain data, serialised into the Raft log and snapshots: changing a shape
//! here changes the on-disk format. `raft::types` re-exports all of it.

use serde::{Deserialize, Serialize};

use crate::maze::{MazeCommand, MazeLimits, MazeOutcome};
use crate::queue::{Command, Limits, Seq};

/// A node id: a random u64 persisted in the data dir (see `node::identity`).
pub type NodeId = u64;

/// What the Raft membership stores per node: where to reach it.
///
/// Addresses are advertised `host:port` strings, never bind addresses, because
/// `api_addr` ends up in the `Location` of every redirect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Node-to-node Raft RPC (mTLS).
    pub raft_addr: String,
    /// Public HTTPS API.
    pub api_addr: String,
}

impl Node {
    pub fn api_url(&self) -> String {
        format!("https://{}", self.api_addr)
    }

    pub fn raft_url(&self) -> String {
        format!("https://{}", self.raft_addr)
    }
}

/// One state-changing operation: on a queue, or on the follower-maze stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Queue(Command),
    Maze(MazeCommand),
    /// An operator removed this node (`DELETE /cluster/nodes/{id}`): it is
    /// taken out of the membership and never added back by autopilot. A
    /// replicated tombstone, so every future leader knows it too.
    RetireNode {
        id: NodeId,
    },
}

/// One replicated log entry's payload: a batch of operations that concurrent
/// clients proposed together (one entry, one fsync, one replication message),
/// with the limits the proposing leader applies to all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub limits: Limits,
    pub maze_limits: MazeLimits,
    pub ops: Vec<Op>,
    /// The proposing leader's wall clock (Unix ms), recorded as the enqueue
    /// time of the events in this entry; retention by age is judged against
    /// it, so no node ever reads its own clock while applying. 0 in entries
    /// written before it existed.
    #[serde(default)]
    pub time_ms: u64,
}

/// What applying one command answered, with the removed event's body for a
/// dequeue (bodies live in storage, not in the pure queue core).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Enqueued {
        seq: Seq,
        duplicate: bool,
    },
    Dequeued {
        seq: Seq,
        event: String,
    },
    Empty,
    Conflict {
        front: Option<Seq>,
    },
    Allocated {
        first: u64,
        last: u64,
    },
    Rejected(crate::queue::Rejection),
    Maze(MazeOutcome),
    /// The tombstone is stored (also when it already was).
    Retired,
    Compacted {
        oldest: Seq,
        dropped: u64,
    },
    /// The leased events, oldest first, with their bodies (empty: none
    /// available, HTTP 204).
    Leased(Vec<LeasedReply>),
    Acked,
    /// HTTP 409 `lease_lost`.
    LeaseLost,
    Nacked {
        dead_lettered: bool,
    },
    Extended {
        until_ms: u64,
    },
    BatchEnqueued {
        first: Seq,
        last: Seq,
        duplicate: bool,
    },
    PolicySet,
    CursorSet {
        seq: Seq,
    },
    /// HTTP 409: the compare-and-set failed.
    CursorConflict {
        current: Option<Seq>,
    },
    Swept {
        expired: u64,
        dead_lettered: u64,
    },
}

/// One leased event as the worker gets it: the `Seq`, `Lease` and
/// `Deliveries` headers and the body of SPEC §5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedReply {
    pub seq: Seq,
    pub token: String,
    pub deliveries: u32,
    pub event: String,
}

/// The response to one log entry: one [`Reply`] per operation, in order.
/// Blank and membership entries answer an empty list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub replies: Vec<Reply>,
}

/// openraft logs entries with `Display`: a summary, never the bodies.
impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Request{{ops: {}, time_ms: {}}}", self.ops.len(), self.time_ms)
    }
}

impl Op {
    /// Whether applying it can add stored data: such writes wait for disk
    /// space, while dequeues, compaction, removals and maze skips only shrink
    /// what is stored (and must go on, or a full disk could never drain).
    pub fn adds_data(&self) -> bool {
        matches!(
            self,
            Op::Queue(
                Command::Enqueue { .. } | Command::EnqueueBatch { .. } | Command::AllocSeq { .. }
            ) | Op::Maze(MazeCommand::Lines { .. } | MazeCommand::Reset)
        )
    }

    /// About how many bytes it adds to a log entry: what the proposer counts
    /// against its batch size.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Op::Queue(command) => match command {
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
            },
            Op::Maze(MazeCommand::Lines { lines, .. }) => lines.iter().map(String::len).sum(),
            Op::Maze(_) | Op::RetireNode { .. } => 16,
        }
    }
}
