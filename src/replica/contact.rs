//! When this node last heard from a leader, so that a client write reaching
//! a follower during a failover waits for the election instead of being
//! redirected to a leader that has gone silent (most likely dead: a 307 to
//! it ends in a refused connection and a client backing off).
//!
//! Every AppendEntries the node accepts (heartbeats included) counts as
//! contact; openraft's metrics do not say when a follower last heard from
//! its leader.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub struct LeaderContact {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last accepted AppendEntries, plus
    /// one (0: none yet).
    last_ms: AtomicU64,
    /// Woken on every contact, for writes waiting on a silent leader.
    contact: Notify,
}

impl LeaderContact {
    pub fn new() -> Self {
        LeaderContact { epoch: Instant::now(), last_ms: AtomicU64::new(0), contact: Notify::new() }
    }

    /// An AppendEntries from the current leader was accepted.
    pub fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_ms.store(ms + 1, Ordering::Relaxed);
        self.contact.notify_waiters();
    }

    /// How long ago a leader was last heard from (`None`: never).
    pub fn since(&self) -> Option<Duration> {
        match self.last_ms.load(Ordering::Relaxed) {
            0 => None,
            stamp => Some((self.epoch + Duration::from_millis(stamp - 1)).elapsed()),
        }
    }

    /// Whether a leader was heard from within `silence`.
    pub fn heard_within(&self, silence: Duration) -> bool {
        self.since().is_some_and(|ago| ago <= silence)
    }

    /// Resolves at the next contact. Create it before checking
    /// [`LeaderContact::heard_within`] so that no contact in between is
    /// missed.
    pub fn next(&self) -> tokio::sync::futures::Notified<'_> {
        self.contact.notified()
    }
}

impl Default for LeaderContact {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_contact_is_never_fresh_and_a_touch_is_fresh_until_the_silence_passes() {
        let contact = LeaderContact::new();
        assert!(!contact.heard_within(Duration::from_secs(3600)));
        contact.touch();
        assert!(contact.heard_within(Duration::from_secs(3600)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!contact.heard_within(Duration::from_millis(5)));
        assert!(contact.heard_within(Duration::from_secs(3600)));
    }

    #[tokio::test]
    async fn a_waiter_wakes_on_the_next_touch() {
        let contact = std::sync::Arc::new(LeaderContact::new());
        let (armed_tx, armed) = tokio::sync::oneshot::channel();
        let waiter = {
            let contact = contact.clone();
            tokio::spawn(async move {
                let next = contact.next();
                tokio::pin!(next);
                next.as_mut().enable();
                armed_tx.send(()).unwrap();
                next.await;
            })
        };
        armed.await.unwrap();
        contact.touch();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
