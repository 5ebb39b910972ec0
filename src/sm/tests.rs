//! The core against a model, its writes against its restore, and its
//! determinism. Storage is an in-memory key/value map that takes the
//! writes through `raft::keys`, exactly as RocksDB gets them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::sm::{EntryPayload, LeaderId, Membership};
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::maze::{MazeCommand, MazeLimits, MazeState, Notification};
use crate::queue::{Command, EventStamp, Limits, Rejection, Seq};
use crate::raft::db::StoreError;
use crate::raft::keys::{self, KvBatch, SmCf};
use crate::raft::types::Entry;

/// RocksDB's part, in memory: (family, key) -> value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct MemKv(BTreeMap<(SmCf, Vec<u8>), Vec<u8>>);

impl KvBatch for MemKv {
    fn put(&mut self, cf: SmCf, key: &[u8], value: &[u8]) {
        self.0.insert((cf, key.to_vec()), value.to_vec());
    }

    fn delete(&mut self, cf: SmCf, key: &[u8]) {
        self.0.remove(&(cf, key.to_vec()));
    }

    fn delete_range(&mut self, cf: SmCf, from: &[u8], to: &[u8]) {
        let doomed: Vec<_> =
            self.0.range((cf, from.to_vec())..(cf, to.to_vec())).map(|(k, _)| k.clone()).collect();
        for key in doomed {
            self.0.remove(&key);
        }
    }
}

impl Stored for MemKv {
    type Error = StoreError;

    fn body(&self, queue: &str, seq: Seq) -> Result<Option<String>, StoreError> {
        let value = self.0.get(&(SmCf::Events, keys::event_key(queue, seq)));
        value.map(|v| keys::decode_body(seq, v.clone())).transpose()
    }

    fn stamp(&self, queue: &str, seq: Seq) -> Result<Option<EventStamp>, StoreError> {
        let value = self.0.get(&(SmCf::Stamps, keys::event_key(queue, seq)));
        value.map(|v| keys::decode_stamp(queue, seq, v)).transpose()
    }
}

impl MemKv {
    /// The core rebuilt from the `sm` family, as `load_state` does.
    fn restore(&self) -> Core {
        let records = self
            .0
            .iter()
            .filter(|((cf, _), _)| *cf == SmCf::Sm)
            .map(|((_, key), value)| keys::decode_state(key, value).expect("decodes"));
        Core::restore(records).expect("restores")
    }
}

const LIMITS: Limits = Limits {
    retention_events: 2,
    queue_events_max: 1000,
    idempotency_keys_max: 3,
    queues_max: 1000,
    ..Limits::DEFAULT
};
const MAZE_LIMITS: MazeLimits =
    MazeLimits { pending_max: 4, line_bytes_max: 64, follow_edges_max: 1000 };

fn entry(index: u64, ops: Vec<Op>) -> Entry {
    Entry {
        log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, index),
        payload: EntryPayload::Normal(Request {
            limits: LIMITS,
            maze_limits: MAZE_LIMITS,
            ops,
            time_ms: 1000 + index,
        }),
    }
}

/// Applies `entries` and stores the writes; returns the replies.
fn apply(
    core: &mut Core,
    kv: &mut MemKv,
    entries: &[Entry],
    notes: &mut Vec<Notification>,
) -> Applied {
    let applied = core.apply(entries, &*kv, notes).expect("applies");
    keys::encode(&applied.writes, kv).expect("encodes");
    applied
}

// -------------------------------------------------------------------------
// Unit tests
// -------------------------------------------------------------------------

fn enqueue(queue: &str, event: &str, key: Option<&str>) -> Op {
    Op::Queue(Command::Enqueue {
        queue: queue.into(),
        event: event.into(),
        idempotency_key: key.map(Into::into),
    })
}

fn dequeue(queue: &str, expect_seq: Option<Seq>) -> Op {
    Op::Queue(Command::Dequeue { queue: queue.into(), expect_seq })
}

#[test]
fn a_dequeue_answers_the_body_written_earlier_in_the_same_apply() {
    let (mut core, mut kv) = (Core::default(), MemKv::default());
    let e = [entry(1, vec![enqueue("q", "a", None), dequeue("q", None)])];
    let applied = apply(&mut core, &mut kv, &e, &mut Vec::new());
    assert_eq!(
        applied.replies[0].replies,
        vec![
            Reply::Enqueued { seq: 1, duplicate: false },
            Reply::Dequeued { seq: 1, event: "a".into() }
        ]
    );
    // And from storage in a later apply.
    let e = [entry(2, vec![enqueue("q", "b", None)]), entry(3, vec![dequeue("q", Some(2))])];
    let applied = apply(&mut core, &mut kv, &e, &mut Vec::new());
    assert_eq!(applied.replies[1].replies, vec![Reply::Dequeued { seq: 2, event: "b".into() }]);
    assert_eq!(core.last_applied().map(|l| l.index), Some(3));
    assert_eq!(applied.writes.last(), Some(&Write::Applied(core.last_applied())));
}

#[test]
fn a_dequeue_without_a_stored_body_is_corruption_not_a_panic() {
    let (mut core, mut kv) = (Core::default(), MemKv::default());
    apply(&mut core, &mut kv, &[entry(1, vec![enqueue("q", "a", None)])], &mut Vec::new());
    kv.0.retain(|(cf, _), _| *cf != SmCf::Events);
    let err = core.apply(&[entry(2, vec![dequeue("q", None)])], &kv, &mut Vec::new());
    assert!(matches!(err, Err(ApplyError::Corrupt(what)) if what.contains("q/1")));
}

#[test]
fn stamps_chain_only_while_the_predecessor_is_retained() {
    let (mut core, mut kv) = (Core::default(), MemKv::default());
    let stamp = |kv: &MemKv, seq| kv.stamp("q", seq).unwrap().expect("stamped");
    apply(&mut core, &mut kv, &[entry(1, vec![enqueue("q", "abc", None)])], &mut Vec::new());
    apply(&mut core, &mut kv, &[entry(2, vec![enqueue("q", "de", None)])], &mut Vec::new());
    assert_eq!(stamp(&kv, 2), EventStamp::next(Some(stamp(&kv, 1)), 1002, 2));
    // Dequeue 1, 2 and compact them away: seq 3 starts a new chain.
    let e = [entry(
        3,
        vec![
            dequeue("q", None),
            dequeue("q", None),
            Op::Queue(Command::Compact { queue: "q".into(), upto: 3 }),
            enqueue("q", "f", None),
        ],
    )];
    let applied = apply(&mut core, &mut kv, &e, &mut Vec::new());
    assert_eq!(applied.replies[0].replies[2], Reply::Compacted { oldest: 3, dropped: 2 });
    assert_eq!(stamp(&kv, 3), EventStamp::next(None, 1003, 1));
}

#[test]
fn retirement_and_membership_are_written_and_restored() {
    let (mut core, mut kv) = (Core::default(), MemKv::default());
    let membership = Membership::new_with_defaults(vec![BTreeSet::from([1u64])], []);
    let e = [
        entry(1, vec![Op::RetireNode { id: 9 }]),
        Entry {
            log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, 2),
            payload: EntryPayload::Membership(membership),
        },
        Entry {
            log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, 3),
            payload: EntryPayload::Blank,
        },
    ];
    let applied = apply(&mut core, &mut kv, &e, &mut Vec::new());
    assert_eq!(applied.replies[0].replies, vec![Reply::Retired]);
    assert!(applied.replies[1].replies.is_empty() && applied.replies[2].replies.is_empty());
    assert_eq!(core.retired(), &BTreeSet::from([9]));
    assert_eq!(core.membership().log_id().map(|l| l.index), Some(2));
    assert!(matches!(applied.writes.last(), Some(Write::Membership(_))));
    assert_eq!(kv.restore(), core);
}

/// A maze `Lines` command of stream epoch 1.
fn lines(lines: &[&str]) -> Op {
    Op::Maze(MazeCommand::Lines { epoch: 1, lines: lines.iter().map(|l| l.to_string()).collect() })
}

#[test]
fn a_maze_line_buffered_and_delivered_in_one_apply_is_never_stored() {
    let (mut core, mut kv) = (Core::default(), MemKv::default());
    let e = [entry(1, vec![Op::Maze(MazeCommand::Reset), lines(&["2|F|1|2\n", "1|B\n"])])];
    let mut notes = Vec::new();
    let applied = apply(&mut core, &mut kv, &e, &mut notes);
    assert_eq!(notes.len(), 2);
    assert_eq!((applied.stats.accepted, applied.stats.delivered), (2, 2));
    // Buffered then delivered: neither a put nor a delete of its key.
    assert!(!applied.writes.iter().any(|w| matches!(w, Write::MazePending { .. })));
    assert!(applied.writes.contains(&Write::Follow { followed: 2, follower: 1, present: true }));
    assert!(applied.writes.contains(&Write::MazeCursor { epoch: 1, next: 3 }));
    assert_eq!(kv.restore(), core);
}

/// Within one entry the maze core stores nothing it delivers; across the
/// entries of one batch the state machine cancels the put of a line one
/// entry buffered against the delete of the next entry's delivery.
#[test]
fn a_maze_line_buffered_and_delivered_by_two_entries_of_one_batch_is_never_stored() {
    let (mut core, mut kv) = (Core::default(), MemKv::default());
    let e = [
        entry(1, vec![Op::Maze(MazeCommand::Reset), lines(&["2|F|1|2\n"])]),
        entry(2, vec![lines(&["1|B\n"])]),
    ];
    let mut notes = Vec::new();
    let applied = apply(&mut core, &mut kv, &e, &mut notes);
    assert_eq!(notes.len(), 2);
    assert_eq!((applied.stats.accepted, applied.stats.delivered), (2, 2));
    assert!(!applied.writes.iter().any(|w| matches!(w, Write::MazePending { .. })));
    assert!(applied.writes.contains(&Write::MazeCursor { epoch: 1, next: 3 }));
    assert_eq!(kv.restore(), core);
}

#[test]
fn a_maze_line_buffered_across_applies_is_stored_then_deleted() {
    let (mut core, mut kv) = (Core::default(), MemKv::default());
    let first = [entry(1, vec![Op::Maze(MazeCommand::Reset), lines(&["2|F|1|2\n"])])];
    let applied = apply(&mut core, &mut kv, &first, &mut Vec::new());
    assert!(applied
        .writes
        .contains(&Write::MazePending { seq: 2, line: Some("2|F|1|2\n".to_string()) }));
    assert_eq!(kv.restore(), core);
    // Seq 1 arrives and is delivered with 2 in one apply: 1 never touches
    // storage, 2 (stored by the first apply) is deleted.
    let second = [entry(2, vec![lines(&["1|B\n"])])];
    let mut notes = Vec::new();
    let applied = apply(&mut core, &mut kv, &second, &mut notes);
    assert_eq!(notes.len(), 2);
    let pending: Vec<_> =
        applied.writes.iter().filter(|w| matches!(w, Write::MazePending { .. })).collect();
    assert_eq!(pending, [&Write::MazePending { seq: 2, line: None }]);
    assert_eq!(kv.restore(), core);
}

#[test]
fn nobody_gets_nothing_but_the_state_is_the_same() {
    let e = [entry(
        1,
        vec![
            Op::Maze(MazeCommand::Reset),
            Op::Maze(MazeCommand::Lines { epoch: 1, lines: vec!["1|B\n".into()] }),
        ],
    )];
    let (mut a, mut b) = (Core::default(), Core::default());
    let kv = MemKv::default();
    let with = a.apply(&e, &kv, &mut Vec::new()).unwrap();
    let without = b.apply(&e, &kv, &mut Nobody::default()).unwrap();
    assert_eq!((with, a), (without, b));
}

#[test]
fn dump_is_ordered_and_complete() {
    let (mut core, mut kv) = (Core::default(), MemKv::default());
    let e = [entry(
        1,
        vec![
            enqueue("b", "x", Some("k")),
            enqueue("a", "y", None),
            Op::Queue(Command::AllocSeq { name: "ids".into(), count: 5 }),
            Op::RetireNode { id: 4 },
            Op::Maze(MazeCommand::Reset),
            Op::Maze(MazeCommand::Lines { epoch: 1, lines: vec!["3|F|7|8\n".into()] }),
        ],
    )];
    apply(&mut core, &mut kv, &e, &mut Vec::new());
    let dump = core.dump();
    assert_eq!(dump.queues.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(dump.queues["b"].pending, 1);
    assert_eq!(dump.sequences["ids"], 6);
    assert_eq!(dump.idempotency.len(), 1);
    assert_eq!((dump.idempotency[0].queue.as_str(), dump.idempotency[0].seq), ("b", 1));
    assert_eq!(dump.retired, vec![4]);
    assert_eq!(dump.maze.pending.get(&3).map(String::as_str), Some("3|F|7|8\n"));
    let json = serde_json::to_value(&dump).unwrap();
    assert_eq!(json["queues"]["b"]["next"], 2);
    assert_eq!(dump, kv.restore().dump());
}

// -------------------------------------------------------------------------
// Against a model
// -------------------------------------------------------------------------

/// A queue as a list: the obviously right answer, slowly.
#[derive(Debug, Default)]
struct ModelQueue {
    oldest: Seq,
    front: Seq,
    /// Every retained or pending event, oldest first.
    events: VecDeque<(Seq, String)>,
    next: Seq,
}

#[derive(Debug, Default)]
struct Model {
    queues: BTreeMap<String, ModelQueue>,
    sequences: BTreeMap<String, u64>,
    /// (queue, key, seq), oldest first.
    idem: VecDeque<(String, String, Seq)>,
    maze: MazeState,
}

impl Model {
    fn apply(&mut self, op: &Op, notes: &mut Vec<Notification>) -> Reply {
        let command = match op {
            Op::RetireNode { .. } => return Reply::Retired,
            Op::Maze(command) => {
                let outcome = self.maze.apply(command, &MAZE_LIMITS, &mut Vec::new(), notes);
                return Reply::Maze(outcome);
            }
            Op::Queue(command) => command,
        };
        match command {
            Command::Enqueue { queue, event, idempotency_key } => {
                if let Some(key) = idempotency_key {
                    if let Some((_, _, seq)) =
                        self.idem.iter().find(|(q, k, _)| q == queue && k == key)
                    {
                        return Reply::Enqueued { seq: *seq, duplicate: true };
                    }
                }
                let q = self.queues.entry(queue.clone()).or_insert_with(|| ModelQueue {
                    oldest: 1,
                    front: 1,
                    next: 1,
                    ..Default::default()
                });
                let seq = q.next;
                q.next += 1;
                q.events.push_back((seq, event.clone()));
                if let Some(key) = idempotency_key {
                    self.idem.push_back((queue.clone(), key.clone(), seq));
                    while self.idem.len() as u64 > LIMITS.idempotency_keys_max {
                        self.idem.pop_front();
                    }
                }
                Reply::Enqueued { seq, duplicate: false }
            }
            Command::Dequeue { queue, expect_seq } => {
                let Some(q) = self.queues.get_mut(queue).filter(|q| q.front < q.next) else {
                    return match expect_seq {
                        Some(_) => Reply::Conflict { front: None },
                        None => Reply::Empty,
                    };
                };
                if expect_seq.is_some_and(|s| s != q.front) {
                    return Reply::Conflict { front: Some(q.front) };
                }
                let seq = q.front;
                let event = q.events.iter().find(|(s, _)| *s == seq).expect("pending").1.clone();
                q.front += 1;
                while q.front - q.oldest > LIMITS.retention_events {
                    q.events.pop_front();
                    q.oldest += 1;
                }
                Reply::Dequeued { seq, event }
            }
            Command::AllocSeq { name, count } => {
                if *count == 0 {
                    return Reply::Rejected(Rejection::InvalidCount);
                }
                let first = self.sequences.get(name).copied().unwrap_or(1);
                self.sequences.insert(name.clone(), first + count);
                Reply::Allocated { first, last: first + count - 1 }
            }
            Command::Compact { queue, upto } => {
                let Some(q) = self.queues.get_mut(queue) else {
                    return Reply::Compacted { oldest: 1, dropped: 0 };
                };
                let upto = (*upto).clamp(q.oldest, q.front);
                let dropped = upto - q.oldest;
                while q.oldest < upto {
                    q.events.pop_front();
                    q.oldest += 1;
                }
                Reply::Compacted { oldest: q.oldest, dropped }
            }
            // Work-queue commands have their own model (`tests/work.rs`).
            other => unreachable!("not generated: {other:?}"),
        }
    }
}

fn queue_name() -> impl Strategy<Value = String> {
    prop_oneof![Just("a".to_string()), Just("b".to_string())]
}

fn maze_line() -> impl Strategy<Value = String> {
    (1u64..10, 0usize..5, 1u64..4, 1u64..4).prop_map(|(seq, kind, from, to)| match kind {
        0 => format!("{seq}|F|{from}|{to}\n"),
        1 => format!("{seq}|U|{from}|{to}\n"),
        2 => format!("{seq}|B\n"),
        3 => format!("{seq}|P|{from}|{to}\n"),
        _ => format!("{seq}|S|{from}\n"),
    })
}

fn op() -> impl Strategy<Value = Op> {
    let key = prop_oneof![Just(None), (0..5u8).prop_map(|k| Some(format!("k{k}")))];
    prop_oneof![
        4 => (queue_name(), "[a-z]{0,4}", key).prop_map(|(queue, event, idempotency_key)| {
            Op::Queue(Command::Enqueue { queue, event, idempotency_key })
        }),
        3 => (queue_name(), prop::option::of(0u64..8)).prop_map(|(queue, expect_seq)| {
            Op::Queue(Command::Dequeue { queue, expect_seq })
        }),
        1 => (queue_name(), 0u64..4).prop_map(|(name, count)| {
            Op::Queue(Command::AllocSeq { name, count })
        }),
        1 => (queue_name(), 0u64..10).prop_map(|(queue, upto)| {
            Op::Queue(Command::Compact { queue, upto })
        }),
        1 => (0u64..3).prop_map(|id| Op::RetireNode { id }),
        1 => Just(Op::Maze(MazeCommand::Reset)),
        2 => (0u64..3, vec(maze_line(), 0..5)).prop_map(|(epoch, lines)| {
            Op::Maze(MazeCommand::Lines { epoch, lines })
        }),
        1 => (0u64..3, 1u64..10).prop_map(|(epoch, seq)| {
            Op::Maze(MazeCommand::Skip { epoch, seq })
        }),
    ]
}

/// Applies of entries of ops: `[apply][entry][op]`.
/// What one generated entry carries.
#[derive(Debug, Clone)]
enum Spec {
    Ops(Vec<Op>),
    /// A membership of these voters.
    Membership(BTreeSet<NodeId>),
    Blank,
}

/// Applies of entries: `[apply][entry]`.
fn applies() -> impl Strategy<Value = Vec<Vec<Spec>>> {
    let spec = prop_oneof![
        8 => vec(op(), 0..4).prop_map(Spec::Ops),
        1 => prop::collection::btree_set(1u64..4, 1..3).prop_map(Spec::Membership),
        1 => Just(Spec::Blank),
    ];
    vec(vec(spec, 1..4), 1..8)
}

/// Numbers the entries of `applies` from 1.
fn entries(applies: &[Vec<Spec>]) -> Vec<Vec<Entry>> {
    let mut index = 0;
    applies
        .iter()
        .map(|apply| {
            apply
                .iter()
                .map(|spec| {
                    index += 1;
                    let log_id = LogId::new(LeaderId { term: 1, node_id: 1 }, index);
                    match spec {
                        Spec::Ops(ops) => entry(index, ops.clone()),
                        Spec::Membership(voters) => Entry {
                            log_id,
                            payload: EntryPayload::Membership(Membership::new_with_defaults(
                                vec![voters.clone()],
                                [],
                            )),
                        },
                        Spec::Blank => Entry { log_id, payload: EntryPayload::Blank },
                    }
                })
                .collect()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Replies and notifications are the model's; after every apply, the
    /// core restored from what was stored equals the live one.
    #[test]
    fn the_core_answers_like_the_model_and_restores_from_its_writes(applies in applies()) {
        let (mut core, mut kv, mut model) = (Core::default(), MemKv::default(), Model::default());
        let mut membership_at = None;
        for batch in entries(&applies) {
            let mut notes = Vec::new();
            let applied = apply(&mut core, &mut kv, &batch, &mut notes);
            prop_assert_eq!(applied.replies.len(), batch.len());
            let mut expected_notes = Vec::new();
            for (entry, response) in batch.iter().zip(&applied.replies) {
                let expected: Vec<Reply> = match &entry.payload {
                    EntryPayload::Normal(request) => {
                        request.ops.iter().map(|op| model.apply(op, &mut expected_notes)).collect()
                    }
                    EntryPayload::Membership(_) => {
                        membership_at = Some(entry.log_id);
                        Vec::new()
                    }
                    EntryPayload::Blank => Vec::new(),
                };
                prop_assert_eq!(&response.replies, &expected);
            }
            prop_assert_eq!(notes, expected_notes);
            prop_assert_eq!(core.membership().log_id(), &membership_at);
            prop_assert_eq!(core.last_applied(), batch.last().map(|e| e.log_id));
            prop_assert_eq!(&kv.restore(), &core);
        }
    }

    /// The same entries give the same writes, byte for byte, and batching
    /// them differently gives the same stored state.
    #[test]
    fn applies_are_deterministic_and_independent_of_batching(applies in applies()) {
        let batches = entries(&applies);
        let run = |batches: &[Vec<Entry>]| {
            let (mut core, mut kv) = (Core::default(), MemKv::default());
            let mut writes = Vec::new();
            for batch in batches {
                writes.push(apply(&mut core, &mut kv, batch, &mut Vec::new()).writes);
            }
            (core, kv, writes)
        };
        let (core, kv, writes) = run(&batches);
        let (again, kv_again, writes_again) = run(&batches);
        prop_assert_eq!(&writes, &writes_again);
        prop_assert_eq!(&kv, &kv_again);
        prop_assert_eq!(&core, &again);
        let one_by_one: Vec<Vec<Entry>> = batches.concat().into_iter().map(|e| vec![e]).collect();
        let (single, kv_single, _) = run(&one_by_one);
        prop_assert_eq!(&kv, &kv_single);
        prop_assert_eq!(&core, &single);
    }
}

mod work;
