//! Who a node-to-node request is for: the cluster UUID and the target node id.
//!
//! Certificates prove that a peer is *a* node of our CA; they do not say
//! which node, nor which cluster (one CA may serve several clusters, and a
//! node restarted on an empty data dir answers at a dead voter's address
//! with a new id). So every request on the Raft port names the cluster UUID
//! and the node id it is meant for ([`HEADER_CLUSTER`], [`HEADER_NODE`]), and
//! the receiver refuses a mismatch before anything reaches Raft: a node
//! never answers as another node id, and never serves a request of another
//! cluster.
//!
//! The UUID is created when a cluster is bootstrapped and persisted (synced)
//! in the `meta` column family; a copy in the `sm` column family travels in
//! snapshots and backups. A node with Raft state but no UUID yet (a new node
//! joining, or a data dir from before UUIDs existed) adopts the UUID of the
//! first append or snapshot a peer sends it: only a leader sends those, and
//! the leader added this node after checking its identity over mTLS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use rocksdb::DB;

use super::db::{cf, StoreError};
use super::keys::{CF_META, CF_SM, META_CLUSTER_UUID, SM_CLUSTER_UUID};
use super::types::{Node, NodeId};

use super::peer_check::valid_uuid;
pub use super::peer_check::{
    verdict, Identity, Refusal, Verdict, HEADER_CLUSTER, HEADER_NODE, HEADER_REFUSED,
};

/// How often one kind of refusal to one peer is logged (they repeat at the
/// heartbeat rate).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// This node's id and the cluster UUID it belongs to, persisted in RocksDB.
pub struct ClusterIdentity {
    node_id: NodeId,
    cluster_id: String,
    db: Arc<DB>,
    uuid: RwLock<Option<String>>,
    /// Serialises adoption so that two concurrent first appends persist once.
    adopting: Mutex<()>,
    /// Set while this node must not take part in Raft yet (see
    /// [`ClusterIdentity::hold`]); the reason is what peers are told.
    held: RwLock<Option<String>>,
}

impl ClusterIdentity {
    pub fn load(node_id: NodeId, cluster_id: &str, db: Arc<DB>) -> Result<Arc<Self>, StoreError> {
        let stored = db.get_cf(cf(&db, CF_META)?, META_CLUSTER_UUID)?;
        let uuid = match stored {
            None => None,
            Some(bytes) => {
                let s = String::from_utf8(bytes)
                    .ok()
                    .filter(|s| valid_uuid(s))
                    .ok_or_else(|| StoreError::Corrupt("cluster uuid is not a UUID".into()))?;
                Some(s)
            }
        };
        Ok(Arc::new(ClusterIdentity {
            node_id,
            cluster_id: cluster_id.to_string(),
            db,
            uuid: RwLock::new(uuid),
            adopting: Mutex::new(()),
            held: RwLock::new(None),
        }))
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn uuid(&self) -> Option<String> {
        self.uuid.read().map(|u| u.clone()).unwrap_or(None)
    }

    pub fn identity(&self) -> Identity {
        Identity {
            node_id: self.node_id,
            cluster_id: self.cluster_id.clone(),
            cluster_uuid: self.uuid(),
        }
    }

    /// A new cluster: a fresh random UUID, persisted. Keeps an existing one.
    pub fn create(&self) -> Result<String, StoreError> {
        if let Some(existing) = self.uuid() {
            return Ok(existing);
        }
        let fresh = uuid::Uuid::new_v4().to_string();
        self.adopt(&fresh)?;
        Ok(fresh)
    }

    /// Persists `uuid` as this node's cluster (synced, before any request
    /// of that cluster is served). A node already in another cluster keeps
    /// its own; the caller has checked that it had none.
    pub fn adopt(&self, uuid: &str) -> Result<(), StoreError> {
        let _one = self.adopting.lock().map_err(|_| StoreError::Join("adopt lock".into()))?;
        if self.uuid().is_some() {
            return Ok(());
        }
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META)?, META_CLUSTER_UUID, uuid.as_bytes());
        batch.put_cf(cf(&self.db, CF_SM)?, SM_CLUSTER_UUID, uuid.as_bytes());
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        if let Ok(mut cell) = self.uuid.write() {
            *cell = Some(uuid.to_string());
        }
        tracing::info!(cluster_uuid = uuid, "this node now belongs to cluster {uuid}");
        Ok(())
    }

    /// Keeps this node out of Raft (no vote, no append) until [`release`]:
    /// a fresh node started with an explicit `--node-id` first makes sure
    /// the cluster never knew that id (an earlier incarnation whose volume
    /// was lost would make this one an amnesiac voter: it could vote twice
    /// in a term).
    ///
    /// [`release`]: ClusterIdentity::release
    pub fn hold(&self, reason: String) {
        if let Ok(mut held) = self.held.write() {
            *held = Some(reason);
        }
    }

    pub fn release(&self) {
        if let Ok(mut held) = self.held.write() {
            *held = None;
        }
    }

    /// The receiver's check of one request (see [`verdict`]); adopts the
    /// sender's UUID when the verdict says so. `identity` requests are
    /// answered even while held (they only say who this node is).
    pub fn check(
        &self,
        headers: &HeaderMap,
        may_adopt: bool,
        identity: bool,
    ) -> Result<(), Refusal> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        self.check_named(header(HEADER_NODE), header(HEADER_CLUSTER), may_adopt, identity)
    }

    /// [`ClusterIdentity::check`] of a request that names its target node and
    /// cluster some other way than headers (the Raft stream's frames).
    pub fn check_named(
        &self,
        target: Option<&str>,
        cluster: Option<&str>,
        may_adopt: bool,
        identity: bool,
    ) -> Result<(), Refusal> {
        if !identity {
            if let Some(reason) = self.held.read().ok().and_then(|h| h.clone()) {
                return Err(Refusal::Held(reason));
            }
        }
        let own = self.uuid();
        match verdict(self.node_id, own.as_deref(), target, cluster, may_adopt) {
            Verdict::Accept => Ok(()),
            Verdict::Adopt(uuid) => {
                if let Err(e) = self.adopt(&uuid) {
                    // Not persisted: serve nothing of that cluster yet.
                    tracing::error!(error = %e, "persisting the cluster uuid failed");
                    return Err(Refusal::WrongCluster { asked: uuid, mine: "(unknown)".into() });
                }
                Ok(())
            }
            Verdict::Refuse(r) => Err(r),
        }
    }
}

/// The mTLS client for node-to-node requests: every request it builds names
/// the cluster and the target node, and refusals are logged and counted.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    identity: Arc<ClusterIdentity>,
    refusals: prometheus::IntCounterVec,
    last_logged: Arc<Mutex<HashMap<(NodeId, &'static str), Instant>>>,
}

impl PeerClient {
    /// `refusals` is `raftq_peer_refusals_total` (labels: direction, reason).
    pub fn new(
        http: reqwest::Client,
        identity: Arc<ClusterIdentity>,
        refusals: prometheus::IntCounterVec,
    ) -> Self {
        PeerClient { http, identity, refusals, last_logged: Arc::default() }
    }

    pub fn identity(&self) -> &Arc<ClusterIdentity> {
        &self.identity
    }

    fn request(
        &self,
        method: reqwest::Method,
        target: NodeId,
        url: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header(HEADER_CLUSTER, self.identity.uuid().unwrap_or_default())
            .header(HEADER_NODE, target.to_string())
    }

    pub fn post(&self, target: NodeId, url: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, target, url)
    }

    pub fn get(&self, target: NodeId, url: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, target, url)
    }

    /// Sends, and notes a refusal by the peer (logged at most every 10 s per
    /// peer and reason, counted always).
    pub async fn send(
        &self,
        target: NodeId,
        request: reqwest::RequestBuilder,
    ) -> reqwest::Result<reqwest::Response> {
        let response = request.send().await?;
        if let Some(reason) = response.headers().get(HEADER_REFUSED) {
            let reason = String::from_utf8_lossy(reason.as_bytes());
            self.note_refused_by_peer(target, &reason, response.url().as_str());
        }
        Ok(response)
    }

    /// Counts (and rate-limits the log of) a refusal a peer answered to a
    /// request of ours sent to `url`; `reason` is the refusal's code.
    pub fn note_refused_by_peer(&self, target: NodeId, reason: &str, url: &str) {
        let reason: &'static str = match reason {
            "wrong_node" => "wrong_node",
            "wrong_cluster" => "wrong_cluster",
            "held" => "held",
            _ => "other",
        };
        self.refusals.with_label_values(&["sent", reason]).inc();
        if self.should_log(target, reason) {
            tracing::warn!(
                target_node = target,
                url,
                reason,
                "a peer refused our request: the node at that address is not node {target} of \
                 this cluster (wiped, replaced, or another cluster)"
            );
        }
    }

    /// Counts (and rate-limits the log of) a refusal this node answered.
    pub fn note_refused(&self, refusal: &Refusal) {
        self.refusals.with_label_values(&["received", refusal.code()]).inc();
        if self.should_log(0, refusal.code()) {
            tracing::warn!(reason = refusal.code(), "refused a peer request: {refusal}");
        }
    }

    fn should_log(&self, peer: NodeId, reason: &'static str) -> bool {
        let Ok(mut last) = self.last_logged.lock() else { return false };
        let now = Instant::now();
        match last.get(&(peer, reason)) {
            Some(at) if now.duration_since(*at) < REFUSAL_LOG_EVERY => false,
            _ => {
                // Bounded: one entry per member and reason.
                if last.len() > 1024 {
                    last.clear();
                }
                last.insert((peer, reason), now);
                true
            }
        }
    }

    /// Gossip is a hint: asks the node at `node`'s address, over mTLS, who it
    /// is. Succeeds only when it answers as node `id` of our cluster (or of
    /// no cluster yet: a new node).
    pub async fn confirm(&self, id: NodeId, node: &Node) -> Result<Identity, String> {
        let url = format!("{}{}", node.raft_url(), PATH_IDENTITY);
        let response = self
            .send(id, self.get(id, &url).timeout(Duration::from_secs(2)))
            .await
            .map_err(|e| format!("identity check {url}: {e}"))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(format!("identity check {url}: {status}: {text}"));
        }
        let identity: Identity =
            response.json().await.map_err(|e| format!("identity check {url}: bad answer: {e}"))?;
        let ours = self.identity.identity();
        if identity.node_id != id || identity.cluster_id != ours.cluster_id {
            return Err(format!(
                "identity check {url}: gossip said node {id}, node says {identity:?}"
            ));
        }
        match (&identity.cluster_uuid, &ours.cluster_uuid) {
            (Some(theirs), Some(mine)) if theirs != mine => Err(format!(
                "identity check {url}: node {id} belongs to cluster {theirs}, not {mine}"
            )),
            _ => Ok(identity),
        }
    }
}

pub const PATH_IDENTITY: &str = "/internal/identity";

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "0b7e9c52-6a51-4f0e-8f6b-9d0c1e2f3a4b";

    #[test]
    fn the_uuid_is_persisted_once_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::raft::db::open(&dir.path().join("db")).unwrap();
        let id = ClusterIdentity::load(3, "raftq", db.clone()).unwrap();
        assert_eq!(id.uuid(), None);
        let made = id.create().unwrap();
        assert_eq!(id.create().unwrap(), made, "create keeps an existing uuid");
        id.adopt(V).unwrap();
        assert_eq!(id.uuid().as_deref(), Some(made.as_str()), "adopt never replaces one");
        drop(id);
        let again = ClusterIdentity::load(3, "raftq", db).unwrap();
        assert_eq!(again.uuid(), Some(made));
        assert_eq!(again.identity().node_id, 3);
    }
}
