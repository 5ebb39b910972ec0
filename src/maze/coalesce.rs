//! When the event source closes a batch of lines into one proposal (★ pure:
//! time is passed in).
//!
//! Every proposal is one Raft entry, and every entry costs a log write and
//! an fsync on each node, so under load fewer, larger entries are cheaper
//! than one entry per socket read. A batch is closed:
//! - at once when it is full (`lines_max` lines or `bytes_max` bytes);
//! - while the socket still has bytes buffered, never (read them first);
//! - otherwise at once when no batch is in flight, so that a trickle is
//!   not delayed: nothing would be gained by waiting;
//! - otherwise when its oldest line has waited `delay`, or earlier when
//!   the batches in flight are all done.
//!
//! With `delay` zero the batch closes whenever the socket has nothing more
//! buffered (one entry per read burst, the behaviour before coalescing).

use std::time::{Duration, Instant};

/// Bounds of one batch. Named so that the source's flags map onto them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceLimits {
    /// Lines that close a batch at once.
    pub lines_max: usize,
    /// Bytes that close a batch at once (the line that crosses it goes in).
    pub bytes_max: usize,
    /// Longest a line waits for company while other batches are in flight.
    pub delay: Duration,
}

/// What the source should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Propose the batch now.
    Flush,
    /// Read on; nothing is due.
    Read,
    /// Read on, but propose the batch at this instant (or earlier, when the
    /// batches in flight are done) if no more lines have filled it by then.
    ReadUntil(Instant),
}

/// The open batch: its lines and when its oldest line arrived.
#[derive(Debug)]
pub struct Coalescer {
    limits: CoalesceLimits,
    lines: Vec<String>,
    bytes: usize,
    oldest: Option<Instant>,
}

impl Coalescer {
    pub fn new(limits: CoalesceLimits) -> Self {
        Coalescer { limits, lines: Vec::new(), bytes: 0, oldest: None }
    }

    pub fn push(&mut self, line: String, now: Instant) {
        self.oldest.get_or_insert(now);
        self.bytes += line.len();
        self.lines.push(line);
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Closes the batch: its lines, in arrival order.
    pub fn take(&mut self) -> Vec<String> {
        self.bytes = 0;
        self.oldest = None;
        std::mem::take(&mut self.lines)
    }

    /// `in_flight`: batches proposed and not yet known committed;
    /// `buffered`: whether the socket already has more bytes read in.
    pub fn decide(&self, now: Instant, in_flight: usize, buffered: bool) -> Decision {
        let Some(oldest) = self.oldest else { return Decision::Read };
        if self.lines.len() >= self.limits.lines_max || self.bytes >= self.limits.bytes_max {
            return Decision::Flush;
        }
        if buffered {
            return Decision::Read;
        }
        if self.limits.delay.is_zero() || in_flight == 0 {
            return Decision::Flush;
        }
        let due = oldest + self.limits.delay;
        if now >= due {
            Decision::Flush
        } else {
            Decision::ReadUntil(due)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn coalescer(delay: Duration) -> Coalescer {
        Coalescer::new(CoalesceLimits { lines_max: 3, bytes_max: 20, delay })
    }

    #[test]
    fn empty_batch_just_reads() {
        let c = coalescer(2 * MS);
        let now = Instant::now();
        assert!(c.is_empty());
        assert_eq!(c.decide(now, 0, false), Decision::Read);
        assert_eq!(c.decide(now, 8, true), Decision::Read);
    }

    #[test]
    fn a_trickle_goes_out_at_once_when_nothing_is_in_flight() {
        let mut c = coalescer(2 * MS);
        let now = Instant::now();
        c.push("1|B\n".into(), now);
        assert_eq!(c.decide(now, 0, false), Decision::Flush);
        // More bytes already read in: read them before closing.
        assert_eq!(c.decide(now, 0, true), Decision::Read);
    }

    #[test]
    fn under_load_lines_wait_at_most_the_delay_from_the_oldest() {
        let mut c = coalescer(2 * MS);
        let t0 = Instant::now();
        c.push("1|B\n".into(), t0);
        assert_eq!(c.decide(t0, 1, false), Decision::ReadUntil(t0 + 2 * MS));
        // A later line does not push the deadline back.
        c.push("2|B\n".into(), t0 + MS);
        assert_eq!(c.decide(t0 + MS, 1, false), Decision::ReadUntil(t0 + 2 * MS));
        assert_eq!(c.decide(t0 + 2 * MS, 1, false), Decision::Flush);
        assert_eq!(c.decide(t0 + 5 * MS, 8, false), Decision::Flush);
        // The in-flight batches finishing closes it early.
        assert_eq!(c.decide(t0 + MS, 0, false), Decision::Flush);
    }

    #[test]
    fn full_batches_close_at_once_even_with_more_buffered() {
        let mut by_lines = coalescer(2 * MS);
        let now = Instant::now();
        for seq in 1..=3 {
            by_lines.push(format!("{seq}|B\n"), now);
        }
        assert_eq!(by_lines.decide(now, 8, true), Decision::Flush);

        let mut by_bytes = coalescer(2 * MS);
        by_bytes.push("1234567|S|123456789\n".into(), now);
        assert_eq!(by_bytes.decide(now, 8, true), Decision::Flush);
    }

    #[test]
    fn take_returns_lines_in_order_and_resets() {
        let mut c = coalescer(2 * MS);
        let t0 = Instant::now();
        c.push("2|B\n".into(), t0);
        c.push("1|B\n".into(), t0);
        assert_eq!(c.take(), vec!["2|B\n".to_string(), "1|B\n".to_string()]);
        assert!(c.is_empty());
        assert_eq!(c.decide(t0 + 10 * MS, 1, false), Decision::Read);
        // The next batch's deadline counts from its own first line.
        c.push("3|B\n".into(), t0 + 10 * MS);
        assert_eq!(c.decide(t0 + 10 * MS, 1, false), Decision::ReadUntil(t0 + 12 * MS));
        // Byte count was reset too: 4 + 15 bytes do not fill it.
        c.push("4|S|1234567890\n".into(), t0 + 10 * MS);
        assert_eq!(c.decide(t0 + 10 * MS, 1, false), Decision::ReadUntil(t0 + 12 * MS));
    }

    #[test]
    fn zero_delay_closes_whenever_the_socket_is_drained() {
        let mut c = coalescer(Duration::ZERO);
        let now = Instant::now();
        c.push("1|B\n".into(), now);
        assert_eq!(c.decide(now, 8, false), Decision::Flush);
        assert_eq!(c.decide(now, 8, true), Decision::Read);
    }
}
