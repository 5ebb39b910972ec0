//! The leader's retention task: drop dequeued events beyond
//! `--retention-bytes` or older than `--retention-age`.
//!
//! Like the maze gap timer, time stays out of the state machine: once a
//! second the leader reads each queue's pointers and the stamps of a few
//! events (a binary search, see [`crate::queue::retention`]) and proposes
//! `Compact { queue, upto }`. Every node applies that command identically,
//! clamped to the pending front, so retention is deterministic and never
//! drops a pending event. Followers only apply.

use std::time::Duration;

use futures_util::future::join_all;
use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use super::proposer::unix_ms;
use super::state_machine::SmReader;
use super::types::{Op, Raft, Reply};
use super::{ProposeError, Proposer};
use crate::queue::retention::compact_upto;
use crate::queue::{Command, RetentionPolicy};

const TICK: Duration = Duration::from_secs(1);
/// Queues compacted per tick at most; the rest wait a second. Keeps one
/// tick's proposals (and their batch) small however many queues exist.
const COMPACTS_PER_TICK: usize = 256;
/// A compaction that has not committed by then is abandoned; the next tick
/// decides afresh.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(
    raft: Raft,
    reader: SmReader,
    proposer: Proposer,
    policy: RetentionPolicy,
    shutdown: CancellationToken,
) {
    let plan = |now_ms| {
        plan(&reader, &policy, now_ms)
            .into_iter()
            .map(|(queue, upto)| (queue.clone(), Command::Compact { queue, upto }))
            .collect()
    };
    let committed = |queue: &str, reply: Reply| match reply {
        Reply::Compacted { oldest, dropped } => {
            tracing::debug!(%queue, oldest, dropped, "retention compacted a queue");
        }
        other => tracing::warn!(%queue, ?other, "unexpected reply to a compaction"),
    };
    on_leader_ticks("compaction", TICK, raft, proposer, shutdown, plan, committed).await;
}

/// The loop of a leader-only task (retention, the work-queue sweeper):
/// every `tick` while this node leads, `plan(now_ms)` names one command per
/// queue, which are proposed together through the proposer (so the write
/// gates apply) and each committed reply goes to `committed`. A proposal
/// that fails (leadership lost, no quorum, timed out) is left to the next
/// tick, or the next leader, which plans afresh.
pub(super) async fn on_leader_ticks(
    task: &'static str,
    tick: Duration,
    raft: Raft,
    proposer: Proposer,
    shutdown: CancellationToken,
    mut plan: impl FnMut(u64) -> Vec<(String, Command)>,
    mut committed: impl FnMut(&str, Reply),
) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if raft.metrics().borrow_watched().state != ServerState::Leader {
            continue;
        }
        let commands = plan(unix_ms());
        if commands.is_empty() {
            continue;
        }
        let Some(results) = propose_each(&proposer, commands.into_iter(), &shutdown).await else {
            return;
        };
        for (queue, result) in results {
            match result {
                Ok(reply) => committed(&queue, reply),
                Err(e) => tracing::debug!(%queue, error = %e, task, "not committed"),
            }
        }
    }
}

/// Proposes one command per queue, together, so the proposer packs them
/// into one entry; each gets [`PROPOSE_TIMEOUT`]. `None` on shutdown.
async fn propose_each(
    proposer: &Proposer,
    commands: impl Iterator<Item = (String, Command)>,
    shutdown: &CancellationToken,
) -> Option<Vec<(String, Result<Reply, ProposeError>)>> {
    let proposals = commands.map(|(queue, command)| {
        let propose = tokio::time::timeout(PROPOSE_TIMEOUT, proposer.propose(Op::Queue(command)));
        async move {
            let result = propose
                .await
                .unwrap_or_else(|_| Err(ProposeError::Unavailable("timed out".into())));
            (queue, result)
        }
    });
    tokio::select! {
        _ = shutdown.cancelled() => None,
        results = join_all(proposals) => Some(results),
    }
}

/// The compactions due now as (queue, upto), at most [`COMPACTS_PER_TICK`].
fn plan(reader: &SmReader, policy: &RetentionPolicy, now_ms: u64) -> Vec<(String, u64)> {
    let mut due = Vec::new();
    for (queue, meta) in reader.queues() {
        if meta.front <= meta.oldest {
            continue;
        }
        match compact_upto(&meta, policy, now_ms, |seq| reader.stamp(&queue, seq)) {
            Ok(upto) if upto > meta.oldest => due.push((queue, upto)),
            Ok(_) => {}
            Err(e) => tracing::error!(%queue, error = %e, "reading retention stamps"),
        }
        if due.len() >= COMPACTS_PER_TICK {
            break;
        }
    }
    due
}
