//! Raft RPC between nodes: TLS with client certificates on the Raft port.
//!
//! Append, vote, pre-vote and transfer-leader travel as JSON in frames on
//! one long-lived connection per peer (`raft::frame`, `raft::stream`); to a
//! peer that does not negotiate that stream (an older build, or one under
//! `--raft-transport https`, which also never dials it), they fall
//! back to one HTTPS request each. A snapshot
//! travels as one streamed request carrying its bytes raw (a u32 header
//! length, the JSON header, then the file): JSON would turn the data into a
//! number array three to four times its size, and the file is never held in
//! memory on either side.
//!
//! Errors are sorted the way openraft needs: a peer that cannot be reached is
//! `Unreachable` (openraft backs off instead of retrying hot), any other
//! transport failure is `Network`, and an error the peer's Raft returned is a
//! `RemoteError`.

use std::future::Future;

use futures_util::StreamExt;
use openraft::error::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::frame::{self, Kind, Status};
use super::peer::PeerClient;
use super::snapshot::SnapshotFile;
use super::stream::{Dialer, Pool, StreamError};
use super::types::{Node, NodeId, Snapshot, SnapshotMeta, TypeConfig, Vote};

pub const PATH_APPEND: &str = "/raft/append";
pub const PATH_VOTE: &str = "/raft/vote";
pub const PATH_PRE_VOTE: &str = "/raft/pre-vote";
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";
pub const PATH_TRANSFER_LEADER: &str = "/raft/transfer-leader";

/// Most bytes of a snapshot request's JSON header (vote and meta).
pub const SNAPSHOT_HEADER_MAX: usize = 1 << 20;

/// RPCs sent, by transport (`raftq_raft_rpcs_sent_total`).
#[derive(Clone)]
pub struct SentCounters {
    pub stream: prometheus::IntCounter,
    pub https: prometheus::IntCounter,
}

impl SentCounters {
    /// The two series of `raftq_raft_rpcs_sent_total`.
    pub fn new(by_transport: &prometheus::IntCounterVec) -> Self {
        SentCounters {
            stream: by_transport.with_label_values(&["stream"]),
            https: by_transport.with_label_values(&["https"]),
        }
    }
}

/// Creates one [`Connection`] per peer. Every request names the cluster and
/// the target node; the HTTPS requests share one pooled client.
#[derive(Clone)]
pub struct Network {
    client: PeerClient,
    sent: SentCounters,
    /// `None` under [`RaftTransport::Https`]: never dial the stream.
    stream_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pool: Pool,
    min_timeout: std::time::Duration,
}

impl Network {
    /// `min_timeout` is the least time any RPC gets (see [`Connection`]);
    /// `stream_tls` offers the Raft stream's ALPN
    /// (`tls::TlsMaterial::raft_stream_client_config`), and `None` sends
    /// every RPC as HTTPS.
    pub fn new(
        client: PeerClient,
        stream_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        min_timeout: std::time::Duration,
        sent: SentCounters,
    ) -> Self {
        Network { client, sent, stream_tls, pool: Pool::default(), min_timeout }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection {
        Connection {
            client: self.client.clone(),
            sent: self.sent.clone(),
            target,
            base: node.raft_url(),
            min_timeout: self.min_timeout,
            stream: self
                .stream_tls
                .as_ref()
                .map(|tls| Dialer::new(tls.clone(), node.raft_addr.clone(), self.pool.clone())),
            legacy: false,
        }
    }
}

/// RPCs to one peer. openraft 0.10 hands every AppendEntries of a
/// replication stream the heartbeat interval as its time to live; taken
/// literally, a short heartbeat would time out large batches on a busy
/// machine and retry them forever. Each RPC gets at least `min_timeout`
/// (`RaftSettings::rpc_timeout_min`); liveness does not depend on it, since
/// heartbeats travel apart from the replication stream.
pub struct Connection {
    client: PeerClient,
    sent: SentCounters,
    target: NodeId,
    base: String,
    min_timeout: std::time::Duration,
    /// `None`: this node sends HTTPS only (`RaftTransport::Https`).
    stream: Option<Dialer>,
    /// The peer did not negotiate the Raft stream: send HTTPS requests until
    /// one fails, then try the stream again (the peer may have been upgraded).
    legacy: bool,
}

/// What a snapshot request carries before the file's bytes.
#[derive(Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub vote: Vote,
    pub meta: SnapshotMeta,
}

/// Frames the start of a snapshot request: the header's length and the header.
pub fn encode_snapshot_header(header: &SnapshotHeader) -> Result<Vec<u8>, serde_json::Error> {
    let json = serde_json::to_vec(header)?;
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// Unframes the start of a snapshot request from `buf`: the header and how
/// many bytes of `buf` it took, `Ok(None)` while more bytes are needed, an
/// error for a malformed or oversized header.
pub fn decode_snapshot_header(buf: &[u8]) -> Result<Option<(SnapshotHeader, usize)>, String> {
    let Some(len) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > SNAPSHOT_HEADER_MAX {
        return Err(format!("snapshot header of {len} bytes"));
    }
    let Some(json) = buf.get(4..4 + len) else { return Ok(None) };
    let header = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    Ok(Some((header, 4 + len)))
}

impl Connection {
    async fn send(
        &self,
        path: &str,
        body: reqwest::Body,
        content_type: &'static str,
        option: &RPCOption,
    ) -> Result<bytes::Bytes, RPCError<TypeConfig>> {
        let request = self
            .client
            .post(self.target, &format!("{}{}", self.base, path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .timeout(option.hard_ttl().max(self.min_timeout))
            .body(body);
        let response = self.client.send(self.target, request).await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let msg = String::from_utf8_lossy(&bytes).into_owned();
            let err = std::io::Error::other(format!("peer answered {status}: {msg}"));
            return Err(RPCError::Network(NetworkError::new(&err)));
        }
        Ok(bytes)
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        kind: Kind,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        if let (false, Some(stream)) = (self.legacy, self.stream.as_mut()) {
            let timeout = option.hard_ttl().max(self.min_timeout);
            let called =
                stream_call(&self.client, stream, self.target, &self.base, kind, req, timeout)
                    .await;
            // Counted once a frame may have left: not a peer that refused
            // the stream or could not be reached.
            if !matches!(called, Err(StreamError::NotSpoken | StreamError::Connect(_))) {
                self.sent.stream.inc();
            }
            match called {
                Ok(bytes) => return decode_answer(&bytes),
                Err(StreamError::NotSpoken) => {
                    tracing::info!(
                        peer = self.target,
                        "the peer does not speak the raft stream (an older build, or `--raft-transport https`): using HTTPS"
                    );
                    self.legacy = true;
                }
                Err(e @ StreamError::Connect(_)) => {
                    return Err(RPCError::Unreachable(Unreachable::new(&e)))
                }
                Err(e) => return Err(network_error(&e)),
            }
        }
        let body = serde_json::to_vec(req).map_err(|e| network_error(&e))?;
        self.sent.https.inc();
        let sent = self.send(path, body.into(), "application/json", option).await;
        if sent.is_err() {
            self.legacy = false;
        }
        decode_answer(&sent?)
    }
}

/// One RPC on the Raft stream to `target` (at `base` for the HTTPS routes):
/// the JSON answer's bytes, or why not. A free function so that it can
/// borrow the connection's dialer mutably beside its client.
async fn stream_call<Req: Serialize>(
    client: &PeerClient,
    stream: &mut Dialer,
    target: NodeId,
    base: &str,
    kind: Kind,
    req: &Req,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, StreamError> {
    let uuid = client.identity().uuid().unwrap_or_default();
    let mut buf = frame::begin_request(kind, target, &uuid)?;
    serde_json::to_writer(&mut buf, req).map_err(|e| StreamError::Io(e.into()))?;
    let request = frame::finish(buf)?;
    let mut answer = stream.exchange(&request, timeout).await?;
    let (status, body) = frame::decode_response(&answer)?;
    match status {
        Status::Answer => {
            answer.drain(..1);
            Ok(answer)
        }
        Status::Refused => {
            let text = String::from_utf8_lossy(body);
            let (code, why) = text.split_once('\n').unwrap_or((&text, ""));
            client.note_refused_by_peer(target, code, base);
            Err(StreamError::Io(std::io::Error::other(format!("peer refused ({code}): {why}"))))
        }
        Status::Malformed | Status::Failed => Err(StreamError::Io(std::io::Error::other(format!(
            "peer answered {status:?}: {}",
            String::from_utf8_lossy(body)
        )))),
    }
}

fn network_error<E: std::error::Error + 'static>(e: &E) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(e))
}

/// The peer's JSON answer, `Result<Resp, RaftError>`, as openraft wants it.
fn decode_answer<Resp: DeserializeOwned>(bytes: &[u8]) -> Result<Resp, RPCError<TypeConfig>> {
    let result: Result<Resp, RaftError<TypeConfig>> =
        serde_json::from_slice(bytes).map_err(|e| network_error(&e))?;
    // The peer's Raft refused (e.g. it is shutting down): to this node's
    // replication that is a peer it cannot use now, and it backs off.
    result.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Kind::Append, PATH_APPEND, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Kind::Vote, PATH_VOTE, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Kind::PreVote, PATH_PRE_VOTE, &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header = SnapshotHeader { vote, meta: snapshot.meta };
        let head = encode_snapshot_header(&header)
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let file = tokio_util::io::ReaderStream::new(snapshot.snapshot);
        let stream =
            futures_util::stream::once(async move { Ok(bytes::Bytes::from(head)) }).chain(file);
        let body = reqwest::Body::wrap_stream(stream);
        let send = async {
            let bytes = self.send(PATH_SNAPSHOT, body, "application/octet-stream", &option).await?;
            decode_answer::<SnapshotResponse<TypeConfig>>(&bytes)
        };
        tokio::pin!(cancel);
        tokio::select! {
            closed = &mut cancel => Err(StreamingError::Closed(closed)),
            res = send => res.map_err(|e| match e {
                RPCError::Timeout(e) => StreamingError::Timeout(e),
                RPCError::Unreachable(e) => StreamingError::Unreachable(e),
                RPCError::Network(e) => StreamingError::Network(e),
                RPCError::RemoteError(e) => StreamingError::Network(NetworkError::new(&e)),
            }),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Kind::TransferLeader, PATH_TRANSFER_LEADER, &req, &option).await
    }
}
