//! Admin routes: `DELETE /cluster/nodes/{id}`, `POST /cluster/leader/transfer`,
//! `GET /cluster/backup`. The first two are writes (leader only, 307
//! elsewhere); a backup is served by any node from its applied state.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::ChangeMembers;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::Params;
use super::{AppState, Shared};
use crate::raft::types::{NodeId, Op, Reply};

/// The internal route a transfer target is asked to campaign on.
pub const PATH_ELECT: &str = "/internal/elect";

const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// An operator's removal leaves at least this many voters unless forced.
const MIN_VOTERS: usize = crate::membership::reconcile::MIN_VOTERS;
/// How long a transfer waits for the target to have the leader's whole log.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);
/// How long a transfer waits for the target to win after it campaigned.
const ELECTION_WAIT: Duration = Duration::from_secs(3);

fn node_id(raw: &str) -> Result<NodeId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::bad_request("invalid_node_id", format!("node id {raw:?} is not a u64"))
    })
}

fn membership_json(state: &Shared) -> Value {
    let metrics = state.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    json!({
        "leader_id": metrics.current_leader,
        "voters": membership.voter_ids().collect::<Vec<_>>(),
        "learners": membership.learner_ids().collect::<Vec<_>>(),
    })
}

/// `DELETE /cluster/nodes/{id}`: takes a member out of the cluster for good.
///
/// A replicated tombstone goes first, so that autopilot (on this leader or
/// any later one) never adds the node back even though it may still gossip;
/// then the membership change. Asked to remove itself, the leader hands
/// leadership over first and redirects (307) to the new leader, which then
/// removes it.
pub async fn remove_node(
    State(state): State<Shared>,
    Path(raw): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = node_id(&raw)?;
    let force = Params::parse(uri.query())?.bool("force")?.unwrap_or(false);
    state.route_write(&uri)?;
    let _one_change_at_a_time = state.membership_lock.lock().await;
    let voters: BTreeSet<NodeId> =
        state.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
    if voters.contains(&id) && voters.len() - 1 < MIN_VOTERS && !force {
        return Err(ApiError::Conflict {
            code: "too_few_voters",
            message: format!(
                "removing node {id} would leave {} voter(s): with fewer than {MIN_VOTERS}, one more \
                 failure stops the cluster; add ?force=true to remove it anyway",
                voters.len() - 1
            ),
        });
    }
    if id == state.node_id {
        // The leader cannot take itself out: it hands leadership over, then
        // sends the client to the new leader (307, same path), which does.
        hand_over(&state, None).await?;
        return Err(super::error::not_leader(state.leader_api_url(), super::path_and_query(&uri)));
    }
    let (is_voter, is_member) = {
        let metrics = state.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        (membership.voter_ids().any(|v| v == id), membership.get_node(&id).is_some())
    };
    let gossiping = state.gossip.members().await.iter().any(|m| m.node_id == id);
    let already_retired = state.reader.retired().contains(&id);
    if !is_member && !gossiping && !already_retired {
        return Err(ApiError::Unknown {
            code: "unknown_node",
            message: format!("node {id} is neither a member nor known to gossip"),
        });
    }
    match state.propose_op(Op::RetireNode { id }, &uri).await? {
        Reply::Retired => {}
        other => return Err(ApiError::Internal(format!("retire answered {other:?}"))),
    }
    if is_member {
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let outcome =
            tokio::time::timeout(CHANGE_TIMEOUT, state.raft.change_membership(change, false)).await;
        // The membership driver may have finished the same removal first
        // (it acts on the tombstone too): judge by the result, not the call.
        let still_member =
            state.raft.metrics().borrow().membership_config.membership().get_node(&id).is_some();
        if still_member {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".into(),
                Ok(Ok(_)) => "membership change did not take".into(),
            };
            return Err(ApiError::Unavailable(format!(
                "node {id} is retired but still a member ({why}); autopilot will finish the removal"
            )));
        }
    }
    tracing::info!(node_id = id, "node removed by an operator");
    let mut body = membership_json(&state);
    body["removed"] = json!(id);
    Ok(Json(body).into_response())
}

/// `POST /cluster/leader/transfer[?to=ID]`: hands leadership to `to` (by
/// default the voter with the most of the log).
///
/// openraft 0.9 has no transfer RPC, so the leader makes one from what it
/// has: it holds new API writes, waits until the target has its whole log,
/// stops heartbeats until the followers' leader lease expires (a follower
/// refuses votes while it holds a lease), then asks the target to campaign.
/// The target has the longest log and its timer is the only one running
/// early, so it wins; the other followers' election timers are a lease plus
/// a random timeout away. Heartbeats come back on in every outcome.
pub async fn transfer_leader(State(state): State<Shared>, uri: Uri) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query())?;
    state.route_write(&uri)?;
    let to = params.u64("to")?;
    let previous_term = state.raft.metrics().borrow().current_term;
    let transferred = hand_over(&state, to).await?.is_some();
    let mut body = membership_json(&state);
    body["transferred"] = json!(transferred);
    if transferred {
        body["previous_leader_id"] = json!(state.node_id);
        body["previous_term"] = json!(previous_term);
        body["term"] = json!(state.raft.metrics().borrow().current_term);
    }
    Ok(Json(body).into_response())
}

/// Transfers pause writes for a lease: at most one per
/// `--transfer-min-interval`, so a script in a loop cannot keep the cluster
/// from writing.
fn claim_transfer_slot(state: &AppState) -> Result<(), ApiError> {
    let now = std::time::Instant::now();
    let mut last = state
        .last_transfer
        .lock()
        .map_err(|_| ApiError::Internal("transfer rate limiter poisoned".into()))?;
    if let Some(at) = *last {
        let since = now.duration_since(at);
        if since < state.transfer_min_interval {
            let wait = state.transfer_min_interval - since;
            return Err(ApiError::RateLimited {
                message: format!(
                    "a leadership transfer started {} ms ago; at most one per {:?} \
                     (--transfer-min-interval)",
                    since.as_millis(),
                    state.transfer_min_interval
                ),
                retry_after_secs: wait.as_secs() + 1,
            });
        }
    }
    *last = Some(now);
    Ok(())
}

/// Hands leadership from this node (the leader) to `to`, or by default to
/// the voter with the most of the log; see [`transfer_leader`]. `Ok(None)`
/// when `to` is this node (nothing to do), else the new leader.
async fn hand_over(state: &AppState, to: Option<NodeId>) -> Result<Option<NodeId>, ApiError> {
    let metrics = state.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let matched = |m: &openraft::RaftMetrics<NodeId, crate::raft::types::Node>, id: NodeId| {
        m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten()).map(|l| l.index)
    };
    let target = match to {
        Some(to) => to,
        None => voters
            .iter()
            .copied()
            .filter(|&v| v != state.node_id)
            .max_by_key(|&v| matched(&metrics, v))
            .ok_or_else(|| ApiError::Conflict {
                code: "no_target",
                message: "this leader is the only voter".into(),
            })?,
    };
    if target == state.node_id {
        return Ok(None);
    }
    let not_a_voter = || ApiError::Conflict {
        code: "not_a_voter",
        message: format!("node {target} is not a voter"),
    };
    if !voters.contains(&target) {
        return Err(not_a_voter());
    }
    let target_node = membership.get_node(&target).cloned().ok_or_else(not_a_voter)?;
    claim_transfer_slot(state)?;

    // No new API writes while the lease runs out (each would refresh it).
    let _writes_held = state.write_gate.write().await;
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    loop {
        let m = state.raft.metrics().borrow().clone();
        if m.current_leader != Some(state.node_id) {
            return Err(ApiError::Unavailable("lost leadership during the transfer".into()));
        }
        if matched(&m, target) >= m.last_log_index {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Unavailable(format!(
                "node {target} did not catch up with the log; transfer abandoned"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let heartbeats = HeartbeatsOff::new(&state.raft);
    tokio::time::sleep(state.leader_lease + Duration::from_millis(50)).await;
    let url = format!("{}{}", target_node.raft_url(), PATH_ELECT);
    let request = state.peer_client.post(target, &url).timeout(Duration::from_secs(2));
    let asked = state.peer_client.send(target, request).await;
    if let Err(e) = asked.and_then(|r| r.error_for_status()) {
        drop(heartbeats);
        return Err(ApiError::Unavailable(format!("asking node {target} to campaign: {e}")));
    }
    let mut watch = state.raft.metrics();
    let won = tokio::time::timeout(ELECTION_WAIT, async {
        loop {
            if watch.borrow().current_leader == Some(target) {
                return true;
            }
            if watch.changed().await.is_err() {
                return false;
            }
        }
    })
    .await
    .unwrap_or(false);
    drop(heartbeats);
    if !won {
        return Err(ApiError::Unavailable(format!(
            "node {target} did not win its election in time; the cluster elects a leader as usual"
        )));
    }
    tracing::info!(from = state.node_id, to = target, "leadership transferred");
    Ok(Some(target))
}

/// Heartbeats are off while this lives.
struct HeartbeatsOff<'a>(&'a crate::raft::types::Raft);

impl<'a> HeartbeatsOff<'a> {
    fn new(raft: &'a crate::raft::types::Raft) -> Self {
        raft.runtime_config().heartbeat(false);
        HeartbeatsOff(raft)
    }
}

impl Drop for HeartbeatsOff<'_> {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
    }
}

/// `GET /cluster/backup`: the applied state as a snapshot file, after a
/// linearizable read barrier (so it holds every write acknowledged before
/// the request). Written to a temp file in the data dir and streamed from
/// it: memory stays flat whatever the size.
pub async fn backup(State(state): State<Shared>) -> Result<Response, ApiError> {
    // Held until the response body is dropped (sent or abandoned).
    let slot = state.backup_slot.clone().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable("another backup is being taken on this node; retry shortly".into())
    })?;
    state.barrier.linearizable().await?;
    let reader = state.reader.clone();
    let dir = state.backup_dir.clone();
    let (file, meta) = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        // Unlinked at once: the open handle keeps the data until the
        // response is sent, and a crash leaves nothing behind.
        let file = tempfile_in(&dir)?;
        let out = std::io::BufWriter::new(file);
        let (out, meta) = reader.backup(out)?;
        let mut file = out.into_inner().map_err(|e| e.into_error())?;
        std::io::Seek::rewind(&mut file)?;
        Ok::<_, crate::raft::db::StoreError>((file, meta))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let applied = meta.last_log_id.map_or(0, |l| l.index);
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    let stream = futures_util::StreamExt::map(stream, move |chunk| {
        let _held = &slot;
        chunk
    });
    let filename = format!("attachment; filename=\"raftq-backup-{applied}.snap\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_DISPOSITION, filename),
            (header::HeaderName::from_static("raftq-applied-index"), applied.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// An anonymous file in `dir`: created, then unlinked.
fn tempfile_in(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    let path = dir.join(format!("backup-{}.tmp", rand::random::<u64>()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}
