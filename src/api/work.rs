//! Work-queue routes (SPEC §5), each also under `/queues/{queue}/...`:
//! leases (`POST /lease`), their `ack`, `nack` and `extend`
//! (`POST /events/{seq}/...`), batch publish (`POST /events`), policies
//! (`/policy`) and group cursors (`/cursors/{group}`); and the long poll
//! (`?wait=`) that `GET /event`, `DELETE /event` and `POST /lease` share.
//!
//! Handlers parse, propose and map, as in [`super::events`]: the leader
//! picks a lease's random nonce when it builds the command, and every node
//! applies it alike. A long poll is woken by the state machine's applied
//! signal, or at the earliest time a lease or delay of the queue runs out
//! (a computed deadline: such an event becomes available by time, with no
//! apply), never by polling; a node holds at most `--max-waiters` of them.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::error::ApiError;
use super::events::{event_response, json, rejected, unexpected, REPLAYED_HEADER};
use super::extract::{self, Params, QueuePath};
use super::Shared;
use crate::queue::{Command, QueuePolicy, Seq};
use crate::raft::types::Reply;
use crate::raft::unix_ms;
use crate::sm::LeasedReply;
use crate::wire::{self, code};

/// Longest `?wait=` of a long poll (SPEC §5).
pub const WAIT_MAX: Duration = Duration::from_secs(60);
/// Longest `?delay=` of a delayed event or a nack.
pub const DELAY_MAX: Duration = Duration::from_secs(30 * 86_400);
/// Longest lease (`ttl`, and a policy's `lease_ttl`).
pub const TTL_MAX: Duration = Duration::from_secs(86_400);
/// Most events one `POST /lease?max=` hands out.
pub const LEASE_MAX_EVENTS: u64 = 100;

/// Empty attempts in a row (with an event showing) after which a long poll
/// waits for an apply before trying again.
const STUCK_AFTER: u32 = 2;

const LEASE_HEADER: HeaderName = HeaderName::from_static(wire::header::LEASE);
const DELIVERIES_HEADER: HeaderName = HeaderName::from_static(wire::header::DELIVERIES);

/// The long polls this node holds (`--max-waiters`); more get 503.
pub type Waiters = super::slots::Slots;

/// `?wait=`: at most [`WAIT_MAX`], else a 400.
pub fn wait(params: &Params) -> Result<Option<Duration>, ApiError> {
    params.duration("wait", WAIT_MAX)
}

/// Runs `attempt` until it finds something, for up to `wait`: again after
/// each apply, or when a lease or delay of `queue` runs out, if this
/// node's state then shows an available event. `Ok(None)`: nothing within
/// the wait (a 204). An error of an attempt (a 307 on a follower) ends it.
pub async fn long_poll<T, F, Fut>(
    state: &Shared,
    queue: &str,
    wait: Option<Duration>,
    mut attempt: F,
) -> Result<Option<T>, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, ApiError>>,
{
    // Subscribed before the first attempt: an apply after it wakes us.
    let mut applied = state.reader.subscribe_applied();
    if let Some(found) = attempt().await? {
        return Ok(Some(found));
    }
    let Some(wait) = wait.filter(|w| !w.is_zero()) else {
        return Ok(None);
    };
    let _permit =
        state.waiters.enter().ok_or(ApiError::TooManyWaiters { max: state.waiters.max })?;
    let deadline = Instant::now() + wait;
    // Empty attempts in a row although this node's state showed an event.
    // One is a lost race with another worker: look again at once. More
    // mean the event cannot be taken yet (an expired lease waiting for
    // room in its dead-letter queue): wait for the next apply first, or
    // the loop would spin on proposals.
    let mut empty_in_a_row = 0u32;
    loop {
        // Everything applied so far is covered by the check below; an
        // apply after this wakes the wait.
        applied.borrow_and_update();
        let mut stuck = empty_in_a_row >= STUCK_AFTER;
        loop {
            let now_ms = unix_ms();
            if !stuck && state.reader.available_at(queue, now_ms) {
                break;
            }
            if !stuck {
                empty_in_a_row = 0;
            }
            stuck = false;
            let due = state.reader.next_due(queue, now_ms).map(|due| {
                Instant::now() + Duration::from_millis(due.saturating_sub(now_ms).saturating_add(1))
            });
            let wake = due.map_or(deadline, |due| due.min(deadline));
            tokio::select! {
                changed = applied.changed() => {
                    if changed.is_err() {
                        return Ok(None);
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
                _ = state.waiters.shutdown.cancelled() => return Ok(None),
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
        match attempt().await? {
            Some(found) => return Ok(Some(found)),
            None => empty_in_a_row += 1,
        }
    }
}

fn missing(name: &str) -> ApiError {
    ApiError::bad_request(code::INVALID_PARAMETER, format!("{name} is required"))
}

/// `POST /lease?ttl=30s[&max=N][&wait=20s]`.
pub async fn lease(
    State(state): State<Shared>,
    QueuePath { queue, .. }: QueuePath,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query())?;
    let ttl_ms = params.millis("ttl", TTL_MAX)?;
    if ttl_ms == Some(0) {
        return Err(ApiError::bad_request(code::INVALID_PARAMETER, "ttl must be at least 1ms"));
    }
    let max = params.u64("max")?.unwrap_or(1);
    if !(1..=LEASE_MAX_EVENTS).contains(&max) {
        return Err(ApiError::bad_request(
            code::INVALID_COUNT,
            format!("max must be between 1 and {LEASE_MAX_EVENTS}"),
        ));
    }
    let max = u32::try_from(max).unwrap_or(1);
    let wait = wait(&params)?;
    let leased = long_poll(&state, &queue, wait, || async {
        // The leader picks the nonce (a follower answers 307 first): the
        // token is unguessable, and the same on every node once applied.
        let nonce = rand::random::<u64>();
        let command = Command::Lease { queue: queue.clone(), max, ttl_ms, nonce };
        match state.propose(command, &uri).await? {
            Reply::Leased(leased) if leased.is_empty() => Ok(None),
            Reply::Leased(leased) => Ok(Some(leased)),
            Reply::Rejected(r) => Err(rejected(r)),
            other => Err(unexpected(other)),
        }
    })
    .await?;
    let Some(leased) = leased else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    if max > 1 || extract::wants_json(&headers) {
        let leased = leased
            .into_iter()
            .map(|l| wire::LeasedEvent {
                seq: l.seq,
                event: l.event,
                lease: l.token,
                deliveries: l.deliveries,
            })
            .collect();
        return Ok(json(StatusCode::OK, &wire::Leased { leased }));
    }
    let Some(LeasedReply { seq, token, deliveries, event }) = leased.into_iter().next() else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let mut response = event_response(StatusCode::OK, seq, event, false);
    let h = response.headers_mut();
    if let Ok(token) = HeaderValue::from_str(&token) {
        h.insert(LEASE_HEADER, token);
    }
    h.insert(DELIVERIES_HEADER, HeaderValue::from(deliveries));
    Ok(response)
}

/// What `POST /events/{seq}/{action}?lease=T` does.
#[derive(Clone, Copy)]
enum Settle {
    Ack,
    Nack,
    Extend,
}

/// The seq and lease token of an ack, nack or extend.
fn settle_target(seq: Option<String>, params: &Params) -> Result<(Seq, String), ApiError> {
    let seq: Seq = seq.and_then(|s| s.parse().ok()).ok_or(ApiError::NotFound)?;
    let token = params.get("lease").filter(|t| !t.is_empty()).ok_or_else(|| missing("lease"))?;
    Ok((seq, token.to_owned()))
}

async fn settle(
    state: Shared,
    QueuePath { queue, seq, .. }: QueuePath,
    uri: Uri,
    action: Settle,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query())?;
    let (seq, token) = settle_target(seq, &params)?;
    let command = match action {
        Settle::Ack => Command::Ack { queue, seq, token },
        Settle::Nack => {
            let delay_ms = params.millis("delay", DELAY_MAX)?.unwrap_or(0);
            Command::Nack { queue, seq, token, delay_ms }
        }
        Settle::Extend => {
            let ttl_ms = params.millis("ttl", TTL_MAX)?;
            if ttl_ms == Some(0) {
                return Err(ApiError::bad_request(
                    code::INVALID_PARAMETER,
                    "ttl must be at least 1ms",
                ));
            }
            Command::Extend { queue, seq, token, ttl_ms }
        }
    };
    match state.propose(command, &uri).await? {
        Reply::Acked | Reply::Nacked { .. } | Reply::Extended { .. } => {
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Reply::LeaseLost => Err(ApiError::LeaseLost),
        Reply::Rejected(r) => Err(rejected(r)),
        other => Err(unexpected(other)),
    }
}

/// `POST /events/{seq}/ack?lease=T`.
pub async fn ack(State(s): State<Shared>, path: QueuePath, uri: Uri) -> Result<Response, ApiError> {
    settle(s, path, uri, Settle::Ack).await
}

/// `POST /events/{seq}/nack?lease=T[&delay=5s]`.
pub async fn nack(
    State(s): State<Shared>,
    path: QueuePath,
    uri: Uri,
) -> Result<Response, ApiError> {
    settle(s, path, uri, Settle::Nack).await
}

/// `POST /events/{seq}/extend?lease=T[&ttl=30s]`.
pub async fn extend(
    State(s): State<Shared>,
    path: QueuePath,
    uri: Uri,
) -> Result<Response, ApiError> {
    settle(s, path, uri, Settle::Extend).await
}

/// A small JSON body (policies, cursors), read whole and parsed strictly.
async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    const LIMIT: usize = 64 << 10;
    let bytes =
        axum::body::to_bytes(body, LIMIT).await.map_err(|_| ApiError::TooLarge { max: LIMIT })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(code::INVALID_JSON, format!("malformed JSON body: {e}")))
}

fn invalid_policy(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code::INVALID_POLICY, message)
}

fn policy_to_wire(policy: &QueuePolicy) -> wire::Policy {
    wire::Policy {
        max_deliveries: policy.max_deliveries,
        dead_letter: policy.dead_letter.clone(),
        lease_ttl: policy
            .lease_ttl_ms
            .map(|ms| humantime::format_duration(Duration::from_millis(ms)).to_string()),
    }
}

fn policy_from_wire(policy: wire::Policy) -> Result<QueuePolicy, ApiError> {
    if let Some(dead_letter) = &policy.dead_letter {
        extract::name("dead_letter queue", dead_letter)?;
    }
    let lease_ttl_ms = match policy.lease_ttl.as_deref() {
        None => None,
        Some(raw) => match crate::units::parse_duration(raw) {
            Ok(d) if !d.is_zero() && d <= TTL_MAX => u64::try_from(d.as_millis()).ok(),
            _ => {
                return Err(invalid_policy(format!(
                    "lease_ttl must be a duration between 1ms and {}",
                    humantime::format_duration(TTL_MAX)
                )))
            }
        },
    };
    Ok(QueuePolicy {
        max_deliveries: policy.max_deliveries,
        dead_letter: policy.dead_letter,
        lease_ttl_ms,
    })
}

/// `GET /queues/{queue}/policy`: `{}` when the queue has none.
pub async fn get_policy(
    State(state): State<Shared>,
    QueuePath { queue, .. }: QueuePath,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query())?;
    state.prepare_read(&params, &queue).await?;
    let policy = state.reader.policy(&queue).unwrap_or_default();
    Ok(json(StatusCode::OK, &policy_to_wire(&policy)))
}

/// `PUT /queues/{queue}/policy`: answers the policy now in force.
pub async fn put_policy(
    State(state): State<Shared>,
    QueuePath { queue, .. }: QueuePath,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    // The body is read before a follower's 307 (in `propose`): an HTTP/2
    // answer that leaves the body unread resets the stream, which curl -L
    // reports as an error instead of following.
    let policy = policy_from_wire(json_body(body).await?)?;
    let answer = policy_to_wire(&policy);
    match state.propose(Command::SetPolicy { queue, policy }, &uri).await? {
        Reply::PolicySet => Ok(json(StatusCode::OK, &answer)),
        Reply::Rejected(r) => Err(rejected(r)),
        other => Err(unexpected(other)),
    }
}

/// `GET /queues/{queue}/cursors/{group}`: `{"seq":N}` (0: none yet).
pub async fn get_cursor(
    State(state): State<Shared>,
    QueuePath { queue, group, .. }: QueuePath,
    uri: Uri,
) -> Result<Response, ApiError> {
    let group = group.ok_or(ApiError::NotFound)?;
    let params = Params::parse(uri.query())?;
    state.prepare_read(&params, &queue).await?;
    let seq = state.reader.cursor(&queue, &group).unwrap_or(0);
    Ok(json(StatusCode::OK, &wire::Cursor { seq }))
}

/// `PUT /queues/{queue}/cursors/{group}[?if=M]` with `{"seq":N}`.
pub async fn put_cursor(
    State(state): State<Shared>,
    QueuePath { queue, group, .. }: QueuePath,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let group = group.ok_or(ApiError::NotFound)?;
    let params = Params::parse(uri.query())?;
    let if_seq = params.u64("if")?;
    let wire::Cursor { seq } = json_body(body).await?;
    match state.propose(Command::SetCursor { queue, group, seq, if_seq }, &uri).await? {
        Reply::CursorSet { seq } => Ok(json(StatusCode::OK, &wire::Cursor { seq })),
        Reply::CursorConflict { current } => Err(ApiError::CursorConflict {
            expected: if_seq.unwrap_or(0),
            current: current.unwrap_or(0),
        }),
        Reply::Rejected(r) => Err(rejected(r)),
        other => Err(unexpected(other)),
    }
}

fn invalid_batch(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code::INVALID_BATCH, message)
}

/// A batch body: NDJSON (`{"event":"..."}` per line, blank lines
/// skipped) or a JSON array of such objects. Every event non-empty and at
/// most `max_event_bytes`; 1 to `max_events` of them.
pub fn batch_events(
    content_type: Option<&str>,
    body: &[u8],
    max_event_bytes: usize,
    max_events: usize,
) -> Result<Vec<String>, ApiError> {
    let events: Vec<wire::BatchEvent> = match content_type {
        Some(wire::NDJSON) => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request(code::INVALID_UTF8, "the body is not UTF-8"))?;
            let mut events = Vec::new();
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                if events.len() >= max_events {
                    return Err(invalid_batch(format!(
                        "a batch holds at most {max_events} events"
                    )));
                }
                let event = serde_json::from_str(line).map_err(|e| {
                    invalid_batch(format!("line {}: expected {{\"event\": \"...\"}}: {e}", n + 1))
                })?;
                events.push(event);
            }
            events
        }
        Some("application/json") => serde_json::from_slice(body).map_err(|e| {
            invalid_batch(format!("expected a JSON array of {{\"event\": \"...\"}}: {e}"))
        })?,
        other => {
            return Err(ApiError::UnsupportedMediaType(
                other.unwrap_or("none").to_owned()
                    + " (a batch is application/x-ndjson or application/json)",
            ))
        }
    };
    if events.is_empty() || events.len() > max_events {
        return Err(invalid_batch(format!("a batch holds 1 to {max_events} events")));
    }
    let mut out = Vec::with_capacity(events.len());
    for (n, wire::BatchEvent { event }) in events.into_iter().enumerate() {
        if event.is_empty() {
            return Err(invalid_batch(format!("event {} is empty", n + 1)));
        }
        if event.len() > max_event_bytes {
            return Err(ApiError::TooLarge { max: max_event_bytes });
        }
        out.push(event);
    }
    Ok(out)
}

/// `POST /events[?delay=10s]`: all of the batch or nothing, one entry.
pub async fn enqueue_batch(
    State(state): State<Shared>,
    QueuePath { queue, .. }: QueuePath,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query())?;
    let delay_ms = params.millis("delay", DELAY_MAX)?.unwrap_or(0);
    let idempotency_key = extract::idempotency_key(&headers)?;
    // Read whole before a follower's 307 (see `put_policy`). The whole batch is bounded like one event (--max-event-bytes).
    let max = state.max_event_bytes;
    let body = axum::body::to_bytes(body, max).await.map_err(|_| ApiError::TooLarge { max })?;
    let mime = extract::mime(&headers);
    let events = batch_events(mime.as_deref(), &body, max, state.max_batch_events)?;
    let command = Command::EnqueueBatch { queue, events, idempotency_key, delay_ms };
    match state.propose(command, &uri).await? {
        Reply::BatchEnqueued { first, last, duplicate } => {
            let mut response = json(StatusCode::CREATED, &wire::Batch { first, last });
            if duplicate {
                response.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
            }
            Ok(response)
        }
        Reply::Rejected(r) => Err(rejected(r)),
        other => Err(unexpected(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(r: Result<Vec<String>, ApiError>) -> &'static str {
        match r {
            Err(ApiError::BadRequest { code, .. }) => code,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn batches_parse_ndjson_and_arrays_and_refuse_any_bad_line() {
        let nd = Some(wire::NDJSON);
        let body = b"{\"event\":\"a\"}\n\n{\"event\":\"b\"}\n";
        assert_eq!(batch_events(nd, body, 10, 10).unwrap(), ["a", "b"]);
        let array = br#"[{"event":"x"},{"event":"y"}]"#;
        assert_eq!(batch_events(Some("application/json"), array, 10, 10).unwrap(), ["x", "y"]);
        assert_eq!(
            code_of(batch_events(nd, b"{\"event\":\"a\"}\nnope\n", 10, 10)),
            "invalid_batch"
        );
        assert_eq!(code_of(batch_events(nd, b"{\"event\":\"\"}", 10, 10)), "invalid_batch");
        assert_eq!(code_of(batch_events(nd, b"\n", 10, 10)), "invalid_batch");
        assert_eq!(
            code_of(batch_events(nd, b"{\"event\":\"a\",\"x\":1}", 10, 10)),
            "invalid_batch"
        );
        let three = b"{\"event\":\"a\"}\n{\"event\":\"b\"}\n{\"event\":\"c\"}";
        assert_eq!(code_of(batch_events(nd, three, 10, 2)), "invalid_batch");
        assert!(matches!(
            batch_events(nd, b"{\"event\":\"abcdef\"}", 5, 10),
            Err(ApiError::TooLarge { max: 5 })
        ));
        assert!(matches!(
            batch_events(Some("text/plain"), b"a", 5, 10),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn policies_round_trip_through_the_wire_form() {
        let wire = wire::Policy {
            max_deliveries: Some(3),
            dead_letter: Some("dlq".into()),
            lease_ttl: Some("30s".into()),
        };
        let policy = policy_from_wire(wire.clone()).unwrap();
        assert_eq!(policy.lease_ttl_ms, Some(30_000));
        assert_eq!(policy_to_wire(&policy), wire);
        let bad = wire::Policy { lease_ttl: Some("soon".into()), ..wire::Policy::default() };
        assert!(matches!(
            policy_from_wire(bad),
            Err(ApiError::BadRequest { code: "invalid_policy", .. })
        ));
    }
}
