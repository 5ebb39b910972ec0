//! [`QueueState::apply`]: the one place where a committed [`Command`] turns into
//! an [`Outcome`] and the storage [`Effect`]s that make it durable.
//!
//! Everything here is ordered (`BTreeMap`, no hashing) and integer-only, so
//! every node that applies the same log emits the same effects byte for byte.
//! All checks run before the first mutation: a rejected or no-op command leaves
//! both the state and the effect list untouched, so there is never anything to
//! roll back half-way through a command.
//!
//! Storage is the source of truth across restarts and snapshot installs; the
//! `restore_*` methods rebuild a state that compares equal to the one that
//! emitted the effects. That is why nothing lives here that no effect persists:
//! in particular the next idempotency ordinal is derived from the window
//! (`max + 1`) instead of being a counter, because a counter would keep running
//! after the newest entries were evicted (e.g. with `idempotency_keys_max` 0)
//! and a restored node would then number new keys differently from its peers.
//!
//! Arithmetic never panics on any command or limit value: ranges that cannot
//! be represented in a `u64` are refused like any other over-limit request.

use std::collections::BTreeMap;

use super::{
    Command, Effect, IdemEntry, Limits, Outcome, QueueMeta, QueuePolicy, Rejection, Seq, Slot,
    WorkCounters,
};

/// The replicated metadata: per-queue pointers, named sequences and the
/// idempotency window. See the module docs of `queue` for the invariants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueState {
    pub(super) queues: BTreeMap<String, QueueMeta>,
    /// Next id per named sequence; absent means 1.
    sequences: BTreeMap<String, u64>,
    /// Queue, then key: lookups by `&str` without allocating, and a key only
    /// means something within the queue it was posted to. Inner maps are
    /// removed when they empty so that equality does not depend on history.
    idem: BTreeMap<String, BTreeMap<String, IdemSlot>>,
    /// The same entries by ordinal, oldest first: the eviction order.
    idem_order: BTreeMap<u64, (String, String)>,
    /// Per queue, the availability of events above its front that are not
    /// plain pending (see `work`). Inner maps are removed when they empty.
    pub(super) slots: BTreeMap<String, BTreeMap<Seq, Slot>>,
    /// Per queue, the work totals; absent means all zero.
    pub(super) counters: BTreeMap<String, WorkCounters>,
    pub(super) policies: BTreeMap<String, QueuePolicy>,
    /// Queue, then consumer group: its cursor. Inner maps are never empty.
    pub(super) cursors: BTreeMap<String, BTreeMap<String, Seq>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IdemSlot {
    seq: Seq,
    ordinal: u64,
}

impl QueueState {
    pub fn new() -> Self {
        Self::default()
    }

    /// [`apply_at`](Self::apply_at) at time 0: for commands that do not
    /// look at the time (every command but the work-queue ones).
    pub fn apply(&mut self, cmd: &Command, limits: &Limits, effects: &mut Vec<Effect>) -> Outcome {
        self.apply_at(cmd, limits, 0, effects)
    }

    /// Apply one command at `now_ms` (the entry's time, never a local
    /// clock); push storage effects (in order) into `effects`; return the
    /// outcome.
    pub fn apply_at(
        &mut self,
        cmd: &Command,
        limits: &Limits,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        match cmd {
            Command::Enqueue { queue, event, idempotency_key } => {
                self.enqueue(queue, event, idempotency_key.as_deref(), limits, effects)
            }
            Command::Dequeue { queue, expect_seq } => {
                self.dequeue(queue, *expect_seq, now_ms, limits, effects)
            }
            Command::AllocSeq { name, count } => self.alloc_seq(name, *count, limits, effects),
            Command::Compact { queue, upto } => self.compact(queue, *upto, effects),
            Command::Lease { queue, max, ttl_ms, nonce } => {
                self.lease(queue, *max, *ttl_ms, *nonce, now_ms, limits, effects)
            }
            Command::Ack { queue, seq, token } => self.ack(queue, *seq, token, limits, effects),
            Command::Nack { queue, seq, token, delay_ms } => {
                self.nack(queue, *seq, token, *delay_ms, now_ms, limits, effects)
            }
            Command::Extend { queue, seq, token, ttl_ms } => {
                self.extend(queue, *seq, token, *ttl_ms, now_ms, effects)
            }
            Command::EnqueueBatch { queue, events, idempotency_key, delay_ms } => self
                .enqueue_batch(
                    queue,
                    events,
                    idempotency_key.as_deref(),
                    *delay_ms,
                    now_ms,
                    limits,
                    effects,
                ),
            Command::SetPolicy { queue, policy } => self.set_policy(queue, policy, limits, effects),
            Command::SetCursor { queue, group, seq, if_seq } => {
                self.set_cursor(queue, group, *seq, *if_seq, limits, effects)
            }
            Command::Sweep { queue, max } => {
                self.sweep(queue.as_deref(), *max, now_ms, limits, effects)
            }
        }
    }

    pub fn queue(&self, name: &str) -> Option<&QueueMeta> {
        self.queues.get(name)
    }

    /// All queues, by name.
    pub fn queues(&self) -> impl Iterator<Item = (&str, &QueueMeta)> {
        self.queues.iter().map(|(name, meta)| (name.as_str(), meta))
    }

    /// Next id of a named sequence (1 if never used).
    pub fn sequence_next(&self, name: &str) -> u64 {
        self.sequences.get(name).copied().unwrap_or(1)
    }

    /// All named sequences that were ever allocated from, by name.
    pub fn sequences(&self) -> impl Iterator<Item = (&str, u64)> {
        self.sequences.iter().map(|(name, next)| (name.as_str(), *next))
    }

    /// Number of idempotency keys remembered, over all queues.
    pub fn idempotency_len(&self) -> usize {
        self.idem_order.len()
    }

    /// Look up an idempotency key of a queue.
    pub fn idempotent_seq(&self, queue: &str, key: &str) -> Option<Seq> {
        self.idem.get(queue)?.get(key).map(|slot| slot.seq)
    }

    /// The idempotency window, oldest first: (key, entry) in eviction order.
    pub fn idempotency_window(&self) -> impl Iterator<Item = (&str, IdemEntry)> + '_ {
        self.idem_order.iter().filter_map(|(&ordinal, (queue, key))| {
            let slot = self.idem.get(queue)?.get(key)?;
            let entry = IdemEntry { queue: queue.clone(), seq: slot.seq, ordinal };
            Some((key.as_str(), entry))
        })
    }

    /// Rebuild from storage: one queue's pointers.
    pub fn restore_queue(&mut self, name: String, meta: QueueMeta) {
        self.queues.insert(name, meta);
    }

    /// Rebuild from storage: one named sequence.
    pub fn restore_sequence(&mut self, name: String, next: u64) {
        self.sequences.insert(name, next);
    }

    /// Rebuild from storage: one idempotency entry, in any order. The next
    /// ordinal follows from the largest one restored.
    pub fn restore_idem(&mut self, key: String, entry: IdemEntry) {
        let IdemEntry { queue, seq, ordinal } = entry;
        // Storage maps (queue, key) and ordinal one-to-one. Should it ever not,
        // the later entry wins rather than leaving two indexes that disagree.
        if let Some(old) = self.idem.get(&queue).and_then(|keys| keys.get(&key)) {
            self.idem_order.remove(&old.ordinal);
        }
        if let Some((old_queue, old_key)) = self.idem_order.remove(&ordinal) {
            self.unlink_idem(&old_queue, &old_key);
        }
        self.idem.entry(queue.clone()).or_default().insert(key.clone(), IdemSlot { seq, ordinal });
        self.idem_order.insert(ordinal, (queue, key));
    }

    fn enqueue(
        &mut self,
        queue: &str,
        event: &str,
        key: Option<&str>,
        limits: &Limits,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        // A retry must get its original answer even if the queue has filled
        // up or the limits have shrunk since.
        if let Some(seq) = key.and_then(|key| self.idempotent_seq(queue, key)) {
            return Outcome::Enqueued { seq, duplicate: true };
        }
        let meta = match self.meta_or_new(queue, limits) {
            Ok(meta) => meta,
            Err(rejected) => return rejected,
        };
        let full = Outcome::Rejected(Rejection::QueueFull { max: limits.queue_events_max });
        if pending(&meta) >= limits.queue_events_max {
            return full;
        }
        // Seq u64::MAX would leave `next` unrepresentable; it takes 2^64
        // enqueues to get here, so calling the queue full is honest enough.
        let Some(next) = meta.next.checked_add(1) else {
            return full;
        };
        let seq = meta.next;
        let meta = QueueMeta { next, ..meta };
        debug_assert_meta(&meta);

        effects.push(Effect::PutEvent { queue: queue.to_owned(), seq, event: event.to_owned() });
        if let Some(key) = key {
            self.remember_idem(queue, key, seq, limits, effects);
        }
        self.queues.insert(queue.to_owned(), meta);
        effects.push(Effect::PutQueue { queue: queue.to_owned(), meta });
        Outcome::Enqueued { seq, duplicate: false }
    }

    /// The pointers of `queue`, or of a new queue if one may be created.
    pub(super) fn meta_or_new(&self, queue: &str, limits: &Limits) -> Result<QueueMeta, Outcome> {
        match self.queues.get(queue) {
            Some(meta) => Ok(*meta),
            None if count_u64(self.queues.len()) >= limits.queues_max => {
                Err(Outcome::Rejected(Rejection::TooManyQueues { max: limits.queues_max }))
            }
            None => Ok(QueueMeta::NEW),
        }
    }

    pub(super) fn remember_idem(
        &mut self,
        queue: &str,
        key: &str,
        seq: Seq,
        limits: &Limits,
        effects: &mut Vec<Effect>,
    ) {
        debug_assert!(self.idempotent_seq(queue, key).is_none(), "duplicates return early");
        let ordinal = self.next_ordinal();
        // Only after 2^64 keyed enqueues (or a corrupt restore) is the next
        // ordinal still taken; drop that entry first so the indexes stay
        // one-to-one and the new entry is still the newest.
        if let Some((old_queue, old_key)) = self.idem_order.remove(&ordinal) {
            self.unlink_idem(&old_queue, &old_key);
            effects.push(Effect::DelIdem { queue: old_queue, key: old_key, ordinal });
        }
        debug_assert!(
            self.idem_order.last_key_value().is_none_or(|(newest, _)| *newest < ordinal),
            "idempotency ordinals must be strictly increasing"
        );
        effects.push(Effect::PutIdem {
            key: key.to_owned(),
            entry: IdemEntry { queue: queue.to_owned(), seq, ordinal },
        });
        self.idem
            .entry(queue.to_owned())
            .or_default()
            .insert(key.to_owned(), IdemSlot { seq, ordinal });
        self.idem_order.insert(ordinal, (queue.to_owned(), key.to_owned()));

        // `while`, not `if`: the limit may have shrunk since the last entry.
        while count_u64(self.idem_order.len()) > limits.idempotency_keys_max {
            let Some((ordinal, (queue, key))) = self.idem_order.pop_first() else {
                break;
            };
            self.unlink_idem(&queue, &key);
            effects.push(Effect::DelIdem { queue, key, ordinal });
        }
    }

    /// Remove `(queue, key)` from the by-queue index only.
    fn unlink_idem(&mut self, queue: &str, key: &str) {
        if let Some(keys) = self.idem.get_mut(queue) {
            keys.remove(key);
            if keys.is_empty() {
                self.idem.remove(queue);
            }
        }
    }

    fn next_ordinal(&self) -> u64 {
        self.idem_order.last_key_value().map_or(1, |(newest, _)| newest.saturating_add(1))
    }

    fn dequeue(
        &mut self,
        queue: &str,
        expect_seq: Option<Seq>,
        now_ms: u64,
        limits: &Limits,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        // An unknown queue is just an empty one; dequeuing must not create it.
        // Leased and delayed events are skipped: FIFO among available ones.
        let Some(seq) = self.available(queue, now_ms) else {
            return match expect_seq {
                Some(_) => Outcome::Conflict { front: None },
                None => Outcome::Empty,
            };
        };
        if expect_seq.is_some_and(|expected| expected != seq) {
            return Outcome::Conflict { front: Some(seq) };
        }
        // Popping an expired lease resolves that expiry.
        if self.slot(queue, seq).is_some_and(|slot| {
            matches!(slot.state, super::SlotState::Leased { until_ms, .. } if until_ms <= now_ms)
        }) {
            let before = self.counters.get(queue).copied().unwrap_or_default();
            let mut after = before;
            after.expired += 1;
            self.counters.insert(queue.to_owned(), after);
            effects.push(Effect::PutCounters { queue: queue.to_owned(), counters: after });
        }
        self.finish(queue, seq, limits, effects);
        Outcome::Dequeued { queue: queue.to_owned(), seq }
    }

    fn compact(&mut self, queue: &str, upto: Seq, effects: &mut Vec<Effect>) -> Outcome {
        // An unknown queue has nothing retained; compacting must not create it.
        let Some(meta) = self.queues.get(queue).copied() else {
            return Outcome::Compacted { oldest: QueueMeta::NEW.oldest, dropped: 0 };
        };
        // The leader decided `upto` on an older state; since then only more
        // events can have been dequeued, so clamping keeps the decision safe:
        // never past `front` (pending events stay), never backwards.
        let upto = upto.clamp(meta.oldest, meta.front.max(meta.oldest));
        if upto == meta.oldest {
            return Outcome::Compacted { oldest: meta.oldest, dropped: 0 };
        }
        effects.push(Effect::DeleteEvents { queue: queue.to_owned(), from: meta.oldest, to: upto });
        let dropped = upto - meta.oldest;
        let meta = QueueMeta { oldest: upto, ..meta };
        debug_assert_meta(&meta);
        self.queues.insert(queue.to_owned(), meta);
        effects.push(Effect::PutQueue { queue: queue.to_owned(), meta });
        Outcome::Compacted { oldest: upto, dropped }
    }

    fn alloc_seq(
        &mut self,
        name: &str,
        count: u64,
        limits: &Limits,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let known = self.sequences.get(name).copied();
        let first = known.unwrap_or(1);
        let Some(next) = first.checked_add(count).filter(|_| count > 0) else {
            return Outcome::Rejected(Rejection::InvalidCount);
        };
        if known.is_none() && count_u64(self.sequences.len()) >= limits.queues_max {
            return Outcome::Rejected(Rejection::TooManyQueues { max: limits.queues_max });
        }
        debug_assert!(next > first, "sequence ids must be strictly increasing");
        self.sequences.insert(name.to_owned(), next);
        effects.push(Effect::PutSequence { name: name.to_owned(), next });
        Outcome::Allocated { first, last: next - 1 }
    }
}

/// Pending events, without trusting the pointers (they may come from storage).
fn pending(meta: &QueueMeta) -> u64 {
    meta.next.saturating_sub(meta.front)
}

/// Collection sizes compared against `u64` limits (lossless on 64-bit targets,
/// and saturating rather than panicking elsewhere).
pub(super) fn count_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

pub(super) fn debug_assert_meta(meta: &QueueMeta) {
    debug_assert!(
        1 <= meta.oldest && meta.oldest <= meta.front && meta.front <= meta.next,
        "queue pointers out of order: {meta:?}"
    );
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::Config as ProptestConfig;

    use super::*;

    // ---------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------

    /// Large enough that nothing in a unit test hits it unless it means to.
    const ROOMY: Limits = Limits {
        retention_events: 100,
        queue_events_max: 100,
        idempotency_keys_max: 100,
        queues_max: 100,
        ..Limits::DEFAULT
    };

    fn limits(retention: u64, events_max: u64, keys_max: u64, queues_max: u64) -> Limits {
        Limits {
            retention_events: retention,
            queue_events_max: events_max,
            idempotency_keys_max: keys_max,
            queues_max,
            ..Limits::DEFAULT
        }
    }

    fn meta(oldest: Seq, front: Seq, next: Seq) -> QueueMeta {
        QueueMeta { oldest, front, next }
    }

    fn enq(queue: &str, event: &str) -> Command {
        Command::Enqueue { queue: queue.into(), event: event.into(), idempotency_key: None }
    }

    fn enq_key(queue: &str, event: &str, key: &str) -> Command {
        Command::Enqueue {
            queue: queue.into(),
            event: event.into(),
            idempotency_key: Some(key.into()),
        }
    }

    fn deq(queue: &str) -> Command {
        Command::Dequeue { queue: queue.into(), expect_seq: None }
    }

    fn deq_at(queue: &str, seq: Seq) -> Command {
        Command::Dequeue { queue: queue.into(), expect_seq: Some(seq) }
    }

    fn alloc(name: &str, count: u64) -> Command {
        Command::AllocSeq { name: name.into(), count }
    }

    fn enqueued(seq: Seq) -> Outcome {
        Outcome::Enqueued { seq, duplicate: false }
    }

    fn duplicate(seq: Seq) -> Outcome {
        Outcome::Enqueued { seq, duplicate: true }
    }

    fn put_event(queue: &str, seq: Seq, event: &str) -> Effect {
        Effect::PutEvent { queue: queue.into(), seq, event: event.into() }
    }

    fn put_queue(queue: &str, meta: QueueMeta) -> Effect {
        Effect::PutQueue { queue: queue.into(), meta }
    }

    fn put_idem(queue: &str, key: &str, seq: Seq, ordinal: u64) -> Effect {
        Effect::PutIdem { key: key.into(), entry: IdemEntry { queue: queue.into(), seq, ordinal } }
    }

    fn del_idem(queue: &str, key: &str, ordinal: u64) -> Effect {
        Effect::DelIdem { queue: queue.into(), key: key.into(), ordinal }
    }

    fn delete_events(queue: &str, from: Seq, to: Seq) -> Effect {
        Effect::DeleteEvents { queue: queue.into(), from, to }
    }

    fn put_sequence(name: &str, next: u64) -> Effect {
        Effect::PutSequence { name: name.into(), next }
    }

    /// Apply one command and check the invariants afterwards.
    fn run(state: &mut QueueState, cmd: &Command, limits: &Limits) -> (Outcome, Vec<Effect>) {
        let mut effects = Vec::new();
        let outcome = state.apply(cmd, limits, &mut effects);
        check_invariants(state);
        (outcome, effects)
    }

    /// Apply a command that must change nothing: no effects, same state.
    fn run_noop(state: &mut QueueState, cmd: &Command, limits: &Limits) -> Outcome {
        let before = state.clone();
        let (outcome, effects) = run(state, cmd, limits);
        assert_eq!(effects, vec![], "{cmd:?} -> {outcome:?} must not emit effects");
        assert_eq!(*state, before, "{cmd:?} -> {outcome:?} must not change the state");
        outcome
    }

    /// The two idempotency indexes describe the same entries.
    fn check_indexes(state: &QueueState) {
        let mut count = 0;
        for (queue, keys) in &state.idem {
            assert!(!keys.is_empty(), "empty key map left for queue {queue:?}");
            for (key, slot) in keys {
                count += 1;
                assert_eq!(
                    state.idem_order.get(&slot.ordinal),
                    Some(&(queue.clone(), key.clone())),
                    "ordinal index disagrees for ({queue:?}, {key:?})"
                );
            }
        }
        assert_eq!(count, state.idem_order.len());
        assert_eq!(state.idempotency_len(), count);
    }

    /// Everything a state built by `apply` (or restored from its effects)
    /// must satisfy.
    fn check_invariants(state: &QueueState) {
        for (name, m) in state.queues() {
            assert!(
                1 <= m.oldest && m.oldest <= m.front && m.front <= m.next,
                "queue {name:?}: {m:?}"
            );
        }
        check_indexes(state);
        for (queue, keys) in &state.idem {
            let m = state.queue(queue).expect("idempotency key of an unknown queue");
            for slot in keys.values() {
                assert!(1 <= slot.seq && slot.seq < m.next, "key for unassigned seq");
            }
        }
        for (name, next) in state.sequences() {
            assert!(next >= 2, "sequence {name:?} stored without an allocation");
        }
    }

    /// A minimal stand-in for the RocksDB adapter: it applies effects the way
    /// storage would and is strict about effects that make no sense (writing
    /// a seq twice, deleting what is not there).
    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    struct Storage {
        events: BTreeMap<(String, Seq), String>,
        queues: BTreeMap<String, QueueMeta>,
        idem: BTreeMap<(String, String), IdemEntry>,
        sequences: BTreeMap<String, u64>,
    }

    impl Storage {
        fn write(&mut self, effects: &[Effect]) {
            for effect in effects.iter().cloned() {
                match effect {
                    Effect::PutEvent { queue, seq, event } => {
                        let old = self.events.insert((queue.clone(), seq), event);
                        assert!(old.is_none(), "{queue:?} seq {seq} written twice");
                    }
                    Effect::DeleteEvents { queue, from, to } => {
                        assert!(from < to, "empty delete range {from}..{to}");
                        for seq in from..to {
                            let old = self.events.remove(&(queue.clone(), seq));
                            assert!(old.is_some(), "{queue:?} seq {seq} deleted but absent");
                        }
                    }
                    Effect::PutQueue { queue, meta } => {
                        self.queues.insert(queue, meta);
                    }
                    Effect::PutIdem { key, entry } => {
                        let old = self.idem.insert((entry.queue.clone(), key), entry);
                        assert!(old.is_none(), "idempotency key stored twice: {old:?}");
                    }
                    Effect::DelIdem { queue, key, ordinal } => {
                        let old = self.idem.remove(&(queue, key)).expect("evicted key absent");
                        assert_eq!(old.ordinal, ordinal, "evicted key has another ordinal");
                    }
                    Effect::PutSequence { name, next } => {
                        let old = self.sequences.insert(name, next);
                        assert!(old.is_none_or(|old| old < next), "sequence went backwards");
                    }
                    // Only work-queue commands emit these; the tests here
                    // never apply one (see `work`'s tests and `sm::tests`).
                    other => panic!("unexpected work-queue effect {other:?}"),
                }
            }
        }

        fn events_of(&self, queue: &str) -> Vec<(Seq, String)> {
            self.events
                .range((queue.to_owned(), 0)..=(queue.to_owned(), Seq::MAX))
                .map(|((_, seq), event)| (*seq, event.clone()))
                .collect()
        }

        /// Rebuild a state as a restarting node would. `reverse` feeds every
        /// kind of entry in the opposite order (and idempotency entries first),
        /// to show that the order does not matter.
        fn restore(&self, reverse: bool) -> QueueState {
            let mut state = QueueState::new();
            let mut queues: Vec<_> = self.queues.iter().collect();
            let mut sequences: Vec<_> = self.sequences.iter().collect();
            let mut idem: Vec<_> = self.idem.iter().collect();
            if reverse {
                queues.reverse();
                sequences.reverse();
                idem.reverse();
                for ((_, key), entry) in &idem {
                    state.restore_idem(key.clone(), (*entry).clone());
                }
            }
            for (name, m) in queues {
                state.restore_queue(name.clone(), *m);
            }
            for (name, next) in sequences {
                state.restore_sequence(name.clone(), *next);
            }
            if !reverse {
                for ((_, key), entry) in idem {
                    state.restore_idem(key.clone(), entry.clone());
                }
            }
            state
        }
    }

    // ---------------------------------------------------------------------
    // Enqueue
    // ---------------------------------------------------------------------

    #[test]
    fn new_state_is_empty() {
        let state = QueueState::new();
        assert_eq!(state, QueueState::default());
        assert_eq!(state.queues().count(), 0);
        assert_eq!(state.sequences().count(), 0);
        assert_eq!(state.idempotency_len(), 0);
        assert_eq!(state.queue("default"), None);
        assert_eq!(state.sequence_next("s"), 1);
        assert_eq!(state.idempotent_seq("default", "k"), None);
        check_invariants(&state);
    }

    #[test]
    fn enqueue_creates_the_queue_and_assigns_gapless_seqs() {
        let mut s = QueueState::new();
        let (o, e) = run(&mut s, &enq("q", "a"), &ROOMY);
        assert_eq!(o, enqueued(1));
        assert_eq!(e, vec![put_event("q", 1, "a"), put_queue("q", meta(1, 1, 2))]);
        let (o, e) = run(&mut s, &enq("q", "b"), &ROOMY);
        assert_eq!(o, enqueued(2));
        assert_eq!(e, vec![put_event("q", 2, "b"), put_queue("q", meta(1, 1, 3))]);
        assert_eq!(s.queue("q"), Some(&meta(1, 1, 3)));
        assert_eq!(s.queue("q").unwrap().len(), 2);

        // Every queue numbers its events on its own.
        let (o, e) = run(&mut s, &enq("r", "c"), &ROOMY);
        assert_eq!(o, enqueued(1));
        assert_eq!(e, vec![put_event("r", 1, "c"), put_queue("r", meta(1, 1, 2))]);
        let names: Vec<_> = s.queues().map(|(name, m)| (name, *m)).collect();
        assert_eq!(names, vec![("q", meta(1, 1, 3)), ("r", meta(1, 1, 2))]);
        assert_eq!(s.idempotency_len(), 0);
    }

    #[test]
    fn empty_names_events_and_keys_are_ordinary_values() {
        let mut s = QueueState::new();
        let (o, e) = run(&mut s, &enq_key("", "", ""), &ROOMY);
        assert_eq!(o, enqueued(1));
        assert_eq!(
            e,
            vec![put_event("", 1, ""), put_idem("", "", 1, 1), put_queue("", meta(1, 1, 2))]
        );
        assert_eq!(run_noop(&mut s, &enq_key("", "x", ""), &ROOMY), duplicate(1));
        assert_eq!(run(&mut s, &deq(""), &ROOMY).0, Outcome::Dequeued { queue: "".into(), seq: 1 });
        assert_eq!(run(&mut s, &alloc("", 1), &ROOMY).0, Outcome::Allocated { first: 1, last: 1 });
    }

    #[test]
    fn keyed_enqueue_stores_the_key_between_event_and_pointers() {
        let mut s = QueueState::new();
        let (o, e) = run(&mut s, &enq_key("q", "a", "k1"), &ROOMY);
        assert_eq!(o, enqueued(1));
        assert_eq!(
            e,
            vec![put_event("q", 1, "a"), put_idem("q", "k1", 1, 1), put_queue("q", meta(1, 1, 2))]
        );
        let (o, e) = run(&mut s, &enq_key("q", "b", "k2"), &ROOMY);
        assert_eq!(o, enqueued(2));
        assert_eq!(
            e,
            vec![put_event("q", 2, "b"), put_idem("q", "k2", 2, 2), put_queue("q", meta(1, 1, 3))]
        );
        assert_eq!(s.idempotency_len(), 2);
        assert_eq!(s.idempotent_seq("q", "k1"), Some(1));
        assert_eq!(s.idempotent_seq("q", "k2"), Some(2));
        assert_eq!(s.idempotent_seq("q", "k3"), None);
        assert_eq!(s.idempotent_seq("r", "k1"), None);
    }

    #[test]
    fn duplicate_key_returns_the_original_seq_and_changes_nothing() {
        let mut s = QueueState::new();
        assert_eq!(run(&mut s, &enq_key("q", "a", "k"), &ROOMY).0, enqueued(1));
        assert_eq!(run(&mut s, &enq("q", "b"), &ROOMY).0, enqueued(2));
        assert_eq!(run_noop(&mut s, &enq_key("q", "a", "k"), &ROOMY), duplicate(1));
        // The body of the retry is irrelevant: the key alone identifies it.
        assert_eq!(run_noop(&mut s, &enq_key("q", "other", "k"), &ROOMY), duplicate(1));
        assert_eq!(run(&mut s, &enq("q", "c"), &ROOMY).0, enqueued(3));
    }

    #[test]
    fn duplicate_is_recognised_after_the_event_was_dequeued_and_deleted() {
        let mut s = QueueState::new();
        let zero_retention = limits(0, 100, 100, 100);
        assert_eq!(run(&mut s, &enq_key("q", "a", "k"), &zero_retention).0, enqueued(1));
        let (o, e) = run(&mut s, &deq("q"), &zero_retention);
        assert_eq!(o, Outcome::Dequeued { queue: "q".into(), seq: 1 });
        assert_eq!(e, vec![delete_events("q", 1, 2), put_queue("q", meta(2, 2, 2))]);
        assert_eq!(run_noop(&mut s, &enq_key("q", "a", "k"), &zero_retention), duplicate(1));
    }

    #[test]
    fn duplicate_takes_precedence_over_every_limit() {
        let mut s = QueueState::new();
        assert_eq!(run(&mut s, &enq_key("q", "a", "k"), &ROOMY).0, enqueued(1));
        let tight = limits(0, 1, 1, 0);
        assert_eq!(run_noop(&mut s, &enq_key("q", "a", "k"), &tight), duplicate(1));
        assert_eq!(
            run_noop(&mut s, &enq("q", "b"), &tight),
            Outcome::Rejected(Rejection::QueueFull { max: 1 })
        );
        let none = limits(0, 0, 0, 0);
        assert_eq!(run_noop(&mut s, &enq_key("q", "a", "k"), &none), duplicate(1));
    }

    #[test]
    fn same_key_in_another_queue_is_not_a_duplicate() {
        let mut s = QueueState::new();
        assert_eq!(run(&mut s, &enq_key("q", "a", "k"), &ROOMY).0, enqueued(1));
        let (o, e) = run(&mut s, &enq_key("r", "a", "k"), &ROOMY);
        assert_eq!(o, enqueued(1));
        assert_eq!(
            e,
            vec![put_event("r", 1, "a"), put_idem("r", "k", 1, 2), put_queue("r", meta(1, 1, 2))]
        );
        assert_eq!(s.idempotency_len(), 2);
        assert_eq!(run(&mut s, &enq("q", "b"), &ROOMY).0, enqueued(2));
        assert_eq!(run_noop(&mut s, &enq_key("q", "b", "k"), &ROOMY), duplicate(1));
        assert_eq!(run_noop(&mut s, &enq_key("r", "b", "k"), &ROOMY), duplicate(1));
    }

    #[test]
    fn idempotency_window_evicts_oldest_first() {
        let mut s = QueueState::new();
        let l = limits(100, 100, 2, 100);
        assert_eq!(run(&mut s, &enq_key("q", "a", "k1"), &l).0, enqueued(1));
        assert_eq!(run(&mut s, &enq_key("q", "b", "k2"), &l).0, enqueued(2));
        let (o, e) = run(&mut s, &enq_key("q", "c", "k3"), &l);
        assert_eq!(o, enqueued(3));
        assert_eq!(
            e,
            vec![
                put_event("q", 3, "c"),
                put_idem("q", "k3", 3, 3),
                del_idem("q", "k1", 1),
                put_queue("q", meta(1, 1, 4)),
            ]
        );
        assert_eq!(s.idempotency_len(), 2);
        assert_eq!(s.idempotent_seq("q", "k1"), None);
        assert_eq!(s.idempotent_seq("q", "k2"), Some(2));
        assert_eq!(s.idempotent_seq("q", "k3"), Some(3));
        assert_eq!(run_noop(&mut s, &enq_key("q", "c", "k3"), &l), duplicate(3));

        // An evicted key is forgotten: its retry enqueues anew (the
        // documented price of a bounded window) and evicts the next oldest.
        let (o, e) = run(&mut s, &enq_key("q", "a", "k1"), &l);
        assert_eq!(o, enqueued(4));
        assert_eq!(
            e,
            vec![
                put_event("q", 4, "a"),
                put_idem("q", "k1", 4, 4),
                del_idem("q", "k2", 2),
                put_queue("q", meta(1, 1, 5)),
            ]
        );
        assert_eq!(run_noop(&mut s, &enq_key("q", "a", "k1"), &l), duplicate(4));
    }

    #[test]
    fn unkeyed_enqueues_do_not_touch_the_window() {
        let mut s = QueueState::new();
        let l = limits(100, 100, 1, 100);
        run(&mut s, &enq_key("q", "a", "k"), &l);
        for _ in 0..3 {
            run(&mut s, &enq("q", "x"), &l);
        }
        assert_eq!(s.idempotent_seq("q", "k"), Some(1));
    }

    #[test]
    fn idempotency_window_is_shared_by_all_queues() {
        let mut s = QueueState::new();
        let l = limits(100, 100, 1, 100);
        run(&mut s, &enq_key("q", "a", "k"), &l);
        let (o, e) = run(&mut s, &enq_key("r", "a", "k"), &l);
        assert_eq!(o, enqueued(1));
        assert_eq!(
            e,
            vec![
                put_event("r", 1, "a"),
                put_idem("r", "k", 1, 2),
                del_idem("q", "k", 1),
                put_queue("r", meta(1, 1, 2)),
            ]
        );
        assert_eq!(s.idempotent_seq("q", "k"), None);
        assert_eq!(s.idempotent_seq("r", "k"), Some(1));
        // The emptied queue leaves no trace in the index.
        assert!(!s.idem.contains_key("q"));
    }

    #[test]
    fn shrunk_window_evicts_several_keys_in_order() {
        let mut s = QueueState::new();
        for i in 1..=5u64 {
            run(&mut s, &enq_key("q", "e", &format!("k{i}")), &ROOMY);
        }
        let (o, e) = run(&mut s, &enq_key("q", "e", "k6"), &limits(100, 100, 2, 100));
        assert_eq!(o, enqueued(6));
        assert_eq!(
            e,
            vec![
                put_event("q", 6, "e"),
                put_idem("q", "k6", 6, 6),
                del_idem("q", "k1", 1),
                del_idem("q", "k2", 2),
                del_idem("q", "k3", 3),
                del_idem("q", "k4", 4),
                put_queue("q", meta(1, 1, 7)),
            ]
        );
        assert_eq!(s.idempotency_len(), 2);
        assert_eq!(s.idempotent_seq("q", "k5"), Some(5));
        assert_eq!(s.idempotent_seq("q", "k6"), Some(6));
    }

    #[test]
    fn zero_idempotency_keys_remembers_nothing() {
        let mut s = QueueState::new();
        let l = limits(100, 100, 0, 100);
        let (o, e) = run(&mut s, &enq_key("q", "a", "k"), &l);
        assert_eq!(o, enqueued(1));
        assert_eq!(
            e,
            vec![
                put_event("q", 1, "a"),
                put_idem("q", "k", 1, 1),
                del_idem("q", "k", 1),
                put_queue("q", meta(1, 1, 2)),
            ]
        );
        assert_eq!(s.idempotency_len(), 0);
        // With the window empty, numbering starts over; what storage holds
        // (nothing) is enough to reproduce that after a restart.
        let (o, e) = run(&mut s, &enq_key("q", "a", "k"), &l);
        assert_eq!(o, enqueued(2));
        assert_eq!(
            e,
            vec![
                put_event("q", 2, "a"),
                put_idem("q", "k", 2, 1),
                del_idem("q", "k", 1),
                put_queue("q", meta(1, 1, 3)),
            ]
        );
        let mut storage = Storage::default();
        storage.write(&e);
        assert_eq!(storage.idem.len(), 0);
    }

    #[test]
    fn too_many_queues_rejects_only_new_queues() {
        let mut s = QueueState::new();
        let l = limits(100, 100, 100, 1);
        assert_eq!(run(&mut s, &enq("q", "a"), &l).0, enqueued(1));
        let too_many = Outcome::Rejected(Rejection::TooManyQueues { max: 1 });
        assert_eq!(run_noop(&mut s, &enq("r", "a"), &l), too_many);
        assert_eq!(run_noop(&mut s, &enq_key("r", "a", "k"), &l), too_many);
        assert_eq!(s.idempotent_seq("r", "k"), None);
        assert_eq!(s.queue("r"), None);
        assert_eq!(run(&mut s, &enq("q", "b"), &l).0, enqueued(2));
    }

    #[test]
    fn zero_queues_max_rejects_every_new_queue() {
        let mut s = QueueState::new();
        assert_eq!(
            run_noop(&mut s, &enq("q", "a"), &limits(100, 100, 100, 0)),
            Outcome::Rejected(Rejection::TooManyQueues { max: 0 })
        );
        assert_eq!(s.queues().count(), 0);
    }

    #[test]
    fn queue_count_is_checked_before_queue_length() {
        let mut s = QueueState::new();
        assert_eq!(
            run_noop(&mut s, &enq("q", "a"), &limits(100, 0, 100, 0)),
            Outcome::Rejected(Rejection::TooManyQueues { max: 0 })
        );
    }

    #[test]
    fn shrunk_queues_max_still_serves_existing_queues() {
        let mut s = QueueState::new();
        for q in ["a", "b", "c"] {
            run(&mut s, &enq(q, "x"), &ROOMY);
        }
        let l = limits(100, 100, 100, 1);
        assert_eq!(run(&mut s, &enq("b", "y"), &l).0, enqueued(2));
        assert_eq!(
            run_noop(&mut s, &enq("d", "y"), &l),
            Outcome::Rejected(Rejection::TooManyQueues { max: 1 })
        );
    }

    #[test]
    fn full_queue_rejects_until_an_event_is_dequeued() {
        let mut s = QueueState::new();
        let l = limits(100, 2, 100, 100);
        assert_eq!(run(&mut s, &enq("q", "a"), &l).0, enqueued(1));
        assert_eq!(run(&mut s, &enq("q", "b"), &l).0, enqueued(2));
        let full = Outcome::Rejected(Rejection::QueueFull { max: 2 });
        assert_eq!(run_noop(&mut s, &enq("q", "c"), &l), full);
        assert_eq!(run_noop(&mut s, &enq_key("q", "c", "k"), &l), full);
        assert_eq!(s.idempotent_seq("q", "k"), None);
        // Other queues are unaffected.
        assert_eq!(run(&mut s, &enq("r", "c"), &l).0, enqueued(1));
        assert_eq!(run(&mut s, &deq("q"), &l).0, Outcome::Dequeued { queue: "q".into(), seq: 1 });
        // Rejections consumed no seq.
        assert_eq!(run(&mut s, &enq_key("q", "c", "k"), &l).0, enqueued(3));
        assert_eq!(run_noop(&mut s, &enq("q", "d"), &l), full);
    }

    #[test]
    fn retained_events_do_not_count_against_queue_length() {
        let mut s = QueueState::new();
        let l = limits(100, 1, 100, 100);
        for seq in 1..=3 {
            assert_eq!(run(&mut s, &enq("q", "a"), &l).0, enqueued(seq));
            assert_eq!(run(&mut s, &deq("q"), &l).0, Outcome::Dequeued { queue: "q".into(), seq });
        }
        assert_eq!(s.queue("q"), Some(&meta(1, 4, 4)));
    }

    #[test]
    fn zero_queue_events_max_rejects_without_creating_the_queue() {
        let mut s = QueueState::new();
        assert_eq!(
            run_noop(&mut s, &enq("q", "a"), &limits(100, 0, 100, 100)),
            Outcome::Rejected(Rejection::QueueFull { max: 0 })
        );
        assert_eq!(s.queue("q"), None);
    }

    #[test]
    fn enqueue_at_the_end_of_the_seq_space_is_refused_not_overflowed() {
        let mut s = QueueState::new();
        s.restore_queue("q".into(), meta(Seq::MAX - 1, Seq::MAX - 1, Seq::MAX - 1));
        let (o, e) = run(&mut s, &enq("q", "a"), &ROOMY);
        assert_eq!(o, enqueued(Seq::MAX - 1));
        assert_eq!(
            e,
            vec![
                put_event("q", Seq::MAX - 1, "a"),
                put_queue("q", meta(Seq::MAX - 1, Seq::MAX - 1, Seq::MAX)),
            ]
        );
        assert_eq!(
            run_noop(&mut s, &enq_key("q", "b", "k"), &ROOMY),
            Outcome::Rejected(Rejection::QueueFull { max: 100 })
        );
        let (o, e) = run(&mut s, &deq("q"), &limits(0, 100, 100, 100));
        assert_eq!(o, Outcome::Dequeued { queue: "q".into(), seq: Seq::MAX - 1 });
        assert_eq!(
            e,
            vec![
                delete_events("q", Seq::MAX - 1, Seq::MAX),
                put_queue("q", meta(Seq::MAX, Seq::MAX, Seq::MAX)),
            ]
        );
        assert_eq!(run_noop(&mut s, &deq("q"), &ROOMY), Outcome::Empty);
    }

    // ---------------------------------------------------------------------
    // Dequeue
    // ---------------------------------------------------------------------

    #[test]
    fn dequeue_from_an_unknown_queue_does_not_create_it() {
        let mut s = QueueState::new();
        assert_eq!(run_noop(&mut s, &deq("q"), &ROOMY), Outcome::Empty);
        assert_eq!(run_noop(&mut s, &deq_at("q", 1), &ROOMY), Outcome::Conflict { front: None });
        assert_eq!(run_noop(&mut s, &deq_at("q", 0), &ROOMY), Outcome::Conflict { front: None });
        assert_eq!(s.queue("q"), None);
    }

    #[test]
    fn dequeue_from_an_empty_queue() {
        let mut s = QueueState::new();
        run(&mut s, &enq("q", "a"), &ROOMY);
        run(&mut s, &deq("q"), &ROOMY);
        assert_eq!(run_noop(&mut s, &deq("q"), &ROOMY), Outcome::Empty);
        // Neither the dequeued seq nor the next one to come matches.
        assert_eq!(run_noop(&mut s, &deq_at("q", 1), &ROOMY), Outcome::Conflict { front: None });
        assert_eq!(run_noop(&mut s, &deq_at("q", 2), &ROOMY), Outcome::Conflict { front: None });
    }

    #[test]
    fn dequeue_is_fifo_and_only_moves_the_front() {
        let mut s = QueueState::new();
        run(&mut s, &enq("q", "a"), &ROOMY);
        run(&mut s, &enq("q", "b"), &ROOMY);
        let (o, e) = run(&mut s, &deq("q"), &ROOMY);
        assert_eq!(o, Outcome::Dequeued { queue: "q".into(), seq: 1 });
        assert_eq!(e, vec![put_queue("q", meta(1, 2, 3))]);
        let (o, e) = run(&mut s, &deq("q"), &ROOMY);
        assert_eq!(o, Outcome::Dequeued { queue: "q".into(), seq: 2 });
        assert_eq!(e, vec![put_queue("q", meta(1, 3, 3))]);
        assert_eq!(run_noop(&mut s, &deq("q"), &ROOMY), Outcome::Empty);
        // New events continue the numbering.
        assert_eq!(run(&mut s, &enq("q", "c"), &ROOMY).0, enqueued(3));
    }

    #[test]
    fn dequeue_with_an_expected_seq() {
        let mut s = QueueState::new();
        for e in ["a", "b", "c"] {
            run(&mut s, &enq("q", e), &ROOMY);
        }
        let conflict = Outcome::Conflict { front: Some(1) };
        assert_eq!(run_noop(&mut s, &deq_at("q", 0), &ROOMY), conflict);
        assert_eq!(run_noop(&mut s, &deq_at("q", 2), &ROOMY), conflict);
        assert_eq!(run_noop(&mut s, &deq_at("q", Seq::MAX), &ROOMY), conflict);
        let (o, e) = run(&mut s, &deq_at("q", 1), &ROOMY);
        assert_eq!(o, Outcome::Dequeued { queue: "q".into(), seq: 1 });
        assert_eq!(e, vec![put_queue("q", meta(1, 2, 4))]);
        // A retried DELETE ?seq=1 cannot remove a second event.
        assert_eq!(run_noop(&mut s, &deq_at("q", 1), &ROOMY), Outcome::Conflict { front: Some(2) });
    }

    #[test]
    fn zero_retention_deletes_each_body_as_it_is_dequeued() {
        let mut s = QueueState::new();
        let l = limits(0, 100, 100, 100);
        for e in ["a", "b", "c"] {
            run(&mut s, &enq("q", e), &l);
        }
        let (o, e) = run(&mut s, &deq("q"), &l);
        assert_eq!(o, Outcome::Dequeued { queue: "q".into(), seq: 1 });
        assert_eq!(e, vec![delete_events("q", 1, 2), put_queue("q", meta(2, 2, 4))]);
        let (o, e) = run(&mut s, &deq_at("q", 2), &l);
        assert_eq!(o, Outcome::Dequeued { queue: "q".into(), seq: 2 });
        assert_eq!(e, vec![delete_events("q", 2, 3), put_queue("q", meta(3, 3, 4))]);
    }

    #[test]
    fn retention_keeps_exactly_the_last_n_dequeued_bodies() {
        let mut s = QueueState::new();
        let l = limits(2, 100, 100, 100);
        for e in ["a", "b", "c", "d"] {
            run(&mut s, &enq("q", e), &l);
        }
        let expected = [
            vec![put_queue("q", meta(1, 2, 5))],
            vec![put_queue("q", meta(1, 3, 5))],
            vec![delete_events("q", 1, 2), put_queue("q", meta(2, 4, 5))],
            vec![delete_events("q", 2, 3), put_queue("q", meta(3, 5, 5))],
        ];
        for (seq, effects) in (1..).zip(expected) {
            let (o, e) = run(&mut s, &deq("q"), &l);
            assert_eq!(o, Outcome::Dequeued { queue: "q".into(), seq });
            assert_eq!(e, effects);
        }
        let m = s.queue("q").unwrap();
        assert_eq!(m.front - m.oldest, 2);
    }

    #[test]
    fn shrunk_retention_deletes_the_backlog_in_one_range() {
        let mut s = QueueState::new();
        for _ in 0..10 {
            run(&mut s, &enq("q", "e"), &ROOMY);
        }
        for _ in 0..5 {
            run(&mut s, &deq("q"), &ROOMY);
        }
        assert_eq!(s.queue("q"), Some(&meta(1, 6, 11)));
        let (o, e) = run(&mut s, &deq("q"), &limits(1, 100, 100, 100));
        assert_eq!(o, Outcome::Dequeued { queue: "q".into(), seq: 6 });
        assert_eq!(e, vec![delete_events("q", 1, 6), put_queue("q", meta(6, 7, 11))]);
        // A grown retention deletes nothing until the gap reaches it again.
        let (_, e) = run(&mut s, &deq("q"), &limits(3, 100, 100, 100));
        assert_eq!(e, vec![put_queue("q", meta(6, 8, 11))]);
    }

    #[test]
    fn unbounded_retention_never_deletes() {
        let mut s = QueueState::new();
        let l = limits(u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        for _ in 0..3 {
            run(&mut s, &enq("q", "e"), &l);
        }
        for _ in 0..3 {
            let (_, e) = run(&mut s, &deq("q"), &l);
            assert!(e.iter().all(|e| matches!(e, Effect::PutQueue { .. })), "{e:?}");
        }
        assert_eq!(s.queue("q"), Some(&meta(1, 4, 4)));
    }

    // ---------------------------------------------------------------------
    // Compact
    // ---------------------------------------------------------------------

    fn compact(queue: &str, upto: Seq) -> Command {
        Command::Compact { queue: queue.into(), upto }
    }

    fn compacted(oldest: Seq, dropped: u64) -> Outcome {
        Outcome::Compacted { oldest, dropped }
    }

    #[test]
    fn compact_drops_dequeued_events_below_upto() {
        let mut s = QueueState::new();
        for _ in 0..6 {
            run(&mut s, &enq("q", "e"), &ROOMY);
        }
        for _ in 0..4 {
            run(&mut s, &deq("q"), &ROOMY);
        }
        assert_eq!(s.queue("q"), Some(&meta(1, 5, 7)));
        let (o, e) = run(&mut s, &compact("q", 3), &ROOMY);
        assert_eq!(o, compacted(3, 2));
        assert_eq!(e, vec![delete_events("q", 1, 3), put_queue("q", meta(3, 5, 7))]);
    }

    #[test]
    fn compact_never_drops_pending_events() {
        let mut s = QueueState::new();
        for _ in 0..6 {
            run(&mut s, &enq("q", "e"), &ROOMY);
        }
        run(&mut s, &deq("q"), &ROOMY);
        run(&mut s, &deq("q"), &ROOMY);
        // Asked for everything: clamped to the front (seq 3 is pending).
        let (o, e) = run(&mut s, &compact("q", u64::MAX), &ROOMY);
        assert_eq!(o, compacted(3, 2));
        assert_eq!(e, vec![delete_events("q", 1, 3), put_queue("q", meta(3, 3, 7))]);
        // Nothing dequeued is left: a second compaction is a no-op.
        assert_eq!(run_noop(&mut s, &compact("q", u64::MAX), &ROOMY), compacted(3, 0));
    }

    #[test]
    fn compact_below_oldest_or_of_an_unknown_queue_changes_nothing() {
        let mut s = QueueState::new();
        for _ in 0..4 {
            run(&mut s, &enq("q", "e"), &ROOMY);
        }
        for _ in 0..3 {
            run(&mut s, &deq("q"), &ROOMY);
        }
        run(&mut s, &compact("q", 3), &ROOMY);
        for upto in [0, 1, 3] {
            assert_eq!(run_noop(&mut s, &compact("q", upto), &ROOMY), compacted(3, 0));
        }
        assert_eq!(run_noop(&mut s, &compact("nope", 10), &ROOMY), compacted(1, 0));
        assert_eq!(s.queue("nope"), None);
    }

    #[test]
    fn compact_of_pointers_out_of_order_does_not_panic() {
        // Pointers restored from damaged storage (front < oldest) must not
        // turn an apply into a panic.
        let mut s = QueueState::new();
        s.restore_queue("q".into(), meta(5, 3, 9));
        let mut effects = Vec::new();
        let o = s.apply(&compact("q", 7), &ROOMY, &mut effects);
        assert_eq!(o, compacted(5, 0));
        assert!(effects.is_empty());
    }

    // ---------------------------------------------------------------------
    // AllocSeq
    // ---------------------------------------------------------------------

    #[test]
    fn alloc_seq_hands_out_consecutive_ranges() {
        let mut s = QueueState::new();
        let (o, e) = run(&mut s, &alloc("s", 1), &ROOMY);
        assert_eq!(o, Outcome::Allocated { first: 1, last: 1 });
        assert_eq!(e, vec![put_sequence("s", 2)]);
        let (o, e) = run(&mut s, &alloc("s", 3), &ROOMY);
        assert_eq!(o, Outcome::Allocated { first: 2, last: 4 });
        assert_eq!(e, vec![put_sequence("s", 5)]);
        assert_eq!(s.sequence_next("s"), 5);
        assert_eq!(run(&mut s, &alloc("t", 2), &ROOMY).0, Outcome::Allocated { first: 1, last: 2 });
        assert_eq!(s.sequences().collect::<Vec<_>>(), vec![("s", 5), ("t", 3)]);
    }

    #[test]
    fn alloc_seq_rejects_a_zero_count() {
        let mut s = QueueState::new();
        assert_eq!(
            run_noop(&mut s, &alloc("s", 0), &ROOMY),
            Outcome::Rejected(Rejection::InvalidCount)
        );
        assert_eq!(s.sequences().count(), 0);
        run(&mut s, &alloc("s", 2), &ROOMY);
        assert_eq!(
            run_noop(&mut s, &alloc("s", 0), &ROOMY),
            Outcome::Rejected(Rejection::InvalidCount)
        );
        assert_eq!(s.sequence_next("s"), 3);
    }

    #[test]
    fn alloc_seq_rejects_ranges_that_overflow() {
        let mut s = QueueState::new();
        let invalid = Outcome::Rejected(Rejection::InvalidCount);
        assert_eq!(run_noop(&mut s, &alloc("s", u64::MAX), &ROOMY), invalid);
        let (o, e) = run(&mut s, &alloc("s", u64::MAX - 1), &ROOMY);
        assert_eq!(o, Outcome::Allocated { first: 1, last: u64::MAX - 1 });
        assert_eq!(e, vec![put_sequence("s", u64::MAX)]);
        assert_eq!(run_noop(&mut s, &alloc("s", 1), &ROOMY), invalid);
        assert_eq!(run_noop(&mut s, &alloc("s", u64::MAX), &ROOMY), invalid);
        assert_eq!(s.sequence_next("s"), u64::MAX);

        let mut s = QueueState::new();
        s.restore_sequence("s".into(), 10);
        assert_eq!(run_noop(&mut s, &alloc("s", u64::MAX - 9), &ROOMY), invalid);
        assert_eq!(
            run(&mut s, &alloc("s", u64::MAX - 10), &ROOMY).0,
            Outcome::Allocated { first: 10, last: u64::MAX - 1 }
        );
    }

    #[test]
    fn alloc_seq_limits_the_number_of_sequences() {
        let mut s = QueueState::new();
        let l = limits(100, 100, 100, 1);
        assert_eq!(run(&mut s, &alloc("s", 1), &l).0, Outcome::Allocated { first: 1, last: 1 });
        assert_eq!(
            run_noop(&mut s, &alloc("t", 1), &l),
            Outcome::Rejected(Rejection::TooManyQueues { max: 1 })
        );
        assert_eq!(run(&mut s, &alloc("s", 1), &l).0, Outcome::Allocated { first: 2, last: 2 });
        // Queues are counted separately, even under the same name.
        assert_eq!(run(&mut s, &enq("s", "e"), &l).0, enqueued(1));
        assert_eq!(
            run_noop(&mut s, &enq("t", "e"), &l),
            Outcome::Rejected(Rejection::TooManyQueues { max: 1 })
        );
    }

    #[test]
    fn zero_queues_max_rejects_new_sequences_but_count_is_checked_first() {
        let mut s = QueueState::new();
        let l = limits(100, 100, 100, 0);
        assert_eq!(
            run_noop(&mut s, &alloc("s", 1), &l),
            Outcome::Rejected(Rejection::TooManyQueues { max: 0 })
        );
        assert_eq!(
            run_noop(&mut s, &alloc("s", 0), &l),
            Outcome::Rejected(Rejection::InvalidCount)
        );
        assert_eq!(
            run_noop(&mut s, &alloc("s", u64::MAX), &l),
            Outcome::Rejected(Rejection::InvalidCount)
        );
    }

    // ---------------------------------------------------------------------
    // Restore
    // ---------------------------------------------------------------------

    /// A workload touching every effect kind, with limits changing on the way.
    fn mixed_script() -> Vec<(Command, Limits)> {
        let l = limits(2, 5, 3, 3);
        let shrunk = limits(0, 5, 1, 3);
        vec![
            (enq_key("q", "a", "k1"), l),
            (enq_key("q", "b", "k2"), l),
            (enq("q", "c"), l),
            (enq_key("r", "d", "k1"), l),
            (enq_key("r", "e", "k3"), l),
            (deq("q"), l),
            (deq_at("q", 2), l),
            (deq("q"), l),
            (deq("q"), l),
            (enq("q", "f"), l),
            (deq("r"), shrunk),
            (alloc("s", 3), l),
            (alloc("t", 1), l),
            (alloc("s", 2), l),
            (enq_key("", "g", "k4"), l),
            (alloc("u", 1), l),
            (enq("too-many", "h"), l),
        ]
    }

    fn apply_script(
        state: &mut QueueState,
        storage: &mut Storage,
        script: &[(Command, Limits)],
    ) -> Vec<(Outcome, Vec<Effect>)> {
        script
            .iter()
            .map(|(cmd, l)| {
                let (o, e) = run(state, cmd, l);
                storage.write(&e);
                (o, e)
            })
            .collect()
    }

    #[test]
    fn state_restored_from_its_effects_is_equal_and_behaves_identically() {
        let mut original = QueueState::new();
        let mut storage = Storage::default();
        apply_script(&mut original, &mut storage, &mixed_script());
        assert!(original.idempotency_len() > 0 && original.sequences().count() > 0);
        // Sanity: storage holds exactly the retained and pending bodies.
        let bodies = |v: &[(Seq, &str)]| -> Vec<(Seq, String)> {
            v.iter().map(|(seq, e)| (*seq, e.to_string())).collect()
        };
        assert_eq!(storage.events_of("q"), bodies(&[(2, "b"), (3, "c"), (4, "f")]));
        assert_eq!(storage.events_of("r"), bodies(&[(2, "e")]));

        let continuation = vec![
            (enq_key("q", "x", "k1"), ROOMY),
            (enq_key("r", "x", "k3"), ROOMY),
            (enq_key("r", "y", "k9"), limits(1, 10, 1, 10)),
            (deq("q"), limits(0, 10, 1, 10)),
            (deq_at("r", 2), ROOMY),
            (alloc("t", 5), ROOMY),
            (alloc("v", 1), ROOMY),
            (enq("new", "z"), ROOMY),
        ];
        for reverse in [false, true] {
            let mut restored = storage.restore(reverse);
            check_invariants(&restored);
            assert_eq!(restored, original, "restore (reverse: {reverse})");
            let mut original = original.clone();
            let mut storage_a = storage.clone();
            let mut storage_b = storage.clone();
            let a = apply_script(&mut original, &mut storage_a, &continuation);
            let b = apply_script(&mut restored, &mut storage_b, &continuation);
            assert_eq!(a, b);
            assert_eq!(original, restored);
            assert_eq!(storage_a, storage_b);
            assert_eq!(storage_a.restore(reverse), original);
        }
    }

    #[test]
    fn restored_ordinals_continue_after_the_largest() {
        let mut s = QueueState::new();
        s.restore_idem("b".into(), IdemEntry { queue: "q".into(), seq: 3, ordinal: 7 });
        s.restore_queue("q".into(), meta(1, 1, 4));
        s.restore_idem("a".into(), IdemEntry { queue: "q".into(), seq: 1, ordinal: 3 });
        check_invariants(&s);
        assert_eq!(s.idempotency_len(), 2);
        assert_eq!(s.idempotent_seq("q", "a"), Some(1));
        assert_eq!(s.idempotent_seq("q", "b"), Some(3));
        let (o, e) = run(&mut s, &enq_key("q", "x", "c"), &limits(100, 100, 2, 100));
        assert_eq!(o, enqueued(4));
        assert_eq!(
            e,
            vec![
                put_event("q", 4, "x"),
                put_idem("q", "c", 4, 8),
                del_idem("q", "a", 3),
                put_queue("q", meta(1, 1, 5)),
            ]
        );
    }

    #[test]
    fn restoring_an_entry_twice_is_harmless() {
        let entry = IdemEntry { queue: "q".into(), seq: 1, ordinal: 1 };
        let mut once = QueueState::new();
        once.restore_idem("k".into(), entry.clone());
        let mut twice = once.clone();
        twice.restore_idem("k".into(), entry);
        assert_eq!(once, twice);
        once.restore_queue("q".into(), meta(1, 1, 2));
        let copy = once.clone();
        once.restore_queue("q".into(), meta(1, 1, 2));
        once.restore_sequence("s".into(), 3);
        once.restore_sequence("s".into(), 3);
        assert_eq!(once.sequences().collect::<Vec<_>>(), vec![("s", 3)]);
        assert_eq!(once.queue("q"), copy.queue("q"));
    }

    #[test]
    fn conflicting_restored_entries_leave_consistent_indexes() {
        let mut s = QueueState::new();
        let entry = |queue: &str, seq, ordinal| IdemEntry { queue: queue.into(), seq, ordinal };
        s.restore_idem("a".into(), entry("q", 1, 1));
        // Same key again, another ordinal: the later one wins.
        s.restore_idem("a".into(), entry("q", 2, 2));
        check_indexes(&s);
        assert_eq!(s.idempotency_len(), 1);
        assert_eq!(s.idempotent_seq("q", "a"), Some(2));
        // Another key with a taken ordinal: it replaces the holder.
        s.restore_idem("b".into(), entry("r", 5, 2));
        check_indexes(&s);
        assert_eq!(s.idempotency_len(), 1);
        assert_eq!(s.idempotent_seq("q", "a"), None);
        assert_eq!(s.idempotent_seq("r", "b"), Some(5));
        assert!(!s.idem.contains_key("q"));
    }

    #[test]
    fn a_saturated_ordinal_is_recycled_without_breaking_the_indexes() {
        let mut s = QueueState::new();
        s.restore_queue("q".into(), meta(1, 1, 2));
        s.restore_idem("a".into(), IdemEntry { queue: "q".into(), seq: 1, ordinal: u64::MAX });
        let (o, e) = run(&mut s, &enq_key("q", "x", "b"), &ROOMY);
        assert_eq!(o, enqueued(2));
        assert_eq!(
            e,
            vec![
                put_event("q", 2, "x"),
                del_idem("q", "a", u64::MAX),
                put_idem("q", "b", 2, u64::MAX),
                put_queue("q", meta(1, 1, 3)),
            ]
        );
        assert_eq!(s.idempotency_len(), 1);
        assert_eq!(s.idempotent_seq("q", "b"), Some(2));
    }

    // ---------------------------------------------------------------------
    // Property tests against a reference model
    // ---------------------------------------------------------------------

    const QUEUES: [&str; 4] = ["", "a", "b", "c"];
    const KEYS: [&str; 3] = ["", "k1", "k2"];
    const NAMES: [&str; 3] = ["", "s1", "s2"];

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue {
            queue: usize,
            event: String,
            key: Option<usize>,
        },
        Dequeue {
            queue: usize,
            expect: Option<Seq>,
        },
        /// Dequeue with the model's current front as `expect_seq`, so the
        /// matching path is hit as often as the conflicting one.
        DequeueFront {
            queue: usize,
        },
        Alloc {
            name: usize,
            count: u64,
        },
        Compact {
            queue: usize,
            upto: Seq,
        },
        /// Replace the state with one rebuilt from storage.
        Restart,
    }

    /// The obvious implementation: bodies kept in memory, linear scans.
    struct ModelQueue {
        retained: VecDeque<(Seq, String)>,
        pending: VecDeque<(Seq, String)>,
        next: Seq,
    }

    #[derive(Default)]
    struct Model {
        queues: BTreeMap<String, ModelQueue>,
        /// (queue, key, seq), oldest first.
        idem: Vec<(String, String, Seq)>,
        sequences: BTreeMap<String, u64>,
    }

    impl Model {
        fn apply(&mut self, cmd: &Command, l: &Limits) -> Outcome {
            match cmd {
                Command::Enqueue { queue, event, idempotency_key } => {
                    if let Some(key) = idempotency_key {
                        if let Some((_, _, seq)) =
                            self.idem.iter().find(|(q, k, _)| q == queue && k == key)
                        {
                            return duplicate(*seq);
                        }
                    }
                    if !self.queues.contains_key(queue) && self.queues.len() as u64 >= l.queues_max
                    {
                        return Outcome::Rejected(Rejection::TooManyQueues { max: l.queues_max });
                    }
                    let len = self.queues.get(queue).map_or(0, |q| q.pending.len());
                    if len as u64 >= l.queue_events_max {
                        return Outcome::Rejected(Rejection::QueueFull { max: l.queue_events_max });
                    }
                    let q = self.queues.entry(queue.clone()).or_insert_with(|| ModelQueue {
                        retained: VecDeque::new(),
                        pending: VecDeque::new(),
                        next: 1,
                    });
                    let seq = q.next;
                    q.next += 1;
                    q.pending.push_back((seq, event.clone()));
                    if let Some(key) = idempotency_key {
                        self.idem.push((queue.clone(), key.clone(), seq));
                        while self.idem.len() as u64 > l.idempotency_keys_max {
                            self.idem.remove(0);
                        }
                    }
                    enqueued(seq)
                }
                Command::Dequeue { queue, expect_seq } => {
                    let front = self.front(queue);
                    match (front, expect_seq) {
                        (None, Some(_)) => Outcome::Conflict { front: None },
                        (None, None) => Outcome::Empty,
                        (Some(front), Some(n)) if *n != front => {
                            Outcome::Conflict { front: Some(front) }
                        }
                        (Some(front), _) => {
                            let q = self.queues.get_mut(queue).unwrap();
                            let event = q.pending.pop_front().unwrap();
                            q.retained.push_back(event);
                            while q.retained.len() as u64 > l.retention_events {
                                q.retained.pop_front();
                            }
                            Outcome::Dequeued { queue: queue.clone(), seq: front }
                        }
                    }
                }
                Command::Compact { queue, upto } => {
                    let Some(q) = self.queues.get_mut(queue) else {
                        return Outcome::Compacted { oldest: 1, dropped: 0 };
                    };
                    let mut dropped = 0;
                    while q.retained.front().is_some_and(|(seq, _)| seq < upto) {
                        q.retained.pop_front();
                        dropped += 1;
                    }
                    let oldest =
                        q.retained.front().or(q.pending.front()).map_or(q.next, |(seq, _)| *seq);
                    Outcome::Compacted { oldest, dropped }
                }
                Command::AllocSeq { name, count } => {
                    let known = self.sequences.get(name).copied();
                    let first = known.unwrap_or(1);
                    if *count == 0 || first.checked_add(*count).is_none() {
                        return Outcome::Rejected(Rejection::InvalidCount);
                    }
                    if known.is_none() && self.sequences.len() as u64 >= l.queues_max {
                        return Outcome::Rejected(Rejection::TooManyQueues { max: l.queues_max });
                    }
                    self.sequences.insert(name.clone(), first + count);
                    Outcome::Allocated { first, last: first + count - 1 }
                }
                // The model covers the queue core; `work`'s proptest covers
                // the work-queue commands.
                other => unreachable!("not generated: {other:?}"),
            }
        }

        fn front(&self, queue: &str) -> Option<Seq> {
            self.queues.get(queue)?.pending.front().map(|(seq, _)| *seq)
        }
    }

    fn small_limit() -> impl Strategy<Value = u64> {
        prop_oneof![8 => 0u64..4, 1 => Just(u64::MAX)]
    }

    fn small_limits() -> impl Strategy<Value = Limits> {
        (small_limit(), small_limit(), small_limit(), small_limit())
            .prop_map(|(r, e, k, q)| limits(r, e, k, q))
    }

    fn count() -> impl Strategy<Value = u64> {
        prop_oneof![
            6 => 0u64..5,
            1 => Just(u64::MAX),
            1 => Just(u64::MAX - 1),
            1 => any::<u64>(),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0..QUEUES.len(), "\\PC{0,3}", proptest::option::of(0..KEYS.len()))
                .prop_map(|(queue, event, key)| Op::Enqueue { queue, event, key }),
            2 => (0..QUEUES.len(), proptest::option::of(0u64..8))
                .prop_map(|(queue, expect)| Op::Dequeue { queue, expect }),
            2 => (0..QUEUES.len()).prop_map(|queue| Op::DequeueFront { queue }),
            2 => (0..NAMES.len(), count()).prop_map(|(name, count)| Op::Alloc { name, count }),
            1 => (0..QUEUES.len(), prop_oneof![0u64..10, Just(u64::MAX)])
                .prop_map(|(queue, upto)| Op::Compact { queue, upto }),
            1 => Just(Op::Restart),
        ]
    }

    /// Compare everything observable in the state and storage with the model.
    fn check_against_model(
        state: &QueueState,
        model: &Model,
        storage: &Storage,
    ) -> Result<(), TestCaseError> {
        let names: Vec<&str> = state.queues().map(|(name, _)| name).collect();
        let model_names: Vec<&str> = model.queues.keys().map(String::as_str).collect();
        prop_assert_eq!(&names, &model_names);
        prop_assert!(storage.queues.keys().map(String::as_str).eq(names.iter().copied()));

        let mut stored_events = 0;
        for (name, q) in &model.queues {
            let m = *state.queue(name).unwrap();
            prop_assert_eq!(storage.queues.get(name), Some(&m));
            // Storage holds exactly the retained and pending bodies.
            let expected: Vec<(Seq, String)> =
                q.retained.iter().chain(q.pending.iter()).cloned().collect();
            let stored = storage.events_of(name);
            prop_assert_eq!(&stored, &expected, "events of queue {:?}", name);
            stored_events += stored.len();
            // Gapless from 1: seqs are consecutive and end at the latest one.
            for pair in stored.windows(2) {
                prop_assert_eq!(pair[1].0, pair[0].0 + 1);
            }
            prop_assert_eq!(stored.last().map_or(m.head(), |(seq, _)| *seq), m.head());
            prop_assert_eq!(m.next, q.next);
            prop_assert_eq!(m.oldest, stored.first().map_or(m.front, |(seq, _)| *seq));
            prop_assert_eq!(Some(m.front), q.pending.front().map(|(seq, _)| *seq).or(Some(m.next)));
            prop_assert_eq!(m.len(), q.pending.len() as u64);
            prop_assert_eq!(m.front_seq(), model.front(name));
        }
        prop_assert_eq!(storage.events.len(), stored_events, "bodies of unknown queues");

        prop_assert_eq!(state.idempotency_len(), model.idem.len());
        prop_assert_eq!(storage.idem.len(), model.idem.len());
        let mut last_ordinal = None;
        for (queue, key, seq) in &model.idem {
            prop_assert_eq!(state.idempotent_seq(queue, key), Some(*seq));
            let entry = &storage.idem[&(queue.clone(), key.clone())];
            prop_assert_eq!(entry.seq, *seq);
            prop_assert!(last_ordinal < Some(entry.ordinal), "ordinals out of insertion order");
            last_ordinal = Some(entry.ordinal);
        }

        let sequences: Vec<(&str, u64)> = state.sequences().collect();
        let model_sequences: Vec<(&str, u64)> =
            model.sequences.iter().map(|(name, next)| (name.as_str(), *next)).collect();
        prop_assert_eq!(&sequences, &model_sequences);
        prop_assert!(storage.sequences.iter().map(|(n, v)| (n.as_str(), *v)).eq(sequences));
        Ok(())
    }

    fn run_against_model(steps: Vec<(Op, Limits)>) -> Result<(), TestCaseError> {
        let mut state = QueueState::new();
        let mut model = Model::default();
        let mut storage = Storage::default();
        let mut restarts = 0;
        // Last id handed out per sequence name.
        let mut issued: BTreeMap<String, u64> = BTreeMap::new();

        for (op, l) in steps {
            let cmd = match op {
                Op::Enqueue { queue, event, key } => Command::Enqueue {
                    queue: QUEUES[queue].into(),
                    event,
                    idempotency_key: key.map(|k| KEYS[k].into()),
                },
                Op::Dequeue { queue, expect } => {
                    Command::Dequeue { queue: QUEUES[queue].into(), expect_seq: expect }
                }
                Op::DequeueFront { queue } => Command::Dequeue {
                    queue: QUEUES[queue].into(),
                    expect_seq: model.front(QUEUES[queue]),
                },
                Op::Alloc { name, count } => Command::AllocSeq { name: NAMES[name].into(), count },
                Op::Compact { queue, upto } => {
                    Command::Compact { queue: QUEUES[queue].into(), upto }
                }
                Op::Restart => {
                    restarts += 1;
                    let restored = storage.restore(restarts % 2 == 0);
                    prop_assert_eq!(&restored, &state);
                    state = restored;
                    continue;
                }
            };
            let before = state.clone();
            let mut effects = Vec::new();
            let outcome = state.apply(&cmd, &l, &mut effects);
            let expected = model.apply(&cmd, &l);
            prop_assert_eq!(&outcome, &expected, "{:?} with {:?}", cmd, l);
            check_invariants(&state);

            let changed = matches!(
                outcome,
                Outcome::Enqueued { duplicate: false, .. }
                    | Outcome::Dequeued { .. }
                    | Outcome::Allocated { .. }
            ) || matches!(outcome, Outcome::Compacted { dropped, .. } if dropped > 0);
            if changed {
                prop_assert!(state != before);
                prop_assert!(!effects.is_empty());
            } else {
                prop_assert_eq!(&state, &before);
                prop_assert!(effects.is_empty(), "{:?}", effects);
            }
            storage.write(&effects);

            if let (Outcome::Allocated { first, last }, Command::AllocSeq { name, .. }) =
                (&outcome, &cmd)
            {
                // Gapless, strictly increasing, never repeated.
                prop_assert!(first <= last);
                let previous = issued.insert(name.clone(), *last);
                prop_assert_eq!(*first, previous.map_or(1, |p| p + 1));
            }
            check_against_model(&state, &model, &storage)?;
        }
        prop_assert_eq!(&storage.restore(false), &state);
        prop_assert_eq!(&storage.restore(true), &state);
        Ok(())
    }

    fn any_limit() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..3, any::<u64>()]
    }

    fn any_command() -> impl Strategy<Value = Command> {
        let name = "\\PC{0,2}";
        prop_oneof![
            (name, "\\PC{0,4}", proptest::option::of(name)).prop_map(|(queue, event, key)| {
                Command::Enqueue { queue, event, idempotency_key: key }
            }),
            (name, proptest::option::of(any::<u64>()))
                .prop_map(|(queue, expect_seq)| Command::Dequeue { queue, expect_seq }),
            (name, prop_oneof![0u64..3, any::<u64>()])
                .prop_map(|(name, count)| Command::AllocSeq { name, count }),
            (name, any::<u64>()).prop_map(|(queue, upto)| Command::Compact { queue, upto }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn matches_the_reference_model(l in small_limits(), ops in vec(op(), 0..80)) {
            run_against_model(ops.into_iter().map(|op| (op, l)).collect())?;
        }

        #[test]
        fn matches_the_reference_model_when_limits_change(
            steps in vec((op(), small_limits()), 0..80)
        ) {
            run_against_model(steps)?;
        }

        #[test]
        fn any_command_and_limits_apply_without_panicking(
            steps in vec((any_command(), (any_limit(), any_limit(), any_limit(), any_limit())), 0..40)
        ) {
            let mut state = QueueState::new();
            let mut storage = Storage::default();
            for (cmd, (r, e, k, q)) in steps {
                let (_, effects) = run(&mut state, &cmd, &limits(r, e, k, q));
                storage.write(&effects);
            }
            prop_assert_eq!(&storage.restore(false), &state);
            prop_assert_eq!(&storage.restore(true), &state);
        }
    }
}
