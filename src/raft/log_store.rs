//! The Raft log on RocksDB.
//!
//! openraft's contract (and why each write looks the way it does):
//! - `append` must make entries readable before it returns and may report
//!   them flushed only once they are on disk: all entries of one call go into
//!   one `WriteBatch` written with `sync = true`, then the callback fires.
//! - `save_vote` must be durable before it returns: synced write.
//! - `purge` need not be synced: losing it only keeps more log than needed.
//!
//! Synced writes run on the blocking pool so an fsync never stalls a tokio
//! worker that other connections need.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use super::db::{cf, StoreError};
use super::keys::{
    decode_log_key, log_key, CF_LOGS, CF_META, META_COMMITTED, META_PURGED, META_VOTE,
};
use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    /// Synced writes are timed here when set (exported as
    /// `raftq_log_fsync_seconds`).
    fsync_seconds: Option<prometheus::Histogram>,
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> Self {
        LogStore { db, fsync_seconds: None }
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

/// Whether this database has ever taken part in Raft: a vote or a log entry.
pub fn has_raft_state(db: &DB) -> Result<bool, StoreError> {
    let vote = db.get_cf(cf(db, CF_META)?, META_VOTE)?.is_some();
    let log = db.iterator_cf(cf(db, CF_LOGS)?, IteratorMode::Start).next().is_some();
    Ok(vote || log)
}

fn read_err(e: StoreError) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: StoreError) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
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
        self.read_range(start, end).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(META_PURGED).map_err(read_err)?;
        let last = self.last_log_id().map_err(read_err)?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let value = serde_json::to_vec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.write(true, move |db, batch| {
            batch.put_cf(cf(db, CF_META)?, META_VOTE, value);
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(META_VOTE).map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let value = serde_json::to_vec(&committed).map_err(|e| StorageIOError::write(&e))?;
        self.write(false, move |db, batch| {
            batch.put_cf(cf(db, CF_META)?, META_COMMITTED, value);
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .get_meta::<Option<LogId>>(META_COMMITTED)
            .map_err(|e| StorageIOError::read(&e))?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let value = serde_json::to_vec(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            encoded.push((entry.log_id.index, value));
        }
        let res = self
            .write(true, move |db, batch| {
                let cf = cf(db, CF_LOGS)?;
                for (index, value) in encoded {
                    batch.put_cf(cf, log_key(index), value);
                }
                Ok(())
            })
            .await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write(true, move |db, batch| {
            batch.delete_range_cf(cf(db, CF_LOGS)?, log_key(log_id.index), log_key(u64::MAX));
            // delete_range's end is exclusive: the entry at u64::MAX is cut separately.
            batch.delete_cf(cf(db, CF_LOGS)?, log_key(u64::MAX));
            Ok(())
        })
        .await
        .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let value = serde_json::to_vec(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        self.write(false, move |db, batch| {
            batch.put_cf(cf(db, CF_META)?, META_PURGED, value);
            batch.delete_range_cf(cf(db, CF_LOGS)?, log_key(0), log_key(log_id.index + 1));
            Ok(())
        })
        .await
        .map_err(write_err)
    }
}
