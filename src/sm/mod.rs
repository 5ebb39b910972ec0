//! The replicated core: everything a committed log entry does, as pure
//! logic. ★ No I/O (checked by `make lint-imports`).
//!
//! ```text
//!  committed entries ─▶ Core::apply ─▶ Applied { replies, writes, stats }
//!                         │  ▲                     │
//!      maze notifications │  │ event bodies,       └─▶ raft::state_machine: encode
//!      (Notifier, pure    │  │ stamps (Stored)          (raft::keys), one WriteBatch,
//!       maze traits)      ▼  │                          then Notifier::finish
//!                        QueueState, MazeState, retired ids, applied, membership
//! ```
//!
//! [`Core`] dispatches each [`Op`] to the queue and maze cores, maps their
//! outcomes to [`Reply`]s, chains retention stamps, records retirements and
//! coalesces the maze's storage changes. What it changes in storage comes
//! back as a typed list of [`Write`]s, in the order they must be written;
//! the RocksDB adapter only encodes them. [`Core::restore`] is their inverse:
//! the core rebuilt from the stored [`Record`]s equals the live one.
//!
//! Determinism: the result of `apply` depends only on the core, the entries
//! and what [`Stored`] answers (which is what earlier writes stored); never
//! on a clock, randomness, hashing order or this node's configuration. Who
//! receives a maze notification depends on the [`Notifier`]'s audience (this
//! node's connected users), which changes no state and no write.
//!
//! Every module here must stay free of tokio, rocksdb, the network and the
//! file system; openraft *data* types (log ids, memberships, entries) are
//! fine, `openraft::Raft` is not.

pub mod command;
mod core;
pub mod dump;
mod notify;

pub use self::core::{Applied, ApplyError, Core, Record, RestoreError, Stored, Write};
pub use command::{LeasedReply, Node, NodeId, Op, Reply, Request, Response};
pub use dump::Dump;
pub use notify::{Fanout, Nobody, Notifier, OnFirstUse};

/// The maze vocabulary a log entry and an apply carry: `raft` names them
/// through the core, never the maze module itself.
pub use crate::maze::{LinesStats, MazeLimits};

/// Who led a term: openraft's "advanced" leader id (term and node id),
/// the one whose JSON form matches what 0.9 stored.
pub type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>;
/// A log position: openraft's, with raftq's node ids.
pub type LogId = openraft::LogId<LeaderId>;
/// The membership the state machine holds, with the log id that set it.
pub type StoredMembership = openraft::StoredMembership<LeaderId, NodeId, Node>;
/// A membership configuration (the voter sets and the nodes).
pub type Membership = openraft::Membership<NodeId, Node>;
/// What one log entry carries.
pub type EntryPayload = openraft::EntryPayload<Request, NodeId, Node>;
/// One Raft log entry: a batch of ops, a membership or a blank.
pub type Entry = openraft::Entry<LeaderId, EntryPayload>;

#[cfg(test)]
pub(crate) mod datadriven;
#[cfg(test)]
mod tests;
