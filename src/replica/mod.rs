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

mod contact;
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
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, VoteRequest,
};
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
    /// How long a client write waits for a leader to be elected when this
    /// node knows none or its leader has gone silent (see
    /// [`Replica::propose`]).
    pub leader_wait: Duration,
    /// How long a leader may go unheard before it counts as silent.
    pub leader_silence: Duration,
    /// How long a follower may go without its leader, or a leader without
    /// its quorum, and still count as ready (`/readyz`).
    pub contact_limit: Duration,
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
    leader_wait: Duration,
    /// A leader not heard from for this long is taken for dead by a write
    /// deciding where to go (see [`Replica::propose`]).
    leader_silence: Duration,
    contact: contact::LeaderContact,
    contact_limit: Duration,
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
                leader_wait: parts.leader_wait,
                leader_silence: parts.leader_silence,
                contact: contact::LeaderContact::new(),
                contact_limit: parts.contact_limit,
                membership_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// This node's Raft state now.
    pub fn view(&self) -> RaftView {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        let mut view = RaftView::from_metrics(&m);
        // The pure view reads no clock; the age of the quorum's last
        // acknowledgement is taken here.
        if m.state == openraft::ServerState::Leader {
            view.quorum_acked_ms = m.last_quorum_acked.as_ref().map(|at| {
                u64::try_from(openraft::Instant::elapsed(&**at).as_millis()).unwrap_or(u64::MAX)
            });
        }
        view
    }

    /// How long ago this node last accepted an AppendEntries from a leader
    /// (`None` on the leader, or before the first); `view` is this node's
    /// current [`RaftView`], which the caller has already built.
    pub fn leader_contact(&self, view: &RaftView) -> Option<Duration> {
        if view.is_leader() {
            None
        } else {
            self.inner.contact.since()
        }
    }

    /// Why this node should not take traffic now, as far as its contact
    /// with the rest of the cluster goes: a leader that no quorum has
    /// acknowledged, or a follower that has not heard from its leader, for
    /// longer than `contact_limit` (both are on the minority side of a
    /// partition, or alone).
    pub fn out_of_contact(&self) -> Option<&'static str> {
        let view = self.view();
        let limit = self.inner.contact_limit;
        if view.is_leader() {
            view.leader_cut_off(limit).then_some("this leader has lost contact with its quorum")
        } else if view.leader_id.is_some() && !self.inner.contact.heard_within(limit) {
            Some("no contact with the leader")
        } else {
            None
        }
    }

    /// The UUID of the cluster this node belongs to, once it has one.
    pub fn cluster_uuid(&self) -> Option<String> {
        self.inner.peer_client.identity().uuid()
    }

    /// openraft's runtime statistics as a human-readable table: batch
    /// sizes, command and message counts, and the latency of each stage
    /// of the last log entries written here (proposed, received,
    /// submitted, persisted, committed, applied). `None` once Raft has
    /// stopped.
    pub async fn raft_stats(&self) -> Option<String> {
        let stats = self.inner.raft.runtime_stats().await.ok()?;
        Some(stats.display().human_readable().to_string())
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
    ///
    /// During a failover the write first waits (up to `leader_wait`) for
    /// its end: on a node that knows no leader (an election is under way),
    /// or whose leader has gone silent (no AppendEntries for
    /// `leader_silence`: most likely dead, and a redirect to it would end in
    /// a refused connection). Then it is proposed here if this node won, or
    /// redirected to the winner: a client sees one 307 to the new leader
    /// instead of errors to back off from. (A leader that refuses writes,
    /// e.g. one cut off from its quorum, answers at once: waiting could not
    /// help it.)
    ///
    /// A leader just elected may still refuse a write before appending it
    /// (openraft's `ForwardToLeader` naming no leader): the write is then
    /// proposed again at the next change of Raft state, within the same
    /// `leader_wait`. A leader that has not heard from its quorum for
    /// longer than `leader_silence` is refused at once instead.
    pub async fn propose(&self, op: Op) -> Result<Reply, ProposeError> {
        let deadline = tokio::time::Instant::now() + self.inner.leader_wait;
        loop {
            self.route_write_after_failover(deadline).await?;
            let mut metrics = self.inner.raft.metrics();
            let answer = self.inner.proposer.propose_within(op.clone(), Some(WRITE_TIMEOUT)).await;
            if !matches!(answer, Err(ProposeError::NotLeader { leader: None })) {
                return answer;
            }
            let heard_lately = self
                .view()
                .quorum_acked_ms
                .is_none_or(|ms| u128::from(ms) <= self.inner.leader_silence.as_millis());
            if !heard_lately {
                return answer;
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return answer,
            }
        }
    }

    /// [`Replica::route_write`] once the leader is known and alive, or at
    /// `deadline` whatever it is then.
    async fn route_write_after_failover(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(), NotLeader> {
        let mut metrics = self.inner.raft.metrics();
        loop {
            let contact = self.inner.contact.next();
            tokio::pin!(contact);
            contact.as_mut().enable();
            let routed = self.route_write();
            let settled = match &routed {
                Ok(()) => true,
                Err(NotLeader { leader: Some(_) }) => {
                    self.inner.contact.heard_within(self.inner.leader_silence)
                }
                Err(NotLeader { leader: None }) => false,
            };
            if settled {
                return routed;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return self.route_write(),
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return self.route_write();
                    }
                }
                _ = contact => {}
            }
        }
    }

    /// An AppendEntries from the leader was accepted here.
    fn leader_heard(&self) {
        self.inner.contact.touch();
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
                let answer = raft.append_entries(req).await;
                if matches!(&answer, Ok(a) if !matches!(a, AppendEntriesResponse::HigherVote(_))) {
                    self.leader_heard();
                }
                serde_json::to_vec(&answer)?
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
