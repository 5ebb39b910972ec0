//! The HTTP wire contract, spelled once: what the server writes and what
//! the client, the consumer and the tests read.
//!
//! - [`Status`] (`GET /status`), [`ClusterNodes`] (`GET /cluster/nodes`),
//!   [`Membership`] (the admin routes' answers);
//! - [`ErrorBody`] (`{"error","code"}` plus details) and the error
//!   [`code`]s;
//! - SSE watch frames ([`frame`]: names and data);
//! - [`header`] names, the [`DEFAULT_QUEUE`] and the [`queue_path`]s.
//!
//! Byte compatibility: the server writes response bodies through a
//! `serde_json::Value` ([`to_body`]), whose object keys come out sorted, as
//! they did when the bodies were `json!` literals; their field order here is
//! free. SSE frame data is written directly, so [`frame`] structs keep the
//! field order of `docs/api.md`. Pure: serde only, no I/O.

use serde::{Deserialize, Serialize};

use crate::maze::LinesStats;
use crate::queue::Seq;

/// The queue of `/event` and `/events` (no `/queues/{queue}` prefix).
pub const DEFAULT_QUEUE: &str = "default";

/// `/{rest}` for the default queue, else `/queues/{queue}/{rest}`.
pub fn queue_path(queue: &str, rest: &str) -> String {
    if queue == DEFAULT_QUEUE {
        format!("/{rest}")
    } else {
        format!("/queues/{queue}/{rest}")
    }
}

/// A body as the server writes it: through a `Value`, so object keys are
/// sorted whatever the struct's field order (see the module docs).
pub fn to_body<T: Serialize>(body: &T) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::to_value(body)
}

/// Header names (lowercase, as HTTP/2 sends them).
pub mod header {
    /// The seq of the event a response is about.
    pub const SEQ: &str = "seq";
    /// A client's key that makes a retried `POST` enqueue at most once.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// `true` on a `POST` answered from an earlier one with the same key.
    pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
    /// An SSE client resuming a watch after this seq.
    pub const LAST_EVENT_ID: &str = "last-event-id";
    /// The applied index a backup was taken at.
    pub const APPLIED_INDEX: &str = "raftq-applied-index";
    /// Node-to-node: the cluster UUID of the sender (empty when it has none).
    pub const CLUSTER: &str = "raftq-cluster";
    /// Node-to-node: the node id a request is meant for.
    pub const NODE: &str = "raftq-node";
    /// Node-to-node: set on a refusal, `wrong_node` or `wrong_cluster`.
    pub const REFUSED: &str = "raftq-refused";
    /// The opaque token of a leased event (`POST /lease`, max=1).
    pub const LEASE: &str = "lease";
    /// How often the leased event was delivered (1 on first delivery).
    pub const DELIVERIES: &str = "deliveries";
}

/// Error codes of [`ErrorBody::code`], as `docs/api.md` lists them.
pub mod code {
    pub const INVALID_PATH: &str = "invalid_path";
    pub const INVALID_PARAMETER: &str = "invalid_parameter";
    pub const INVALID_UTF8: &str = "invalid_utf8";
    pub const INVALID_JSON: &str = "invalid_json";
    pub const INVALID_NAME: &str = "invalid_name";
    pub const INVALID_COUNT: &str = "invalid_count";
    pub const INVALID_NODE_ID: &str = "invalid_node_id";
    pub const INVALID_IDEMPOTENCY_KEY: &str = "invalid_idempotency_key";
    pub const MISSING_EVENT: &str = "missing_event";
    pub const DUPLICATE_EVENT: &str = "duplicate_event";
    pub const EMPTY_EVENT: &str = "empty_event";
    pub const TOO_LARGE: &str = "too_large";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    pub const NOT_FOUND: &str = "not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const SEQ_MISMATCH: &str = "seq_mismatch";
    pub const COMPACTED: &str = "compacted";
    pub const FULL: &str = "full";
    pub const DISK_FULL: &str = "disk_full";
    pub const NOT_LEADER: &str = "not_leader";
    pub const NO_LEADER: &str = "no_leader";
    pub const UNAVAILABLE: &str = "unavailable";
    pub const TOO_FEW_VOTERS: &str = "too_few_voters";
    pub const NO_TARGET: &str = "no_target";
    pub const NOT_A_VOTER: &str = "not_a_voter";
    pub const UNKNOWN_NODE: &str = "unknown_node";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const ADMIN_FORBIDDEN: &str = "admin_forbidden";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const INTERNAL: &str = "internal";
    pub const TOO_MANY_WATCHES: &str = "too_many_watches";
    pub const NOT_READY: &str = "not_ready";
    pub const LEASE_LOST: &str = "lease_lost";
    pub const INVALID_POLICY: &str = "invalid_policy";
    pub const CURSOR_CONFLICT: &str = "cursor_conflict";
    pub const TOO_MANY_WAITERS: &str = "too_many_waiters";
    pub const INVALID_BATCH: &str = "invalid_batch";
}

/// Every error answer: `{"error": "...", "code": "..."}`, plus the details
/// some codes carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// For people.
    pub error: String,
    /// For scripts: one of [`code`].
    pub code: String,
    /// `seq_mismatch`: the front seq now (`null`: the queue is empty; a
    /// reader sees that as `None` too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front: Option<Front>,
    /// `compacted`: the oldest retained seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<Seq>,
    /// `compacted`: the queue's head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Seq>,
    /// `not_leader` (a 307): where to go, as in the `Location` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `cursor_conflict`: the group's cursor now (0: none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Seq>,
}

impl ErrorBody {
    pub fn new(code: &str, error: String) -> Self {
        ErrorBody {
            error,
            code: code.to_owned(),
            front: None,
            oldest: None,
            head: None,
            location: None,
            current: None,
        }
    }
}

/// The front seq of a `seq_mismatch`, written even when there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Front(pub Option<Seq>);

/// `GET /status`: the answering node's view of itself and the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub node_id: u64,
    pub cluster_id: String,
    pub cluster_uuid: Option<String>,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    pub leader_id: Option<u64>,
    pub leader_api_url: Option<String>,
    /// On the leader: milliseconds since a quorum of voters last
    /// acknowledged it (`null` elsewhere). A leader cut off from its quorum
    /// keeps its role until it hears of a newer term, but this grows, its
    /// writes fail and `/readyz` answers 503.
    pub quorum_ack_ms: Option<u64>,
    /// On a follower or learner: milliseconds since it last accepted an
    /// AppendEntries (heartbeats included) from a leader (`null` before the
    /// first, and on the leader).
    pub leader_contact_ms: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Every node gossip knows of (a hint: Raft membership decides).
    pub members: Vec<Member>,
    /// The default queue.
    pub queue_len: u64,
    pub head_seq: Seq,
    pub front_seq: Option<Seq>,
    pub membership_last_decision: Option<String>,
    /// This node was removed from the cluster.
    pub removed: bool,
    /// `null` with `--no-maze`.
    pub maze: Option<MazeStatus>,
    /// Watch streams served now.
    pub watches: u64,
    /// Long polls (`?wait=`) waiting now.
    pub waiters: u64,
    pub disk: DiskStatus,
    pub version: String,
    /// Work-queue gauges and totals of every queue that has leases, delays
    /// or counters, by name.
    pub work: std::collections::BTreeMap<String, QueueWork>,
    /// Every queue's pointers, by name (the `default` queue too): what the
    /// console's queues view shows without one request per queue.
    pub queues: std::collections::BTreeMap<String, QueueSummary>,
}

/// One queue in [`Status::queues`]: its pointers as this node applied them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueSummary {
    /// Events from the front to the head: pending, leased and delayed ones.
    pub pending: u64,
    /// Latest assigned seq (0 before the first enqueue).
    pub head_seq: Seq,
    /// Oldest event not done, if any.
    pub front_seq: Option<Seq>,
    /// Oldest seq whose body is still stored (done events are kept until
    /// retention drops them).
    pub oldest_seq: Seq,
    /// Done events still stored (`front - oldest`).
    pub retained: u64,
}

impl From<crate::queue::QueueMeta> for QueueSummary {
    fn from(meta: crate::queue::QueueMeta) -> Self {
        QueueSummary {
            pending: meta.len(),
            head_seq: meta.head(),
            front_seq: meta.front_seq(),
            oldest_seq: meta.oldest,
            retained: meta.front.saturating_sub(meta.oldest),
        }
    }
}

/// One queue's work-queue state in [`Status::work`] (SPEC §5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueWork {
    /// Events under a lease now (expired ones until resolved).
    pub leased: u64,
    /// Events delayed now (matured ones until taken or swept).
    pub delayed: u64,
    /// Deliveries after the first, since the queue existed.
    pub redelivered: u64,
    /// Leases that expired, since the queue existed.
    pub expired: u64,
    /// Events moved to the dead-letter queue, since the queue existed.
    pub dead_lettered: u64,
}

impl From<crate::queue::WorkStats> for QueueWork {
    fn from(w: crate::queue::WorkStats) -> Self {
        QueueWork {
            leased: w.leased,
            delayed: w.delayed,
            redelivered: w.counters.redelivered,
            expired: w.counters.expired,
            dead_lettered: w.counters.dead_lettered,
        }
    }
}

/// One node as gossip sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Member {
    pub node_id: u64,
    pub raft_addr: String,
    pub api_addr: String,
    pub gossip_addr: String,
    pub live: bool,
    pub cluster_uuid: Option<String>,
    pub disk_low: bool,
}

/// The maze's counters on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MazeStatus {
    /// The replicated stream (the same on every node once applied).
    pub stream: MazeStream,
    pub clients_connected: u64,
    pub slow_disconnects: u64,
    pub bad_hellos: u64,
    pub notifications_sent: u64,
    pub notifications_dropped: u64,
    pub source_connections: u64,
    pub source_lines: u64,
    pub source_rejected_lines: u64,
    pub source_batches: u64,
    pub source_retries: u64,
    pub gap_skips: u64,
}

/// The maze stream as this node has applied it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MazeStream {
    pub epoch: u64,
    pub next_seq: u64,
    pub pending: u64,
    pub follow_edges: u64,
    /// What this node's applies did since it started.
    #[serde(flatten)]
    pub totals: LinesStats,
}

/// The free-space watermark (`--min-free-disk`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskStatus {
    pub available_bytes: u64,
    pub min_free: String,
    pub low: bool,
    /// A voter that says its disk is low.
    pub low_peer: Option<u64>,
    /// Why writes are refused now, if they are.
    pub writes_refused: Option<String>,
}

/// `GET /readyz` when ready (otherwise an [`ErrorBody`] with `not_ready`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub ready: bool,
    pub writable: bool,
    pub disk_full: Option<String>,
}

/// `GET /readyz` when not ready: an [`ErrorBody`] with `ready: false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotReady {
    pub ready: bool,
    pub error: String,
    /// [`code::NOT_READY`].
    pub code: String,
}

/// `GET /cluster/nodes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNodes {
    pub leader_id: Option<u64>,
    pub nodes: Vec<ClusterNode>,
}

/// One Raft member in [`ClusterNodes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub node_id: u64,
    pub api_url: String,
    pub raft_addr: String,
    pub voter: bool,
    pub leader: bool,
    /// Gossip sees it alive.
    pub live: bool,
    /// On the leader: the last log index it holds.
    pub matched_index: Option<u64>,
}

/// The answer of `DELETE /cluster/nodes/{id}` and
/// `POST /cluster/leader/transfer`: the membership afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub leader_id: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// The removed node (removal only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
    /// Whether leadership moved (transfer only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferred: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_leader_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_term: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
}

/// An event in a JSON answer (`GET /events`, `Accept: application/json`)
/// and in an SSE `event` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData<S = String> {
    pub seq: Seq,
    pub event: S,
}

/// `201` to a `POST` with `Accept: application/json` (the seq is also in
/// the `Seq` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    pub seq: Seq,
}

/// `GET /events`: one page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsPage {
    pub events: Vec<EventData>,
    pub head: Seq,
    pub oldest: Seq,
}

/// `POST /sequences/{name}`: the ids allocated, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocated {
    pub first: u64,
    pub last: u64,
}

/// One event of a `POST /lease` answer in JSON (`max>1` or
/// `Accept: application/json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedEvent {
    pub seq: Seq,
    pub event: String,
    /// The token `ack`, `nack` and `extend` need.
    pub lease: String,
    /// 1 on first delivery.
    pub deliveries: u32,
}

/// `POST /lease` in JSON: the leased events, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leased {
    pub leased: Vec<LeasedEvent>,
}

/// `PUT` and `GET /queues/{name}/policy`. Every field is optional; an
/// empty object removes the policy. `lease_ttl` is a duration (`30s`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliveries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<String>,
}

/// `GET` and `PUT /queues/{name}/cursors/{group}`: the group's position
/// (0: none yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    pub seq: Seq,
}

/// `201` to a batch `POST /events`: the seqs `first..=last` it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub first: Seq,
    pub last: Seq,
}

/// One line of an NDJSON batch, or one element of a JSON array batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchEvent {
    pub event: String,
}

/// The content type of a batch with one `{"event": "..."}` per line.
pub const NDJSON: &str = "application/x-ndjson";

/// Server-Sent Events of `GET /events/watch`: frame names and data.
///
/// ```text
/// retry: 1000                                  once, first
/// event: heartbeat  data: {"head","oldest"}    at once, then every second
/// id: <seq>  event: event  data: {"seq","event"}
/// event: gone  data: {"oldest","head","next"}  last: `next` was compacted
/// ```
pub mod frame {
    use serde::{Deserialize, Serialize};

    use crate::queue::Seq;

    pub use super::EventData;

    /// The content type of a watch stream.
    pub const CONTENT_TYPE: &str = "text/event-stream";
    pub const EVENT: &str = "event";
    pub const HEARTBEAT: &str = "heartbeat";
    pub const GONE: &str = "gone";
    /// The `retry:` the server suggests, in ms.
    pub const RETRY_MS: u64 = 1000;

    /// The serving node's applied head and oldest retained seq.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Heartbeat {
        pub head: Seq,
        pub oldest: Seq,
    }

    /// Seq `next` was compacted before it could be sent.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Gone {
        pub oldest: Seq,
        pub head: Seq,
        pub next: Seq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the server sends: `Value` objects, keys sorted.
    fn sent<T: Serialize>(body: &T) -> String {
        to_body(body).unwrap().to_string()
    }

    #[test]
    fn error_bodies_are_byte_for_byte_what_json_literals_made() {
        let plain = ErrorBody::new(code::NOT_FOUND, "no such resource".into());
        assert_eq!(sent(&plain), r#"{"code":"not_found","error":"no such resource"}"#);
        let empty_front = ErrorBody { front: Some(Front(None)), ..plain.clone() };
        assert_eq!(
            sent(&empty_front),
            r#"{"code":"not_found","error":"no such resource","front":null}"#
        );
        let compacted = ErrorBody { oldest: Some(3), head: Some(9), ..plain };
        assert_eq!(
            sent(&compacted),
            r#"{"code":"not_found","error":"no such resource","head":9,"oldest":3}"#
        );
        let back: ErrorBody = serde_json::from_str(&sent(&compacted)).unwrap();
        assert_eq!(back, compacted);
    }

    #[test]
    fn status_round_trips_and_tolerates_missing_fields() {
        let status = Status {
            node_id: 1,
            role: "leader".into(),
            maze: Some(MazeStatus {
                stream: MazeStream { next_seq: 7, ..Default::default() },
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = sent(&status);
        assert!(text.contains(r#""stream":{"accepted":0,"#), "{text}");
        assert_eq!(serde_json::from_str::<Status>(&text).unwrap(), status);
        let partial: Status = serde_json::from_str(r#"{"node_id":2,"future":1}"#).unwrap();
        assert_eq!((partial.node_id, partial.maze), (2, None));
    }

    #[test]
    fn membership_answers_carry_only_their_fields() {
        let removal = Membership {
            leader_id: Some(1),
            voters: vec![1, 2, 3],
            removed: Some(4),
            ..Default::default()
        };
        assert_eq!(sent(&removal), r#"{"leader_id":1,"learners":[],"removed":4,"voters":[1,2,3]}"#);
    }

    #[test]
    fn every_error_code_is_in_the_table_of_docs_api() {
        let source = include_str!("wire.rs");
        let codes = source.split("pub mod code {").nth(1).and_then(|m| m.split('}').next());
        let codes: Vec<&str> = codes.unwrap().lines().filter_map(|l| l.split('"').nth(1)).collect();
        assert!(codes.len() > 20, "{codes:?}");
        let docs = include_str!("../docs/api.md");
        let table: Vec<&str> = docs
            .lines()
            .filter(|l| {
                l.len() > 5 && l.starts_with("| ") && l[2..5].bytes().all(|b| b.is_ascii_digit())
            })
            .collect();
        for code in codes {
            assert!(
                table.iter().any(|row| row.contains(&format!("`{code}`"))),
                "error code {code:?} is missing from the table in docs/api.md"
            );
        }
    }

    #[test]
    fn default_queue_paths_have_no_prefix() {
        assert_eq!(queue_path(DEFAULT_QUEUE, "events"), "/events");
        assert_eq!(queue_path("jobs", "event"), "/queues/jobs/event");
    }
}
