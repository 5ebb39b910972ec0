//! RocksDB layout: column families and order-preserving key encodings.
//!
//! One RocksDB instance holds the Raft log and the state machine, so a synced
//! log append also makes every earlier state-machine write durable (one WAL).
//!
//! | cf       | key                          | value                         |
//! |----------|------------------------------|-------------------------------|
//! | `logs`   | index (u64 big-endian)       | entry (JSON)                  |
//! | `meta`   | `vote`, `committed`, `purged`| JSON                          |
//! |          | `cluster`                    | cluster UUID (text)           |
//! | `sm`     | `applied`, `membership`      | JSON                          |
//! |          | `q/<queue>`                  | `QueueMeta` (JSON)            |
//! |          | `s/<name>`                   | next id (u64 big-endian)      |
//! |          | `i/<queue>\0<key>`           | `IdemEntry` (JSON)            |
//! |          | `m/c`                        | maze cursor: epoch, next      |
//! |          | `m/p/<seq u64 BE>`           | buffered maze line            |
//! |          | `m/f/<followed BE><follower BE>` | follow edge (empty)       |
//! |          | `r/<node id BE>`             | retired node (empty)          |
//! |          | `cluster`                    | cluster UUID (a copy, for snapshots and backups) |
//! | `events` | `<queue>\0<seq u64 BE>`      | event body (UTF-8)            |
//! | `stamps` | `<queue>\0<seq u64 BE>`      | `EventStamp` (24 bytes)       |
//!
//! Big-endian integers make RocksDB's byte order the numeric order, so range
//! scans and `delete_range` follow seqs and log indexes. Queue names cannot
//! contain NUL (the API validates them), which keeps `<queue>\0` prefixes
//! unambiguous.

use crate::queue::Seq;

pub const CF_LOGS: &str = "logs";
pub const CF_META: &str = "meta";
pub const CF_SM: &str = "sm";
pub const CF_EVENTS: &str = "events";
/// Per-event retention facts (enqueue time, byte offsets), keyed like `events`.
pub const CF_STAMPS: &str = "stamps";

/// The column families of the state machine: what a snapshot contains (a
/// snapshot record names its family by index here, so only append).
pub const SM_CFS: [&str; 3] = [CF_SM, CF_EVENTS, CF_STAMPS];

pub const META_VOTE: &[u8] = b"vote";
pub const META_COMMITTED: &[u8] = b"committed";
pub const META_PURGED: &[u8] = b"purged";
/// This node's cluster UUID (see `raft::peer`): node-local, never replaced by a snapshot.
pub const META_CLUSTER_UUID: &[u8] = b"cluster";

pub const SM_APPLIED: &[u8] = b"applied";
pub const SM_MEMBERSHIP: &[u8] = b"membership";
pub const SM_QUEUE_PREFIX: &[u8] = b"q/";
pub const SM_SEQUENCE_PREFIX: &[u8] = b"s/";
pub const SM_IDEM_PREFIX: &[u8] = b"i/";

pub const SM_MAZE_CURSOR: &[u8] = b"m/c";
pub const SM_MAZE_PENDING_PREFIX: &[u8] = b"m/p/";
pub const SM_MAZE_FOLLOW_PREFIX: &[u8] = b"m/f/";

pub const SM_RETIRED_PREFIX: &[u8] = b"r/";
/// A copy of the cluster UUID, so snapshots and backups say which cluster they are of.
pub const SM_CLUSTER_UUID: &[u8] = b"cluster";

pub fn retired_key(id: u64) -> Vec<u8> {
    let mut key = SM_RETIRED_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

pub fn maze_pending_key(seq: u64) -> Vec<u8> {
    let mut key = SM_MAZE_PENDING_PREFIX.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn maze_follow_key(followed: u64, follower: u64) -> Vec<u8> {
    let mut key = SM_MAZE_FOLLOW_PREFIX.to_vec();
    key.extend_from_slice(&followed.to_be_bytes());
    key.extend_from_slice(&follower.to_be_bytes());
    key
}

/// The exclusive end of every key starting with `prefix` (whose last byte
/// is `/`, so `0`, the next byte value, bounds it).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Decodes a `logs` key; `None` for a key of the wrong length (a torn or
/// foreign write), which the caller reports as corruption.
pub fn decode_log_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

pub fn event_key(queue: &str, seq: Seq) -> Vec<u8> {
    let mut key = Vec::with_capacity(queue.len() + 9);
    key.extend_from_slice(queue.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Decodes an `events` key into (queue, seq).
pub fn decode_event_key(key: &[u8]) -> Option<(&str, Seq)> {
    if key.len() < 9 {
        return None;
    }
    let (queue, rest) = key.split_at(key.len() - 9);
    if rest[0] != 0 {
        return None;
    }
    let seq = u64::from_be_bytes(rest[1..].try_into().ok()?);
    Some((std::str::from_utf8(queue).ok()?, seq))
}

pub fn prefixed(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + name.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(name.as_bytes());
    key
}

pub fn idem_key(queue: &str, key: &str) -> Vec<u8> {
    let mut k = prefixed(SM_IDEM_PREFIX, queue);
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_by_queue_then_seq() {
        let mut keys = [
            event_key("b", 1),
            event_key("a", 256),
            event_key("a", 2),
            event_key("a", 1),
            event_key("ab", 0),
        ];
        keys.sort();
        let decoded: Vec<_> = keys.iter().map(|k| decode_event_key(k).unwrap()).collect();
        assert_eq!(decoded, vec![("a", 1), ("a", 2), ("a", 256), ("ab", 0), ("b", 1)]);
    }

    #[test]
    fn malformed_keys_do_not_decode() {
        assert_eq!(decode_log_key(b"short"), None);
        assert_eq!(decode_event_key(b"abc"), None);
        assert_eq!(decode_event_key(b"abcdefghijk"), None);
        assert_eq!(decode_log_key(&log_key(7)), Some(7));
    }
}
