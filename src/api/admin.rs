//! Admin routes: `DELETE /cluster/nodes/{id}`, `POST /cluster/leader/transfer`,
//! `GET /cluster/backup`, `GET /debug/raft`. The first two are writes
//! (leader only, 307 elsewhere) carried out by the Raft facade
//! (`replica::members`, `replica::transfer`); a backup is served by any
//! node from its applied state, and so are the Raft statistics.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{self, ApiError};
use super::extract::Params;
use super::{path_and_query, Shared};
use crate::raft::types::NodeId;
use crate::replica::RaftView;
use crate::wire::{self, code};

/// Where `GET /cluster/backup` stages its (unlinked) files, one at a time.
pub struct Backups {
    pub dir: std::path::PathBuf,
    /// One backup at a time: each stages a full copy of the state on disk.
    pub slot: Arc<tokio::sync::Semaphore>,
}

fn node_id(raw: &str) -> Result<NodeId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::bad_request(code::INVALID_NODE_ID, format!("node id {raw:?} is not a u64"))
    })
}

fn membership(view: &RaftView) -> wire::Membership {
    wire::Membership {
        leader_id: view.leader_id,
        voters: view.voters.iter().copied().collect(),
        learners: view.learners.iter().copied().collect(),
        ..Default::default()
    }
}

fn json(body: &wire::Membership) -> Result<Response, ApiError> {
    let body = wire::to_body(body).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(body).into_response())
}

/// `DELETE /cluster/nodes/{id}`: takes a member out of the cluster for good
/// (see `Replica::remove_node`). Asked to remove itself, the leader hands
/// leadership over first and redirects (307) to the new leader, which then
/// removes it.
pub async fn remove_node(
    State(state): State<Shared>,
    Path(raw): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = node_id(&raw)?;
    let force = Params::parse(uri.query())?.bool("force")?.unwrap_or(false);
    state.route_write(&uri)?;
    // Known outside Raft's membership: gossip, or an earlier tombstone.
    let known = async {
        state.gossip.members().await.iter().any(|m| m.node_id == id)
            || state.reader.retired().contains(&id)
    };
    state
        .replica
        .remove_node(id, force, known)
        .await
        .map_err(|e| error::from_remove(e, path_and_query(&uri)))?;
    let body = wire::Membership { removed: Some(id), ..membership(&state.replica.view()) };
    json(&body)
}

/// `POST /cluster/leader/transfer[?to=ID]`: hands leadership to `to` (by
/// default the voter with the most of the log); see `replica::transfer`.
pub async fn transfer_leader(State(state): State<Shared>, uri: Uri) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query())?;
    state.route_write(&uri)?;
    let to = params.u64("to")?;
    let previous_term = state.replica.view().term;
    let transferred = state
        .replica
        .transfer_leadership(to)
        .await
        .map_err(|e| error::from_transfer(e, path_and_query(&uri)))?
        .is_some();
    let view = state.replica.view();
    let mut body = wire::Membership { transferred: Some(transferred), ..membership(&view) };
    if transferred {
        body.previous_leader_id = Some(state.replica.node_id());
        body.previous_term = Some(previous_term);
        body.term = Some(view.term);
    }
    json(&body)
}

/// `GET /cluster/backup`: the applied state as a snapshot file, after a
/// linearizable read barrier (so it holds every write acknowledged before
/// the request). Written to a temp file in the data dir and streamed from
/// it: memory stays flat whatever the size.
pub async fn backup(State(state): State<Shared>) -> Result<Response, ApiError> {
    // Held until the response body is dropped (sent or abandoned).
    let slot = state.backup.slot.clone().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable("another backup is being taken on this node; retry shortly".into())
    })?;
    state.replica.linearizable().await?;
    let reader = state.reader.clone();
    let dir = state.backup.dir.clone();
    let (file, meta) = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        // Unlinked at once: the open handle keeps the data until the
        // response is sent, and a crash leaves nothing behind.
        let file = tempfile_in(&dir)?;
        let out = std::io::BufWriter::new(file);
        let (out, meta) = reader.backup(out)?;
        let mut file = out.into_inner().map_err(|e| e.into_error())?;
        std::io::Seek::rewind(&mut file)?;
        Ok::<_, crate::raft::db::StoreError>((file, meta))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let applied = meta.last_log_id.map_or(0, |l| l.index);
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    let stream = futures_util::StreamExt::map(stream, move |chunk| {
        let _held = &slot;
        chunk
    });
    let filename = format!("attachment; filename=\"raftq-backup-{applied}.snap\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_DISPOSITION, filename),
            (header::HeaderName::from_static(wire::header::APPLIED_INDEX), applied.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// An anonymous file in `dir`: created, then unlinked.
fn tempfile_in(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    let path = dir.join(format!("backup-{}.tmp", rand::random::<u64>()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// `GET /debug/raft`: openraft's runtime statistics on this node, as text
/// (where a write's time goes between proposal and apply, batch sizes).
/// Admin only: it tells an outsider how busy the cluster is.
pub async fn raft_stats(State(state): State<Shared>) -> Result<Response, ApiError> {
    let text = state
        .replica
        .raft_stats()
        .await
        .ok_or_else(|| ApiError::Unavailable("raft has stopped on this node".into()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}
