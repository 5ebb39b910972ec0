//! The RocksDB adapter of the replicated core: committed entries go through
//! [`Core::apply`] (`crate::sm`), and what it answers is stored.
//!
//! The write path, one apply:
//!
//! ```text
//!  apply_entries: lock ─▶ Core::apply(entries, RocksStored, OnFirstUse(fan-out))
//!                      ─▶ keys::encode(writes) into one WriteBatch ─▶ DB::write
//!                      ─▶ notifier.finish() ─▶ applied_tx
//! ```
//!
//! Each apply is one unsynced `WriteBatch` that also records `applied` and
//! `membership`, so after a restart the stored state and `applied_state()`
//! agree exactly. Unsynced is safe: the Raft log is synced, and a state
//! machine that lost its tail re-applies it from the log. Before a snapshot
//! lets openraft purge that log, the WAL is synced (see `snapshot::lifecycle`,
//! which owns building, installing and redoing snapshots).
//!
//! Readers (the HTTP API) share the state through [`SmReader`]: a read lock
//! covers both the in-memory pointers and the body lookup, so a reader never
//! sees a seq whose body is not yet (or no longer) stored.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures_util::TryStreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use super::db::{cf, StoreError};
use super::keys::{self, KvBatch, SmCf, CF_EVENTS, CF_SM, CF_STAMPS};
use super::snapshot::{self, lifecycle, SnapshotFile};
use super::types::{
    Entry, LogId, NodeId, Response, Snapshot, SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::queue::{EventStamp, QueueMeta, QueuePolicy, Seq, WorkStats};
use crate::sm::{ApplyError, Core, Fanout, LinesStats, OnFirstUse, Stored};

pub use super::snapshot::lifecycle::{RESTORE_BATCH_BYTES, RESTORING_MARKER};

/// Most bytes of maze notifications one apply holds back until its batch is
/// written; beyond it they are delivered as they are made (see
/// `maze_net::clients::Delivery`). Notifications list only users connected here,
/// so an apply exceeds this only with many connected users and a large batch.
pub const MAZE_HELD_BYTES_MAX: usize = 8 << 20;

pub struct Shared {
    pub(super) db: Arc<DB>,
    state: RwLock<Core>,
    /// Where applied maze notifications go: this node's connected users.
    maze_sink: OnceLock<Arc<dyn Fanout>>,
    maze_totals: Mutex<LinesStats>,
    /// Bumped after every apply and snapshot install, once the new state is
    /// readable: what watch streams wait on.
    pub(super) applied_tx: tokio::sync::watch::Sender<Option<LogId>>,
    /// The log id of `current.snap`. Held while that file is replaced: a
    /// build runs beside the state machine's other work, and must not put
    /// its older snapshot over one installed meanwhile.
    pub(super) current_snapshot: Mutex<Option<LogId>>,
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

impl Shared {
    pub(super) fn read(&self) -> RwLockReadGuard<'_, Core> {
        // A poisoned lock means an apply panicked; the node is going down and
        // the data is whatever was last written, so reading it is still sound.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, Core> {
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
        self.shared.read().queues().queue(queue).copied()
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
                last_log_id: state.last_applied(),
                last_membership: state.membership().clone(),
            };
            (db.snapshot(), meta)
        };
        let out = snapshot::write_view(db, &view, &meta, out)?;
        Ok((out, meta))
    }

    /// Nodes an operator removed; autopilot never adds them back.
    pub fn retired(&self) -> std::collections::BTreeSet<NodeId> {
        self.shared.read().retired().clone()
    }

    /// Every queue's pointers, by name.
    pub fn queues(&self) -> Vec<(String, QueueMeta)> {
        self.shared.read().queues().queues().map(|(name, meta)| (name.to_owned(), *meta)).collect()
    }

    /// The event `GET /event` shows: the oldest available one of `queue`
    /// (not leased, not delayed) by this node's clock.
    pub fn front(&self, queue: &str) -> Result<Option<(Seq, String)>, StoreError> {
        self.front_at(queue, super::proposer::unix_ms())
    }

    /// The oldest event of `queue` available at `now_ms` (Unix ms). Reads
    /// judge leases and delays by the local clock; applies never do.
    pub fn front_at(&self, queue: &str, now_ms: u64) -> Result<Option<(Seq, String)>, StoreError> {
        let state = self.shared.read();
        let Some(seq) = state.queues().available(queue, now_ms) else {
            return Ok(None);
        };
        let body = get_event(&self.shared.db, queue, seq)?
            .ok_or_else(|| StoreError::Corrupt(format!("queue {queue} seq {seq} has no body")))?;
        Ok(Some((seq, body)))
    }

    /// `queue`'s work-queue policy, if it has one.
    pub fn policy(&self, queue: &str) -> Option<QueuePolicy> {
        self.shared.read().queues().policy(queue).cloned()
    }

    /// Consumer group `group`'s cursor of `queue`, if set.
    pub fn cursor(&self, queue: &str, group: &str) -> Option<Seq> {
        self.shared.read().queues().cursor(queue, group)
    }

    /// `queue`'s leased/delayed gauges and work totals (`/status`, `/metrics`).
    pub fn work_stats(&self, queue: &str) -> WorkStats {
        self.shared.read().queues().work_stats(queue)
    }

    /// Queues the leader's sweeper should propose a `Sweep` for at `now_ms`.
    pub fn sweep_due(&self, now_ms: u64) -> Vec<String> {
        self.shared.read().queues().sweep_due(now_ms).map(str::to_owned).collect()
    }

    /// Whether `queue` has an event a GET, DELETE or lease would take at
    /// `now_ms` (no body read).
    pub fn available_at(&self, queue: &str, now_ms: u64) -> bool {
        self.shared.read().queues().available(queue, now_ms).is_some()
    }

    /// When the next lease or delay of `queue` after `now_ms` runs out.
    pub fn next_due(&self, queue: &str, now_ms: u64) -> Option<u64> {
        self.shared.read().queues().next_due(queue, now_ms)
    }

    /// [`SmReader::work_stats`] of every queue with slots or counters.
    pub fn work_queues(&self) -> Vec<(String, WorkStats)> {
        let state = self.shared.read();
        let queues = state.queues();
        queues.work_queues().map(|q| (q.to_owned(), queues.work_stats(q))).collect()
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
        let meta = state.queues().queue(queue).copied().unwrap_or(QueueMeta::NEW);
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
                let body = keys::decode_body(seq, value.into_vec())?;
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
        self.shared.read().last_applied()
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
        self.shared.read().membership().clone()
    }

    /// The maze stream's (epoch, next expected seq, oldest buffered seq).
    pub fn maze_cursor(&self) -> (u64, u64, Option<u64>) {
        let state = self.shared.read();
        (state.maze().epoch(), state.maze().next(), state.maze().oldest_pending())
    }

    pub fn maze_status(&self) -> MazeStatus {
        let (epoch, next_seq, pending, follow_edges) = {
            let state = self.shared.read();
            (
                state.maze().epoch(),
                state.maze().next(),
                state.maze().pending_len(),
                state.maze().follower_count(),
            )
        };
        let totals = self.shared.maze_totals.lock().map(|t| *t).unwrap_or_default();
        MazeStatus { epoch, next_seq, pending, follow_edges, totals }
    }
}

fn get_stamp(db: &DB, queue: &str, seq: Seq) -> Result<Option<EventStamp>, StoreError> {
    match db.get_pinned_cf(cf(db, CF_STAMPS)?, keys::event_key(queue, seq))? {
        Some(bytes) => keys::decode_stamp(queue, seq, &bytes).map(Some),
        None => Ok(None),
    }
}

fn get_event(db: &DB, queue: &str, seq: Seq) -> Result<Option<String>, StoreError> {
    match db.get_pinned_cf(cf(db, CF_EVENTS)?, keys::event_key(queue, seq))? {
        Some(bytes) => keys::decode_body(seq, bytes.to_vec()).map(Some),
        None => Ok(None),
    }
}

/// What the core reads back from RocksDB while it applies.
struct RocksStored<'a>(&'a DB);

impl Stored for RocksStored<'_> {
    type Error = StoreError;

    fn body(&self, queue: &str, seq: Seq) -> Result<Option<String>, StoreError> {
        get_event(self.0, queue, seq)
    }

    fn stamp(&self, queue: &str, seq: Seq) -> Result<Option<EventStamp>, StoreError> {
        get_stamp(self.0, queue, seq)
    }
}

/// A `WriteBatch` with the state machine's column families.
struct RocksBatch<'a> {
    batch: WriteBatch,
    cfs: [&'a rocksdb::ColumnFamily; 3],
}

impl<'a> RocksBatch<'a> {
    fn new(db: &'a DB) -> Result<Self, StoreError> {
        Ok(RocksBatch {
            batch: WriteBatch::default(),
            cfs: [cf(db, CF_SM)?, cf(db, CF_EVENTS)?, cf(db, CF_STAMPS)?],
        })
    }
}

impl KvBatch for RocksBatch<'_> {
    fn put(&mut self, cf: SmCf, key: &[u8], value: &[u8]) {
        self.batch.put_cf(self.cfs[cf as usize], key, value);
    }

    fn delete(&mut self, cf: SmCf, key: &[u8]) {
        self.batch.delete_cf(self.cfs[cf as usize], key);
    }

    fn delete_range(&mut self, cf: SmCf, from: &[u8], to: &[u8]) {
        self.batch.delete_range_cf(self.cfs[cf as usize], from, to);
    }
}

/// Rebuilds the core from the `sm` column family.
pub(super) fn load_state(db: &DB) -> Result<Core, StoreError> {
    let mut core = Core::default();
    for item in db.iterator_cf(cf(db, CF_SM)?, IteratorMode::Start) {
        let (key, value) = item?;
        core.restore_record(keys::decode_state(&key, &value)?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    }
    Ok(core)
}

pub struct StateMachine {
    shared: Arc<Shared>,
    snapshot_dir: PathBuf,
}

impl StateMachine {
    /// Opens the state machine stored in `db`; `snapshot_dir` holds the latest
    /// snapshot file. If that snapshot is ahead of the stored state (its WAL
    /// tail was lost in a power cut after the log was purged), or an install
    /// of it was cut short, it is installed again (see `snapshot::lifecycle`).
    pub fn open(db: Arc<DB>, snapshot_dir: &Path) -> Result<Self, StoreError> {
        lifecycle::prepare_dir(snapshot_dir)?;
        let state = load_state(&db)?;
        let shared = Arc::new(Shared {
            db,
            state: RwLock::new(state),
            maze_sink: OnceLock::new(),
            maze_totals: Mutex::new(LinesStats::default()),
            applied_tx: tokio::sync::watch::Sender::new(None),
            current_snapshot: Mutex::new(None),
        });
        lifecycle::recover(&shared, snapshot_dir)?;
        Ok(StateMachine { shared, snapshot_dir: snapshot_dir.to_path_buf() })
    }

    /// [`lifecycle::replace_state`] from any source: lets tests cut an
    /// install short.
    #[cfg(test)]
    pub(super) fn replace_state_from(
        &self,
        source: impl std::io::Read,
        batch_bytes: usize,
    ) -> Result<(), StoreError> {
        lifecycle::replace_state(&self.shared, &self.snapshot_dir, source, batch_bytes)
    }

    /// Routes applied maze notifications to this node's users (set once,
    /// before Raft starts applying).
    pub fn set_maze_sink(&self, fanout: Arc<dyn Fanout>) {
        let _ = self.shared.maze_sink.set(fanout);
    }

    pub fn reader(&self) -> SmReader {
        SmReader { shared: self.shared.clone() }
    }

    /// Applies `entries` as openraft would, answering their responses
    /// (tests drive the state machine without a Raft around it).
    #[cfg(test)]
    pub(crate) async fn apply_now(
        &mut self,
        entries: Vec<Entry>,
    ) -> Result<Vec<Response>, StoreError> {
        self.apply_entries(&entries)
    }

    fn apply_entries(&self, entries: &[Entry]) -> Result<Vec<Response>, StoreError> {
        let db = &self.shared.db;
        let mut state = self.shared.write();
        let mut notifier =
            OnFirstUse::new(self.shared.maze_sink.get().map(|f| &**f), MAZE_HELD_BYTES_MAX);
        let applied =
            state.apply(entries, &RocksStored(db), &mut notifier).map_err(|e| match e {
                ApplyError::Stored(e) => e,
                ApplyError::Corrupt(what) => StoreError::Corrupt(what),
            })?;
        if let Ok(mut totals) = self.shared.maze_totals.lock() {
            totals.add(&applied.stats);
        }
        let mut batch = RocksBatch::new(db)?;
        keys::encode(&applied.writes, &mut batch)?;
        db.write(batch.batch)?;
        // What the apply held back (all of it unless it outgrew the budget)
        // goes out once stored: a crash right here re-applies these entries
        // and notifies again, never the other way round.
        notifier.finish();
        let last_applied = state.last_applied();
        drop(state);
        self.shared.applied_tx.send_replace(last_applied);
        Ok(applied.replies)
    }
}

fn sm_err(e: StoreError) -> std::io::Error {
    std::io::Error::other(e)
}

impl StateMachine {
    /// A fresh temp file in the snapshot dir to receive a snapshot into
    /// (the RPC handler streams the leader's file into it).
    pub fn receive_snapshot(&self) -> std::io::Result<SnapshotFile> {
        SnapshotFile::receive_into(&self.snapshot_dir)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = lifecycle::SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), std::io::Error> {
        let state = self.shared.read();
        Ok((state.last_applied(), state.membership().clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), std::io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, std::io::Error>>
            + Unpin
            + openraft::OptionalSend,
    {
        // openraft hands over what is committed so far; applying it as one
        // batch keeps one RocksDB write per call, as before.
        let items: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let (entries, responders): (Vec<Entry>, Vec<_>) = items.into_iter().unzip();
        // A failed apply must stop the node rather than let it diverge:
        // openraft treats a storage error here as fatal.
        let replies = self.apply_entries(&entries).map_err(sm_err)?;
        for (responder, reply) in responders.into_iter().zip(replies) {
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        lifecycle::begin_build(&self.shared, &self.snapshot_dir)
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), std::io::Error> {
        lifecycle::install(&self.shared, &self.snapshot_dir, meta, snapshot).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, std::io::Error> {
        lifecycle::current(&self.snapshot_dir).map_err(std::io::Error::other)
    }
}
