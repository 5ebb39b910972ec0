//! The leader's gap timer: a missing seq must not stall the stream forever.
//!
//! Time stays out of the state machine: the leader watches the applied maze
//! cursor, and when `next` has not moved for `--maze-gap-timeout-ms` while
//! later lines wait in the reorder buffer, it proposes `Skip { next }`. The
//! state machine then delivers the buffered run. Followers only watch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::maze::MazeCommand;
use crate::raft::state_machine::SmReader;
use crate::raft::types::Op;
use crate::replica::{Replica, Role};

const TICK: Duration = Duration::from_millis(100);

pub async fn run(
    replica: Replica,
    reader: SmReader,
    gap_timeout: Duration,
    skips: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    // (epoch, next) last seen, and since when.
    let mut watched: Option<((u64, u64), Instant)> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        if replica.view().role != Role::Leader {
            watched = None;
            continue;
        }
        let (epoch, next, oldest_pending) = reader.maze_cursor();
        if oldest_pending.is_none() {
            watched = None;
            continue;
        }
        match watched {
            Some((cursor, since)) if cursor == (epoch, next) => {
                if since.elapsed() >= gap_timeout {
                    tracing::warn!(
                        epoch,
                        seq = next,
                        "maze seq missing past the gap timeout; skipping it"
                    );
                    if replica
                        .submit(Op::Maze(MazeCommand::Skip { epoch, seq: next }))
                        .await
                        .is_ok()
                    {
                        skips.fetch_add(1, Ordering::Relaxed);
                    }
                    watched = None;
                }
            }
            _ => watched = Some(((epoch, next), Instant::now())),
        }
    }
}
