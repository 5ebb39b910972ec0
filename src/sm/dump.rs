//! [`Dump`]: the whole replicated state as one ordered, serialisable view,
//! for `raftq dump` and for tests that compare states.
//!
//! Every collection is sorted (maps by key, the idempotency window oldest
//! first), so two equal cores dump to the same bytes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::command::NodeId;
use super::core::Core;
use super::{LogId, StoredMembership};
use crate::queue::{lease_token, QueueMeta, QueuePolicy, Seq, Slot, SlotState, WorkStats};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dump {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Nodes an operator removed.
    pub retired: Vec<NodeId>,
    pub queues: BTreeMap<String, QueueDump>,
    /// Named sequences: the next id each hands out.
    pub sequences: BTreeMap<String, u64>,
    /// Remembered idempotency keys, oldest (first evicted) first.
    pub idempotency: Vec<IdemDump>,
    pub maze: MazeDump,
    /// Work-queue state per queue (leases with their tokens, delays,
    /// counters). Left out when empty, so a dump of a cluster that never
    /// leased reads as before.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub work: BTreeMap<String, WorkDump>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, QueuePolicy>,
    /// Queue -> consumer group -> cursor.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cursors: BTreeMap<String, BTreeMap<String, Seq>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkDump {
    #[serde(flatten)]
    pub stats: WorkStats,
    /// The slots of events above the front, by seq.
    pub slots: BTreeMap<Seq, SlotDump>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotDump {
    #[serde(flatten)]
    pub slot: Slot,
    /// The lease token, for a leased event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueDump {
    #[serde(flatten)]
    pub meta: QueueMeta,
    /// Pending (not yet dequeued) events.
    pub pending: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdemDump {
    pub ordinal: u64,
    pub queue: String,
    pub key: String,
    pub seq: Seq,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MazeDump {
    pub epoch: u64,
    /// The seq delivered next.
    pub next: u64,
    /// Lines buffered out of order, by seq (raw, line ending included).
    pub pending: BTreeMap<u64, String>,
    /// Followed user -> its followers, ascending.
    pub follows: BTreeMap<u64, Vec<u64>>,
}

impl Core {
    pub fn dump(&self) -> Dump {
        let queues = self
            .queues()
            .queues()
            .map(|(name, meta)| (name.to_owned(), QueueDump { meta: *meta, pending: meta.len() }))
            .collect();
        let idempotency = self
            .queues()
            .idempotency_window()
            .map(|(key, e)| IdemDump {
                ordinal: e.ordinal,
                queue: e.queue,
                key: key.to_owned(),
                seq: e.seq,
            })
            .collect();
        let state = self.queues();
        let work = state
            .work_queues()
            .map(|queue| {
                let slots = state
                    .slots(queue)
                    .map(|(seq, slot)| {
                        let token = match slot.state {
                            SlotState::Leased { nonce, .. } => {
                                Some(lease_token(nonce, seq, slot.deliveries))
                            }
                            _ => None,
                        };
                        (seq, SlotDump { slot: *slot, token })
                    })
                    .collect();
                (queue.to_owned(), WorkDump { stats: state.work_stats(queue), slots })
            })
            .collect();
        let mut cursors: BTreeMap<String, BTreeMap<String, Seq>> = BTreeMap::new();
        for (queue, group, seq) in state.cursors() {
            cursors.entry(queue.to_owned()).or_default().insert(group.to_owned(), seq);
        }
        let maze = self.maze();
        let mut follows: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (followed, follower) in maze.follow_edges() {
            follows.entry(followed).or_default().push(follower);
        }
        Dump {
            last_applied: self.last_applied(),
            membership: self.membership().clone(),
            retired: self.retired().iter().copied().collect(),
            queues,
            sequences: self.queues().sequences().map(|(n, next)| (n.to_owned(), next)).collect(),
            idempotency,
            maze: MazeDump {
                epoch: maze.epoch(),
                next: maze.next(),
                pending: maze.pending_lines().map(|(seq, line)| (seq, line.to_owned())).collect(),
                follows,
            },
            work,
            policies: state.policies().map(|(q, p)| (q.to_owned(), p.clone())).collect(),
            cursors,
        }
    }
}
