//! The follower-maze reference workload: a seeded event generator that
//! behaves like the reference verification program's, plus an independent
//! in-order model of which connected user must receive which lines.
//! ★ Pure: no I/O, no clock; everything follows from [`Settings`].
//!
//! Generation, per batch (see [`Workload::next_batch`]):
//!
//! ```text
//!  rng ─▶ batch size 1..=max_batch ─▶ events seq n..n+size, generated in order
//!              │                           │ each one applied to the model
//!              ▼                           ▼
//!        lines shuffled               expected lines per connected user
//!        (sent to the source)         (drained by take_expected)
//! ```
//!
//! The event mix, out of 10 000 events: 1 broadcast, 1 500 private messages,
//! 1 500 follows, 1 500 unfollows, the rest status updates. A follow is only
//! generated when `from` does not follow `to` yet; an unfollow picks one of
//! the existing follows. When no candidate exists the event becomes a status
//! update.
//!
//! The model (`Expectations`) is deliberately separate from
//! `raftq::maze::state`: it keeps, per user, only the *connected* followers,
//! and records a notification line for a connected recipient whenever the
//! protocol says it is due. Only connected users matter because notifications
//! for everybody else are dropped.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The mix is drawn out of this many.
const MIX_SCALE: u32 = 10_000;
/// Broadcasts per [`MIX_SCALE`] events (0.01%).
const BROADCASTS: u32 = 1;
/// Private messages per [`MIX_SCALE`] events (15%).
const PRIVATES: u32 = 1_500;
/// Follows per [`MIX_SCALE`] events (15%).
const FOLLOWS: u32 = 1_500;
/// Unfollows per [`MIX_SCALE`] events (15%); the rest are status updates.
const UNFOLLOWS: u32 = 1_500;
/// Random `to` users tried for a follow before falling back to a status update.
const FOLLOW_ATTEMPTS: usize = 8;

/// Settings of a run, named after the reference program's environment
/// variables (`totalEvents`, `concurrencyLevel`, `numberOfUsers`,
/// `randomSeed`, `maxEventSourceBatchSize`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Sequence numbers 1..=total_events are generated.
    pub total_events: u64,
    /// Users that connect as clients.
    pub concurrency_level: usize,
    /// Users ids are 1..=number_of_users (at least 1 is used).
    pub number_of_users: u64,
    /// Seed of every random choice.
    pub random_seed: u64,
    /// Largest batch of source lines (at least 1 is used).
    pub max_batch: usize,
}

/// What an event does (the protocol's type letter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Follow,
    Unfollow,
    Broadcast,
    Private,
    Status,
}

/// One generated event; `from`/`to` are 0 where the type has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GenEvent {
    seq: u64,
    kind: Kind,
    from: u64,
    to: u64,
}

impl GenEvent {
    /// The source line, LF-terminated like the reference program's.
    fn line(&self) -> String {
        let GenEvent { seq, from, to, .. } = *self;
        match self.kind {
            Kind::Follow => format!("{seq}|F|{from}|{to}\n"),
            Kind::Unfollow => format!("{seq}|U|{from}|{to}\n"),
            Kind::Broadcast => format!("{seq}|B\n"),
            Kind::Private => format!("{seq}|P|{from}|{to}\n"),
            Kind::Status => format!("{seq}|S|{from}\n"),
        }
    }
}

/// The in-order model of who must receive what. Events must be applied in
/// sequence order.
#[derive(Debug, Default)]
struct Expectations {
    /// Connected users; everybody else's notifications are dropped.
    connected: HashSet<u64>,
    /// user -> its connected followers.
    followers: HashMap<u64, HashSet<u64>>,
    /// Lines owed to each connected user since the last drain, in order.
    expected: BTreeMap<u64, Vec<String>>,
}

impl Expectations {
    fn new(connected: &[u64]) -> Self {
        Expectations { connected: connected.iter().copied().collect(), ..Default::default() }
    }

    fn notify(&mut self, user: u64, line: &str) {
        if self.connected.contains(&user) {
            self.expected.entry(user).or_default().push(line.to_owned());
        }
    }

    /// Apply the next event in seq order; `line` is its source line.
    fn apply(&mut self, event: &GenEvent, line: &str) {
        match event.kind {
            Kind::Follow => {
                if self.connected.contains(&event.from) {
                    self.followers.entry(event.to).or_default().insert(event.from);
                }
                self.notify(event.to, line);
            }
            Kind::Unfollow => {
                if let Some(set) = self.followers.get_mut(&event.to) {
                    set.remove(&event.from);
                    if set.is_empty() {
                        self.followers.remove(&event.to);
                    }
                }
            }
            Kind::Broadcast => {
                for user in &self.connected {
                    self.expected.entry(*user).or_default().push(line.to_owned());
                }
            }
            Kind::Private => self.notify(event.to, line),
            Kind::Status => {
                if let Some(set) = self.followers.get(&event.from) {
                    for follower in set {
                        self.expected.entry(*follower).or_default().push(line.to_owned());
                    }
                }
            }
        }
    }
}

/// The seeded event generator and its expectation model.
#[derive(Debug)]
pub struct Workload {
    rng: StdRng,
    total_events: u64,
    number_of_users: u64,
    max_batch: usize,
    /// Next seq to generate.
    next_seq: u64,
    /// Connected user ids, ascending.
    connected: Vec<u64>,
    /// The generator's follow state: user -> the users it follows (never
    /// empty: a user that follows nobody has no entry).
    following: HashMap<u64, Vec<u64>>,
    /// The keys of `following` in an indexable order, so that an unfollow
    /// can pick its `from` among the users that follow somebody.
    followers_any: Vec<u64>,
    model: Expectations,
}

impl Workload {
    pub fn new(settings: &Settings) -> Self {
        let mut rng = StdRng::seed_from_u64(settings.random_seed);
        let number_of_users = settings.number_of_users.max(1);
        let population = usize::try_from(number_of_users).unwrap_or(usize::MAX);
        let amount = settings.concurrency_level.min(population);
        let mut connected: Vec<u64> = rand::seq::index::sample(&mut rng, population, amount)
            .into_iter()
            .map(|index| index as u64 + 1)
            .collect();
        connected.sort_unstable();
        let model = Expectations::new(&connected);
        Workload {
            rng,
            total_events: settings.total_events,
            number_of_users,
            max_batch: settings.max_batch.max(1),
            next_seq: 1,
            connected,
            following: HashMap::new(),
            followers_any: Vec::new(),
            model,
        }
    }

    /// The ids of the users that connect: `concurrency_level` distinct ids
    /// in 1..=number_of_users (all of them when there are fewer), ascending.
    pub fn connected_users(&self) -> &[u64] {
        &self.connected
    }

    /// Events generated so far (the run counts its own progress).
    #[cfg(test)]
    pub fn events_generated(&self) -> u64 {
        self.next_seq - 1
    }

    /// The next batch of source lines, each ending in `\n`: a shuffled run of
    /// consecutive seqs of random size 1..=max_batch (less at the very end);
    /// `None` once all `total_events` are out. The batch's notifications are
    /// added to the expectations drained by [`Workload::take_expected`].
    pub fn next_batch(&mut self) -> Option<Vec<String>> {
        if self.next_seq > self.total_events {
            return None;
        }
        let remaining = self.total_events - self.next_seq + 1;
        let size = (self.rng.gen_range(1..=self.max_batch) as u64).min(remaining);
        let mut lines = Vec::with_capacity(size as usize);
        for seq in self.next_seq..self.next_seq + size {
            let event = self.generate(seq);
            let line = event.line();
            self.model.apply(&event, &line);
            lines.push(line);
        }
        self.next_seq += size;
        lines.shuffle(&mut self.rng);
        Some(lines)
    }

    /// Drain the lines owed to each connected user by the batches generated
    /// since the last call, in the order the user must receive them. Users
    /// owed nothing are absent. Draining after every batch keeps memory
    /// bounded however long the run.
    pub fn take_expected(&mut self) -> BTreeMap<u64, Vec<String>> {
        std::mem::take(&mut self.model.expected)
    }

    fn random_user(&mut self) -> u64 {
        self.rng.gen_range(1..=self.number_of_users)
    }

    /// A random user other than `user`; `None` when there is only one.
    fn other_user(&mut self, user: u64) -> Option<u64> {
        if self.number_of_users < 2 {
            return None;
        }
        let other = self.rng.gen_range(1..self.number_of_users);
        Some(if other >= user { other + 1 } else { other })
    }

    fn generate(&mut self, seq: u64) -> GenEvent {
        let roll = self.rng.gen_range(0..MIX_SCALE);
        let from = self.random_user();
        let status = GenEvent { seq, kind: Kind::Status, from, to: 0 };
        if roll < BROADCASTS {
            GenEvent { seq, kind: Kind::Broadcast, from: 0, to: 0 }
        } else if roll < BROADCASTS + PRIVATES {
            match self.other_user(from) {
                Some(to) => GenEvent { seq, kind: Kind::Private, from, to },
                None => status,
            }
        } else if roll < BROADCASTS + PRIVATES + FOLLOWS {
            for _ in 0..FOLLOW_ATTEMPTS {
                let Some(to) = self.other_user(from) else { break };
                let list = self.following.entry(from).or_default();
                if !list.contains(&to) {
                    if list.is_empty() {
                        self.followers_any.push(from);
                    }
                    list.push(to);
                    return GenEvent { seq, kind: Kind::Follow, from, to };
                }
            }
            if self.following.get(&from).is_some_and(Vec::is_empty) {
                self.following.remove(&from);
            }
            status
        } else if roll < BROADCASTS + PRIVATES + FOLLOWS + UNFOLLOWS {
            // Pick among the users that follow somebody, so that unfollows
            // keep their share of the mix whenever any follow exists.
            if self.followers_any.is_empty() {
                return status;
            }
            let index = self.rng.gen_range(0..self.followers_any.len());
            let from = self.followers_any[index];
            let list = self.following.get_mut(&from).expect("followers_any lists following's keys");
            let to = list.swap_remove(self.rng.gen_range(0..list.len()));
            if list.is_empty() {
                self.following.remove(&from);
                self.followers_any.swap_remove(index);
            }
            GenEvent { seq, kind: Kind::Unfollow, from, to }
        } else {
            status
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(total_events: u64) -> Settings {
        Settings {
            total_events,
            concurrency_level: 100,
            number_of_users: 1_000,
            random_seed: 666,
            max_batch: 100,
        }
    }

    fn seq_of(line: &str) -> u64 {
        line.split('|').next().unwrap().parse().unwrap()
    }

    /// All batches plus, per batch, the drained expectations.
    fn run_all(settings: &Settings) -> (Vec<Vec<String>>, Vec<BTreeMap<u64, Vec<String>>>) {
        let mut workload = Workload::new(settings);
        let mut batches = Vec::new();
        let mut expected = Vec::new();
        while let Some(batch) = workload.next_batch() {
            batches.push(batch);
            expected.push(workload.take_expected());
        }
        (batches, expected)
    }

    /// Every line of every batch, sorted into seq order.
    fn in_order(batches: &[Vec<String>]) -> Vec<String> {
        let mut lines: Vec<String> = batches.iter().flatten().cloned().collect();
        lines.sort_by_key(|line| seq_of(line));
        lines
    }

    #[test]
    fn same_seed_same_batches_and_expectations() {
        let a = run_all(&settings(20_000));
        let b = run_all(&settings(20_000));
        assert_eq!(a, b);
        let other = run_all(&Settings { random_seed: 667, ..settings(20_000) });
        assert_ne!(a.0, other.0);
        assert_eq!(
            Workload::new(&settings(1)).connected_users(),
            Workload::new(&settings(1)).connected_users()
        );
    }

    #[test]
    fn connected_users_are_distinct_and_in_range() {
        let workload = Workload::new(&settings(10));
        let users = workload.connected_users();
        assert_eq!(users.len(), 100);
        assert!(users.windows(2).all(|pair| pair[0] < pair[1]), "ascending and distinct");
        assert!(users.iter().all(|user| (1..=1_000).contains(user)));

        let clamped = Workload::new(&Settings { number_of_users: 7, ..settings(10) });
        assert_eq!(clamped.connected_users(), &[1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn batches_are_shuffled_consecutive_runs_gapless_from_one() {
        let (batches, _) = run_all(&settings(50_003));
        let mut next = 1;
        let mut shuffled = 0;
        for batch in &batches {
            assert!((1..=100).contains(&batch.len()), "batch size {}", batch.len());
            assert!(batch.iter().all(|line| line.ends_with('\n') && !line.ends_with("\r\n")));
            let seqs: Vec<u64> = batch.iter().map(|line| seq_of(line)).collect();
            let mut sorted = seqs.clone();
            sorted.sort_unstable();
            let run: Vec<u64> = (next..next + batch.len() as u64).collect();
            assert_eq!(sorted, run, "a permutation of a consecutive run");
            if seqs != sorted {
                shuffled += 1;
            }
            next += batch.len() as u64;
        }
        assert_eq!(next, 50_004, "1..=total, gapless");
        assert!(shuffled > batches.len() / 2, "batches are shuffled");
        let sizes: HashSet<usize> = batches.iter().map(Vec::len).collect();
        assert!(sizes.len() > 50, "batch sizes vary");

        let mut ones = Workload::new(&Settings { max_batch: 1, ..settings(3) });
        for seq in 1..=3 {
            let batch = ones.next_batch().unwrap();
            assert_eq!(batch.len(), 1);
            assert_eq!(seq_of(&batch[0]), seq);
        }
        assert_eq!(ones.next_batch(), None);
        assert_eq!(Workload::new(&settings(0)).next_batch(), None);
    }

    #[test]
    fn mix_proportions_are_roughly_right() {
        let (batches, _) = run_all(&settings(100_000));
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for line in batches.iter().flatten() {
            *counts.entry(line.split('|').nth(1).unwrap().trim_end()).or_default() += 1;
        }
        let share = |kind: &str| counts.get(kind).copied().unwrap_or(0) as f64 / 100_000.0;
        assert!((0.14..0.16).contains(&share("P")), "P {}", share("P"));
        assert!((0.14..0.16).contains(&share("F")), "F {}", share("F"));
        assert!((0.13..0.16).contains(&share("U")), "U {}", share("U"));
        assert!((0.54..0.58).contains(&share("S")), "S {}", share("S"));
        let broadcasts = counts.get("B").copied().unwrap_or(0);
        assert!((1..=40).contains(&broadcasts), "B {broadcasts}");
    }

    #[test]
    fn follows_only_when_not_following_unfollows_only_when_following() {
        let (batches, _) = run_all(&settings(100_000));
        let mut edges: HashSet<(u64, u64)> = HashSet::new();
        for line in in_order(&batches) {
            let fields: Vec<&str> = line.trim_end().split('|').collect();
            let edge = || (fields[2].parse().unwrap(), fields[3].parse().unwrap());
            match fields[1] {
                "F" => assert!(edges.insert(edge()), "follow while following: {line:?}"),
                "U" => assert!(edges.remove(&edge()), "unfollow while not following: {line:?}"),
                "P" => assert_ne!(fields[2], fields[3], "{line:?}"),
                "S" => assert_eq!(fields.len(), 3, "{line:?}"),
                "B" => assert_eq!(fields.len(), 2, "{line:?}"),
                other => panic!("unknown type {other:?}"),
            }
        }
    }

    /// A reference replay over the in-order stream, with its own follow map.
    #[test]
    fn expectations_match_an_in_order_replay() {
        let settings = Settings { concurrency_level: 20, number_of_users: 60, ..settings(30_000) };
        let workload = Workload::new(&settings);
        let connected: HashSet<u64> = workload.connected_users().iter().copied().collect();
        let (batches, drained) = run_all(&settings);

        let mut follows: HashSet<(u64, u64)> = HashSet::new();
        let mut replay: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for line in in_order(&batches) {
            let fields: Vec<&str> = line.trim_end().split('|').collect();
            let user = |i: usize| fields[i].parse::<u64>().unwrap();
            let recipients: Vec<u64> = match fields[1] {
                "F" => {
                    follows.insert((user(2), user(3)));
                    vec![user(3)]
                }
                "U" => {
                    follows.remove(&(user(2), user(3)));
                    vec![]
                }
                "B" => connected.iter().copied().collect(),
                "P" => vec![user(3)],
                _ => follows.iter().filter(|(_, to)| *to == user(2)).map(|(f, _)| *f).collect(),
            };
            for r in recipients.into_iter().filter(|r| connected.contains(r)) {
                replay.entry(r).or_default().push(line.clone());
            }
        }

        let mut merged: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for map in drained {
            for (user, lines) in map {
                assert!(!lines.is_empty());
                merged.entry(user).or_default().extend(lines);
            }
        }
        assert!(merged.values().map(Vec::len).sum::<usize>() > 1_000, "a meaningful run");
        assert_eq!(merged, replay);
    }

    fn ev(seq: u64, kind: Kind, from: u64, to: u64) -> GenEvent {
        GenEvent { seq, kind, from, to }
    }

    /// Apply a hand-made stream; returns the model's drained expectations.
    fn model_run(connected: &[u64], events: &[GenEvent]) -> BTreeMap<u64, Vec<String>> {
        let mut model = Expectations::new(connected);
        for event in events {
            model.apply(event, &event.line());
        }
        std::mem::take(&mut model.expected)
    }

    #[test]
    fn model_routes_per_protocol() {
        use Kind::*;
        let got = model_run(
            &[1, 2, 3],
            &[
                ev(1, Follow, 1, 2),    // 2 notified; 1 now follows 2
                ev(2, Status, 2, 0),    // 1 notified
                ev(3, Follow, 9, 2),    // 2 notified; 9 is not connected
                ev(4, Status, 2, 0),    // 1 only
                ev(5, Unfollow, 1, 2),  // nobody
                ev(6, Status, 2, 0),    // nobody any more
                ev(7, Private, 2, 3),   // 3 only
                ev(8, Private, 3, 9),   // dropped: 9 not connected
                ev(9, Broadcast, 0, 0), // 1, 2, 3
                ev(10, Follow, 3, 1),   // 1 notified
                ev(11, Status, 1, 0),   // 3
                ev(12, Status, 3, 0),   // nobody follows 3
            ],
        );
        let expect = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        let mut want = BTreeMap::new();
        want.insert(1, expect(&["2|S|2\n", "4|S|2\n", "9|B\n", "10|F|3|1\n"]));
        want.insert(2, expect(&["1|F|1|2\n", "3|F|9|2\n", "9|B\n"]));
        want.insert(3, expect(&["7|P|2|3\n", "9|B\n", "11|S|1\n"]));
        assert_eq!(got, want);
    }

    #[test]
    fn expected_lines_are_byte_identical_to_source_lines() {
        let mut workload = Workload::new(&settings(5_000));
        let mut sent: HashSet<String> = HashSet::new();
        while let Some(batch) = workload.next_batch() {
            sent.extend(batch);
            for (user, lines) in workload.take_expected() {
                assert!(workload.connected_users().contains(&user));
                for line in lines {
                    assert!(sent.contains(&line), "{line:?} was never sent");
                }
            }
        }
        assert_eq!(workload.events_generated(), 5_000);
        assert!(workload.take_expected().is_empty());
    }
}
