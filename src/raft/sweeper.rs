//! The leader's work-queue sweeper: dead-letters expired leases that
//! reached their queue's `max_deliveries`, and turns matured delays back
//! into plain pending events, even when no worker asks for a lease.
//!
//! Like the retention compactor, time stays out of the state machine: every
//! tick the leader asks its applied state which queues are due at its clock
//! ([`SmReader::sweep_due`]) and proposes `Sweep { queue, max }` for each,
//! through the proposer (so the write gates apply). Every node applies the
//! sweep by the entry's time, identically. Work is bounded per tick: at most
//! [`SWEEPS_PER_TICK`] queues, [`SWEEP_MAX`] events each. Followers only
//! apply.

use std::time::Duration;

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use super::compactor::propose_each;
use super::proposer::unix_ms;
use super::state_machine::SmReader;
use super::types::{Raft, Reply};
use super::Proposer;
use crate::queue::Command;

const TICK: Duration = Duration::from_millis(500);
/// Queues swept per tick at most; the rest wait for the next tick.
pub const SWEEPS_PER_TICK: usize = 64;
/// Events one `Sweep` entry resolves at most.
pub const SWEEP_MAX: u32 = 1000;

pub async fn run(raft: Raft, reader: SmReader, proposer: Proposer, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if raft.metrics().borrow().state != ServerState::Leader {
            continue;
        }
        let mut due = reader.sweep_due(unix_ms());
        due.truncate(SWEEPS_PER_TICK);
        if due.is_empty() {
            continue;
        }
        let commands = due
            .into_iter()
            .map(|queue| (queue.clone(), Command::Sweep { queue: Some(queue), max: SWEEP_MAX }));
        let Some(results) = propose_each(&proposer, commands, &shutdown).await else {
            return;
        };
        for (queue, result) in results {
            match result {
                Ok(Reply::Swept { expired, dead_lettered }) => {
                    tracing::debug!(%queue, expired, dead_lettered, "swept a work queue");
                }
                Ok(other) => tracing::warn!(%queue, ?other, "unexpected reply to a sweep"),
                // Leadership lost, no quorum, or timed out: the next tick
                // (or leader) sweeps again.
                Err(e) => tracing::debug!(%queue, error = %e, "sweep not committed"),
            }
        }
    }
}
