//! The free-space watermark (`--min-free-disk`).
//!
//! RocksDB's ENOSPC is a storage error that openraft treats as fatal: a node
//! whose disk fills stops its Raft core, and since every node stores the
//! same log, they all fill at the same rate. So writes stop before the disk
//! does: below the watermark, the leader answers new writes `507 disk_full`
//! before proposing them, reads keep working, and writes resume by
//! themselves once space is back. The check sits in the proposer, the one
//! place every write passes (API, maze source, forwarded maze batches). The
//! leader also honours its voters' watermarks, which each node publishes in
//! gossip: only a member that is a voter in the Raft membership and gossips
//! from the address the membership has for it counts (still a hint: without
//! `--gossip-key` a forged datagram can pause writes, never touch data).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::membership::gossip::{Gossip, DISK_LOW_KEY};

/// How often the free space is measured.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// `--min-free-disk`: an absolute amount or a share of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinFree {
    Bytes(u64),
    Percent(u8),
}

/// Parses `256MiB`, `1GB`, `4096` or `5%`.
pub fn parse_min_free(input: &str) -> Result<MinFree, String> {
    let input = input.trim();
    if let Some(percent) = input.strip_suffix('%') {
        let p: u8 = percent.trim().parse().map_err(|_| format!("bad percentage {input:?}"))?;
        if p > 50 {
            return Err(format!("{input:?}: at most 50%"));
        }
        return Ok(MinFree::Percent(p));
    }
    crate::units::parse_bytes(input).map(MinFree::Bytes).map_err(|e| e.to_string())
}

/// Whether `available` of `total` bytes is below the watermark (pure).
pub fn below(min: MinFree, available: u64, total: u64) -> bool {
    match min {
        MinFree::Bytes(b) => available < b,
        MinFree::Percent(p) => (available as u128) * 100 < (total as u128) * (p as u128),
    }
}

/// This node's disk state, shared with the API and `/status`.
#[derive(Debug)]
pub struct DiskGuard {
    path: PathBuf,
    min: MinFree,
    low: AtomicBool,
    available: AtomicU64,
    /// A live member (other than this node) whose gossip says its disk is
    /// below its watermark; 0 for none.
    low_peer: AtomicU64,
}

impl DiskGuard {
    pub fn new(path: &Path, min: MinFree) -> Arc<Self> {
        let guard = Arc::new(DiskGuard {
            path: path.to_path_buf(),
            min,
            low: AtomicBool::new(false),
            available: AtomicU64::new(u64::MAX),
            low_peer: AtomicU64::new(0),
        });
        guard.measure();
        guard
    }

    /// Below the watermark at the last measurement.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    /// A live member whose disk is below its watermark, as gossip says.
    pub fn low_peer(&self) -> Option<u64> {
        Some(self.low_peer.load(Ordering::Relaxed)).filter(|&id| id != 0)
    }

    /// Why writes must wait, if they must.
    pub fn refuse_writes(&self) -> Option<String> {
        if self.is_low() {
            return Some(format!(
                "this node's free disk space ({} bytes) is below --min-free-disk ({:?}); writes \
                 resume by themselves when space returns",
                self.available(),
                self.min
            ));
        }
        self.low_peer().map(|id| {
            format!(
                "node {id}'s free disk space is below its --min-free-disk; writes resume by \
                 themselves when space returns"
            )
        })
    }

    /// Available bytes at the last measurement.
    pub fn available(&self) -> u64 {
        self.available.load(Ordering::Relaxed)
    }

    pub fn min(&self) -> MinFree {
        self.min
    }

    /// Measures now; returns whether the state changed.
    pub fn measure(&self) -> bool {
        let stat = match rustix::fs::statvfs(&self.path) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot measure free space");
                return false;
            }
        };
        let block = stat.f_frsize.max(1);
        let available = stat.f_bavail.saturating_mul(block);
        let total = stat.f_blocks.saturating_mul(block);
        self.available.store(available, Ordering::Relaxed);
        let low = below(self.min, available, total);
        let was = self.low.swap(low, Ordering::Relaxed);
        if low != was {
            if low {
                tracing::error!(
                    available_bytes = available,
                    min = ?self.min,
                    "free disk space below --min-free-disk: writes answer 507 until space returns"
                );
            } else {
                tracing::info!(
                    available_bytes = available,
                    "free disk space is back: writes resume"
                );
            }
        }
        low != was
    }
}

/// Measures every second, publishes the state in gossip and notes the
/// members that publish theirs as low.
pub async fn run(
    guard: Arc<DiskGuard>,
    gossip: Arc<Gossip>,
    replica: crate::replica::Replica,
    shutdown: CancellationToken,
) {
    loop {
        guard.measure();
        gossip.publish(DISK_LOW_KEY, if guard.is_low() { "1" } else { "0" }).await;
        let view = replica.view();
        let low_peer = gossip
            .members()
            .await
            .into_iter()
            .find(|m| {
                m.live
                    && m.disk_low
                    && m.node_id != view.id
                    && view.voters.contains(&m.node_id)
                    && view.nodes.get(&m.node_id).is_some_and(|n| n.raft_addr == m.raft_addr)
            })
            .map_or(0, |m| m.node_id);
        guard.low_peer.store(low_peer, Ordering::Relaxed);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_in_bytes_and_percent() {
        assert_eq!(parse_min_free("256MiB"), Ok(MinFree::Bytes(256 << 20)));
        assert_eq!(parse_min_free(" 5% "), Ok(MinFree::Percent(5)));
        assert!(parse_min_free("80%").is_err());
        assert!(parse_min_free("x%").is_err());
        assert!(parse_min_free("lots").is_err());
        assert!(below(MinFree::Bytes(100), 99, 1000));
        assert!(!below(MinFree::Bytes(100), 100, 1000));
        assert!(below(MinFree::Percent(10), 99, 1000));
        assert!(!below(MinFree::Percent(10), 100, 1000));
        assert!(!below(MinFree::Percent(10), u64::MAX, u64::MAX), "no overflow");
    }

    #[test]
    fn a_real_directory_is_measured() {
        let dir = tempfile::tempdir().unwrap();
        let roomy = DiskGuard::new(dir.path(), MinFree::Bytes(0));
        assert!(!roomy.is_low());
        assert!(roomy.available() > 0 && roomy.available() < u64::MAX);
        let greedy = DiskGuard::new(dir.path(), MinFree::Bytes(u64::MAX));
        assert!(greedy.is_low());
    }
}
