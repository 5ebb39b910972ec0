//! The internal API on the Raft port: openraft's RPCs and the node-to-node
//! helpers. Only reachable with a client certificate of the cluster CA (the
//! TLS layer refuses everyone else before HTTP starts).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::raft::{AppendEntriesRequest, VoteRequest};

use crate::membership::driver::{Identity, PATH_IDENTITY};
use crate::raft::network::{decode_snapshot_chunk, PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE};
use crate::raft::submit::{Submitter, PATH_PROPOSE};
use crate::raft::types::{NodeId, Op, Raft, TypeConfig};
use crate::raft::ReadBarrier;

/// Largest Raft RPC body: 32 entries of ~1 MiB batches, with headroom.
const RPC_BODY_MAX: usize = 128 << 20;

#[derive(Clone)]
pub struct InternalState {
    pub raft: Raft,
    pub barrier: ReadBarrier,
    pub identity: Identity,
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
    Json(s.identity.clone())
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
        .layer(DefaultBodyLimit::max(RPC_BODY_MAX))
        .with_state(state)
}
