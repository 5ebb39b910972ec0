//! Follower-maze (SPEC §3), served by every node from the replicated log.
//!
//! ```text
//!  event source ──TCP 9090──▶ maze_net::source (any node) ──batches of raw lines──▶ leader
//!        (forwarded over the Raft port when this node is a follower)     │ Raft log
//!                                                                        ▼
//!  every node: sm::Core::apply ─▶ MazeState (★ pure: reorder + follow graph)
//!                  │ connected users          │ ordered notifications, one by one,
//!                  │ (Audience, per apply)    │ only for connected users
//!                  ▼                          ▼
//!      maze_net::clients::Delivery ─▶ this node's connected users (TCP 9099)
//! ```
//!
//! Where each piece runs, and why:
//! - Reordering and the follow graph are part of the replicated state
//!   machine, so every node computes the same notifications in the same
//!   order, and a leader kill loses no follow relationship.
//! - Each node notifies only the users connected to it; a notification for a
//!   user connected nowhere is dropped (the protocol says so). Recipients are
//!   resolved against this node's connected users while the event is
//!   applied (`MazeState::apply_for` with an `Audience`), so a status update
//!   of a user with a million followers costs what its *connected* followers
//!   cost, and notifications stream to the users rather than piling up (see
//!   `maze_net::clients::Delivery`).
//! - Time never enters the state machine: when a seq never arrives, the
//!   *leader* proposes a `Skip` after `--maze-gap-timeout-ms` (`maze_net::gap`), and
//!   when the reorder buffer fills up the state machine skips forward on its
//!   own, deterministically.
//!
//! This module is the pure core (★, no I/O): `protocol`, `state` and
//! `coalesce` (when the source closes a batch), plus
//! the commands and bounds below. The TCP adapters (event source, client
//! port, gap timer) live in `maze_net`, above the Raft facade.

pub mod coalesce;
pub mod protocol;
pub mod state;

#[cfg(test)]
mod scenarios;

pub use protocol::{parse_line, Event, EventKind, ParseError, UserId};
pub use state::{
    Audience, ConnectedUsers, LinesStats, MazeEffect, MazeOutcome, MazeState, Notification,
    NotificationSink, Recipients,
};

use serde::{Deserialize, Serialize};

/// A maze sequence number: starts at 1 on every new source connection.
pub type MazeSeq = u64;

/// Most lines an event source puts in one proposed batch; a leader refuses
/// larger forwarded batches (`replica::forward::check_forwarded`).
pub const SOURCE_BATCH_LINES_MAX: usize = 2048;
/// Bytes an event source puts in one batch before closing it (the line
/// that crosses it still goes in).
pub const SOURCE_BATCH_BYTES_MAX: usize = 64 * 1024;

/// A replicated follower-maze command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MazeCommand {
    /// A new event source connected: a new stream (epoch + 1), next expected
    /// seq back to 1, reorder buffer and follow graph emptied.
    Reset,
    /// Raw source lines of stream `epoch`, each with its own line ending
    /// (`\n` or `\r\n`), in any order. Lines of another epoch are ignored.
    Lines { epoch: u64, lines: Vec<String> },
    /// Give up waiting for `seq` of stream `epoch` (leader's gap timeout):
    /// deliver everything buffered up to the next gap.
    Skip { epoch: u64, seq: MazeSeq },
}

/// Bounds of the maze state, stamped into each entry like queue limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MazeLimits {
    /// Most lines buffered out of order; beyond it the state machine skips
    /// the missing seqs up to the oldest buffered one.
    pub pending_max: u64,
    /// Longest accepted line (bytes, line ending included); longer lines
    /// count as malformed.
    pub line_bytes_max: usize,
    /// Most follow edges remembered. Beyond it a follow is still notified
    /// but not recorded (counted as `follows_refused`): user ids are
    /// arbitrary u64s, so without a bound a source could grow the graph
    /// without end. ~50 bytes per edge: the default is ~50 MiB at most.
    pub follow_edges_max: u64,
}

impl Default for MazeLimits {
    fn default() -> Self {
        MazeLimits { pending_max: 100_000, line_bytes_max: 1024, follow_edges_max: 1_000_000 }
    }
}
