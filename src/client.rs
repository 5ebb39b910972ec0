//! A small raftq API client for the CLI subcommands (and anyone embedding
//! raftq access in Rust).
//!
//! It follows `307` redirects itself (re-sending the bearer token, which
//! generic clients drop on a cross-origin redirect), retries `503` answers
//! and connection failures on the next URL given, and gives up after a
//! bounded number of attempts.
//!
//! Retrying a write is only safe when a repeat cannot apply twice: a POST
//! always carries an `Idempotency-Key` (the caller's, or a random one made
//! once and reused on every retry), and a DELETE names the seq it removes
//! (`?seq=`, read from the front first). When the last word from the cluster
//! left the outcome open, the error says so ([`ClientError::Unknown`]) rather
//! than claiming a failure.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::queue::Seq;
use crate::wire::{self, header};

const ATTEMPTS_MAX: usize = 20;
/// The pause before the first retry; it doubles with every failed attempt
/// up to [`RETRY_PAUSE_MAX`]. Short at first: a node that knows no leader
/// holds a write until one is elected, so the first retries mostly meet a
/// dead node's refused connection or a stale redirect, which a new leader
/// a few milliseconds later fixes.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(10);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(500);
/// Longer than the server's 10 s write timeout, so that a slow commit is
/// answered (503 outcome unknown) rather than cut off.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("no node answered: {0}")]
    Unreachable(String),
    #[error("{status}: {body}")]
    Api { status: StatusCode, body: String },
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// `409 lease_lost`: the lease expired and the event was leased again
    /// or acked, or the event is gone. When a retried ack or nack gets it,
    /// an earlier attempt whose response was lost may have taken effect
    /// (`maybe_ours`); a worker cannot tell and does not need to: either
    /// way the event is no longer its to settle.
    #[error("lease lost{}: {body}", if *maybe_ours { " (an earlier attempt may have settled it)" } else { "" })]
    LeaseLost { body: String, maybe_ours: bool },
    /// `409` on a cursor compare-and-set: the cursor is not at the `if=`
    /// seq (another consumer of the group moved it); `current` is where it
    /// is now, when the answer said.
    #[error("cursor moved: it is at {current:?}, not where this consumer left it")]
    CursorMoved { current: Option<Seq> },
    /// The request may or may not have taken effect (a response was lost or
    /// the cluster said the outcome is unknown).
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// What became of a request that got no final answer.
#[derive(Debug)]
enum Attempts {
    /// Nothing was sent that could have taken effect.
    NotSent(String),
    /// Some attempt may have reached the leader.
    MaybeSent(String),
}

/// Where and how to reach the cluster (the client subcommands build it from
/// `--url`, `--ca`, `--insecure` and `--token`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientConfig {
    /// Node API base URLs, tried in order.
    pub urls: Vec<String>,
    /// CA certificate to verify the nodes with (default: the system roots).
    pub ca: Option<std::path::PathBuf>,
    /// Do not verify the node's certificate (like curl -k).
    pub insecure: bool,
    /// Bearer token for nodes started with `--api-token`.
    pub token: Option<String>,
}

pub struct Client {
    http: reqwest::Client,
    urls: Vec<String>,
    token: Option<String>,
    /// The base URL of the node that last took a write, or that a 307
    /// named: the next request goes there first, as etcd's client keeps
    /// its leader. Forgotten when it fails, so `urls` are tried in order
    /// again.
    leader: std::sync::Mutex<Option<String>>,
}

/// One leased event (`POST /lease`): seq, event, lease token, deliveries.
pub use crate::wire::LeasedEvent as Lease;

/// What an ack, nack or extend does to a lease (the last path segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Ack,
    /// Give it back, now or after a delay.
    Nack {
        delay: Option<Duration>,
    },
    /// Keep it for `ttl` more from now.
    Extend {
        ttl: Duration,
    },
}

/// A duration as a query value the server parses (`units::parse_duration`).
fn query_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `POST /events/{seq}/ack|nack|extend?lease=TOKEN[&delay=|&ttl=]`.
fn settle_path(queue: &str, seq: Seq, token: &str, how: Settle) -> String {
    let (verb, extra) = match how {
        Settle::Ack => ("ack", String::new()),
        Settle::Nack { delay: None } => ("nack", String::new()),
        Settle::Nack { delay: Some(d) } => ("nack", format!("&delay={}", query_duration(d))),
        Settle::Extend { ttl } => ("extend", format!("&ttl={}", query_duration(ttl))),
    };
    let path = wire::queue_path(queue, &format!("events/{seq}/{verb}"));
    format!("{path}?lease={}{extra}", encode(token))
}

/// An event as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: Seq,
    pub event: String,
}

impl Client {
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let http = crate::tls::api_client_builder(config.ca.as_deref(), config.insecure, None)?
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Tls(crate::tls::TlsError::Client(e.to_string())))?;
        let urls = config
            .urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        Ok(Client { http, urls, token: config.token.clone(), leader: Default::default() })
    }

    /// The node base URLs given (no trailing slash), in order.
    pub fn base_urls(&self) -> &[String] {
        &self.urls
    }

    /// One request to `url` carrying the bearer token. Redirects are not
    /// followed and no overall timeout is set: for callers that handle
    /// retries and redirects themselves (the consumer, the sequence leaser).
    pub fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request to the first node that answers, following redirects
    /// to the leader and retrying while there is none.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
        headers: &[(&str, String)],
    ) -> Result<reqwest::Response, ClientError> {
        self.send_tracked(method, path, body, headers, Duration::ZERO)
            .await
            .map(|(r, _)| r)
            .map_err(|a| match a {
                Attempts::NotSent(e) => ClientError::Unreachable(e),
                Attempts::MaybeSent(e) => ClientError::Unknown(e),
            })
    }

    /// [`Client::send`], telling apart failures that may have written. With
    /// a response, also says why an earlier attempt may have taken effect.
    /// `wait` is how long the server may hold the request open on purpose
    /// (a long poll's `?wait=`), added to the request timeout.
    async fn send_tracked(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
        headers: &[(&str, String)],
        wait: Duration,
    ) -> Result<(reqwest::Response, Option<String>), Attempts> {
        let mut last_error = String::from("no --url given");
        let mut maybe_sent = false;
        let mut target: Option<String> = self.leader_hint().map(|base| format!("{base}{path}"));
        let mut next_url = 0;
        for attempt in 0..ATTEMPTS_MAX {
            let url = match target.take() {
                Some(url) => url,
                None => match self.urls.get(next_url % self.urls.len().max(1)) {
                    Some(base) => {
                        next_url += 1;
                        format!("{base}{path}")
                    }
                    None => break,
                },
            };
            let mut request =
                self.http.request(method.clone(), &url).timeout(REQUEST_TIMEOUT + wait);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            if let Some((content_type, bytes)) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(bytes.clone());
            }
            match request.send().await {
                Ok(response) if response.status() == StatusCode::TEMPORARY_REDIRECT => {
                    let location = response
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|l| l.to_str().ok());
                    match location {
                        Some(location) => {
                            self.set_leader_hint(base_of(location));
                            target = Some(location.to_string());
                        }
                        None => return Err(Attempts::MaybeSent("307 without Location".into())),
                    }
                }
                Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    // `unavailable` is the server's "outcome unknown";
                    // `no_leader` and the like wrote nothing.
                    let text = response.text().await.unwrap_or_default();
                    maybe_sent |= text.contains("\"code\":\"unavailable\"");
                    last_error = format!("{url}: {text}");
                    self.set_leader_hint(None);
                    tokio::time::sleep(retry_pause(attempt)).await;
                }
                Ok(response) => {
                    if method != Method::GET && response.status().is_success() {
                        self.set_leader_hint(base_of(&url));
                    }
                    return Ok((response, maybe_sent.then_some(last_error)));
                }
                Err(e) => {
                    // A connect failure sent nothing; anything later may have.
                    maybe_sent |= !e.is_connect();
                    last_error = format!("{url}: {e}");
                    self.set_leader_hint(None);
                    tokio::time::sleep(retry_pause(attempt)).await;
                }
            }
        }
        Err(if maybe_sent && method != Method::GET {
            Attempts::MaybeSent(last_error)
        } else {
            Attempts::NotSent(last_error)
        })
    }

    fn leader_hint(&self) -> Option<String> {
        self.leader.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_leader_hint(&self, base: Option<String>) {
        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = base;
    }

    async fn expect_ok(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        if response.status().is_success() {
            Ok(response)
        } else {
            let status = response.status();
            Err(ClientError::Api { status, body: response.text().await.unwrap_or_default() })
        }
    }

    fn seq_header(response: &reqwest::Response) -> Result<Seq, ClientError> {
        response
            .headers()
            .get(header::SEQ)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::Protocol("missing Seq header".into()))
    }

    /// `/{rest}` for the queue `default`, else `/queues/{queue}/{rest}`.
    pub fn queue_path(queue: &str, rest: &str) -> String {
        wire::queue_path(queue, rest)
    }

    /// `/status` of exactly the node at `base` (no failover, no redirect),
    /// with a short timeout: for surveying every member.
    pub async fn status_of(&self, base: &str) -> Result<wire::Status, ClientError> {
        let url = format!("{}/status", base.trim_end_matches('/'));
        let mut request = self.http.get(&url).timeout(Duration::from_secs(3));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response =
            request.send().await.map_err(|e| ClientError::Unreachable(format!("{url}: {e}")))?;
        let response = Self::expect_ok(response).await?;
        response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn status(&self) -> Result<wire::Status, ClientError> {
        let response = Self::expect_ok(self.send(Method::GET, "/status", None, &[]).await?).await?;
        response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Enqueues `event`; every retry carries the same `Idempotency-Key`
    /// (`idempotency_key`, or a random one), so it is enqueued at most once.
    pub async fn post(
        &self,
        queue: &str,
        event: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Seq, ClientError> {
        let body = ("text/plain; charset=utf-8", event.as_bytes().to_vec());
        let path = Self::queue_path(queue, "event");
        let response = self.post_keyed(&path, body, idempotency_key).await?;
        Self::seq_header(&response)
    }

    /// Enqueues `events` in one Raft entry, all or nothing (`POST /events`
    /// as NDJSON); one `Idempotency-Key` covers the batch, so a retry never
    /// enqueues it twice. Returns the first and last seq given.
    pub async fn post_batch(
        &self,
        queue: &str,
        events: &[String],
        idempotency_key: Option<&str>,
    ) -> Result<(Seq, Seq), ClientError> {
        let mut ndjson = Vec::new();
        for event in events {
            let line = wire::BatchEvent { event: event.clone() };
            serde_json::to_writer(&mut ndjson, &line)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            ndjson.push(b'\n');
        }
        let path = Self::queue_path(queue, "events");
        let response = self.post_keyed(&path, (wire::NDJSON, ndjson), idempotency_key).await?;
        let body: wire::Batch =
            response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok((body.first, body.last))
    }

    /// A successful answer to a POST that carries an `Idempotency-Key` on
    /// every retry; an outcome left open names the key to re-run with.
    async fn post_keyed(
        &self,
        path: &str,
        body: (&'static str, Vec<u8>),
        idempotency_key: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        let key = idempotency_key
            .map(str::to_string)
            .unwrap_or_else(|| format!("raftq-cli-{}", uuid::Uuid::new_v4()));
        let headers = vec![(header::IDEMPOTENCY_KEY, key.clone())];
        let rerun = |why: String| {
            ClientError::Unknown(format!(
                "{why}; re-run with --idempotency-key {key} to enqueue it at most once"
            ))
        };
        let (response, unsure) =
            match self.send_tracked(Method::POST, path, Some(body), &headers, Duration::ZERO).await
            {
                Ok(answer) => answer,
                Err(Attempts::NotSent(e)) => return Err(ClientError::Unreachable(e)),
                Err(Attempts::MaybeSent(e)) => return Err(rerun(e)),
            };
        // A refusal after an attempt that may have been applied (say a 507
        // for disk space) does not mean the event is not in the queue.
        if let (Some(why), false) = (&unsure, response.status().is_success()) {
            let status = response.status();
            return Err(rerun(format!("{why}; then the cluster answered {status}")));
        }
        Self::expect_ok(response).await
    }

    async fn event_or_empty(response: reqwest::Response) -> Result<Option<Event>, ClientError> {
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let response = Self::expect_ok(response).await?;
        let seq = Self::seq_header(&response)?;
        let event = response.text().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Some(Event { seq, event }))
    }

    pub async fn get(&self, queue: &str) -> Result<Option<Event>, ClientError> {
        Self::event_or_empty(
            self.send(Method::GET, &Self::queue_path(queue, "event"), None, &[]).await?,
        )
        .await
    }

    /// Removes the front event, or only event `seq` when given. Without
    /// `seq` it reads the front first and removes by seq, so a retry after
    /// a lost response can never remove a second event.
    pub async fn delete(
        &self,
        queue: &str,
        seq: Option<Seq>,
    ) -> Result<Option<Event>, ClientError> {
        if let Some(seq) = seq {
            return self.delete_seq(queue, seq).await;
        }
        // Another consumer may take the front between our read and our
        // delete (409): read again, a bounded number of times.
        for _ in 0..ATTEMPTS_MAX {
            let Some(front) = self.get(queue).await? else { return Ok(None) };
            match self.delete_seq(queue, front.seq).await {
                Err(ClientError::Api { status: StatusCode::CONFLICT, .. }) => continue,
                other => return other,
            }
        }
        Err(ClientError::Protocol("the front kept changing under concurrent deletes".into()))
    }

    async fn delete_seq(&self, queue: &str, seq: Seq) -> Result<Option<Event>, ClientError> {
        let path = format!("{}?seq={seq}", Self::queue_path(queue, "event"));
        let (response, unsure) =
            match self.send_tracked(Method::DELETE, &path, None, &[], Duration::ZERO).await {
                Ok(answer) => answer,
                Err(Attempts::NotSent(e)) => return Err(ClientError::Unreachable(e)),
                Err(Attempts::MaybeSent(e)) => return Err(ClientError::Unknown(e)),
            };
        let answer = Self::event_or_empty(response).await;
        match (unsure, answer) {
            // An earlier attempt may have removed it: "not the front any
            // more" and "empty" do not tell who did.
            (Some(why), Err(ClientError::Api { status: StatusCode::CONFLICT, .. })) => {
                Err(ClientError::Unknown(format!(
                    "event {seq} is no longer at the front; an earlier attempt whose response was \
                     lost may have removed it ({why})"
                )))
            }
            (Some(why), Ok(None)) => Err(ClientError::Unknown(format!(
                "the queue is empty now; an earlier attempt whose response was lost may have \
                 removed event {seq} ({why})"
            ))),
            (_, answer) => answer,
        }
    }
}

/// Work queues (SPEC §5): leases, their settlement, group cursors.
///
/// Retries: a lease whose response is lost leased events nobody will see;
/// their leases expire and they are delivered again (their `Deliveries`
/// count shows it), which is the at-least-once contract, so leasing is
/// retried like a read. An ack or nack is retried too: if an earlier
/// attempt took effect, the retry is answered `409 lease_lost`, which the
/// client reports as [`ClientError::LeaseLost`] with `maybe_ours`.
impl Client {
    /// Leases up to `max` available events for `ttl`, waiting up to `wait`
    /// (at most 60 s) for one to become available; empty when none did.
    pub async fn lease(
        &self,
        queue: &str,
        ttl: Duration,
        max: u32,
        wait: Duration,
    ) -> Result<Vec<Lease>, ClientError> {
        let mut path =
            format!("{}?ttl={}&max={max}", Self::queue_path(queue, "lease"), query_duration(ttl));
        if !wait.is_zero() {
            path.push_str(&format!("&wait={}", query_duration(wait)));
        }
        let accept = vec![(reqwest::header::ACCEPT.as_str(), "application/json".to_string())];
        let (response, _) = self
            .send_tracked(Method::POST, &path, None, &accept, wait)
            .await
            .map_err(|a| match a {
                // Lost leases expire by themselves: nothing to be unsure of.
                Attempts::NotSent(e) | Attempts::MaybeSent(e) => ClientError::Unreachable(e),
            })?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        let response = Self::expect_ok(response).await?;
        let body: wire::Leased =
            response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(body.leased)
    }

    /// Acks, nacks or extends the lease `token` of event `seq`.
    pub async fn settle(
        &self,
        queue: &str,
        seq: Seq,
        token: &str,
        how: Settle,
    ) -> Result<(), ClientError> {
        let path = settle_path(queue, seq, token, how);
        let (response, unsure) =
            match self.send_tracked(Method::POST, &path, None, &[], Duration::ZERO).await {
                Ok(answer) => answer,
                Err(Attempts::NotSent(e)) => return Err(ClientError::Unreachable(e)),
                Err(Attempts::MaybeSent(e)) => return Err(ClientError::Unknown(e)),
            };
        if response.status() == StatusCode::CONFLICT {
            let body = response.text().await.unwrap_or_default();
            return Err(ClientError::LeaseLost { body, maybe_ours: unsure.is_some() });
        }
        Self::expect_ok(response).await.map(drop)
    }

    /// The cursor of consumer group `group` on `queue`: the last seq the
    /// group has processed; `None` when it was never set.
    pub async fn cursor(&self, queue: &str, group: &str) -> Result<Option<Seq>, ClientError> {
        let path = Self::queue_path_named(queue, &format!("cursors/{}", encode(group)));
        let response = self.send(Method::GET, &path, None, &[]).await?;
        let response = Self::expect_ok(response).await?;
        let body: wire::Cursor =
            response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        // The server answers 0 for a group that has no cursor yet.
        Ok((body.seq > 0).then_some(body.seq))
    }

    /// Moves the cursor of `group` to `seq` if it is at `expected` now (0:
    /// never set). Retried: if an earlier attempt whose response was lost
    /// set it, the retry finds the cursor at `seq` and that counts as done.
    pub async fn set_cursor(
        &self,
        queue: &str,
        group: &str,
        seq: Seq,
        expected: Seq,
    ) -> Result<(), ClientError> {
        let path = format!(
            "{}?if={expected}",
            Self::queue_path_named(queue, &format!("cursors/{}", encode(group)))
        );
        let body = serde_json::to_vec(&wire::Cursor { seq })
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (response, unsure) = match self
            .send_tracked(Method::PUT, &path, Some(("application/json", body)), &[], Duration::ZERO)
            .await
        {
            Ok(answer) => answer,
            Err(Attempts::NotSent(e)) => return Err(ClientError::Unreachable(e)),
            Err(Attempts::MaybeSent(e)) => return Err(ClientError::Unknown(e)),
        };
        if response.status() != StatusCode::CONFLICT {
            return Self::expect_ok(response).await.map(drop);
        }
        let text = response.text().await.unwrap_or_default();
        let current = serde_json::from_str::<wire::ErrorBody>(&text).ok().and_then(|e| e.current);
        match (unsure, current) {
            (Some(_), Some(now)) if now == seq => Ok(()),
            _ => Err(ClientError::CursorMoved { current }),
        }
    }

    /// `/queues/{queue}/{rest}` even for the default queue (cursors and
    /// policies exist only under `/queues/`).
    fn queue_path_named(queue: &str, rest: &str) -> String {
        format!("/queues/{}/{rest}", encode(queue))
    }
}

/// `scheme://host:port` of a URL (`None` if it is not one).
fn base_of(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// The pause after failed attempt `attempt` (0-based): exponential from
/// [`RETRY_PAUSE_MIN`] to [`RETRY_PAUSE_MAX`], each drawn from its upper
/// half so that clients that failed together do not retry in step. 20
/// attempts span about 7 s, longer than any election.
fn retry_pause(attempt: usize) -> Duration {
    use rand::Rng;
    let doubled = RETRY_PAUSE_MIN.saturating_mul(1u32 << attempt.min(16));
    let ceiling = doubled.min(RETRY_PAUSE_MAX);
    rand::thread_rng().gen_range(ceiling / 2..=ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn retry_pauses_grow_from_the_minimum_to_the_maximum() {
        for _ in 0..100 {
            let first = retry_pause(0);
            assert!((RETRY_PAUSE_MIN / 2..=RETRY_PAUSE_MIN).contains(&first));
            let late = retry_pause(19);
            assert!((RETRY_PAUSE_MAX / 2..=RETRY_PAUSE_MAX).contains(&late));
            assert!(retry_pause(3) <= RETRY_PAUSE_MIN * 8);
        }
        let total: Duration = (0..ATTEMPTS_MAX).map(retry_pause).sum();
        assert!(total >= Duration::from_secs(3), "retries give up too soon: {total:?}");
    }

    #[test]
    fn a_leader_hint_is_the_origin_of_a_url() {
        assert_eq!(
            base_of("https://10.0.0.2:8080/queues/q/event?delay=1s").as_deref(),
            Some("https://10.0.0.2:8080")
        );
        assert_eq!(base_of("https://n1/event").as_deref(), Some("https://n1"));
        assert_eq!(base_of("/event"), None);
    }

    #[test]
    fn settle_paths_name_the_queue_the_verb_and_the_encoded_token() {
        let d = Duration::from_millis(1500);
        assert_eq!(
            settle_path("default", 7, "ab-7-1", Settle::Ack),
            "/events/7/ack?lease=ab%2D7%2D1"
        );
        assert_eq!(
            settle_path("jobs", 7, "t", Settle::Nack { delay: Some(d) }),
            "/queues/jobs/events/7/nack?lease=t&delay=1500ms"
        );
        assert_eq!(
            settle_path("jobs", 7, "t", Settle::Nack { delay: None }),
            "/queues/jobs/events/7/nack?lease=t"
        );
        assert_eq!(
            settle_path("jobs", 7, "a&b", Settle::Extend { ttl: d }),
            "/queues/jobs/events/7/extend?lease=a%26b&ttl=1500ms"
        );
    }

    #[test]
    fn query_durations_parse_back() {
        for d in [Duration::from_millis(1), Duration::from_secs(30), Duration::from_millis(2500)] {
            assert_eq!(crate::units::parse_duration(&query_duration(d)), Ok(d));
        }
    }
}
