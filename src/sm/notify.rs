//! Where the core's maze notifications go: the ports between the pure core
//! and a node's connected users.
//!
//! [`Core::apply`](super::Core::apply) asks a [`Notifier`] for an audience
//! and a sink at each maze command and hands notifications to the sink as
//! the maze core makes them (see `maze::state`). A node's fan-out (the user
//! registry of `maze_net::clients`) implements [`Fanout`]: one notifier per
//! apply, whose [`Notifier::finish`] the adapter calls once the apply's
//! writes are stored. The budget of what a notifier holds back until then
//! is the fan-out's business; the core never holds notifications.

use crate::maze::{Audience, ConnectedUsers, Notification, NotificationSink};

/// The audience and sink of one apply's maze notifications.
pub trait Notifier {
    /// Whom the next maze command may notify, and where its notifications go.
    fn parts(&mut self) -> (Audience<'_>, &mut dyn NotificationSink);

    /// The apply's writes are stored: hand on whatever was held back.
    fn finish(self: Box<Self>) {}
}

/// A node's fan-out: the users connected here.
pub trait Fanout: Send + Sync {
    /// A notifier for one apply: a snapshot of the connected users, holding
    /// back up to about `held_bytes_max` bytes of notifications until
    /// [`Notifier::finish`].
    fn begin(&self, held_bytes_max: usize) -> Box<dyn Notifier + '_>;
}

/// Everyone, every notification collected: the protocol's full meaning, for
/// tests and tools (memory grows with the follow graph).
impl Notifier for Vec<Notification> {
    fn parts(&mut self) -> (Audience<'_>, &mut dyn NotificationSink) {
        (Audience::Everyone, self)
    }
}

/// Nobody is connected: notifications are resolved against an empty
/// audience and none is made. What a node without a fan-out, or a tool,
/// applies with.
#[derive(Debug, Default)]
pub struct Nobody {
    users: ConnectedUsers,
    sink: Discard,
}

#[derive(Debug, Default)]
struct Discard;

impl NotificationSink for Discard {
    fn notify(&mut self, _: Notification) {}
}

impl Notifier for Nobody {
    fn parts(&mut self) -> (Audience<'_>, &mut dyn NotificationSink) {
        (Audience::Connected(&self.users), &mut self.sink)
    }
}

/// Takes a notifier from `fanout` at the first maze command of an apply
/// (an apply without one never snapshots the connected users), or notifies
/// [`Nobody`] without a fan-out.
pub struct OnFirstUse<'a> {
    fanout: Option<&'a dyn Fanout>,
    held_bytes_max: usize,
    taken: Option<Box<dyn Notifier + 'a>>,
    nobody: Nobody,
}

impl<'a> OnFirstUse<'a> {
    pub fn new(fanout: Option<&'a dyn Fanout>, held_bytes_max: usize) -> Self {
        OnFirstUse { fanout, held_bytes_max, taken: None, nobody: Nobody::default() }
    }

    /// Hands on what the notifier held back, if one was taken.
    pub fn finish(self) {
        if let Some(taken) = self.taken {
            taken.finish();
        }
    }
}

impl Notifier for OnFirstUse<'_> {
    fn parts(&mut self) -> (Audience<'_>, &mut dyn NotificationSink) {
        match self.fanout {
            Some(fanout) => {
                let max = self.held_bytes_max;
                self.taken.get_or_insert_with(|| fanout.begin(max)).parts()
            }
            None => self.nobody.parts(),
        }
    }
}
