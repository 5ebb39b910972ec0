//! The one place that maps outcomes to HTTP status codes.
//!
//! Every error body is JSON `{"error": "...", "code": "..."}` (plus details
//! for some codes), so scripts can branch on `code` and people can read
//! `error`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::queue::Seq;
use crate::raft::{ProposeError, ReadError};

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
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::SeqMismatch { .. } => (StatusCode::CONFLICT, "seq_mismatch"),
            ApiError::Compacted { .. } => (StatusCode::GONE, "compacted"),
            ApiError::Full(_) => (StatusCode::INSUFFICIENT_STORAGE, "full"),
            ApiError::DiskFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
            ApiError::Redirect { .. } => (StatusCode::TEMPORARY_REDIRECT, "not_leader"),
            ApiError::NoLeader => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Unknown { code, .. } => (StatusCode::NOT_FOUND, code),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::AdminForbidden(_) => (StatusCode::FORBIDDEN, "admin_forbidden"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::TooManyWatches { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "too_many_watches")
            }
            ApiError::ReadUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut body = json!({ "error": self.to_string(), "code": code });
        match &self {
            ApiError::SeqMismatch { front, .. } => body["front"] = json!(front),
            ApiError::Compacted { oldest, head, .. } => {
                body["oldest"] = json!(oldest);
                body["head"] = json!(head);
            }
            ApiError::Redirect { location } => body["location"] = json!(location),
            _ => {}
        }
        let mut response = (status, Json(body)).into_response();
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
            | ApiError::TooManyWatches { .. } => {
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
pub fn not_leader(leader_api_url: Option<String>, path_and_query: &str) -> ApiError {
    match leader_api_url {
        Some(base) => ApiError::Redirect { location: format!("{base}{path_and_query}") },
        None => ApiError::NoLeader,
    }
}

pub fn from_propose(e: ProposeError, path_and_query: &str) -> ApiError {
    match e {
        ProposeError::NotLeader { leader } => {
            not_leader(leader.map(|(_, node)| node.api_url()), path_and_query)
        }
        ProposeError::Unavailable(msg) => ApiError::Unavailable(msg),
        ProposeError::DiskFull(msg) => ApiError::DiskFull(msg),
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
}
