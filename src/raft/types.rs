//! The openraft type configuration. What a log entry carries and what
//! applying it answers are the replicated core's types (`sm::command`),
//! re-exported here.

pub use crate::sm::{
    Entry, EntryPayload, LeaderId, LogId, Membership, Node, NodeId, Op, Reply, Request, Response,
    StoredMembership,
};

/// raftq's openraft type configuration. Written out rather than declared
/// with `openraft::declare_raft_types!`, which cannot name a generic
/// `Responder<T>`: ours is a callback (see `proposer::CallbackResponder`).
#[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Ord, PartialOrd)]
pub struct TypeConfig {}

impl openraft::RaftTypeConfig for TypeConfig {
    type D = Request;
    type R = Response;
    type NodeId = NodeId;
    type Node = Node;
    type Term = u64;
    type LeaderId = LeaderId;
    type Vote = openraft::impls::Vote<Self::LeaderId>;
    type Payload = openraft::EntryPayload<Self::D, Self::NodeId, Self::Node>;
    type Entry = Entry;
    type Responder<T>
        = super::proposer::CallbackResponder<T>
    where
        T: openraft::OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: openraft::OptionalSend + 'static;
    type AsyncRuntime = openraft::impls::TokioRuntime;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

pub type Raft = openraft::Raft<TypeConfig, super::state_machine::StateMachine>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
// A file, never a buffer: see `snapshot::lifecycle`.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, super::snapshot::SnapshotFile>;
pub type StorageError = openraft::StorageError<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
