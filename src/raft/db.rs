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
    let cfs = [CF_LOGS, CF_META, CF_SM, CF_EVENTS, CF_STAMPS]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?))
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or_else(|| StoreError::Corrupt(format!("missing column family {name}")))
}
