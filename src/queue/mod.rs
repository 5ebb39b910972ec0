//! The queue state machine: pure logic, no I/O.
//!
//! Every node applies the same committed [`Command`]s in the same order to a
//! [`QueueState`] and so reaches the same state. `apply` returns the client-visible
//! [`Outcome`] and appends the storage [`Effect`]s that the replicated core
//! (`sm::Core`) turns into the writes of one batch. The state itself holds only
//! metadata (per-queue seq pointers, named sequences, the idempotency window);
//! event bodies live in storage, so memory does not grow with queue length.
//!
//! Per queue the invariant is `1 <= oldest <= front <= next`:
//!
//! ```text
//!   oldest        front               next
//!     |  dequeued,  |  pending (GET/DELETE |
//!     |  retained   |  see `front`)        |  <- next seq to assign
//! ```
//!
//! Determinism: the result of `apply` depends only on the state, the command
//! and the [`Limits`] stamped into the log entry by the proposer; never on a
//! clock, randomness or a node's local configuration.
//!
//! This module must not import tokio, axum, rocksdb, openraft or anything that
//! does I/O (checked by `make lint`). Scenario files of input commands and
//! expected outcomes live in `testdata/` (see `scenarios.rs`).

pub mod retention;
mod state;

pub use retention::{EventStamp, RetentionPolicy};
pub use state::QueueState;

use serde::{Deserialize, Serialize};

/// A queue sequence number: gapless per queue, starting at 1.
pub type Seq = u64;

/// Bounds that change outcomes, carried in each replicated batch so that every
/// node applies the same ones (see module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Dequeued events kept per queue (readable through `/events`).
    pub retention_events: u64,
    /// Pending events per queue; an enqueue beyond this is rejected.
    pub queue_events_max: u64,
    /// Idempotency keys remembered (cluster-wide, oldest evicted first).
    pub idempotency_keys_max: u64,
    /// Distinct queues and named sequences (each) that may exist.
    pub queues_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            retention_events: 100_000,
            queue_events_max: 10_000_000,
            idempotency_keys_max: 100_000,
            queues_max: 10_000,
        }
    }
}

/// A state-changing request, as replicated in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Append `event` to `queue` (created on first use). With an idempotency
    /// key already in the window for this queue, nothing is enqueued and the
    /// original seq is returned.
    Enqueue { queue: String, event: String, idempotency_key: Option<String> },
    /// Remove the front event of `queue`; with `expect_seq`, only if the
    /// front event has exactly that seq.
    Dequeue { queue: String, expect_seq: Option<Seq> },
    /// Allocate `count` (>= 1) consecutive ids from the named sequence, which
    /// starts at 1.
    AllocSeq { name: String, count: u64 },
    /// Drop `queue`'s retained (dequeued) events below `upto`, which is
    /// clamped to `[oldest, front]`: pending events are never dropped. The
    /// leader decides `upto` from the byte and age limits (see
    /// [`retention`]); applying it needs no clock.
    Compact { queue: String, upto: Seq },
}

/// What applying one [`Command`] did, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The event now has `seq`; `duplicate` when an idempotency key matched
    /// and nothing new was enqueued.
    Enqueued { seq: Seq, duplicate: bool },
    /// The front event `seq` of `queue` was removed. Its body lives in
    /// storage: the replicated core (`sm`) reads it from there by this
    /// queue and seq, without looking back at the command.
    Dequeued { queue: String, seq: Seq },
    /// Nothing to dequeue.
    Empty,
    /// `expect_seq` did not match; `front` is the actual front (None: empty).
    Conflict { front: Option<Seq> },
    /// Ids `first..=last` are now owned by the caller.
    Allocated { first: u64, last: u64 },
    /// The command was refused and changed nothing.
    Rejected(Rejection),
    /// `dropped` retained events were removed; `oldest` is the queue's
    /// oldest retained seq now.
    Compacted { oldest: Seq, dropped: u64 },
}

/// Why a command was refused. Deterministic: every node refuses alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// The queue already holds `max` pending events.
    QueueFull { max: u64 },
    /// Creating another queue or sequence would exceed `max`.
    TooManyQueues { max: u64 },
    /// `AllocSeq` with a count of 0 or one that would overflow.
    InvalidCount,
}

/// Per-queue pointers; see the module docs for the invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMeta {
    /// Oldest seq whose body is still stored.
    pub oldest: Seq,
    /// Seq of the first pending event (`== next` when the queue is empty).
    pub front: Seq,
    /// Seq the next enqueue gets (`head + 1`).
    pub next: Seq,
}

impl QueueMeta {
    pub const NEW: QueueMeta = QueueMeta { oldest: 1, front: 1, next: 1 };

    /// Number of pending events.
    pub fn len(&self) -> u64 {
        // Saturating: a meta restored from damaged storage must not turn a
        // status read into a panic.
        self.next.saturating_sub(self.front)
    }

    pub fn is_empty(&self) -> bool {
        self.next <= self.front
    }

    /// Latest assigned seq (0 before the first enqueue).
    pub fn head(&self) -> Seq {
        self.next.saturating_sub(1)
    }

    /// The front seq, if any event is pending.
    pub fn front_seq(&self) -> Option<Seq> {
        (!self.is_empty()).then_some(self.front)
    }
}

/// One remembered idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemEntry {
    pub queue: String,
    pub seq: Seq,
    /// Insertion order, for oldest-first eviction (strictly increasing).
    pub ordinal: u64,
}

/// A storage change implied by applying a command, in application order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Store the body of `queue`'s event `seq`.
    PutEvent { queue: String, seq: Seq, event: String },
    /// Delete the bodies of `queue`'s events `from..to` (end exclusive).
    DeleteEvents { queue: String, from: Seq, to: Seq },
    /// Store `queue`'s new pointers.
    PutQueue { queue: String, meta: QueueMeta },
    /// Remember idempotency key `key` (of `entry.queue`).
    PutIdem { key: String, entry: IdemEntry },
    /// Forget idempotency key `key` of `queue` (evicted).
    DelIdem { queue: String, key: String, ordinal: u64 },
    /// Store the next value of named sequence `name`.
    PutSequence { name: String, next: u64 },
}

#[cfg(test)]
mod scenarios;
