//! How openraft is wired into raftq.
//!
//! ```text
//!  replica ──propose(cmd)──▶ Proposer ──one entry per batch──▶ openraft core
//!                                                                  │ append (LogStore, fsync)
//!                                                                  │ replicate (network, mTLS)
//!                                                                  ▼ commit
//!  api reads ◀── SmReader ◀── StateMachine::apply (sm::Core) ◀── committed entries
//! ```
//!
//! - [`types`]: the type config; a log entry is a *batch* of queue commands.
//! - [`log_store`] / [`state_machine`]: RocksDB storage, one DB per node;
//!   the state machine is a thin adapter of the pure core (`crate::sm`),
//!   [`snapshot`] holds the snapshot format and lifecycle, [`keys`] the
//!   layout and the encoding of the core's writes.
//! - [`dump`]: a stopped node's state, for `raftq dump`.
//! - [`network`]: outgoing RPC; the receiving side is `api::internal`
//!   (through `Replica::serve_rpc`).
//! - [`Proposer`]: group commit: concurrent writes are gathered into one
//!   entry (one log record, one apply, one replication message).
//!   Every write passes it, with its two gates (disk, transfer pause).
//! - [`compactor`]: the leader's retention task (bytes and age).
//! - [`sweeper`]: the leader's work-queue task (dead letters, delays).
//!
//! The rest of the node reaches Raft through the facade in
//! [`crate::replica`] (leader routing, read index, transfer, membership).

pub mod backup;
pub mod compactor;
pub mod db;
pub mod dump;
pub mod frame;
pub mod keys;
pub mod log_store;
pub mod network;
pub mod peer;
pub mod peer_check;
mod proposer;
pub mod snapshot;
pub mod state_machine;
pub mod stream;
pub mod sweeper;
pub mod types;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use proposer::{unix_ms, ProposeError, Proposer, WritesHeld};
pub use types::{Node, NodeId, Raft};

/// Raft timing and log-compaction settings of a node.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    /// Snapshot (and purge the log behind it) every this many entries.
    pub snapshot_logs: u64,
}

impl RaftSettings {
    /// openraft's `election_timeout_max`: elections time out in `[t, 2t)`.
    fn election_timeout_max_ms(&self) -> u64 {
        self.election_timeout_ms.saturating_mul(2)
    }

    /// How long a leader may go without a quorum's acknowledgement before
    /// the writes it holds fail fast (see `Proposer`): openraft's leader
    /// lease (`election_timeout_max`), after which the followers vote for
    /// another leader and openraft refuses new writes here too.
    pub fn quorum_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.election_timeout_max_ms())
    }

    /// How long a write that reaches a node knowing no live leader waits
    /// for one to be elected before it is answered (`503`, or a 307 to the
    /// silent leader). openraft starts an election once the leader's lease
    /// (`election_timeout_max`) and then an election timeout (`[t, 2t)`)
    /// have passed since the last heartbeat: at most two of the longest
    /// election timeouts; one more covers the vote and a retry after a
    /// split vote. A client (`curl -L` has no retry) is then sent to the new
    /// leader with a 307 instead of polling through an election.
    pub fn leader_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.election_timeout_max_ms().saturating_mul(3))
    }

    /// How long a follower may go without hearing from its leader before a
    /// client write stops being redirected to it (see
    /// `Replica::propose`): two heartbeats, so one late heartbeat on a busy
    /// machine only holds a write until the next one.
    pub fn leader_silence(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.heartbeat_ms.saturating_mul(2))
    }

    /// How long a follower may go without hearing from its leader, or a
    /// leader without a quorum's acknowledgement, before `/readyz` takes it
    /// out of rotation: the RPC timeout (at least a second), so that a busy
    /// moment does not make readiness flap.
    pub fn contact_limit(&self) -> std::time::Duration {
        self.rpc_timeout_min()
    }

    /// The least time any Raft RPC gets (see `network::Connection`): at
    /// least a second, since openraft sends heartbeats apart from
    /// replication, a slow AppendEntries does not delay them.
    pub fn rpc_timeout_min(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.election_timeout_max_ms().max(1000))
    }
}

/// Builds openraft's config. Timeouts are tuned for sub-second failover on a
/// LAN; the election timeout is randomised in `[t, 2t)` to avoid split votes.
pub fn config(
    cluster_id: &str,
    settings: &RaftSettings,
) -> Result<Arc<openraft::Config>, Box<openraft::ConfigError>> {
    let config = openraft::Config {
        cluster_name: cluster_id.to_string(),
        heartbeat_interval: settings.heartbeat_ms,
        election_timeout_min: settings.election_timeout_ms,
        election_timeout_max: settings.election_timeout_max_ms(),
        // A whole snapshot is one streamed request: give it minutes.
        install_snapshot_timeout: 300_000,
        // An entry carries up to ~256 KiB; cap one AppendEntries at ~1 MiB
        // so that it stays well within its timeout (`network::Connection`).
        max_payload_entries: 4,
        // A follower asks the others whether it could win before it bumps
        // its term: a node cut off for a while does not depose a healthy
        // leader when it comes back.
        enable_pre_vote: Some(true),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_logs.max(1)),
        // Keep some log behind the snapshot so a briefly lagging follower
        // catches up by log instead of by a new snapshot.
        max_in_snapshot_log_to_keep: (settings.snapshot_logs / 2).min(10_000),
        replication_lag_threshold: settings.snapshot_logs.max(1) * 2,
        purge_batch_size: 64,
        ..Default::default()
    };
    Ok(Arc::new(config.validate().map_err(Box::new)?))
}
