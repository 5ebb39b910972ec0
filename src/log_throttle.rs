//! Rate-limited warnings for events an outsider can cause at will (refused
//! handshakes, dropped gossip datagrams): at most one line per interval, the
//! occurrences in between folded into the next line as a count. The first
//! occurrence is logged at once, so an operator still sees it; a flood cannot
//! fill the log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One throttle per kind of event (`&self`, so it can sit in shared state).
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub const fn new(interval: Duration) -> Self {
        Self { interval, state: Mutex::new(ThrottleState { last_logged: None, suppressed: 0 }) }
    }

    /// Call once per occurrence. `Some(n)`: log this one now; `n` occurrences
    /// since the previous line were not logged. `None`: stay quiet.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        // A panic while holding this lock cannot leave it inconsistent.
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = state
            .last_logged
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if due {
            state.last_logged = Some(now);
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed = state.suppressed.saturating_add(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_suppressed_count() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(throttle.allow_at(start), Some(0), "the first occurrence is logged");
        for ms in [1, 500, 9_999] {
            assert_eq!(throttle.allow_at(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(throttle.allow_at(start + Duration::from_secs(10)), Some(3));
        assert_eq!(throttle.allow_at(start + Duration::from_secs(11)), None);
        assert_eq!(throttle.allow_at(start + Duration::from_secs(25)), Some(1));
    }
}
