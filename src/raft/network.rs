//! Raft RPC between nodes: HTTPS with client certificates on the Raft port.
//!
//! Append and vote travel as JSON. Snapshot chunks carry their bytes raw
//! (a u32 header length, the JSON header, then the data): JSON would turn the
//! data into a number array three to four times its size.
//!
//! Errors are sorted the way openraft needs: a peer that cannot be reached is
//! `Unreachable` (openraft backs off instead of retrying hot), any other
//! transport failure is `Network`, and an error the peer's Raft returned is a
//! `RemoteError`.

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::peer::PeerClient;
use super::types::{Node, NodeId, SnapshotMeta, TypeConfig, Vote};

pub const PATH_APPEND: &str = "/raft/append";
pub const PATH_VOTE: &str = "/raft/vote";
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";

/// Creates one [`Connection`] per peer; all share one pooled HTTPS client,
/// which names the cluster and the target node on every request.
#[derive(Clone)]
pub struct Network {
    client: PeerClient,
}

impl Network {
    pub fn new(client: PeerClient) -> Self {
        Network { client }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection {
        Connection { client: self.client.clone(), target, base: node.raft_url() }
    }
}

pub struct Connection {
    client: PeerClient,
    target: NodeId,
    base: String,
}

/// Everything of a snapshot chunk but its data.
#[derive(Serialize, Deserialize)]
pub struct SnapshotChunkHeader {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub done: bool,
}

/// Frames a snapshot chunk for the wire.
pub fn encode_snapshot_chunk(
    req: InstallSnapshotRequest<TypeConfig>,
) -> Result<Vec<u8>, serde_json::Error> {
    let header =
        SnapshotChunkHeader { vote: req.vote, meta: req.meta, offset: req.offset, done: req.done };
    let header = serde_json::to_vec(&header)?;
    let mut body = Vec::with_capacity(4 + header.len() + req.data.len());
    body.extend_from_slice(&(header.len() as u32).to_be_bytes());
    body.extend_from_slice(&header);
    body.extend_from_slice(&req.data);
    Ok(body)
}

/// Unframes a snapshot chunk; `None` for a malformed body.
pub fn decode_snapshot_chunk(body: &[u8]) -> Option<InstallSnapshotRequest<TypeConfig>> {
    let len = u32::from_be_bytes(body.get(..4)?.try_into().ok()?) as usize;
    let header_end = 4usize.checked_add(len)?;
    let header: SnapshotChunkHeader = serde_json::from_slice(body.get(4..header_end)?).ok()?;
    Some(InstallSnapshotRequest {
        vote: header.vote,
        meta: header.meta,
        offset: header.offset,
        data: body.get(header_end..)?.to_vec(),
        done: header.done,
    })
}

impl Connection {
    async fn call<Resp, E>(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &'static str,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let request = self
            .client
            .post(self.target, &format!("{}{}", self.base, path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .timeout(option.hard_ttl())
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
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn encode_err<E: std::error::Error>(
    e: serde_json::Error,
) -> RPCError<NodeId, Node, RaftError<NodeId, E>> {
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let body = serde_json::to_vec(&rpc).map_err(encode_err)?;
        self.call(PATH_APPEND, body, "application/json", &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let body = encode_snapshot_chunk(rpc).map_err(encode_err)?;
        self.call(PATH_SNAPSHOT, body, "application/octet-stream", &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let body = serde_json::to_vec(&rpc).map_err(encode_err)?;
        self.call(PATH_VOTE, body, "application/json", &option).await
    }
}
