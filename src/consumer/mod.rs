//! An embeddable, resumable consumer of one queue's log: every event exactly
//! once, in seq order, from several nodes, across node deaths, stalls and
//! retention. `raftq consume` is a thin CLI over it (docs/consumers.md).
//!
//! ```text
//!             ┌──────────── SSE  GET /events/watch?after=P  (any node) ───────────┐
//!  nodes ─────┤                                                                   ├─▶ Cursor ─▶ Item
//!             └──────── pages  GET /events?after=P&limit=L  (linearizable) ───────┘   (dedup, order,
//!                          · while no stream can be held (polling)                     gaps, loss)
//!                          · to fill a gap the stream showed
//! ```
//!
//! - The stream is preferred. A seq jump, or a heartbeat `head` still not
//!   delivered when the next heartbeat comes with no event frame in between,
//!   is a gap: it is filled from pages and the stream's own copies are then
//!   dropped as duplicates.
//! - A stream that sends no frame (heartbeats included) for
//!   [`Timing::stall`] is abandoned for the next node; so is one that ends
//!   or errs, and one that sent no event for [`Timing::quiet`] while
//!   another node has newer events (its node is cut off from the cluster). While no stream can be opened (node down, server without
//!   watch support, ...) the consumer polls pages from any node, and retries
//!   a stream with a capped backoff.
//! - `410 Gone` or an `event: gone` frame means events were compacted
//!   before this consumer read them: [`Item::Lost`] says which, and
//!   consumption continues at the oldest retained event.
//!
//! Memory is bounded: one page of events ([`Timing::page_limit`]) and the
//! SSE parser's bounded buffers. [`Consumer::next`] never gives up on
//! unreachable nodes (wrap it in a timeout to bound a wait); it fails only
//! when a node refuses the request itself (401, 400, ...). It is cancel
//! safe: an event is delivered exactly when `next` returns it.

pub mod checkpoint;
pub mod cursor;
pub mod line;
pub mod sse;

use std::collections::VecDeque;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use tokio::time::Instant;

pub use self::cursor::Lost;
use self::cursor::{Cursor, Verdict};
use self::sse::{SseParser, WatchFrame};
use crate::client::{Client, Event};
use crate::queue::Seq;
use crate::wire;

/// Timeouts and sizes; [`Timing::default`] suits a LAN or loopback cluster.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A stream with no frame for this long is abandoned. The server sends a
    /// heartbeat every second.
    pub stall: Duration,
    /// Deadline of one `/events` request, and of a stream's response headers.
    pub request: Duration,
    /// Pause between polls that found nothing new.
    pub poll_interval: Duration,
    /// Pause after every node failed a request in a row.
    pub retry_pause: Duration,
    /// A stream that has sent no event for this long is compared with
    /// another node: if that node has newer events, the stream's node is
    /// behind (cut off from the cluster) and the consumer moves on.
    pub quiet: Duration,
    /// Longest wait before trying to open a stream again.
    pub stream_backoff_max: Duration,
    /// Events asked for per `/events` page (the server caps it at 1000).
    /// With events of up to `--max-event-bytes` each, this bounds the
    /// memory a page takes.
    pub page_limit: usize,
}

const STREAM_BACKOFF_MIN: Duration = Duration::from_millis(250);

impl Default for Timing {
    fn default() -> Self {
        Timing {
            stall: Duration::from_secs(3),
            quiet: Duration::from_secs(10),
            request: Duration::from_secs(5),
            poll_interval: Duration::from_millis(300),
            retry_pause: Duration::from_millis(500),
            stream_backoff_max: Duration::from_secs(5),
            page_limit: 100,
        }
    }
}

/// What [`Consumer::next`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The next event of the queue.
    Event(Event),
    /// Events `from..=to` were compacted (retention) before they could be
    /// read; the next event is `to + 1`.
    Lost(Lost),
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("no node URL given")]
    NoUrls,
    /// A node rejected the request itself: retrying cannot help.
    #[error("{url}: {status}: {body}")]
    Refused { url: String, status: StatusCode, body: String },
}

/// Counters of what the consumer did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events delivered from an SSE stream.
    pub from_stream: u64,
    /// Events delivered from `/events` pages (polling and gap fills).
    pub from_pages: u64,
    pub streams_opened: u64,
    /// Streams that could not be opened or were abandoned (stall, end, error).
    pub stream_failures: u64,
    pub page_requests: u64,
    /// `/events` requests that failed (timeout, connection, 5xx, bad body).
    pub page_failures: u64,
    /// Gaps seen on a stream (seq jumps and overdue heartbeat heads).
    pub gaps: u64,
    /// Events reported in [`Item::Lost`].
    pub lost: u64,
}

struct Stream {
    response: reqwest::Response,
    parser: SseParser,
    node: usize,
    blocks_seen: u64,
    last_frame: Instant,
    /// Last event frame, stream start, or comparison with another node.
    last_progress: Instant,
}

/// See the module docs.
pub struct Consumer {
    client: Client,
    queue: String,
    timing: Timing,
    watch: bool,
    cursor: Cursor,
    /// The rest of the last page, in seq order.
    pending: VecDeque<Event>,
    /// A gap the stream showed: read pages until this seq is delivered.
    fill_through: Option<Seq>,
    stream: Option<Stream>,
    /// The node to ask next (index into the client's URLs).
    node: usize,
    failures_in_row: usize,
    stream_retry_at: Instant,
    stream_backoff: Duration,
    /// The last page ended before the head: the next poll needs no pause.
    more: bool,
    /// The node events come from and whether by stream, for the log line
    /// that says where the consumer reads (printed on every change).
    source: Option<(usize, bool)>,
    /// When this consumer last started waiting on its own behalf; a stream's
    /// stall clock does not run while the caller holds on to an event.
    resumed_at: Instant,
    stats: Stats,
}

/// The `oldest` of a `410 compacted` answer.
fn compacted_oldest(body: &[u8]) -> Result<Seq, String> {
    match serde_json::from_slice::<wire::ErrorBody>(body) {
        Ok(wire::ErrorBody { oldest: Some(oldest), .. }) => Ok(oldest),
        Ok(_) => Err("bad 410 body: no oldest".into()),
        Err(e) => Err(format!("bad 410 body: {e}")),
    }
}

impl Consumer {
    /// A consumer of `queue` that delivers `after + 1` first, over the nodes
    /// (and TLS settings) of `client`.
    pub fn new(client: Client, queue: &str, after: Seq) -> Result<Self, ConsumerError> {
        if client.base_urls().is_empty() {
            return Err(ConsumerError::NoUrls);
        }
        let now = Instant::now();
        Ok(Consumer {
            client,
            queue: queue.to_string(),
            timing: Timing::default(),
            watch: true,
            cursor: Cursor::new(after),
            pending: VecDeque::new(),
            fill_through: None,
            stream: None,
            node: 0,
            failures_in_row: 0,
            stream_retry_at: now,
            stream_backoff: STREAM_BACKOFF_MIN,
            more: false,
            source: None,
            resumed_at: now,
            stats: Stats::default(),
        })
    }

    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// `false`: never open an SSE stream, only poll `/events`.
    pub fn with_watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// The last delivered seq (or reported lost): resume with this as `after`.
    pub fn position(&self) -> Seq {
        self.cursor.position()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether `next` may return without waiting on the network (events of
    /// a page or frames of a stream are already here).
    pub fn has_buffered(&self) -> bool {
        !self.pending.is_empty() || self.stream.as_ref().is_some_and(|s| s.parser.has_frames())
    }

    /// The next event, or the report of a loss. See the module docs.
    pub async fn next(&mut self) -> Result<Item, ConsumerError> {
        self.resumed_at = Instant::now();
        loop {
            if let Some(event) = self.take_pending() {
                return Ok(Item::Event(event));
            }
            if let Some(through) = self.fill_through {
                if self.cursor.position() >= through {
                    self.fill_through = None;
                    self.resumed_at = Instant::now();
                } else {
                    if let Some(lost) = self.fetch_page().await? {
                        return Ok(self.lost(lost));
                    }
                    if self.pending.is_empty() {
                        // The page did not reach the gap yet (a node behind).
                        tokio::time::sleep(self.timing.poll_interval).await;
                    }
                }
                continue;
            }
            if let Some(stream) = &self.stream {
                if stream.last_progress.elapsed() >= self.timing.quiet {
                    if let Some(lost) = self.compare_quiet_stream().await? {
                        return Ok(self.lost(lost));
                    }
                    continue;
                }
                if let Some(item) = self.read_stream().await? {
                    return Ok(item);
                }
                continue;
            }
            if self.watch && Instant::now() >= self.stream_retry_at {
                if let Some(lost) = self.open_stream().await? {
                    return Ok(self.lost(lost));
                }
                if self.stream.is_some() {
                    continue;
                }
            }
            // No stream: poll.
            if let Some(lost) = self.fetch_page().await? {
                return Ok(self.lost(lost));
            }
            if self.pending.is_empty() && !self.more {
                let mut wake = Instant::now() + self.timing.poll_interval;
                if self.watch {
                    wake = wake.min(self.stream_retry_at);
                }
                tokio::time::sleep_until(wake).await;
            }
        }
    }

    fn lost(&mut self, lost: Lost) -> Item {
        self.stats.lost += lost.to - lost.from + 1;
        self.pending.clear();
        Item::Lost(lost)
    }

    fn take_pending(&mut self) -> Option<Event> {
        while let Some(event) = self.pending.pop_front() {
            match self.cursor.offer(event.seq) {
                Verdict::Deliver => {
                    self.cursor.delivered(event.seq);
                    self.stats.from_pages += 1;
                    return Some(event);
                }
                Verdict::Duplicate => {}
                Verdict::Gap { through } => {
                    // Pages are gapless from `after`, so this page is stale;
                    // read again from the position.
                    self.pending.clear();
                    self.fill_through = self.fill_through.max(Some(through));
                }
            }
        }
        None
    }

    fn base(&self, node: usize) -> &str {
        let urls = self.client.base_urls();
        &urls[node % urls.len()]
    }

    fn next_node(&self, node: usize) -> usize {
        (node + 1) % self.client.base_urls().len()
    }

    /// One `/events` page after the position from the current node into
    /// `pending`; `Some` when the server says the events after the position
    /// were compacted. A failed request moves to the next node.
    async fn fetch_page(&mut self) -> Result<Option<Lost>, ConsumerError> {
        let after = self.cursor.position();
        let path = Client::queue_path(&self.queue, "events");
        let url = format!(
            "{}{path}?after={after}&limit={}",
            self.base(self.node),
            self.timing.page_limit
        );
        self.stats.page_requests += 1;
        let request = self.client.request(Method::GET, &url);
        let reply = tokio::time::timeout(self.timing.request, async move {
            let response = request.send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.bytes().await?))
        })
        .await;
        let (status, body) = match reply {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return self.page_failed(&url, error_chain(&e)).await,
            Err(_) => return self.page_failed(&url, "timed out".into()).await,
        };
        match status {
            StatusCode::OK => {
                let page: wire::EventsPage = match serde_json::from_slice(&body) {
                    Ok(page) => page,
                    Err(e) => return self.page_failed(&url, format!("bad page: {e}")).await,
                };
                self.failures_in_row = 0;
                if self.stream.is_none() {
                    self.note_source(self.node, false);
                }
                self.more = page.events.last().is_some_and(|e| e.seq < page.head);
                self.pending.extend(
                    page.events
                        .into_iter()
                        .filter(|e| e.seq > after)
                        .map(|e| Event { seq: e.seq, event: e.event }),
                );
                Ok(None)
            }
            StatusCode::GONE => match compacted_oldest(&body) {
                Ok(oldest) => {
                    self.failures_in_row = 0;
                    Ok(self.cursor.compacted(oldest))
                }
                Err(e) => self.page_failed(&url, e).await,
            },
            s if s.is_client_error() => Err(refused(url, status, &body)),
            s => self.page_failed(&url, format!("{s}: {}", text(&body))).await,
        }
    }

    async fn page_failed(
        &mut self,
        url: &str,
        reason: String,
    ) -> Result<Option<Lost>, ConsumerError> {
        tracing::debug!(url, reason, "consumer: /events request failed; trying the next node");
        self.stats.page_failures += 1;
        self.failures_in_row += 1;
        self.node = self.next_node(self.node);
        if self.failures_in_row.is_multiple_of(self.client.base_urls().len()) {
            tokio::time::sleep(self.timing.retry_pause).await;
        }
        Ok(None)
    }

    /// Try to open a stream on the current node.
    async fn open_stream(&mut self) -> Result<Option<Lost>, ConsumerError> {
        let node = self.node;
        let after = self.cursor.position();
        let path = Client::queue_path(&self.queue, "events/watch");
        let url = format!("{}{path}?after={after}", self.base(node));
        let request = self
            .client
            .request(Method::GET, &url)
            .header(reqwest::header::ACCEPT, wire::frame::CONTENT_TYPE);
        let response = match tokio::time::timeout(self.timing.request, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                self.stream_failed(node, &url, error_chain(&e));
                return Ok(None);
            }
            Err(_) => {
                self.stream_failed(node, &url, "timed out".into());
                return Ok(None);
            }
        };
        let status = response.status();
        let is_stream = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(wire::frame::CONTENT_TYPE));
        if status == StatusCode::OK && is_stream {
            self.note_source(node, true);
            self.cursor.stream_started();
            self.stats.streams_opened += 1;
            let now = Instant::now();
            self.stream = Some(Stream {
                response,
                parser: SseParser::new(),
                node,
                blocks_seen: 0,
                last_frame: now,
                last_progress: now,
            });
            return Ok(None);
        }
        let body = match tokio::time::timeout(self.timing.request, response.bytes()).await {
            Ok(Ok(body)) => body,
            _ => Default::default(),
        };
        match status {
            StatusCode::GONE => match compacted_oldest(&body) {
                Ok(oldest) => Ok(self.cursor.compacted(oldest)),
                Err(e) => {
                    self.stream_failed(node, &url, e);
                    Ok(None)
                }
            },
            // The same request on /events would be refused too; anything else
            // (404/405 from a server without watch, 503, a wrong content type)
            // leaves polling to carry on.
            StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(refused(url, status, &body))
            }
            _ => {
                self.stream_failed(node, &url, format!("{status}: {}", text(&body)));
                Ok(None)
            }
        }
    }

    /// Drop the stream (if any), move to the next node, back off.
    fn stream_failed(&mut self, node: usize, url: &str, reason: String) {
        tracing::debug!(url, reason, "consumer: no stream; polling meanwhile");
        self.stream = None;
        self.stats.stream_failures += 1;
        if self.node == node {
            self.node = self.next_node(node);
        }
        self.stream_retry_at = Instant::now() + self.stream_backoff;
        self.stream_backoff = (self.stream_backoff * 2).min(self.timing.stream_backoff_max);
    }

    /// The stream sent no event for [`Timing::quiet`]: read a page from
    /// another node. Events there that this stream has not sent in all that
    /// time mean its node is behind; the page's events are delivered and
    /// the stream moves to another node.
    async fn compare_quiet_stream(&mut self) -> Result<Option<Lost>, ConsumerError> {
        let Some(stream) = self.stream.as_mut() else { return Ok(None) };
        stream.last_progress = Instant::now();
        let node = stream.node;
        if self.client.base_urls().len() < 2 {
            return Ok(None);
        }
        self.node = self.next_node(node);
        if let Some(lost) = self.fetch_page().await? {
            return Ok(Some(lost));
        }
        if !self.pending.is_empty() {
            let url = self.base(node).to_string();
            self.stream_failed(node, &url, "behind another node".to_string());
        }
        Ok(None)
    }

    /// Handle one frame of the stream, reading more bytes if none is parsed.
    async fn read_stream(&mut self) -> Result<Option<Item>, ConsumerError> {
        let Some(stream) = self.stream.as_mut() else { return Ok(None) };
        let node = stream.node;
        if let Some(raw) = stream.parser.next_frame() {
            let frame = match WatchFrame::decode(&raw) {
                Ok(frame) => frame,
                Err(e) => {
                    let url = self.base(node).to_string();
                    self.stream_failed(node, &url, e.to_string());
                    return Ok(None);
                }
            };
            match frame {
                WatchFrame::Event { seq, event } => {
                    stream.last_progress = Instant::now();
                    match self.cursor.offer_streamed(seq) {
                        Verdict::Deliver => {
                            self.cursor.delivered(seq);
                            self.stats.from_stream += 1;
                            return Ok(Some(Item::Event(Event { seq, event })));
                        }
                        Verdict::Duplicate => {}
                        Verdict::Gap { through } => self.gap(through),
                    }
                }
                WatchFrame::Heartbeat { head, .. } => {
                    if let Some(through) = self.cursor.heartbeat(head) {
                        self.gap(through);
                    }
                }
                WatchFrame::Gone { oldest, .. } => {
                    // The server closes the stream after this frame.
                    self.stream = None;
                    self.stream_retry_at = Instant::now();
                    if let Some(lost) = self.cursor.compacted(oldest) {
                        return Ok(Some(self.lost(lost)));
                    }
                }
                WatchFrame::Other { .. } => {}
            }
            return Ok(None);
        }
        let deadline = stream.last_frame.max(self.resumed_at) + self.timing.stall;
        let reason = match tokio::time::timeout_at(deadline, stream.response.chunk()).await {
            Ok(Ok(Some(bytes))) => match stream.parser.feed(&bytes) {
                Ok(()) => {
                    if stream.parser.blocks() != stream.blocks_seen {
                        stream.blocks_seen = stream.parser.blocks();
                        stream.last_frame = Instant::now();
                        self.stream_backoff = STREAM_BACKOFF_MIN;
                    }
                    return Ok(None);
                }
                Err(e) => e.to_string(),
            },
            Ok(Ok(None)) => "the server ended the stream".to_string(),
            Ok(Err(e)) => error_chain(&e),
            Err(_) => format!("stalled: no frame for {:?}", self.timing.stall),
        };
        let url = self.base(node).to_string();
        self.stream_failed(node, &url, reason);
        Ok(None)
    }

    fn note_source(&mut self, node: usize, stream: bool) {
        if self.source != Some((node, stream)) {
            self.source = Some((node, stream));
            let how = if stream { "an SSE stream" } else { "polling /events" };
            tracing::info!(url = self.base(node), "consumer: reading from {how}");
        }
    }

    fn gap(&mut self, through: Seq) {
        self.stats.gaps += 1;
        tracing::debug!(
            position = self.cursor.position(),
            through,
            "consumer: the stream skipped events; reading them from /events"
        );
        self.fill_through = self.fill_through.max(Some(through));
    }
}

fn refused(url: String, status: StatusCode, body: &[u8]) -> ConsumerError {
    ConsumerError::Refused { url, status, body: text(body) }
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned()
}

/// reqwest's Display hides the cause ("error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
