//! The internal API on the Raft port: openraft's RPCs and the node-to-node
//! helpers. Only reachable with a node certificate of the cluster CA (the
//! TLS layer refuses everyone else before HTTP starts), and only for
//! requests that name this node and this cluster (see `raft::peer`): a
//! mismatch is refused before anything reaches Raft.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::raft::{AppendEntriesRequest, VoteRequest};

use crate::raft::network::{decode_snapshot_chunk, PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE};
use crate::raft::peer::{Identity, PeerClient, HEADER_REFUSED, PATH_IDENTITY};
use crate::raft::submit::{Submitter, PATH_PROPOSE};
use crate::raft::types::{NodeId, Op, Raft, TypeConfig};
use crate::raft::ReadBarrier;

/// Largest Raft RPC body: 32 entries of ~1 MiB batches, with headroom.
const RPC_BODY_MAX: usize = 128 << 20;

#[derive(Clone)]
pub struct InternalState {
    pub raft: Raft,
    pub barrier: ReadBarrier,
    /// Our identity (node id, cluster UUID) and the refusal counter.
    pub peer: PeerClient,
    pub submitter: Submitter,
    pub reader: crate::raft::state_machine::SmReader,
}

fn bad_rpc(e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("malformed rpc: {e}")).into_response()
}

async fn append(State(s): State<InternalState>, body: Bytes) -> Response {
    match serde_json::from_slice::<AppendEntriesRequest<TypeConfig>>(&body) {
        Ok(req) => Json(s.raft.append_entries(req).await).into_response(),
        Err(e) => bad_rpc(e),
    }
}

async fn vote(State(s): State<InternalState>, body: Bytes) -> Response {
    match serde_json::from_slice::<VoteRequest<NodeId>>(&body) {
        Ok(req) => Json(s.raft.vote(req).await).into_response(),
        Err(e) => bad_rpc(e),
    }
}

async fn snapshot(State(s): State<InternalState>, body: Bytes) -> Response {
    match decode_snapshot_chunk(&body) {
        Some(req) => Json(s.raft.install_snapshot(req).await).into_response(),
        None => bad_rpc("snapshot chunk framing"),
    }
}

async fn identity(State(s): State<InternalState>) -> Json<Identity> {
    Json(s.peer.identity().identity())
}

/// Refuses a request meant for another node or another cluster (`421`
/// with `raftq-refused`); a node without a cluster yet adopts the one of the
/// first append or snapshot (only a leader that added it sends those).
async fn check_peer(State(s): State<InternalState>, request: Request, next: Next) -> Response {
    let may_adopt = matches!(request.uri().path(), PATH_APPEND | PATH_SNAPSHOT);
    let identity = request.uri().path() == PATH_IDENTITY;
    match s.peer.identity().check(request.headers(), may_adopt, identity) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            s.peer.note_refused(&refusal);
            (
                StatusCode::MISDIRECTED_REQUEST,
                [(HEADER_REFUSED, refusal.code())],
                refusal.to_string(),
            )
                .into_response()
        }
    }
}

async fn propose(State(s): State<InternalState>, body: Bytes) -> Response {
    match serde_json::from_slice::<Op>(&body) {
        Ok(op) => Json(s.submitter.accept_forwarded(op).await).into_response(),
        Err(e) => bad_rpc(e),
    }
}

/// A leadership transfer's last step (see `api::admin::transfer_leader`):
/// campaign now. openraft ignores it on a leader or a learner.
async fn elect(State(s): State<InternalState>) -> Response {
    match s.raft.trigger().elect().await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// The removed node ids this node has applied: how a node that gossip says
/// was removed confirms it with a cluster member (gossip is unauthenticated).
async fn retired(State(s): State<InternalState>) -> Json<Vec<NodeId>> {
    Json(s.reader.retired().into_iter().collect())
}

async fn read_index(State(s): State<InternalState>) -> Response {
    Json(s.barrier.read_index().await).into_response()
}

pub fn router(state: InternalState) -> Router {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_IDENTITY, get(identity))
        .route(crate::raft::read::PATH_READ_INDEX, post(read_index))
        .route(PATH_PROPOSE, post(propose))
        .route(super::admin::PATH_ELECT, post(elect))
        .route(crate::membership::driver::PATH_RETIRED, get(retired))
        .layer(middleware::from_fn_with_state(state.clone(), check_peer))
        .layer(DefaultBodyLimit::max(RPC_BODY_MAX))
        .with_state(state)
}
