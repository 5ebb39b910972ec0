//! HTTP surfaces of a node.
//!
//! - The public API (`--api-addr`, HTTPS): queue routes ([`events`]),
//!   work queues: leases, batches, policies, cursors, long polls
//!   ([`work`]), watch streams ([`watch`]), status and health ([`status`]), admin
//!   routes ([`admin`]), the web console's static files ([`ui`]). Handlers parse, call the Raft facade
//!   ([`Replica`]) or the state-machine reader, and map ([`error`], the only
//!   place that picks status codes); nothing here touches RocksDB or the
//!   Raft library, or decides Raft matters. Bodies and header names are the
//!   typed contract in [`crate::wire`].
//! - The internal API (`--raft-addr`, HTTPS with required client
//!   certificates): Raft RPC and node-to-node helpers ([`internal`]).
//!
//! How a request is handled:
//!
//! ```text
//! write (POST/DELETE, sequences) ── Replica::propose: leader? ──no──▶ NotLeader: 307 to
//!                                     │yes                 the leader (same path+query) / 503
//!                                     ▼
//!                       Proposer (batch) ─▶ Raft log ─▶ commit ─▶ apply ─▶ reply
//! read (GET) ── consistency=local? ──no──▶ Replica::linearizable (read index: leader: quorum
//!                    │yes                   check; follower: ask leader), then wait applied ─┐
//!                    └────────────────────────────────────────────────────────────────────┴▶ SmReader
//! ```

pub mod admin;
pub mod error;
pub mod events;
pub mod extract;
pub mod internal;
pub mod raft_stream;
pub mod slots;
pub mod status;
pub mod ui;
pub mod watch;
pub mod work;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use self::error::ApiError;
use self::extract::{Consistency, Params};
use crate::membership::gossip::Gossip;
use crate::queue::{Command, Seq};
use crate::raft::state_machine::SmReader;
use crate::raft::types::{Op, Reply};
use crate::replica::Replica;

/// How long a `min_seq` read waits for this node to apply that seq.
const MIN_SEQ_WAIT: Duration = Duration::from_secs(5);

/// Everything a handler needs; shared by all requests.
pub struct AppState {
    /// Raft: proposals, leader routing, read index, transfer, membership.
    pub replica: Replica,
    /// This node's applied state.
    pub reader: SmReader,
    pub gossip: Arc<Gossip>,
    pub cluster_id: String,
    pub max_event_bytes: usize,
    pub auth: Auth,
    /// What `/status`, `/readyz` and `/metrics` report beyond Raft.
    pub health: Health,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub watches: watch::WatchHub,
    pub backup: admin::Backups,
    /// Long polls (`?wait=`) held now, bounded by `--max-waiters`.
    pub waiters: work::Waiters,
    /// Most events in one batch `POST /events` (`--max-batch-events`).
    pub max_batch_events: usize,
}

/// Who may call what (see `require_token`).
pub struct Auth {
    pub api_token: Option<String>,
    /// `--admin-token`; without it admin routes answer loopback clients only.
    pub admin_token: Option<String>,
}

/// The node's other moving parts, as `/status` and `/metrics` show them.
pub struct Health {
    pub last_membership_decision: Arc<Mutex<Option<String>>>,
    /// This node was removed from the cluster (see `membership::driver`).
    pub retired: Arc<std::sync::atomic::AtomicBool>,
    pub maze: Option<MazeHandles>,
    /// Connection accounting of this node's listeners, for `/metrics`.
    pub listeners: Vec<Arc<crate::listener::ListenerStats>>,
    /// The free-space watermark (`--min-free-disk`).
    pub disk: Arc<crate::node::disk::DiskGuard>,
}

/// The maze's live counters, for `/status` (absent with `--no-maze`).
#[derive(Clone)]
pub struct MazeHandles {
    pub registry: Arc<crate::maze_net::clients::Registry>,
    pub source: Arc<crate::maze_net::source::SourceCounters>,
    pub gap_skips: Arc<std::sync::atomic::AtomicU64>,
}

pub type Shared = Arc<AppState>;

impl AppState {
    /// A client's write: on the leader, else a 307 there (or 503 if none).
    async fn propose(&self, command: Command, uri: &Uri) -> Result<Reply, ApiError> {
        self.propose_op(Op::Queue(command), uri).await
    }

    async fn propose_op(&self, op: Op, uri: &Uri) -> Result<Reply, ApiError> {
        self.replica.propose(op).await.map_err(|e| error::from_propose(e, path_and_query(uri)))
    }

    /// Writes go to the leader: `Ok` here, else the 307 (or 503).
    fn route_write(&self, uri: &Uri) -> Result<(), ApiError> {
        self.replica.route_write().map_err(|e| error::not_leader(&e, path_and_query(uri)))
    }

    /// Makes this node's state fresh enough for the read the client asked for.
    async fn prepare_read(&self, params: &Params, queue: &str) -> Result<(), ApiError> {
        if extract::consistency(params)? == Consistency::Linearizable {
            self.replica.linearizable().await?;
        }
        if let Some(min_seq) = params.u64("min_seq")? {
            self.wait_for_seq(queue, min_seq).await?;
        }
        Ok(())
    }

    /// Read-your-writes: wait until this node has applied `queue`'s `seq`.
    async fn wait_for_seq(&self, queue: &str, seq: Seq) -> Result<(), ApiError> {
        // Subscribed before the check: an apply after it wakes the loop.
        let mut applied = self.reader.subscribe_applied();
        let deadline = tokio::time::Instant::now() + MIN_SEQ_WAIT;
        loop {
            if self.reader.queue(queue).is_some_and(|m| m.head() >= seq) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(ApiError::ReadUnavailable(format!(
                        "seq {seq} not applied here yet"
                    )))
                }
            }
        }
    }
}

pub fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |pq| pq.as_str())
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The route template a request matched, filled in by [`mark_route`] (which
/// runs after routing) for [`count_request`] (which runs before it).
#[derive(Clone, Default)]
struct RouteSlot(Arc<Mutex<Option<String>>>);

async fn mark_route(
    matched: Option<axum::extract::MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    if let (Some(matched), Some(slot)) = (matched, request.extensions().get::<RouteSlot>()) {
        if let Ok(mut route) = slot.0.lock() {
            *route = Some(matched.as_str().to_owned());
        }
    }
    next.run(request).await
}

/// Counts and times every public request by route template (never the raw
/// path: label cardinality must not depend on what clients send).
async fn count_request(State(state): State<Shared>, mut request: Request, next: Next) -> Response {
    let slot = RouteSlot::default();
    request.extensions_mut().insert(slot.clone());
    let method = request.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let route = slot.0.lock().ok().and_then(|r| r.clone());
    let route = route.as_deref().unwrap_or("unmatched");
    // Methods outside the standard set would be client-chosen label values.
    let method = match method {
        m if [
            http::Method::GET,
            http::Method::POST,
            http::Method::PUT,
            http::Method::DELETE,
            http::Method::HEAD,
            http::Method::OPTIONS,
            http::Method::PATCH,
        ]
        .contains(&m) =>
        {
            m.to_string()
        }
        _ => "other".to_owned(),
    };
    let metrics = &state.metrics;
    metrics
        .http_seconds
        .with_label_values(&[route, &method])
        .observe(started.elapsed().as_secs_f64());
    metrics.http_requests.with_label_values(&[route, &method, response.status().as_str()]).inc();
    response
}

/// The admin routes (SPEC §6): membership, leadership and backups, and
/// the Raft statistics.
fn is_admin_route(method: &http::Method, path: &str) -> bool {
    (method == http::Method::DELETE && path.starts_with("/cluster/nodes/"))
        || (method == http::Method::POST && path == "/cluster/leader/transfer")
        // axum runs a GET handler for HEAD too (it only drops the body).
        || ((method == http::Method::GET || method == http::Method::HEAD)
            && (path == "/cluster/backup" || path == "/debug/raft"))
}

fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn is_loopback(request: &Request) -> bool {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|c| c.0.ip().to_canonical().is_loopback())
}

/// Whether a browser says the request comes from a page of another origin
/// (`Sec-Fetch-Site`; absent outside browsers).
fn from_another_site(request: &Request) -> bool {
    request
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"cross-site" || site.as_bytes() == b"same-site")
}

/// Who may do what:
/// - `--api-token`: every route but `/healthz` and the console's static
///   files (`/ui/`, no data: the page asks for the token) needs that bearer
///   token;
/// - admin routes need `--admin-token` when it is set (it stands in for the
///   API token there; the API token never grants admin), and answer only
///   loopback clients when it is not (`403 admin_forbidden`), and of those
///   no browser page of another site.
async fn require_token(
    State(state): State<Shared>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = request.uri().path();
    let verdict = if is_admin_route(request.method(), path) {
        match (&state.auth.admin_token, &state.auth.api_token) {
            (Some(admin), _) => {
                token_matches(bearer(&request), admin).then_some(()).ok_or(ApiError::Unauthorized)
            }
            // A page of another site open in a browser on the node could
            // otherwise send a no-CORS POST (a leadership transfer) or GET
            // (a backup) that loopback lets through; browsers say where a
            // request comes from, curl sends no such header.
            (None, _) if is_loopback(&request) && from_another_site(&request) => {
                Err(ApiError::AdminForbidden(
                    "admin routes refuse requests from another site's page; use this node's \
                     console at /ui/, or curl"
                        .into(),
                ))
            }
            (None, api) if is_loopback(&request) => match api {
                Some(api) if !token_matches(bearer(&request), api) => Err(ApiError::Unauthorized),
                _ => Ok(()),
            },
            (None, _) => Err(ApiError::AdminForbidden(
                "admin routes answer only loopback clients; start the nodes with --admin-token \
                 (or --admin-token-file) to administer them from elsewhere"
                    .into(),
            )),
        }
    } else {
        match &state.auth.api_token {
            Some(token)
                if path != "/healthz"
                    && !ui::is_public(path)
                    && !token_matches(bearer(&request), token) =>
            {
                Err(ApiError::Unauthorized)
            }
            _ => Ok(()),
        }
    };
    if let Err(refusal) = verdict {
        // Read (and drop) the body before refusing: an HTTP/2 answer
        // that leaves the request body unread ends the stream with
        // RST_STREAM, which curl reports as a transport error (exit
        // 92) instead of showing the refusal. Bounded like any body.
        // Discarded chunk by chunk, never buffered.
        let limit = state.max_event_bytes.saturating_add(64 << 10);
        let drain = async {
            use futures_util::StreamExt;
            let mut body = request.into_body().into_data_stream();
            let mut read = 0usize;
            while let Some(Ok(chunk)) = body.next().await {
                read = read.saturating_add(chunk.len());
                if read > limit {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        return Err(refusal);
    }
    Ok(next.run(request).await)
}

/// Constant-time comparison (`subtle`): how long a refusal takes says
/// nothing about how much of the token was right.
fn token_matches(presented: Option<&str>, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.as_bytes())))
}

/// The public router.
pub fn public_router(state: Shared) -> Router {
    Router::new()
        .route("/event", post(events::enqueue).get(events::front).delete(events::dequeue))
        .route("/events", get(events::list).post(work::enqueue_batch))
        .route("/events/{seq}", get(events::by_seq))
        .route(
            "/queues/{queue}/event",
            post(events::enqueue).get(events::front).delete(events::dequeue),
        )
        .route("/queues/{queue}/events", get(events::list).post(work::enqueue_batch))
        .route("/queues/{queue}/events/{seq}", get(events::by_seq))
        .route("/lease", post(work::lease))
        .route("/queues/{queue}/lease", post(work::lease))
        .route("/events/{seq}/ack", post(work::ack))
        .route("/events/{seq}/nack", post(work::nack))
        .route("/events/{seq}/extend", post(work::extend))
        .route("/queues/{queue}/events/{seq}/ack", post(work::ack))
        .route("/queues/{queue}/events/{seq}/nack", post(work::nack))
        .route("/queues/{queue}/events/{seq}/extend", post(work::extend))
        .route("/policy", get(work::get_policy).put(work::put_policy))
        .route("/queues/{queue}/policy", get(work::get_policy).put(work::put_policy))
        .route("/cursors/{group}", get(work::get_cursor).put(work::put_cursor))
        .route("/queues/{queue}/cursors/{group}", get(work::get_cursor).put(work::put_cursor))
        .route("/sequences/{name}", post(events::alloc_sequence))
        .route("/events/watch", get(watch::watch))
        .route("/queues/{queue}/events/watch", get(watch::watch))
        .route("/status", get(status::status))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/cluster/nodes", get(status::nodes))
        .route("/cluster/nodes/{id}", axum::routing::delete(admin::remove_node))
        .route("/cluster/leader/transfer", post(admin::transfer_leader))
        .route("/cluster/backup", get(admin::backup))
        .route("/debug/raft", get(admin::raft_stats))
        .route("/metrics", get(status::metrics))
        .merge(ui::routes())
        .route_layer(middleware::from_fn(mark_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}
