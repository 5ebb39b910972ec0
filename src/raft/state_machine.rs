//! The replicated state machine: decodes committed entries, runs them through
//! the pure [`QueueState`], and writes the resulting effects to RocksDB.
//!
//! Each `apply` call becomes one unsynced `WriteBatch` that also records
//! `applied` and `membership`, so after a restart the stored state and
//! `applied_state()` agree exactly. Unsynced is safe: the Raft log is synced,
//! and a state machine that lost its tail re-applies it from the log. Before a
//! snapshot lets openraft purge that log, the WAL is synced.
//!
//! Readers (the HTTP API) share the state through [`SmReader`]: a read lock
//! covers both the in-memory pointers and the body lookup, so a reader never
//! sees a seq whose body is not yet (or no longer) stored.
//!
//! # Snapshots
//!
//! Snapshots are files in the snapshot dir, never buffers: a queue may hold
//! millions of pending events. Building one streams a point-in-time view into
//! a temp file that is fsynced and renamed to `current.snap`; openraft sends
//! it by reading chunks from the open file. A received snapshot is written by
//! openraft chunk by chunk into a fresh temp file, which installing then
//! streams twice: a first pass checks the whole file (framing, end marker,
//! checksum, and that its data's applied log id is its meta's) and changes
//! nothing if it is torn; the file then becomes `current.snap` (fsync, rename,
//! directory fsync), and a second pass replaces the stored state in RocksDB
//! batches of about [`RESTORE_BATCH_BYTES`].
//!
//! Those batches are not atomic together, so a crash between them would leave
//! a mix of the old and new state. Before the first one, a `restoring` marker
//! file is created (and the directory fsynced); it is removed only after the
//! last batch, which is synced, and the reload. [`StateMachine::open`] finds a
//! marker left by a crash and redoes the install from `current.snap`, which
//! by then is the new snapshot (it was renamed before the marker was
//! created). A restore is idempotent, so a crash during the redo is redone
//! again. The same path restores a state that fell behind `current.snap`.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use super::db::{cf, StoreError};
use super::keys::{self, CF_EVENTS, CF_SM, CF_STAMPS, SM_CFS};
use super::snapshot::{self, SnapshotFile, TempPath};
use super::types::{
    Entry, LogId, NodeId, Op, Reply, Response, Snapshot, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig,
};
use crate::maze::{LinesStats, MazeEffect, MazeOutcome, MazeState};
use crate::maze_net::clients::{Delivery, Registry};
use crate::queue::{Effect, EventStamp, IdemEntry, Outcome, QueueMeta, QueueState, Seq};

const SNAPSHOT_FILE: &str = "current.snap";
/// Present while the stored state is being replaced by `current.snap`.
pub(super) const RESTORING_MARKER: &str = "restoring";
/// About how much of a snapshot one RocksDB batch of an install carries.
pub const RESTORE_BATCH_BYTES: usize = 4 << 20;
/// Most bytes of maze notifications one apply holds back until its batch is
/// written; beyond it they are delivered as they are made (see
/// [`Delivery`]). Notifications list only users connected here, so an apply
/// exceeds this only with many connected users and a large batch.
pub const MAZE_HELD_BYTES_MAX: usize = 8 << 20;

/// In-memory state: everything but event bodies.
#[derive(Default)]
struct SmState {
    queues: QueueState,
    maze: MazeState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Nodes an operator removed (see `Op::RetireNode`).
    retired: std::collections::BTreeSet<NodeId>,
}

pub struct Shared {
    db: Arc<DB>,
    state: RwLock<SmState>,
    /// Where applied maze notifications go: this node's connected users.
    maze_sink: OnceLock<Arc<Registry>>,
    maze_totals: std::sync::Mutex<LinesStats>,
    /// Bumped after every apply and snapshot install, once the new state is
    /// readable: what watch streams wait on.
    applied_tx: tokio::sync::watch::Sender<Option<LogId>>,
    /// The log id of `current.snap`. Held while that file is replaced: a
    /// build runs beside the state machine's other work, and must not put
    /// its older snapshot over one installed meanwhile.
    current_snapshot: Mutex<Option<LogId>>,
}

/// The maze part of `/status`: the stream's position, and the totals of
/// what this node's applies did (not replicated state: they restart from
/// zero with the process).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MazeStatus {
    pub epoch: u64,
    pub next_seq: u64,
    pub pending: usize,
    pub follow_edges: usize,
    #[serde(flatten)]
    pub totals: LinesStats,
}

/// Storage changes of the maze within one apply, coalesced: a line
/// buffered and delivered in the same batch never touches RocksDB.
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
                self.pending.insert(seq, None);
            }
            MazeEffect::PutFollow { followed, follower } => {
                self.follows.insert((followed, follower), true);
            }
            MazeEffect::DelFollow { followed, follower } => {
                self.follows.insert((followed, follower), false);
            }
        }
    }

    fn write(
        self,
        batch: &mut WriteBatch,
        sm_cf: &rocksdb::ColumnFamily,
    ) -> Result<(), StoreError> {
        if self.cleared {
            for prefix in [keys::SM_MAZE_PENDING_PREFIX, keys::SM_MAZE_FOLLOW_PREFIX] {
                batch.delete_range_cf(sm_cf, prefix, keys::prefix_end(prefix).as_slice());
            }
        }
        for (seq, line) in self.pending {
            match line {
                Some(line) => batch.put_cf(sm_cf, keys::maze_pending_key(seq), line.as_bytes()),
                None => batch.delete_cf(sm_cf, keys::maze_pending_key(seq)),
            }
        }
        for ((followed, follower), present) in self.follows {
            let key = keys::maze_follow_key(followed, follower);
            if present {
                batch.put_cf(sm_cf, key, []);
            } else {
                batch.delete_cf(sm_cf, key);
            }
        }
        if let Some(cursor) = self.cursor {
            batch.put_cf(sm_cf, keys::SM_MAZE_CURSOR, serde_json::to_vec(&cursor)?);
        }
        Ok(())
    }
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, SmState> {
        // A poisoned lock means an apply panicked; the node is going down and
        // the data is whatever was last written, so reading it is still sound.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, SmState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A page of events read from a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsPage {
    pub events: Vec<(Seq, String)>,
    /// Latest assigned seq of the queue (0: never written).
    pub head: Seq,
    /// Oldest seq still retained.
    pub oldest: Seq,
}

/// Read access to the applied state, for the API.
#[derive(Clone)]
pub struct SmReader {
    shared: Arc<Shared>,
}

impl SmReader {
    pub fn queue(&self, queue: &str) -> Option<QueueMeta> {
        self.shared.read().queues.queue(queue).copied()
    }

    /// Writes a backup of the applied state to `out`: the snapshot format,
    /// from a RocksDB point-in-time view taken under the state lock, so the
    /// data and the log id in its meta agree. Blocking: call it from
    /// `spawn_blocking`.
    pub fn backup<W: std::io::Write>(&self, out: W) -> Result<(W, SnapshotMeta), StoreError> {
        let db = &self.shared.db;
        let (view, meta) = {
            let state = self.shared.read();
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
                snapshot_id: format!("backup-{}", state.last_applied.map_or(0, |l| l.index)),
            };
            (db.snapshot(), meta)
        };
        let out = dump(db, &view, &meta, out)?;
        Ok((out, meta))
    }

    /// Nodes an operator removed; autopilot never adds them back.
    pub fn retired(&self) -> std::collections::BTreeSet<NodeId> {
        self.shared.read().retired.clone()
    }

    /// Every queue's pointers, by name.
    pub fn queues(&self) -> Vec<(String, QueueMeta)> {
        self.shared.read().queues.queues().map(|(name, meta)| (name.to_owned(), *meta)).collect()
    }

    /// The event at the front of `queue`, if any.
    pub fn front(&self, queue: &str) -> Result<Option<(Seq, String)>, StoreError> {
        let state = self.shared.read();
        let Some(seq) = state.queues.queue(queue).and_then(|m| m.front_seq()) else {
            return Ok(None);
        };
        let body = get_event(&self.shared.db, queue, seq)?
            .ok_or_else(|| StoreError::Corrupt(format!("queue {queue} seq {seq} has no body")))?;
        Ok(Some((seq, body)))
    }

    /// Up to `limit` retained events with seq > `after`, and the queue bounds.
    pub fn events_after(
        &self,
        queue: &str,
        after: Seq,
        limit: usize,
    ) -> Result<EventsPage, StoreError> {
        self.events_page(queue, after, limit, usize::MAX)
    }

    /// Like [`SmReader::events_after`], but the page also stops once its
    /// bodies reach `max_bytes` (it always holds at least one event if any
    /// is due), so a reader's memory does not scale with event sizes.
    pub fn events_page(
        &self,
        queue: &str,
        after: Seq,
        limit: usize,
        max_bytes: usize,
    ) -> Result<EventsPage, StoreError> {
        let state = self.shared.read();
        let meta = state.queues.queue(queue).copied().unwrap_or(QueueMeta::NEW);
        let from = after.saturating_add(1).max(meta.oldest);
        let mut events = Vec::new();
        let mut bytes = 0usize;
        if from < meta.next && limit > 0 {
            let db = &self.shared.db;
            let start = keys::event_key(queue, from);
            let end = keys::event_key(queue, meta.next);
            for item in
                db.iterator_cf(cf(db, CF_EVENTS)?, IteratorMode::From(&start, Direction::Forward))
            {
                let (key, value) = item?;
                if *key >= *end {
                    break;
                }
                let (_, seq) = keys::decode_event_key(&key)
                    .ok_or_else(|| StoreError::Corrupt(format!("bad event key {key:?}")))?;
                let body = String::from_utf8(value.into_vec())
                    .map_err(|_| StoreError::Corrupt(format!("event {seq} is not UTF-8")))?;
                bytes = bytes.saturating_add(body.len());
                events.push((seq, body));
                if events.len() >= limit || bytes >= max_bytes {
                    break;
                }
            }
        }
        Ok(EventsPage { events, head: meta.head(), oldest: meta.oldest })
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.shared.read().last_applied
    }

    /// A receiver that changes whenever newly applied state is readable.
    pub fn subscribe_applied(&self) -> tokio::sync::watch::Receiver<Option<LogId>> {
        self.shared.applied_tx.subscribe()
    }

    /// The retention stamp of a stored event (`None`: not stored, or stored
    /// before stamps existed).
    pub fn stamp(&self, queue: &str, seq: Seq) -> Result<Option<EventStamp>, StoreError> {
        let _state = self.shared.read();
        get_stamp(&self.shared.db, queue, seq)
    }

    pub fn membership(&self) -> StoredMembership {
        self.shared.read().membership.clone()
    }

    /// The maze stream's (epoch, next expected seq, oldest buffered seq).
    pub fn maze_cursor(&self) -> (u64, u64, Option<u64>) {
        let state = self.shared.read();
        (state.maze.epoch(), state.maze.next(), state.maze.oldest_pending())
    }

    pub fn maze_status(&self) -> MazeStatus {
        let (epoch, next_seq, pending, follow_edges) = {
            let state = self.shared.read();
            (
                state.maze.epoch(),
                state.maze.next(),
                state.maze.pending_len(),
                state.maze.follower_count(),
            )
        };
        let totals = self.shared.maze_totals.lock().map(|t| *t).unwrap_or_default();
        MazeStatus { epoch, next_seq, pending, follow_edges, totals }
    }
}

fn get_stamp(db: &DB, queue: &str, seq: Seq) -> Result<Option<EventStamp>, StoreError> {
    match db.get_pinned_cf(cf(db, CF_STAMPS)?, keys::event_key(queue, seq))? {
        Some(bytes) => EventStamp::decode(&bytes)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("stamp of {queue}/{seq} is malformed"))),
        None => Ok(None),
    }
}

fn get_event(db: &DB, queue: &str, seq: Seq) -> Result<Option<String>, StoreError> {
    match db.get_pinned_cf(cf(db, CF_EVENTS)?, keys::event_key(queue, seq))? {
        Some(bytes) => String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| StoreError::Corrupt(format!("event {seq} is not UTF-8"))),
        None => Ok(None),
    }
}

pub struct StateMachine {
    shared: Arc<Shared>,
    snapshot_dir: PathBuf,
    snapshot_count: u64,
}

impl StateMachine {
    /// Opens the state machine stored in `db`; `snapshot_dir` holds the latest
    /// snapshot file. If that snapshot is ahead of the stored state (its WAL
    /// tail was lost in a power cut after the log was purged), it is installed.
    /// Temp files a crash left in the snapshot dir are removed.
    ///
    /// A `restoring` marker means an install was cut short: it is redone
    /// (see the module docs).
    pub fn open(db: Arc<DB>, snapshot_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(snapshot_dir)?;
        remove_temp_files(snapshot_dir)?;
        let state = load_state(&db)?;
        let shared = Arc::new(Shared {
            db,
            state: RwLock::new(state),
            maze_sink: OnceLock::new(),
            maze_totals: std::sync::Mutex::new(LinesStats::default()),
            applied_tx: tokio::sync::watch::Sender::new(None),
            current_snapshot: Mutex::new(None),
        });
        let sm =
            StateMachine { shared, snapshot_dir: snapshot_dir.to_path_buf(), snapshot_count: 0 };
        if let Some((mut file, meta)) = sm.open_current_snapshot()? {
            *lock_current(&sm.shared) = meta.last_log_id;
            let interrupted = snapshot_dir.join(RESTORING_MARKER).exists();
            if interrupted || meta.last_log_id > sm.shared.read().last_applied {
                tracing::warn!(snapshot = ?meta.last_log_id, interrupted, "restoring the state machine from its snapshot");
                validate_file(&mut file)?;
                replace_state(&sm.shared, snapshot_dir, file, RESTORE_BATCH_BYTES)?;
            }
        } else if snapshot_dir.join(RESTORING_MARKER).exists() {
            return Err(StoreError::Corrupt(
                "a snapshot install was interrupted and its file is gone".into(),
            ));
        }
        Ok(sm)
    }

    /// [`replace_state`] from any source: lets tests cut an install short.
    #[cfg(test)]
    pub(super) fn replace_state_from(
        &self,
        source: impl Read,
        batch_bytes: usize,
    ) -> Result<(), StoreError> {
        replace_state(&self.shared, &self.snapshot_dir, source, batch_bytes)
    }

    /// Routes applied maze notifications to this node's users (set once,
    /// before Raft starts applying).
    pub fn set_maze_sink(&self, registry: Arc<Registry>) {
        let _ = self.shared.maze_sink.set(registry);
    }

    pub fn reader(&self) -> SmReader {
        SmReader { shared: self.shared.clone() }
    }

    /// `current.snap`, rewound, and its meta (read, not yet checksummed).
    fn open_current_snapshot(&self) -> Result<Option<(std::fs::File, SnapshotMeta)>, StoreError> {
        let mut file = match std::fs::File::open(self.snapshot_dir.join(SNAPSHOT_FILE)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta = snapshot::Reader::new(BufReader::new(&file))?.meta().clone();
        file.rewind()?;
        Ok(Some((file, meta)))
    }

    fn apply_entries(&self, entries: Vec<Entry>) -> Result<Vec<Response>, StoreError> {
        let db = &self.shared.db;
        let sm_cf = cf(db, CF_SM)?;
        let mut state = self.shared.write();
        let mut batch = WriteBatch::default();
        let mut event_writes = EventWrites::new(db)?;
        let mut effects = Vec::new();
        let mut maze_effects = Vec::new();
        let mut maze_writes = MazeWrites::default();
        // Taken at the first maze command: the users this apply notifies.
        let mut maze_delivery: Option<Delivery<'_>> = None;
        let mut responses = Vec::with_capacity(entries.len());
        let mut membership_changed = false;

        for entry in entries {
            let mut replies = Vec::new();
            let time_ms = match &entry.payload {
                EntryPayload::Normal(request) => request.time_ms,
                _ => 0,
            };
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                    membership_changed = true;
                }
                EntryPayload::Normal(request) => {
                    for op in &request.ops {
                        let command = match op {
                            Op::Queue(command) => command,
                            Op::RetireNode { id } => {
                                state.retired.insert(*id);
                                batch.put_cf(sm_cf, keys::retired_key(*id), []);
                                replies.push(Reply::Retired);
                                continue;
                            }
                            Op::Maze(command) => {
                                maze_effects.clear();
                                let delivery = maze_delivery.get_or_insert_with(|| {
                                    Delivery::new(
                                        self.shared.maze_sink.get().map(|r| &**r),
                                        MAZE_HELD_BYTES_MAX,
                                    )
                                });
                                let (audience, sink) = delivery.parts();
                                let outcome = state.maze.apply_for(
                                    command,
                                    &request.maze_limits,
                                    audience,
                                    &mut maze_effects,
                                    sink,
                                );
                                if let MazeOutcome::Lines(stats) | MazeOutcome::Skipped(stats) =
                                    &outcome
                                {
                                    if let Ok(mut totals) = self.shared.maze_totals.lock() {
                                        totals.add(stats);
                                    }
                                }
                                for effect in maze_effects.drain(..) {
                                    maze_writes.add(effect);
                                }
                                replies.push(Reply::Maze(outcome));
                                continue;
                            }
                        };
                        effects.clear();
                        let outcome = state.queues.apply(command, &request.limits, &mut effects);
                        let reply = match outcome {
                            Outcome::Enqueued { seq, duplicate } => {
                                Reply::Enqueued { seq, duplicate }
                            }
                            Outcome::Dequeued { seq } => {
                                let queue = match command {
                                    crate::queue::Command::Dequeue { queue, .. } => queue.as_str(),
                                    other => {
                                        return Err(StoreError::Corrupt(format!(
                                            "queue core answered Dequeued to {other:?}"
                                        )))
                                    }
                                };
                                let event = match event_writes.bodies.get(&(queue.to_string(), seq))
                                {
                                    Some(body) => body.clone(),
                                    None => get_event(db, queue, seq)?.ok_or_else(|| {
                                        StoreError::Corrupt(format!(
                                            "dequeued {queue}/{seq} has no body"
                                        ))
                                    })?,
                                };
                                Reply::Dequeued { seq, event }
                            }
                            Outcome::Empty => Reply::Empty,
                            Outcome::Conflict { front } => Reply::Conflict { front },
                            Outcome::Allocated { first, last } => Reply::Allocated { first, last },
                            Outcome::Rejected(r) => Reply::Rejected(r),
                            Outcome::Compacted { oldest, dropped } => {
                                Reply::Compacted { oldest, dropped }
                            }
                        };
                        replies.push(reply);
                        for effect in effects.drain(..) {
                            if let Effect::PutEvent { queue, seq, event } = &effect {
                                let oldest = state.queues.queue(queue).map_or(1, |m| m.oldest);
                                event_writes.stamp(
                                    &mut batch,
                                    queue,
                                    *seq,
                                    oldest,
                                    time_ms,
                                    event.len(),
                                )?;
                            }
                            write_effect(&mut batch, sm_cf, &mut event_writes, effect)?;
                        }
                    }
                }
            }
            state.last_applied = Some(entry.log_id);
            responses.push(Response { replies });
        }

        maze_writes.write(&mut batch, sm_cf)?;
        batch.put_cf(sm_cf, keys::SM_APPLIED, serde_json::to_vec(&state.last_applied)?);
        if membership_changed {
            batch.put_cf(sm_cf, keys::SM_MEMBERSHIP, serde_json::to_vec(&state.membership)?);
        }
        db.write(batch)?;
        // What the apply held back (all of it unless it outgrew the budget)
        // goes out once stored: a crash right here re-applies these entries
        // and notifies again, never the other way round.
        if let Some(delivery) = maze_delivery {
            delivery.finish();
        }
        let applied = state.last_applied;
        drop(state);
        self.shared.applied_tx.send_replace(applied);
        Ok(responses)
    }
}

/// Event bodies and stamps written within one apply batch: they are not
/// in RocksDB until the batch is written, yet later commands of the same
/// batch may need them.
struct EventWrites<'a> {
    db: &'a DB,
    events_cf: &'a rocksdb::ColumnFamily,
    stamps_cf: &'a rocksdb::ColumnFamily,
    bodies: BTreeMap<(String, Seq), String>,
    stamps: BTreeMap<(String, Seq), EventStamp>,
}

impl<'a> EventWrites<'a> {
    fn new(db: &'a DB) -> Result<Self, StoreError> {
        Ok(EventWrites {
            db,
            events_cf: cf(db, CF_EVENTS)?,
            stamps_cf: cf(db, CF_STAMPS)?,
            bodies: BTreeMap::new(),
            stamps: BTreeMap::new(),
        })
    }

    /// Stores the retention stamp of `queue`'s new event `seq` (`len` body
    /// bytes, proposed at `time_ms`). The predecessor counts only while the
    /// queue still retains it (`oldest <= seq - 1`): that is replicated
    /// state, whereas whether RocksDB still has it depends on how this node
    /// happened to batch its applies.
    fn stamp(
        &mut self,
        batch: &mut WriteBatch,
        queue: &str,
        seq: Seq,
        oldest: Seq,
        time_ms: u64,
        len: usize,
    ) -> Result<(), StoreError> {
        let prev = match seq.checked_sub(1).filter(|&p| p >= oldest && p >= 1) {
            Some(p) => match self.stamps.get(&(queue.to_string(), p)) {
                Some(stamp) => Some(*stamp),
                None => get_stamp(self.db, queue, p)?,
            },
            None => None,
        };
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        let stamp = EventStamp::next(prev, time_ms, len);
        batch.put_cf(self.stamps_cf, keys::event_key(queue, seq), stamp.encode());
        self.stamps.insert((queue.to_string(), seq), stamp);
        Ok(())
    }

    fn delete(&mut self, batch: &mut WriteBatch, queue: String, from: Seq, to: Seq) {
        if from >= to {
            return;
        }
        let (start, end) = (keys::event_key(&queue, from), keys::event_key(&queue, to));
        batch.delete_range_cf(self.events_cf, &start, &end);
        batch.delete_range_cf(self.stamps_cf, &start, &end);
        let range = (queue.clone(), from)..(queue, to);
        let doomed: Vec<_> = self.bodies.range(range.clone()).map(|(k, _)| k.clone()).collect();
        for key in doomed {
            self.bodies.remove(&key);
        }
        let doomed: Vec<_> = self.stamps.range(range).map(|(k, _)| k.clone()).collect();
        for key in doomed {
            self.stamps.remove(&key);
        }
    }
}

fn write_effect(
    batch: &mut WriteBatch,
    sm_cf: &rocksdb::ColumnFamily,
    events: &mut EventWrites<'_>,
    effect: Effect,
) -> Result<(), StoreError> {
    match effect {
        Effect::PutEvent { queue, seq, event } => {
            batch.put_cf(events.events_cf, keys::event_key(&queue, seq), event.as_bytes());
            events.bodies.insert((queue, seq), event);
        }
        Effect::DeleteEvents { queue, from, to } => events.delete(batch, queue, from, to),
        Effect::PutQueue { queue, meta } => {
            batch.put_cf(
                sm_cf,
                keys::prefixed(keys::SM_QUEUE_PREFIX, &queue),
                serde_json::to_vec(&meta)?,
            );
        }
        Effect::PutIdem { key, entry } => {
            batch.put_cf(sm_cf, keys::idem_key(&entry.queue, &key), serde_json::to_vec(&entry)?);
        }
        Effect::DelIdem { queue, key, .. } => {
            batch.delete_cf(sm_cf, keys::idem_key(&queue, &key));
        }
        Effect::PutSequence { name, next } => {
            batch.put_cf(
                sm_cf,
                keys::prefixed(keys::SM_SEQUENCE_PREFIX, &name),
                next.to_be_bytes(),
            );
        }
    }
    Ok(())
}

/// Rebuilds the in-memory state from the `sm` column family.
fn load_state(db: &DB) -> Result<SmState, StoreError> {
    let mut state = SmState::default();
    for item in db.iterator_cf(cf(db, CF_SM)?, IteratorMode::Start) {
        let (key, value) = item?;
        let utf8 = |bytes: &[u8]| {
            std::str::from_utf8(bytes)
                .map(str::to_string)
                .map_err(|_| StoreError::Corrupt(format!("non-UTF-8 state key {key:?}")))
        };
        if *key == *keys::SM_APPLIED {
            state.last_applied = serde_json::from_slice(&value)?;
        } else if *key == *keys::SM_MEMBERSHIP {
            state.membership = serde_json::from_slice(&value)?;
        } else if *key == *keys::SM_CLUSTER_UUID {
            // Only carried for snapshots and backups; the node's own copy
            // is in `meta` (see `raft::peer`).
        } else if let Some(name) = key.strip_prefix(keys::SM_QUEUE_PREFIX) {
            let meta: QueueMeta = serde_json::from_slice(&value)?;
            state.queues.restore_queue(utf8(name)?, meta);
        } else if let Some(name) = key.strip_prefix(keys::SM_SEQUENCE_PREFIX) {
            let next: [u8; 8] = (*value)
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("bad sequence value for {key:?}")))?;
            state.queues.restore_sequence(utf8(name)?, u64::from_be_bytes(next));
        } else if *key == *keys::SM_MAZE_CURSOR {
            let (epoch, next): (u64, u64) = serde_json::from_slice(&value)?;
            state.maze.restore_cursor(epoch, next);
        } else if let Some(seq) = key.strip_prefix(keys::SM_MAZE_PENDING_PREFIX) {
            let seq: [u8; 8] =
                seq.try_into().map_err(|_| StoreError::Corrupt(format!("bad maze key {key:?}")))?;
            let line = utf8(&value)?;
            state
                .maze
                .restore_pending(u64::from_be_bytes(seq), line)
                .map_err(|e| StoreError::Corrupt(format!("stored maze line: {e}")))?;
        } else if let Some(edge) = key.strip_prefix(keys::SM_MAZE_FOLLOW_PREFIX) {
            let (followed, follower) = edge.split_at(edge.len().min(8));
            let (Ok(followed), Ok(follower)) =
                (<[u8; 8]>::try_from(followed), <[u8; 8]>::try_from(follower))
            else {
                return Err(StoreError::Corrupt(format!("bad maze follow key {key:?}")));
            };
            state.maze.restore_follow(u64::from_be_bytes(followed), u64::from_be_bytes(follower));
        } else if let Some(id) = key.strip_prefix(keys::SM_RETIRED_PREFIX) {
            let id: [u8; 8] =
                id.try_into().map_err(|_| StoreError::Corrupt(format!("bad node key {key:?}")))?;
            state.retired.insert(u64::from_be_bytes(id));
        } else if let Some(rest) = key.strip_prefix(keys::SM_IDEM_PREFIX) {
            let entry: IdemEntry = serde_json::from_slice(&value)?;
            let idem = rest
                .iter()
                .position(|&b| b == 0)
                .map(|nul| &rest[nul + 1..])
                .ok_or_else(|| StoreError::Corrupt(format!("bad idempotency key {key:?}")))?;
            state.queues.restore_idem(utf8(idem)?, entry);
        } else {
            return Err(StoreError::Corrupt(format!("unknown state key {key:?}")));
        }
    }
    Ok(state)
}

fn sm_err(e: StoreError) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_err(e: StoreError) -> StorageError {
    StorageIOError::read_snapshot(None, &e).into()
}

/// Builds a snapshot from a RocksDB point-in-time view taken when the builder
/// was created, so applies may continue while it is serialised.
pub struct SnapshotBuilder {
    result: Option<tokio::sync::oneshot::Receiver<Result<Snapshot, StoreError>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let rx = self
            .result
            .take()
            .ok_or_else(|| snap_err(StoreError::Corrupt("builder reused".into())))?;
        rx.await.map_err(|e| snap_err(StoreError::Join(e.to_string())))?.map_err(snap_err)
    }
}

/// Serialises the state machine column families as seen by `view` to `out`.
fn dump<W: std::io::Write>(
    db: &DB,
    view: &rocksdb::Snapshot<'_>,
    meta: &SnapshotMeta,
    out: W,
) -> Result<W, StoreError> {
    let mut writer = snapshot::Writer::new(out, meta)?;
    for (index, name) in SM_CFS.iter().enumerate() {
        for item in view.iterator_cf(cf(db, name)?, IteratorMode::Start) {
            let (key, value) = item?;
            writer.record(index as u8, &key, &value)?;
        }
    }
    writer.finish()
}

fn lock_current(shared: &Shared) -> std::sync::MutexGuard<'_, Option<LogId>> {
    // Holds a plain log id: still sound after a panic elsewhere.
    shared.current_snapshot.lock().unwrap_or_else(|e| e.into_inner())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Removes the temp files a crash left in the snapshot dir (half-built,
/// half-received or half-copied snapshots).
fn remove_temp_files(dir: &Path) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.to_str().is_some_and(|p| p.ends_with(snapshot::TEMP_SUFFIX)) {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The first pass over a snapshot file: every record is well formed, the
/// checksum matches, and the applied log id its data holds is its meta's.
/// Reads without keeping anything, and leaves the file rewound.
fn validate_file(file: &mut std::fs::File) -> Result<SnapshotMeta, StoreError> {
    file.rewind()?;
    let mut reader = snapshot::Reader::new(BufReader::new(&*file))?;
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut data_applied: Option<LogId> = None;
    while let Some(cf_index) = reader.next_record(&mut key, &mut value)? {
        if SM_CFS[cf_index as usize] == CF_SM && key == keys::SM_APPLIED {
            data_applied = serde_json::from_slice(&value)?;
        }
    }
    let meta = reader.meta().clone();
    drop(reader);
    file.rewind()?;
    if data_applied != meta.last_log_id {
        return Err(StoreError::Corrupt(format!(
            "snapshot meta says {:?} but its data says {:?}",
            meta.last_log_id, data_applied
        )));
    }
    Ok(meta)
}

/// Replaces the whole stored state with the records `source` (a validated
/// snapshot, from its start, that is `current.snap`) holds, in batches of
/// about `batch_bytes`, and reloads. The `restoring` marker covers the
/// batches: see the module docs.
pub(super) fn replace_state(
    shared: &Shared,
    dir: &Path,
    source: impl Read,
    batch_bytes: usize,
) -> Result<(), StoreError> {
    let marker = dir.join(RESTORING_MARKER);
    std::fs::File::create(&marker)?.sync_all()?;
    sync_dir(dir)?;
    let db = &shared.db;
    let mut state = shared.write();
    let reader = snapshot::Reader::new(BufReader::new(source))?;
    let meta = reader.meta().clone();
    let mut clear = WriteBatch::default();
    for name in SM_CFS {
        // Every key is UTF-8 or ASCII-prefixed, so all sort below 0xFF.
        clear.delete_range_cf(cf(db, name)?, [].as_slice(), [0xFFu8; 16].as_slice());
    }
    snapshot::load_into(db, reader, clear, batch_bytes, |_, _| true)?;
    *state = load_state(db)?;
    if state.last_applied != meta.last_log_id {
        return Err(StoreError::Corrupt(format!(
            "snapshot meta says {:?} but its data says {:?}",
            meta.last_log_id, state.last_applied
        )));
    }
    // Not synced: a marker that comes back after a crash redoes a restore
    // that is already done, which changes nothing.
    std::fs::remove_file(&marker)?;
    let applied = state.last_applied;
    drop(state);
    shared.applied_tx.send_replace(applied);
    Ok(())
}

/// Installs a received snapshot file: validate, make it `current.snap`,
/// replace the state from it. Blocking.
fn install_file(
    shared: &Shared,
    dir: &Path,
    announced: &SnapshotMeta,
    file: std::fs::File,
    temp: TempPath,
) -> Result<(), StoreError> {
    // Only a file of this dir can become current.snap by a rename; one
    // from elsewhere (the storage suite hands over another node's
    // current.snap) is copied in first, a buffer at a time.
    let (mut file, temp) = if temp.path().and_then(Path::parent) == Some(dir) {
        (file, temp)
    } else {
        let (mut copy, copy_temp) = snapshot::create_temp(dir, "copying")?;
        let mut file = file;
        file.rewind()?;
        std::io::copy(&mut file, &mut copy)?;
        (copy, copy_temp)
    };
    let meta = validate_file(&mut file)?;
    if meta.last_log_id != announced.last_log_id {
        return Err(StoreError::Corrupt(format!(
            "received snapshot holds {:?}, announced {:?}",
            meta.last_log_id, announced.last_log_id
        )));
    }
    file.sync_all()?;
    {
        let mut current = lock_current(shared);
        temp.persist(&dir.join(SNAPSHOT_FILE))?;
        sync_dir(dir)?;
        *current = meta.last_log_id;
    }
    replace_state(shared, dir, file, RESTORE_BATCH_BYTES)
}

/// Builds a snapshot file of `view` in `dir` and makes it `current.snap`
/// unless a newer one got there first. Returns the open file, rewound.
fn build_file(
    shared: &Shared,
    dir: &Path,
    view: &rocksdb::Snapshot<'_>,
    meta: &SnapshotMeta,
) -> Result<std::fs::File, StoreError> {
    let (file, temp) = snapshot::create_temp(dir, "building")?;
    let out = dump(&shared.db, view, meta, BufWriter::new(file))?;
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    // The log behind this snapshot is about to be purged: make the state
    // it summarises durable first.
    shared.db.flush_wal(true)?;
    file.sync_all()?;
    {
        let mut current = lock_current(shared);
        if meta.last_log_id >= *current {
            temp.persist(&dir.join(SNAPSHOT_FILE))?;
            sync_dir(dir)?;
            *current = meta.last_log_id;
        }
        // Otherwise the temp file goes when `temp` drops; the open handle
        // still reads it.
    }
    file.rewind()?;
    Ok(file)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.shared.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        // A failed apply must stop the node rather than let it diverge:
        // openraft treats a storage error here as fatal.
        self.apply_entries(entries.into_iter().collect()).map_err(sm_err)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_count += 1;
        let (meta_log_id, membership) = {
            let state = self.shared.read();
            (state.last_applied, state.membership.clone())
        };
        let snapshot_id = match meta_log_id {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, self.snapshot_count),
            None => format!("0-0-{}", self.snapshot_count),
        };
        let meta =
            SnapshotMeta { last_log_id: meta_log_id, last_membership: membership, snapshot_id };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (taken_tx, taken_rx) = std::sync::mpsc::channel();
        let shared = self.shared.clone();
        let dir = self.snapshot_dir.clone();
        // The view must be taken before this returns (no apply may slip in),
        // but serialising it can take a while: a thread owns both the DB
        // handle and the view borrowed from it.
        std::thread::spawn(move || {
            let view = shared.db.snapshot();
            let _ = taken_tx.send(());
            let result = build_file(&shared, &dir, &view, &meta)
                .map(|file| Snapshot { meta, snapshot: Box::new(SnapshotFile::from_std(file)) });
            let _ = tx.send(result);
        });
        let _ = taken_rx.recv();
        SnapshotBuilder { result: Some(rx) }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let file = SnapshotFile::receive_into(&self.snapshot_dir)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let (file, temp) = snapshot.into_parts().await;
        let (shared, dir, announced) =
            (self.shared.clone(), self.snapshot_dir.clone(), meta.clone());
        // Reads and writes the whole snapshot: off the async runtime.
        let result = tokio::task::spawn_blocking(move || {
            install_file(&shared, &dir, &announced, file, temp)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))
        .and_then(|r| r);
        result.map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some((file, meta)) = self.open_current_snapshot().map_err(snap_err)? else {
            return Ok(None);
        };
        Ok(Some(Snapshot { meta, snapshot: Box::new(SnapshotFile::from_std(file)) }))
    }
}
