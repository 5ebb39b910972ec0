//! [`Core`]: the replicated state and the one function that applies
//! committed entries to it, [`Core::apply`].
//!
//! One apply is one batch of entries, answered by one [`Applied`]: a
//! [`Response`] per entry, the storage [`Write`]s in the order they must be
//! written, and the maze counters. Within a batch a later command sees what
//! an earlier one wrote (an event enqueued and dequeued in one batch): the
//! core keeps an overlay of the bodies and stamps it wrote, and asks
//! [`Stored`] for the rest. Maze changes are coalesced (a line buffered and
//! delivered in the same batch never reaches storage) and written after the
//! queue writes; the applied log id and a changed membership come last.
//!
//! Nothing here panics on any entry or stored value: entries come from the
//! network and stored values from disk. A dequeued event without a stored
//! body is an error ([`ApplyError::Corrupt`]), which stops the node rather
//! than let it answer differently from its peers.

use std::collections::{BTreeMap, BTreeSet};

use super::command::{LeasedReply, NodeId, Op, Reply, Request, Response};
use super::notify::Notifier;
use super::{Entry, EntryPayload, LogId, StoredMembership};
use crate::maze::{LinesStats, MazeEffect, MazeOutcome, MazeState};
use crate::queue::{
    Effect, EventStamp, IdemEntry, Outcome, QueueMeta, QueuePolicy, QueueState, Seq, Slot,
    WorkCounters,
};

/// Read-only access to what earlier applies stored and the core does not
/// keep in memory: event bodies and their retention stamps.
pub trait Stored {
    type Error;

    /// The body of `queue`'s event `seq`, if stored.
    fn body(&self, queue: &str, seq: Seq) -> Result<Option<String>, Self::Error>;

    /// The retention stamp of `queue`'s event `seq`, if stored.
    fn stamp(&self, queue: &str, seq: Seq) -> Result<Option<EventStamp>, Self::Error>;
}

/// Why an apply failed. Either way the node must stop: its state would
/// diverge from its peers'.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError<E> {
    #[error(transparent)]
    Stored(E),
    #[error("corrupt state: {0}")]
    Corrupt(String),
}

/// A stored record that does not restore.
#[derive(Debug, thiserror::Error)]
#[error("stored state does not restore: {0}")]
pub struct RestoreError(pub String);

/// One storage change, typed. The adapter encodes each into its keys
/// (`raft::keys`) in this order; a later write wins over an earlier one on
/// the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// The retention stamp of `queue`'s new event `seq`.
    Stamp {
        queue: String,
        seq: Seq,
        stamp: EventStamp,
    },
    /// The body of `queue`'s new event `seq`.
    Event {
        queue: String,
        seq: Seq,
        body: String,
    },
    /// Delete the bodies and stamps of `queue`'s events `from..to`.
    DeleteEvents {
        queue: String,
        from: Seq,
        to: Seq,
    },
    Queue {
        queue: String,
        meta: QueueMeta,
    },
    /// Remember idempotency key `key` (of `entry.queue`).
    Idem {
        key: String,
        entry: IdemEntry,
    },
    /// Forget idempotency key `key` of `queue`.
    DelIdem {
        queue: String,
        key: String,
    },
    /// The next id of the named sequence `name`.
    Sequence {
        name: String,
        next: u64,
    },
    /// Node `id` is retired.
    Retired {
        id: NodeId,
    },
    /// Store (`Some`) or delete (`None`) the slot of `queue`'s event `seq`.
    Slot {
        queue: String,
        seq: Seq,
        slot: Option<Slot>,
    },
    /// Delete the slots of `queue`'s events `from..to`.
    DeleteSlots {
        queue: String,
        from: Seq,
        to: Seq,
    },
    /// Store (`Some`) or delete (`None`) `queue`'s policy.
    Policy {
        queue: String,
        policy: Option<QueuePolicy>,
    },
    Cursor {
        queue: String,
        group: String,
        seq: Seq,
    },
    Counters {
        queue: String,
        counters: WorkCounters,
    },
    /// A new maze stream: forget every buffered line and follow edge
    /// (written before the maze writes that follow it).
    ClearMaze,
    /// Buffer (`Some`) or drop (`None`) the maze line of `seq`.
    MazePending {
        seq: u64,
        line: Option<String>,
    },
    /// Add (`true`) or remove (`false`) a follow edge.
    Follow {
        followed: u64,
        follower: u64,
        present: bool,
    },
    MazeCursor {
        epoch: u64,
        next: u64,
    },
    /// The last applied log id (every apply writes it).
    Applied(Option<LogId>),
    Membership(StoredMembership),
}

/// One stored record of the state, typed: what [`Core::restore`] rebuilds
/// from (decoded by `raft::keys::decode_state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Applied(Option<LogId>),
    Membership(StoredMembership),
    /// The cluster UUID, carried for snapshots and backups only.
    ClusterUuid,
    Queue {
        name: String,
        meta: QueueMeta,
    },
    Sequence {
        name: String,
        next: u64,
    },
    Idem {
        key: String,
        entry: IdemEntry,
    },
    MazeCursor {
        epoch: u64,
        next: u64,
    },
    MazePending {
        seq: u64,
        line: String,
    },
    Follow {
        followed: u64,
        follower: u64,
    },
    Retired {
        id: NodeId,
    },
    Slot {
        queue: String,
        seq: Seq,
        slot: Slot,
    },
    Policy {
        queue: String,
        policy: QueuePolicy,
    },
    Cursor {
        queue: String,
        group: String,
        seq: Seq,
    },
    Counters {
        queue: String,
        counters: WorkCounters,
    },
}

/// What one apply did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// One per entry, in order.
    pub replies: Vec<Response>,
    /// The storage changes, in order: write them in one batch.
    pub writes: Vec<Write>,
    /// What the maze commands of this apply did to their lines, summed.
    pub stats: LinesStats,
}

/// The replicated state: everything but event bodies and stamps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Core {
    queues: QueueState,
    maze: MazeState,
    /// Nodes an operator removed (see `Op::RetireNode`).
    retired: BTreeSet<NodeId>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl Core {
    pub fn queues(&self) -> &QueueState {
        &self.queues
    }

    pub fn maze(&self) -> &MazeState {
        &self.maze
    }

    pub fn retired(&self) -> &BTreeSet<NodeId> {
        &self.retired
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }

    pub fn membership(&self) -> &StoredMembership {
        &self.membership
    }

    /// Rebuilds a core from its stored records, in any order.
    pub fn restore(records: impl IntoIterator<Item = Record>) -> Result<Core, RestoreError> {
        let mut core = Core::default();
        for record in records {
            core.restore_record(record)?;
        }
        Ok(core)
    }

    /// Restores one stored record (records may come in any order).
    pub fn restore_record(&mut self, record: Record) -> Result<(), RestoreError> {
        match record {
            Record::Applied(applied) => self.last_applied = applied,
            Record::Membership(membership) => self.membership = membership,
            Record::ClusterUuid => {}
            Record::Queue { name, meta } => self.queues.restore_queue(name, meta),
            Record::Sequence { name, next } => self.queues.restore_sequence(name, next),
            Record::Idem { key, entry } => self.queues.restore_idem(key, entry),
            Record::MazeCursor { epoch, next } => self.maze.restore_cursor(epoch, next),
            Record::MazePending { seq, line } => self
                .maze
                .restore_pending(seq, line)
                .map_err(|e| RestoreError(format!("stored maze line: {e}")))?,
            Record::Follow { followed, follower } => self.maze.restore_follow(followed, follower),
            Record::Retired { id } => {
                self.retired.insert(id);
            }
            Record::Slot { queue, seq, slot } => self.queues.restore_slot(queue, seq, slot),
            Record::Policy { queue, policy } => self.queues.restore_policy(queue, policy),
            Record::Cursor { queue, group, seq } => self.queues.restore_cursor(queue, group, seq),
            Record::Counters { queue, counters } => self.queues.restore_counters(queue, counters),
        }
        Ok(())
    }

    /// Applies committed `entries` in order. Maze notifications go to
    /// `notifier` as they are made; the caller finishes it once the writes
    /// are stored. On an error the core may hold part of the batch: the
    /// caller must stop (openraft treats a failed apply as fatal).
    pub fn apply<'e, S>(
        &mut self,
        entries: impl IntoIterator<Item = &'e Entry>,
        stored: &S,
        notifier: &mut dyn Notifier,
    ) -> Result<Applied, ApplyError<S::Error>>
    where
        S: Stored,
    {
        let mut batch = Batch::new(stored);
        let mut replies = Vec::new();
        let mut membership_changed = false;
        for entry in entries {
            let mut response = Response::default();
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    membership_changed = true;
                }
                EntryPayload::Normal(request) => {
                    for op in &request.ops {
                        let reply = self.apply_op(op, request, &mut batch, notifier)?;
                        response.replies.push(reply);
                    }
                }
            }
            self.last_applied = Some(entry.log_id);
            replies.push(response);
        }
        let Batch { mut writes, maze, stats, .. } = batch;
        maze.write(&mut writes);
        writes.push(Write::Applied(self.last_applied));
        if membership_changed {
            writes.push(Write::Membership(self.membership.clone()));
        }
        Ok(Applied { replies, writes, stats })
    }

    fn apply_op<S: Stored>(
        &mut self,
        op: &Op,
        request: &Request,
        batch: &mut Batch<'_, S>,
        notifier: &mut dyn Notifier,
    ) -> Result<Reply, ApplyError<S::Error>> {
        match op {
            Op::RetireNode { id } => {
                self.retired.insert(*id);
                batch.writes.push(Write::Retired { id: *id });
                Ok(Reply::Retired)
            }
            Op::Maze(command) => {
                let mut effects = Vec::new();
                let (audience, sink) = notifier.parts();
                let outcome = self.maze.apply_for(
                    command,
                    &request.maze_limits,
                    audience,
                    &mut effects,
                    sink,
                );
                if let MazeOutcome::Lines(stats) | MazeOutcome::Skipped(stats) = &outcome {
                    batch.stats.add(stats);
                }
                for effect in effects {
                    batch.maze.add(effect);
                }
                Ok(Reply::Maze(outcome))
            }
            Op::Queue(command) => {
                let mut effects = Vec::new();
                let outcome =
                    self.queues.apply_at(command, &request.limits, request.time_ms, &mut effects);
                // Bodies are read before this command's writes land in the
                // overlay: a dead-lettered event's body, like a dequeued one,
                // is whatever earlier commands stored.
                let reply = batch.reply(outcome)?;
                for effect in effects {
                    let effect = match effect {
                        Effect::DeadLetter { queue, seq, deliveries, to, to_seq } => {
                            let event = batch.body(&queue, seq)?;
                            let body = dead_letter_body(&queue, seq, deliveries, &event);
                            Effect::PutEvent { queue: to, seq: to_seq, event: body }
                        }
                        other => other,
                    };
                    if let Effect::PutEvent { queue, seq, event } = &effect {
                        let oldest = self.queues.queue(queue).map_or(1, |m| m.oldest);
                        batch.stamp(queue, *seq, oldest, request.time_ms, event.len())?;
                    }
                    batch.effect(effect);
                }
                Ok(reply)
            }
        }
    }
}

/// The scratch of one apply: its writes so far, and the bodies and stamps
/// among them that later commands of the batch may read back.
struct Batch<'s, S> {
    stored: &'s S,
    writes: Vec<Write>,
    bodies: BTreeMap<(String, Seq), String>,
    stamps: BTreeMap<(String, Seq), EventStamp>,
    maze: MazeWrites,
    stats: LinesStats,
}

impl<'s, S: Stored> Batch<'s, S> {
    fn new(stored: &'s S) -> Self {
        Batch {
            stored,
            writes: Vec::new(),
            bodies: BTreeMap::new(),
            stamps: BTreeMap::new(),
            maze: MazeWrites::default(),
            stats: LinesStats::default(),
        }
    }

    /// The client's answer to a queue command; a dequeue's carries the body.
    fn reply(&self, outcome: Outcome) -> Result<Reply, ApplyError<S::Error>> {
        Ok(match outcome {
            Outcome::Enqueued { seq, duplicate } => Reply::Enqueued { seq, duplicate },
            Outcome::Dequeued { queue, seq } => {
                Reply::Dequeued { seq, event: self.body(&queue, seq)? }
            }
            Outcome::Leased(leased) => Reply::Leased(
                leased
                    .into_iter()
                    .map(|l| {
                        let event = self.body(&l.queue, l.seq)?;
                        Ok(LeasedReply {
                            seq: l.seq,
                            token: l.token,
                            deliveries: l.deliveries,
                            event,
                        })
                    })
                    .collect::<Result<_, ApplyError<S::Error>>>()?,
            ),
            Outcome::Acked => Reply::Acked,
            Outcome::LeaseLost => Reply::LeaseLost,
            Outcome::Nacked { dead_lettered } => Reply::Nacked { dead_lettered },
            Outcome::Extended { until_ms } => Reply::Extended { until_ms },
            Outcome::BatchEnqueued { first, last, duplicate } => {
                Reply::BatchEnqueued { first, last, duplicate }
            }
            Outcome::PolicySet => Reply::PolicySet,
            Outcome::CursorSet { seq } => Reply::CursorSet { seq },
            Outcome::CursorConflict { current } => Reply::CursorConflict { current },
            Outcome::Swept { expired, dead_lettered } => Reply::Swept { expired, dead_lettered },
            Outcome::Empty => Reply::Empty,
            Outcome::Conflict { front } => Reply::Conflict { front },
            Outcome::Allocated { first, last } => Reply::Allocated { first, last },
            Outcome::Rejected(r) => Reply::Rejected(r),
            Outcome::Compacted { oldest, dropped } => Reply::Compacted { oldest, dropped },
        })
    }

    /// The body of `queue`'s event `seq`: written earlier in this batch,
    /// or stored. A body the state says exists but storage lacks is
    /// corruption.
    fn body(&self, queue: &str, seq: Seq) -> Result<String, ApplyError<S::Error>> {
        let body = match self.bodies.get(&(queue.to_owned(), seq)) {
            Some(body) => Some(body.clone()),
            None => self.stored.body(queue, seq).map_err(ApplyError::Stored)?,
        };
        body.ok_or_else(|| ApplyError::Corrupt(format!("event {queue}/{seq} has no body")))
    }

    /// Stamps `queue`'s new event `seq` (`len` body bytes, proposed at
    /// `time_ms`). The predecessor counts only while the queue still
    /// retains it (`oldest <= seq - 1`): that is replicated state, whereas
    /// whether storage still has it depends on how this node happened to
    /// batch its applies.
    fn stamp(
        &mut self,
        queue: &str,
        seq: Seq,
        oldest: Seq,
        time_ms: u64,
        len: usize,
    ) -> Result<(), ApplyError<S::Error>> {
        let prev = match seq.checked_sub(1).filter(|&p| p >= oldest && p >= 1) {
            Some(p) => match self.stamps.get(&(queue.to_owned(), p)) {
                Some(stamp) => Some(*stamp),
                None => self.stored.stamp(queue, p).map_err(ApplyError::Stored)?,
            },
            None => None,
        };
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        let stamp = EventStamp::next(prev, time_ms, len);
        self.stamps.insert((queue.to_owned(), seq), stamp);
        self.writes.push(Write::Stamp { queue: queue.to_owned(), seq, stamp });
        Ok(())
    }

    fn effect(&mut self, effect: Effect) {
        let write = match effect {
            Effect::PutEvent { queue, seq, event } => {
                self.bodies.insert((queue.clone(), seq), event.clone());
                Write::Event { queue, seq, body: event }
            }
            Effect::DeleteEvents { queue, from, to } => {
                if from >= to {
                    return;
                }
                let range = (queue.clone(), from)..(queue.clone(), to);
                forget(&mut self.bodies, range.clone());
                forget(&mut self.stamps, range);
                Write::DeleteEvents { queue, from, to }
            }
            Effect::PutQueue { queue, meta } => Write::Queue { queue, meta },
            Effect::PutIdem { key, entry } => Write::Idem { key, entry },
            Effect::DelIdem { queue, key, .. } => Write::DelIdem { queue, key },
            Effect::PutSequence { name, next } => Write::Sequence { name, next },
            Effect::PutSlot { queue, seq, slot } => Write::Slot { queue, seq, slot },
            Effect::DeleteSlots { queue, from, to } => Write::DeleteSlots { queue, from, to },
            Effect::PutPolicy { queue, policy } => Write::Policy { queue, policy },
            Effect::PutCursor { queue, group, seq } => Write::Cursor { queue, group, seq },
            Effect::PutCounters { queue, counters } => Write::Counters { queue, counters },
            // Turned into a `PutEvent` by `apply_op`, which has the body.
            Effect::DeadLetter { .. } => return,
        };
        self.writes.push(write);
    }
}

/// The body of a dead-lettered event in its dead-letter queue (SPEC §5).
fn dead_letter_body(queue: &str, seq: Seq, deliveries: u32, event: &str) -> String {
    serde_json::json!({ "queue": queue, "seq": seq, "deliveries": deliveries, "event": event })
        .to_string()
}

/// Drops the overlay entries in `range`.
fn forget<V>(map: &mut BTreeMap<(String, Seq), V>, range: std::ops::Range<(String, Seq)>) {
    let doomed: Vec<_> = map.range(range).map(|(k, _)| k.clone()).collect();
    for key in doomed {
        map.remove(&key);
    }
}

/// The maze's storage changes within one apply, coalesced: a line
/// buffered and delivered in the same batch never touches storage (neither
/// its put nor its delete).
#[derive(Default)]
struct MazeWrites {
    cleared: bool,
    pending: BTreeMap<u64, Option<String>>,
    follows: BTreeMap<(u64, u64), bool>,
    cursor: Option<(u64, u64)>,
}

impl MazeWrites {
    fn add(&mut self, effect: MazeEffect) {
        match effect {
            MazeEffect::ClearAll => {
                self.cleared = true;
                self.pending.clear();
                self.follows.clear();
            }
            MazeEffect::PutCursor { epoch, next } => self.cursor = Some((epoch, next)),
            MazeEffect::PutPending { seq, line } => {
                self.pending.insert(seq, Some(line));
            }
            MazeEffect::DelPending { seq } => {
                // Buffered by an earlier entry of this batch: storage never
                // held it (a seq is buffered once per stream, and a new
                // stream's `ClearMaze` is written first), so nothing is left
                // to write. (Within one entry the maze core already stores
                // only the lines that outlive it.)
                if let Some(Some(_)) = self.pending.get(&seq) {
                    self.pending.remove(&seq);
                } else {
                    self.pending.insert(seq, None);
                }
            }
            MazeEffect::PutFollow { followed, follower } => {
                self.follows.insert((followed, follower), true);
            }
            MazeEffect::DelFollow { followed, follower } => {
                self.follows.insert((followed, follower), false);
            }
        }
    }

    fn write(self, writes: &mut Vec<Write>) {
        if self.cleared {
            writes.push(Write::ClearMaze);
        }
        for (seq, line) in self.pending {
            writes.push(Write::MazePending { seq, line });
        }
        for ((followed, follower), present) in self.follows {
            writes.push(Write::Follow { followed, follower, present });
        }
        if let Some((epoch, next)) = self.cursor {
            writes.push(Write::MazeCursor { epoch, next });
        }
    }
}
