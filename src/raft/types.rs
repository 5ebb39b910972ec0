//! The openraft type configuration. What a log entry carries and what
//! applying it answers are the replicated core's types (`sm::command`),
//! re-exported here.

pub use crate::sm::{LogId, Node, NodeId, Op, Reply, Request, Response, StoredMembership};

openraft::declare_raft_types!(
    /// raftq's openraft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        // A file, never a buffer: see `snapshot::lifecycle`.
        SnapshotData = super::snapshot::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;
