//! The snapshot lifecycle of the state machine: build, receive, validate,
//! install, and redo an install a crash cut short.
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
//! last batch, which is synced, and the reload. `recover` (run by
//! `StateMachine::open`) finds a marker left by a crash and redoes the
//! install from `current.snap`, which by then is the new snapshot (it was
//! renamed before the marker was created). A restore is idempotent, so a
//! crash during the redo is redone again. The same path restores a state
//! that fell behind `current.snap`.

use std::io::{BufReader, BufWriter, Read, Seek};
use std::path::Path;

use openraft::RaftSnapshotBuilder;
use rocksdb::{IteratorMode, WriteBatch, DB};

use super::super::db::{cf, StoreError};
use super::super::keys::{self, CF_SM, SM_CFS};
use super::super::state_machine::{load_state, Shared};
use super::super::types::{LogId, Snapshot, SnapshotMeta, TypeConfig};
use super::{SnapshotFile, TempPath};

const SNAPSHOT_FILE: &str = "current.snap";
/// Present while the stored state is being replaced by `current.snap`.
pub const RESTORING_MARKER: &str = "restoring";
/// About how much of a snapshot one RocksDB batch of an install carries.
pub const RESTORE_BATCH_BYTES: usize = 4 << 20;

fn snap_err(e: StoreError) -> std::io::Error {
    std::io::Error::other(e)
}

/// Creates the snapshot dir, and removes the temp files a crash left there
/// (half-built, half-received or half-copied snapshots).
pub(in crate::raft) fn prepare_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.to_str().is_some_and(|p| p.ends_with(super::TEMP_SUFFIX)) {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// At open: remembers `current.snap`'s log id, and installs it again if an
/// install was cut short (the `restoring` marker) or the stored state fell
/// behind it.
pub(in crate::raft) fn recover(shared: &Shared, dir: &Path) -> Result<(), StoreError> {
    if let Some((mut file, meta)) = open_current(dir)? {
        *lock_current(shared) = meta.last_log_id;
        let interrupted = dir.join(RESTORING_MARKER).exists();
        if interrupted || meta.last_log_id > shared.read().last_applied() {
            tracing::warn!(snapshot = ?meta.last_log_id, interrupted, "restoring the state machine from its snapshot");
            validate_file(&mut file)?;
            replace_state(shared, dir, file, RESTORE_BATCH_BYTES)?;
        }
    } else if dir.join(RESTORING_MARKER).exists() {
        return Err(StoreError::Corrupt(
            "a snapshot install was interrupted and its file is gone".into(),
        ));
    }
    Ok(())
}

/// `current.snap`, rewound, and its meta (read, not yet checksummed).
fn open_current(dir: &Path) -> Result<Option<(std::fs::File, SnapshotMeta)>, StoreError> {
    let mut file = match std::fs::File::open(dir.join(SNAPSHOT_FILE)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = super::Reader::new(BufReader::new(&file))?.meta().clone();
    file.rewind()?;
    Ok(Some((file, meta)))
}

/// openraft's `get_current_snapshot`.
pub(in crate::raft) fn current(dir: &Path) -> Result<Option<Snapshot>, StoreError> {
    Ok(open_current(dir)?
        .map(|(file, meta)| Snapshot { meta, snapshot: SnapshotFile::from_std(file) }))
}

/// Builds a snapshot from a RocksDB point-in-time view taken when the builder
/// was created, so applies may continue while it is serialised.
pub struct SnapshotBuilder {
    result: Option<tokio::sync::oneshot::Receiver<Result<Snapshot, StoreError>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, std::io::Error> {
        let rx = self
            .result
            .take()
            .ok_or_else(|| snap_err(StoreError::Corrupt("builder reused".into())))?;
        rx.await.map_err(|e| snap_err(StoreError::Join(e.to_string())))?.map_err(snap_err)
    }
}

/// openraft's `get_snapshot_builder`: takes the view now (no apply may slip
/// in before this returns) and serialises it on a thread.
pub(in crate::raft) fn begin_build(shared: &std::sync::Arc<Shared>, dir: &Path) -> SnapshotBuilder {
    let (meta_log_id, membership) = {
        let state = shared.read();
        (state.last_applied(), state.membership().clone())
    };
    let meta = SnapshotMeta { last_log_id: meta_log_id, last_membership: membership };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (taken_tx, taken_rx) = std::sync::mpsc::channel();
    let shared = shared.clone();
    let dir = dir.to_path_buf();
    // The view must be taken before this returns, but serialising it can
    // take a while: a thread owns both the DB handle and the view borrowed
    // from it.
    std::thread::spawn(move || {
        let view = shared.db.snapshot();
        let _ = taken_tx.send(());
        let result = build_file(&shared, &dir, &view, &meta)
            .map(|file| Snapshot { meta, snapshot: SnapshotFile::from_std(file) });
        let _ = tx.send(result);
    });
    let _ = taken_rx.recv();
    SnapshotBuilder { result: Some(rx) }
}

/// openraft's `install_snapshot`: off the async runtime, it reads and
/// writes the whole snapshot.
pub(in crate::raft) async fn install(
    shared: &std::sync::Arc<Shared>,
    dir: &Path,
    meta: &SnapshotMeta,
    snapshot: SnapshotFile,
) -> Result<(), std::io::Error> {
    let (file, temp) = snapshot.into_parts().await;
    let (shared, dir, announced) = (shared.clone(), dir.to_path_buf(), meta.clone());
    let result =
        tokio::task::spawn_blocking(move || install_file(&shared, &dir, &announced, file, temp))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))
            .and_then(|r| r);
    result.map_err(std::io::Error::other)
}

/// Serialises the state machine column families as seen by `view` to `out`.
pub fn write_view<W: std::io::Write>(
    db: &DB,
    view: &rocksdb::Snapshot<'_>,
    meta: &SnapshotMeta,
    out: W,
) -> Result<W, StoreError> {
    let mut writer = super::Writer::new(out, meta)?;
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

/// The first pass over a snapshot file: every record is well formed, the
/// checksum matches, and the applied log id its data holds is its meta's.
/// Reads without keeping anything, and leaves the file rewound.
fn validate_file(file: &mut std::fs::File) -> Result<SnapshotMeta, StoreError> {
    file.rewind()?;
    let mut reader = super::Reader::new(BufReader::new(&*file))?;
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
pub(in crate::raft) fn replace_state(
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
    let reader = super::Reader::new(BufReader::new(source))?;
    let meta = reader.meta().clone();
    let mut clear = WriteBatch::default();
    for name in SM_CFS {
        // Every key is UTF-8 or ASCII-prefixed, so all sort below 0xFF.
        clear.delete_range_cf(cf(db, name)?, [].as_slice(), [0xFFu8; 16].as_slice());
    }
    super::load_into(db, reader, clear, batch_bytes, |_, _| true)?;
    *state = load_state(db)?;
    if state.last_applied() != meta.last_log_id {
        return Err(StoreError::Corrupt(format!(
            "snapshot meta says {:?} but its data says {:?}",
            meta.last_log_id,
            state.last_applied()
        )));
    }
    // Not synced: a marker that comes back after a crash redoes a restore
    // that is already done, which changes nothing.
    std::fs::remove_file(&marker)?;
    let applied = state.last_applied();
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
        let (mut copy, copy_temp) = super::create_temp(dir, "copying")?;
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
    let (file, temp) = super::create_temp(dir, "building")?;
    let out = write_view(&shared.db, view, meta, BufWriter::new(file))?;
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
