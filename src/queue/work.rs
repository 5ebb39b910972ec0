//! Work-queue semantics on top of [`QueueState`]: per-event availability
//! (leases, delays, out-of-order completion), policies, group cursors and
//! the counters `/status` and `/metrics` show. Pure, like the rest of
//! `queue`: the time is the entry's (`Request.time_ms`), passed in as
//! `now_ms`; randomness (the lease nonce) is chosen by the proposer.
//!
//! Only events that are not plain pending cost memory: one [`Slot`] per
//! event above the queue's front that is leased, delayed, done out of order,
//! or pending after a delivery (its count must survive). Every slot lies in
//! `front..next`, so a queue's slots never outnumber `queue_events_max`.
//!
//! Expiry is lazy: a lease or delay whose `until_ms <= now_ms` makes the
//! event available; nothing is rewritten when time passes. A later `Lease`
//! redelivers it (`deliveries + 1`) or, at the policy's `max_deliveries`,
//! dead-letters it; the leader's `Sweep` does the latter without a lease.
//!
//! Every command runs all its checks before its first mutation, as in
//! `state.rs`: a refused command leaves state and effects untouched.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::state::{count_u64, debug_assert_meta};
use super::{Effect, Limits, Outcome, QueueMeta, QueueState, Rejection, Seq};

/// The lease time when neither the command nor the queue's policy names one.
pub const DEFAULT_LEASE_TTL_MS: u64 = 30_000;

/// The availability of one event above its queue's front (see module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// How often the event was leased so far.
    pub deliveries: u32,
    pub state: SlotState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotState {
    /// Available (it was delivered and given back).
    Pending,
    /// Leased until `until_ms` (exclusive); the token derives from `nonce`.
    Leased { until_ms: u64, nonce: u64 },
    /// Invisible until `until_ms`.
    Delayed { until_ms: u64 },
    /// Acked, popped or dead-lettered while an older event was not done.
    Done,
}

impl Slot {
    /// Whether a lease or pop may take the event at `now_ms`.
    fn available(&self, now_ms: u64) -> bool {
        match self.state {
            SlotState::Pending => true,
            SlotState::Leased { until_ms, .. } | SlotState::Delayed { until_ms } => {
                until_ms <= now_ms
            }
            SlotState::Done => false,
        }
    }

    fn expired_lease(&self, now_ms: u64) -> bool {
        matches!(self.state, SlotState::Leased { until_ms, .. } if until_ms <= now_ms)
    }
}

/// A queue's work-queue policy; all `None` is the same as no policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePolicy {
    /// Deliveries after which an expired or nacked lease dead-letters.
    pub max_deliveries: Option<u32>,
    /// Where dead-lettered events go (required with `max_deliveries`).
    pub dead_letter: Option<String>,
    /// The lease time of a lease that names none.
    pub lease_ttl_ms: Option<u64>,
}

impl QueuePolicy {
    fn is_empty(&self) -> bool {
        *self == QueuePolicy::default()
    }

    /// The dead-letter queue, if an event with `deliveries` must go there.
    fn dead_letter_for(&self, deliveries: u32) -> Option<&str> {
        let max = self.max_deliveries?;
        (deliveries >= max).then_some(self.dead_letter.as_deref()).flatten()
    }
}

/// A queue's replicated totals. Each lease expiry is counted once, when it
/// is resolved (redelivered, popped or dead-lettered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkCounters {
    pub redelivered: u64,
    pub expired: u64,
    pub dead_lettered: u64,
}

/// What `/status` and `/metrics` show per queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WorkStats {
    /// Events under a lease (expired ones too, until resolved).
    pub leased: u64,
    /// Events delayed (matured ones too, until taken or swept).
    pub delayed: u64,
    #[serde(flatten)]
    pub counters: WorkCounters,
}

/// One event a `Lease` handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedEvent {
    pub queue: String,
    pub seq: Seq,
    pub token: String,
    /// 1 on first delivery.
    pub deliveries: u32,
}

/// The opaque lease token: the leader's random nonce makes it unguessable,
/// seq and delivery count make each delivery's token distinct. Every node
/// derives the same string, so only the nonce is stored.
pub fn lease_token(nonce: u64, seq: Seq, deliveries: u32) -> String {
    format!("{nonce:016x}-{seq}-{deliveries}")
}

/// What a planned step of `Lease` or `Sweep` does to one event.
enum Step {
    Lease { seq: Seq, slot: Option<Slot> },
    DeadLetter { seq: Seq, slot: Slot, to: String },
}

impl QueueState {
    /// The oldest event of `queue` that `GET /event`, `DELETE /event` and a
    /// lease would take at `now_ms` (the reader passes its clock; applies
    /// the entry's time). FIFO among available events.
    pub fn available(&self, queue: &str, now_ms: u64) -> Option<Seq> {
        let meta = self.queues.get(queue)?;
        self.available_from(queue, meta, now_ms).next()
    }

    /// Available seqs of `queue`, oldest first. Costs one step per slot
    /// passed over, plus one per seq returned.
    fn available_from<'a>(
        &'a self,
        queue: &str,
        meta: &QueueMeta,
        now_ms: u64,
    ) -> impl Iterator<Item = Seq> + 'a {
        let slots = self.slots.get(queue);
        (meta.front..meta.next).filter(move |seq| {
            slots.and_then(|s| s.get(seq)).is_none_or(|slot| slot.available(now_ms))
        })
    }

    /// Queues where a `Sweep` at `now_ms` would do something: an expired
    /// lease due for the dead-letter queue, or a matured delay. For the
    /// leader's sweeper, which proposes `Sweep { queue: Some(..) }` for
    /// each (linear in the slots).
    pub fn sweep_due(&self, now_ms: u64) -> impl Iterator<Item = &str> + '_ {
        self.slots.iter().filter_map(move |(queue, slots)| {
            let policy = self.policies.get(queue);
            slots
                .values()
                .any(|slot| match slot.state {
                    SlotState::Delayed { until_ms } => until_ms <= now_ms,
                    SlotState::Leased { until_ms, .. } => {
                        until_ms <= now_ms
                            && policy.and_then(|p| p.dead_letter_for(slot.deliveries)).is_some()
                    }
                    SlotState::Pending | SlotState::Done => false,
                })
                .then_some(queue.as_str())
        })
    }

    /// The earliest time after `now_ms` at which a lease or delay of
    /// `queue` runs out, making an event available without any apply. A
    /// long poll sleeps until then (or until an apply), never polling.
    pub fn next_due(&self, queue: &str, now_ms: u64) -> Option<u64> {
        self.slots(queue)
            .filter_map(|(_, slot)| match slot.state {
                SlotState::Leased { until_ms, .. } | SlotState::Delayed { until_ms } => {
                    (until_ms > now_ms).then_some(until_ms)
                }
                SlotState::Pending | SlotState::Done => None,
            })
            .min()
    }

    /// The slot of `queue`'s event `seq`, if it has one.
    pub fn slot(&self, queue: &str, seq: Seq) -> Option<&Slot> {
        self.slots.get(queue)?.get(&seq)
    }

    /// All slots of `queue`, by seq.
    pub fn slots(&self, queue: &str) -> impl Iterator<Item = (Seq, &Slot)> {
        self.slots.get(queue).into_iter().flatten().map(|(seq, slot)| (*seq, slot))
    }

    /// Queues with slots or counters, by name.
    pub fn work_queues(&self) -> impl Iterator<Item = &str> {
        let mut names: Vec<&str> =
            self.slots.keys().chain(self.counters.keys()).map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter()
    }

    pub fn policy(&self, queue: &str) -> Option<&QueuePolicy> {
        self.policies.get(queue)
    }

    pub fn policies(&self) -> impl Iterator<Item = (&str, &QueuePolicy)> {
        self.policies.iter().map(|(q, p)| (q.as_str(), p))
    }

    pub fn cursor(&self, queue: &str, group: &str) -> Option<Seq> {
        self.cursors.get(queue)?.get(group).copied()
    }

    /// Every cursor as (queue, group, seq), ordered.
    pub fn cursors(&self) -> impl Iterator<Item = (&str, &str, Seq)> {
        self.cursors
            .iter()
            .flat_map(|(q, groups)| groups.iter().map(move |(g, s)| (q.as_str(), g.as_str(), *s)))
    }

    pub fn counters(&self, queue: &str) -> WorkCounters {
        self.counters.get(queue).copied().unwrap_or_default()
    }

    /// The gauges and totals of `queue` (linear in its slots).
    pub fn work_stats(&self, queue: &str) -> WorkStats {
        let mut stats = WorkStats { counters: self.counters(queue), ..WorkStats::default() };
        for (_, slot) in self.slots(queue) {
            match slot.state {
                SlotState::Leased { .. } => stats.leased += 1,
                SlotState::Delayed { .. } => stats.delayed += 1,
                SlotState::Pending | SlotState::Done => {}
            }
        }
        stats
    }

    fn count_slots(&self, queue: &str, pred: impl Fn(&SlotState) -> bool) -> u64 {
        count_u64(self.slots(queue).filter(|(_, slot)| pred(&slot.state)).count())
    }

    /// Rebuild from storage: one slot.
    pub fn restore_slot(&mut self, queue: String, seq: Seq, slot: Slot) {
        self.slots.entry(queue).or_default().insert(seq, slot);
    }

    /// Rebuild from storage: one policy.
    pub fn restore_policy(&mut self, queue: String, policy: QueuePolicy) {
        self.policies.insert(queue, policy);
    }

    /// Rebuild from storage: one group cursor.
    pub fn restore_cursor(&mut self, queue: String, group: String, seq: Seq) {
        self.cursors.entry(queue).or_default().insert(group, seq);
    }

    /// Rebuild from storage: one queue's counters.
    pub fn restore_counters(&mut self, queue: String, counters: WorkCounters) {
        self.counters.insert(queue, counters);
    }

    fn ttl(&self, queue: &str, ttl_ms: Option<u64>) -> u64 {
        ttl_ms
            .or_else(|| self.policies.get(queue).and_then(|p| p.lease_ttl_ms))
            .unwrap_or(DEFAULT_LEASE_TTL_MS)
    }

    fn put_slot(&mut self, queue: &str, seq: Seq, slot: Slot, effects: &mut Vec<Effect>) {
        self.slots.entry(queue.to_owned()).or_default().insert(seq, slot);
        effects.push(Effect::PutSlot { queue: queue.to_owned(), seq, slot: Some(slot) });
    }

    fn bump(&mut self, queue: &str, f: impl FnOnce(&mut WorkCounters)) {
        f(self.counters.entry(queue.to_owned()).or_default());
    }

    fn put_counters(&mut self, queue: &str, before: WorkCounters, effects: &mut Vec<Effect>) {
        let counters = self.counters(queue);
        if counters != before {
            effects.push(Effect::PutCounters { queue: queue.to_owned(), counters });
        }
    }

    /// How many more events queue `to` can take by dead-lettering (0 when
    /// it cannot be created).
    fn room(&self, to: &str, limits: &Limits) -> u64 {
        match self.queues.get(to) {
            Some(meta) => {
                limits.queue_events_max.saturating_sub(meta.len()).min(u64::MAX - meta.next)
            }
            None if count_u64(self.queues.len()) >= limits.queues_max => 0,
            None => limits.queue_events_max,
        }
    }

    /// Marks `queue`'s event `seq` done (acked, popped, dead-lettered):
    /// advances the front over done events, forgetting their slots, and
    /// applies the retention limit. Stores the new pointers.
    pub(super) fn finish(
        &mut self,
        queue: &str,
        seq: Seq,
        limits: &Limits,
        effects: &mut Vec<Effect>,
    ) {
        let Some(mut meta) = self.queues.get(queue).copied() else {
            return;
        };
        let slots = self.slots.entry(queue.to_owned()).or_default();
        if seq != meta.front {
            let deliveries = slots.get(&seq).map_or(0, |s| s.deliveries);
            let slot = Slot { deliveries, state: SlotState::Done };
            slots.insert(seq, slot);
            effects.push(Effect::PutSlot { queue: queue.to_owned(), seq, slot: Some(slot) });
        } else {
            let mut front = seq.saturating_add(1);
            while slots.get(&front).is_some_and(|s| s.state == SlotState::Done) {
                front += 1;
            }
            let passed: Vec<Seq> = slots.range(seq..front).map(|(s, _)| *s).collect();
            for s in &passed {
                slots.remove(s);
            }
            if !passed.is_empty() {
                effects.push(Effect::DeleteSlots { queue: queue.to_owned(), from: seq, to: front });
            }
            meta.front = front.min(meta.next);
            // One range delete however far behind `oldest` is (as in
            // `dequeue`), so the batch size does not depend on history.
            if meta.front.saturating_sub(meta.oldest) > limits.retention_events {
                let to = meta.front - limits.retention_events;
                effects.push(Effect::DeleteEvents {
                    queue: queue.to_owned(),
                    from: meta.oldest,
                    to,
                });
                meta.oldest = to;
            }
            debug_assert_meta(&meta);
            self.queues.insert(queue.to_owned(), meta);
            effects.push(Effect::PutQueue { queue: queue.to_owned(), meta });
        }
        if self.slots.get(queue).is_some_and(BTreeMap::is_empty) {
            self.slots.remove(queue);
        }
    }

    /// Moves `queue`'s event `seq` (delivered `deliveries` times) to the end
    /// of queue `to`; the caller checked `room`.
    fn dead_letter(
        &mut self,
        queue: &str,
        seq: Seq,
        deliveries: u32,
        to: &str,
        limits: &Limits,
        effects: &mut Vec<Effect>,
    ) {
        let meta = self.queues.get(to).copied().unwrap_or(QueueMeta::NEW);
        let to_seq = meta.next;
        let new = QueueMeta { next: to_seq + 1, ..meta };
        self.queues.insert(to.to_owned(), new);
        effects.push(Effect::DeadLetter {
            queue: queue.to_owned(),
            seq,
            deliveries,
            to: to.to_owned(),
            to_seq,
        });
        effects.push(Effect::PutQueue { queue: to.to_owned(), meta: new });
        self.bump(queue, |c| c.dead_lettered += 1);
        self.finish(queue, seq, limits, effects);
    }

    pub(super) fn lease(
        &mut self,
        queue: &str,
        max: u32,
        ttl_ms: Option<u64>,
        nonce: u64,
        now_ms: u64,
        limits: &Limits,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        if max == 0 {
            return Outcome::Rejected(Rejection::InvalidCount);
        }
        let Some(meta) = self.queues.get(queue).copied() else {
            return Outcome::Leased(Vec::new());
        };
        let policy = self.policies.get(queue).cloned().unwrap_or_default();
        // Only live leases count: expired ones are available again, and
        // counting them could lock a queue whose workers all died.
        let live = self.count_slots(
            queue,
            |s| matches!(s, SlotState::Leased { until_ms, .. } if *until_ms > now_ms),
        );
        let mut budget = limits.leases_max.saturating_sub(live);
        let mut rooms: BTreeMap<String, u64> = BTreeMap::new();
        let mut plan = Vec::new();
        let mut leases = 0;
        let mut refused = false;
        for seq in self.available_from(queue, &meta, now_ms) {
            let slot = self.slot(queue, seq).copied();
            if let Some(to) = slot.as_ref().and_then(|s| {
                s.expired_lease(now_ms).then(|| policy.dead_letter_for(s.deliveries)).flatten()
            }) {
                let room = rooms.entry(to.to_owned()).or_insert_with(|| self.room(to, limits));
                if *room > 0 {
                    *room -= 1;
                    plan.push(Step::DeadLetter {
                        seq,
                        slot: slot.unwrap_or(Slot { deliveries: 0, state: SlotState::Done }),
                        to: to.to_owned(),
                    });
                }
                // Without room it stays expired: the sweeper retries later.
                continue;
            }
            if budget == 0 {
                refused = leases == 0;
                break;
            }
            budget -= 1;
            plan.push(Step::Lease { seq, slot });
            leases += 1;
            if leases == max {
                break;
            }
        }
        if refused && plan.is_empty() {
            return Outcome::Rejected(Rejection::TooManyLeases { max: limits.leases_max });
        }

        let before = self.counters(queue);
        let until_ms = now_ms.saturating_add(self.ttl(queue, ttl_ms));
        let mut leased = Vec::new();
        for step in plan {
            match step {
                Step::DeadLetter { seq, slot, to } => {
                    self.bump(queue, |c| c.expired += 1);
                    self.dead_letter(queue, seq, slot.deliveries, &to, limits, effects);
                }
                Step::Lease { seq, slot } => {
                    let old = slot.map_or(0, |s| s.deliveries);
                    if slot.is_some_and(|s| s.expired_lease(now_ms)) {
                        self.bump(queue, |c| c.expired += 1);
                    }
                    if old > 0 {
                        self.bump(queue, |c| c.redelivered += 1);
                    }
                    let deliveries = old.saturating_add(1);
                    let slot = Slot { deliveries, state: SlotState::Leased { until_ms, nonce } };
                    self.put_slot(queue, seq, slot, effects);
                    let token = lease_token(nonce, seq, deliveries);
                    leased.push(LeasedEvent { queue: queue.to_owned(), seq, token, deliveries });
                }
            }
        }
        self.put_counters(queue, before, effects);
        Outcome::Leased(leased)
    }

    /// The slot of `seq` if `token` is its current lease.
    fn leased_slot(&self, queue: &str, seq: Seq, token: &str) -> Option<(Slot, u64)> {
        let slot = *self.slot(queue, seq)?;
        match slot.state {
            SlotState::Leased { until_ms, nonce }
                if lease_token(nonce, seq, slot.deliveries) == token =>
            {
                Some((slot, until_ms))
            }
            _ => None,
        }
    }

    pub(super) fn ack(
        &mut self,
        queue: &str,
        seq: Seq,
        token: &str,
        limits: &Limits,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        if self.leased_slot(queue, seq, token).is_none() {
            return Outcome::LeaseLost;
        }
        self.finish(queue, seq, limits, effects);
        Outcome::Acked
    }

    pub(super) fn nack(
        &mut self,
        queue: &str,
        seq: Seq,
        token: &str,
        delay_ms: u64,
        now_ms: u64,
        limits: &Limits,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let Some((slot, _)) = self.leased_slot(queue, seq, token) else {
            return Outcome::LeaseLost;
        };
        let policy = self.policies.get(queue).cloned().unwrap_or_default();
        if let Some(to) = policy.dead_letter_for(slot.deliveries) {
            if self.room(to, limits) > 0 {
                let before = self.counters(queue);
                self.dead_letter(queue, seq, slot.deliveries, to, limits, effects);
                self.put_counters(queue, before, effects);
                return Outcome::Nacked { dead_lettered: true };
            }
        }
        let state = if delay_ms == 0 {
            SlotState::Pending
        } else {
            let delayed = self.count_slots(queue, |s| matches!(s, SlotState::Delayed { .. }));
            if delayed >= limits.delayed_max {
                return Outcome::Rejected(Rejection::TooManyDelayed { max: limits.delayed_max });
            }
            SlotState::Delayed { until_ms: now_ms.saturating_add(delay_ms) }
        };
        self.put_slot(queue, seq, Slot { deliveries: slot.deliveries, state }, effects);
        Outcome::Nacked { dead_lettered: false }
    }

    pub(super) fn extend(
        &mut self,
        queue: &str,
        seq: Seq,
        token: &str,
        ttl_ms: Option<u64>,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let Some((slot, until_ms)) = self.leased_slot(queue, seq, token) else {
            return Outcome::LeaseLost;
        };
        if until_ms <= now_ms {
            return Outcome::LeaseLost;
        }
        let SlotState::Leased { nonce, .. } = slot.state else {
            return Outcome::LeaseLost;
        };
        let until_ms = now_ms.saturating_add(self.ttl(queue, ttl_ms));
        let slot = Slot { state: SlotState::Leased { until_ms, nonce }, ..slot };
        self.put_slot(queue, seq, slot, effects);
        Outcome::Extended { until_ms }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn enqueue_batch(
        &mut self,
        queue: &str,
        events: &[String],
        key: Option<&str>,
        delay_ms: u64,
        now_ms: u64,
        limits: &Limits,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let n = count_u64(events.len());
        if let Some(first) = key.and_then(|key| self.idempotent_seq(queue, key)) {
            let last = first.saturating_add(n.saturating_sub(1));
            return Outcome::BatchEnqueued { first, last, duplicate: true };
        }
        if n == 0 {
            return Outcome::Rejected(Rejection::InvalidCount);
        }
        let meta = match self.meta_or_new(queue, limits) {
            Ok(meta) => meta,
            Err(rejected) => return rejected,
        };
        let full = Outcome::Rejected(Rejection::QueueFull { max: limits.queue_events_max });
        if meta.len().saturating_add(n) > limits.queue_events_max {
            return full;
        }
        let Some(next) = meta.next.checked_add(n) else {
            return full;
        };
        if delay_ms > 0 {
            let delayed = self.count_slots(queue, |s| matches!(s, SlotState::Delayed { .. }));
            if delayed.saturating_add(n) > limits.delayed_max {
                return Outcome::Rejected(Rejection::TooManyDelayed { max: limits.delayed_max });
            }
        }
        let first = meta.next;
        let until_ms = now_ms.saturating_add(delay_ms);
        for (seq, event) in (first..next).zip(events) {
            effects.push(Effect::PutEvent { queue: queue.to_owned(), seq, event: event.clone() });
            if delay_ms > 0 {
                let slot = Slot { deliveries: 0, state: SlotState::Delayed { until_ms } };
                self.put_slot(queue, seq, slot, effects);
            }
        }
        if let Some(key) = key {
            self.remember_idem(queue, key, first, limits, effects);
        }
        let meta = QueueMeta { next, ..meta };
        debug_assert_meta(&meta);
        self.queues.insert(queue.to_owned(), meta);
        effects.push(Effect::PutQueue { queue: queue.to_owned(), meta });
        Outcome::BatchEnqueued { first, last: next - 1, duplicate: false }
    }

    pub(super) fn set_policy(
        &mut self,
        queue: &str,
        policy: &QueuePolicy,
        limits: &Limits,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let invalid = policy.max_deliveries == Some(0)
            || (policy.max_deliveries.is_some() && policy.dead_letter.is_none())
            || policy.dead_letter.as_deref() == Some(queue);
        if invalid {
            return Outcome::Rejected(Rejection::InvalidPolicy);
        }
        if policy.is_empty() {
            if self.policies.remove(queue).is_some() {
                effects.push(Effect::PutPolicy { queue: queue.to_owned(), policy: None });
            }
            return Outcome::PolicySet;
        }
        if !self.policies.contains_key(queue) && count_u64(self.policies.len()) >= limits.queues_max
        {
            return Outcome::Rejected(Rejection::TooManyQueues { max: limits.queues_max });
        }
        self.policies.insert(queue.to_owned(), policy.clone());
        effects.push(Effect::PutPolicy { queue: queue.to_owned(), policy: Some(policy.clone()) });
        Outcome::PolicySet
    }

    pub(super) fn set_cursor(
        &mut self,
        queue: &str,
        group: &str,
        seq: Seq,
        if_seq: Option<Seq>,
        limits: &Limits,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let current = self.cursor(queue, group);
        if if_seq.is_some_and(|expected| expected != current.unwrap_or(0)) {
            return Outcome::CursorConflict { current };
        }
        if current.is_none() && count_u64(self.cursors().count()) >= limits.queues_max {
            return Outcome::Rejected(Rejection::TooManyQueues { max: limits.queues_max });
        }
        self.cursors.entry(queue.to_owned()).or_default().insert(group.to_owned(), seq);
        effects.push(Effect::PutCursor { queue: queue.to_owned(), group: group.to_owned(), seq });
        Outcome::CursorSet { seq }
    }

    pub(super) fn sweep(
        &mut self,
        only: Option<&str>,
        max: u32,
        now_ms: u64,
        limits: &Limits,
        effects: &mut Vec<Effect>,
    ) -> Outcome {
        let names: Vec<String> = match only {
            Some(queue) => vec![queue.to_owned()],
            None => self.slots.keys().cloned().collect(),
        };
        let (mut expired, mut moved) = (0u64, 0u64);
        let mut budget = u64::from(max);
        for queue in names {
            let policy = self.policies.get(&queue).cloned().unwrap_or_default();
            let mut rooms: BTreeMap<String, u64> = BTreeMap::new();
            let mut plan = Vec::new();
            let mut matured = Vec::new();
            for (seq, slot) in self.slots(&queue) {
                if budget == 0 {
                    break;
                }
                if matches!(slot.state, SlotState::Delayed { until_ms } if until_ms <= now_ms) {
                    matured.push((seq, *slot));
                    budget -= 1;
                    continue;
                }
                if !slot.expired_lease(now_ms) {
                    continue;
                }
                expired += 1;
                let Some(to) = policy.dead_letter_for(slot.deliveries) else {
                    continue;
                };
                let room = rooms.entry(to.to_owned()).or_insert_with(|| self.room(to, limits));
                if *room > 0 {
                    *room -= 1;
                    budget -= 1;
                    plan.push(Step::DeadLetter { seq, slot: *slot, to: to.to_owned() });
                }
            }
            let before = self.counters(&queue);
            for (seq, slot) in matured {
                if slot.deliveries == 0 {
                    if let Some(slots) = self.slots.get_mut(&queue) {
                        slots.remove(&seq);
                        if slots.is_empty() {
                            self.slots.remove(&queue);
                        }
                    }
                    effects.push(Effect::PutSlot { queue: queue.clone(), seq, slot: None });
                } else {
                    let slot = Slot { state: SlotState::Pending, ..slot };
                    self.put_slot(&queue, seq, slot, effects);
                }
            }
            for step in plan {
                if let Step::DeadLetter { seq, slot, to } = step {
                    self.bump(&queue, |c| c.expired += 1);
                    self.dead_letter(&queue, seq, slot.deliveries, &to, limits, effects);
                    moved += 1;
                }
            }
            self.put_counters(&queue, before, effects);
        }
        Outcome::Swept { expired, dead_lettered: moved }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::queue::Command;

    const LIMITS: Limits = Limits {
        retention_events: 1,
        queue_events_max: 4,
        idempotency_keys_max: 4,
        queues_max: 4,
        leases_max: 2,
        delayed_max: 2,
    };

    fn batch(queue: &str, events: &[&str], delay_ms: u64) -> Command {
        Command::EnqueueBatch {
            queue: queue.into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            idempotency_key: None,
            delay_ms,
        }
    }

    fn apply(s: &mut QueueState, cmd: &Command, now: u64) -> (Outcome, Vec<Effect>) {
        let mut effects = Vec::new();
        let outcome = s.apply_at(cmd, &LIMITS, now, &mut effects);
        (outcome, effects)
    }

    #[test]
    fn tokens_differ_per_nonce_seq_and_delivery() {
        let tokens = [lease_token(1, 2, 3), lease_token(2, 2, 3), lease_token(1, 3, 3)];
        assert_eq!(tokens[0], "0000000000000001-2-3");
        assert_ne!(tokens[0], tokens[1]);
        assert_ne!(tokens[0], tokens[2]);
        assert_ne!(tokens[0], lease_token(1, 2, 4));
    }

    #[test]
    fn log_entries_written_before_work_queues_still_decode() {
        let old = r#"{"retention_events":1,"queue_events_max":2,"idempotency_keys_max":3,"queues_max":4}"#;
        let limits: Limits = serde_json::from_str(old).unwrap();
        assert_eq!(limits.leases_max, Limits::DEFAULT.leases_max);
        assert_eq!(limits.delayed_max, Limits::DEFAULT.delayed_max);
        let batch = r#"{"EnqueueBatch":{"queue":"q","events":["a"],"idempotency_key":null}}"#;
        let batch: Command = serde_json::from_str(batch).unwrap();
        assert!(matches!(batch, Command::EnqueueBatch { delay_ms: 0, .. }));
    }

    #[test]
    fn sweep_due_names_queues_with_matured_delays_or_dead_letters_due() {
        let mut s = QueueState::new();
        apply(&mut s, &batch("d", &["x"], 10), 0);
        let policy = QueuePolicy {
            max_deliveries: Some(1),
            dead_letter: Some("dl".into()),
            lease_ttl_ms: Some(5),
        };
        apply(&mut s, &Command::SetPolicy { queue: "l".into(), policy }, 0);
        apply(&mut s, &batch("l", &["y"], 0), 0);
        apply(&mut s, &batch("p", &["z"], 0), 0);
        let lease = |q: &str| Command::Lease { queue: q.into(), max: 1, ttl_ms: None, nonce: 1 };
        apply(&mut s, &lease("l"), 0);
        apply(&mut s, &lease("p"), 0);
        assert_eq!(s.sweep_due(4).count(), 0);
        assert_eq!(s.sweep_due(5).collect::<Vec<_>>(), vec!["l"]);
        // "p" has an expired lease but no policy: redelivery waits for a lease.
        assert_eq!(s.sweep_due(10).collect::<Vec<_>>(), vec!["d", "l"]);
        apply(&mut s, &Command::Sweep { queue: None, max: 10 }, 10);
        assert_eq!(s.sweep_due(10).count(), 0);
        assert_eq!(s.queue("dl").map(QueueMeta::len), Some(1));
    }

    #[test]
    fn next_due_is_the_earliest_lease_or_delay_still_running() {
        let mut s = QueueState::new();
        assert_eq!(s.next_due("q", 0), None);
        apply(&mut s, &batch("q", &["late"], 20), 0);
        apply(&mut s, &batch("q", &["now"], 0), 0);
        assert_eq!(s.next_due("q", 0), Some(20));
        let lease = Command::Lease { queue: "q".into(), max: 1, ttl_ms: Some(5), nonce: 1 };
        apply(&mut s, &lease, 1);
        // The lease runs out at 6, before the delay at 20.
        assert_eq!(s.next_due("q", 1), Some(6));
        // Past ones do not count: a waiter would wake at once, forever.
        assert_eq!(s.next_due("q", 6), Some(20));
        assert_eq!(s.next_due("q", 20), None);
        assert_eq!(s.next_due("other", 0), None);
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![Just("a".to_owned()), Just("b".to_owned()), Just("".to_owned())]
    }

    fn big() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..4, Just(u64::MAX), Just(u64::MAX - 1)]
    }

    fn command() -> impl Strategy<Value = Command> {
        let token = prop_oneof![
            Just(String::new()),
            (0u64..3, 0u64..4, 0u32..3).prop_map(|(n, s, d)| lease_token(n, s, d)),
        ];
        prop_oneof![
            (name(), prop::collection::vec("[a-z]{0,2}", 0..4), big(), prop::option::of(name()))
                .prop_map(|(queue, events, delay_ms, idempotency_key)| {
                    Command::EnqueueBatch { queue, events, idempotency_key, delay_ms }
                }),
            (name(), prop_oneof![0u32..3, Just(u32::MAX)], prop::option::of(big()), 0u64..3)
                .prop_map(|(queue, max, ttl_ms, nonce)| Command::Lease {
                    queue,
                    max,
                    ttl_ms,
                    nonce
                }),
            (name(), big(), token.clone()).prop_map(|(queue, seq, token)| Command::Ack {
                queue,
                seq,
                token
            }),
            (name(), big(), token.clone(), big()).prop_map(|(queue, seq, token, delay_ms)| {
                Command::Nack { queue, seq, token, delay_ms }
            }),
            (name(), big(), token, prop::option::of(big())).prop_map(
                |(queue, seq, token, ttl_ms)| Command::Extend { queue, seq, token, ttl_ms }
            ),
            (name(), prop::option::of(big()))
                .prop_map(|(queue, expect_seq)| Command::Dequeue { queue, expect_seq }),
            (name(), prop::option::of(0u32..3), prop::option::of(name()), prop::option::of(big()))
                .prop_map(|(queue, max_deliveries, dead_letter, lease_ttl_ms)| {
                    let policy = QueuePolicy { max_deliveries, dead_letter, lease_ttl_ms };
                    Command::SetPolicy { queue, policy }
                }),
            (name(), name(), big(), prop::option::of(big())).prop_map(
                |(queue, group, seq, if_seq)| Command::SetCursor { queue, group, seq, if_seq }
            ),
            (prop::option::of(name()), prop_oneof![0u32..3, Just(u32::MAX)])
                .prop_map(|(queue, max)| Command::Sweep { queue, max }),
        ]
    }

    proptest! {
        /// Extreme times, seqs, counts and tokens never panic; a refused
        /// command or a lost lease changes nothing and writes nothing; slots
        /// stay within `front..next`.
        #[test]
        fn any_work_command_is_safe_and_refusals_change_nothing(
            steps in prop::collection::vec((command(), big()), 0..40),
        ) {
            let mut s = QueueState::new();
            for (cmd, now) in steps {
                let before = s.clone();
                let (outcome, effects) = apply(&mut s, &cmd, now);
                if matches!(
                    outcome,
                    Outcome::Rejected(_) | Outcome::LeaseLost | Outcome::CursorConflict { .. }
                ) {
                    prop_assert_eq!(&s, &before, "{:?} -> {:?}", cmd, outcome);
                    prop_assert!(effects.is_empty());
                }
                for (queue, meta) in s.queues() {
                    prop_assert!(meta.oldest <= meta.front && meta.front <= meta.next);
                    for (seq, _) in s.slots(queue) {
                        prop_assert!(meta.front <= seq && seq < meta.next, "{} {}", queue, seq);
                    }
                }
                prop_assert!(s.slots.values().all(|slots| !slots.is_empty()));
            }
        }
    }
}
