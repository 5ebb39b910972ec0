//! `raftq dump`: a stopped node's replicated state, read from its RocksDB
//! and rebuilt through the core (`sm::Core::restore`), as one ordered view.
//!
//! Read-only: the DB is opened without its lock, after checking that no
//! node holds it. What it shows is what RocksDB holds; a node stopped in
//! the middle of a snapshot install redoes the install at its next start
//! (see `snapshot::lifecycle`), and the dump says so.

use std::collections::BTreeMap;
use std::path::Path;

use rocksdb::IteratorMode;
use serde::Serialize;

use super::db::{self, cf, StoreError};
use super::keys::{self, CF_EVENTS};
use super::snapshot::lifecycle::RESTORING_MARKER;
use super::state_machine::load_state;
use crate::queue::Seq;
use crate::sm::Dump;

/// What `raftq dump` prints.
#[derive(Debug, Serialize)]
pub struct DataDump {
    #[serde(flatten)]
    pub state: Dump,
    /// With `--events`: every stored (pending or retained) event body, by
    /// queue and seq.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<BTreeMap<String, BTreeMap<Seq, String>>>,
    /// An install was cut short: the node's next start redoes it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub install_interrupted: bool,
}

/// Reads the state of the node whose data dir is `data_dir`.
pub fn data_dir(data_dir: &Path, with_events: bool) -> Result<DataDump, StoreError> {
    let db = db::open_read_only(&data_dir.join("db"))?;
    let state = load_state(&db)?.dump();
    let events = if with_events {
        let mut events: BTreeMap<String, BTreeMap<Seq, String>> = BTreeMap::new();
        for item in db.iterator_cf(cf(&db, CF_EVENTS)?, IteratorMode::Start) {
            let (key, value) = item?;
            let (queue, seq) = keys::decode_event_key(&key)
                .ok_or_else(|| StoreError::Corrupt(format!("bad event key {key:?}")))?;
            let body = keys::decode_body(seq, value.into_vec())?;
            events.entry(queue.to_owned()).or_default().insert(seq, body);
        }
        Some(events)
    } else {
        None
    };
    let install_interrupted = data_dir.join("snapshots").join(RESTORING_MARKER).exists();
    Ok(DataDump { state, events, install_interrupted })
}
