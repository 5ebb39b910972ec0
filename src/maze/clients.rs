//! User clients (TCP, `--maze-client-addr`) and the fan-out of applied
//! notifications to them.
//!
//! A user connects and sends its id as the first line. Each connection gets
//! a bounded queue of outgoing lines and a writer task. The state machine
//! hands every notification to [`Registry::deliver`] while it applies, which
//! only `try_send`s: a user whose queue is full is disconnected and counted,
//! so a slow reader can never hold up the apply loop or other users.

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

use super::{Notification, Recipients, UserId};

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

    fn register(&self, user: UserId) -> (u64, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(self.buffer_lines);
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
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

    /// Queues `n` for its recipients connected here. Never blocks.
    pub fn deliver(&self, n: &Notification) {
        let line = Bytes::copy_from_slice(n.line.as_bytes());
        let mut slow: Vec<(UserId, u64)> = Vec::new();
        {
            let users = self.users.read().unwrap_or_else(|e| e.into_inner());
            let mut send = |user: UserId, conns: &Vec<Conn>| {
                for conn in conns {
                    match conn.tx.try_send(line.clone()) {
                        Ok(()) => {
                            self.counters.notifications_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => slow.push((user, conn.id)),
                    }
                }
            };
            match &n.recipients {
                Recipients::One(user) => match users.get(user) {
                    Some(conns) => send(*user, conns),
                    None => {
                        self.counters.notifications_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Recipients::Many(list) => {
                    for user in list {
                        match users.get(user) {
                            Some(conns) => send(*user, conns),
                            None => {
                                self.counters.notifications_dropped.fetch_add(1, Ordering::Relaxed);
                            }
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

/// Accepts user clients until `shutdown`.
pub async fn run(listener: TcpListener, registry: Arc<Registry>, shutdown: CancellationToken) {
    loop {
        let Some((stream, peer)) = super::accept(&listener, &shutdown, "maze clients").await else {
            return;
        };
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { serve(stream, peer, registry, shutdown).await });
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
}
