//! User clients (TCP, `--maze-client-addr`) and the fan-out of applied
//! notifications to them.
//!
//! A user connects and sends its id as the first line. Each connection gets
//! a bounded queue of outgoing lines and a writer task. The state machine
//! hands every notification to [`Registry::deliver`] while it applies, which
//! only `try_send`s: a user whose queue is full is disconnected and counted,
//! so a slow reader can never hold up the apply loop or other users.
//!
//! One apply works against one [`Delivery`]: a snapshot of the connected
//! users (the [`Audience`] the state machine resolves recipients against)
//! and of the connection ids handed out so far. Everything the apply emits
//! goes to those connections only, so a connection opened mid-apply starts
//! with the next apply rather than with a part of this one: each connection
//! receives an unbroken run of its notifications.
//!
//! Memory of the fan-out: a notification lists at most the users connected
//! here, and one line is shared (`Bytes`) by every queue it is put on. A
//! [`Delivery`] holds notifications back until the apply's RocksDB write
//! only up to a byte budget, then delivers as they come (see there).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::maze::{Audience, ConnectedUsers, Notification, NotificationSink, Recipients, UserId};

/// How long a new connection has to send its user id.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest accepted user-id line.
const HELLO_BYTES_MAX: u64 = 64;

/// Counters shown in `/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct ClientCounters {
    pub connected: AtomicU64,
    pub slow_disconnects: AtomicU64,
    pub bad_hellos: AtomicU64,
    pub notifications_sent: AtomicU64,
    pub notifications_dropped: AtomicU64,
}

struct Conn {
    id: u64,
    tx: mpsc::Sender<Bytes>,
}

/// The users connected to this node.
pub struct Registry {
    users: RwLock<HashMap<UserId, Vec<Conn>>>,
    next_conn: AtomicU64,
    buffer_lines: usize,
    pub counters: ClientCounters,
}

impl Registry {
    pub fn new(buffer_lines: usize) -> Arc<Self> {
        Arc::new(Registry {
            users: RwLock::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            buffer_lines: buffer_lines.max(1),
            counters: ClientCounters::default(),
        })
    }

    pub(crate) fn register(&self, user: UserId) -> (u64, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(self.buffer_lines);
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        // Under the lock: a snapshot (`connected`) sees every id below its
        // `conns_below` in the map, never an id handed out but not yet there.
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        users.entry(user).or_default().push(Conn { id, tx });
        self.counters.connected.fetch_add(1, Ordering::Relaxed);
        (id, rx)
    }

    fn unregister(&self, user: UserId, conn: u64) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        if let Some(conns) = users.get_mut(&user) {
            let before = conns.len();
            conns.retain(|c| c.id != conn);
            if conns.len() < before {
                self.counters.connected.fetch_sub(1, Ordering::Relaxed);
            }
            if conns.is_empty() {
                users.remove(&user);
            }
        }
    }

    /// The users connected now, and the connection ids handed out so far.
    pub fn connected(&self) -> (ConnectedUsers, u64) {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        let conns_below = self.next_conn.load(Ordering::Relaxed);
        (users.keys().copied().collect(), conns_below)
    }

    /// Counts notifications meant for users not connected here (see
    /// [`NotificationSink::unreached`]).
    pub fn count_unreached(&self, recipients: u64) {
        self.counters.notifications_dropped.fetch_add(recipients, Ordering::Relaxed);
    }

    /// Queues `n` for its recipients connected here. Never blocks.
    pub fn deliver(&self, n: &Notification) {
        self.deliver_to(n, u64::MAX);
    }

    /// Queues `n` for its recipients' connections with an id below
    /// `conns_below` (those of a [`Registry::connected`] snapshot). Never
    /// blocks.
    pub fn deliver_to(&self, n: &Notification, conns_below: u64) {
        let line = Bytes::copy_from_slice(n.line.as_bytes());
        let mut slow: Vec<(UserId, u64)> = Vec::new();
        {
            let users = self.users.read().unwrap_or_else(|e| e.into_inner());
            let mut send = |user: UserId, conns: &Vec<Conn>| {
                let mut sent = false;
                for conn in conns.iter().filter(|conn| conn.id < conns_below) {
                    sent = true;
                    match conn.tx.try_send(line.clone()) {
                        Ok(()) => {
                            self.counters.notifications_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => slow.push((user, conn.id)),
                    }
                }
                sent
            };
            match &n.recipients {
                Recipients::One(user) => {
                    if !users.get(user).is_some_and(|conns| send(*user, conns)) {
                        self.counters.notifications_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Recipients::Many(list) => {
                    for user in list {
                        if !users.get(user).is_some_and(|conns| send(*user, conns)) {
                            self.counters.notifications_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Recipients::All => {
                    for (user, conns) in users.iter() {
                        send(*user, conns);
                    }
                }
            }
        }
        // Full (too slow) or closed: drop the connection's sender, which ends
        // its writer task and closes the socket.
        for (user, conn) in slow {
            tracing::warn!(user, "maze client too slow or gone; disconnecting");
            self.counters.slow_disconnects.fetch_add(1, Ordering::Relaxed);
            self.unregister(user, conn);
        }
    }
}

/// One apply's fan-out: the connected users it resolves recipients against
/// and the connections it delivers to (both taken once, when it starts),
/// and the notifications it holds back until the apply is written.
///
/// The state machine writes an apply's RocksDB batch before it tells users,
/// so that in the ordinary case a user never hears of an entry this node has
/// not stored. Holding notifications costs memory, so that holds only up to
/// `held_bytes_max`; an apply that makes more delivers what it held, in
/// order, and then each notification as it is made. Delivering an entry
/// before it is stored here is still correct: it is committed (Raft applies
/// only committed entries), so its notifications are decided, every node
/// makes the same ones, and the local write only records that this node is
/// past it. A crash between delivering and writing re-applies the entry at
/// restart and notifies again; but the users who got the first copy were
/// connected to the process that died, and the protocol promises a
/// connection the notifications applied while it is open, in order and once
/// each, nothing across reconnections (a lost unsynced write re-notifies the
/// same way, and a user who reconnects to another node is at that node's
/// position in the stream anyway). No entry is applied twice within one
/// process, so no connection gets a line twice.
pub struct Delivery<'a> {
    users: ConnectedUsers,
    out: Outbox<'a>,
}

/// The sending half of a [`Delivery`] (a separate borrow from its users).
pub struct Outbox<'a> {
    registry: Option<&'a Registry>,
    conns_below: u64,
    held: Vec<Notification>,
    held_bytes: usize,
    held_bytes_max: usize,
    /// Over budget: every notification goes out as it is made.
    streaming: bool,
}

impl<'a> Delivery<'a> {
    /// Snapshots `registry`'s users; without a registry nobody is
    /// connected and nothing is emitted.
    pub fn new(registry: Option<&'a Registry>, held_bytes_max: usize) -> Self {
        let (users, conns_below) = registry.map(Registry::connected).unwrap_or_default();
        Delivery {
            users,
            out: Outbox {
                registry,
                conns_below,
                held: Vec::new(),
                held_bytes: 0,
                held_bytes_max,
                streaming: false,
            },
        }
    }

    /// What `MazeState::apply_for` takes: the audience and the sink.
    pub fn parts(&mut self) -> (Audience<'_>, &mut Outbox<'a>) {
        (Audience::Connected(&self.users), &mut self.out)
    }

    /// Delivers what was held back: call after the apply is written.
    pub fn finish(mut self) {
        self.out.release();
    }
}

impl Outbox<'_> {
    fn release(&mut self) {
        if let Some(registry) = self.registry {
            for n in self.held.drain(..) {
                registry.deliver_to(&n, self.conns_below);
            }
        }
        self.held_bytes = 0;
    }
}

/// Heap and inline bytes of a held notification.
fn held_bytes(n: &Notification) -> usize {
    let list = match &n.recipients {
        Recipients::Many(list) => list.capacity() * std::mem::size_of::<UserId>(),
        Recipients::One(_) | Recipients::All => 0,
    };
    std::mem::size_of::<Notification>() + n.line.capacity() + list
}

impl NotificationSink for Outbox<'_> {
    fn notify(&mut self, n: Notification) {
        let Some(registry) = self.registry else {
            return;
        };
        if !self.streaming {
            let bytes = held_bytes(&n);
            if self.held_bytes.saturating_add(bytes) <= self.held_bytes_max {
                self.held_bytes += bytes;
                self.held.push(n);
                return;
            }
            tracing::debug!(
                held_bytes = self.held_bytes,
                "maze notifications of this apply exceed the hold budget; delivering as they come"
            );
            self.streaming = true;
            self.release();
        }
        registry.deliver_to(&n, self.conns_below);
    }

    fn unreached(&mut self, recipients: u64) {
        if let Some(registry) = self.registry {
            registry.count_unreached(recipients);
        }
    }
}

/// The fan-out the state machine applies against (`sm::Fanout`): one
/// [`Delivery`] per apply.
impl crate::sm::Fanout for Registry {
    fn begin(&self, held_bytes_max: usize) -> Box<dyn crate::sm::Notifier + '_> {
        Box::new(Delivery::new(Some(self), held_bytes_max))
    }
}

impl crate::sm::Notifier for Delivery<'_> {
    fn parts(&mut self) -> (Audience<'_>, &mut dyn NotificationSink) {
        let (audience, out) = Delivery::parts(self);
        (audience, out)
    }

    fn finish(self: Box<Self>) {
        Delivery::finish(*self);
    }
}

/// Accepts user clients until `shutdown`.
/// Serves user clients, at most `stats.max_connections` at a time (each
/// holds a per-user queue; one more is closed at once and counted).
pub async fn run(
    listener: TcpListener,
    registry: Arc<Registry>,
    stats: Arc<crate::listener::ListenerStats>,
    shutdown: CancellationToken,
) {
    loop {
        let Some((stream, peer)) = super::accept(&listener, &shutdown, "maze clients").await else {
            return;
        };
        let Some(permit) = stats.admit() else {
            drop(stream);
            continue;
        };
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve(stream, peer, registry, shutdown).await;
            drop(permit);
        });
    }
}

/// Parses the hello line: a decimal user id, optionally `\r\n`/`\n` ended.
pub fn parse_user_id(line: &str) -> Option<UserId> {
    let id = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(line);
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (read_half, write_half) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    let mut hello = String::new();
    let read = tokio::time::timeout(HELLO_TIMEOUT, async {
        (&mut reader).take(HELLO_BYTES_MAX).read_line(&mut hello).await
    })
    .await;
    let Some(user) = matches!(read, Ok(Ok(n)) if n > 0).then(|| parse_user_id(&hello)).flatten()
    else {
        registry.counters.bad_hellos.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, "maze client sent no valid user id; closing");
        return;
    };
    let (conn, mut rx) = registry.register(user);
    let mut writer = BufWriter::new(write_half);
    let mut sink = [0u8; 512];
    let reader = reader.get_mut();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            line = rx.recv() => {
                let Some(line) = line else { break };
                if writer.write_all(&line).await.is_err() {
                    break;
                }
                // Batch writes: flush once the queue is momentarily empty.
                let mut failed = false;
                while let Ok(more) = rx.try_recv() {
                    if writer.write_all(&more).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || writer.flush().await.is_err() {
                    break;
                }
            }
            // Users send nothing after their id; reading notices a close.
            n = reader.read(&mut sink) => {
                if matches!(n, Ok(0) | Err(_)) {
                    break;
                }
            }
        }
    }
    registry.unregister(user, conn);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_decimal_only() {
        assert_eq!(parse_user_id("42\n"), Some(42));
        assert_eq!(parse_user_id("42\r\n"), Some(42));
        assert_eq!(parse_user_id("7"), Some(7));
        for bad in
            ["", "\n", "abc\n", "-1\n", " 4\n", "4 \n", "99999999999999999999999\n", "4\r\r\n"]
        {
            assert_eq!(parse_user_id(bad), None, "{bad:?}");
        }
    }

    fn notification(recipients: Recipients, line: &str) -> Notification {
        Notification { seq: 1, recipients, line: line.to_string() }
    }

    #[tokio::test]
    async fn a_full_queue_disconnects_only_that_user() {
        let registry = Registry::new(2);
        let (_, mut fast) = registry.register(1);
        let (_, _slow) = registry.register(2);
        for i in 0..3 {
            registry.deliver(&notification(Recipients::All, &format!("{i}|B\n")));
            // The fast user keeps up.
            assert_eq!(fast.recv().await.as_deref(), Some(format!("{i}|B\n").as_bytes()));
        }
        assert_eq!(registry.counters.slow_disconnects.load(Ordering::Relaxed), 1);
        assert_eq!(registry.counters.connected.load(Ordering::Relaxed), 1);
        registry.deliver(&notification(Recipients::One(1), "4|P|2|1\n"));
        assert_eq!(fast.recv().await.as_deref(), Some(&b"4|P|2|1\n"[..]));
    }

    #[tokio::test]
    async fn unconnected_recipients_are_counted_as_dropped() {
        let registry = Registry::new(8);
        let (_, mut rx) = registry.register(5);
        registry.deliver(&notification(Recipients::Many(vec![4, 5, 6]), "1|S|9\n"));
        assert_eq!(rx.recv().await.as_deref(), Some(&b"1|S|9\n"[..]));
        assert_eq!(registry.counters.notifications_dropped.load(Ordering::Relaxed), 2);
    }

    /// What a receiver holds right now, as text.
    fn drain(rx: &mut mpsc::Receiver<Bytes>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }

    #[test]
    fn a_delivery_holds_its_notifications_until_finished_within_its_budget() {
        let registry = Registry::new(16);
        let (_, mut rx) = registry.register(7);
        let mut delivery = Delivery::new(Some(&registry), 1 << 20);
        let (audience, sink) = delivery.parts();
        let Audience::Connected(users) = audience else { panic!("{audience:?}") };
        assert_eq!(users.iter().collect::<Vec<_>>(), [7]);
        sink.notify(notification(Recipients::One(7), "1|P|1|7\n"));
        sink.notify(notification(Recipients::All, "2|B\n"));
        assert_eq!(drain(&mut rx), Vec::<String>::new(), "held until the apply is written");
        delivery.finish();
        assert_eq!(drain(&mut rx), ["1|P|1|7\n", "2|B\n"]);
    }

    #[test]
    fn a_delivery_over_its_budget_delivers_as_it_goes_in_order() {
        let registry = Registry::new(16);
        let (_, mut rx) = registry.register(7);
        let first = notification(Recipients::Many(vec![7]), "1|S|42\n");
        // Room for exactly the first one.
        let mut delivery = Delivery::new(Some(&registry), held_bytes(&first));
        let (_, sink) = delivery.parts();
        sink.notify(first);
        assert_eq!(drain(&mut rx), Vec::<String>::new());
        sink.notify(notification(Recipients::Many(vec![7]), "2|S|42\n"));
        assert_eq!(drain(&mut rx), ["1|S|42\n", "2|S|42\n"], "the held one first");
        sink.notify(notification(Recipients::One(7), "3|F|1|7\n"));
        assert_eq!(drain(&mut rx), ["3|F|1|7\n"], "no more holding in this apply");
        delivery.finish();
        assert_eq!(drain(&mut rx), Vec::<String>::new(), "nothing twice");
    }

    #[test]
    fn a_connection_opened_during_an_apply_starts_with_the_next_one() {
        let registry = Registry::new(16);
        let (_, mut before) = registry.register(7);
        let mut delivery = Delivery::new(Some(&registry), 1 << 20);
        let (_, mut again) = registry.register(7);
        let (_, mut other) = registry.register(8);
        let (_, sink) = delivery.parts();
        sink.notify(notification(Recipients::One(7), "1|P|1|7\n"));
        sink.notify(notification(Recipients::One(8), "2|P|1|8\n"));
        sink.notify(notification(Recipients::All, "3|B\n"));
        delivery.finish();
        assert_eq!(drain(&mut before), ["1|P|1|7\n", "3|B\n"]);
        assert_eq!(drain(&mut again), Vec::<String>::new());
        assert_eq!(drain(&mut other), Vec::<String>::new());
        assert_eq!(registry.counters.notifications_dropped.load(Ordering::Relaxed), 1, "8");

        let mut next = Delivery::new(Some(&registry), 1 << 20);
        let (audience, sink) = next.parts();
        let Audience::Connected(users) = audience else { panic!("{audience:?}") };
        assert_eq!(users.iter().collect::<Vec<_>>(), [7, 8]);
        sink.notify(notification(Recipients::All, "4|B\n"));
        next.finish();
        for rx in [&mut before, &mut again, &mut other] {
            assert_eq!(drain(rx), ["4|B\n"]);
        }
    }

    #[test]
    fn unreached_recipients_are_counted_and_no_registry_means_no_audience() {
        let registry = Registry::new(4);
        let mut delivery = Delivery::new(Some(&registry), 0);
        delivery.parts().1.unreached(99_999);
        delivery.finish();
        assert_eq!(registry.counters.notifications_dropped.load(Ordering::Relaxed), 99_999);

        let mut nowhere = Delivery::new(None, 1 << 20);
        let (audience, sink) = nowhere.parts();
        let Audience::Connected(users) = audience else { panic!("{audience:?}") };
        assert!(users.is_empty());
        sink.notify(notification(Recipients::All, "1|B\n"));
        sink.unreached(3);
        nowhere.finish();
    }
}
