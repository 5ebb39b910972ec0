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

use tokio_util::sync::CancellationToken;

use super::compactor::on_leader_ticks;
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
    let plan = |now_ms| {
        let mut due = reader.sweep_due(now_ms);
        due.truncate(SWEEPS_PER_TICK);
        due.into_iter()
            .map(|queue| (queue.clone(), Command::Sweep { queue: Some(queue), max: SWEEP_MAX }))
            .collect()
    };
    let committed = |queue: &str, reply: Reply| match reply {
        Reply::Swept { expired, dead_lettered } => {
            tracing::debug!(%queue, expired, dead_lettered, "swept a work queue");
        }
        other => tracing::warn!(%queue, ?other, "unexpected reply to a sweep"),
    };
    on_leader_ticks("sweep", TICK, raft, proposer, shutdown, plan, committed).await;
}
