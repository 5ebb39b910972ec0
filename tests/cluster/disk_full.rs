//! Issue 10, acceptance 4: a full disk. Three nodes keep their data on one
//! small tmpfs (mounted by the test, as root). Filling it below
//! `--min-free-disk` makes writes answer `507 disk_full` while reads work and
//! no node exits; freeing space lets writes through again, by themselves.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;

use crate::harness::{wait_until, Cluster};

/// RocksDB preallocates its WAL (about 70 MiB per node), and on tmpfs that
/// takes real pages: room for three nodes and the filler.
const TMPFS_MIB: u64 = 512;
const MIN_FREE_MIB: u64 = 64;

/// A tmpfs mounted for the test; unmounted on drop (after the cluster,
/// which the test declares later).
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u64) -> Result<Tmpfs, String> {
        let uid = Command::new("id").arg("-u").output().map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not root: mounting a tmpfs needs root".into());
        }
        let dir =
            tempfile::Builder::new().prefix("raftq-tmpfs-").tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().to_path_buf();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "raftq-test"])
            .arg(&path)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(Tmpfs { path, _dir: dir })
    }

    fn available(&self) -> u64 {
        let st = rustix::fs::statvfs(&self.path).expect("statvfs");
        st.f_bavail * st.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes `bytes` of zeros to `path` (on tmpfs, written pages are used).
fn fill(path: &Path, bytes: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if f.write_all(&chunk[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers() {
    let tmpfs = match Tmpfs::mount(TMPFS_MIB) {
        Ok(t) => t,
        Err(reason) => {
            println!("SKIPPED: disk-full test: {reason}");
            return;
        }
    };
    let data = tmpfs.path.join("nodes");
    std::fs::create_dir_all(&data).unwrap();
    let mut c = Cluster::builder()
        .nodes(3)
        .data_base(&data)
        .args(["--min-free-disk", &format!("{MIN_FREE_MIB}MiB")])
        .start()
        .await;
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let r = c.post(l, "before").await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");

    // Leave about half the watermark free.
    let filler = tmpfs.path.join("filler");
    let free = tmpfs.available();
    assert!(free > MIN_FREE_MIB << 20, "the cluster alone filled the tmpfs: {free} bytes free");
    fill(&filler, free - (MIN_FREE_MIB << 20) / 2);

    wait_until(Duration::from_secs(10), "the leader to notice the full disk", async || {
        let s = c.try_status(l).await?;
        if s["disk"]["writes_refused"].is_string() {
            Ok(())
        } else {
            Err(s["disk"].to_string())
        }
    })
    .await;
    let refused = c.post(l, "while-full").await;
    assert_eq!(refused.status, StatusCode::INSUFFICIENT_STORAGE, "{refused:?}");
    assert_eq!(refused.json()["code"], "disk_full", "{}", refused.text());
    // Through a follower (307 to the leader) too, and nothing got in.
    let f = c.live().into_iter().find(|&i| i != l).unwrap();
    let r = c.post_follow(f, "while-full-2").await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{r:?}");
    // Reads work, linearizable, on every node.
    for i in 0..3 {
        let r = c.get_event(i).await;
        assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "before"), "read on n{}", i + 1);
    }
    let status = c.status(l).await;
    assert_eq!(status["disk"]["low"], true, "{status}");
    let ready = c.get(l, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "reads are still served: {ready:?}");
    assert_eq!(ready.json()["writable"], false, "{}", ready.text());
    let metrics = c.get(l, "/metrics").await.text();
    assert!(metrics.lines().any(|l| l == "raftq_disk_writes_refused 1"), "{metrics}");
    // Time for any node to trip over the full disk.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..3 {
        assert!(c.nodes[i].exited().is_none(), "n{} exited on a full disk", i + 1);
    }

    std::fs::remove_file(&filler).unwrap();
    wait_until(Duration::from_secs(10), "writes to resume", async || {
        let r = c.post(l, "after").await;
        if r.status == StatusCode::CREATED {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    let events: Vec<String> = c.all_events(l, "").await.0.into_iter().map(|(_, e)| e).collect();
    assert_eq!(events, vec!["before".to_string(), "after".to_string()], "no refused write got in");
    drop(c);
}
