//! Backups: `GET /cluster/backup` writes the applied state in the snapshot
//! format (see [`super::snapshot`]); `raftq restore` turns such a file into
//! the data dir of a new cluster's first node.
//!
//! A restore keeps the data (queues, retained events, named sequences, the
//! idempotency window, the follower-maze stream) and drops what belongs to
//! the old cluster: its Raft membership, its applied log id and its retired
//! node ids. The node started on the restored dir then bootstraps a new
//! single-voter cluster whose log starts at index 0 on top of that data, and
//! other nodes join it as usual (they receive the data by snapshot).

use std::io::{BufReader, Seek};
use std::path::Path;

use rocksdb::WriteBatch;

use super::db::{self, StoreError};
use super::keys::{self, SM_CFS};
use super::snapshot;
use super::state_machine::RESTORE_BATCH_BYTES;
use super::types::SnapshotMeta;

/// Left in the data dir by a restore. The restored data is in the state
/// machine but in no log entry, so a node joining by log replication would
/// never see it: the first start takes a snapshot and purges the log behind
/// it (joiners then start from the snapshot), and only then removes this.
pub const RESTORED_MARKER: &str = "restored";

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0} already holds a node's data; restore needs an empty data dir")]
    NotEmpty(String),
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a restore wrote.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The backup's own meta (the old cluster's applied log id).
    pub meta: SnapshotMeta,
    pub records: usize,
}

/// State keys that describe the old cluster rather than the data.
fn belongs_to_old_cluster(cf_index: u8, key: &[u8]) -> bool {
    SM_CFS[cf_index as usize] == keys::CF_SM
        && (key == keys::SM_APPLIED
            || key == keys::SM_MEMBERSHIP
            || key == keys::SM_CLUSTER_UUID
            || key.starts_with(keys::SM_RETIRED_PREFIX))
}

/// Validates `backup` (checksum, framing) and writes its data into a new
/// RocksDB under `data_dir/db`. Refuses a data dir that already has one.
/// Both passes stream the file, so a backup of any size restores in bounded
/// memory.
///
/// Atomic: the data goes into `db.partial`, which becomes `db` by a rename
/// only once complete, with the [`RESTORED_MARKER`] written before it. An
/// interrupted restore leaves no `db`, and can simply be run again.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<Restored, RestoreError> {
    let db_path = data_dir.join("db");
    if db_path.exists() || data_dir.join("node_id").exists() {
        return Err(RestoreError::NotEmpty(data_dir.display().to_string()));
    }
    let partial = data_dir.join("db.partial");
    let read_err = |source| RestoreError::Read { path: backup.display().to_string(), source };
    let mut file = std::fs::File::open(backup).map_err(read_err)?;
    // Verify everything before creating anything.
    let meta = snapshot::Reader::new(BufReader::new(&file))?.validate()?;
    file.rewind().map_err(read_err)?;
    std::fs::create_dir_all(data_dir).map_err(StoreError::from)?;
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(StoreError::from)?;
    }
    let db = db::open(&partial)?;
    let reader = snapshot::Reader::new(BufReader::new(&file))?;
    let records = snapshot::load_into(
        &db,
        reader,
        WriteBatch::default(),
        RESTORE_BATCH_BYTES,
        |cf_index, key| !belongs_to_old_cluster(cf_index, key),
    )?;
    db.flush().map_err(StoreError::from)?;
    drop(db);
    let marker = data_dir.join(RESTORED_MARKER);
    std::fs::write(&marker, b"restored from a backup; cleared once the first snapshot is taken\n")
        .and_then(|()| std::fs::File::open(&marker)?.sync_all())
        .map_err(StoreError::from)?;
    std::fs::rename(&partial, &db_path).map_err(StoreError::from)?;
    std::fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(StoreError::from)?;
    Ok(Restored { meta, records })
}
