//! The consumer's bookkeeping, apart from any I/O: which seq was delivered
//! last, whether an incoming event is the next one, a duplicate or proof of a
//! gap, when a heartbeat proves that the stream is holding events back, and
//! what a compaction cost.
//!
//! Every source (an SSE stream of any node, a page of `/events`) offers its
//! events here; only the exact successor of the last delivered seq is
//! delivered, so each event is delivered once and in order whatever the
//! sources repeat or skip.

use crate::queue::Seq;

/// Events `from..=to` were dropped by retention before this consumer read
/// them: it will never see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    pub from: Seq,
    pub to: Seq,
}

/// What to do with an offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next event: deliver it, then call [`Cursor::delivered`].
    Deliver,
    /// Already delivered: drop it.
    Duplicate,
    /// Events between the last delivered one and this one are missing from
    /// this source: read them (through `through`) from `/events`.
    Gap { through: Seq },
}

#[derive(Debug, Clone)]
pub struct Cursor {
    last: Seq,
    /// The head announced by the current stream's previous heartbeat.
    announced: Option<Seq>,
}

impl Cursor {
    /// A cursor that delivers `after + 1` next.
    pub fn new(after: Seq) -> Self {
        Cursor { last: after, announced: None }
    }

    /// The last delivered seq (the checkpoint).
    pub fn position(&self) -> Seq {
        self.last
    }

    pub fn offer(&self, seq: Seq) -> Verdict {
        if seq <= self.last {
            Verdict::Duplicate
        } else if seq == self.last + 1 {
            Verdict::Deliver
        } else {
            Verdict::Gap { through: seq }
        }
    }

    /// Record that `seq` (which [`Cursor::offer`] called `Deliver`) was handed out.
    pub fn delivered(&mut self, seq: Seq) {
        debug_assert_eq!(seq, self.last + 1, "events are delivered in order");
        self.last = seq;
    }

    /// A new stream starts: forget the previous stream's heartbeats.
    pub fn stream_started(&mut self) {
        self.announced = None;
    }

    /// A heartbeat of the current stream announced `head`. The server sends
    /// every event up to a heartbeat's head before the next heartbeat, so if
    /// the head announced one heartbeat ago is still not delivered the stream
    /// lost events: returns the seq to fill through. (The head of the latest
    /// heartbeat itself may legitimately still be on its way.)
    pub fn heartbeat(&mut self, head: Seq) -> Option<Seq> {
        let overdue = self.announced.filter(|&h| h > self.last);
        self.announced = Some(self.announced.map_or(head, |h| h.max(head)));
        overdue
    }

    /// The server says everything before `oldest` was compacted. If that
    /// covers events not yet delivered they are lost: the cursor moves past
    /// them and reports the range. Otherwise (a race: the request was older
    /// than the cursor) nothing changes.
    pub fn compacted(&mut self, oldest: Seq) -> Option<Lost> {
        if oldest > self.last + 1 {
            let lost = Lost { from: self.last + 1, to: oldest - 1 };
            self.last = oldest - 1;
            self.announced = None;
            Some(lost)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn next_duplicate_and_gap() {
        let mut c = Cursor::new(4);
        assert_eq!(c.offer(3), Verdict::Duplicate);
        assert_eq!(c.offer(4), Verdict::Duplicate);
        assert_eq!(c.offer(7), Verdict::Gap { through: 7 });
        assert_eq!(c.offer(5), Verdict::Deliver);
        c.delivered(5);
        assert_eq!(c.position(), 5);
        assert_eq!(c.offer(5), Verdict::Duplicate);
        assert_eq!(c.offer(6), Verdict::Deliver);
    }

    #[test]
    fn a_heartbeat_head_is_overdue_only_one_heartbeat_later() {
        let mut c = Cursor::new(0);
        assert_eq!(c.heartbeat(3), None, "events up to 3 may still be in flight");
        c.delivered(1);
        c.delivered(2);
        // Seq 3 should have arrived before this second heartbeat.
        assert_eq!(c.heartbeat(5), Some(3));
        c.delivered(3);
        c.delivered(4);
        c.delivered(5);
        assert_eq!(c.heartbeat(5), None);
        assert_eq!(c.heartbeat(6), None);
        // A new stream (maybe on a node further behind) starts afresh.
        c.stream_started();
        assert_eq!(c.heartbeat(2), None);
        assert_eq!(c.heartbeat(2), None, "a head below the position is not a gap");
    }

    #[test]
    fn compaction_reports_exactly_the_unseen_range() {
        let mut c = Cursor::new(10);
        assert_eq!(c.compacted(11), None, "11 is still there");
        assert_eq!(c.compacted(5), None);
        assert_eq!(c.position(), 10);
        assert_eq!(c.compacted(42), Some(Lost { from: 11, to: 41 }));
        assert_eq!(c.position(), 41);
        assert_eq!(c.offer(42), Verdict::Deliver);
        assert_eq!(c.compacted(42), None, "reported once");
    }

    proptest! {
        /// Whatever mix of repeats, reorders and skips the sources produce,
        /// what the cursor lets through is a strictly increasing gapless run.
        #[test]
        fn deliveries_are_gapless_and_unique(offers in proptest::collection::vec(1u64..40, 0..200)) {
            let mut c = Cursor::new(0);
            let mut out = Vec::new();
            for seq in offers {
                if c.offer(seq) == Verdict::Deliver {
                    c.delivered(seq);
                    out.push(seq);
                }
            }
            let want: Vec<Seq> = (1..=out.len() as Seq).collect();
            prop_assert_eq!(out, want);
        }
    }
}
