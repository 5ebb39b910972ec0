//! Opening the node's one RocksDB instance and the storage error type.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

use super::keys::{CF_EVENTS, CF_LOGS, CF_META, CF_SM, CF_STAMPS};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("encoding: {0}")]
    Codec(#[from] serde_json::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    #[error("background storage task failed: {0}")]
    Join(String),
    #[error("{0} is in use by a running node (its RocksDB lock is held); stop the node first")]
    Locked(String),
}

/// Opens (creating if missing) the RocksDB at `path` with every column family.
pub fn open(path: &Path) -> Result<Arc<DB>, StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Appends are synced explicitly per batch; let RocksDB batch concurrent
    // writers into one WAL write.
    opts.set_enable_pipelined_write(true);
    opts.set_max_background_jobs(2);
    // Bound the WAL: old log files are recycled once their memtables flushed.
    opts.set_max_total_wal_size(64 << 20);
    // Bound RocksDB's descriptors (it keeps every table file open by
    // default): they share the process limit with client connections.
    opts.set_max_open_files(512);
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, families())?))
}

/// Opens the RocksDB at `path` read-only, for tools (`raftq dump`). Refuses
/// a DB that does not exist, or whose lock a running node holds: its
/// state would be changing under the reader.
pub fn open_read_only(path: &Path) -> Result<DB, StoreError> {
    let lock = path.join("LOCK");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&lock).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::Corrupt(format!("{} holds no node's data", path.display()))
        } else {
            e.into()
        }
    })?;
    // RocksDB locks with fcntl (POSIX) locks, which this probe sees. They
    // belong to the process: the probe is only sound where this process
    // has not opened the DB itself, which a tool has not.
    if rustix::fs::fcntl_lock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
    {
        return Err(StoreError::Locked(path.display().to_string()));
    }
    let _ = rustix::fs::fcntl_lock(&file, rustix::fs::FlockOperation::NonBlockingUnlock);
    drop(file);
    Ok(DB::open_cf_descriptors_read_only(&Options::default(), path, families(), false)?)
}

fn families() -> impl Iterator<Item = ColumnFamilyDescriptor> {
    [CF_LOGS, CF_META, CF_SM, CF_EVENTS, CF_STAMPS]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()))
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or_else(|| StoreError::Corrupt(format!("missing column family {name}")))
}
