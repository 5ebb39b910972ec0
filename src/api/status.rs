//! `/status`, `/healthz`, `/readyz`, `/cluster/nodes`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::ServerState;
use serde_json::{json, Value};

use super::events::DEFAULT_QUEUE;
use super::Shared;

pub fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

pub(crate) async fn commit_index(state: &Shared) -> Option<u64> {
    state.raft.with_raft_state(|s| s.committed.map(|c| c.index)).await.ok().flatten()
}

pub async fn status(State(state): State<Shared>) -> Json<Value> {
    let metrics = state.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let learners: Vec<u64> = membership.learner_ids().collect();
    let members = state.gossip.members().await;
    let queue = state.reader.queue(DEFAULT_QUEUE).unwrap_or(crate::queue::QueueMeta::NEW);
    let last_decision = state.last_membership_decision.lock().ok().and_then(|d| d.clone());
    Json(json!({
        "node_id": state.node_id,
        "cluster_id": state.cluster_id,
        "cluster_uuid": state.peer_client.identity().uuid(),
        "role": role_name(metrics.state),
        "leader_id": metrics.current_leader,
        "leader_api_url": state.leader_api_url(),
        "term": metrics.current_term,
        "last_log_index": metrics.last_log_index,
        "commit_index": commit_index(&state).await,
        "applied_index": metrics.last_applied.map(|l| l.index),
        "snapshot_index": metrics.snapshot.map(|l| l.index),
        "purged_index": metrics.purged.map(|l| l.index),
        "voters": voters,
        "learners": learners,
        "members": members,
        "queue_len": queue.len(),
        "head_seq": queue.head(),
        "front_seq": queue.front_seq(),
        "membership_last_decision": last_decision,
        "removed": state.retired.load(std::sync::atomic::Ordering::Relaxed),
        "maze": maze_status(&state),
        "watches": state.watches.active(),
        "disk": {
            "available_bytes": state.disk.available(),
            "min_free": format!("{:?}", state.disk.min()),
            "low": state.disk.is_low(),
            "low_peer": state.disk.low_peer(),
            "writes_refused": state.disk.refuse_writes(),
        },
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

pub(crate) fn maze_status(state: &Shared) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(maze) = &state.maze else { return Value::Null };
    let c = &maze.registry.counters;
    let s = &maze.source;
    json!({
        "stream": state.reader.maze_status(),
        "clients_connected": c.connected.load(Relaxed),
        "slow_disconnects": c.slow_disconnects.load(Relaxed),
        "bad_hellos": c.bad_hellos.load(Relaxed),
        "notifications_sent": c.notifications_sent.load(Relaxed),
        "notifications_dropped": c.notifications_dropped.load(Relaxed),
        "source_connections": s.connections.load(Relaxed),
        "source_lines": s.lines.load(Relaxed),
        "source_rejected_lines": s.rejected_lines.load(Relaxed),
        "source_batches": s.batches.load(Relaxed),
        "source_retries": s.retries.load(Relaxed),
        "gap_skips": maze.gap_skips.load(Relaxed),
    })
}

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready: a leader is known and this node has applied everything it knows
/// to be committed (a restarted node is not ready while it replays).
pub async fn readyz(State(state): State<Shared>) -> Response {
    let metrics = state.raft.metrics().borrow().clone();
    let applied = metrics.last_applied.map(|l| l.index);
    let committed = commit_index(&state).await;
    let reason = if state.retired.load(std::sync::atomic::Ordering::Relaxed) {
        Some("this node was removed from the cluster")
    } else if metrics.current_leader.is_none() {
        Some("no leader known")
    } else if applied < committed {
        Some("applying the committed log")
    } else {
        None
    };
    // A full disk stops writes, not reads: the node stays in rotation (all
    // nodes fill together; failing readiness everywhere would stop reads
    // too), and the body says so.
    let disk = state.disk.refuse_writes();
    match reason {
        None => (
            StatusCode::OK,
            Json(json!({ "ready": true, "writable": disk.is_none(), "disk_full": disk })),
        )
            .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "error": reason, "code": "not_ready" })),
        )
            .into_response(),
    }
}

pub async fn nodes(State(state): State<Shared>) -> Json<Value> {
    let metrics = state.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let live: BTreeMap<u64, bool> =
        state.gossip.members().await.into_iter().map(|m| (m.node_id, m.live)).collect();
    let matched: BTreeMap<u64, Option<u64>> = metrics
        .replication
        .as_ref()
        .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
        .unwrap_or_default();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let nodes: Vec<Value> = membership
        .nodes()
        .map(|(id, node)| {
            json!({
                "node_id": id,
                "api_url": node.api_url(),
                "raft_addr": node.raft_addr,
                "voter": voters.contains(id),
                "leader": metrics.current_leader == Some(*id),
                "live": live.get(id).copied().unwrap_or(false),
                "matched_index": matched.get(id).copied().flatten(),
            })
        })
        .collect();
    Json(json!({ "leader_id": metrics.current_leader, "nodes": nodes }))
}

/// `GET /metrics`: Prometheus text. State gauges are refreshed from their
/// owners here (see `crate::metrics`).
pub async fn metrics(State(state): State<Shared>) -> Response {
    let m = &state.metrics;
    let raft = state.raft.metrics().borrow().clone();
    let membership = raft.membership_config.membership();
    let index = |i: Option<u64>| i64::try_from(i.unwrap_or(0)).unwrap_or(i64::MAX);
    m.raft.term.set(index(Some(raft.current_term)));
    m.raft.is_leader.set(i64::from(raft.current_leader == Some(state.node_id)));
    m.raft.last_log_index.set(index(raft.last_log_index));
    m.raft.commit_index.set(index(commit_index(&state).await));
    m.raft.applied_index.set(index(raft.last_applied.map(|l| l.index)));
    m.raft.snapshot_index.set(index(raft.snapshot.map(|l| l.index)));
    m.raft.purged_index.set(index(raft.purged.map(|l| l.index)));
    m.raft.voters.set(index(Some(membership.voter_ids().count() as u64)));
    m.raft.learners.set(index(Some(membership.learner_ids().count() as u64)));
    m.set_queues(state.reader.queues().into_iter().map(|(name, meta)| {
        let gauges = crate::metrics::QueueGauges {
            pending: meta.len(),
            head: meta.head(),
            retained: meta.front.saturating_sub(meta.oldest),
        };
        (name, gauges)
    }));
    m.disk_available.set(i64::try_from(state.disk.available()).unwrap_or(i64::MAX));
    m.disk_low.set(i64::from(state.disk.refuse_writes().is_some()));
    for listener in &state.listeners {
        let name = [listener.name];
        m.listener_open.with_label_values(&name).set(index(Some(listener.open() as u64)));
        m.listener_max.with_label_values(&name).set(index(Some(listener.max_connections as u64)));
        let refused = m.listener_refused.with_label_values(&name);
        let now = listener.refused.load(std::sync::atomic::Ordering::Relaxed);
        refused.inc_by(now.saturating_sub(refused.get()));
    }
    // The same counters `/status` shows, flattened: `stream.pending` becomes
    // `raftq_maze{counter="stream_pending"}`.
    if let Value::Object(fields) = maze_status(&state) {
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
