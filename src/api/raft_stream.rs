//! The receiving end of the Raft stream (`raft::frame`): a connection on the
//! Raft port that negotiated the stream's ALPN is served here instead of by
//! HTTP. The TLS layer has already required a node certificate of our CA;
//! each request frame still names its target node and cluster, checked as
//! the HTTP routes check their headers (see `internal::check_peer`).

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::internal::InternalState;
use crate::raft::frame::{self, Kind, Status};
use crate::raft::stream::{read_frame, write_frame, StreamError};
use crate::replica::{RaftRpc, RpcError};

/// Serves request frames one at a time until the peer closes the connection,
/// sends something that is not a frame, or the node shuts down. Idle and
/// connection-count limits are the Raft port's (the stream is a `Limited`
/// connection like any other there).
pub async fn serve<S>(state: InternalState, mut io: S, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let read = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            read = read_frame(&mut io, frame::FRAME_MAX) => read,
        };
        let (answer, close) = match read {
            Ok(Some(request)) => (answer(&state, &request).await, false),
            Ok(None) => return,
            // Say why before closing: an operator reading the sender's log
            // learns more than "connection reset".
            Err(StreamError::Frame(e)) => {
                (reply(Status::Malformed, e.to_string().as_bytes()), true)
            }
            Err(e) => {
                tracing::debug!(error = %e, "raft stream closed");
                return;
            }
        };
        let Some(answer) = answer else { return };
        if write_frame(&mut io, &answer).await.is_err() || close {
            return;
        }
    }
}

/// The response frame to one request frame (`None`: it cannot be framed,
/// which only an answer over the frame limit could cause).
async fn answer(state: &InternalState, request: &[u8]) -> Option<Vec<u8>> {
    let request = match frame::decode_request(request) {
        Ok(request) => request,
        Err(e) => return reply(Status::Malformed, e.to_string().as_bytes()),
    };
    let target = request.target.to_string();
    let cluster = std::str::from_utf8(request.cluster).ok();
    // Only a leader sends appends, to a member it added after checking its
    // identity: a node without a cluster yet adopts that one's UUID.
    let may_adopt = request.kind == Kind::Append;
    if let Err(refusal) =
        state.peer.identity().check_named(Some(&target), cluster, may_adopt, false)
    {
        state.peer.note_refused(&refusal);
        let body = format!("{}\n{refusal}", refusal.code());
        return reply(Status::Refused, body.as_bytes());
    }
    let rpc = match request.kind {
        Kind::Append => RaftRpc::Append,
        Kind::Vote => RaftRpc::Vote,
        Kind::PreVote => RaftRpc::PreVote,
        Kind::TransferLeader => RaftRpc::TransferLeader,
    };
    match state.replica.serve_rpc(rpc, request.body).await {
        Ok(json) => reply(Status::Answer, &json),
        Err(RpcError::Malformed(e)) => reply(Status::Malformed, e.as_bytes()),
        Err(e @ (RpcError::Encode(_) | RpcError::Store(_))) => {
            reply(Status::Failed, e.to_string().as_bytes())
        }
    }
}

fn reply(status: Status, body: &[u8]) -> Option<Vec<u8>> {
    match frame::response(status, body) {
        Ok(frame) => Some(frame),
        Err(e) => {
            tracing::error!(error = %e, "a raft stream answer does not fit a frame");
            None
        }
    }
}
