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

/// Memtable size of the state machine's column family (RocksDB's default
/// is 64 MiB). Its writes are many small keys, put and soon deleted again
/// (the maze's follow edges and reorder buffer, queue indexes): each one is
/// a skip-list insert whose cost grows with the memtable, and a 64 MiB one
/// of such keys does not fit any cache. With 8 MiB a follower in the 3-node
/// maze run spent 4% of its samples in `FindSpliceForLevel` instead of 14%,
/// and 15% less CPU (docs/benchmarks.md, run 6).
pub const SM_WRITE_BUFFER_BYTES: usize = 8 << 20;

fn families() -> impl Iterator<Item = ColumnFamilyDescriptor> {
    [CF_LOGS, CF_META, CF_SM, CF_EVENTS, CF_STAMPS].into_iter().map(|name| {
        let mut opts = Options::default();
        match name {
            // Log entries live until the next snapshot purges them: LZ4 at
            // every flush was CPU spent on bytes about to be deleted (as
            // etcd's WAL, the Raft log is stored uncompressed). Event
            // bodies are kept compressed in `CF_EVENTS`.
            CF_LOGS => opts.set_compression_type(rocksdb::DBCompressionType::None),
            CF_SM => opts.set_write_buffer_size(SM_WRITE_BUFFER_BYTES),
            _ => {}
        }
        ColumnFamilyDescriptor::new(name, opts)
    })
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or_else(|| StoreError::Corrupt(format!("missing column family {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options of one column family as RocksDB wrote them to the
    /// newest OPTIONS file of the DB: what it really runs with.
    fn written_options(dir: &Path, family: &str) -> String {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("db dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("OPTIONS-")))
            .collect();
        files.sort();
        let text = std::fs::read_to_string(files.last().expect("an OPTIONS file")).expect("read");
        let start = text.find(&format!("[CFOptions \"{family}\"]")).expect("the family");
        let rest = &text[start + 1..];
        rest[..rest.find("\n[").unwrap_or(rest.len())].to_string()
    }

    #[test]
    fn the_log_is_stored_uncompressed_and_the_state_machine_has_a_small_memtable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        // A DB made by a build before these options (RocksDB's defaults)
        // opens with them.
        let mut old = Options::default();
        old.create_if_missing(true);
        old.create_missing_column_families(true);
        let names = [CF_LOGS, CF_META, CF_SM, CF_EVENTS, CF_STAMPS];
        drop(DB::open_cf(&old, &path, names).unwrap());
        assert!(written_options(&path, CF_LOGS).contains("compression=kLZ4Compression"));
        drop(open(&path).unwrap());
        let logs = written_options(&path, CF_LOGS);
        assert!(logs.contains("compression=kNoCompression"), "{logs}");
        let sm = written_options(&path, CF_SM);
        assert!(sm.contains(&format!("write_buffer_size={SM_WRITE_BUFFER_BYTES}\n")), "{sm}");
        let events = written_options(&path, CF_EVENTS);
        assert!(events.contains("compression=kLZ4Compression"), "{events}");
    }
}
