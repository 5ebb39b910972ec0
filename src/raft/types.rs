//! The openraft type configuration. What a log entry carries and what
//! applying it answers are the replicated core's types (`sm::command`),
//! re-exported here.

pub use crate::sm::{
    Entry, EntryPayload, LeaderId, LogId, Membership, Node, NodeId, Op, Reply, Request, Response,
    StoredMembership,
};

openraft::declare_raft_types!(
    /// raftq's openraft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = Node,
        LeaderId = LeaderId,
        Entry = Entry,
);

pub type Raft = openraft::Raft<TypeConfig, super::state_machine::StateMachine>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
// A file, never a buffer: see `snapshot::lifecycle`.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, super::snapshot::SnapshotFile>;
pub type StorageError = openraft::StorageError<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
