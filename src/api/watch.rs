//! `GET /events/watch` and `GET /queues/{queue}/events/watch`: a queue's
//! events as Server-Sent Events, from any seq, on any node.
//!
//! The wire format is agreed with the consumer side in the project notes and
//! documented in `docs/api.md`: a `retry:` frame, a `heartbeat` frame
//! (`{"head","oldest"}`) at once and then every second, one `event` frame
//! per event (`id: <seq>`), and a final `gone` frame if the stream's next
//! seq is compacted before it could be sent.
//!
//! Each watch is one task that reads pages of events from this node's
//! applied state ([`SmReader`]) and hands them to the response body through
//! a channel of two chunks, so a watcher holds at most a few
//! pages in memory however far behind it is; the task sleeps on the state
//! machine's apply signal between pages. It ends when the client goes away,
//! when the client stops reading for 30 s, or when the
//! node shuts down (the body then ends cleanly and the client resumes
//! elsewhere with `Last-Event-ID`). At most `--max-watches` run per node.
//!
//! ```text
//!  apply ─▶ applied signal ─▶ watcher task ── page read (≤256 events, ≤64 KiB) ─▶ frames
//!                                 │                                              │
//!                                 └── every 1 s: heartbeat ──▶ bounded channel ──▶ body
//! ```

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Uri};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use serde::Serialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::extract::{Params, QueuePath};
use super::Shared;
use crate::queue::{QueueMeta, Seq};
use crate::raft::db::StoreError;
use crate::raft::state_machine::SmReader;
use crate::raft::types::LogId;
use crate::wire::frame::{EventData, Gone, Heartbeat, RETRY_MS};
use crate::wire::{self, code, frame};

/// Interval between heartbeats.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Chunks (pages of frames) queued between a watcher task and its
/// connection; with the page bounds below this caps a watcher's memory.
const CHANNEL_CHUNKS: usize = 2;
/// A client that accepts nothing for this long is cut off (see [`Stop`]).
const SLOW_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const LAST_EVENT_ID: HeaderName = HeaderName::from_static(wire::header::LAST_EVENT_ID);

/// How much one page read may hold.
#[derive(Debug, Clone, Copy)]
struct PageLimits {
    events: usize,
    /// Body bytes; a page holds at least one event even if it is larger.
    bytes: usize,
}

const PAGE: PageLimits = PageLimits { events: 256, bytes: 64 * 1024 };

/// This node's watch slots (`--max-watches`), and the signal that ends
/// every stream on shutdown.
pub type WatchHub = super::slots::Slots;

/// `GET /events/watch` and `GET /queues/{queue}/events/watch`.
pub async fn watch(
    State(state): State<Shared>,
    QueuePath { queue, .. }: QueuePath,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query())?;
    let requested = start_after(&headers, &params)?;
    // Subscribed before the first read: an apply after it wakes the task.
    let applied = state.reader.subscribe_applied();
    let meta = state.reader.queue(&queue).unwrap_or(QueueMeta::NEW);
    let after = requested.unwrap_or(meta.head());
    if after.saturating_add(1) < meta.oldest {
        return Err(ApiError::Compacted { after, oldest: meta.oldest, head: meta.head() });
    }
    let permit =
        state.watches.enter().ok_or(ApiError::TooManyWatches { max: state.watches.max })?;

    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let watcher = Watcher {
        reader: state.reader.clone(),
        queue,
        after,
        applied,
        tx,
        shutdown: state.watches.shutdown.clone(),
        page: PAGE,
        slow_client: SLOW_CLIENT_TIMEOUT,
        _permit: permit,
    };
    tokio::spawn(watcher.run());

    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    let mut response = Response::new(Body::from_stream(chunks));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(frame::CONTENT_TYPE));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Reverse proxies (nginx) would otherwise buffer the stream.
    h.insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    Ok(response)
}

/// Where the stream starts: after `Last-Event-ID` (an SSE client resuming)
/// or else `?after=`; `None` means after the current head.
fn start_after(headers: &HeaderMap, params: &Params) -> Result<Option<Seq>, ApiError> {
    match headers.get(LAST_EVENT_ID) {
        Some(value) => {
            value.to_str().ok().and_then(|v| v.trim().parse::<Seq>().ok()).map(Some).ok_or_else(
                || {
                    ApiError::bad_request(
                        code::INVALID_PARAMETER,
                        "Last-Event-ID must be a seq (a non-negative integer)",
                    )
                },
            )
        }
        None => params.u64("after"),
    }
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("the client went away")]
    ClientGone,
    #[error("the client read nothing for 30 s")]
    SlowClient,
    #[error("the node is shutting down")]
    Shutdown,
    #[error("the next seq was compacted")]
    Gone,
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    #[error("encoding a frame: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("stored events jump from seq {after} to {seq}")]
    Gap { after: Seq, seq: Seq },
}

struct Watcher {
    reader: SmReader,
    queue: String,
    /// The last seq sent (or the start position).
    after: Seq,
    applied: tokio::sync::watch::Receiver<Option<LogId>>,
    tx: mpsc::Sender<Bytes>,
    shutdown: CancellationToken,
    page: PageLimits,
    slow_client: Duration,
    _permit: OwnedSemaphorePermit,
}

impl Watcher {
    async fn run(mut self) {
        let stop = self.stream().await;
        match stop {
            Stop::Storage(_) | Stop::Encode(_) | Stop::Gap { .. } => {
                tracing::error!(queue = %self.queue, after = self.after, reason = %stop, "watch ended");
            }
            Stop::SlowClient => {
                tracing::warn!(queue = %self.queue, after = self.after, reason = %stop, "watch cut off");
            }
            _ => {
                tracing::debug!(queue = %self.queue, after = self.after, reason = %stop, "watch ended")
            }
        }
    }

    /// Streams until something ends it; the reason is returned.
    async fn stream(&mut self) -> Stop {
        let mut ticker = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let first = async {
            let bounds = self.reader.events_page(&self.queue, self.after, 0, 0)?;
            let mut chunk = BytesMut::new();
            chunk.put_slice(format!("retry: {RETRY_MS}\n\n").as_bytes());
            put_frame(
                &mut chunk,
                None,
                frame::HEARTBEAT,
                &Heartbeat { head: bounds.head, oldest: bounds.oldest },
            )?;
            Ok::<_, Stop>(chunk.freeze())
        };
        let result = match first.await {
            Ok(chunk) => self.send(chunk).await,
            Err(stop) => Err(stop),
        };
        if let Err(stop) = result {
            return stop;
        }
        let mut heartbeat_due = false;
        loop {
            if let Err(stop) = self.catch_up(&mut ticker, &mut heartbeat_due).await {
                return stop;
            }
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Stop::Shutdown,
                _ = self.tx.closed() => return Stop::ClientGone,
                changed = self.applied.changed() => {
                    // The state machine is gone: so is the node.
                    if changed.is_err() {
                        return Stop::Shutdown;
                    }
                }
                _ = ticker.tick() => heartbeat_due = true,
            }
        }
    }

    /// Sends every event up to this node's applied head, a page at a time,
    /// with a heartbeat after the events of a page whenever one is due.
    async fn catch_up(
        &mut self,
        ticker: &mut Interval,
        heartbeat_due: &mut bool,
    ) -> Result<(), Stop> {
        loop {
            let page = self.reader.events_page(
                &self.queue,
                self.after,
                self.page.events,
                self.page.bytes,
            )?;
            let next = self.after.saturating_add(1);
            if next < page.oldest {
                let mut chunk = BytesMut::new();
                let gone = Gone { oldest: page.oldest, head: page.head, next };
                put_frame(&mut chunk, None, frame::GONE, &gone)?;
                self.send(chunk.freeze()).await?;
                return Err(Stop::Gone);
            }
            let caught_up = page.events.is_empty();
            let mut chunk = BytesMut::new();
            for (seq, event) in &page.events {
                if *seq != self.after.saturating_add(1) {
                    return Err(Stop::Gap { after: self.after, seq: *seq });
                }
                let data = EventData { seq: *seq, event: event.as_str() };
                put_frame(&mut chunk, Some(*seq), frame::EVENT, &data)?;
                self.after = *seq;
            }
            if ticker.tick().now_or_never().is_some() {
                *heartbeat_due = true;
            }
            if *heartbeat_due {
                put_frame(
                    &mut chunk,
                    None,
                    frame::HEARTBEAT,
                    &Heartbeat { head: page.head, oldest: page.oldest },
                )?;
                *heartbeat_due = false;
            }
            if !chunk.is_empty() {
                self.send(chunk.freeze()).await?;
            }
            if caught_up {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, chunk: Bytes) -> Result<(), Stop> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Err(Stop::Shutdown),
            sent = tokio::time::timeout(self.slow_client, self.tx.send(chunk)) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Stop::ClientGone),
                Err(_) => Err(Stop::SlowClient),
            },
        }
    }
}

/// Appends one SSE frame. JSON escapes every line break, so `data` is
/// always exactly one line.
fn put_frame(
    buf: &mut BytesMut,
    id: Option<Seq>,
    event: &str,
    data: &impl Serialize,
) -> Result<(), serde_json::Error> {
    if let Some(id) = id {
        buf.put_slice(format!("id: {id}\n").as_bytes());
    }
    buf.put_slice(format!("event: {event}\ndata: ").as_bytes());
    serde_json::to_writer((&mut *buf).writer(), data)?;
    buf.put_slice(b"\n\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::replica::testing::{EntryPayload, LeaderId};

    use super::*;
    use crate::queue::{Command, Limits};
    use crate::raft::state_machine::StateMachine;
    use crate::raft::types::{Entry, Op, Request};

    fn entry(index: u64, commands: Vec<Command>) -> Entry {
        Entry {
            log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, index),
            payload: EntryPayload::Normal(Request {
                limits: Limits::default(),
                maze_limits: Default::default(),
                ops: commands.into_iter().map(Op::Queue).collect(),
                time_ms: 0,
            }),
        }
    }

    fn enqueue(event: &str) -> Command {
        Command::Enqueue { queue: "q".into(), event: event.into(), idempotency_key: None }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        sm: StateMachine,
        index: u64,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let db = crate::raft::db::open(&dir.path().join("db")).unwrap();
            let sm = StateMachine::open(db, &dir.path().join("snapshots")).unwrap();
            Fixture { _dir: dir, sm, index: 0 }
        }

        async fn apply(&mut self, commands: Vec<Command>) {
            self.index += 1;
            self.sm.apply_now(vec![entry(self.index, commands)]).await.unwrap();
        }

        /// A watcher of queue `q` after `after`, with `page_events` per page,
        /// whose chunks arrive on the returned receiver (capacity 1).
        fn watch(
            &self,
            after: Seq,
            page_events: usize,
            shutdown: CancellationToken,
        ) -> (tokio::task::JoinHandle<()>, mpsc::Receiver<Bytes>) {
            let (tx, rx) = mpsc::channel(1);
            let permit =
                std::sync::Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().unwrap();
            let reader = self.sm.reader();
            let watcher = Watcher {
                applied: reader.subscribe_applied(),
                reader,
                queue: "q".into(),
                after,
                tx,
                shutdown,
                page: PageLimits { events: page_events, bytes: usize::MAX },
                slow_client: Duration::from_millis(300),
                _permit: permit,
            };
            (tokio::spawn(watcher.run()), rx)
        }
    }

    fn assert_starts_with(text: &str, prefix: &str) {
        assert!(text.starts_with(prefix), "{text:?} does not start with {prefix:?}");
    }

    async fn next_chunk(rx: &mut mpsc::Receiver<Bytes>) -> Option<String> {
        let chunk = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap();
        chunk.map(|c| String::from_utf8(c.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn frames_are_exact_and_a_watcher_behind_retention_gets_gone() {
        let mut f = Fixture::new();
        let mut events: Vec<Command> = vec![enqueue("two\nlines \"quoted\"")];
        events.extend((2..=10).map(|i| enqueue(&format!("e{i}"))));
        f.apply(events).await;
        let (task, mut rx) = f.watch(0, 2, CancellationToken::new());

        assert_eq!(
            next_chunk(&mut rx).await.unwrap(),
            "retry: 1000\n\nevent: heartbeat\ndata: {\"head\":10,\"oldest\":1}\n\n"
        );
        // (A heartbeat may follow in the same chunk on a slow machine.)
        assert_starts_with(
            &next_chunk(&mut rx).await.unwrap(),
            "id: 1\nevent: event\ndata: {\"seq\":1,\"event\":\"two\\nlines \\\"quoted\\\"\"}\n\n\
             id: 2\nevent: event\ndata: {\"seq\":2,\"event\":\"e2\"}\n\n",
        );
        // Everything is dequeued and compacted while the client is not reading.
        let mut drain: Vec<Command> =
            (0..10).map(|_| Command::Dequeue { queue: "q".into(), expect_seq: None }).collect();
        drain.push(Command::Compact { queue: "q".into(), upto: u64::MAX });
        f.apply(drain).await;

        let mut rest = String::new();
        while let Some(chunk) = next_chunk(&mut rx).await {
            rest.push_str(&chunk);
        }
        // Whatever was read before the compaction arrives, gapless from 3;
        // then one `gone` frame naming the next seq, and the end.
        let mut expected_seq = 3;
        let frames: Vec<&str> = rest.split_terminator("\n\n").collect();
        let (gone, events) = frames.split_last().unwrap();
        for frame in events {
            if frame.starts_with("event: heartbeat") {
                continue;
            }
            assert!(frame.starts_with(&format!("id: {expected_seq}\nevent: event\n")), "{frame}");
            expected_seq += 1;
        }
        assert_eq!(
            *gone,
            format!("event: gone\ndata: {{\"oldest\":11,\"head\":10,\"next\":{expected_seq}}}")
        );
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn new_events_and_heartbeats_follow_and_shutdown_ends_the_stream() {
        let mut f = Fixture::new();
        f.apply(vec![enqueue("a")]).await;
        let shutdown = CancellationToken::new();
        let (task, mut rx) = f.watch(1, 10, shutdown.clone());
        assert!(next_chunk(&mut rx).await.unwrap().contains("\"head\":1"));
        f.apply(vec![enqueue("b")]).await;
        // Read until a heartbeat reports the new head; heartbeats for the old
        // head may come first if this machine is slow.
        let mut text = String::new();
        while !text.contains("\"head\":2") {
            text.push_str(&next_chunk(&mut rx).await.unwrap());
        }
        let old_heartbeat = "event: heartbeat\ndata: {\"head\":1,\"oldest\":1}\n\n";
        assert_eq!(
            text.replace(old_heartbeat, ""),
            "id: 2\nevent: event\ndata: {\"seq\":2,\"event\":\"b\"}\n\n\
             event: heartbeat\ndata: {\"head\":2,\"oldest\":1}\n\n"
        );
        shutdown.cancel();
        assert_eq!(next_chunk(&mut rx).await, None);
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_client_that_reads_nothing_is_cut_off() {
        let mut f = Fixture::new();
        f.apply((1..=10).map(|i| enqueue(&format!("e{i}"))).collect()).await;
        // One chunk fits the channel; the next page waits for the client,
        // which never reads, until the (test-sized) slow-client timeout.
        let (task, mut rx) = f.watch(0, 1, CancellationToken::new());
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
        assert!(next_chunk(&mut rx).await.unwrap().starts_with("retry: 1000"));
        // The task is gone; what it had queued ends the stream.
        while let Some(chunk) = next_chunk(&mut rx).await {
            assert!(chunk.starts_with("id: "), "{chunk}");
        }
    }

    #[test]
    fn last_event_id_wins_over_after_and_garbage_is_refused() {
        let params = Params::parse(Some("after=3")).unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(start_after(&headers, &params).unwrap(), Some(3));
        assert_eq!(start_after(&headers, &Params::default()).unwrap(), None);
        headers.insert(LAST_EVENT_ID, HeaderValue::from_static("7"));
        assert_eq!(start_after(&headers, &params).unwrap(), Some(7));
        for bad in ["", "x", "-1", "1.5", "99999999999999999999"] {
            headers.insert(LAST_EVENT_ID, HeaderValue::from_static(bad));
            assert!(start_after(&headers, &params).is_err(), "{bad:?}");
        }
        assert!(start_after(&HeaderMap::new(), &Params::parse(Some("after=x")).unwrap()).is_err());
    }
}
