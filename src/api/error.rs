//! The one place that maps outcomes to HTTP status codes.
//!
//! Every error body is JSON `{"error": "...", "code": "..."}` (plus details
//! for some codes; [`wire::ErrorBody`]), so scripts can branch on `code`
//! and people can read `error`. The Raft facade's errors (plain raftq
//! enums) are mapped here too.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::queue::Seq;
use crate::replica::members::RemoveError;
use crate::replica::transfer::TransferError;
use crate::replica::{NotLeader, ProposeError, ReadError};
use crate::wire::{self, code, ErrorBody, Front};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("event is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("unsupported content type {0:?}: use application/x-www-form-urlencoded (event=...), text/plain or application/json")]
    UnsupportedMediaType(String),
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the front event is not seq {expected}")]
    SeqMismatch { expected: Seq, front: Option<Seq> },
    #[error("seq {after} is older than the retained events (oldest {oldest})")]
    Compacted { after: Seq, oldest: Seq, head: Seq },
    #[error("{0}")]
    Full(String),
    /// Below `--min-free-disk` (here or on a member); nothing was written.
    #[error("{0}")]
    DiskFull(String),
    /// Not an error for the client: go to the leader (`curl -L` does).
    #[error("redirect to the leader")]
    Redirect { location: String },
    #[error("no leader is known; retry shortly")]
    NoLeader,
    #[error("{0}; the outcome of a write is unknown, retry it with the same Idempotency-Key")]
    Unavailable(String),
    /// The request is valid but the cluster's state forbids it now.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A named thing (e.g. a node id) that does not exist.
    #[error("{message}")]
    Unknown { code: &'static str, message: String },
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// An admin route without admin rights (see `api::require_token`).
    #[error("{0}")]
    AdminForbidden(String),
    #[error("{message}")]
    RateLimited { message: String, retry_after_secs: u64 },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("this node already serves its maximum of {max} watches; retry shortly or watch another node")]
    TooManyWatches { max: usize },
    /// The lease token is not (or no longer) the event's lease (SPEC §5).
    #[error("the lease is lost: it expired and the event was leased again, or the event is done")]
    LeaseLost,
    /// A cursor compare-and-set found another value (`current`, 0: unset).
    #[error("the cursor is at {current}, not {expected}")]
    CursorConflict { expected: Seq, current: Seq },
    #[error("this node already holds its maximum of {max} long polls; retry shortly or ask another node")]
    TooManyWaiters { max: usize },
    /// A read this node cannot serve right now (e.g. it cannot reach the
    /// leader for a read index); unlike [`ApiError::Unavailable`] nothing
    /// was written, so the message says only to retry.
    #[error("{0}; retry the read")]
    ReadUnavailable(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, code::TOO_LARGE),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, code::UNSUPPORTED_MEDIA_TYPE)
            }
            ApiError::NotFound => (StatusCode::NOT_FOUND, code::NOT_FOUND),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, code::METHOD_NOT_ALLOWED)
            }
            ApiError::SeqMismatch { .. } => (StatusCode::CONFLICT, code::SEQ_MISMATCH),
            ApiError::Compacted { .. } => (StatusCode::GONE, code::COMPACTED),
            ApiError::Full(_) => (StatusCode::INSUFFICIENT_STORAGE, code::FULL),
            ApiError::DiskFull(_) => (StatusCode::INSUFFICIENT_STORAGE, code::DISK_FULL),
            ApiError::Redirect { .. } => (StatusCode::TEMPORARY_REDIRECT, code::NOT_LEADER),
            ApiError::NoLeader => (StatusCode::SERVICE_UNAVAILABLE, code::NO_LEADER),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Unknown { code, .. } => (StatusCode::NOT_FOUND, code),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, code::UNAUTHORIZED),
            ApiError::AdminForbidden(_) => (StatusCode::FORBIDDEN, code::ADMIN_FORBIDDEN),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, code::RATE_LIMITED),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL),
            ApiError::TooManyWatches { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, code::TOO_MANY_WATCHES)
            }
            ApiError::ReadUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE),
            ApiError::LeaseLost => (StatusCode::CONFLICT, code::LEASE_LOST),
            ApiError::CursorConflict { .. } => (StatusCode::CONFLICT, code::CURSOR_CONFLICT),
            ApiError::TooManyWaiters { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, code::TOO_MANY_WAITERS)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut body = ErrorBody::new(code, self.to_string());
        match &self {
            ApiError::SeqMismatch { front, .. } => body.front = Some(Front(*front)),
            ApiError::Compacted { oldest, head, .. } => {
                body.oldest = Some(*oldest);
                body.head = Some(*head);
            }
            ApiError::Redirect { location } => body.location = Some(location.clone()),
            ApiError::CursorConflict { current, .. } => body.current = Some(*current),
            _ => {}
        }
        let mut response = match wire::to_body(&body) {
            Ok(body) => (status, Json(body)).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        };
        let headers = response.headers_mut();
        match &self {
            ApiError::Redirect { location } => {
                if let Ok(value) = HeaderValue::from_str(location) {
                    headers.insert(header::LOCATION, value);
                }
            }
            ApiError::NoLeader
            | ApiError::DiskFull(_)
            | ApiError::Unavailable(_)
            | ApiError::ReadUnavailable(_)
            | ApiError::TooManyWatches { .. }
            | ApiError::TooManyWaiters { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NoLeader => ApiError::NoLeader,
            other => ApiError::ReadUnavailable(other.to_string()),
        }
    }
}

impl From<crate::raft::db::StoreError> for ApiError {
    fn from(e: crate::raft::db::StoreError) -> Self {
        tracing::error!(error = %e, "storage error serving a request");
        ApiError::Internal(e.to_string())
    }
}

/// A write this node cannot take: redirect to the leader (same path and
/// query, so `curl -L` re-sends method and body) or report that there is none.
pub fn not_leader(e: &NotLeader, path_and_query: &str) -> ApiError {
    match e.leader_api_url() {
        Some(base) => ApiError::Redirect { location: format!("{base}{path_and_query}") },
        None => ApiError::NoLeader,
    }
}

pub fn from_propose(e: ProposeError, path_and_query: &str) -> ApiError {
    match e {
        ProposeError::NotLeader { leader } => not_leader(&NotLeader { leader }, path_and_query),
        ProposeError::Unavailable(msg) => ApiError::Unavailable(msg),
        ProposeError::DiskFull(msg) => ApiError::DiskFull(msg),
    }
}

pub fn from_transfer(e: TransferError, path_and_query: &str) -> ApiError {
    let message = e.to_string();
    match e {
        TransferError::NotLeader(e) => not_leader(&e, path_and_query),
        TransferError::NoTarget => ApiError::Conflict { code: code::NO_TARGET, message },
        TransferError::NotAVoter(_) => ApiError::Conflict { code: code::NOT_A_VOTER, message },
        TransferError::TooSoon { retry_after_secs, .. } => {
            ApiError::RateLimited { message, retry_after_secs }
        }
        TransferError::Poisoned => ApiError::Internal(message),
        TransferError::LostLeadership
        | TransferError::Campaign { .. }
        | TransferError::NotElected(_) => ApiError::Unavailable(message),
    }
}

pub fn from_remove(e: RemoveError, path_and_query: &str) -> ApiError {
    let message = e.to_string();
    match e {
        RemoveError::NotLeader(e) | RemoveError::HandedOver(e) => not_leader(&e, path_and_query),
        RemoveError::TooFewVoters { .. } => {
            ApiError::Conflict { code: code::TOO_FEW_VOTERS, message }
        }
        RemoveError::Unknown(_) => ApiError::Unknown { code: code::UNKNOWN_NODE, message },
        RemoveError::Transfer(e) => from_transfer(e, path_and_query),
        RemoveError::Propose(e) => from_propose(e, path_and_query),
        RemoveError::UnexpectedReply(_) => ApiError::Internal(message),
        RemoveError::StillMember { .. } => ApiError::Unavailable(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_read_is_a_503_that_says_nothing_of_writes() {
        for e in [ReadError::Timeout, ReadError::Unavailable("leader unreachable".into())] {
            let api = ApiError::from(e);
            assert!(!api.to_string().contains("write"), "{api}");
            assert_eq!(api.status_and_code(), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
            let response = api.into_response();
            assert_eq!(
                response.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
                Some(&b"1"[..])
            );
        }
    }

    fn leader() -> NotLeader {
        let node = crate::raft::types::Node {
            raft_addr: "10.0.0.2:1112".into(),
            api_addr: "10.0.0.2:8080".into(),
        };
        NotLeader { leader: Some((2, node)) }
    }

    #[test]
    fn not_leader_is_a_307_to_the_same_path_or_a_503_without_a_leader() {
        let redirect = not_leader(&leader(), "/event?x=1").into_response();
        assert_eq!(redirect.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            redirect.headers().get(header::LOCATION).map(|v| v.as_bytes()),
            Some(&b"https://10.0.0.2:8080/event?x=1"[..])
        );
        let none = not_leader(&NotLeader { leader: None }, "/event");
        assert_eq!(none.status_and_code(), (StatusCode::SERVICE_UNAVAILABLE, code::NO_LEADER));
        let proposed = from_propose(ProposeError::NotLeader { leader: leader().leader }, "/e");
        assert!(matches!(proposed, ApiError::Redirect { .. }), "{proposed:?}");
    }

    #[test]
    fn the_facades_transfer_and_removal_errors_map_to_their_documented_codes() {
        let cases = [
            (from_transfer(TransferError::NoTarget, "/"), StatusCode::CONFLICT, code::NO_TARGET),
            (
                from_transfer(TransferError::NotAVoter(4), "/"),
                StatusCode::CONFLICT,
                code::NOT_A_VOTER,
            ),
            (
                from_transfer(TransferError::LostLeadership, "/"),
                StatusCode::SERVICE_UNAVAILABLE,
                code::UNAVAILABLE,
            ),
            (
                from_remove(RemoveError::TooFewVoters { id: 3, left: 2 }, "/"),
                StatusCode::CONFLICT,
                code::TOO_FEW_VOTERS,
            ),
            (from_remove(RemoveError::Unknown(9), "/"), StatusCode::NOT_FOUND, code::UNKNOWN_NODE),
            (
                from_remove(RemoveError::HandedOver(leader()), "/cluster/nodes/1"),
                StatusCode::TEMPORARY_REDIRECT,
                code::NOT_LEADER,
            ),
        ];
        for (api, status, code) in cases {
            assert_eq!(api.status_and_code(), (status, code), "{api}");
        }
        let too_soon = TransferError::TooSoon {
            since_ms: 10,
            min_interval: std::time::Duration::from_secs(5),
            retry_after_secs: 5,
        };
        let response = from_transfer(too_soon, "/").into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
    }
}
