//! The internal API on the Raft port: Raft's RPCs and the node-to-node
//! helpers. Only reachable with a node certificate of the cluster CA (the
//! TLS layer refuses everyone else before HTTP starts), and only for
//! requests that name this node and this cluster (see `raft::peer`): a
//! mismatch is refused before anything reaches Raft.

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::raft::network::{
    PATH_APPEND, PATH_PRE_VOTE, PATH_SNAPSHOT, PATH_TRANSFER_LEADER, PATH_VOTE,
};
use crate::raft::peer::{Identity, PeerClient, HEADER_REFUSED, PATH_IDENTITY};
use crate::raft::types::{NodeId, Op};
use crate::replica::forward::PATH_PROPOSE;
use crate::replica::read::PATH_READ_INDEX;
use crate::replica::{RaftRpc, Replica, RpcError};

/// Largest Raft RPC body: 32 entries of ~1 MiB batches, with headroom.
const RPC_BODY_MAX: usize = 128 << 20;

#[derive(Clone)]
pub struct InternalState {
    pub replica: Replica,
    /// Our identity (node id, cluster UUID) and the refusal counter.
    pub peer: PeerClient,
    pub reader: crate::raft::state_machine::SmReader,
}

fn bad_rpc(e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("malformed rpc: {e}")).into_response()
}

/// One Raft RPC, served by the facade; its answer is JSON.
async fn rpc(s: &InternalState, rpc: RaftRpc, body: &[u8]) -> Response {
    answer(s.replica.serve_rpc(rpc, body).await)
}

fn answer(result: Result<Vec<u8>, RpcError>) -> Response {
    match result {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(RpcError::Malformed(e)) => bad_rpc(e),
        Err(e @ (RpcError::Encode(_) | RpcError::Store(_))) => {
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

async fn append(State(s): State<InternalState>, body: Bytes) -> Response {
    rpc(&s, RaftRpc::Append, &body).await
}

async fn vote(State(s): State<InternalState>, body: Bytes) -> Response {
    rpc(&s, RaftRpc::Vote, &body).await
}

async fn pre_vote(State(s): State<InternalState>, body: Bytes) -> Response {
    rpc(&s, RaftRpc::PreVote, &body).await
}

/// The leader hands leadership over to this node (openraft's transfer).
async fn transfer_leader(State(s): State<InternalState>, body: Bytes) -> Response {
    rpc(&s, RaftRpc::TransferLeader, &body).await
}

/// A whole snapshot, streamed to disk as it arrives (never held in memory,
/// so the RPC body limit does not apply to it).
async fn snapshot(State(s): State<InternalState>, body: Body) -> Response {
    answer(s.replica.serve_snapshot(body.into_data_stream()).await)
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
        Ok(op) => Json(s.replica.accept_forwarded(op).await).into_response(),
        Err(e) => bad_rpc(e),
    }
}

/// The removed node ids this node has applied: how a node that gossip says
/// was removed confirms it with a cluster member (gossip is unauthenticated).
async fn retired(State(s): State<InternalState>) -> Json<Vec<NodeId>> {
    Json(s.reader.retired().into_iter().collect())
}

async fn read_index(State(s): State<InternalState>) -> Response {
    Json(s.replica.read_index().await).into_response()
}

pub fn router(state: InternalState) -> Router {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_PRE_VOTE, post(pre_vote))
        .route(PATH_TRANSFER_LEADER, post(transfer_leader))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_IDENTITY, get(identity))
        .route(PATH_READ_INDEX, post(read_index))
        .route(PATH_PROPOSE, post(propose))
        .route(crate::membership::driver::PATH_RETIRED, get(retired))
        .layer(middleware::from_fn_with_state(state.clone(), check_peer))
        .layer(DefaultBodyLimit::max(RPC_BODY_MAX))
        .with_state(state)
}
