//! The Raft log on RocksDB.
//!
//! openraft's contract (and why each write looks the way it does):
//! - `append` must make entries readable before it returns and may report
//!   them flushed only once they are on disk. The batch is written to
//!   RocksDB (memtable + WAL, not synced) on the Raft task, so the leader
//!   replicates it at once; the flush thread then syncs the WAL and fires
//!   the IO callback strictly after the sync. One sync covers every batch
//!   written before it (group commit). openraft counts the leader toward
//!   the quorum only once that callback fired.
//! - A follower's append (entries of another leader) with no batch waiting
//!   for the flush thread is synced in `append` itself, and reported
//!   before it returns: the follower answers its leader only once the
//!   entries are on disk anyway, so the sync is on the write's path either
//!   way, and the flush thread's wake-up costs a good part of the sync on a
//!   busy 2-core machine (the report still reaches openraft's core through
//!   its completion task). In practice every follower append takes this
//!   path: the leader sends a follower one AppendEntries at a time, so
//!   nothing is ever queued; there is no group commit on followers, and
//!   none is needed. The price: while the sync runs, the follower's Raft
//!   task handles nothing else (heartbeats, votes wait). At a normal
//!   fsync (`raftq_log_fsync_seconds`, well under a millisecond) that is
//!   invisible; a disk that stalls for longer than the election timeout
//!   stalls the follower either way, since it cannot acknowledge. The
//!   leader never syncs inline: its Raft task must go on to replicate
//!   while its own flush runs.
//! - `save_vote` must be durable before it returns: synced write.
//! - `save_committed` need not be durable (a restart re-learns the commit
//!   index from the leader): written unsynced, in place, since it sits
//!   between a commit and its apply.
//! - `truncate_after` is synced too (a follower must not resurrect cut
//!   entries after a crash); `purge` need not be: losing it only keeps
//!   more log than needed.
//!
//! Other synced writes run on the blocking pool or the flush thread, so
//! that an fsync does not hold the tokio worker of a task that has other
//! work.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use super::db::{cf, StoreError};
use super::keys::{
    decode_log_key, log_key, CF_LOGS, CF_META, META_COMMITTED, META_PURGED, META_VOTE,
};
use super::types::{Entry, LogId, NodeId, TypeConfig, Vote};

/// Appends written but not yet synced, waiting for the flush thread. openraft
/// keeps its own bound on in-flight IO far below this; when it is reached
/// anyway, `append` waits for the flush thread (backpressure, not loss).
pub const FLUSH_QUEUE_MAX: usize = 4096;

/// Debug builds only: delays every log sync (and so the IO callback) by
/// this many ms after the batch is written, to test that a leader is not
/// counted toward the quorum before its own flush.
#[cfg(debug_assertions)]
pub const FAULT_LOG_FLUSH_DELAY_ENV: &str = "RAFTQ_FAULT_LOG_FLUSH_DELAY_MS";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    /// Synced writes are timed here when set (exported as
    /// `raftq_log_fsync_seconds`).
    fsync_seconds: Option<prometheus::Histogram>,
    /// The flush thread's queue; started on the first append.
    flusher: Arc<std::sync::OnceLock<SyncSender<Written>>>,
    /// Batches handed to the flush thread and not yet reported.
    queued: Arc<AtomicUsize>,
    flush_delay: Duration,
    /// This node: entries of another leader are a follower's, which may
    /// be synced inline (see the module doc). `None`: never inline.
    node_id: Option<NodeId>,
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> Self {
        Self::with_flush_delay(db, fault_flush_delay())
    }

    fn with_flush_delay(db: Arc<DB>, flush_delay: Duration) -> Self {
        LogStore {
            db,
            fsync_seconds: None,
            flusher: Arc::new(std::sync::OnceLock::new()),
            queued: Arc::new(AtomicUsize::new(0)),
            flush_delay,
            node_id: None,
        }
    }

    /// Lets a follower's appends be synced inline (see the module doc).
    pub fn with_node_id(mut self, node_id: NodeId) -> Self {
        self.node_id = Some(node_id);
        self
    }

    /// Times every synced write into `histogram`.
    pub fn with_fsync_histogram(mut self, histogram: prometheus::Histogram) -> Self {
        self.fsync_seconds = Some(histogram);
        self
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let cf = cf(&self.db, CF_META)?;
        match self.db.get_pinned_cf(cf, key)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Runs a write on the blocking pool, synced when `sync`.
    async fn write(
        &self,
        sync: bool,
        build: impl FnOnce(&DB, &mut WriteBatch) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        let db = self.db.clone();
        let timer = if sync { self.fsync_seconds.clone() } else { None };
        tokio::task::spawn_blocking(move || {
            let mut batch = WriteBatch::default();
            build(&db, &mut batch)?;
            let mut opts = WriteOptions::default();
            opts.set_sync(sync);
            let started = std::time::Instant::now();
            db.write_opt(batch, &opts)?;
            if let Some(histogram) = timer {
                histogram.observe(started.elapsed().as_secs_f64());
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// The flush thread's queue, starting the thread on first use.
    fn flush_queue(&self) -> io::Result<&SyncSender<Written>> {
        if let Some(tx) = self.flusher.get() {
            return Ok(tx);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(FLUSH_QUEUE_MAX);
        let db = Arc::downgrade(&self.db);
        let histogram = self.fsync_seconds.clone();
        let delay = self.flush_delay;
        let queued = self.queued.clone();
        std::thread::Builder::new()
            .name("raftq-log-flush".into())
            .spawn(move || flush_loop(db, rx, histogram, delay, queued))?;
        // Only the Raft task appends (`&mut self`), so no other thread can
        // have set it meanwhile; if one did, its sender is the one kept.
        Ok(self.flusher.get_or_init(|| tx))
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StoreError> {
        let cf = cf(&self.db, CF_LOGS)?;
        match self.db.iterator_cf(cf, IteratorMode::End).next() {
            Some(item) => {
                let (_, value) = item?;
                let entry: Entry = serde_json::from_slice(&value)?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }

    fn read_range(&self, start: u64, end_inclusive: Option<u64>) -> Result<Vec<Entry>, StoreError> {
        let cf = cf(&self.db, CF_LOGS)?;
        let start_key = log_key(start);
        let mut entries = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&start_key, Direction::Forward)) {
            let (key, value) = item?;
            let index = decode_log_key(&key)
                .ok_or_else(|| StoreError::Corrupt(format!("bad log key {key:?}")))?;
            if end_inclusive.is_some_and(|end| index > end) {
                break;
            }
            let entry: Entry = serde_json::from_slice(&value)?;
            if entry.log_id.index != index {
                return Err(StoreError::Corrupt(format!(
                    "log key {index} holds entry {}",
                    entry.log_id.index
                )));
            }
            entries.push(entry);
        }
        Ok(entries)
    }
}

/// The flush delay the fault hook asks for (always zero in release builds).
fn fault_flush_delay() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var(FAULT_LOG_FLUSH_DELAY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
    {
        tracing::warn!("fault injection: log flush delayed by {ms} ms");
        return Duration::from_millis(ms);
    }
    Duration::ZERO
}

/// A batch written to RocksDB, waiting for the sync that makes it durable.
struct Written {
    callback: IOFlushed<TypeConfig>,
    at: Instant,
}

/// The flush thread: waits for written batches, syncs the WAL once for all
/// that are queued (each was written before it was queued, so the sync
/// covers it), then reports them flushed in order. Ends when every
/// `LogStore` is dropped or the DB is gone.
fn flush_loop(
    db: Weak<DB>,
    rx: Receiver<Written>,
    histogram: Option<prometheus::Histogram>,
    delay: Duration,
    queued: Arc<AtomicUsize>,
) {
    while let Ok(first) = rx.recv() {
        let mut pending = vec![first];
        pending.extend(rx.try_iter());
        if !delay.is_zero() {
            // The fault hook: no batch of this round is reported before
            // `delay` has passed since it was written.
            let due = pending.iter().map(|w| w.at + delay).max().unwrap_or_else(Instant::now);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let synced = match db.upgrade() {
            Some(db) => sync_wal(&db, histogram.as_ref()),
            None => Err("the log store is closed".to_string()),
        };
        let reported = pending.len();
        for written in pending {
            written.callback.io_completed(synced.clone().map_err(io::Error::other));
        }
        queued.fetch_sub(reported, Ordering::AcqRel);
    }
}

/// Syncs the WAL (every write before it becomes durable), timed into
/// `histogram`.
fn sync_wal(db: &DB, histogram: Option<&prometheus::Histogram>) -> Result<(), String> {
    let started = Instant::now();
    let synced = db.flush_wal(true).map_err(|e| e.to_string());
    if let Some(histogram) = histogram {
        histogram.observe(started.elapsed().as_secs_f64());
    }
    synced
}

/// Whether this database has ever taken part in Raft: a vote or a log entry.
pub fn has_raft_state(db: &DB) -> Result<bool, StoreError> {
    let vote = db.get_cf(cf(db, CF_META)?, META_VOTE)?.is_some();
    let log = db.iterator_cf(cf(db, CF_LOGS)?, IteratorMode::Start).next().is_some();
    Ok(vote || log)
}

fn io_err(e: StoreError) -> io::Error {
    io::Error::other(e)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Some(e),
            Bound::Excluded(&0) => return Ok(Vec::new()),
            Bound::Excluded(&e) => Some(e - 1),
            Bound::Unbounded => None,
        };
        self.read_range(start, end).map_err(io_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(META_VOTE).map_err(io_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self.get_meta(META_PURGED).map_err(io_err)?;
        let last = self.last_log_id().map_err(io_err)?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let value = serde_json::to_vec(vote)?;
        self.write(true, move |db, batch| {
            batch.put_cf(cf(db, CF_META)?, META_VOTE, value);
            Ok(())
        })
        .await
        .map_err(io_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // In place: an unsynced write is a memtable insert and a buffered
        // WAL write, cheaper than a trip to the blocking pool, and it sits
        // between every commit and its apply.
        let value = serde_json::to_vec(&committed)?;
        let meta = cf(&self.db, CF_META).map_err(io_err)?;
        self.db.put_cf(meta, META_COMMITTED, value).map_err(|e| io_err(e.into()))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(META_COMMITTED).map_err(io_err)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Written (readable, in the WAL) but not synced: a memtable insert
        // and a buffered WAL write, short enough for the Raft task.
        let mut batch = WriteBatch::default();
        let logs = cf(&self.db, CF_LOGS).map_err(io_err)?;
        let mut leader = None;
        for entry in entries {
            leader = Some(entry.log_id.leader_id.node_id);
            batch.put_cf(logs, log_key(entry.log_id.index), serde_json::to_vec(&entry)?);
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(false);
        self.db.write_opt(batch, &opts).map_err(|e| io_err(e.into()))?;
        let follower = matches!((leader, self.node_id), (Some(leader), Some(me)) if leader != me);
        if follower && self.flush_delay.is_zero() && self.queued.load(Ordering::Acquire) == 0 {
            // Nothing is waiting for the flush thread, so reporting this
            // batch now cannot overtake an earlier one (module doc).
            let synced = sync_wal(&self.db, self.fsync_seconds.as_ref());
            callback.io_completed(synced.map_err(io::Error::other));
            return Ok(());
        }
        let queue = self.flush_queue()?;
        let stopped = || io::Error::other("the log flush thread stopped");
        self.queued.fetch_add(1, Ordering::AcqRel);
        let sent = match queue.try_send(Written { callback, at: Instant::now() }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(written)) => {
                // Backpressure: wait off the tokio workers for room.
                let queue = queue.clone();
                tokio::task::spawn_blocking(move || queue.send(written))
                    .await
                    .map_err(io::Error::other)
                    .and_then(|sent| sent.map_err(|_| stopped()))
            }
            Err(TrySendError::Disconnected(_)) => Err(stopped()),
        };
        if sent.is_err() {
            // Never reaches the flush thread, which would count it out.
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        sent
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        self.write(true, move |db, batch| {
            batch.delete_range_cf(cf(db, CF_LOGS)?, log_key(from), log_key(u64::MAX));
            // delete_range's end is exclusive: the entry at u64::MAX is cut separately.
            batch.delete_cf(cf(db, CF_LOGS)?, log_key(u64::MAX));
            Ok(())
        })
        .await
        .map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let value = serde_json::to_vec(&log_id)?;
        self.write(false, move |db, batch| {
            batch.put_cf(cf(db, CF_META)?, META_PURGED, value);
            batch.delete_range_cf(cf(db, CF_LOGS)?, log_key(0), log_key(log_id.index + 1));
            Ok(())
        })
        .await
        .map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use openraft::type_config::TypeConfigExt;

    use super::*;
    use crate::raft::types::{EntryPayload, LeaderId};

    fn blank(index: u64) -> Entry {
        blank_of(1, index)
    }

    fn blank_of(leader: NodeId, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(LeaderId { term: 1, node_id: leader }, index),
            payload: EntryPayload::Blank,
        }
    }

    /// A follower's append with nothing queued is synced and reported
    /// before `append` returns, without the flush thread; the leader's own
    /// entries always go through the flush thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_followers_idle_append_is_synced_inline_and_the_leaders_never() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::db::open(&dir.path().join("db")).unwrap();
        let mut store = LogStore::with_flush_delay(db, Duration::ZERO).with_node_id(2);
        let (tx, mut rx) = TypeConfig::oneshot();
        store.append([blank_of(1, 1), blank_of(1, 2)], IOFlushed::signal(tx)).await.unwrap();
        assert!(matches!(rx.try_recv(), Ok(Ok(()))), "not reported when append returned");
        assert!(store.flusher.get().is_none(), "the flush thread was used");

        let (tx, rx) = TypeConfig::oneshot();
        store.append([blank_of(2, 3)], IOFlushed::signal(tx)).await.unwrap();
        assert!(store.flusher.get().is_some(), "the leader's own entries were synced inline");
        rx.await.unwrap().unwrap();
        let read = store.try_get_log_entries(1..4).await.unwrap();
        assert_eq!(read.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![1, 2, 3]);
        // The flush thread counts a batch out just after reporting it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.queued.load(Ordering::Acquire) != 0 {
            assert!(Instant::now() < deadline, "the flush thread never counted its batch out");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// With a batch still queued for the flush thread, a follower's append
    /// goes there too: reported inline, it would overtake that batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_followers_append_behind_a_queued_batch_goes_through_the_flush_thread() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::db::open(&dir.path().join("db")).unwrap();
        let mut store = LogStore::with_flush_delay(db, Duration::ZERO).with_node_id(2);
        // As if an earlier batch were still waiting for its sync.
        store.queued.fetch_add(1, Ordering::AcqRel);
        let (tx, rx) = TypeConfig::oneshot();
        store.append([blank_of(1, 1)], IOFlushed::signal(tx)).await.unwrap();
        assert!(store.flusher.get().is_some(), "synced inline behind a queued batch");
        rx.await.unwrap().unwrap();
    }

    /// Entries are readable when `append` returns, but reported flushed
    /// only after the (here delayed) sync; one sync covers batches written
    /// before it, and each is reported in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_is_readable_at_once_and_reported_flushed_only_after_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::db::open(&dir.path().join("db")).unwrap();
        let delay = Duration::from_millis(300);
        let mut store = LogStore::with_flush_delay(db, delay);
        let started = Instant::now();
        let (tx1, rx1) = TypeConfig::oneshot();
        store.append([blank(1), blank(2)], IOFlushed::signal(tx1)).await.unwrap();
        let (tx2, rx2) = TypeConfig::oneshot();
        store.append([blank(3)], IOFlushed::signal(tx2)).await.unwrap();
        assert!(started.elapsed() < delay, "append waited for the sync");
        let read = store.try_get_log_entries(1..4).await.unwrap();
        assert_eq!(read.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![1, 2, 3]);
        rx1.await.unwrap().unwrap();
        assert!(started.elapsed() >= delay, "reported flushed before the delayed sync");
        rx2.await.unwrap().unwrap();
        assert!(started.elapsed() >= delay);
    }
}
