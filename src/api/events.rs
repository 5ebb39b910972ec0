//! Queue routes: `/event`, `/events`, `/events/{seq}` and their
//! `/queues/{queue}/...` forms (`/event` is the queue named `default`), and
//! `/sequences/{name}`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::extract::{self, Params, QueuePath};
use super::{work, Shared};
use crate::queue::{Command, Rejection, Seq};
use crate::raft::types::Reply;
use crate::wire::{self, code, EventData};

/// Bytes of event bodies in one `GET /events` page (at least one event is
/// always returned, whatever its size).
const PAGE_BYTES_MAX: usize = 4 << 20;

const SEQ_HEADER: HeaderName = HeaderName::from_static(wire::header::SEQ);
pub(super) const REPLAYED_HEADER: HeaderName =
    HeaderName::from_static(wire::header::IDEMPOTENT_REPLAYED);
/// Most events one `/events` page returns.
const PAGE_MAX: usize = 1000;

fn seq_value(seq: Seq) -> HeaderValue {
    HeaderValue::from(seq)
}

/// A typed body, written the way `json!` wrote it (see `wire::to_body`).
pub(super) fn json(status: StatusCode, body: &impl Serialize) -> Response {
    match wire::to_body(body) {
        Ok(body) => (status, Json(body)).into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

/// A text body with the event exactly as posted, and its seq in a header.
pub(super) fn event_response(status: StatusCode, seq: Seq, event: String, json: bool) -> Response {
    let mut response = if json {
        self::json(status, &EventData { seq, event })
    } else {
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], event).into_response()
    };
    response.headers_mut().insert(SEQ_HEADER, seq_value(seq));
    response
}

pub(super) fn rejected(rejection: Rejection) -> ApiError {
    match rejection {
        Rejection::QueueFull { max } => {
            ApiError::Full(format!("the queue holds its maximum of {max} events"))
        }
        Rejection::TooManyQueues { max } => {
            ApiError::Full(format!("the cluster holds its maximum of {max} queues"))
        }
        Rejection::InvalidCount => {
            ApiError::bad_request(code::INVALID_COUNT, "count must be between 1 and 2^64-1")
        }
        Rejection::TooManyLeases { max } => {
            ApiError::Full(format!("the queue holds its maximum of {max} leased events"))
        }
        Rejection::TooManyDelayed { max } => {
            ApiError::Full(format!("the queue holds its maximum of {max} delayed events"))
        }
        Rejection::InvalidPolicy => ApiError::bad_request(
            code::INVALID_POLICY,
            "max_deliveries must be at least 1 and name a dead_letter queue other than this one",
        ),
    }
}

pub(super) fn unexpected(reply: Reply) -> ApiError {
    ApiError::Internal(format!("unexpected reply {reply:?}"))
}

async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max_event_bytes: usize,
) -> Result<bytes::Bytes, ApiError> {
    // Form encoding may triple an event's size (%XX); the decoded event is
    // checked against the exact limit afterwards.
    let limit = max_event_bytes.saturating_mul(3).saturating_add(4096);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::TooLarge { max: max_event_bytes });
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::TooLarge { max: max_event_bytes })
}

pub async fn enqueue(
    State(state): State<Shared>,
    QueuePath { queue, .. }: QueuePath,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, state.max_event_bytes).await?;
    let event = extract::event(&headers, &body, state.max_event_bytes)?;
    let idempotency_key = extract::idempotency_key(&headers)?;
    let params = Params::parse(uri.query())?;
    let delay_ms = params.millis("delay", work::DELAY_MAX)?.unwrap_or(0);
    // A delayed event is a batch of one: `Enqueue` keeps its log encoding.
    let command = if delay_ms > 0 {
        Command::EnqueueBatch {
            queue: queue.clone(),
            events: vec![event],
            idempotency_key,
            delay_ms,
        }
    } else {
        Command::Enqueue { queue: queue.clone(), event, idempotency_key }
    };
    let (seq, duplicate) = match state.propose(command, &uri).await? {
        Reply::Enqueued { seq, duplicate } => (seq, duplicate),
        Reply::BatchEnqueued { first, duplicate, .. } => (first, duplicate),
        Reply::Rejected(r) => return Err(rejected(r)),
        other => return Err(unexpected(other)),
    };
    let mut response = if extract::wants_json(&headers) {
        json(StatusCode::CREATED, &wire::Enqueued { seq })
    } else {
        StatusCode::CREATED.into_response()
    };
    let h = response.headers_mut();
    h.insert(SEQ_HEADER, seq_value(seq));
    if let Ok(location) = HeaderValue::from_str(&wire::queue_path(&queue, &format!("events/{seq}")))
    {
        h.insert(header::LOCATION, location);
    }
    if duplicate {
        h.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

pub async fn front(
    State(state): State<Shared>,
    QueuePath { queue, .. }: QueuePath,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query())?;
    let wait = work::wait(&params)?;
    state.prepare_read(&params, &queue).await?;
    // A long poll reads this node's state again on each wake: what it
    // applied since the read index above is newer still.
    let found = work::long_poll(&state, &queue, wait, || async {
        Ok::<_, ApiError>(state.reader.front(&queue)?)
    })
    .await?;
    match found {
        Some((seq, event)) => {
            Ok(event_response(StatusCode::OK, seq, event, extract::wants_json(&headers)))
        }
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

pub async fn dequeue(
    State(state): State<Shared>,
    QueuePath { queue, .. }: QueuePath,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query())?;
    let expect_seq = params.u64("seq")?;
    let wait = work::wait(&params)?;
    let popped = work::long_poll(&state, &queue, wait, || async {
        let command = Command::Dequeue { queue: queue.clone(), expect_seq };
        match state.propose(command, &uri).await? {
            Reply::Dequeued { seq, event } => Ok(Some((seq, event))),
            Reply::Empty => Ok(None),
            Reply::Conflict { front } => {
                Err(ApiError::SeqMismatch { expected: expect_seq.unwrap_or(0), front })
            }
            other => Err(unexpected(other)),
        }
    })
    .await?;
    match popped {
        Some((seq, event)) => {
            Ok(event_response(StatusCode::OK, seq, event, extract::wants_json(&headers)))
        }
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

pub async fn list(
    State(state): State<Shared>,
    QueuePath { queue, .. }: QueuePath,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query())?;
    let after = params.u64("after")?.unwrap_or(0);
    let limit = params.u64("limit")?.map_or(100, |l| l as usize).min(PAGE_MAX);
    state.prepare_read(&params, &queue).await?;
    // Bounded in bytes too: `limit` events of up to --max-event-bytes each
    // could otherwise make one page (and the client's buffer) gigabytes.
    let page = state.reader.events_page(&queue, after, limit, PAGE_BYTES_MAX)?;
    // Events after..oldest were dropped by retention: the caller missed them.
    if after.saturating_add(1) < page.oldest {
        return Err(ApiError::Compacted { after, oldest: page.oldest, head: page.head });
    }
    let events = page.events.into_iter().map(|(seq, event)| EventData { seq, event }).collect();
    Ok(json(StatusCode::OK, &wire::EventsPage { events, head: page.head, oldest: page.oldest }))
}

pub async fn by_seq(
    State(state): State<Shared>,
    QueuePath { queue, seq, .. }: QueuePath,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let seq: Seq = seq.and_then(|s| s.parse().ok()).ok_or(ApiError::NotFound)?;
    let params = Params::parse(uri.query())?;
    state.prepare_read(&params, &queue).await?;
    let page = state.reader.events_after(&queue, seq.saturating_sub(1), 1)?;
    match page.events.into_iter().next() {
        Some((found, event)) if found == seq => {
            Ok(event_response(StatusCode::OK, seq, event, extract::wants_json(&headers)))
        }
        _ if seq >= 1 && seq < page.oldest => {
            Err(ApiError::Compacted { after: seq, oldest: page.oldest, head: page.head })
        }
        _ => Err(ApiError::NotFound),
    }
}

pub async fn alloc_sequence(
    State(s): State<Shared>,
    Path(name): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    extract::name("sequence", &name)?;
    let params = Params::parse(uri.query())?;
    let count = params.u64("count")?.unwrap_or(1);
    match s.propose(Command::AllocSeq { name, count }, &uri).await? {
        Reply::Allocated { first, last } => {
            Ok(json(StatusCode::OK, &wire::Allocated { first, last }))
        }
        Reply::Rejected(r) => Err(rejected(r)),
        other => Err(unexpected(other)),
    }
}
