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
//! |          | `w/<queue>\0<seq u64 BE>`    | availability `Slot` (JSON)    |
//! |          | `p/<queue>`                  | `QueuePolicy` (JSON)          |
//! |          | `g/<queue>\0<group>`         | group cursor (u64 big-endian) |
//! |          | `n/<queue>`                  | `WorkCounters` (JSON)         |
//! |          | `cluster`                    | cluster UUID (a copy, for snapshots and backups) |
//! | `events` | `<queue>\0<seq u64 BE>`      | event body (UTF-8)            |
//! | `stamps` | `<queue>\0<seq u64 BE>`      | `EventStamp` (24 bytes)       |
//!
//! Big-endian integers make RocksDB's byte order the numeric order, so range
//! scans and `delete_range` follow seqs and log indexes. Queue names cannot
//! contain NUL (the API validates them), which keeps `<queue>\0` prefixes
//! unambiguous.
//!
//! [`encode`] turns the core's typed writes into these keys and values, and
//! [`decode_state`] turns an `sm` record back into the core's typed record:
//! the one place that knows both the layout and the core's types.

use super::db::StoreError;
use crate::queue::{EventStamp, Seq};
use crate::sm::{Record, Write};

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
/// Work-queue state (`queue::work`): slots, policies, group cursors, counters.
pub const SM_SLOT_PREFIX: &[u8] = b"w/";
pub const SM_POLICY_PREFIX: &[u8] = b"p/";
pub const SM_CURSOR_PREFIX: &[u8] = b"g/";
pub const SM_COUNTERS_PREFIX: &[u8] = b"n/";
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

pub fn slot_key(queue: &str, seq: Seq) -> Vec<u8> {
    let mut key = SM_SLOT_PREFIX.to_vec();
    key.extend_from_slice(&event_key(queue, seq));
    key
}

pub fn cursor_key(queue: &str, group: &str) -> Vec<u8> {
    let mut key = prefixed(SM_CURSOR_PREFIX, queue);
    key.push(0);
    key.extend_from_slice(group.as_bytes());
    key
}

/// Splits `<queue>\0<rest>` (queue names contain no NUL).
fn split_nul(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = bytes.iter().position(|&b| b == 0)?;
    Some((&bytes[..nul], &bytes[nul + 1..]))
}

pub fn idem_key(queue: &str, key: &str) -> Vec<u8> {
    let mut k = prefixed(SM_IDEM_PREFIX, queue);
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// A column family of the state machine, by its place in [`SM_CFS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SmCf {
    Sm = 0,
    Events = 1,
    Stamps = 2,
}

/// Where [`encode`] puts its key/value changes: a RocksDB `WriteBatch`, or
/// an in-memory map in tests.
pub trait KvBatch {
    fn put(&mut self, cf: SmCf, key: &[u8], value: &[u8]);
    fn delete(&mut self, cf: SmCf, key: &[u8]);
    /// Deletes every key in `from..to`.
    fn delete_range(&mut self, cf: SmCf, from: &[u8], to: &[u8]);
}

/// Encodes the core's writes, in order, into `out`.
pub fn encode(writes: &[Write], out: &mut impl KvBatch) -> Result<(), StoreError> {
    for write in writes {
        match write {
            Write::Stamp { queue, seq, stamp } => {
                out.put(SmCf::Stamps, &event_key(queue, *seq), &stamp.encode());
            }
            Write::Event { queue, seq, body } => {
                out.put(SmCf::Events, &event_key(queue, *seq), body.as_bytes());
            }
            Write::DeleteEvents { queue, from, to } => {
                let (start, end) = (event_key(queue, *from), event_key(queue, *to));
                out.delete_range(SmCf::Events, &start, &end);
                out.delete_range(SmCf::Stamps, &start, &end);
            }
            Write::Queue { queue, meta } => {
                out.put(SmCf::Sm, &prefixed(SM_QUEUE_PREFIX, queue), &serde_json::to_vec(meta)?);
            }
            Write::Idem { key, entry } => {
                out.put(SmCf::Sm, &idem_key(&entry.queue, key), &serde_json::to_vec(entry)?);
            }
            Write::DelIdem { queue, key } => out.delete(SmCf::Sm, &idem_key(queue, key)),
            Write::Sequence { name, next } => {
                out.put(SmCf::Sm, &prefixed(SM_SEQUENCE_PREFIX, name), &next.to_be_bytes());
            }
            Write::Retired { id } => out.put(SmCf::Sm, &retired_key(*id), &[]),
            Write::Slot { queue, seq, slot: Some(slot) } => {
                out.put(SmCf::Sm, &slot_key(queue, *seq), &serde_json::to_vec(slot)?);
            }
            Write::Slot { queue, seq, slot: None } => out.delete(SmCf::Sm, &slot_key(queue, *seq)),
            Write::DeleteSlots { queue, from, to } => {
                out.delete_range(SmCf::Sm, &slot_key(queue, *from), &slot_key(queue, *to));
            }
            Write::Policy { queue, policy: Some(policy) } => {
                out.put(SmCf::Sm, &prefixed(SM_POLICY_PREFIX, queue), &serde_json::to_vec(policy)?);
            }
            Write::Policy { queue, policy: None } => {
                out.delete(SmCf::Sm, &prefixed(SM_POLICY_PREFIX, queue));
            }
            Write::Cursor { queue, group, seq } => {
                out.put(SmCf::Sm, &cursor_key(queue, group), &seq.to_be_bytes());
            }
            Write::Counters { queue, counters } => {
                let key = prefixed(SM_COUNTERS_PREFIX, queue);
                out.put(SmCf::Sm, &key, &serde_json::to_vec(counters)?);
            }
            Write::ClearMaze => {
                for prefix in [SM_MAZE_PENDING_PREFIX, SM_MAZE_FOLLOW_PREFIX] {
                    out.delete_range(SmCf::Sm, prefix, &prefix_end(prefix));
                }
            }
            Write::MazePending { seq, line: Some(line) } => {
                out.put(SmCf::Sm, &maze_pending_key(*seq), line.as_bytes());
            }
            Write::MazePending { seq, line: None } => out.delete(SmCf::Sm, &maze_pending_key(*seq)),
            Write::Follow { followed, follower, present } => {
                let key = maze_follow_key(*followed, *follower);
                if *present {
                    out.put(SmCf::Sm, &key, &[]);
                } else {
                    out.delete(SmCf::Sm, &key);
                }
            }
            Write::MazeCursor { epoch, next } => {
                out.put(SmCf::Sm, SM_MAZE_CURSOR, &serde_json::to_vec(&(epoch, next))?);
            }
            Write::Applied(applied) => out.put(SmCf::Sm, SM_APPLIED, &serde_json::to_vec(applied)?),
            Write::Membership(membership) => {
                out.put(SmCf::Sm, SM_MEMBERSHIP, &serde_json::to_vec(membership)?);
            }
        }
    }
    Ok(())
}

/// Decodes one record of the `sm` family: its key says which of the
/// thirteen kinds it is. Anything else is corruption.
pub fn decode_state(key: &[u8], value: &[u8]) -> Result<Record, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("{what} {key:?}"));
    let utf8 = |bytes: &[u8]| {
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| corrupt("non-UTF-8 state key"))
    };
    let be = |bytes: &[u8], what: &str| {
        <[u8; 8]>::try_from(bytes).map(u64::from_be_bytes).map_err(|_| corrupt(what))
    };
    Ok(if key == SM_APPLIED {
        Record::Applied(serde_json::from_slice(value)?)
    } else if key == SM_MEMBERSHIP {
        Record::Membership(serde_json::from_slice(value)?)
    } else if key == SM_CLUSTER_UUID {
        // Only carried for snapshots and backups; the node's own copy is
        // in `meta` (see `raft::peer`).
        Record::ClusterUuid
    } else if let Some(name) = key.strip_prefix(SM_QUEUE_PREFIX) {
        Record::Queue { name: utf8(name)?, meta: serde_json::from_slice(value)? }
    } else if let Some(name) = key.strip_prefix(SM_SEQUENCE_PREFIX) {
        Record::Sequence { name: utf8(name)?, next: be(value, "bad sequence value for")? }
    } else if key == SM_MAZE_CURSOR {
        let (epoch, next): (u64, u64) = serde_json::from_slice(value)?;
        Record::MazeCursor { epoch, next }
    } else if let Some(seq) = key.strip_prefix(SM_MAZE_PENDING_PREFIX) {
        Record::MazePending { seq: be(seq, "bad maze key")?, line: utf8(value)? }
    } else if let Some(edge) = key.strip_prefix(SM_MAZE_FOLLOW_PREFIX) {
        let (followed, follower) = edge.split_at(edge.len().min(8));
        Record::Follow {
            followed: be(followed, "bad maze follow key")?,
            follower: be(follower, "bad maze follow key")?,
        }
    } else if let Some(id) = key.strip_prefix(SM_RETIRED_PREFIX) {
        Record::Retired { id: be(id, "bad node key")? }
    } else if let Some(rest) = key.strip_prefix(SM_SLOT_PREFIX) {
        let (queue, seq) = decode_event_key(rest).ok_or_else(|| corrupt("bad slot key"))?;
        Record::Slot { queue: queue.to_owned(), seq, slot: serde_json::from_slice(value)? }
    } else if let Some(queue) = key.strip_prefix(SM_POLICY_PREFIX) {
        Record::Policy { queue: utf8(queue)?, policy: serde_json::from_slice(value)? }
    } else if let Some(rest) = key.strip_prefix(SM_CURSOR_PREFIX) {
        let (queue, group) = split_nul(rest).ok_or_else(|| corrupt("bad cursor key"))?;
        Record::Cursor {
            queue: utf8(queue)?,
            group: utf8(group)?,
            seq: be(value, "bad cursor value for")?,
        }
    } else if let Some(queue) = key.strip_prefix(SM_COUNTERS_PREFIX) {
        Record::Counters { queue: utf8(queue)?, counters: serde_json::from_slice(value)? }
    } else if let Some(rest) = key.strip_prefix(SM_IDEM_PREFIX) {
        let entry = serde_json::from_slice(value)?;
        let idem = rest
            .iter()
            .position(|&b| b == 0)
            .map(|nul| &rest[nul + 1..])
            .ok_or_else(|| corrupt("bad idempotency key"))?;
        Record::Idem { key: utf8(idem)?, entry }
    } else {
        return Err(corrupt("unknown state key"));
    })
}

/// Decodes a stored retention stamp.
pub fn decode_stamp(queue: &str, seq: Seq, bytes: &[u8]) -> Result<EventStamp, StoreError> {
    EventStamp::decode(bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("stamp of {queue}/{seq} is malformed")))
}

/// Decodes a stored event body.
pub fn decode_body(seq: Seq, bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| StoreError::Corrupt(format!("event {seq} is not UTF-8")))
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
