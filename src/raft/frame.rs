//! The Raft stream's frames (pure: bytes in, bytes out; see `raft::stream`
//! for the connection around them).
//!
//! Append, vote, pre-vote and transfer-leader travel on one long-lived TLS
//! connection per peer, selected by ALPN [`ALPN`] on the Raft port, instead
//! of one HTTP/2 request each: no HTTP framing, no per-request task on either
//! side, and the sender's replication task writes the socket itself. Each
//! side sends one frame at a time and waits for the answer.
//!
//! Every frame is a 4-byte big-endian length of what follows, then:
//!
//! ```text
//! request:  kind u8 | target node id u64 BE | cluster uuid len u8 | uuid | JSON body
//! response: status u8 | body (JSON answer, or a refusal code / error text)
//! ```
//!
//! The target node id and cluster UUID travel on every request, exactly as
//! the HTTP headers `raftq-node`/`raftq-cluster` do (see `raft::peer`), so a
//! connection to an address whose node was replaced is refused per request.

use super::types::NodeId;

/// The ALPN protocol id of the Raft stream on the Raft port. A node that
/// does not offer it (an older build, or one under `--raft-transport
/// https`) negotiates `h2` instead, and the
/// sender falls back to HTTPS requests.
pub const ALPN: &[u8] = crate::tls::RAFT_STREAM_ALPN;

/// Largest frame either side accepts (after the length prefix): 32 entries
/// of ~1 MiB batches, with headroom; the same bound as an HTTP RPC body.
pub const FRAME_MAX: usize = 128 << 20;

/// Bytes of the length prefix.
pub const PREFIX: usize = 4;

/// Which RPC a request frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Append,
    Vote,
    PreVote,
    TransferLeader,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Append => 1,
            Kind::Vote => 2,
            Kind::PreVote => 3,
            Kind::TransferLeader => 4,
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Append,
            2 => Kind::Vote,
            3 => Kind::PreVote,
            4 => Kind::TransferLeader,
            _ => return None,
        })
    }
}

/// How the receiver answered a request frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The body is Raft's answer as JSON (an error of the peer's Raft
    /// included).
    Answer,
    /// The request named another node or cluster; the body is the refusal
    /// code (`wrong_node`, `wrong_cluster`, `held`), a newline, and why.
    Refused,
    /// The frame or its body did not decode; the body says why.
    Malformed,
    /// The receiver failed to serve it (storage, encoding); the body says why.
    Failed,
}

impl Status {
    fn byte(self) -> u8 {
        match self {
            Status::Answer => 0,
            Status::Refused => 1,
            Status::Malformed => 2,
            Status::Failed => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Answer,
            1 => Status::Refused,
            2 => Status::Malformed,
            3 => Status::Failed,
            _ => return None,
        })
    }
}

/// A frame that cannot be sent or was received broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame too short: {0} bytes")]
    Short(usize),
    #[error("unknown rpc kind {0}")]
    UnknownKind(u8),
    #[error("unknown response status {0}")]
    UnknownStatus(u8),
    #[error("cluster uuid of {0} bytes")]
    Cluster(usize),
}

/// The length a prefix announces, refused beyond `max` before any of the
/// frame is read.
pub fn frame_len(prefix: [u8; PREFIX], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Starts a request frame: prefix (patched by [`finish`]) and head. The
/// caller appends the JSON body to the returned buffer.
pub fn begin_request(kind: Kind, target: NodeId, cluster: &str) -> Result<Vec<u8>, FrameError> {
    let uuid = cluster.as_bytes();
    let uuid_len = u8::try_from(uuid.len()).map_err(|_| FrameError::Cluster(uuid.len()))?;
    let mut buf = Vec::with_capacity(PREFIX + 10 + uuid.len() + 256);
    buf.extend_from_slice(&[0; PREFIX]);
    buf.push(kind.byte());
    buf.extend_from_slice(&target.to_be_bytes());
    buf.push(uuid_len);
    buf.extend_from_slice(uuid);
    Ok(buf)
}

/// A whole response frame.
pub fn response(status: Status, body: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::with_capacity(PREFIX + 1 + body.len());
    buf.extend_from_slice(&[0; PREFIX]);
    buf.push(status.byte());
    buf.extend_from_slice(body);
    finish(buf)
}

/// Writes the length prefix of a frame built by [`begin_request`] or
/// [`response`]; refuses one over [`FRAME_MAX`], which the peer would refuse.
pub fn finish(mut buf: Vec<u8>) -> Result<Vec<u8>, FrameError> {
    let len = buf.len().saturating_sub(PREFIX);
    if len > FRAME_MAX {
        return Err(FrameError::TooLarge { len, max: FRAME_MAX });
    }
    // FRAME_MAX < u32::MAX, so the cast is exact.
    buf[..PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// A request frame's content (without its prefix), borrowed.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub kind: Kind,
    pub target: NodeId,
    /// Not checked for UTF-8 here: the receiver's identity check refuses
    /// anything that is not its own UUID.
    pub cluster: &'a [u8],
    pub body: &'a [u8],
}

pub fn decode_request(frame: &[u8]) -> Result<Request<'_>, FrameError> {
    let short = || FrameError::Short(frame.len());
    let (&kind, rest) = frame.split_first().ok_or_else(short)?;
    let kind = Kind::from_byte(kind).ok_or(FrameError::UnknownKind(kind))?;
    let (target, rest) = rest.split_first_chunk::<8>().ok_or_else(short)?;
    let (&uuid_len, rest) = rest.split_first().ok_or_else(short)?;
    let (cluster, body) = rest.split_at_checked(uuid_len as usize).ok_or_else(short)?;
    Ok(Request { kind, target: NodeId::from_be_bytes(*target), cluster, body })
}

/// A response frame's content (without its prefix): status and body.
pub fn decode_response(frame: &[u8]) -> Result<(Status, &[u8]), FrameError> {
    let (&status, body) = frame.split_first().ok_or(FrameError::Short(0))?;
    let status = Status::from_byte(status).ok_or(FrameError::UnknownStatus(status))?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "6f1c1e4e-2b8a-4c1e-9a3e-1d2f3a4b5c6d";

    fn unprefixed(frame: &[u8]) -> &[u8] {
        let len = frame_len(frame[..PREFIX].try_into().unwrap(), FRAME_MAX).unwrap();
        assert_eq!(len, frame.len() - PREFIX, "the prefix counts what follows it");
        &frame[PREFIX..]
    }

    #[test]
    fn a_request_round_trips() {
        for kind in [Kind::Append, Kind::Vote, Kind::PreVote, Kind::TransferLeader] {
            for cluster in [U, ""] {
                let mut buf = begin_request(kind, u64::MAX - 3, cluster).unwrap();
                buf.extend_from_slice(br#"{"vote":1}"#);
                let frame = finish(buf).unwrap();
                let req = decode_request(unprefixed(&frame)).unwrap();
                assert_eq!(
                    req,
                    Request {
                        kind,
                        target: u64::MAX - 3,
                        cluster: cluster.as_bytes(),
                        body: br#"{"vote":1}"#
                    }
                );
            }
        }
    }

    #[test]
    fn a_response_round_trips() {
        for status in [Status::Answer, Status::Refused, Status::Malformed, Status::Failed] {
            let frame = response(status, b"wrong_node\nthis is node 2").unwrap();
            assert_eq!(
                decode_response(unprefixed(&frame)).unwrap(),
                (status, &b"wrong_node\nthis is node 2"[..])
            );
        }
        let empty = response(Status::Answer, b"").unwrap();
        assert_eq!(decode_response(unprefixed(&empty)).unwrap(), (Status::Answer, &b""[..]));
    }

    #[test]
    fn a_prefix_over_the_limit_is_refused_before_reading() {
        assert_eq!(frame_len(10u32.to_be_bytes(), 10), Ok(10));
        assert_eq!(
            frame_len(11u32.to_be_bytes(), 10),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
        assert!(frame_len(u32::MAX.to_be_bytes(), FRAME_MAX).is_err());
    }

    #[test]
    fn truncated_or_unknown_frames_are_errors_not_panics() {
        let mut buf = begin_request(Kind::Append, 7, U).unwrap();
        buf.extend_from_slice(b"{}");
        let frame = finish(buf).unwrap();
        let content = &frame[PREFIX..];
        // Every cut inside the head is an error; a cut in the body is a
        // shorter body (the prefix, not the head, delimits the frame).
        let head = 1 + 8 + 1 + U.len();
        for cut in 0..head {
            assert!(decode_request(&content[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode_request(&content[..head]).unwrap().body, b"");
        assert_eq!(decode_request(&[0]), Err(FrameError::UnknownKind(0)));
        assert_eq!(decode_request(&[9, 0]), Err(FrameError::UnknownKind(9)));
        // A uuid length beyond the frame.
        let mut lying = vec![1];
        lying.extend_from_slice(&7u64.to_be_bytes());
        lying.push(200);
        lying.extend_from_slice(b"abc");
        assert_eq!(decode_request(&lying), Err(FrameError::Short(13)));
        assert_eq!(decode_response(&[]), Err(FrameError::Short(0)));
        assert_eq!(decode_response(&[7]), Err(FrameError::UnknownStatus(7)));
    }

    #[test]
    fn a_cluster_name_longer_than_a_byte_can_count_is_refused() {
        let long = "x".repeat(256);
        assert_eq!(begin_request(Kind::Vote, 1, &long), Err(FrameError::Cluster(256)));
    }

    proptest::proptest! {
        /// Every request the sender can frame decodes to what it framed.
        #[test]
        fn every_framed_request_decodes_to_itself(
            kind in 1u8..=4,
            target in proptest::prelude::any::<u64>(),
            cluster in "[0-9a-f-]{0,40}",
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            let kind = Kind::from_byte(kind).unwrap();
            let mut buf = begin_request(kind, target, &cluster).unwrap();
            buf.extend_from_slice(&body);
            let frame = finish(buf).unwrap();
            let req = decode_request(unprefixed(&frame)).unwrap();
            proptest::prop_assert_eq!(
                req,
                Request { kind, target, cluster: cluster.as_bytes(), body: &body }
            );
        }

        /// Whatever bytes arrive, decoding answers (never panics), and what
        /// it accepts is exactly the input, reassembled.
        #[test]
        fn any_bytes_decode_to_an_error_or_to_themselves(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)
        ) {
            if let Ok(req) = decode_request(&bytes) {
                let mut again = begin_request(req.kind, req.target, "").unwrap();
                again.truncate(again.len() - 1);
                again.push(req.cluster.len() as u8);
                again.extend_from_slice(req.cluster);
                again.extend_from_slice(req.body);
                proptest::prop_assert_eq!(&again[PREFIX..], &bytes[..]);
            }
            if let Ok((status, body)) = decode_response(&bytes) {
                let again = response(status, body).unwrap();
                proptest::prop_assert_eq!(&again[PREFIX..], &bytes[..]);
            }
        }
    }
}
