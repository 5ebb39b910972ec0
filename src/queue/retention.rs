//! Retention by bytes and age: which dequeued events a queue may drop.
//!
//! `--retention-events` is enforced by [`QueueState`](super::QueueState) on
//! every dequeue, because it needs only the seq pointers. Bytes and age need
//! per-event facts, so every stored event carries an [`EventStamp`]: its
//! enqueue time (the proposing leader's clock, made monotonic per queue) and
//! its byte range in the queue's cumulative byte stream. The bytes of any
//! seq range are then one subtraction, and both "too many bytes" and "too
//! old" hold for a prefix of the dequeued events, so the leader finds the
//! cut with a binary search of O(log n) point reads ([`compact_upto`]) and
//! proposes it as a [`Command::Compact`](super::Command::Compact). Applying
//! that is clock-free and clamps to the pending front, so every node drops
//! exactly the same events and none that are still pending.
//!
//! Events stored before stamps existed have none; they are kept here (and
//! left to `--retention-events`) rather than guessed about.

use serde::{Deserialize, Serialize};

use super::{QueueMeta, Seq};

/// Per-event facts for retention, stored beside the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventStamp {
    /// Enqueue time, Unix milliseconds; never less than the previous event's.
    pub time_ms: u64,
    /// Offset of the event's first byte in the queue's byte stream.
    pub start: u64,
    /// Offset just past its last byte (`start + len`).
    pub end: u64,
}

impl EventStamp {
    pub const ENCODED_LEN: usize = 24;

    /// The stamp of an event of `len` bytes enqueued after `prev` (the stamp
    /// of seq - 1 when that event is still stored) at the proposer's
    /// `time_ms`. Without a predecessor the byte stream starts again at 0:
    /// offsets are only ever compared within the stored range.
    pub fn next(prev: Option<EventStamp>, time_ms: u64, len: u64) -> EventStamp {
        let (start, time_ms) = match prev {
            // A new leader's clock may be behind the old one's; clamping
            // keeps times monotonic so that "too old" is a prefix.
            Some(prev) => (prev.end, time_ms.max(prev.time_ms)),
            None => (0, time_ms),
        };
        EventStamp { time_ms, start, end: start.saturating_add(len) }
    }

    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&self.time_ms.to_be_bytes());
        out[8..16].copy_from_slice(&self.start.to_be_bytes());
        out[16..].copy_from_slice(&self.end.to_be_bytes());
        out
    }

    /// `None` for bytes of the wrong length (reported by the caller).
    pub fn decode(bytes: &[u8]) -> Option<EventStamp> {
        let word = |i: usize| Some(u64::from_be_bytes(bytes.get(i..i + 8)?.try_into().ok()?));
        if bytes.len() != Self::ENCODED_LEN {
            return None;
        }
        Some(EventStamp { time_ms: word(0)?, start: word(8)?, end: word(16)? })
    }
}

/// The byte and age limits on a queue's dequeued events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Most body bytes of dequeued events kept per queue.
    pub max_bytes: u64,
    /// Dequeued events enqueued longer ago than this are dropped.
    pub max_age_ms: u64,
}

/// The seq that should become `meta`'s oldest under `policy` at `now_ms`:
/// the first dequeued event that is neither beyond the byte budget (counted
/// from the newest dequeued event backwards) nor too old; `meta.front` if
/// every dequeued event must go. Always within `[oldest, front]`, so the
/// answer never touches a pending event. `stamp(seq)` reads a stored stamp
/// (`None`: absent, and such an event is kept).
pub fn compact_upto<E>(
    meta: &QueueMeta,
    policy: &RetentionPolicy,
    now_ms: u64,
    mut stamp: impl FnMut(Seq) -> Result<Option<EventStamp>, E>,
) -> Result<Seq, E> {
    let (oldest, front) = (meta.oldest, meta.front);
    if front <= oldest {
        return Ok(oldest);
    }
    // Unstamped events can only be the oldest ones (stored before stamps
    // existed); `oldest` cannot move past them without judging them.
    if stamp(oldest)?.is_none() {
        return Ok(oldest);
    }
    // The end of the newest dequeued event bounds the dequeued bytes; if it
    // is unknown, the byte limit cannot be judged and only age applies.
    let newest_end = stamp(front - 1)?.map(|s| s.end);
    let mut must_drop = |seq: Seq| -> Result<bool, E> {
        let Some(s) = stamp(seq)? else {
            return Ok(false);
        };
        let too_many_bytes =
            newest_end.is_some_and(|end| end.saturating_sub(s.start) > policy.max_bytes);
        let too_old = now_ms.saturating_sub(s.time_ms) > policy.max_age_ms;
        Ok(too_many_bytes || too_old)
    };
    // Invariant: every seq below `lo` must be dropped; `hi` and above are kept
    // (`front` counts as kept). Both limits only ever drop a prefix.
    let (mut lo, mut hi) = (oldest, front);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if must_drop(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    fn meta(oldest: Seq, front: Seq, next: Seq) -> QueueMeta {
        QueueMeta { oldest, front, next }
    }

    /// Stamps for seqs 1..=sizes.len() built the way the state machine does.
    fn stamps(sizes: &[u64], times: &[u64]) -> Vec<EventStamp> {
        let mut out: Vec<EventStamp> = Vec::new();
        for (len, time) in sizes.iter().zip(times) {
            out.push(EventStamp::next(out.last().copied(), *time, *len));
        }
        out
    }

    fn lookup(
        all: &[EventStamp],
    ) -> impl FnMut(Seq) -> Result<Option<EventStamp>, Infallible> + '_ {
        move |seq| Ok(seq.checked_sub(1).and_then(|i| all.get(i as usize)).copied())
    }

    fn upto(m: QueueMeta, policy: RetentionPolicy, now: u64, all: &[EventStamp]) -> Seq {
        match compact_upto(&m, &policy, now, lookup(all)) {
            Ok(seq) => seq,
            Err(never) => match never {},
        }
    }

    const NO_LIMIT: RetentionPolicy = RetentionPolicy { max_bytes: u64::MAX, max_age_ms: u64::MAX };

    #[test]
    fn stamps_chain_bytes_and_keep_time_monotonic() {
        let a = EventStamp::next(None, 1000, 5);
        assert_eq!(a, EventStamp { time_ms: 1000, start: 0, end: 5 });
        // A new leader with a clock 400 ms behind.
        let b = EventStamp::next(Some(a), 600, 3);
        assert_eq!(b, EventStamp { time_ms: 1000, start: 5, end: 8 });
        let c = EventStamp::next(Some(b), 2000, 0);
        assert_eq!(c, EventStamp { time_ms: 2000, start: 8, end: 8 });
        let huge = EventStamp::next(Some(EventStamp { time_ms: 0, start: 0, end: u64::MAX }), 0, 9);
        assert_eq!(huge.end, u64::MAX);
    }

    #[test]
    fn stamp_encoding_round_trips_and_rejects_other_lengths() {
        let s = EventStamp { time_ms: 1, start: 2, end: u64::MAX };
        assert_eq!(EventStamp::decode(&s.encode()), Some(s));
        assert_eq!(EventStamp::decode(&s.encode()[..23]), None);
        assert_eq!(EventStamp::decode(&[0u8; 25]), None);
    }

    #[test]
    fn byte_limit_keeps_the_newest_dequeued_events_that_fit() {
        // Ten events of 100 bytes, 1..=6 dequeued.
        let all = stamps(&[100; 10], &[0; 10]);
        let m = meta(1, 7, 11);
        let policy = RetentionPolicy { max_bytes: 300, ..NO_LIMIT };
        assert_eq!(upto(m, policy, 0, &all), 4);
        assert_eq!(upto(m, RetentionPolicy { max_bytes: 299, ..NO_LIMIT }, 0, &all), 5);
        assert_eq!(upto(m, RetentionPolicy { max_bytes: 0, ..NO_LIMIT }, 0, &all), 7);
        assert_eq!(upto(m, RetentionPolicy { max_bytes: 600, ..NO_LIMIT }, 0, &all), 1);
    }

    #[test]
    fn age_limit_drops_only_old_dequeued_events() {
        let all = stamps(&[1; 6], &[10, 20, 30, 40, 50, 60]);
        let policy = RetentionPolicy { max_age_ms: 25, ..NO_LIMIT };
        // At 60: events at 10, 20, 30 are older than 25 ms...
        assert_eq!(upto(meta(1, 7, 7), policy, 60, &all), 4);
        // ...but only dequeued ones go: 3 and up are pending.
        assert_eq!(upto(meta(1, 3, 7), policy, 60, &all), 3);
        // A clock behind every stamp drops nothing.
        assert_eq!(upto(meta(1, 7, 7), policy, 0, &all), 1);
    }

    #[test]
    fn nothing_dequeued_means_nothing_to_drop() {
        let all = stamps(&[100; 3], &[0; 3]);
        let strict = RetentionPolicy { max_bytes: 0, max_age_ms: 0 };
        assert_eq!(upto(meta(1, 1, 4), strict, 1_000, &all), 1);
        assert_eq!(upto(meta(4, 4, 4), strict, 1_000, &all), 4);
        // Damaged pointers (front below oldest) answer oldest.
        assert_eq!(upto(meta(5, 3, 9), strict, 1_000, &all), 5);
    }

    #[test]
    fn events_without_stamps_are_kept() {
        let all = stamps(&[100; 6], &[0; 6]);
        // Seqs 1 and 2 predate stamps: nothing can be dropped before them.
        let lookup = |seq: Seq| -> Result<Option<EventStamp>, Infallible> {
            Ok((seq >= 3).then(|| all[seq as usize - 1]))
        };
        let strict = RetentionPolicy { max_bytes: 0, max_age_ms: 0 };
        assert_eq!(compact_upto(&meta(1, 7, 7), &strict, 1_000, lookup), Ok(1));
        assert_eq!(compact_upto(&meta(3, 7, 7), &strict, 1_000, lookup), Ok(7));
        // Without the newest stamp the byte limit cannot be judged.
        let only_bytes = RetentionPolicy { max_bytes: 0, ..NO_LIMIT };
        let lookup = |seq: Seq| -> Result<Option<EventStamp>, Infallible> {
            Ok((seq != 6).then(|| all[seq as usize - 1]))
        };
        assert_eq!(compact_upto(&meta(1, 7, 7), &only_bytes, 1_000, lookup), Ok(1));
    }

    #[test]
    fn read_errors_are_passed_on() {
        let failing = |_: Seq| -> Result<Option<EventStamp>, &'static str> { Err("io") };
        assert_eq!(compact_upto(&meta(1, 3, 3), &NO_LIMIT, 0, failing), Err("io"));
    }

    proptest! {
        /// The binary search agrees with the obvious linear scan, stays
        /// within [oldest, front], and what it keeps fits both limits.
        #[test]
        fn matches_a_linear_scan(
            events in vec((0u64..50, 0u64..20), 1..40),
            cut in (0usize..40, 0usize..40),
            max_bytes in prop_oneof![0u64..300, Just(u64::MAX)],
            max_age_ms in prop_oneof![0u64..200, Just(u64::MAX)],
            now in 0u64..500,
        ) {
            let sizes: Vec<u64> = events.iter().map(|(len, _)| *len).collect();
            let mut time = 0;
            let times: Vec<u64> = events.iter().map(|(_, step)| { time += step; time }).collect();
            let all = stamps(&sizes, &times);
            let n = all.len() as u64;
            let (a, b) = (cut.0 as u64 % (n + 1), cut.1 as u64 % (n + 1));
            let m = meta(a.min(b) + 1, a.max(b) + 1, n + 1);
            let policy = RetentionPolicy { max_bytes, max_age_ms };
            let got = upto(m, policy, now, &all);

            let kept_bytes = |from: Seq| -> u64 {
                (from..m.front).map(|seq| sizes[seq as usize - 1]).sum()
            };
            let drop = |seq: Seq| {
                kept_bytes(seq) > max_bytes || now.saturating_sub(times[seq as usize - 1]) > max_age_ms
            };
            let expected = (m.oldest..m.front).find(|&seq| !drop(seq)).unwrap_or(m.front);
            prop_assert_eq!(got, expected);
            prop_assert!(m.oldest <= got && got <= m.front);
            prop_assert!(kept_bytes(got) <= max_bytes);
        }
    }
}
