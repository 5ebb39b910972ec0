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
    /// The current stream sent an event frame since its previous heartbeat.
    streamed: bool,
}

impl Cursor {
    /// A cursor that delivers `after + 1` next.
    pub fn new(after: Seq) -> Self {
        Cursor { last: after, announced: None, streamed: false }
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

    /// [`Cursor::offer`] for an event frame of the current stream, which
    /// also shows that the stream is making progress.
    pub fn offer_streamed(&mut self, seq: Seq) -> Verdict {
        self.streamed = true;
        self.offer(seq)
    }

    /// Record that `seq` (which [`Cursor::offer`] called `Deliver`) was handed out.
    pub fn delivered(&mut self, seq: Seq) {
        debug_assert_eq!(seq, self.last + 1, "events are delivered in order");
        self.last = seq;
    }

    /// A new stream starts: forget the previous stream's heartbeats.
    pub fn stream_started(&mut self) {
        self.announced = None;
        self.streamed = false;
    }

    /// A heartbeat of the current stream announced `head`. While catching up
    /// a server may announce a head before it has sent the events up to it;
    /// once caught up it sends every heartbeat after the events up to its
    /// head. So the stream lost events if the head announced one heartbeat
    /// ago is still not delivered although no event frame came since: returns
    /// the seq to fill through.
    pub fn heartbeat(&mut self, head: Seq) -> Option<Seq> {
        let overdue = if self.streamed { None } else { self.announced.filter(|&h| h > self.last) };
        self.announced = Some(self.announced.map_or(head, |h| h.max(head)));
        self.streamed = false;
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
            self.streamed = false;
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
    fn a_heartbeat_head_is_overdue_after_a_heartbeat_without_events() {
        let mut c = Cursor::new(0);
        assert_eq!(c.heartbeat(3), None, "events up to 3 may still be on their way");
        for seq in 1..=2 {
            assert_eq!(c.offer_streamed(seq), Verdict::Deliver);
            c.delivered(seq);
        }
        // Still catching up: events came since the last heartbeat.
        assert_eq!(c.heartbeat(5), None);
        // Idle for a heartbeat with 3..=5 announced and not delivered.
        assert_eq!(c.heartbeat(5), Some(5));
        for seq in 3..=5 {
            c.delivered(seq);
        }
        assert_eq!(c.heartbeat(5), None);
        assert_eq!(c.heartbeat(6), None, "6 may still be on its way");
        assert_eq!(c.offer_streamed(6), Verdict::Deliver);
        c.delivered(6);
        assert_eq!(c.heartbeat(6), None);
        // Duplicates are progress of a stream that is behind, not a gap.
        assert_eq!(c.heartbeat(9), None);
        assert_eq!(c.offer_streamed(4), Verdict::Duplicate);
        assert_eq!(c.heartbeat(9), None);
        assert_eq!(c.heartbeat(9), Some(9));
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
