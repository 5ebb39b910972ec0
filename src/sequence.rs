//! Client side of named sequences: lease blocks of ids with
//! `POST /sequences/{name}?count=K` and hand them out one by one
//! (`raftq seq next`, docs/consumers.md).
//!
//! The cluster allocates each block once, in one committed log entry, so ids
//! from replies are never repeated, across leader changes and restarts. This
//! client retries a lease on `503`, timeouts and connection errors, on every
//! URL in turn, and follows `307` to the leader. A retried request may have
//! been committed already (its reply was lost): that block is allocated but
//! never handed out by anyone. Such attempts are counted
//! ([`SequenceLeaser::unknown_outcomes`]) so callers can tell where the
//! handed-out ids may skip.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use crate::client::Client;
use crate::wire::{self, Allocated, ErrorBody};

/// Deadline of one lease request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after every node failed in a row, or while no leader is known.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Redirects followed in a row before trying the next URL instead.
const REDIRECTS_MAX: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    #[error("no node URL given")]
    NoUrls,
    #[error("batch size must be at least 1")]
    InvalidBatch,
    #[error("{url}: {status}: {body}")]
    Refused { url: String, status: StatusCode, body: String },
    #[error("no node allocated ids within {0:?}; last error: {1}")]
    Unavailable(Duration, String),
    #[error("{url}: unexpected answer: {reason}")]
    Protocol { url: String, reason: String },
}

/// Ids `first..=last`, now owned by this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub first: u64,
    pub last: u64,
}

/// See the module docs.
pub struct SequenceLeaser {
    client: Client,
    name: String,
    batch: u64,
    /// How long one lease may keep retrying before [`SequenceError::Unavailable`].
    give_up_after: Duration,
    /// Next id to hand out and the last id of the current block.
    block: Option<(u64, u64)>,
    node: usize,
    unknown_outcomes: u64,
    leases: u64,
}

impl SequenceLeaser {
    pub fn new(client: Client, name: &str, batch: u64) -> Result<Self, SequenceError> {
        if client.base_urls().is_empty() {
            return Err(SequenceError::NoUrls);
        }
        if batch == 0 {
            return Err(SequenceError::InvalidBatch);
        }
        Ok(SequenceLeaser {
            client,
            name: name.to_string(),
            batch,
            give_up_after: Duration::from_secs(120),
            block: None,
            node: 0,
            unknown_outcomes: 0,
            leases: 0,
        })
    }

    pub fn with_give_up_after(mut self, limit: Duration) -> Self {
        self.give_up_after = limit;
        self
    }

    /// Lease requests retried after an outcome that could not be known (a
    /// timeout, a broken connection, a `503 unavailable`): each may have
    /// allocated a block that is never handed out.
    pub fn unknown_outcomes(&self) -> u64 {
        self.unknown_outcomes
    }

    /// Blocks leased so far.
    pub fn leases(&self) -> u64 {
        self.leases
    }

    /// Whether the next [`SequenceLeaser::next_id`] needs a lease (a network
    /// round trip).
    pub fn needs_lease(&self) -> bool {
        self.block.is_none()
    }

    /// The next id: from the current block, or from a newly leased one.
    /// `on_lease` sees each new block before its first id is handed out.
    pub async fn next_id(&mut self, on_lease: impl FnOnce(Lease)) -> Result<u64, SequenceError> {
        let (next, last) = match self.block {
            Some(block) => block,
            None => {
                let lease = self.lease().await?;
                on_lease(lease);
                (lease.first, lease.last)
            }
        };
        self.block = (next < last).then_some((next + 1, last));
        Ok(next)
    }

    /// Lease one block of `batch` ids, retrying as the module docs say.
    pub async fn lease(&mut self) -> Result<Lease, SequenceError> {
        let path = format!("/sequences/{}?count={}", self.name, self.batch);
        let n = self.client.base_urls().len();
        let deadline = Instant::now() + self.give_up_after;
        let mut redirect: Option<String> = None;
        let mut redirects = 0;
        let mut failures = 0usize;
        let mut last_error = String::new();
        loop {
            if Instant::now() >= deadline {
                return Err(SequenceError::Unavailable(self.give_up_after, last_error));
            }
            let url = match redirect.take() {
                Some(url) => url,
                None => format!("{}{path}", self.client.base_urls()[self.node % n]),
            };
            let request = self.client.request(Method::POST, &url);
            let reply = tokio::time::timeout(REQUEST_TIMEOUT, async move {
                let response = request.send().await?;
                let status = response.status();
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .map(str::to_string);
                Ok::<_, reqwest::Error>((status, location, response.bytes().await?))
            })
            .await;
            // `certain`: the request surely allocated nothing.
            let (reason, certain) = match reply {
                Ok(Ok((StatusCode::OK, _, body))) => {
                    let lease = self.parse(&url, &body)?;
                    self.leases += 1;
                    return Ok(lease);
                }
                Ok(Ok((StatusCode::TEMPORARY_REDIRECT, Some(location), _)))
                    if redirects < REDIRECTS_MAX =>
                {
                    redirects += 1;
                    redirect = Some(location);
                    continue;
                }
                Ok(Ok((StatusCode::SERVICE_UNAVAILABLE, _, body))) => {
                    let code = serde_json::from_slice::<ErrorBody>(&body).map(|b| b.code);
                    let no_leader = code.as_deref().is_ok_and(|c| c == wire::code::NO_LEADER);
                    (format!("503: {}", String::from_utf8_lossy(&body)), no_leader)
                }
                Ok(Ok((status, _, body))) if status.is_client_error() => {
                    return Err(SequenceError::Refused {
                        url,
                        status,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                }
                Ok(Ok((StatusCode::INSUFFICIENT_STORAGE, _, body))) => {
                    return Err(SequenceError::Refused {
                        url,
                        status: StatusCode::INSUFFICIENT_STORAGE,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                }
                Ok(Ok((status, _, body))) => {
                    (format!("{status}: {}", String::from_utf8_lossy(&body)), false)
                }
                Ok(Err(e)) => (e.to_string(), e.is_connect()),
                Err(_) => ("timed out".to_string(), false),
            };
            if !certain {
                self.unknown_outcomes += 1;
            }
            tracing::debug!(url, reason, certain, "lease attempt failed; retrying");
            last_error = format!("{url}: {reason}");
            redirects = 0;
            failures += 1;
            self.node = (self.node + 1) % n;
            if failures.is_multiple_of(n) {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    fn parse(&self, url: &str, body: &[u8]) -> Result<Lease, SequenceError> {
        let protocol = |reason: String| SequenceError::Protocol { url: url.to_string(), reason };
        let a: Allocated = serde_json::from_slice(body)
            .map_err(|e| protocol(format!("not an allocation: {e}")))?;
        if a.first == 0 || a.last.checked_sub(a.first).map(|d| d + 1) != Some(self.batch) {
            return Err(protocol(format!(
                "asked for {} ids, got {}..={}",
                self.batch, a.first, a.last
            )));
        }
        Ok(Lease { first: a.first, last: a.last })
    }
}
