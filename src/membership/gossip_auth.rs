//! Authenticated gossip (`serve --gossip-key FILE`): every chitchat datagram
//! carries an HMAC-SHA256 tag under a key the whole cluster shares, and a
//! datagram without a valid tag is dropped before chitchat sees it.
//!
//! Gossip decides nothing by itself (Raft does), but it is where the leader
//! learns of nodes and addresses. Unauthenticated, anyone who can send a UDP
//! datagram to a gossip port could claim a member's node id at an address of
//! their choosing. With the key they cannot: a forged datagram is counted
//! (`raftq_gossip_datagrams_dropped_total{reason}`) and logged at most once
//! per [`DROP_LOG_INTERVAL`] per reason, and changes nothing.
//!
//! Wire format of one datagram:
//!
//! ```text
//! "raftq-gossip-v1" | chitchat envelope (its own wire format) | tag (32 bytes)
//! tag = HMAC-SHA256(key, "raftq-gossip-v1" | envelope)
//! ```
//!
//! The prefix marks a signed datagram (a datagram without it is `unsigned`)
//! and separates this use of the key from any other. A datagram with the
//! prefix whose tag is missing, truncated or made with another key is
//! `bad_mac`; ring compares tags in constant time. There is no replay
//! protection beyond chitchat's own versioning (an old state replayed is
//! older than what peers hold) and no confidentiality: the key proves
//! membership, it does not hide what gossip says.
//!
//! chitchat 0.13 keeps its envelope encoding private to the crate; the only
//! public code that turns an envelope into bytes and back is its own
//! `UdpSocket`. So each [`SignedSocket`] runs one on loopback as its codec:
//!
//! ```text
//! send:  envelope -> codec --loopback--> tap      => bytes, signed, sent from `public`
//! recv:  `public` => verified bytes -> tap --loopback--> codec => envelope
//!                    then a sentinel  -> marker --loopback--> codec
//! ```
//!
//! A sentinel follows every forwarded payload: a `Syn` from the `marker`
//! socket whose cluster id carries a sequence number. The codec skips a
//! payload it cannot decode silently, so without the sentinel that would be
//! a wait forever; with it, "sentinel N and no payload since sentinel N-1"
//! means undecodable. The numbers also keep a payload from being paired with
//! the wrong sender if a loopback datagram was ever lost. Only datagrams
//! from our own loopback sockets are believed.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpTransport};
use chitchat::{ChitchatEnvelope, ChitchatMessage, ProtocolVersion};
use prometheus::{IntCounter, IntCounterVec};
use ring::hmac;
use tokio::time::Instant;

use crate::log_throttle::LogThrottle;

/// Prefix of every signed datagram and of every MAC input.
pub const DOMAIN: &[u8] = b"raftq-gossip-v1";
/// HMAC-SHA256 output.
pub const TAG_LEN: usize = 32;
/// Shortest key accepted from a key file (`raftq certs` writes 32 bytes).
pub const KEY_BYTES_MIN: usize = 16;
/// Largest UDP payload over IPv4, as chitchat bounds its own datagrams.
pub const MAX_DATAGRAM_BYTES: usize = 65_507;
/// At most one warning per this long for each reason a datagram is dropped.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The label values of `raftq_gossip_datagrams_dropped_total`.
pub const REASON_UNSIGNED: &str = "unsigned";
pub const REASON_BAD_MAC: &str = "bad_mac";

/// How long a loopback round trip through the codec may take before the
/// datagram is given up. It is a local syscall; only a full socket buffer
/// (another local process writing to our codec port) makes it fail.
const CODEC_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause before trying a failed codec again.
const CODEC_RETRY: Duration = Duration::from_millis(100);
/// Receive buffers hold any UDP payload, so nothing is ever truncated
/// silently by the kernel.
const RECV_BUFFER_BYTES: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum GossipKeyError {
    #[error("cannot read gossip key {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "gossip key {}: {reason}; expected the hex key `raftq certs` writes to gossip.key \
         (at least {KEY_BYTES_MIN} bytes, i.e. {} hex digits)",
        path.display(),
        KEY_BYTES_MIN * 2
    )]
    Format { path: PathBuf, reason: String },
}

/// The cluster's shared gossip key. Never printed.
#[derive(Clone)]
pub struct GossipKey {
    key: hmac::Key,
}

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GossipKey(<redacted>)")
    }
}

impl GossipKey {
    /// Read a key file: hex digits (surrounding whitespace ignored) of at
    /// least [`KEY_BYTES_MIN`] bytes.
    pub fn load(path: &Path) -> Result<Self, GossipKeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| GossipKeyError::Read { path: path.to_path_buf(), source })?;
        warn_if_readable_by_others(path);
        Self::from_hex(&text)
            .map_err(|reason| GossipKeyError::Format { path: path.to_path_buf(), reason })
    }

    /// Parse the key file's contents; the error says what is wrong.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex_decode(text.trim())?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < KEY_BYTES_MIN {
            return Err(format!("only {} bytes", bytes.len()));
        }
        Ok(Self { key: hmac::Key::new(hmac::HMAC_SHA256, bytes) })
    }

    /// `DOMAIN | payload | tag`.
    fn sign(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(DOMAIN);
        out.extend_from_slice(payload);
        let tag = hmac::sign(&self.key, out);
        out.extend_from_slice(tag.as_ref());
    }

    /// The envelope bytes of a datagram whose tag verifies under this key.
    fn verify<'a>(&self, datagram: &'a [u8]) -> Result<&'a [u8], DropReason> {
        if !datagram.starts_with(DOMAIN) {
            return Err(DropReason::Unsigned);
        }
        // Prefix, tag and at least one byte of envelope.
        if datagram.len() <= DOMAIN.len() + TAG_LEN {
            return Err(DropReason::BadMac);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        hmac::verify(&self.key, signed, tag).map_err(|_| DropReason::BadMac)?;
        Ok(&signed[DOMAIN.len()..])
    }
}

/// Gossip keys are secrets; say so when the file is readable by others
/// (it still works: refusing would only make an outage out of a warning).
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:03o}"),
                    "gossip key file is readable by other users; chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Strict hex: an even number of `[0-9a-fA-F]`, nothing else.
fn hex_decode(text: &str) -> Result<Vec<u8>, String> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        }
    }
    if text.is_empty() {
        return Err("empty".to_owned());
    }
    if !text.len().is_multiple_of(2) {
        return Err("odd number of hex digits".to_owned());
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [high, low] => Some(nibble(*high)? << 4 | nibble(*low)?),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| "not hex (only 0-9 and a-f are allowed)".to_owned())
}

/// Why a received datagram was dropped; each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropReason {
    /// Not signed at all (plain chitchat, or anything else).
    Unsigned,
    /// Signed, but not with our key, or cut short.
    BadMac,
}

/// The counters behind `raftq_gossip_datagrams_dropped_total{reason}`.
#[derive(Debug, Clone)]
pub struct DropCounters {
    pub unsigned: IntCounter,
    pub bad_mac: IntCounter,
}

impl DropCounters {
    /// The children of `vec` (one label, `reason`) for each reason.
    pub fn from_vec(vec: &IntCounterVec) -> Result<Self, prometheus::Error> {
        Ok(Self {
            unsigned: vec.get_metric_with_label_values(&[REASON_UNSIGNED])?,
            bad_mac: vec.get_metric_with_label_values(&[REASON_BAD_MAC])?,
        })
    }
}

/// Everything a signed transport needs: the key and where to count drops.
#[derive(Debug, Clone)]
pub struct GossipAuth {
    pub key: GossipKey,
    pub drops: DropCounters,
}

/// The transport for `spawn_chitchat`: signed when a key is configured,
/// chitchat's plain UDP otherwise.
pub fn transport(auth: Option<GossipAuth>) -> Box<dyn Transport> {
    match auth {
        Some(auth) => Box::new(SignedUdpTransport::new(auth)),
        None => Box::new(UdpTransport),
    }
}

/// chitchat's UDP transport with every datagram signed and verified.
pub struct SignedUdpTransport {
    auth: Arc<Shared>,
}

/// Shared by every socket a transport opens.
struct Shared {
    key: GossipKey,
    drops: DropCounters,
    unsigned_log: LogThrottle,
    bad_mac_log: LogThrottle,
    oversized_log: LogThrottle,
    undecodable_log: LogThrottle,
}

impl SignedUdpTransport {
    pub fn new(auth: GossipAuth) -> Self {
        Self {
            auth: Arc::new(Shared {
                key: auth.key,
                drops: auth.drops,
                unsigned_log: LogThrottle::new(DROP_LOG_INTERVAL),
                bad_mac_log: LogThrottle::new(DROP_LOG_INTERVAL),
                oversized_log: LogThrottle::new(DROP_LOG_INTERVAL),
                undecodable_log: LogThrottle::new(DROP_LOG_INTERVAL),
            }),
        }
    }
}

#[async_trait]
impl Transport for SignedUdpTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(SignedSocket::open(listen_addr, self.auth.clone()).await?))
    }
}

/// One gossip port; see the module docs for the codec sockets.
pub struct SignedSocket {
    auth: Arc<Shared>,
    /// The gossip port itself.
    public: tokio::net::UdpSocket,
    /// chitchat's own socket on loopback: the envelope codec.
    codec: chitchat::transport::UdpSocket,
    codec_addr: SocketAddr,
    /// Receives encoded envelopes from `codec`; sends received payloads to it.
    tap: tokio::net::UdpSocket,
    tap_addr: SocketAddr,
    /// Sends the sentinel that follows each payload to `codec`.
    marker: tokio::net::UdpSocket,
    marker_addr: SocketAddr,
    /// Sequence number of the last sentinel encoded.
    sentinel_seq: u64,
    /// The next sentinel, encoded ahead so that forwarding a payload needs
    /// no await point.
    next_sentinel: Option<(u64, Vec<u8>)>,
    /// A verified datagram handed to the codec and not yet decoded. Kept
    /// here, not in a local, because chitchat cancels `recv` at every gossip
    /// tick: the next call picks the decode up where it stopped.
    pending: Option<Pending>,
    recv_buf: Box<[u8]>,
    encode_buf: Box<[u8]>,
    send_buf: Vec<u8>,
}

struct Pending {
    from_addr: SocketAddr,
    num_bytes_received: usize,
    /// The sentinel that closes this decode.
    sentinel_seq: u64,
    /// The last payload the codec decoded since the previous sentinel.
    envelope: Option<ChitchatEnvelope>,
    deadline: Instant,
}

/// The cluster id inside sentinel `seq`: no real cluster id looks like it,
/// and a real `Syn` would come from `tap`, never from `marker`.
fn sentinel_cluster_id(seq: u64) -> String {
    format!("raftq-gossip-codec-sentinel-{seq}")
}

fn sentinel(seq: u64) -> ChitchatEnvelope {
    ChitchatEnvelope {
        version: ProtocolVersion::V0,
        message: ChitchatMessage::Syn {
            cluster_id: sentinel_cluster_id(seq),
            digest: Default::default(),
        },
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

async fn bind_loopback() -> anyhow::Result<(tokio::net::UdpSocket, SocketAddr)> {
    let socket = tokio::net::UdpSocket::bind(loopback())
        .await
        .context("binding a loopback UDP socket for the gossip codec (is `lo` up?)")?;
    let addr = socket.local_addr().context("loopback socket address")?;
    Ok((socket, addr))
}

/// The errors chitchat's own UDP socket treats as transient.
fn is_transient_io_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::OutOfMemory
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

impl SignedSocket {
    async fn open(listen_addr: SocketAddr, auth: Arc<Shared>) -> anyhow::Result<Self> {
        let public = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind to {listen_addr}/UDP for gossip"))?;
        let codec = chitchat::transport::UdpSocket::open(loopback()).await?;
        let codec_addr = codec.local_addr()?;
        let (tap, tap_addr) = bind_loopback().await?;
        let (marker, marker_addr) = bind_loopback().await?;
        let mut socket = Self {
            auth,
            public,
            codec,
            codec_addr,
            tap,
            tap_addr,
            marker,
            marker_addr,
            sentinel_seq: 0,
            next_sentinel: None,
            pending: None,
            recv_buf: vec![0; RECV_BUFFER_BYTES].into_boxed_slice(),
            encode_buf: vec![0; RECV_BUFFER_BYTES].into_boxed_slice(),
            send_buf: Vec::with_capacity(RECV_BUFFER_BYTES),
        };
        // Fails here, at startup, if the loopback codec does not work at all.
        socket.prepare_sentinel().await.context("gossip codec self-test")?;
        Ok(socket)
    }

    /// Encode the next sentinel unless one is ready.
    async fn prepare_sentinel(&mut self) -> anyhow::Result<()> {
        if self.next_sentinel.is_none() {
            let seq = self.sentinel_seq.wrapping_add(1);
            let len = self.encode(sentinel(seq)).await?;
            self.sentinel_seq = seq;
            self.next_sentinel = Some((seq, self.encode_buf[..len].to_vec()));
        }
        Ok(())
    }

    /// chitchat's bytes for `envelope`, in `encode_buf[..len]`.
    async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<usize> {
        // Leftovers of an encode that timed out or was cancelled.
        while self.tap.try_recv_from(&mut self.encode_buf).is_ok() {}
        self.codec.send(self.tap_addr, envelope).await?;
        let deadline = Instant::now() + CODEC_TIMEOUT;
        loop {
            let (len, from) =
                tokio::time::timeout_at(deadline, self.tap.recv_from(&mut self.encode_buf))
                    .await
                    .context("gossip codec: no encoded envelope within the timeout")?
                    .context("gossip codec: receiving the encoded envelope")?;
            // Anything else is another local process writing to our port.
            if from == self.codec_addr {
                return Ok(len);
            }
        }
    }

    fn count_drop(&self, reason: DropReason, from: SocketAddr, len: usize) {
        let (counter, throttle, label) = match reason {
            DropReason::Unsigned => {
                (&self.auth.drops.unsigned, &self.auth.unsigned_log, REASON_UNSIGNED)
            }
            DropReason::BadMac => {
                (&self.auth.drops.bad_mac, &self.auth.bad_mac_log, REASON_BAD_MAC)
            }
        };
        counter.inc();
        if let Some(suppressed) = throttle.allow() {
            tracing::warn!(
                %from,
                len,
                reason = label,
                suppressed,
                "dropped a gossip datagram that is not signed with this cluster's --gossip-key"
            );
        }
    }

    /// Hand a verified payload to the codec, followed by the prepared
    /// sentinel; on failure the datagram is dropped (and logged).
    fn forward_to_codec(
        &mut self,
        payload_at: std::ops::Range<usize>,
        from: SocketAddr,
        len: usize,
    ) {
        let Some((sentinel_seq, sentinel)) = self.next_sentinel.take() else {
            return;
        };
        // Synchronous sends: no await point may split the payload from its
        // sentinel (chitchat cancels `recv` at every gossip tick).
        let sent = self
            .tap
            .try_send_to(&self.recv_buf[payload_at], self.codec_addr)
            .and_then(|_| self.marker.try_send_to(&sentinel, self.codec_addr));
        match sent {
            Ok(_) => {
                self.pending = Some(Pending {
                    from_addr: from,
                    num_bytes_received: len,
                    sentinel_seq,
                    envelope: None,
                    deadline: Instant::now() + CODEC_TIMEOUT,
                });
            }
            Err(err) => {
                if let Some(suppressed) = self.auth.undecodable_log.allow() {
                    tracing::warn!(%from, error = %err, suppressed, "gossip codec: cannot decode a signed datagram; dropped");
                }
            }
        }
    }

    /// Finish the decode in `pending`: `Some` when it yields an envelope.
    async fn finish_decode(&mut self) -> anyhow::Result<Option<RecvOutcome>> {
        let Some(pending) = self.pending.as_mut() else { return Ok(None) };
        let outcome = match tokio::time::timeout_at(pending.deadline, self.codec.recv()).await {
            Ok(outcome) => outcome?,
            Err(_elapsed) => {
                self.pending = None;
                if let Some(suppressed) = self.auth.undecodable_log.allow() {
                    tracing::warn!(
                        suppressed,
                        "gossip codec: a signed datagram was lost on loopback; dropped"
                    );
                }
                return Ok(None);
            }
        };
        if outcome.from_addr == self.tap_addr {
            pending.envelope = Some(outcome.envelope);
            return Ok(None);
        }
        if outcome.from_addr != self.marker_addr {
            // Another local process writing to the codec's port.
            return Ok(None);
        }
        let closes_this_decode = matches!(
            &outcome.envelope.message,
            ChitchatMessage::Syn { cluster_id, .. } if *cluster_id == sentinel_cluster_id(pending.sentinel_seq)
        );
        if !closes_this_decode {
            // The sentinel of a decode given up earlier: whatever came
            // before it belonged to that one.
            pending.envelope = None;
            return Ok(None);
        }
        let Some(pending) = self.pending.take() else { return Ok(None) };
        match pending.envelope {
            Some(envelope) => Ok(Some(RecvOutcome {
                from_addr: pending.from_addr,
                envelope,
                num_bytes_received: pending.num_bytes_received,
            })),
            None => {
                // Authentic but not a chitchat envelope this version can read
                // (a peer running another chitchat wire version).
                if let Some(suppressed) = self.auth.undecodable_log.allow() {
                    tracing::warn!(from = %pending.from_addr, suppressed, "signed gossip datagram is not a chitchat envelope this node can read; dropped");
                }
                Ok(None)
            }
        }
    }
}

#[async_trait]
impl Socket for SignedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.public.local_addr().context("failed to get UDP socket address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let len = self.encode(envelope).await?;
        if DOMAIN.len() + len + TAG_LEN > MAX_DATAGRAM_BYTES {
            // chitchat fills datagrams up to the UDP limit with state; ours
            // stays far below it (a few short keys per node), so this means
            // a cluster far larger than raftq is made for.
            if let Some(suppressed) = self.auth.oversized_log.allow() {
                tracing::warn!(
                    %to,
                    len,
                    suppressed,
                    "gossip message too large to sign within one UDP datagram; not sent"
                );
            }
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        let mut datagram = std::mem::take(&mut self.send_buf);
        self.auth.key.sign(&self.encode_buf[..len], &mut datagram);
        let sent = self
            .public
            .send_to(&datagram, to)
            .await
            .context("failed to send chitchat message to peer");
        self.send_buf = datagram;
        Ok(SendOutcome { num_bytes_sent: sent? })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if self.pending.is_some() {
                if let Some(outcome) = self.finish_decode().await? {
                    return Ok(outcome);
                }
                continue;
            }
            if let Err(err) = self.prepare_sentinel().await {
                // Not fatal: an error from `recv` stops chitchat's gossip
                // loop for good, and the codec only fails while another local
                // process floods its loopback port.
                if let Some(suppressed) = self.auth.undecodable_log.allow() {
                    tracing::warn!(error = %err, suppressed, "gossip codec unavailable; retrying");
                }
                tokio::time::sleep(CODEC_RETRY).await;
                continue;
            }
            let (len, from) = match self.public.recv_from(&mut self.recv_buf).await {
                Ok(received) => received,
                Err(err) if is_transient_io_error(&err) => {
                    tracing::debug!(error = %err, "transient gossip recv error");
                    continue;
                }
                Err(err) => return Err(err).context("fatal UDP recv error"),
            };
            let payload_at = match self.auth.key.verify(&self.recv_buf[..len]) {
                Ok(payload) => DOMAIN.len()..DOMAIN.len() + payload.len(),
                Err(reason) => {
                    self.count_drop(reason, from, len);
                    continue;
                }
            };
            self.forward_to_codec(payload_at, from, len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;

    use chitchat::{
        spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    };
    use prometheus::Opts;

    fn key(byte: u8) -> GossipKey {
        GossipKey::from_bytes(&[byte; 32]).expect("key")
    }

    fn counters() -> DropCounters {
        let vec = IntCounterVec::new(Opts::new("dropped_total", "test"), &["reason"]).expect("vec");
        DropCounters::from_vec(&vec).expect("counters")
    }

    fn signed(byte: u8) -> (SignedUdpTransport, DropCounters) {
        let drops = counters();
        (SignedUdpTransport::new(GossipAuth { key: key(byte), drops: drops.clone() }), drops)
    }

    fn syn(cluster_id: &str) -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V1,
            message: ChitchatMessage::Syn {
                cluster_id: cluster_id.to_owned(),
                digest: Default::default(),
            },
        }
    }

    async fn recv_within(socket: &mut Box<dyn Socket>, wait: Duration) -> Option<RecvOutcome> {
        tokio::time::timeout(wait, socket.recv()).await.ok().map(|r| r.expect("recv"))
    }

    /// What a signed socket puts on the wire for `envelope`.
    async fn captured_datagram(
        transport: &SignedUdpTransport,
        envelope: ChitchatEnvelope,
    ) -> Vec<u8> {
        let sniffer = tokio::net::UdpSocket::bind(loopback()).await.expect("bind");
        let mut sender = transport.open(loopback()).await.expect("open");
        sender.send(sniffer.local_addr().expect("addr"), envelope).await.expect("send");
        let mut buf = vec![0; RECV_BUFFER_BYTES];
        let (len, _) = sniffer.recv_from(&mut buf).await.expect("sniff");
        buf.truncate(len);
        buf
    }

    #[test]
    fn key_files_are_strict_hex_of_at_least_16_bytes() {
        assert!(GossipKey::from_hex(&format!(" {}\n", "ab".repeat(32))).is_ok());
        assert!(GossipKey::from_hex(&"AB".repeat(16)).is_ok());
        for (bad, why) in [
            ("", "empty"),
            (&*"ab".repeat(15), "only 15 bytes"),
            ("abc", "odd"),
            (&*format!("{}zz", "ab".repeat(16)), "not hex"),
            (&*format!("{}é", "ab".repeat(16)), "not hex"),
        ] {
            let err = GossipKey::from_hex(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gossip.key");
        std::fs::write(&path, "not a key").expect("write");
        let err = GossipKey::load(&path).expect_err("bad file");
        assert!(err.to_string().contains("gossip.key"), "{err}");
        let err = GossipKey::load(&dir.path().join("missing.key")).expect_err("missing");
        assert!(err.to_string().contains("missing.key"), "{err}");
        // What `raftq certs` writes loads.
        let certs = dir.path().join("certs");
        assert!(crate::tls::certs::write_gossip_key(&certs).expect("write key"));
        GossipKey::load(&certs.join(crate::tls::certs::GOSSIP_KEY_FILE)).expect("load key");
    }

    #[test]
    fn verify_sorts_drops_by_reason() {
        let ours = key(1);
        let mut datagram = Vec::new();
        ours.sign(b"payload", &mut datagram);
        assert_eq!(ours.verify(&datagram), Ok(&b"payload"[..]));
        assert_eq!(key(2).verify(&datagram), Err(DropReason::BadMac));
        assert_eq!(ours.verify(&datagram[..datagram.len() - 1]), Err(DropReason::BadMac));
        assert_eq!(ours.verify(&datagram[..DOMAIN.len() + TAG_LEN]), Err(DropReason::BadMac));
        assert_eq!(ours.verify(DOMAIN), Err(DropReason::BadMac));
        assert_eq!(ours.verify(b"payload"), Err(DropReason::Unsigned));
        assert_eq!(ours.verify(b""), Err(DropReason::Unsigned));
        let mut flipped = datagram.clone();
        flipped[DOMAIN.len()] ^= 1;
        assert_eq!(ours.verify(&flipped), Err(DropReason::BadMac));
    }

    #[tokio::test]
    async fn a_signed_envelope_round_trips() {
        let (transport, drops) = signed(7);
        let mut a = transport.open(loopback()).await.expect("open a");
        let mut b = transport.open(loopback()).await.expect("open b");
        let b_addr = b.local_addr().expect("addr");
        for round in 0..3 {
            let cluster = format!("raftq-{round}");
            a.send(b_addr, syn(&cluster)).await.expect("send");
            let got = recv_within(&mut b, Duration::from_secs(5)).await.expect("delivered");
            assert_eq!(got.envelope, syn(&cluster));
            assert_eq!(got.from_addr, a.local_addr().expect("addr"));
        }
        // Messages that look like the codec's own sentinel still pass as
        // what they are.
        for envelope in [
            sentinel(1),
            sentinel(2),
            ChitchatEnvelope { version: ProtocolVersion::V0, message: ChitchatMessage::BadCluster },
        ] {
            let expected = format!("{envelope:?}");
            a.send(b_addr, envelope).await.expect("send");
            let got = recv_within(&mut b, Duration::from_secs(5)).await.expect("delivered");
            assert_eq!(format!("{:?}", got.envelope), expected);
        }
        assert_eq!((drops.unsigned.get(), drops.bad_mac.get()), (0, 0));
    }

    #[tokio::test]
    async fn unsigned_foreign_and_truncated_datagrams_are_dropped_and_counted() {
        let (ours, drops) = signed(1);
        let (theirs, _) = signed(2);
        let mut receiver = ours.open(loopback()).await.expect("open");
        let to = receiver.local_addr().expect("addr");
        let raw = tokio::net::UdpSocket::bind(loopback()).await.expect("bind");

        // Plain chitchat (what a node without --gossip-key sends).
        let mut plain = UdpTransport.open(loopback()).await.expect("open plain");
        plain.send(to, syn("raftq")).await.expect("send plain");
        raw.send_to(b"junk", to).await.expect("send junk");
        // Signed with another key.
        let mut foreign = theirs.open(loopback()).await.expect("open foreign");
        foreign.send(to, syn("raftq")).await.expect("send foreign");
        // Our key, but cut short: tag truncated, tag missing.
        let good = captured_datagram(&ours, syn("raftq")).await;
        raw.send_to(&good[..good.len() - 1], to).await.expect("send truncated");
        raw.send_to(&good[..good.len() - TAG_LEN], to).await.expect("send untagged");

        // Datagrams arrive in order on loopback: when the genuine one comes
        // out, every forgery before it has been judged.
        raw.send_to(&good, to).await.expect("send good");
        let got =
            recv_within(&mut receiver, Duration::from_secs(5)).await.expect("genuine delivered");
        assert_eq!(got.envelope, syn("raftq"));
        assert_eq!(drops.unsigned.get(), 2, "plain chitchat and junk");
        assert_eq!(drops.bad_mac.get(), 3, "foreign key, truncated tag, no tag");
        assert!(
            recv_within(&mut receiver, Duration::from_millis(300)).await.is_none(),
            "nothing else"
        );
    }

    fn chitchat_config(addr: SocketAddr, seeds: &[SocketAddr]) -> ChitchatConfig {
        ChitchatConfig {
            chitchat_id: ChitchatId::new(format!("node-{}", addr.port()), 1, addr),
            cluster_id: "raftq-test".to_owned(),
            gossip_interval: Duration::from_millis(50),
            listen_addr: addr,
            seed_nodes: seeds.iter().map(SocketAddr::to_string).collect(),
            failure_detector_config: FailureDetectorConfig {
                initial_interval: Duration::from_millis(100),
                ..Default::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V1,
        }
    }

    fn free_udp_addr() -> SocketAddr {
        let socket = std::net::UdpSocket::bind(loopback()).expect("bind");
        socket.local_addr().expect("addr")
    }

    async fn spawn(
        addr: SocketAddr,
        seeds: &[SocketAddr],
        transport: &dyn Transport,
    ) -> ChitchatHandle {
        let keys = vec![("raft_addr".to_owned(), format!("127.0.0.1:{}", addr.port()))];
        spawn_chitchat(chitchat_config(addr, seeds), keys, transport).await.expect("spawn chitchat")
    }

    /// Gossip addresses `handle` has state for (itself excluded), with the
    /// `raft_addr` each published.
    async fn known(handle: &ChitchatHandle) -> BTreeMap<SocketAddr, Option<String>> {
        let chitchat = handle.chitchat();
        let chitchat = chitchat.lock().await;
        chitchat
            .node_states()
            .iter()
            .filter(|(id, _)| *id != handle.chitchat_id())
            .map(|(id, state)| {
                (id.gossip_advertise_addr, state.get("raft_addr").map(str::to_owned))
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_without_the_key_cannot_talk_to_a_keyed_node() {
        let (keyed, drops) = signed(9);
        let (a_addr, b_addr, c_addr) = (free_udp_addr(), free_udp_addr(), free_udp_addr());
        let a = spawn(a_addr, &[], &keyed).await;
        // B has the key and seeds A: the positive control.
        let b = spawn(b_addr, &[a_addr], &keyed).await;
        // C has no key and seeds A.
        let c = spawn(c_addr, &[a_addr], &UdpTransport).await;

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (a_knows, b_knows) = (known(&a).await, known(&b).await);
            if a_knows.contains_key(&b_addr)
                && b_knows.contains_key(&a_addr)
                && drops.unsigned.get() >= 3
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "keyed nodes never met: a={a_knows:?} b={b_knows:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Several of C's gossip rounds later, still no trace of C on either
        // side, nor of A on C's.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!known(&a).await.contains_key(&c_addr), "keyed node learned of the keyless one");
        assert!(!known(&b).await.contains_key(&c_addr), "keyless node reached the cluster");
        assert!(known(&c).await.is_empty(), "keyless node learned of the keyed ones");
        assert_eq!(
            known(&a).await.get(&b_addr),
            Some(&Some(format!("127.0.0.1:{}", b_addr.port()))),
            "keyed nodes exchange state"
        );
        assert!(drops.unsigned.get() >= 3, "C's datagrams were counted");
        for handle in [a, b, c] {
            handle.shutdown().await.expect("shutdown");
        }
    }
}
