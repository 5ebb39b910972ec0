//! The facade over Raft: the one owner of this node's Raft handle that the
//! rest of the node talks to.
//!
//! ```text
//!  api / maze_net / membership driver / node::disk
//!        │ propose · submit · linearizable · transfer · remove_node · view
//!        ▼
//!  Replica ── leader routing: here, 307 (api maps NotLeader), or forward
//!        │     over the Raft port (/internal/propose, /internal/read-index)
//!        ▼
//!  Proposer (group commit; disk watermark and transfer pause) ─▶ openraft
//!     ▲ (the leader's compactor proposes here directly)
//! ```
//!
//! What it owns:
//! - proposals: [`Replica::propose`] (leader only, for HTTP clients that a
//!   307 can send elsewhere) and [`Replica::submit`] (from any node,
//!   forwarded to the leader, for internal producers), both through the
//!   [`Proposer`] and its write gates;
//! - leader routing: the redirect decision ([`NotLeader`]), forwarding, and
//!   the read index ([`Replica::linearizable`]);
//! - leadership transfer ([`transfer`]) and operator membership changes
//!   ([`members`]), under one membership lock shared with the autopilot;
//! - metrics snapshots as plain types ([`RaftView`]).
//!
//! Every error it returns is a raftq enum; `api::error` picks the status
//! codes. Above it, only `node` (which builds Raft and shuts it down) still
//! holds the Raft handle; `api`, `maze_net` and the membership driver name
//! no openraft type.

pub mod forward;
pub mod members;
pub mod read;
pub mod transfer;
pub mod view;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use openraft::async_runtime::WatchReceiver;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use tokio::io::AsyncWriteExt;

use crate::maze::MazeLimits;
use crate::raft::network::decode_snapshot_header;
use crate::raft::peer::PeerClient;
use crate::raft::snapshot::SnapshotFile;
use crate::raft::types::{Node, NodeId, Op, Raft, Reply, Snapshot, TypeConfig};
pub use crate::raft::{ProposeError, Proposer};
pub use read::ReadError;
pub use view::{RaftView, Role};

/// How long a client's write may wait for commit before the client is told
/// the outcome is unknown (e.g. a leader cut off from its quorum).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// This node is not the leader: a client write goes to `leader` (a 307),
/// or nowhere while no leader is known (a 503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not the leader")]
pub struct NotLeader {
    pub leader: Option<(NodeId, Node)>,
}

impl NotLeader {
    /// The leader's public API URL, if one is known.
    pub fn leader_api_url(&self) -> Option<String> {
        self.leader.as_ref().map(|(_, node)| node.api_url())
    }
}

impl From<NotLeader> for ProposeError {
    fn from(e: NotLeader) -> Self {
        ProposeError::NotLeader { leader: e.leader }
    }
}

/// A Raft RPC this node could not serve.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("malformed rpc: {0}")]
    Malformed(String),
    #[error("encoding the answer: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("storing the snapshot: {0}")]
    Store(#[from] std::io::Error),
}

/// Which Raft RPC arrived on the Raft port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftRpc {
    Append,
    Vote,
    PreVote,
    /// The leader hands leadership to this node (openraft's transfer).
    TransferLeader,
}

/// The Raft library's types that tests above the facade need to drive a
/// state machine directly (e.g. `api::watch`'s tests).
#[cfg(test)]
pub(crate) mod testing {
    pub use crate::raft::types::{EntryPayload, LeaderId};
}

/// What a [`Replica`] is built from.
pub struct ReplicaParts {
    pub node_id: NodeId,
    pub raft: Raft,
    pub proposer: Proposer,
    /// mTLS client for node-to-node calls (forwarding, read index, transfer).
    pub peer_client: PeerClient,
    /// Bounds a leader applies to forwarded maze batches.
    pub maze_limits: MazeLimits,
    /// At most one leadership transfer per this interval.
    pub transfer_min_interval: Duration,
    /// Where received snapshots are written (the state machine's dir).
    pub snapshot_dir: std::path::PathBuf,
}

/// The facade; cheap to clone (one shared inside).
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    raft: Raft,
    proposer: Proposer,
    peer_client: PeerClient,
    maze_limits: MazeLimits,
    /// When the last leadership transfer started, and the least interval.
    last_transfer: Mutex<Option<std::time::Instant>>,
    transfer_min_interval: Duration,
    snapshot_dir: std::path::PathBuf,
    /// Held by an operator's removal and by each autopilot change, so the
    /// 3-voter floor is checked against the membership the change applies to.
    membership_lock: tokio::sync::Mutex<()>,
}

impl Replica {
    pub fn new(parts: ReplicaParts) -> Self {
        Replica {
            inner: Arc::new(Inner {
                node_id: parts.node_id,
                raft: parts.raft,
                proposer: parts.proposer,
                peer_client: parts.peer_client,
                maze_limits: parts.maze_limits,
                last_transfer: Mutex::new(None),
                transfer_min_interval: parts.transfer_min_interval,
                snapshot_dir: parts.snapshot_dir,
                membership_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// This node's Raft state now.
    pub fn view(&self) -> RaftView {
        RaftView::from_metrics(&self.inner.raft.metrics().borrow_watched())
    }

    /// The UUID of the cluster this node belongs to, once it has one.
    pub fn cluster_uuid(&self) -> Option<String> {
        self.inner.peer_client.identity().uuid()
    }

    /// The commit index this node knows (Raft's, not the applied one).
    pub async fn commit_index(&self) -> Option<u64> {
        self.inner
            .raft
            .with_raft_state(|s| s.local_committed().map(|c| c.index))
            .await
            .ok()
            .flatten()
    }

    /// Client writes go to the leader: `Ok` here, else where to send them.
    pub fn route_write(&self) -> Result<(), NotLeader> {
        let view = self.view();
        if view.is_leader() {
            Ok(())
        } else {
            Err(NotLeader { leader: view.leader().map(|(id, node)| (id, node.clone())) })
        }
    }

    /// A client's write: on the leader only (elsewhere [`NotLeader`], for a
    /// redirect), through the proposer, bounded by a commit timeout.
    pub async fn propose(&self, op: Op) -> Result<Reply, ProposeError> {
        self.route_write()?;
        self.inner.proposer.propose_within(op, Some(WRITE_TIMEOUT)).await
    }

    /// Serves one Raft RPC that arrived on the Raft port: decodes `body`,
    /// hands it to Raft, and returns Raft's answer (an error included: the
    /// sender's openraft reads it) as JSON.
    pub async fn serve_rpc(&self, rpc: RaftRpc, body: &[u8]) -> Result<Vec<u8>, RpcError> {
        let malformed = |e: &dyn std::fmt::Display| RpcError::Malformed(e.to_string());
        let raft = &self.inner.raft;
        Ok(match rpc {
            RaftRpc::Append => {
                let req: AppendEntriesRequest<TypeConfig> =
                    serde_json::from_slice(body).map_err(|e| malformed(&e))?;
                serde_json::to_vec(&raft.append_entries(req).await)?
            }
            RaftRpc::Vote => {
                let req: VoteRequest<TypeConfig> =
                    serde_json::from_slice(body).map_err(|e| malformed(&e))?;
                serde_json::to_vec(&raft.vote(req).await)?
            }
            RaftRpc::PreVote => {
                let req: VoteRequest<TypeConfig> =
                    serde_json::from_slice(body).map_err(|e| malformed(&e))?;
                serde_json::to_vec(&raft.pre_vote(req).await)?
            }
            RaftRpc::TransferLeader => {
                let req: TransferLeaderRequest<TypeConfig> =
                    serde_json::from_slice(body).map_err(|e| malformed(&e))?;
                let res =
                    raft.handle_transfer_leader(req).await.map_err(RaftError::<TypeConfig>::Fatal);
                serde_json::to_vec(&res)?
            }
        })
    }

    /// Serves a snapshot the leader streams (see `raft::network`): the
    /// header, then the file, written to a temp file in the snapshot dir
    /// as it arrives; then Raft installs it. Returns Raft's answer as JSON.
    pub async fn serve_snapshot<S, E>(&self, mut body: S) -> Result<Vec<u8>, RpcError>
    where
        S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut head = Vec::new();
        let header = loop {
            match decode_snapshot_header(&head).map_err(RpcError::Malformed)? {
                Some((header, used)) => {
                    head.drain(..used);
                    break header;
                }
                None => match body.next().await {
                    Some(chunk) => head
                        .extend_from_slice(&chunk.map_err(|e| RpcError::Malformed(e.to_string()))?),
                    None => return Err(RpcError::Malformed("snapshot header cut short".into())),
                },
            }
        };
        let mut file = SnapshotFile::receive_into(&self.inner.snapshot_dir)?;
        file.write_all(&head).await?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| RpcError::Malformed(format!("snapshot body: {e}")))?;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        let snapshot = Snapshot { meta: header.meta, snapshot: file };
        let res = self
            .inner
            .raft
            .install_full_snapshot(header.vote, snapshot)
            .await
            .map_err(RaftError::<TypeConfig>::Fatal);
        Ok(serde_json::to_vec(&res)?)
    }
}
