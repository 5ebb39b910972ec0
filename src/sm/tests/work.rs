//! The work-queue commands through the whole core against a simple model:
//! arbitrary interleavings of enqueue (plain, delayed, batched), lease, ack,
//! nack, extend, pop, peek, policy changes, cursors, sweeps and time. After
//! every apply the replies and counters are the model's and the core
//! restored from its writes equals the live one; after a final drain every
//! event was acked, popped or dead-lettered exactly once.

use super::*;
use crate::queue::{lease_token, QueuePolicy};

const QUEUES: [&str; 3] = ["a", "b", "dl"];

const WORK_LIMITS: Limits = Limits {
    retention_events: 2,
    queue_events_max: 6,
    idempotency_keys_max: 100,
    queues_max: 100,
    leases_max: 3,
    delayed_max: 2,
};

/// One generated step. Tokens cannot be known when generating, so acks,
/// nacks and extends pick one of the tokens handed out so far (or a forged
/// one) when the step runs.
#[derive(Debug, Clone)]
enum Step {
    Batch {
        queue: usize,
        events: Vec<String>,
        key: Option<u8>,
        delay_ms: u64,
    },
    Lease {
        queue: usize,
        max: u32,
        ttl_ms: Option<u64>,
        nonce: u64,
    },
    Ack {
        pick: usize,
    },
    Nack {
        pick: usize,
        delay_ms: u64,
    },
    Extend {
        pick: usize,
        ttl_ms: Option<u64>,
    },
    Pop {
        queue: usize,
        expect: Option<Seq>,
    },
    Policy {
        queue: usize,
        policy: QueuePolicy,
    },
    Cursor {
        queue: usize,
        group: u8,
        seq: Seq,
        if_seq: Option<Seq>,
    },
    Sweep {
        queue: Option<usize>,
        max: u32,
    },
    /// Advance the entry time.
    Wait(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum St {
    Pending,
    Leased { until: u64, token: String },
    Delayed { until: u64 },
    Done,
}

#[derive(Debug, Clone)]
struct Ev {
    body: String,
    deliveries: u32,
    st: St,
    /// How often it became done (must end at exactly 1).
    resolved: u32,
}

impl Ev {
    fn available(&self, now: u64) -> bool {
        match &self.st {
            St::Pending => true,
            St::Leased { until, .. } | St::Delayed { until } => *until <= now,
            St::Done => false,
        }
    }

    fn expired_lease(&self, now: u64) -> bool {
        matches!(&self.st, St::Leased { until, .. } if *until <= now)
    }
}

/// Linear scans over every event ever enqueued: obviously right, slow.
#[derive(Debug, Default)]
struct WorkModel {
    /// Per queue, event `seq` at index `seq - 1`.
    queues: BTreeMap<String, Vec<Ev>>,
    policies: BTreeMap<String, QueuePolicy>,
    cursors: BTreeMap<(String, String), Seq>,
    idem: BTreeMap<(String, String), Seq>,
    counters: BTreeMap<String, (u64, u64, u64)>,
}

impl WorkModel {
    fn span(&self, queue: &str) -> u64 {
        let Some(events) = self.queues.get(queue) else {
            return 0;
        };
        let front = events.iter().position(|e| e.st != St::Done).unwrap_or(events.len());
        (events.len() - front) as u64
    }

    fn count(&self, queue: &str, f: impl Fn(&St) -> bool) -> u64 {
        self.queues.get(queue).map_or(0, |evs| evs.iter().filter(|e| f(&e.st)).count() as u64)
    }

    fn room(&self, to: &str) -> u64 {
        if self.queues.contains_key(to) {
            WORK_LIMITS.queue_events_max.saturating_sub(self.span(to))
        } else if self.queues.len() as u64 >= WORK_LIMITS.queues_max {
            0
        } else {
            WORK_LIMITS.queue_events_max
        }
    }

    fn dl_target(&self, queue: &str, deliveries: u32) -> Option<String> {
        let policy = self.policies.get(queue)?;
        let max = policy.max_deliveries?;
        (deliveries >= max).then(|| policy.dead_letter.clone()).flatten()
    }

    fn counter(&mut self, queue: &str) -> &mut (u64, u64, u64) {
        self.counters.entry(queue.to_owned()).or_default()
    }

    fn done(&mut self, queue: &str, seq: Seq) {
        let ev = &mut self.queues.get_mut(queue).unwrap()[seq as usize - 1];
        assert_ne!(ev.st, St::Done, "{queue}/{seq} resolved twice");
        ev.st = St::Done;
        ev.resolved += 1;
    }

    fn dead_letter(&mut self, queue: &str, seq: Seq, to: &str) {
        let ev = self.queues[queue][seq as usize - 1].clone();
        let body = serde_json::json!({
            "queue": queue, "seq": seq, "deliveries": ev.deliveries, "event": ev.body,
        })
        .to_string();
        self.queues.entry(to.to_owned()).or_default().push(Ev {
            body,
            deliveries: 0,
            st: St::Pending,
            resolved: 0,
        });
        self.counter(queue).2 += 1;
        self.done(queue, seq);
    }

    fn leased(&self, queue: &str, seq: Seq, token: &str) -> Option<Ev> {
        let ev = self.queues.get(queue)?.get((seq as usize).checked_sub(1)?)?;
        matches!(&ev.st, St::Leased { token: t, .. } if t == token).then(|| ev.clone())
    }

    fn ttl(&self, queue: &str, ttl: Option<u64>) -> u64 {
        ttl.or_else(|| self.policies.get(queue).and_then(|p| p.lease_ttl_ms)).unwrap_or(30_000)
    }

    fn apply(&mut self, cmd: &Command, now: u64) -> Reply {
        match cmd {
            Command::EnqueueBatch { queue, events, idempotency_key, delay_ms } => {
                let n = events.len() as u64;
                let idem = idempotency_key.as_ref().map(|k| (queue.clone(), k.clone()));
                if let Some(first) = idem.as_ref().and_then(|k| self.idem.get(k)) {
                    let last = first + n.saturating_sub(1);
                    return Reply::BatchEnqueued { first: *first, last, duplicate: true };
                }
                if n == 0 {
                    return Reply::Rejected(Rejection::InvalidCount);
                }
                if self.span(queue) + n > WORK_LIMITS.queue_events_max {
                    return Reply::Rejected(Rejection::QueueFull {
                        max: WORK_LIMITS.queue_events_max,
                    });
                }
                let delayed = self.count(queue, |s| matches!(s, St::Delayed { .. }));
                if *delay_ms > 0 && delayed + n > WORK_LIMITS.delayed_max {
                    return Reply::Rejected(Rejection::TooManyDelayed {
                        max: WORK_LIMITS.delayed_max,
                    });
                }
                let evs = self.queues.entry(queue.clone()).or_default();
                let first = evs.len() as u64 + 1;
                for body in events {
                    let st = match delay_ms {
                        0 => St::Pending,
                        d => St::Delayed { until: now + d },
                    };
                    evs.push(Ev { body: body.clone(), deliveries: 0, st, resolved: 0 });
                }
                if let Some(k) = idem {
                    self.idem.insert(k, first);
                }
                Reply::BatchEnqueued { first, last: first + n - 1, duplicate: false }
            }
            Command::Lease { queue, max, ttl_ms, nonce } => {
                if *max == 0 {
                    return Reply::Rejected(Rejection::InvalidCount);
                }
                let Some(evs) = self.queues.get(queue) else {
                    return Reply::Leased(Vec::new());
                };
                let leased_now =
                    self.count(queue, |s| matches!(s, St::Leased { until, .. } if *until > now));
                let mut budget = WORK_LIMITS.leases_max.saturating_sub(leased_now);
                let mut rooms: BTreeMap<String, u64> = BTreeMap::new();
                let (mut dls, mut leases, mut refused) = (Vec::new(), Vec::new(), false);
                for (i, ev) in evs.iter().enumerate().filter(|(_, e)| e.available(now)) {
                    let seq = i as u64 + 1;
                    if ev.expired_lease(now) {
                        if let Some(to) = self.dl_target(queue, ev.deliveries) {
                            let room = rooms.entry(to.clone()).or_insert_with(|| self.room(&to));
                            if *room > 0 {
                                *room -= 1;
                                dls.push((seq, to));
                            }
                            continue;
                        }
                    }
                    if budget == 0 {
                        refused = leases.is_empty();
                        break;
                    }
                    budget -= 1;
                    leases.push(seq);
                    if leases.len() == *max as usize {
                        break;
                    }
                }
                if refused && dls.is_empty() {
                    return Reply::Rejected(Rejection::TooManyLeases {
                        max: WORK_LIMITS.leases_max,
                    });
                }
                for (seq, to) in dls {
                    self.counter(queue).1 += 1;
                    self.dead_letter(queue, seq, &to);
                }
                let until = now + self.ttl(queue, *ttl_ms);
                let mut out = Vec::new();
                for seq in leases {
                    let ev = &self.queues[queue][seq as usize - 1];
                    let (expired, redelivered) = (ev.expired_lease(now), ev.deliveries > 0);
                    let c = self.counter(queue);
                    c.1 += u64::from(expired);
                    c.0 += u64::from(redelivered);
                    let ev = &mut self.queues.get_mut(queue).unwrap()[seq as usize - 1];
                    ev.deliveries += 1;
                    let token = lease_token(*nonce, seq, ev.deliveries);
                    ev.st = St::Leased { until, token: token.clone() };
                    out.push(LeasedReply {
                        seq,
                        token,
                        deliveries: ev.deliveries,
                        event: ev.body.clone(),
                    });
                }
                Reply::Leased(out)
            }
            Command::Ack { queue, seq, token } => {
                if self.leased(queue, *seq, token).is_none() {
                    return Reply::LeaseLost;
                }
                self.done(queue, *seq);
                Reply::Acked
            }
            Command::Nack { queue, seq, token, delay_ms } => {
                let Some(ev) = self.leased(queue, *seq, token) else {
                    return Reply::LeaseLost;
                };
                if let Some(to) = self.dl_target(queue, ev.deliveries) {
                    if self.room(&to) > 0 {
                        self.dead_letter(queue, *seq, &to);
                        return Reply::Nacked { dead_lettered: true };
                    }
                }
                let st = if *delay_ms == 0 {
                    St::Pending
                } else {
                    if self.count(queue, |s| matches!(s, St::Delayed { .. }))
                        >= WORK_LIMITS.delayed_max
                    {
                        return Reply::Rejected(Rejection::TooManyDelayed {
                            max: WORK_LIMITS.delayed_max,
                        });
                    }
                    St::Delayed { until: now + delay_ms }
                };
                self.queues.get_mut(queue).unwrap()[*seq as usize - 1].st = st;
                Reply::Nacked { dead_lettered: false }
            }
            Command::Extend { queue, seq, token, ttl_ms } => {
                match self.leased(queue, *seq, token) {
                    Some(ev) if !ev.expired_lease(now) => {
                        let until = now + self.ttl(queue, *ttl_ms);
                        let ev = &mut self.queues.get_mut(queue).unwrap()[*seq as usize - 1];
                        ev.st = St::Leased { until, token: token.clone() };
                        Reply::Extended { until_ms: until }
                    }
                    _ => Reply::LeaseLost,
                }
            }
            Command::Dequeue { queue, expect_seq } => {
                let first = self.queues.get(queue).and_then(|evs| {
                    evs.iter().position(|e| e.available(now)).map(|i| i as u64 + 1)
                });
                match (first, expect_seq) {
                    (None, Some(_)) => Reply::Conflict { front: None },
                    (None, None) => Reply::Empty,
                    (Some(seq), Some(e)) if *e != seq => Reply::Conflict { front: Some(seq) },
                    (Some(seq), _) => {
                        let ev = self.queues[queue][seq as usize - 1].clone();
                        if ev.expired_lease(now) {
                            self.counter(queue).1 += 1;
                        }
                        self.done(queue, seq);
                        Reply::Dequeued { seq, event: ev.body }
                    }
                }
            }
            Command::SetPolicy { queue, policy } => {
                let invalid = policy.max_deliveries == Some(0)
                    || (policy.max_deliveries.is_some() && policy.dead_letter.is_none())
                    || policy.dead_letter.as_ref() == Some(queue);
                if invalid {
                    return Reply::Rejected(Rejection::InvalidPolicy);
                }
                if *policy == QueuePolicy::default() {
                    self.policies.remove(queue);
                } else {
                    self.policies.insert(queue.clone(), policy.clone());
                }
                Reply::PolicySet
            }
            Command::SetCursor { queue, group, seq, if_seq } => {
                let key = (queue.clone(), group.clone());
                let current = self.cursors.get(&key).copied();
                if if_seq.is_some_and(|i| i != current.unwrap_or(0)) {
                    return Reply::CursorConflict { current };
                }
                self.cursors.insert(key, *seq);
                Reply::CursorSet { seq: *seq }
            }
            Command::Sweep { queue, max } => {
                let names: Vec<String> = match queue {
                    Some(q) => vec![q.clone()],
                    None => self.queues.keys().cloned().collect(),
                };
                let (mut expired, mut moved, mut budget) = (0, 0, u64::from(*max));
                for q in names {
                    let Some(evs) = self.queues.get(&q) else { continue };
                    let mut rooms: BTreeMap<String, u64> = BTreeMap::new();
                    let (mut matured, mut dls) = (Vec::new(), Vec::new());
                    for (i, ev) in evs.iter().enumerate() {
                        let seq = i as u64 + 1;
                        let slotted = !matches!(ev.st, St::Done | St::Pending);
                        if !slotted {
                            continue;
                        }
                        if budget == 0 {
                            break;
                        }
                        if matches!(ev.st, St::Delayed { until } if until <= now) {
                            matured.push(seq);
                            budget -= 1;
                            continue;
                        }
                        if !ev.expired_lease(now) {
                            continue;
                        }
                        expired += 1;
                        let Some(to) = self.dl_target(&q, ev.deliveries) else { continue };
                        let room = rooms.entry(to.clone()).or_insert_with(|| self.room(&to));
                        if *room > 0 {
                            *room -= 1;
                            budget -= 1;
                            dls.push((seq, to));
                        }
                    }
                    for seq in matured {
                        self.queues.get_mut(&q).unwrap()[seq as usize - 1].st = St::Pending;
                    }
                    for (seq, to) in dls {
                        self.counter(&q).1 += 1;
                        self.dead_letter(&q, seq, &to);
                        moved += 1;
                    }
                }
                Reply::Swept { expired, dead_lettered: moved }
            }
            other => unreachable!("not generated: {other:?}"),
        }
    }
}

fn policy() -> impl Strategy<Value = QueuePolicy> {
    let queue = prop::option::of((0..QUEUES.len()).prop_map(|q| QUEUES[q].to_owned()));
    (prop::option::of(0u32..4), queue, prop::option::of(1u64..300)).prop_map(
        |(max_deliveries, dead_letter, lease_ttl_ms)| QueuePolicy {
            max_deliveries,
            dead_letter,
            lease_ttl_ms,
        },
    )
}

fn step() -> impl Strategy<Value = Step> {
    let q = || 0..QUEUES.len();
    prop_oneof![
        4 => (q(), vec("[a-z]{0,3}", 0..4), prop::option::of(0u8..2), prop_oneof![3 => Just(0u64), 1 => 1u64..200])
            .prop_map(|(queue, events, key, delay_ms)| Step::Batch { queue, events, key, delay_ms }),
        5 => (q(), 0u32..4, prop::option::of(1u64..300), any::<u64>())
            .prop_map(|(queue, max, ttl_ms, nonce)| Step::Lease { queue, max, ttl_ms, nonce }),
        3 => any::<usize>().prop_map(|pick| Step::Ack { pick }),
        2 => (any::<usize>(), prop_oneof![Just(0u64), 1u64..200])
            .prop_map(|(pick, delay_ms)| Step::Nack { pick, delay_ms }),
        1 => (any::<usize>(), prop::option::of(1u64..300))
            .prop_map(|(pick, ttl_ms)| Step::Extend { pick, ttl_ms }),
        2 => (q(), prop::option::of(0u64..6)).prop_map(|(queue, expect)| Step::Pop { queue, expect }),
        1 => (q(), policy()).prop_map(|(queue, policy)| Step::Policy { queue, policy }),
        1 => (q(), 0u8..2, 0u64..5, prop::option::of(0u64..5))
            .prop_map(|(queue, group, seq, if_seq)| Step::Cursor { queue, group, seq, if_seq }),
        1 => (prop::option::of(q()), 0u32..4).prop_map(|(queue, max)| Step::Sweep { queue, max }),
        3 => (1u64..250).prop_map(Step::Wait),
    ]
}

/// The state of one run: the core, its storage, the model, the clock and
/// the tokens handed out (queue, seq, token).
struct Run {
    core: Core,
    kv: MemKv,
    model: WorkModel,
    now: u64,
    index: u64,
    tokens: Vec<(String, Seq, String)>,
}

impl Run {
    fn new() -> Self {
        Run {
            core: Core::default(),
            kv: MemKv::default(),
            model: WorkModel::default(),
            now: 1_000,
            index: 0,
            tokens: Vec::new(),
        }
    }

    /// The command of `step` (None: only the clock moves).
    fn command(&mut self, step: &Step) -> Option<Command> {
        let q = |i: usize| QUEUES[i].to_owned();
        // Most picks hit a handed-out token; the rest forge one.
        let token = |pick: usize| match self.tokens.len() {
            n if n > 0 && !pick.is_multiple_of(8) => self.tokens[pick % n].clone(),
            _ => ("a".to_owned(), (pick % 4) as u64, lease_token(pick as u64, 1, 1)),
        };
        Some(match step.clone() {
            Step::Batch { queue, events, key, delay_ms } => Command::EnqueueBatch {
                queue: q(queue),
                events,
                idempotency_key: key.map(|k| format!("k{k}")),
                delay_ms,
            },
            Step::Lease { queue, max, ttl_ms, nonce } => {
                Command::Lease { queue: q(queue), max, ttl_ms, nonce }
            }
            Step::Ack { pick } => {
                let (queue, seq, token) = token(pick);
                Command::Ack { queue, seq, token }
            }
            Step::Nack { pick, delay_ms } => {
                let (queue, seq, token) = token(pick);
                Command::Nack { queue, seq, token, delay_ms }
            }
            Step::Extend { pick, ttl_ms } => {
                let (queue, seq, token) = token(pick);
                Command::Extend { queue, seq, token, ttl_ms }
            }
            Step::Pop { queue, expect } => Command::Dequeue { queue: q(queue), expect_seq: expect },
            Step::Policy { queue, policy } => Command::SetPolicy { queue: q(queue), policy },
            Step::Cursor { queue, group, seq, if_seq } => {
                Command::SetCursor { queue: q(queue), group: format!("g{group}"), seq, if_seq }
            }
            Step::Sweep { queue, max } => Command::Sweep { queue: queue.map(q), max },
            Step::Wait(ms) => {
                self.now += ms;
                return None;
            }
        })
    }

    /// Applies `commands` as one entry each, all in one apply, and checks
    /// replies, availability, counters and restore against the model.
    fn apply(&mut self, commands: Vec<Command>) -> Result<Vec<Reply>, TestCaseError> {
        let entries: Vec<Entry> = commands
            .iter()
            .map(|command| {
                self.index += 1;
                Entry {
                    log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, self.index),
                    payload: EntryPayload::Normal(Request {
                        limits: WORK_LIMITS,
                        maze_limits: MAZE_LIMITS,
                        ops: vec![Op::Queue(command.clone())],
                        time_ms: self.now,
                    }),
                }
            })
            .collect();
        let applied = apply(&mut self.core, &mut self.kv, &entries, &mut Vec::new());
        let mut replies = Vec::new();
        for (command, response) in commands.iter().zip(applied.replies) {
            let expected = self.model.apply(command, self.now);
            prop_assert_eq!(&response.replies, &vec![expected.clone()], "{:?}", command);
            if let Reply::Leased(leased) = &expected {
                let queue = match command {
                    Command::Lease { queue, .. } => queue.clone(),
                    _ => unreachable!(),
                };
                for l in leased {
                    self.tokens.push((queue.clone(), l.seq, l.token.clone()));
                }
            }
            replies.push(expected);
        }
        for queue in QUEUES {
            let state = self.core.queues();
            let expected = self.model.queues.get(queue).and_then(|evs| {
                evs.iter().position(|e| e.available(self.now)).map(|i| i as u64 + 1)
            });
            prop_assert_eq!(state.available(queue, self.now), expected, "available {}", queue);
            let c = state.counters(queue);
            let m = self.model.counters.get(queue).copied().unwrap_or_default();
            prop_assert_eq!((c.redelivered, c.expired, c.dead_lettered), m, "counters {}", queue);
            let stats = state.work_stats(queue);
            let leased = self.model.count(queue, |s| matches!(s, St::Leased { .. }));
            let delayed = self.model.count(queue, |s| matches!(s, St::Delayed { .. }));
            prop_assert_eq!((stats.leased, stats.delayed), (leased, delayed), "gauges {}", queue);
            if let Some(meta) = state.queue(queue) {
                prop_assert!(state.slots(queue).all(|(s, _)| meta.front <= s && s < meta.next));
            }
        }
        prop_assert_eq!(&self.kv.restore(), &self.core);
        Ok(replies)
    }
}

fn run_steps(groups: Vec<Vec<Step>>) -> Result<(), TestCaseError> {
    let mut run = Run::new();
    for group in groups {
        let commands: Vec<Command> = group.iter().filter_map(|s| run.command(s)).collect();
        run.apply(commands)?;
    }
    // Drain: let every lease and delay run out, then lease and ack
    // everything until nothing is left (dead-letter queues included).
    for _ in 0..100 {
        run.now += 1_000_000;
        let sweep = vec![Command::Sweep { queue: None, max: 100 }];
        run.apply(sweep)?;
        let mut progress = false;
        for queue in QUEUES {
            let lease =
                Command::Lease { queue: queue.to_owned(), max: 10, ttl_ms: None, nonce: run.index };
            let replies = run.apply(vec![lease])?;
            let Some(Reply::Leased(leased)) = replies.first() else { continue };
            let acks: Vec<Command> = leased
                .iter()
                .map(|l| Command::Ack {
                    queue: queue.to_owned(),
                    seq: l.seq,
                    token: l.token.clone(),
                })
                .collect();
            progress |= !acks.is_empty();
            for reply in run.apply(acks)? {
                prop_assert_eq!(reply, Reply::Acked);
            }
        }
        if !progress && QUEUES.iter().all(|q| run.model.span(q) == 0) {
            break;
        }
    }
    for (queue, events) in &run.model.queues {
        for (i, ev) in events.iter().enumerate() {
            prop_assert_eq!(ev.resolved, 1, "{}/{} resolved {} times", queue, i + 1, ev.resolved);
        }
        let meta = run.core.queues().queue(queue).copied().unwrap();
        prop_assert_eq!(meta.front, meta.next, "{} not drained", queue);
        prop_assert_eq!(run.core.queues().slots(queue).count(), 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn work_queues_answer_like_the_model_restore_and_resolve_every_event_once(
        groups in vec(vec(step(), 1..4), 1..40),
    ) {
        run_steps(groups)?;
    }
}

#[test]
fn a_dead_lettered_event_carries_its_origin_as_json_in_the_same_entry() {
    let mut run = Run::new();
    let policy = QueuePolicy {
        max_deliveries: Some(1),
        dead_letter: Some("dl".into()),
        lease_ttl_ms: Some(10),
    };
    let setup = vec![
        Command::SetPolicy { queue: "a".into(), policy },
        Command::EnqueueBatch {
            queue: "a".into(),
            events: vec!["job \"1\"".into()],
            idempotency_key: None,
            delay_ms: 0,
        },
        Command::Lease { queue: "a".into(), max: 1, ttl_ms: None, nonce: 5 },
    ];
    run.apply(setup).unwrap();
    run.now += 10;
    // Lease and pop in one apply: the lease dead-letters seq 1, and the
    // pop of the dead-letter queue reads the body written in this apply.
    let replies = run
        .apply(vec![
            Command::Lease { queue: "a".into(), max: 1, ttl_ms: None, nonce: 6 },
            Command::Dequeue { queue: "dl".into(), expect_seq: None },
        ])
        .unwrap();
    assert_eq!(replies[0], Reply::Leased(Vec::new()));
    let Reply::Dequeued { seq: 1, event } = &replies[1] else { panic!("{replies:?}") };
    let json: serde_json::Value = serde_json::from_str(event).unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "queue": "a", "seq": 1, "deliveries": 1, "event": "job \"1\"" })
    );
    let dump = serde_json::to_value(run.core.dump()).unwrap();
    assert_eq!(dump["work"]["a"]["dead_lettered"], 1);
    assert_eq!(dump["policies"]["a"]["max_deliveries"], 1);
}

#[test]
fn a_dump_shows_leases_with_their_tokens_and_is_the_same_after_restore() {
    let mut run = Run::new();
    let batch = Command::EnqueueBatch {
        queue: "a".into(),
        events: vec!["x".into(), "y".into()],
        idempotency_key: None,
        delay_ms: 0,
    };
    let lease = Command::Lease { queue: "a".into(), max: 1, ttl_ms: Some(100), nonce: 0xabc };
    let cursor = Command::SetCursor { queue: "a".into(), group: "g".into(), seq: 3, if_seq: None };
    run.apply(vec![batch, lease, cursor]).unwrap();
    let dump = serde_json::to_value(run.core.dump()).unwrap();
    assert_eq!(dump["work"]["a"]["leased"], 1);
    assert_eq!(dump["work"]["a"]["slots"]["1"]["token"], lease_token(0xabc, 1, 1));
    assert_eq!(dump["cursors"]["a"]["g"], 3);
    let restored = serde_json::to_vec(&run.kv.restore().dump()).unwrap();
    assert_eq!(restored, serde_json::to_vec(&run.core.dump()).unwrap());
    // A core that never used work queues dumps without the new sections.
    let plain = serde_json::to_value(Core::default().dump()).unwrap();
    assert!(plain.get("work").is_none() && plain.get("cursors").is_none());
}
