//! [`MazeState::apply`]: the replicated half of the follower maze. It turns
//! committed [`MazeCommand`]s into ordered [`Notification`]s plus the storage
//! [`MazeEffect`]s that make the state durable.
//!
//! The state is a reorder buffer in front of a follow graph:
//!
//! ```text
//!   Lines (any order) ─▶ pending: seq ─▶ (event, raw line)     bounded by pending_max
//!                          │ while `next` is pending: take it, next += 1
//!                          ▼
//!                        apply to the graph (F adds, U removes an edge)
//!                        and route (F→to, P→to, B→all, S→followers, U→nobody)
//!                          │
//!                          ▼
//!                        notifications, in seq order, each with its raw line
//! ```
//!
//! Events take effect strictly in sequence order, so a status update is sent
//! to exactly the followers its seq position implies, however the lines were
//! shuffled, batched or re-proposed.
//!
//! # Fan-out is resolved against the connected users
//!
//! The replicated state records who follows whom; who *receives* a
//! notification depends on which users are connected to the node that
//! applies it, which is not replicated state. [`MazeState::apply_for`]
//! therefore takes an [`Audience`] (this node's connected users) and emits
//! only recipients in it, at the moment the event is delivered in seq order,
//! so a follow or unfollow later in the same batch cannot change who got an
//! earlier status update. A status update walks whichever is smaller, the
//! source's followers or the connected users (checking the follow edge), so
//! its time and memory are bounded by `min(followers, connected)`, never by
//! the follow graph alone: a million followers of one user cost nothing when
//! none of them is connected here. Notifications go to a
//! [`NotificationSink`] one at a time, in seq order; the core holds none of
//! them. [`Audience::Everyone`] gives the full materialisation (every
//! follower, `All` for a broadcast): the protocol's meaning, used by tests
//! and tools, and exactly what every connected user would get. Time never enters: a missing seq is
//! given up only by a [`MazeCommand::Skip`] that the leader proposes after
//! its gap timeout, or deterministically when the buffer outgrows
//! [`MazeLimits::pending_max`]; every node makes the same decision at the
//! same log position.
//!
//! Every command runs to completion without failing: bad lines are counted
//! (malformed, duplicate, stale), never errors. A command that changes
//! nothing emits no effects. Lines of another epoch, or a skip that no longer
//! applies (the missing line arrived meanwhile), are such no-ops.
//!
//! Storage is the source of truth across restarts and snapshot installs: the
//! cursor (epoch, next), the pending lines and the follow edges. The
//! `restore_*` methods rebuild a state equal to the one that emitted the
//! effects; nothing lives here that no effect persists (the edge count is
//! derived from the edges). Notifications are not stored: they were handed
//! to the users connected when they were applied, and the protocol promises
//! no more than that.
//!
//! Nothing here panics on any command, limit or restored value: lines come
//! from the network and restored values from disk. Stored values that break
//! an invariant (a pending line below `next`) are repaired on the next apply
//! rather than asserted.

use std::collections::{btree_map, BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::protocol::{parse_line, Event, EventKind, ParseError, UserId};
use super::{MazeCommand, MazeLimits, MazeSeq};

/// Who gets a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// One user.
    One(UserId),
    /// Sorted and deduplicated; never empty.
    Many(Vec<UserId>),
    /// Every connected user.
    All,
}

/// One event to hand to its recipients, in seq order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub seq: MazeSeq,
    pub recipients: Recipients,
    /// The raw source line, line ending included, byte-identical.
    pub line: String,
}

/// The users a notification may go to: what [`MazeState::apply_for`]
/// resolves recipients against.
#[derive(Debug, Clone, Copy)]
pub enum Audience<'a> {
    /// Every user id: the full materialisation of the protocol (every
    /// follower of a status update, `All` for a broadcast). Its memory grows
    /// with the follow graph; for tests and tools, not for a serving node.
    Everyone,
    /// Exactly these users (a node's connected users): a recipient outside
    /// the set is counted through [`NotificationSink::unreached`], a
    /// broadcast goes out only if the set is not empty.
    Connected(&'a ConnectedUsers),
}

/// A set of user ids, sorted and deduplicated: a node's connected users at
/// the start of an apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectedUsers(Vec<UserId>);

impl ConnectedUsers {
    pub fn new(users: impl IntoIterator<Item = UserId>) -> Self {
        let mut users: Vec<UserId> = users.into_iter().collect();
        users.sort_unstable();
        users.dedup();
        ConnectedUsers(users)
    }

    pub fn contains(&self, user: UserId) -> bool {
        self.0.binary_search(&user).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The users in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = UserId> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<UserId> for ConnectedUsers {
    fn from_iter<I: IntoIterator<Item = UserId>>(users: I) -> Self {
        ConnectedUsers::new(users)
    }
}

/// Where [`MazeState::apply_for`] hands its notifications, one at a time and
/// in seq order, as it delivers events: nothing is collected unless the sink
/// collects it.
pub trait NotificationSink {
    /// The next notification (its recipients are all in the audience).
    fn notify(&mut self, notification: Notification);

    /// `recipients` users a notification was meant for are not in the
    /// audience (connected to no node, or to another one), so nothing was
    /// emitted for them. Ignored unless the sink counts it.
    fn unreached(&mut self, recipients: u64) {
        let _ = recipients;
    }
}

/// Collects everything: the sink of [`MazeState::apply`], for tests and
/// tools.
impl NotificationSink for Vec<Notification> {
    fn notify(&mut self, notification: Notification) {
        self.push(notification);
    }
}

/// A storage change implied by applying a command. The adapter applies them
/// in order, so a later effect wins over an earlier one on the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MazeEffect {
    /// Store the cursor; emitted once, last, by any apply that changed it.
    PutCursor { epoch: u64, next: MazeSeq },
    /// A new stream: forget every buffered line and follow edge.
    ClearAll,
    /// Buffer the raw line of `seq`. Emitted at the end of the apply that
    /// accepted the line, and only if it is still buffered then: with
    /// shuffled source batches most lines are delivered by the apply that
    /// brought them, and those never touch storage.
    PutPending { seq: MazeSeq, line: String },
    /// `seq`, stored by an earlier apply, was delivered or dropped: forget
    /// its line.
    DelPending { seq: MazeSeq },
    /// `follower` now follows `followed`.
    PutFollow { followed: UserId, follower: UserId },
    /// `follower` no longer follows `followed`.
    DelFollow { followed: UserId, follower: UserId },
}

/// What one command did to its lines. `accepted + duplicate + malformed +
/// stale` is the number of lines in the command; `delivered` and `skipped`
/// count seqs, including ones accepted by earlier commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LinesStats {
    /// New lines, now buffered or delivered.
    pub accepted: u64,
    /// Lines whose seq was already delivered, skipped or buffered.
    pub duplicate: u64,
    /// Too long or unparsable (see `parse_line`).
    pub malformed: u64,
    /// Lines of another epoch (a source connection that has been replaced).
    pub stale: u64,
    /// Seqs delivered, i.e. applied to the graph and routed.
    pub delivered: u64,
    /// Seqs given up on (never delivered; a late line for one is a duplicate).
    pub skipped: u64,
    /// Follows delivered but not recorded because the graph holds
    /// `follow_edges_max` edges (memory bound; see `MazeLimits`).
    pub follows_refused: u64,
}

impl LinesStats {
    /// Adds `other` to these totals (saturating: counters never wrap).
    pub fn add(&mut self, other: &LinesStats) {
        self.accepted = self.accepted.saturating_add(other.accepted);
        self.duplicate = self.duplicate.saturating_add(other.duplicate);
        self.malformed = self.malformed.saturating_add(other.malformed);
        self.stale = self.stale.saturating_add(other.stale);
        self.delivered = self.delivered.saturating_add(other.delivered);
        self.skipped = self.skipped.saturating_add(other.skipped);
        self.follows_refused = self.follows_refused.saturating_add(other.follows_refused);
    }
}

/// The result of one [`MazeCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MazeOutcome {
    /// A new stream `epoch` started.
    Reset { epoch: u64 },
    /// What became of the lines, and what was delivered.
    Lines(LinesStats),
    /// What the skip delivered; all zero when it no longer applied.
    Skipped(LinesStats),
}

/// The reorder buffer and follow graph of the current stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MazeState {
    /// Stream number, +1 per `Reset`; lines carry the epoch they belong to.
    epoch: u64,
    /// The seq to deliver next. Everything below was delivered or skipped.
    next: MazeSeq,
    /// Accepted lines not yet delivered, all above `next` after an apply.
    pending: BTreeMap<MazeSeq, Buffered>,
    /// Followed user -> its followers. Sets are never empty (removed when
    /// they empty), so equality does not depend on history.
    followers: BTreeMap<UserId, BTreeSet<UserId>>,
    /// Number of edges in `followers` (derived, kept for O(1) status).
    edges: usize,
}

impl Default for MazeState {
    fn default() -> Self {
        MazeState {
            epoch: 0,
            next: 1,
            pending: BTreeMap::new(),
            followers: BTreeMap::new(),
            edges: 0,
        }
    }
}

/// A line accepted but not yet delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Buffered {
    event: Event,
    line: String,
    /// Whether storage holds it (a `PutPending` was emitted): true for
    /// every buffered line between applies, false only within the apply
    /// that accepted it.
    stored: bool,
}

/// Where an apply writes besides the state: storage effects, notifications
/// (resolved against `audience`) and the counters of the outcome.
struct Sink<'a> {
    effects: &'a mut Vec<MazeEffect>,
    notifications: &'a mut dyn NotificationSink,
    audience: Audience<'a>,
    stats: LinesStats,
    follow_edges_max: u64,
    /// Seqs accepted by this apply, in order: those still buffered at its
    /// end are stored then (see [`MazeEffect::PutPending`]).
    fresh: Vec<MazeSeq>,
}

impl Sink<'_> {
    /// `user` alone, if the audience holds it.
    fn one(&mut self, user: UserId) -> Option<Recipients> {
        match self.audience {
            Audience::Everyone => Some(Recipients::One(user)),
            Audience::Connected(users) if users.contains(user) => Some(Recipients::One(user)),
            Audience::Connected(_) => {
                self.notifications.unreached(1);
                None
            }
        }
    }

    /// Everyone in the audience, if anyone.
    fn all(&self) -> Option<Recipients> {
        match self.audience {
            Audience::Everyone => Some(Recipients::All),
            Audience::Connected(users) => (!users.is_empty()).then_some(Recipients::All),
        }
    }

    /// The followers of a status update's source that the audience holds.
    /// Walks the smaller of the two sets and looks each user up in the
    /// other, so the cost is `min(followers, connected)` lookups and the
    /// result never outgrows the audience. Both walks are in ascending
    /// order, so the list comes out sorted.
    fn followers(&mut self, followers: &BTreeSet<UserId>) -> Option<Recipients> {
        let reached: Vec<UserId> = match self.audience {
            Audience::Everyone => followers.iter().copied().collect(),
            Audience::Connected(users) if users.len() < followers.len() => {
                users.iter().filter(|user| followers.contains(user)).collect()
            }
            Audience::Connected(users) => {
                followers.iter().copied().filter(|&user| users.contains(user)).collect()
            }
        };
        let unreached = followers.len() - reached.len();
        if unreached > 0 {
            self.notifications.unreached(count_u64(unreached));
        }
        (!reached.is_empty()).then_some(Recipients::Many(reached))
    }
}

impl MazeState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply one command: push storage effects (in order) into `effects` and
    /// this command's notifications (in seq order) into `notifications`,
    /// every follower of a status update included ([`Audience::Everyone`]);
    /// return the outcome. Memory grows with the follow graph times the
    /// status updates: a serving node uses [`MazeState::apply_for`].
    pub fn apply(
        &mut self,
        cmd: &MazeCommand,
        limits: &MazeLimits,
        effects: &mut Vec<MazeEffect>,
        notifications: &mut Vec<Notification>,
    ) -> MazeOutcome {
        self.apply_for(cmd, limits, Audience::Everyone, effects, notifications)
    }

    /// Apply one command: push storage effects (in order) into `effects`,
    /// hand this command's notifications for `audience` to `notifications`
    /// one by one in seq order, and return the outcome. The state and the
    /// effects do not depend on `audience`; only the notifications do, and
    /// for every user in it they are exactly those of [`MazeState::apply`].
    pub fn apply_for(
        &mut self,
        cmd: &MazeCommand,
        limits: &MazeLimits,
        audience: Audience<'_>,
        effects: &mut Vec<MazeEffect>,
        notifications: &mut dyn NotificationSink,
    ) -> MazeOutcome {
        let mut sink = Sink {
            effects,
            notifications,
            audience,
            stats: LinesStats::default(),
            follow_edges_max: limits.follow_edges_max,
            fresh: Vec::new(),
        };
        match cmd {
            MazeCommand::Reset => {
                self.reset(sink.effects);
                MazeOutcome::Reset { epoch: self.epoch }
            }
            MazeCommand::Lines { epoch, lines } => {
                self.lines(*epoch, lines, limits, &mut sink);
                MazeOutcome::Lines(sink.stats)
            }
            MazeCommand::Skip { epoch, seq } => {
                self.skip(*epoch, *seq, limits, &mut sink);
                MazeOutcome::Skipped(sink.stats)
            }
        }
    }

    /// The current stream (0 before the first `Reset`).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The seq delivered next.
    pub fn next(&self) -> MazeSeq {
        self.next
    }

    /// Lines buffered out of order.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The lowest buffered seq. Some while `next` is missing: the leader's
    /// gap timer watches `(epoch, next, oldest_pending)` and proposes a
    /// `Skip` when it has stood still for the gap timeout.
    pub fn oldest_pending(&self) -> Option<MazeSeq> {
        self.pending.keys().next().copied()
    }

    /// Number of follow edges.
    pub fn follower_count(&self) -> usize {
        self.edges
    }

    /// Current followers of `user`, sorted.
    pub fn followers_of(&self, user: UserId) -> Vec<UserId> {
        self.followers.get(&user).map(|set| set.iter().copied().collect()).unwrap_or_default()
    }

    /// The buffered lines by seq, raw (what storage holds).
    pub fn pending_lines(&self) -> impl Iterator<Item = (MazeSeq, &str)> + '_ {
        self.pending.iter().map(|(&seq, buffered)| (seq, buffered.line.as_str()))
    }

    /// Every follow edge as (followed, follower), in ascending order.
    pub fn follow_edges(&self) -> impl Iterator<Item = (UserId, UserId)> + '_ {
        self.followers.iter().flat_map(|(&followed, set)| set.iter().map(move |&f| (followed, f)))
    }

    /// Rebuild from storage (entries in any order): the cursor.
    pub fn restore_cursor(&mut self, epoch: u64, next: MazeSeq) {
        self.epoch = epoch;
        self.next = next;
    }

    /// Rebuild from storage: one buffered line, re-parsed. A line that does
    /// not parse, or that is not the line of `seq`, is refused (damaged
    /// storage; the caller decides what to do about it).
    pub fn restore_pending(&mut self, seq: MazeSeq, line: String) -> Result<(), ParseError> {
        let event = parse_line(&line)?;
        if event.seq != seq {
            return Err(ParseError::SeqMismatch { stored: seq, parsed: event.seq });
        }
        self.pending.insert(seq, Buffered { event, line, stored: true });
        Ok(())
    }

    /// Rebuild from storage: one follow edge.
    pub fn restore_follow(&mut self, followed: UserId, follower: UserId) {
        self.add_follow(followed, follower);
    }

    fn reset(&mut self, effects: &mut Vec<MazeEffect>) {
        // 2^64 source connections are out of reach; saturating only keeps
        // this total.
        self.epoch = self.epoch.saturating_add(1);
        self.next = 1;
        self.pending.clear();
        self.followers.clear();
        self.edges = 0;
        effects.push(MazeEffect::ClearAll);
        effects.push(MazeEffect::PutCursor { epoch: self.epoch, next: self.next });
    }

    fn lines(&mut self, epoch: u64, lines: &[String], limits: &MazeLimits, sink: &mut Sink<'_>) {
        if epoch != self.epoch {
            sink.stats.stale = count_u64(lines.len());
            return;
        }
        let start = self.next;
        for line in lines {
            if line.len() > limits.line_bytes_max {
                sink.stats.malformed += 1;
                continue;
            }
            let Ok(event) = parse_line(line) else {
                sink.stats.malformed += 1;
                continue;
            };
            if event.seq < self.next {
                sink.stats.duplicate += 1;
                continue;
            }
            match self.pending.entry(event.seq) {
                btree_map::Entry::Occupied(_) => sink.stats.duplicate += 1,
                btree_map::Entry::Vacant(slot) => {
                    sink.stats.accepted += 1;
                    sink.fresh.push(event.seq);
                    slot.insert(Buffered { event, line: line.clone(), stored: false });
                }
            }
        }
        self.deliver_run(sink);
        self.enforce_pending_max(limits, sink);
        self.finish(start, sink);
    }

    fn skip(&mut self, epoch: u64, seq: MazeSeq, limits: &MazeLimits, sink: &mut Sink<'_>) {
        // The gap timer proposed this for what was missing when it fired;
        // by the time it is applied the line may have arrived (next moved
        // on) or the stream been replaced. Skipping then would lose lines.
        if epoch != self.epoch || seq != self.next || self.pending.is_empty() {
            return;
        }
        let start = self.next;
        self.jump_to_oldest(sink);
        self.deliver_run(sink);
        // Only does something if pending_max shrank since the last apply.
        self.enforce_pending_max(limits, sink);
        self.finish(start, sink);
    }

    /// While the buffer is over its limit, give up the oldest gap.
    fn enforce_pending_max(&mut self, limits: &MazeLimits, sink: &mut Sink<'_>) {
        // Each round removes at least one pending line, so this ends.
        while count_u64(self.pending.len()) > limits.pending_max {
            self.jump_to_oldest(sink);
            self.deliver_run(sink);
        }
    }

    /// Move `next` up to the oldest buffered seq, counting the seqs jumped
    /// over as skipped.
    fn jump_to_oldest(&mut self, sink: &mut Sink<'_>) {
        let Some(oldest) = self.oldest_pending() else {
            return;
        };
        if oldest < self.next {
            // Only restored storage can hold a line below `next`; such a line
            // can never be delivered. Drop it, which also keeps the callers'
            // loops making progress.
            if self.pending.remove(&oldest).is_some_and(|buffered| buffered.stored) {
                sink.effects.push(MazeEffect::DelPending { seq: oldest });
            }
            return;
        }
        sink.stats.skipped = sink.stats.skipped.saturating_add(oldest - self.next);
        self.next = oldest;
    }

    /// Deliver the consecutive run of buffered seqs starting at `next`.
    fn deliver_run(&mut self, sink: &mut Sink<'_>) {
        while let Some(Buffered { event, line, stored }) = self.pending.remove(&self.next) {
            debug_assert_eq!(event.seq, self.next, "pending line stored under another seq");
            if stored {
                sink.effects.push(MazeEffect::DelPending { seq: self.next });
            }
            self.route(event, line, sink);
            // `parse_line` refuses seq u64::MAX, so this cannot saturate
            // after a delivery; saturating keeps it total regardless.
            self.next = self.next.saturating_add(1);
            sink.stats.delivered += 1;
        }
    }

    /// Apply one event to the follow graph, in seq order, and notify.
    fn route(&mut self, event: Event, line: String, sink: &mut Sink<'_>) {
        let recipients = match event.kind {
            EventKind::Follow { from, to } => {
                let known = self.followers.get(&to).is_some_and(|set| set.contains(&from));
                if !known && count_u64(self.edges) >= sink.follow_edges_max {
                    // The graph is full: still notify, but do not remember.
                    sink.stats.follows_refused += 1;
                } else if self.add_follow(to, from) {
                    sink.effects.push(MazeEffect::PutFollow { followed: to, follower: from });
                }
                sink.one(to)
            }
            EventKind::Unfollow { from, to } => {
                if self.remove_follow(to, from) {
                    sink.effects.push(MazeEffect::DelFollow { followed: to, follower: from });
                }
                None
            }
            EventKind::Broadcast => sink.all(),
            EventKind::Private { to, .. } => sink.one(to),
            // Resolved now, at this seq's place in the order: the graph is
            // exactly what the events before it made it.
            EventKind::Status { from } => {
                self.followers.get(&from).and_then(|set| sink.followers(set))
            }
        };
        if let Some(recipients) = recipients {
            debug_assert!(recipients != Recipients::Many(Vec::new()), "empty recipient list");
            sink.notifications.notify(Notification { seq: event.seq, recipients, line });
        }
    }

    /// Store the lines this apply accepted and left buffered, then the
    /// cursor if this apply moved it.
    fn finish(&mut self, start: MazeSeq, sink: &mut Sink<'_>) {
        debug_assert!(self.next >= start, "next went backwards: {start} -> {}", self.next);
        debug_assert!(!self.pending.contains_key(&self.next), "deliverable line left pending");
        // Each fresh seq was accepted once (into a vacant slot), so any
        // still buffered is not stored yet.
        for seq in sink.fresh.drain(..) {
            if let Some(buffered) = self.pending.get_mut(&seq) {
                buffered.stored = true;
                sink.effects.push(MazeEffect::PutPending { seq, line: buffered.line.clone() });
            }
        }
        if self.next != start {
            sink.effects.push(MazeEffect::PutCursor { epoch: self.epoch, next: self.next });
        }
    }

    /// Add an edge; false if it was already there.
    fn add_follow(&mut self, followed: UserId, follower: UserId) -> bool {
        let added = self.followers.entry(followed).or_default().insert(follower);
        if added {
            self.edges += 1;
        }
        added
    }

    /// Remove an edge; false if it was not there.
    fn remove_follow(&mut self, followed: UserId, follower: UserId) -> bool {
        let Some(set) = self.followers.get_mut(&followed) else {
            return false;
        };
        let removed = set.remove(&follower);
        if set.is_empty() {
            self.followers.remove(&followed);
        }
        if removed {
            self.edges -= 1;
        }
        removed
    }
}

/// Collection sizes compared against `u64` limits (lossless on 64-bit targets,
/// and saturating rather than panicking elsewhere).
fn count_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use proptest::test_runner::Config as ProptestConfig;

    use super::*;

    // ---------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------

    /// Large enough that nothing in a unit test hits it unless it means to.
    const ROOMY: MazeLimits =
        MazeLimits { pending_max: 1000, line_bytes_max: 64, follow_edges_max: u64::MAX };

    fn limits(pending_max: u64) -> MazeLimits {
        MazeLimits { pending_max, ..ROOMY }
    }

    fn lines(epoch: u64, lines: &[&str]) -> MazeCommand {
        MazeCommand::Lines { epoch, lines: lines.iter().map(|l| l.to_string()).collect() }
    }

    fn skip(epoch: u64, seq: MazeSeq) -> MazeCommand {
        MazeCommand::Skip { epoch, seq }
    }

    fn note(seq: MazeSeq, recipients: Recipients, line: &str) -> Notification {
        Notification { seq, recipients, line: line.to_owned() }
    }

    fn many(users: &[UserId]) -> Recipients {
        Recipients::Many(users.to_vec())
    }

    fn put(seq: MazeSeq, line: &str) -> MazeEffect {
        MazeEffect::PutPending { seq, line: line.to_owned() }
    }

    fn del(seq: MazeSeq) -> MazeEffect {
        MazeEffect::DelPending { seq }
    }

    fn cursor(epoch: u64, next: MazeSeq) -> MazeEffect {
        MazeEffect::PutCursor { epoch, next }
    }

    fn stats(accepted: u64, duplicate: u64, malformed: u64, delivered: u64) -> LinesStats {
        LinesStats { accepted, duplicate, malformed, delivered, ..LinesStats::default() }
    }

    /// A state in stream 1 (after one `Reset`).
    fn started() -> MazeState {
        let mut state = MazeState::new();
        run(&mut state, &MazeCommand::Reset, &ROOMY);
        state
    }

    type Run = (MazeOutcome, Vec<MazeEffect>, Vec<Notification>);

    /// Apply one command and check the invariants afterwards.
    fn run(state: &mut MazeState, cmd: &MazeCommand, limits: &MazeLimits) -> Run {
        let mut effects = Vec::new();
        let mut notifications = Vec::new();
        let outcome = state.apply(cmd, limits, &mut effects, &mut notifications);
        check_invariants(state);
        (outcome, effects, notifications)
    }

    /// Apply `lines` to stream 1 and return only the notifications.
    fn feed(state: &mut MazeState, batch: &[&str]) -> Vec<Notification> {
        run(state, &lines(state.epoch(), batch), &ROOMY).2
    }

    /// Apply a command that must change nothing: no effects, no
    /// notifications, same state. Returns the outcome.
    fn run_noop(state: &mut MazeState, cmd: &MazeCommand, limits: &MazeLimits) -> MazeOutcome {
        let before = state.clone();
        let (outcome, effects, notes) = run(state, cmd, limits);
        assert_eq!(effects, vec![], "{cmd:?} -> {outcome:?} must not emit effects");
        assert_eq!(notes, vec![], "{cmd:?} -> {outcome:?} must not notify");
        assert_eq!(*state, before, "{cmd:?} -> {outcome:?} must not change the state");
        outcome
    }

    /// Everything a state built by `apply` (or restored from its effects)
    /// must satisfy.
    fn check_invariants(state: &MazeState) {
        assert!(state.next >= 1, "next {}", state.next);
        for (seq, Buffered { event, line, stored }) in &state.pending {
            assert!(*seq > state.next, "pending {seq} not above next {}", state.next);
            assert_eq!(event.seq, *seq);
            assert_eq!(parse_line(line), Ok(*event), "pending line {line:?}");
            assert!(stored, "pending {seq} left unstored by the apply that accepted it");
        }
        assert_eq!(state.oldest_pending(), state.pending.keys().next().copied());
        let mut edges = 0;
        for (followed, set) in &state.followers {
            assert!(!set.is_empty(), "empty follower set kept for {followed}");
            edges += set.len();
        }
        assert_eq!(state.follower_count(), edges);
    }

    /// A minimal stand-in for the RocksDB adapter: it applies effects the way
    /// storage would and is strict about effects that make no sense (storing
    /// a line or an edge twice, deleting what is not there).
    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    struct Storage {
        cursor: Option<(u64, MazeSeq)>,
        pending: BTreeMap<MazeSeq, String>,
        follows: BTreeSet<(UserId, UserId)>,
    }

    impl Storage {
        fn write(&mut self, effects: &[MazeEffect]) {
            for effect in effects.iter().cloned() {
                match effect {
                    MazeEffect::PutCursor { epoch, next } => {
                        if let Some((old_epoch, old_next)) = self.cursor {
                            assert!(
                                epoch > old_epoch || (epoch == old_epoch && next > old_next),
                                "cursor went from {:?} to {:?} (or stood still)",
                                (old_epoch, old_next),
                                (epoch, next)
                            );
                        }
                        self.cursor = Some((epoch, next));
                    }
                    MazeEffect::ClearAll => {
                        self.pending.clear();
                        self.follows.clear();
                    }
                    MazeEffect::PutPending { seq, line } => {
                        let old = self.pending.insert(seq, line);
                        assert!(old.is_none(), "seq {seq} buffered twice");
                    }
                    MazeEffect::DelPending { seq } => {
                        assert!(
                            self.pending.remove(&seq).is_some(),
                            "seq {seq} deleted but absent"
                        );
                    }
                    MazeEffect::PutFollow { followed, follower } => {
                        assert!(self.follows.insert((followed, follower)), "edge stored twice");
                    }
                    MazeEffect::DelFollow { followed, follower } => {
                        assert!(self.follows.remove(&(followed, follower)), "absent edge deleted");
                    }
                }
            }
        }

        /// Rebuild a state as a restarting node would. `reverse` feeds the
        /// entries in the opposite order, cursor last, to show that the
        /// order does not matter.
        fn restore(&self, reverse: bool) -> MazeState {
            let mut state = MazeState::new();
            let mut pending: Vec<_> = self.pending.iter().collect();
            let mut follows: Vec<_> = self.follows.iter().collect();
            if !reverse {
                if let Some((epoch, next)) = self.cursor {
                    state.restore_cursor(epoch, next);
                }
            } else {
                pending.reverse();
                follows.reverse();
            }
            for (seq, line) in pending {
                state.restore_pending(*seq, line.clone()).expect("stored line parses");
            }
            for (followed, follower) in follows {
                state.restore_follow(*followed, *follower);
            }
            if reverse {
                if let Some((epoch, next)) = self.cursor {
                    state.restore_cursor(epoch, next);
                }
            }
            state
        }
    }

    /// Apply `script` to a fresh state, writing effects to storage.
    fn apply_script(script: &[(MazeCommand, MazeLimits)]) -> (MazeState, Storage) {
        let mut state = MazeState::new();
        let mut storage = Storage::default();
        for (cmd, l) in script {
            let (_, effects, _) = run(&mut state, cmd, l);
            storage.write(&effects);
        }
        (state, storage)
    }

    // ---------------------------------------------------------------------
    // Reset and cursor
    // ---------------------------------------------------------------------

    #[test]
    fn new_state_expects_seq_1_of_stream_0() {
        let state = MazeState::new();
        assert_eq!(state, MazeState::default());
        assert_eq!((state.epoch(), state.next()), (0, 1));
        assert_eq!((state.pending_len(), state.oldest_pending()), (0, None));
        assert_eq!(state.follower_count(), 0);
        assert_eq!(state.followers_of(1), Vec::<UserId>::new());
    }

    #[test]
    fn reset_starts_a_new_stream() {
        let mut state = MazeState::new();
        let (outcome, effects, notes) = run(&mut state, &MazeCommand::Reset, &ROOMY);
        assert_eq!(outcome, MazeOutcome::Reset { epoch: 1 });
        assert_eq!(effects, vec![MazeEffect::ClearAll, cursor(1, 1)]);
        assert_eq!(notes, vec![]);
        assert_eq!((state.epoch(), state.next()), (1, 1));
    }

    #[test]
    fn reset_clears_graph_and_buffer_and_restarts_at_1() {
        let mut state = started();
        feed(&mut state, &["1|F|1|2\n", "2|F|3|2\n", "5|B\n"]);
        assert_eq!((state.next(), state.pending_len(), state.follower_count()), (3, 1, 2));

        let (outcome, effects, _) = run(&mut state, &MazeCommand::Reset, &ROOMY);
        assert_eq!(outcome, MazeOutcome::Reset { epoch: 2 });
        assert_eq!(effects, vec![MazeEffect::ClearAll, cursor(2, 1)]);
        let mut fresh = MazeState::new();
        fresh.restore_cursor(2, 1);
        assert_eq!(state, fresh);

        // The new stream starts over at 1 with an empty graph.
        let notes = feed(&mut state, &["1|S|2\n", "2|F|9|2\n", "3|S|2\n"]);
        assert_eq!(
            notes,
            vec![note(2, Recipients::One(2), "2|F|9|2\n"), note(3, many(&[9]), "3|S|2\n")]
        );
        // And the old stream's lines are stale now.
        let outcome = run_noop(&mut state, &lines(1, &["4|B\n"]), &ROOMY);
        assert_eq!(outcome, MazeOutcome::Lines(LinesStats { stale: 1, ..LinesStats::default() }));
    }

    #[test]
    fn cursor_is_stored_once_and_last_and_only_when_next_moves() {
        let mut state = started();
        let (outcome, effects, _) = run(&mut state, &lines(1, &["3|B\n", "2|B\n"]), &ROOMY);
        assert_eq!(outcome, MazeOutcome::Lines(stats(2, 0, 0, 0)));
        assert_eq!(effects, vec![put(3, "3|B\n"), put(2, "2|B\n")]);

        let (outcome, effects, notes) = run(&mut state, &lines(1, &["1|B\r\n"]), &ROOMY);
        assert_eq!(outcome, MazeOutcome::Lines(stats(1, 0, 0, 3)));
        assert_eq!(
            effects,
            vec![del(2), del(3), cursor(1, 4)],
            "stored lines deleted in delivery order, the line delivered by the apply that \
             brought it never stored, cursor last"
        );
        assert_eq!(notes.iter().map(|n| n.seq).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn the_last_seq_is_refused_and_the_one_before_still_delivered() {
        let mut state = MazeState::new();
        state.restore_cursor(1, u64::MAX - 1);
        let last = format!("{}|B\n", u64::MAX);
        let before_last = format!("{}|B\n", u64::MAX - 1);
        let cmd = MazeCommand::Lines { epoch: 1, lines: vec![last, before_last.clone()] };
        let (outcome, effects, notes) = run(&mut state, &cmd, &ROOMY);
        assert_eq!(outcome, MazeOutcome::Lines(stats(1, 0, 1, 1)));
        assert_eq!(notes, vec![note(u64::MAX - 1, Recipients::All, &before_last)]);
        assert_eq!(effects.last(), Some(&cursor(1, u64::MAX)));
        assert_eq!(state.next(), u64::MAX);
    }

    // ---------------------------------------------------------------------
    // Routing
    // ---------------------------------------------------------------------

    #[test]
    fn a_full_follow_graph_still_notifies_but_stops_growing() {
        let mut state = MazeState::new();
        let limits = MazeLimits { follow_edges_max: 1, ..ROOMY };
        let (mut fx, mut notes) = (Vec::new(), Vec::new());
        state.apply(&MazeCommand::Reset, &limits, &mut fx, &mut notes);
        let lines = ["1|F|1|2\n", "2|F|3|2\n", "3|F|1|2\n", "4|S|2\n"];
        let cmd =
            MazeCommand::Lines { epoch: 1, lines: lines.iter().map(|l| l.to_string()).collect() };
        let outcome = state.apply(&cmd, &limits, &mut fx, &mut notes);
        let MazeOutcome::Lines(stats) = outcome else { panic!("{outcome:?}") };
        assert_eq!(stats.follows_refused, 1, "3 -> 2 did not fit; 1 -> 2 again is no new edge");
        assert_eq!(state.follower_count(), 1);
        let to_two = notes.iter().filter(|n| n.recipients == Recipients::One(2)).count();
        assert_eq!(to_two, 3, "every follow is still notified");
        // 2's status reaches its recorded follower 1 only, not the refused 3.
        let status = notes.iter().find(|n| n.seq == 4).expect("status notification");
        assert_eq!(status.recipients, Recipients::Many(vec![1]));
    }

    #[test]
    fn follow_notifies_the_followed_user_and_stores_the_edge() {
        let mut state = started();
        let (outcome, effects, notes) = run(&mut state, &lines(1, &["1|F|60|50\n"]), &ROOMY);
        assert_eq!(outcome, MazeOutcome::Lines(stats(1, 0, 0, 1)));
        assert_eq!(notes, vec![note(1, Recipients::One(50), "1|F|60|50\n")]);
        assert_eq!(
            effects,
            vec![MazeEffect::PutFollow { followed: 50, follower: 60 }, cursor(1, 2)]
        );
        assert_eq!(state.followers_of(50), [60]);
        assert_eq!(state.followers_of(60), Vec::<UserId>::new());
    }

    #[test]
    fn following_twice_notifies_twice_but_stores_one_edge() {
        let mut state = started();
        feed(&mut state, &["1|F|60|50\n"]);
        let (_, effects, notes) = run(&mut state, &lines(1, &["2|F|60|50\n"]), &ROOMY);
        assert_eq!(notes, vec![note(2, Recipients::One(50), "2|F|60|50\n")]);
        assert_eq!(effects, vec![cursor(1, 3)]);
        assert_eq!(state.follower_count(), 1);
    }

    #[test]
    fn unfollow_notifies_nobody_and_removes_the_edge() {
        let mut state = started();
        feed(&mut state, &["1|F|60|50\n"]);
        let (_, effects, notes) = run(&mut state, &lines(1, &["2|U|60|50\n"]), &ROOMY);
        assert_eq!(notes, vec![]);
        assert_eq!(
            effects,
            vec![MazeEffect::DelFollow { followed: 50, follower: 60 }, cursor(1, 3)]
        );
        assert_eq!(state.follower_count(), 0);
        assert!(state.followers.is_empty(), "the emptied set is removed");

        // Unfollowing what is not followed is delivered but touches nothing.
        let (_, effects, notes) = run(&mut state, &lines(1, &["3|U|60|50\n"]), &ROOMY);
        assert_eq!(notes, vec![]);
        assert_eq!(effects, vec![cursor(1, 4)]);
    }

    #[test]
    fn broadcast_notifies_everyone() {
        let mut state = started();
        assert_eq!(feed(&mut state, &["1|B\n"]), vec![note(1, Recipients::All, "1|B\n")]);
    }

    #[test]
    fn private_message_notifies_only_the_recipient() {
        let mut state = started();
        feed(&mut state, &["1|F|7|5\n"]);
        let notes = feed(&mut state, &["2|P|5|7\n"]);
        assert_eq!(notes, vec![note(2, Recipients::One(7), "2|P|5|7\n")]);
    }

    #[test]
    fn status_notifies_the_current_followers_sorted() {
        let mut state = started();
        feed(&mut state, &["3|F|9|5\n", "1|F|30|5\n", "2|F|2|5\n", "4|F|9|6\n"]);
        let notes = feed(&mut state, &["5|S|5\n"]);
        assert_eq!(notes, vec![note(5, many(&[2, 9, 30]), "5|S|5\n")]);
        assert_eq!(state.followers_of(5), [2, 9, 30]);
        assert_eq!(state.follower_count(), 4);
    }

    #[test]
    fn status_without_followers_notifies_nobody() {
        let mut state = started();
        feed(&mut state, &["1|F|5|9\n"]);
        let (outcome, _, notes) = run(&mut state, &lines(1, &["2|S|5\n"]), &ROOMY);
        assert_eq!(outcome, MazeOutcome::Lines(stats(1, 0, 0, 1)));
        assert_eq!(notes, vec![]);
    }

    #[test]
    fn follow_then_status_notifies_and_unfollow_then_status_does_not() {
        let mut state = started();
        // Shuffled: routing follows seq order, not arrival order.
        let notes = feed(&mut state, &["4|S|1\n", "2|S|1\n", "3|U|2|1\n", "1|F|2|1\n"]);
        assert_eq!(
            notes,
            vec![note(1, Recipients::One(1), "1|F|2|1\n"), note(2, many(&[2]), "2|S|1\n")]
        );
    }

    #[test]
    fn a_self_follow_is_an_ordinary_edge() {
        let mut state = started();
        let notes = feed(&mut state, &["1|F|4|4\n", "2|S|4\n"]);
        assert_eq!(notes[1], note(2, many(&[4]), "2|S|4\n"));
    }

    #[test]
    fn notifications_carry_the_raw_line_byte_for_byte() {
        let mut state = started();
        let raw = ["1|F|2|1\r\n", "002|S|01\n", "3|P|1|2", "4|B\r\n"];
        let notes = feed(&mut state, &raw);
        let got: Vec<_> = notes.iter().map(|n| n.line.as_str()).collect();
        assert_eq!(got, raw);
        assert_eq!(notes[1], note(2, many(&[2]), "002|S|01\n"));
    }

    // ---------------------------------------------------------------------
    // Duplicates, stale and malformed lines
    // ---------------------------------------------------------------------

    #[test]
    fn duplicates_change_nothing() {
        let mut state = started();
        feed(&mut state, &["1|F|2|1\n", "3|B\n"]);
        // Delivered (1), buffered (3), and the second copy within one batch.
        let outcome = run_noop(&mut state, &lines(1, &["1|F|2|1\n", "3|B\n", "1|P|5|6\n"]), &ROOMY);
        assert_eq!(outcome, MazeOutcome::Lines(stats(0, 3, 0, 0)));
        let (outcome, _, notes) = run(&mut state, &lines(1, &["2|B\n", "2|S|9\n"]), &ROOMY);
        assert_eq!(outcome, MazeOutcome::Lines(stats(1, 1, 0, 2)));
        assert_eq!(
            notes,
            vec![note(2, Recipients::All, "2|B\n"), note(3, Recipients::All, "3|B\n")]
        );
    }

    #[test]
    fn a_re_proposed_batch_is_harmless() {
        let mut state = started();
        let batch = ["2|F|1|2\n", "1|B\n", "4|S|2\n"];
        feed(&mut state, &batch);
        let outcome = run_noop(&mut state, &lines(1, &batch), &ROOMY);
        assert_eq!(outcome, MazeOutcome::Lines(stats(0, 3, 0, 0)));
    }

    #[test]
    fn lines_of_another_epoch_are_stale() {
        let mut state = started();
        for epoch in [0, 2, u64::MAX] {
            let outcome = run_noop(&mut state, &lines(epoch, &["1|B\n", "junk", "2|B\n"]), &ROOMY);
            assert_eq!(
                outcome,
                MazeOutcome::Lines(LinesStats { stale: 3, ..LinesStats::default() })
            );
        }
    }

    #[test]
    fn malformed_lines_are_counted_and_skipped() {
        let mut state = started();
        let cmd = lines(1, &["", "\n", "0|B\n", "1|Q\n", "1|S\n", "1|B|2\n", "1|B\n\n", "1|B\n"]);
        let (outcome, _, notes) = run(&mut state, &cmd, &ROOMY);
        assert_eq!(outcome, MazeOutcome::Lines(stats(1, 0, 7, 1)));
        assert_eq!(notes, vec![note(1, Recipients::All, "1|B\n")]);
    }

    #[test]
    fn line_length_counts_the_line_ending() {
        let l = MazeLimits { line_bytes_max: 6, ..ROOMY };
        let mut state = started();
        // "01|B\r\n" is exactly 6 bytes, "001|B\r\n" is 7.
        let (outcome, _, _) = run(&mut state, &lines(1, &["001|B\r\n", "01|B\r\n"]), &l);
        assert_eq!(outcome, MazeOutcome::Lines(stats(1, 0, 1, 1)));
        let l = MazeLimits { line_bytes_max: 0, ..ROOMY };
        let outcome = run_noop(&mut state, &lines(1, &["2|B\n"]), &l);
        assert_eq!(outcome, MazeOutcome::Lines(stats(0, 0, 1, 0)));
    }

    // ---------------------------------------------------------------------
    // Skips
    // ---------------------------------------------------------------------

    #[test]
    fn skip_gives_up_the_gap_and_delivers_the_run_behind_it() {
        let mut state = started();
        feed(&mut state, &["1|B\n", "4|B\n", "5|B\n", "7|B\n"]);
        assert_eq!((state.next(), state.oldest_pending()), (2, Some(4)));

        let (outcome, effects, notes) = run(&mut state, &skip(1, 2), &ROOMY);
        let want = LinesStats { delivered: 2, skipped: 2, ..LinesStats::default() };
        assert_eq!(outcome, MazeOutcome::Skipped(want));
        assert_eq!(effects, vec![del(4), del(5), cursor(1, 6)]);
        assert_eq!(notes.iter().map(|n| n.seq).collect::<Vec<_>>(), [4, 5]);
        assert_eq!((state.next(), state.oldest_pending()), (6, Some(7)));

        // The skipped lines arriving late are duplicates.
        let outcome = run_noop(&mut state, &lines(1, &["2|B\n", "3|B\n"]), &ROOMY);
        assert_eq!(outcome, MazeOutcome::Lines(stats(0, 2, 0, 0)));
    }

    #[test]
    fn skip_is_a_no_op_unless_it_names_next_with_a_gap_behind_it() {
        let zero = MazeOutcome::Skipped(LinesStats::default());
        let mut state = started();
        // Nothing buffered: the missing line may still come; nothing to gain.
        assert_eq!(run_noop(&mut state, &skip(1, 1), &ROOMY), zero);
        feed(&mut state, &["1|B\n", "3|B\n"]);
        // Not next: the line the leader waited for has arrived since.
        for seq in [0, 1, 3, 4, u64::MAX] {
            assert_eq!(run_noop(&mut state, &skip(1, seq), &ROOMY), zero, "seq {seq}");
        }
        // Another stream.
        assert_eq!(run_noop(&mut state, &skip(0, 2), &ROOMY), zero);
        assert_eq!(run_noop(&mut state, &skip(2, 2), &ROOMY), zero);
        // The real thing.
        let (outcome, _, _) = run(&mut state, &skip(1, 2), &ROOMY);
        let want = LinesStats { delivered: 1, skipped: 1, ..LinesStats::default() };
        assert_eq!(outcome, MazeOutcome::Skipped(want));
        assert_eq!(state.next(), 4);
    }

    // ---------------------------------------------------------------------
    // pending_max
    // ---------------------------------------------------------------------

    #[test]
    fn a_full_buffer_skips_the_oldest_gap() {
        let l = limits(2);
        let mut state = started();
        let (outcome, _, _) = run(&mut state, &lines(1, &["3|B\n", "4|B\n"]), &l);
        assert_eq!(outcome, MazeOutcome::Lines(stats(2, 0, 0, 0)));
        let (outcome, effects, notes) = run(&mut state, &lines(1, &["6|B\n"]), &l);
        let want = LinesStats { accepted: 1, delivered: 2, skipped: 2, ..LinesStats::default() };
        assert_eq!(outcome, MazeOutcome::Lines(want));
        assert_eq!(effects, vec![del(3), del(4), put(6, "6|B\n"), cursor(1, 5)]);
        assert_eq!(notes.iter().map(|n| n.seq).collect::<Vec<_>>(), [3, 4]);
        assert_eq!((state.next(), state.pending_len()), (5, 1));
    }

    #[test]
    fn a_full_buffer_skips_as_many_gaps_as_it_takes() {
        let mut state = started();
        let (outcome, _, notes) =
            run(&mut state, &lines(1, &["7|B\n", "3|B\n", "5|B\n"]), &limits(1));
        let want = LinesStats { accepted: 3, delivered: 2, skipped: 3, ..LinesStats::default() };
        assert_eq!(outcome, MazeOutcome::Lines(want));
        assert_eq!(notes.iter().map(|n| n.seq).collect::<Vec<_>>(), [3, 5]);
        assert_eq!((state.next(), state.oldest_pending()), (6, Some(7)));
    }

    #[test]
    fn pending_max_zero_skips_every_gap_at_once() {
        let l = limits(0);
        let mut state = started();
        let (outcome, effects, notes) = run(&mut state, &lines(1, &["4|B\n", "3|B\n"]), &l);
        let want = LinesStats { accepted: 2, delivered: 2, skipped: 2, ..LinesStats::default() };
        assert_eq!(outcome, MazeOutcome::Lines(want));
        assert_eq!(effects, vec![cursor(1, 5)], "nothing left buffered, so nothing stored");
        assert_eq!(notes.iter().map(|n| n.seq).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(state.pending_len(), 0);
        let outcome = run_noop(&mut state, &lines(1, &["2|B\n"]), &l);
        assert_eq!(outcome, MazeOutcome::Lines(stats(0, 1, 0, 0)), "2 arrived too late");
        // Within one batch the order of arrival does not matter: the batch
        // is buffered whole before anything is delivered or skipped.
        let (outcome, _, _) = run(&mut state, &lines(1, &["7|B\n", "6|B\n"]), &l);
        let want = LinesStats { accepted: 2, delivered: 2, skipped: 1, ..LinesStats::default() };
        assert_eq!(outcome, MazeOutcome::Lines(want));
        // In order, nothing is ever skipped.
        let (outcome, _, _) = run(&mut state, &lines(1, &["8|B\n", "9|B\n"]), &l);
        assert_eq!(outcome, MazeOutcome::Lines(stats(2, 0, 0, 2)));
    }

    #[test]
    fn a_shrunk_pending_max_is_enforced_by_the_next_lines_or_skip() {
        let mut state = started();
        feed(&mut state, &["3|B\n", "5|B\n", "7|B\n"]);
        // All duplicates, yet the buffer is over the new limit.
        let (outcome, _, notes) = run(&mut state, &lines(1, &["3|B\n"]), &limits(1));
        let want = LinesStats { duplicate: 1, delivered: 2, skipped: 3, ..LinesStats::default() };
        assert_eq!(outcome, MazeOutcome::Lines(want));
        assert_eq!(notes.len(), 2);
        assert_eq!(state.pending_len(), 1);

        let mut state = started();
        feed(&mut state, &["3|B\n", "5|B\n", "7|B\n"]);
        let (outcome, _, _) = run(&mut state, &skip(1, 1), &limits(0));
        let want = LinesStats { delivered: 3, skipped: 4, ..LinesStats::default() };
        assert_eq!(outcome, MazeOutcome::Skipped(want));
        assert_eq!((state.next(), state.pending_len()), (8, 0));
    }

    // ---------------------------------------------------------------------
    // Restore
    // ---------------------------------------------------------------------

    fn mixed_script() -> Vec<(MazeCommand, MazeLimits)> {
        vec![
            (lines(0, &["1|F|1|2\n", "3|S|2\n"]), ROOMY),
            (MazeCommand::Reset, ROOMY),
            (lines(1, &["2|F|1|2\n", "4|F|3|2\r\n", "1|F|4|2\n"]), ROOMY),
            (lines(1, &["6|S|2\n", "9|F|1|5\n", "5|U|4|2\n", "bad\n"]), ROOMY),
            (skip(1, 3), ROOMY),
            (lines(1, &["7|F|2|1\n", "12|B\n", "11|F|7|5\n"]), limits(3)),
            (lines(1, &["14|P|1|2\n", "15|S|1\n"]), limits(3)),
            (lines(0, &["16|B\n"]), ROOMY),
        ]
    }

    #[test]
    fn state_restored_from_its_effects_is_equal_and_behaves_identically() {
        let script = mixed_script();
        let (state, storage) = apply_script(&script);
        assert!(state.pending_len() > 0 && state.follower_count() > 0, "{state:?}");
        for reverse in [false, true] {
            let mut restored = storage.restore(reverse);
            assert_eq!(restored, state, "reverse: {reverse}");
            check_invariants(&restored);

            let mut original = state.clone();
            let more = [
                (lines(1, &["13|S|5\n", "10|S|2\n", "8|S|1\n"]), ROOMY),
                (skip(1, 10), ROOMY),
                (lines(1, &["16|S|5\n", "16|S|5\n", "17|U|7|5\n", "18|S|5\n"]), ROOMY),
                (MazeCommand::Reset, ROOMY),
                (lines(2, &["1|F|1|2\n", "2|S|2\n"]), ROOMY),
            ];
            for (cmd, l) in &more {
                assert_eq!(run(&mut restored, cmd, l), run(&mut original, cmd, l), "{cmd:?}");
                assert_eq!(restored, original);
            }
        }
    }

    #[test]
    fn restore_pending_refuses_lines_that_do_not_match_their_key() {
        let mut state = MazeState::new();
        assert_eq!(state.restore_pending(3, "3|Z\n".into()), Err(ParseError::UnknownType));
        assert_eq!(
            state.restore_pending(3, "4|B\n".into()),
            Err(ParseError::SeqMismatch { stored: 3, parsed: 4 })
        );
        assert_eq!(state.pending_len(), 0);
        assert_eq!(state.restore_pending(3, "3|B\r\n".into()), Ok(()));
        assert_eq!(state.oldest_pending(), Some(3));
    }

    #[test]
    fn restoring_an_edge_twice_is_harmless() {
        let mut state = MazeState::new();
        state.restore_follow(2, 1);
        state.restore_follow(2, 1);
        assert_eq!(state.follower_count(), 1);
        check_invariants(&state);
    }

    /// Storage that breaks the invariants (a line below `next`) must not
    /// wedge or crash the state machine: such lines are dropped, not
    /// delivered.
    #[test]
    fn lines_below_next_from_damaged_storage_are_dropped_not_delivered() {
        let mut state = MazeState::new();
        state.restore_cursor(1, 5);
        state.restore_pending(2, "2|B\n".into()).unwrap();
        state.restore_pending(3, "3|B\n".into()).unwrap();
        state.restore_pending(7, "7|B\n".into()).unwrap();
        let mut effects = Vec::new();
        let mut notes = Vec::new();
        let outcome = state.apply(&skip(1, 5), &limits(0), &mut effects, &mut notes);
        // The first jump finds a line below next and drops it; the limit
        // then drops the next one, then skips 5..7 and delivers 7.
        let want = LinesStats { delivered: 1, skipped: 2, ..LinesStats::default() };
        assert_eq!(outcome, MazeOutcome::Skipped(want));
        assert_eq!(effects, vec![del(2), del(3), del(7), cursor(1, 8)]);
        assert_eq!(notes, vec![note(7, Recipients::All, "7|B\n")]);
        check_invariants(&state);
    }

    // ---------------------------------------------------------------------
    // Property tests against an in-order reference model
    // ---------------------------------------------------------------------

    const USERS: u64 = 6;

    /// A realistic mix: mostly status updates, rare broadcasts.
    fn kind() -> impl Strategy<Value = EventKind> {
        let user = || 1..=USERS;
        prop_oneof![
            55 => user().prop_map(|from| EventKind::Status { from }),
            15 => (user(), user()).prop_map(|(from, to)| EventKind::Private { from, to }),
            15 => (user(), user()).prop_map(|(from, to)| EventKind::Follow { from, to }),
            15 => (user(), user()).prop_map(|(from, to)| EventKind::Unfollow { from, to }),
            2 => Just(EventKind::Broadcast),
        ]
    }

    /// One source event: its kind and its raw line.
    #[derive(Debug, Clone)]
    struct Source {
        seq: MazeSeq,
        kind: EventKind,
        line: String,
    }

    /// Written here rather than with `Event`'s `Display`, so that the model
    /// shares nothing with the code under test but the types.
    fn wire(seq: MazeSeq, kind: EventKind, crlf: bool) -> String {
        let body = match kind {
            EventKind::Follow { from, to } => format!("{seq}|F|{from}|{to}"),
            EventKind::Unfollow { from, to } => format!("{seq}|U|{from}|{to}"),
            EventKind::Broadcast => format!("{seq}|B"),
            EventKind::Private { from, to } => format!("{seq}|P|{from}|{to}"),
            EventKind::Status { from } => format!("{seq}|S|{from}"),
        };
        body + if crlf { "\r\n" } else { "\n" }
    }

    /// Events 1..=n with mixed line endings.
    fn stream(max: usize) -> impl Strategy<Value = Vec<Source>> {
        vec((kind(), any::<bool>()), 1..=max).prop_map(|events| {
            (1..)
                .zip(events)
                .map(|(seq, (kind, crlf))| Source { seq, kind, line: wire(seq, kind, crlf) })
                .collect()
        })
    }

    /// The protocol, the simple way: events in seq order over a list of
    /// (follower, followed) pairs.
    fn reference<'a>(events: impl IntoIterator<Item = &'a Source>) -> Vec<Notification> {
        let mut edges: Vec<(UserId, UserId)> = Vec::new();
        let mut out = Vec::new();
        for ev in events {
            let recipients = match ev.kind {
                EventKind::Follow { from, to } => {
                    if !edges.contains(&(from, to)) {
                        edges.push((from, to));
                    }
                    Some(Recipients::One(to))
                }
                EventKind::Unfollow { from, to } => {
                    edges.retain(|edge| *edge != (from, to));
                    None
                }
                EventKind::Broadcast => Some(Recipients::All),
                EventKind::Private { to, .. } => Some(Recipients::One(to)),
                EventKind::Status { from } => {
                    let mut followers: Vec<UserId> = edges
                        .iter()
                        .filter(|(_, followed)| *followed == from)
                        .map(|(follower, _)| *follower)
                        .collect();
                    followers.sort_unstable();
                    (!followers.is_empty()).then_some(Recipients::Many(followers))
                }
            };
            if let Some(recipients) = recipients {
                out.push(Notification { seq: ev.seq, recipients, line: ev.line.clone() });
            }
        }
        out
    }

    /// Lines that must count as malformed (with `ROOMY.line_bytes_max` 64):
    /// the last one parses as seq 1 but is too long.
    const GARBAGE: [&str; 8] = [
        "",
        "\n",
        "0|B\n",
        "x|S|1\n",
        "1|Q\n",
        "1|F|1\n",
        "1|S|1|2\r\n",
        "00000000000000000000000000000000000000000000000000000000000000001|B\n",
    ];

    /// How one batch is made.
    #[derive(Debug, Clone)]
    struct Step {
        /// New lines, taken from the shuffled stream.
        take: usize,
        /// Lines sent before (or in this batch) sent again, at these places.
        resend: Vec<(Index, Index)>,
        garbage: Option<(Index, Index)>,
        /// Also propose the previous batch again (a leader change).
        repeat_previous: bool,
        /// Also propose this batch under another epoch.
        stale: bool,
        /// Restart from storage afterwards; `Some(reverse)`.
        restart: Option<bool>,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            1..24usize,
            vec((any::<Index>(), any::<Index>()), 0..3),
            proptest::option::weighted(0.2, (any::<Index>(), any::<Index>())),
            proptest::bool::weighted(0.1),
            proptest::bool::weighted(0.05),
            proptest::option::weighted(0.1, any::<bool>()),
        )
            .prop_map(|(take, resend, garbage, repeat_previous, stale, restart)| Step {
                take,
                resend,
                garbage,
                repeat_previous,
                stale,
                restart,
            })
    }

    /// Sum of the stats of several commands.
    fn add(total: &mut LinesStats, outcome: &MazeOutcome) {
        let s = match outcome {
            MazeOutcome::Lines(s) | MazeOutcome::Skipped(s) => s,
            MazeOutcome::Reset { .. } => return,
        };
        total.accepted += s.accepted;
        total.duplicate += s.duplicate;
        total.malformed += s.malformed;
        total.stale += s.stale;
        total.delivered += s.delivered;
        total.skipped += s.skipped;
    }

    /// A node's life: the state, its storage, what it has notified so far.
    struct Node {
        state: MazeState,
        storage: Storage,
        notes: Vec<Notification>,
        /// Seqs delivered, in order: the seqs that arrived in lines of
        /// this stream and that `next` has since moved past (a line of a
        /// skipped seq arrives too late to count, below `next`).
        delivered: Vec<MazeSeq>,
        arrived: BTreeSet<MazeSeq>,
        totals: LinesStats,
    }

    impl Node {
        fn start() -> Node {
            let mut node = Node {
                state: MazeState::new(),
                storage: Storage::default(),
                notes: Vec::new(),
                delivered: Vec::new(),
                arrived: BTreeSet::new(),
                totals: LinesStats::default(),
            };
            node.apply(&MazeCommand::Reset, &ROOMY);
            node
        }

        fn apply(&mut self, cmd: &MazeCommand, l: &MazeLimits) -> MazeOutcome {
            match cmd {
                MazeCommand::Reset => self.arrived.clear(),
                MazeCommand::Lines { epoch, lines } if *epoch == self.state.epoch() => {
                    let fits = lines.iter().filter(|line| line.len() <= l.line_bytes_max);
                    let seqs = fits.filter_map(|line| parse_line(line).ok());
                    self.arrived.extend(seqs.map(|event| event.seq));
                }
                _ => {}
            }
            let from = self.state.next();
            let (outcome, effects, notes) = run(&mut self.state, cmd, l);
            self.storage.write(&effects);
            self.notes.extend(notes);
            let passed = from..self.state.next();
            let delivered: Vec<MazeSeq> = self.arrived.range(passed).copied().collect();
            let counted = match &outcome {
                MazeOutcome::Lines(s) | MazeOutcome::Skipped(s) => s.delivered,
                MazeOutcome::Reset { .. } => 0,
            };
            assert_eq!(counted, count_u64(delivered.len()), "{cmd:?} -> {outcome:?}");
            self.delivered.extend(delivered);
            add(&mut self.totals, &outcome);
            outcome
        }

        fn lines(&mut self, batch: &[String], l: &MazeLimits) -> MazeOutcome {
            let cmd = MazeCommand::Lines { epoch: self.state.epoch(), lines: batch.to_vec() };
            self.apply(&cmd, l)
        }

        fn restart(&mut self, reverse: bool) -> Result<(), TestCaseError> {
            let restored = self.storage.restore(reverse);
            prop_assert_eq!(&restored, &self.state);
            self.state = restored;
            Ok(())
        }
    }

    /// Feed `events` (all but `missing`) shuffled by `order` in batches made
    /// by `plan`; `after_batch` runs after each batch.
    fn feed_stream(
        node: &mut Node,
        events: &[Source],
        order: &[usize],
        plan: &[Step],
        l: &MazeLimits,
        mut after_batch: impl FnMut(&mut Node) -> Result<(), TestCaseError>,
    ) -> Result<LinesStats, TestCaseError> {
        let mut want = LinesStats::default();
        let mut sent: Vec<&str> = Vec::new();
        let mut previous: Vec<String> = Vec::new();
        let mut rest = order;
        for step in plan.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(step.take.min(rest.len()));
            rest = later;
            let mut batch: Vec<String> = now.iter().map(|&i| events[i].line.clone()).collect();
            sent.extend(now.iter().map(|&i| events[i].line.as_str()));
            want.accepted += count_u64(now.len());
            for (which, at) in &step.resend {
                let line = which.get(&sent).to_string();
                batch.insert(at.index(batch.len() + 1), line);
                want.duplicate += 1;
            }
            if let Some((which, at)) = &step.garbage {
                batch.insert(at.index(batch.len() + 1), which.get(&GARBAGE).to_string());
                want.malformed += 1;
            }
            if step.stale {
                let cmd =
                    MazeCommand::Lines { epoch: node.state.epoch() + 1, lines: batch.clone() };
                let outcome = run_noop(&mut node.state, &cmd, l);
                add(&mut node.totals, &outcome);
                want.stale += count_u64(batch.len());
            }
            node.lines(&batch, l);
            if step.repeat_previous && !previous.is_empty() {
                node.lines(&previous, l);
                for line in &previous {
                    match parse_line(line) {
                        Ok(_) if line.len() <= l.line_bytes_max => want.duplicate += 1,
                        _ => want.malformed += 1,
                    }
                }
            }
            previous = batch;
            if let Some(reverse) = step.restart {
                node.restart(reverse)?;
            }
            after_batch(node)?;
        }
        Ok(want)
    }

    /// A stream, a shuffle of it, and a batching plan.
    fn shuffled_stream(max: usize) -> impl Strategy<Value = (Vec<Source>, Vec<usize>, Vec<Step>)> {
        stream(max).prop_flat_map(|events| {
            let order: Vec<usize> = (0..events.len()).collect();
            (Just(events), Just(order).prop_shuffle(), vec(step(), 1..16))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// The important one: shuffled, batched, re-sent, interleaved with
        /// garbage, stale batches and restarts, the notifications are exactly
        /// those of the in-order reference.
        #[test]
        fn matches_the_in_order_reference((events, order, plan) in shuffled_stream(300)) {
            let mut node = Node::start();
            let mut want = feed_stream(&mut node, &events, &order, &plan, &ROOMY, |_| Ok(()))?;
            want.delivered = count_u64(events.len());
            prop_assert_eq!(&node.notes, &reference(&events));
            prop_assert_eq!(node.totals, want);
            prop_assert_eq!(node.state.next(), count_u64(events.len()) + 1);
            prop_assert_eq!(node.state.pending_len(), 0);
            prop_assert_eq!(node.storage.pending.len(), 0);
            node.restart(false)?;
        }

        /// With one seq missing, a Skip for it (whenever it is proposed while
        /// it is `next`) delivers everything else in order; Skips for other
        /// seqs never do anything.
        #[test]
        fn a_skip_of_the_missing_seq_delivers_everything_else(
            (events, order, plan) in shuffled_stream(150),
            missing in any::<Index>(),
            eager in any::<bool>(),
        ) {
            let missing = missing.index(events.len());
            let order: Vec<usize> = order.into_iter().filter(|&i| i != missing).collect();
            let missing_seq = events[missing].seq;
            let mut node = Node::start();
            let zero = MazeOutcome::Skipped(LinesStats::default());
            feed_stream(&mut node, &events, &order, &plan, &ROOMY, |node| {
                let next = node.state.next();
                for seq in [next.wrapping_sub(1), next + 1, next + 2] {
                    prop_assert_eq!(run_noop(&mut node.state, &skip(1, seq), &ROOMY), zero.clone());
                }
                // Only when nothing else is missing: a skip gives up every
                // seq up to the oldest buffered one, as it would in
                // production for lines later than the gap timeout.
                if eager && next == missing_seq && node.state.oldest_pending() == Some(next + 1) {
                    node.apply(&skip(1, missing_seq), &ROOMY);
                }
                Ok(())
            })?;
            node.apply(&skip(1, missing_seq), &ROOMY);
            let rest = events.iter().filter(|ev| ev.seq != missing_seq);
            prop_assert_eq!(&node.notes, &reference(rest));
            let last = count_u64(events.len());
            let skipped = u64::from(missing_seq < last);
            prop_assert_eq!(node.totals.skipped, skipped);
            prop_assert_eq!(node.totals.delivered, last - 1);
            prop_assert_eq!(node.state.next(), if skipped == 1 { last + 1 } else { last });
            prop_assert_eq!(node.state.pending_len(), 0);
        }

        /// A small buffer overflows and skips, but never holds more than
        /// `pending_max` lines after an apply; what is delivered is exactly
        /// what the reference says for that subset of the stream.
        #[test]
        fn overflow_skipping_keeps_the_buffer_within_pending_max(
            (events, order, plan) in shuffled_stream(200),
            pending_max in 0u64..6,
        ) {
            let l = limits(pending_max);
            let mut node = Node::start();
            feed_stream(&mut node, &events, &order, &plan, &l, |node| {
                prop_assert!(count_u64(node.state.pending_len()) <= pending_max);
                Ok(())
            })?;
            let n = count_u64(events.len());
            let delivered: BTreeSet<MazeSeq> = node.delivered.iter().copied().collect();
            let subset = events.iter().filter(|ev| delivered.contains(&ev.seq));
            prop_assert_eq!(&node.notes, &reference(subset));
            prop_assert_eq!(node.totals.delivered, count_u64(delivered.len()));
            prop_assert_eq!(node.totals.delivered + node.totals.skipped, n);
            prop_assert_eq!(node.state.next(), n + 1);
            prop_assert_eq!(node.state.pending_len(), 0);
        }
    }

    /// Lines near the protocol, so that some parse and land in the buffer.
    fn any_line() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (1u64..12, kind(), any::<bool>()).prop_map(|(seq, k, crlf)| wire(seq, k, crlf)),
            1 => "[0-9|FUBPS\r\n]{0,10}",
            1 => any::<String>(),
        ]
    }

    fn any_command() -> impl Strategy<Value = MazeCommand> {
        let epoch = || prop_oneof![0u64..3, any::<u64>()];
        prop_oneof![
            1 => Just(MazeCommand::Reset),
            6 => (epoch(), vec(any_line(), 0..8))
                .prop_map(|(epoch, lines)| MazeCommand::Lines { epoch, lines }),
            2 => (epoch(), prop_oneof![0u64..12, any::<u64>()])
                .prop_map(|(epoch, seq)| MazeCommand::Skip { epoch, seq }),
        ]
    }

    fn any_limits() -> impl Strategy<Value = MazeLimits> {
        (prop_oneof![0u64..4, any::<u64>()], prop_oneof![0usize..12, any::<usize>()]).prop_map(
            |(pending_max, line_bytes_max)| MazeLimits {
                pending_max,
                line_bytes_max,
                follow_edges_max: u64::MAX,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn any_command_and_limits_apply_without_panicking(
            steps in vec((any_command(), any_limits()), 0..40)
        ) {
            let mut state = MazeState::new();
            let mut storage = Storage::default();
            for (cmd, l) in &steps {
                let before = state.clone();
                let (outcome, effects, notes) = run(&mut state, cmd, l);
                if effects.is_empty() {
                    prop_assert_eq!(&state, &before, "{:?} -> {:?}", cmd, outcome);
                    prop_assert!(notes.is_empty());
                }
                if let MazeCommand::Lines { lines, .. } = cmd {
                    let MazeOutcome::Lines(s) = outcome else {
                        return Err(TestCaseError::fail("Lines must give Lines"));
                    };
                    let counted = s.accepted + s.duplicate + s.malformed + s.stale;
                    prop_assert_eq!(counted, count_u64(lines.len()));
                }
                storage.write(&effects);
            }
            prop_assert_eq!(&storage.restore(false), &state);
            prop_assert_eq!(&storage.restore(true), &state);
        }
    }

    // ---------------------------------------------------------------------
    // Fan-out resolved against the connected users (`apply_for`)
    // ---------------------------------------------------------------------

    /// A sink that keeps everything and counts the unreached recipients.
    #[derive(Debug, Default)]
    struct Counted {
        notes: Vec<Notification>,
        unreached: u64,
    }

    impl NotificationSink for Counted {
        fn notify(&mut self, notification: Notification) {
            self.notes.push(notification);
        }

        fn unreached(&mut self, recipients: u64) {
            self.unreached += recipients;
        }
    }

    type RunFor = (MazeOutcome, Vec<MazeEffect>, Counted);

    /// `run` for the users in `connected`.
    fn run_for(state: &mut MazeState, cmd: &MazeCommand, connected: &ConnectedUsers) -> RunFor {
        let mut effects = Vec::new();
        let mut sink = Counted::default();
        let outcome =
            state.apply_for(cmd, &ROOMY, Audience::Connected(connected), &mut effects, &mut sink);
        check_invariants(state);
        (outcome, effects, sink)
    }

    fn users(ids: &[UserId]) -> ConnectedUsers {
        ids.iter().copied().collect()
    }

    /// The old full materialisation restricted to `connected`: what the
    /// users connected to a node used to receive, and how many recipients
    /// were not connected (`All` counts none).
    fn filtered(notes: &[Notification], connected: &ConnectedUsers) -> (Vec<Notification>, u64) {
        let mut unreached = 0;
        let mut out = Vec::new();
        for n in notes {
            let recipients = match &n.recipients {
                Recipients::One(user) if connected.contains(*user) => Some(Recipients::One(*user)),
                Recipients::One(_) => {
                    unreached += 1;
                    None
                }
                Recipients::Many(list) => {
                    let kept: Vec<UserId> =
                        list.iter().copied().filter(|&u| connected.contains(u)).collect();
                    unreached += count_u64(list.len() - kept.len());
                    (!kept.is_empty()).then_some(Recipients::Many(kept))
                }
                Recipients::All => (!connected.is_empty()).then_some(Recipients::All),
            };
            if let Some(recipients) = recipients {
                out.push(Notification { seq: n.seq, recipients, line: n.line.clone() });
            }
        }
        (out, unreached)
    }

    /// Whether `n` names `user` (`All` names nobody in particular).
    fn names(n: &Notification, user: UserId) -> bool {
        match &n.recipients {
            Recipients::One(to) => *to == user,
            Recipients::Many(list) => list.contains(&user),
            Recipients::All => false,
        }
    }

    /// The lines a connected `user` receives from `notes`, in order.
    fn lines_of(notes: &[Notification], user: UserId) -> Vec<&str> {
        notes
            .iter()
            .filter(|n| n.recipients == Recipients::All || names(n, user))
            .map(|n| n.line.as_str())
            .collect()
    }

    #[test]
    fn connected_users_are_a_sorted_set() {
        let set = users(&[9, 3, 3, 7]);
        assert_eq!(set.iter().collect::<Vec<_>>(), [3, 7, 9]);
        assert_eq!((set.len(), set.is_empty()), (3, false));
        assert!(set.contains(7) && !set.contains(8));
        assert!(ConnectedUsers::default().is_empty());
    }

    #[test]
    fn only_connected_recipients_are_emitted_and_the_rest_counted() {
        let mut state = started();
        let batch =
            lines(1, &["1|F|7|42\n", "2|F|8|42\n", "3|F|9|42\n", "4|S|42\n", "5|P|1|8\n", "6|B\n"]);
        let (outcome, effects, sink) = run_for(&mut state, &batch, &users(&[8, 5]));
        assert_eq!(outcome, MazeOutcome::Lines(stats(6, 0, 0, 6)));
        assert_eq!(
            sink.notes,
            vec![
                note(4, many(&[8]), "4|S|42\n"),
                note(5, Recipients::One(8), "5|P|1|8\n"),
                note(6, Recipients::All, "6|B\n"),
            ]
        );
        // Three follows to 42 (not connected) and 7 and 9 for the status.
        assert_eq!(sink.unreached, 5);
        // The replicated part does not depend on who is connected.
        let mut everyone = started();
        assert_eq!(run(&mut everyone, &batch, &ROOMY).1, effects);
        assert_eq!(everyone, state);
    }

    #[test]
    fn nobody_connected_means_no_notification_at_all() {
        let mut state = started();
        let batch = lines(1, &["1|F|7|42\n", "2|S|42\n", "3|B\n", "4|P|1|7\n"]);
        let (_, _, sink) = run_for(&mut state, &batch, &ConnectedUsers::default());
        assert_eq!(sink.notes, vec![]);
        assert_eq!(sink.unreached, 3, "the follow, the status to 7, the private message");
        assert_eq!(state.followers_of(42), [7]);
    }

    /// The issue-10 amplification in miniature: many followers of one user
    /// and many status updates in one batch. Each status update yields a
    /// list no longer than the connected set, whichever set is walked.
    #[test]
    fn a_status_update_costs_its_connected_followers_not_all_of_them() {
        let mut state = started();
        let follows: Vec<String> =
            (1..=10_000u64).map(|seq| format!("{seq}|F|{}|42\n", 1000 + seq)).collect();
        let cmd = MazeCommand::Lines { epoch: 1, lines: follows };
        let (_, _, sink) = run_for(&mut state, &cmd, &users(&[1007]));
        assert_eq!(sink.notes, vec![]);
        assert_eq!(state.followers_of(42).len(), 10_000);

        let statuses: Vec<String> =
            (10_001..=10_500u64).map(|seq| format!("{seq}|S|42\n")).collect();
        let cmd = MazeCommand::Lines { epoch: 1, lines: statuses.clone() };
        // One connected follower, one connected stranger, one connected
        // user who is 42 itself: the connected set is the smaller one.
        let (_, _, sink) = run_for(&mut state.clone(), &cmd, &users(&[1007, 5, 42]));
        let want: Vec<Notification> =
            (10_001..).zip(&statuses).map(|(seq, line)| note(seq, many(&[1007]), line)).collect();
        assert_eq!(sink.notes, want);
        assert_eq!(sink.unreached, 500 * 9_999);

        // More connected users than followers: the followers are walked.
        let crowd: ConnectedUsers = (0..30_000u64).collect();
        let (_, _, sink) = run_for(&mut state, &cmd, &crowd);
        assert_eq!(sink.notes.len(), 500);
        assert!(sink
            .notes
            .iter()
            .all(|n| n.recipients == Recipients::Many((1001..=11_000).collect())));
        assert_eq!(sink.unreached, 0);
    }

    /// Recipients are resolved when the status update is delivered in seq
    /// order: a follow or unfollow later in the same batch (or earlier in
    /// the batch but later in seq order) does not change who gets it.
    #[test]
    fn a_status_update_goes_to_the_followers_at_its_seq_not_at_the_end_of_the_batch() {
        let mut state = started();
        let batch = lines(
            1,
            &["6|S|42\n", "5|F|8|42\n", "2|S|42\n", "1|F|7|42\n", "3|U|7|42\n", "4|S|42\n"],
        );
        let (_, _, sink) = run_for(&mut state, &batch, &users(&[7, 8]));
        assert_eq!(
            sink.notes,
            vec![note(2, many(&[7]), "2|S|42\n"), note(6, many(&[8]), "6|S|42\n")]
        );
        assert_eq!(sink.unreached, 2, "the two follows notify 42, who is not connected");
    }

    /// Shuffled batches: `(connected users, shuffled stream, batch sizes)`.
    fn audience_script() -> impl Strategy<Value = (Vec<UserId>, Vec<Source>, Vec<usize>, Vec<usize>)>
    {
        (vec(0..=USERS + 1, 0..=USERS as usize + 2), shuffled_stream(200)).prop_map(
            |(connected, (events, order, plan))| {
                let takes = plan.iter().map(|step| step.take).collect();
                (connected, events, order, takes)
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// For every connected user, `apply_for` gives exactly the lines of
        /// the old full materialisation (the in-order reference), in order;
        /// nobody else gets anything; what is not emitted is counted; and the
        /// replicated state and effects are those of `apply`.
        #[test]
        fn connected_users_get_exactly_what_the_full_materialisation_gives_them(
            (connected, events, order, takes) in audience_script()
        ) {
            let connected = ConnectedUsers::new(connected);
            let mut resolved = started();
            let mut everyone = started();
            let mut got = Counted::default();
            let mut rest = order.as_slice();
            for take in takes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at((*take).min(rest.len()));
                rest = later;
                let cmd = MazeCommand::Lines {
                    epoch: 1,
                    lines: now.iter().map(|&i| events[i].line.clone()).collect(),
                };
                let mut effects = Vec::new();
                let outcome = resolved.apply_for(
                    &cmd,
                    &ROOMY,
                    Audience::Connected(&connected),
                    &mut effects,
                    &mut got,
                );
                let (want_outcome, want_effects, _) = run(&mut everyone, &cmd, &ROOMY);
                prop_assert_eq!(outcome, want_outcome);
                prop_assert_eq!(effects, want_effects);
                prop_assert_eq!(&resolved, &everyone);
            }
            let full = reference(&events);
            let (want, unreached) = filtered(&full, &connected);
            prop_assert_eq!(&got.notes, &want);
            prop_assert_eq!(got.unreached, unreached);
            for user in 0..=USERS + 1 {
                if connected.contains(user) {
                    prop_assert_eq!(lines_of(&got.notes, user), lines_of(&full, user), "user {}", user);
                } else {
                    prop_assert!(!got.notes.iter().any(|n| names(n, user)), "user {}", user);
                }
            }
            for n in &got.notes {
                if let Recipients::Many(list) = &n.recipients {
                    prop_assert!(list.len() <= connected.len());
                    prop_assert!(list.windows(2).all(|w| w[0] < w[1]), "{:?}", list);
                }
            }
        }
    }
}
