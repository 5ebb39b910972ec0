//! The queue state machine: pure logic, no I/O.
//!
//! Every node applies the same committed [`Command`]s in the same order to a
//! [`QueueState`] and so reaches the same state. `apply_at` returns the
//! client-visible [`Outcome`] and appends the storage [`Effect`]s that the
//! replicated core (`sm::Core`) turns into the writes of one batch. The state
//! itself holds only metadata (per-queue seq pointers, named sequences, the
//! idempotency window, work-queue slots, policies and cursors); event bodies
//! live in storage, so memory does not grow with queue length.
//!
//! Per queue the invariant is `1 <= oldest <= front <= next`, where `front`
//! is the oldest seq that is not *done* (acked, popped or dead-lettered):
//!
//! ```text
//!   oldest        front                                   next
//!     |  done,      |  P P L P D x P L P D P ...            |  <- next seq to assign
//!     |  retained   |  P pending   L leased (until, token)  |
//!                      D delayed (until)   x done out of order
//! ```
//!
//! Only the letters other than P cost memory (a [`Slot`] each, all in
//! `front..next`; a P with a slot remembers its delivery count). `GET` and
//! `DELETE /event` ([`QueueState::available`], `Command::Dequeue`) and
//! `Lease` take the oldest *available* event: pending, or a lease or delay
//! whose `until_ms` has passed. FIFO holds among available events.
//!
//! Work-queue commands (SPEC §5), all timed by the entry (`now_ms` is
//! `Request.time_ms`, stamped by the leader; never a node's clock):
//! - `Lease` hands out up to `max` available events with a token
//!   ([`lease_token`]: leader-chosen nonce, seq, delivery count) and
//!   `deliveries + 1`; an expired lease at the policy's `max_deliveries` is
//!   dead-lettered instead, in the same entry. Bounded by
//!   [`Limits::leases_max`].
//! - `Ack` (done), `Nack` (available at once or after a delay; dead-letters
//!   at `max_deliveries`) and `Extend` (live leases only) need the current
//!   token; otherwise [`Outcome::LeaseLost`]. An ack or nack with an
//!   expired token still works while nobody leased the event again.
//! - `EnqueueBatch` (all or nothing, optionally delayed, one idempotency
//!   key), `SetPolicy`, `SetCursor` (compare-and-set), and the leader's
//!   `Sweep` (dead-letters expired leases at `max_deliveries`, frees
//!   matured delays; at most `max` per entry).
//!
//! A dead-lettered event becomes a new event of the policy's `dead_letter`
//! queue with the JSON body `{"queue","seq","deliveries","event"}` (built by
//! `sm`, which has the body) and is done in its own queue.
//!
//! Holes and limits: `queue_events_max` counts the whole span `front..next`
//! (done holes included), so every slot is bounded by it and a front stuck
//! on a leased event pushes back on producers. Retention (`oldest`,
//! `Compact`) only ever drops events below `front`: an acked event above a
//! leased one is kept (and counts) until the front passes it. A seq below
//! `front` (popped, acked, compacted) or not yet assigned has no lease: any
//! ack, nack or extend of it is `LeaseLost`.
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
mod work;

pub use retention::{EventStamp, RetentionPolicy};
pub use state::QueueState;
pub use work::{
    lease_token, LeasedEvent, QueuePolicy, Slot, SlotState, WorkCounters, WorkStats,
    DEFAULT_LEASE_TTL_MS,
};

use serde::{Deserialize, Serialize};

/// A queue sequence number: gapless per queue, starting at 1.
pub type Seq = u64;

/// Bounds that change outcomes, carried in each replicated batch so that every
/// node applies the same ones (see module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Dequeued events kept per queue (readable through `/events`).
    pub retention_events: u64,
    /// Events per queue from its front (the oldest not done) to its head,
    /// done holes above the front included; an enqueue beyond this is
    /// rejected.
    pub queue_events_max: u64,
    /// Idempotency keys remembered (cluster-wide, oldest evicted first).
    pub idempotency_keys_max: u64,
    /// Distinct queues and named sequences (each) that may exist; also
    /// bounds the queues with a policy and the group cursors (each).
    pub queues_max: u64,
    /// Live (unexpired) leases per queue: a lease beyond it is refused.
    /// Expired ones do not count, or dead workers could lock a queue. `serde(default)`: entries
    /// written before leases existed decode.
    #[serde(default = "default_leases_max")]
    pub leases_max: u64,
    /// Delayed events per queue: a delayed enqueue beyond it is refused.
    #[serde(default = "default_delayed_max")]
    pub delayed_max: u64,
}

fn default_leases_max() -> u64 {
    Limits::DEFAULT.leases_max
}

fn default_delayed_max() -> u64 {
    Limits::DEFAULT.delayed_max
}

impl Limits {
    /// The defaults, usable in `const` items (`..Limits::DEFAULT`).
    pub const DEFAULT: Limits = Limits {
        retention_events: 100_000,
        queue_events_max: 10_000_000,
        idempotency_keys_max: 100_000,
        queues_max: 10_000,
        leases_max: 100_000,
        delayed_max: 100_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
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
    /// Lease up to `max` (>= 1) of `queue`'s oldest available events for
    /// `ttl_ms` (None: the policy's `lease_ttl_ms`, else
    /// [`DEFAULT_LEASE_TTL_MS`]). `nonce` is a random u64 the proposing
    /// leader picks, so tokens are unguessable yet equal on every node.
    /// Expired leases of events that reached `max_deliveries` are
    /// dead-lettered on the way instead of being redelivered.
    Lease { queue: String, max: u32, ttl_ms: Option<u64>, nonce: u64 },
    /// Mark leased event `seq` done, if `token` is its current lease (even
    /// an expired one that nobody leased again).
    Ack { queue: String, seq: Seq, token: String },
    /// Give leased event `seq` back: available at once (`delay_ms` 0) or
    /// after `delay_ms`. At `max_deliveries` it is dead-lettered instead.
    Nack { queue: String, seq: Seq, token: String, delay_ms: u64 },
    /// Extend a live (unexpired) lease to `ttl_ms` from the entry's time
    /// (None: as `Lease` chooses it).
    Extend { queue: String, seq: Seq, token: String, ttl_ms: Option<u64> },
    /// Append all of `events` (>= 1) or none, invisible for `delay_ms` (0:
    /// visible at once). The idempotency key covers the whole batch and
    /// remembers its first seq. A delayed single `POST /event?delay=` is a
    /// batch of one: `Enqueue` keeps its shape (and its log encoding).
    EnqueueBatch {
        queue: String,
        events: Vec<String>,
        idempotency_key: Option<String>,
        #[serde(default)]
        delay_ms: u64,
    },
    /// Replace `queue`'s policy (an empty one removes it). The queue need
    /// not exist yet.
    SetPolicy { queue: String, policy: QueuePolicy },
    /// Set consumer group `group`'s cursor of `queue` to `seq`; with
    /// `if_seq`, only if the current cursor is that (0: no cursor yet).
    SetCursor { queue: String, group: String, seq: Seq, if_seq: Option<Seq> },
    /// Dead-letter up to `max` expired leases that reached their policy's
    /// `max_deliveries`, in `queue` or (None) in every queue, and make
    /// matured delayed events plain pending ones again (which frees their
    /// memory). Proposed by the leader's sweeper; bounded work per entry.
    Sweep { queue: Option<String>, max: u32 },
}

/// What applying one [`Command`] did, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The event now has `seq`; `duplicate` when an idempotency key matched
    /// and nothing new was enqueued.
    Enqueued {
        seq: Seq,
        duplicate: bool,
    },
    /// The front event `seq` of `queue` was removed. Its body lives in
    /// storage: the replicated core (`sm`) reads it from there by this
    /// queue and seq, without looking back at the command.
    Dequeued {
        queue: String,
        seq: Seq,
    },
    /// Nothing to dequeue.
    Empty,
    /// `expect_seq` did not match; `front` is the actual front (None: empty).
    Conflict {
        front: Option<Seq>,
    },
    /// Ids `first..=last` are now owned by the caller.
    Allocated {
        first: u64,
        last: u64,
    },
    /// The command was refused and changed nothing.
    Rejected(Rejection),
    /// `dropped` retained events were removed; `oldest` is the queue's
    /// oldest retained seq now.
    Compacted {
        oldest: Seq,
        dropped: u64,
    },
    /// The events now leased, oldest first (empty: none available). Bodies
    /// are added by the replicated core, as for `Dequeued`.
    Leased(Vec<LeasedEvent>),
    Acked,
    /// The token is not (or no longer) the event's lease: it expired and
    /// the event was leased again, or it was acked, popped, dead-lettered
    /// or compacted, or never existed. HTTP 409 `lease_lost`.
    LeaseLost,
    /// Given back; `dead_lettered` when `max_deliveries` moved it away.
    Nacked {
        dead_lettered: bool,
    },
    /// The lease now runs until `until_ms`.
    Extended {
        until_ms: u64,
    },
    /// The batch has seqs `first..=last`; `duplicate` when the idempotency
    /// key matched (then `first` is the original batch's first seq).
    BatchEnqueued {
        first: Seq,
        last: Seq,
        duplicate: bool,
    },
    PolicySet,
    CursorSet {
        seq: Seq,
    },
    /// `if_seq` did not match; `current` is the cursor (None: unset).
    CursorConflict {
        current: Option<Seq>,
    },
    /// `expired` expired leases were found, `dead_lettered` of them moved.
    Swept {
        expired: u64,
        dead_lettered: u64,
    },
}

/// Why a command was refused. Deterministic: every node refuses alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// The queue already holds `max` pending events.
    QueueFull { max: u64 },
    /// Creating another queue or sequence would exceed `max`.
    TooManyQueues { max: u64 },
    /// `AllocSeq` with a count of 0 or one that would overflow; also a
    /// lease of 0 events and an empty batch.
    InvalidCount,
    /// The queue already has `max` leased events.
    TooManyLeases { max: u64 },
    /// The queue already has (or would have) more than `max` delayed events.
    TooManyDelayed { max: u64 },
    /// `max_deliveries` of 0, or without a `dead_letter` queue (an event
    /// would be silently dropped), or a queue dead-lettering into itself.
    InvalidPolicy,
}

/// Per-queue pointers; see the module docs for the invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMeta {
    /// Oldest seq whose body is still stored.
    pub oldest: Seq,
    /// Seq of the oldest event not done (`== next` when the queue is
    /// empty). Events above it may be leased, delayed or done out of order
    /// (see [`QueueState::available`] for what GET and DELETE take).
    pub front: Seq,
    /// Seq the next enqueue gets (`head + 1`).
    pub next: Seq,
}

impl QueueMeta {
    pub const NEW: QueueMeta = QueueMeta { oldest: 1, front: 1, next: 1 };

    /// Number of events from the front to the head: the pending ones,
    /// plus leased, delayed and done-out-of-order ones above the front.
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

    /// The front seq, if any event is not done. Not what GET shows once
    /// leases or delays exist: that is [`QueueState::available`].
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
    /// Store (`Some`) or forget (`None`) the availability slot of `queue`'s
    /// event `seq`.
    PutSlot { queue: String, seq: Seq, slot: Option<Slot> },
    /// Forget the slots of `queue`'s events `from..to` (the front passed them).
    DeleteSlots { queue: String, from: Seq, to: Seq },
    /// Store (`Some`) or remove (`None`) `queue`'s policy.
    PutPolicy { queue: String, policy: Option<QueuePolicy> },
    /// Store consumer group `group`'s cursor of `queue`.
    PutCursor { queue: String, group: String, seq: Seq },
    /// Store `queue`'s work counters.
    PutCounters { queue: String, counters: WorkCounters },
    /// Store a new event `to_seq` in queue `to`: the JSON
    /// `{"queue","seq","deliveries","event"}` built from `queue`'s event
    /// `seq` (its body lives in storage, so the replicated core builds it).
    DeadLetter { queue: String, seq: Seq, deliveries: u32, to: String, to_seq: Seq },
}

#[cfg(test)]
mod scenarios;
