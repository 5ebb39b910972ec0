//! Parsing request bodies and query strings, strictly: malformed input is a
//! clear 4xx and never a guess (no lossy UTF-8, no silently ignored fields).

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap};
use percent_encoding::percent_decode;
use serde::Deserialize;

use super::error::ApiError;
use crate::wire::{code, DEFAULT_QUEUE};

/// The path parameters of a queue route: `{queue}` (validated; absent on the
/// unprefixed routes, which address the queue named `default`) and, where
/// the route has one, `{seq}` and `{group}` (a consumer group, validated
/// like a queue name). One extractor serves `/event...` and
/// `/queues/{queue}/event...` alike.
pub struct QueuePath {
    pub queue: String,
    pub seq: Option<String>,
    pub group: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for QueuePath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        use axum::extract::rejection::PathRejection;
        use axum::extract::Path;
        let mut params =
            match Path::<BTreeMap<String, String>>::from_request_parts(parts, state).await {
                Ok(Path(params)) => params,
                Err(PathRejection::MissingPathParams(_)) => BTreeMap::new(),
                Err(e) => return Err(ApiError::bad_request(code::INVALID_PATH, e.body_text())),
            };
        let queue = params.remove("queue").unwrap_or_else(|| DEFAULT_QUEUE.into());
        name("queue", &queue)?;
        let group = params.remove("group");
        if let Some(group) = &group {
            name("group", group)?;
        }
        Ok(QueuePath { queue, seq: params.remove("seq"), group })
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs (also query strings).
/// Invalid UTF-8 after percent-decoding is an error, not a replacement char.
pub fn form_pairs(input: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = Vec::new();
    for part in input.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (key, value) = match part.iter().position(|&b| b == b'=') {
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => (part, &b""[..]),
        };
        pairs.push((decode_component(key)?, decode_component(value)?));
    }
    Ok(pairs)
}

fn decode_component(raw: &[u8]) -> Result<String, ApiError> {
    let plus_as_space: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    percent_decode(&plus_as_space)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request(code::INVALID_UTF8, "form data is not valid UTF-8"))
}

/// Query parameters of a request.
#[derive(Debug, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let pairs = form_pairs(query.unwrap_or("").as_bytes())?;
        Ok(Params(pairs.into_iter().collect()))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `true`/`false` (also `1`/`0`); anything else is a 400.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(_) => Err(ApiError::bad_request(
                code::INVALID_PARAMETER,
                format!("{name} must be true or false"),
            )),
        }
    }

    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(
                    code::INVALID_PARAMETER,
                    format!("{name} must be a non-negative integer"),
                )
            }),
        }
    }
}

impl Params {
    /// A duration like `30s` or `250ms` (see [`crate::units`]), at most
    /// `max`; anything else is a 400.
    pub fn duration(
        &self,
        name: &str,
        max: std::time::Duration,
    ) -> Result<Option<std::time::Duration>, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        match crate::units::parse_duration(raw) {
            Ok(d) if d <= max => Ok(Some(d)),
            _ => Err(ApiError::bad_request(
                code::INVALID_PARAMETER,
                format!(
                    "{name} must be a duration with a unit (e.g. 30s, 250ms) of at most {}",
                    humantime::format_duration(max)
                ),
            )),
        }
    }

    /// [`Params::duration`] in whole milliseconds.
    pub fn millis(&self, name: &str, max: std::time::Duration) -> Result<Option<u64>, ApiError> {
        Ok(self.duration(name, max)?.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }
}

/// Longest accepted idempotency key.
const IDEMPOTENCY_KEY_MAX: usize = 256;

/// The `Idempotency-Key` header, if any: 1-256 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(crate::wire::header::IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = v.to_str().map_err(|_| {
        ApiError::bad_request(
            code::INVALID_IDEMPOTENCY_KEY,
            "Idempotency-Key must be visible ASCII",
        )
    })?;
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX {
        return Err(ApiError::bad_request(
            code::INVALID_IDEMPOTENCY_KEY,
            format!("Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX} characters"),
        ));
    }
    Ok(Some(key.to_string()))
}

/// How a read may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Read index: reflects every write acknowledged before the read.
    Linearizable,
    /// This node's applied state, without a round trip to the leader.
    Local,
}

pub fn consistency(params: &Params) -> Result<Consistency, ApiError> {
    match params.get("consistency") {
        None | Some("linearizable") | Some("strong") => Ok(Consistency::Linearizable),
        Some("local") | Some("stale") => Ok(Consistency::Local),
        Some(other) => Err(ApiError::bad_request(
            code::INVALID_PARAMETER,
            format!("consistency must be linearizable or local, not {other:?}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    event: String,
}

pub fn mime(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// The event carried by a POST body: form `event=...` (curl -d), plain text,
/// or JSON `{"event": "..."}`.
pub fn event(headers: &HeaderMap, body: &[u8], max_bytes: usize) -> Result<String, ApiError> {
    let event = match mime(headers).as_deref() {
        None | Some("application/x-www-form-urlencoded") => {
            let pairs = form_pairs(body)?;
            let mut events = pairs.into_iter().filter(|(k, _)| k == "event").map(|(_, v)| v);
            let event = events.next().ok_or_else(|| {
                ApiError::bad_request(
                    code::MISSING_EVENT,
                    "the form has no event field (event=...)",
                )
            })?;
            if events.next().is_some() {
                return Err(ApiError::bad_request(
                    code::DUPLICATE_EVENT,
                    "the form has more than one event field",
                ));
            }
            event
        }
        Some("text/plain") => String::from_utf8(body.to_vec()).map_err(|_| {
            ApiError::bad_request(code::INVALID_UTF8, "the body is not valid UTF-8")
        })?,
        Some("application/json") => {
            let parsed: JsonEvent = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(
                    code::INVALID_JSON,
                    format!("expected {{\"event\": \"...\"}}: {e}"),
                )
            })?;
            parsed.event
        }
        Some(other) => return Err(ApiError::UnsupportedMediaType(other.to_string())),
    };
    if event.is_empty() {
        return Err(ApiError::bad_request(code::EMPTY_EVENT, "event must not be empty"));
    }
    if event.len() > max_bytes {
        return Err(ApiError::TooLarge { max: max_bytes });
    }
    Ok(event)
}

/// Queue and sequence names: short, and safe in URLs and storage keys.
pub fn name(kind: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            code::INVALID_NAME,
            format!("{kind} names are 1-128 characters of A-Z a-z 0-9 . _ -"),
        ))
    }
}

/// Whether the client asked for JSON.
pub fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(content_type: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ct) = content_type {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        h
    }

    #[test]
    fn curl_form_bodies_decode() {
        let form = headers(Some("application/x-www-form-urlencoded"));
        assert_eq!(event(&form, b"event=event1", 100).unwrap(), "event1");
        assert_eq!(event(&form, b"event=a+b%20c%26d", 100).unwrap(), "a b c&d");
        assert_eq!(event(&headers(None), b"x=1&event=e", 100).unwrap(), "e");
    }

    #[test]
    fn other_content_types() {
        assert_eq!(
            event(&headers(Some("text/plain; charset=utf-8")), "héllo".as_bytes(), 100).unwrap(),
            "héllo"
        );
        assert_eq!(
            event(&headers(Some("application/json")), br#"{"event":"j"}"#, 100).unwrap(),
            "j"
        );
        assert!(matches!(
            event(&headers(Some("image/png")), b"x", 100),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn bad_bodies_are_rejected_with_a_code() {
        let form = headers(Some("application/x-www-form-urlencoded"));
        let code = |r: Result<String, ApiError>| match r {
            Err(ApiError::BadRequest { code, .. }) => code,
            other => panic!("expected a 400, got {other:?}"),
        };
        assert_eq!(code(event(&form, b"foo=bar", 100)), "missing_event");
        assert_eq!(code(event(&form, b"event=", 100)), "empty_event");
        assert_eq!(code(event(&form, b"event=%ff%fe", 100)), "invalid_utf8");
        assert_eq!(code(event(&form, b"event=a&event=b", 100)), "duplicate_event");
        assert_eq!(code(event(&headers(Some("text/plain")), &[0xff, 0xfe], 100)), "invalid_utf8");
        assert_eq!(
            code(event(&headers(Some("application/json")), b"{\"event\":", 100)),
            "invalid_json"
        );
        assert_eq!(
            code(event(&headers(Some("application/json")), b"{\"event\":1}", 100)),
            "invalid_json"
        );
        assert!(matches!(event(&form, b"event=abcdef", 5), Err(ApiError::TooLarge { max: 5 })));
    }

    #[test]
    fn names_and_params() {
        assert!(name("queue", "orders-2024.v1_x").is_ok());
        for bad in ["", "a/b", "a\0b", "é", &"x".repeat(129)] {
            assert!(name("queue", bad).is_err(), "{bad:?}");
        }
        let p = Params::parse(Some("after=5&limit=x&consistency=local")).unwrap();
        assert_eq!(p.u64("after").unwrap(), Some(5));
        assert!(p.u64("limit").is_err());
        assert_eq!(consistency(&p).unwrap(), Consistency::Local);
        assert!(consistency(&Params::parse(Some("consistency=maybe")).unwrap()).is_err());
    }
}
