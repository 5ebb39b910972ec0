//! `/status`, `/healthz`, `/readyz`, `/cluster/nodes`, `/metrics`: the
//! node's view of itself, from the Raft facade's [`RaftView`] and the
//! applied state, in the shapes of [`crate::wire`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use super::error::ApiError;
use super::Shared;
use crate::replica::RaftView;
use crate::wire::{self, DEFAULT_QUEUE};

/// A typed body, written the way `json!` wrote it (see `wire::to_body`).
fn json(status: StatusCode, body: &impl Serialize) -> Response {
    match wire::to_body(body) {
        Ok(body) => (status, Json(body)).into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

pub async fn status(State(state): State<Shared>) -> Response {
    let view = state.replica.view();
    let members = state.gossip.members().await;
    let queue = state.reader.queue(DEFAULT_QUEUE).unwrap_or(crate::queue::QueueMeta::NEW);
    let health = &state.health;
    let last_decision = health.last_membership_decision.lock().ok().and_then(|d| d.clone());
    let disk = &health.disk;
    let body = wire::Status {
        node_id: view.id,
        cluster_id: state.cluster_id.clone(),
        cluster_uuid: state.replica.cluster_uuid(),
        role: view.role.as_str().to_owned(),
        leader_id: view.leader_id,
        leader_api_url: view.leader_api_url(),
        quorum_ack_ms: view.quorum_acked_ms,
        leader_contact_ms: state
            .replica
            .leader_contact(&view)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        term: view.term,
        last_log_index: view.last_log_index,
        commit_index: state.replica.commit_index().await,
        applied_index: view.applied_index,
        snapshot_index: view.snapshot_index,
        purged_index: view.purged_index,
        voters: view.voters.iter().copied().collect(),
        learners: view.learners.iter().copied().collect(),
        members: members
            .into_iter()
            .map(|m| wire::Member {
                node_id: m.node_id,
                raft_addr: m.raft_addr,
                api_addr: m.api_addr,
                gossip_addr: m.gossip_addr.to_string(),
                live: m.live,
                cluster_uuid: m.cluster_uuid,
                disk_low: m.disk_low,
            })
            .collect(),
        queue_len: queue.len(),
        head_seq: queue.head(),
        front_seq: queue.front_seq(),
        membership_last_decision: last_decision,
        removed: health.retired.load(Relaxed),
        maze: maze_status(&state),
        watches: state.watches.active() as u64,
        waiters: state.waiters.active() as u64,
        disk: wire::DiskStatus {
            available_bytes: disk.available(),
            min_free: format!("{:?}", disk.min()),
            low: disk.is_low(),
            low_peer: disk.low_peer(),
            writes_refused: disk.refuse_writes(),
        },
        version: env!("CARGO_PKG_VERSION").to_owned(),
        work: state.reader.work_queues().into_iter().map(|(q, w)| (q, w.into())).collect(),
        queues: state.reader.queues().into_iter().map(|(q, m)| (q, m.into())).collect(),
    };
    json(StatusCode::OK, &body)
}

pub(crate) fn maze_status(state: &Shared) -> Option<wire::MazeStatus> {
    let maze = state.health.maze.as_ref()?;
    let c = &maze.registry.counters;
    let s = &maze.source;
    let stream = state.reader.maze_status();
    Some(wire::MazeStatus {
        stream: wire::MazeStream {
            epoch: stream.epoch,
            next_seq: stream.next_seq,
            pending: stream.pending as u64,
            follow_edges: stream.follow_edges as u64,
            totals: stream.totals,
        },
        clients_connected: c.connected.load(Relaxed),
        slow_disconnects: c.slow_disconnects.load(Relaxed),
        bad_hellos: c.bad_hellos.load(Relaxed),
        notifications_sent: c.notifications_sent.load(Relaxed),
        notifications_dropped: c.notifications_dropped.load(Relaxed),
        source_connections: s.connections.load(Relaxed),
        source_lines: s.lines.load(Relaxed),
        source_rejected_lines: s.rejected_lines.load(Relaxed),
        source_batches: s.batches.load(Relaxed),
        source_retries: s.retries.load(Relaxed),
        gap_skips: maze.gap_skips.load(Relaxed),
    })
}

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready: a leader is known and this node has applied everything it knows
/// to be committed (a restarted node is not ready while it replays).
pub async fn readyz(State(state): State<Shared>) -> Response {
    let view = state.replica.view();
    let committed = state.replica.commit_index().await;
    let reason = if state.health.retired.load(Relaxed) {
        Some("this node was removed from the cluster")
    } else if view.leader_id.is_none() {
        Some("no leader known")
    } else if let Some(why) = state.replica.out_of_contact() {
        Some(why)
    } else if view.applied_index < committed {
        Some("applying the committed log")
    } else {
        None
    };
    // A full disk stops writes, not reads: the node stays in rotation (all
    // nodes fill together; failing readiness everywhere would stop reads
    // too), and the body says so.
    let disk = state.health.disk.refuse_writes();
    match reason {
        None => json(
            StatusCode::OK,
            &wire::Ready { ready: true, writable: disk.is_none(), disk_full: disk },
        ),
        Some(reason) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &wire::NotReady {
                ready: false,
                error: reason.to_owned(),
                code: wire::code::NOT_READY.to_owned(),
            },
        ),
    }
}

pub async fn nodes(State(state): State<Shared>) -> Response {
    let view = state.replica.view();
    let live: BTreeMap<u64, bool> =
        state.gossip.members().await.into_iter().map(|m| (m.node_id, m.live)).collect();
    let nodes = view
        .nodes
        .iter()
        .map(|(&id, node)| wire::ClusterNode {
            node_id: id,
            api_url: node.api_url(),
            raft_addr: node.raft_addr.clone(),
            voter: view.voters.contains(&id),
            leader: view.leader_id == Some(id),
            live: live.get(&id).copied().unwrap_or(false),
            matched_index: view.matched_index(id),
        })
        .collect();
    json(StatusCode::OK, &wire::ClusterNodes { leader_id: view.leader_id, nodes })
}

/// `GET /metrics`: Prometheus text. State gauges are refreshed from their
/// owners here (see `crate::metrics`).
pub async fn metrics(State(state): State<Shared>) -> Response {
    let m = &state.metrics;
    let raft: RaftView = state.replica.view();
    let index = |i: Option<u64>| i64::try_from(i.unwrap_or(0)).unwrap_or(i64::MAX);
    m.raft.term.set(index(Some(raft.term)));
    m.raft.is_leader.set(i64::from(raft.is_leader()));
    m.raft.last_log_index.set(index(raft.last_log_index));
    m.raft.commit_index.set(index(state.replica.commit_index().await));
    m.raft.applied_index.set(index(raft.applied_index));
    m.raft.snapshot_index.set(index(raft.snapshot_index));
    m.raft.purged_index.set(index(raft.purged_index));
    m.raft.voters.set(index(Some(raft.voters.len() as u64)));
    m.raft.learners.set(index(Some(raft.learners.len() as u64)));
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    m.runtime_workers.set(i64::try_from(workers).unwrap_or(i64::MAX));
    m.set_queues(state.reader.queues().into_iter().map(|(name, meta)| {
        let q = wire::QueueSummary::from(meta);
        let gauges = crate::metrics::QueueGauges {
            pending: q.pending,
            head: q.head_seq,
            retained: q.retained,
        };
        (name, gauges)
    }));
    m.set_work(state.reader.work_queues().into_iter().map(|(name, w)| {
        let w = wire::QueueWork::from(w);
        let gauges = crate::metrics::WorkGauges {
            leased: w.leased,
            delayed: w.delayed,
            redelivered: w.redelivered,
            expired: w.expired,
            dead_lettered: w.dead_lettered,
        };
        (name, gauges)
    }));
    m.disk_available.set(i64::try_from(state.health.disk.available()).unwrap_or(i64::MAX));
    m.disk_low.set(i64::from(state.health.disk.refuse_writes().is_some()));
    for listener in &state.health.listeners {
        let name = [listener.name];
        m.listener_open.with_label_values(&name).set(index(Some(listener.open() as u64)));
        m.listener_max.with_label_values(&name).set(index(Some(listener.max_connections as u64)));
        // The counters mirror the listener's own totals.
        for (counter, total) in
            [(&m.listener_refused, &listener.refused), (&m.listener_admitted, &listener.admitted)]
        {
            let counter = counter.with_label_values(&name);
            let now = total.load(std::sync::atomic::Ordering::Relaxed);
            counter.inc_by(now.saturating_sub(counter.get()));
        }
        let peak = listener.peak.load(std::sync::atomic::Ordering::Relaxed);
        m.listener_peak.with_label_values(&name).set(index(Some(peak as u64)));
    }
    // The same counters `/status` shows, flattened: `stream.pending` becomes
    // `raftq_maze{counter="stream_pending"}`.
    let maze = maze_status(&state).and_then(|m| serde_json::to_value(m).ok());
    if let Some(Value::Object(fields)) = maze {
        for (key, value) in fields {
            match value {
                Value::Object(inner) => {
                    for (k, v) in inner {
                        if let Some(n) = v.as_u64() {
                            m.maze.with_label_values(&[&format!("{key}_{k}")]).set(index(Some(n)));
                        }
                    }
                }
                v => {
                    if let Some(n) = v.as_u64() {
                        m.maze.with_label_values(&[&key]).set(index(Some(n)));
                    }
                }
            }
        }
    }
    match m.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics");
            super::error::ApiError::Internal(e.to_string()).into_response()
        }
    }
}
