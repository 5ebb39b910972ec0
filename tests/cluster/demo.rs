//! SPEC §4 `make demo`: `scripts/demo.sh` (the narrated seed transcript with a
//! leader kill, starting its own three nodes) exits 0.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::{acquire_slot, BIN};

const DEMO_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_script_succeeds() {
    let _slot = acquire_slot();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/demo.sh");
    assert!(script.is_file(), "{} does not exist", script.display());

    let tmp = tempfile::tempdir().expect("temp dir");
    let log_path = tmp.path().join("demo.log");
    let log = File::create(&log_path).expect("create demo log");
    let mut child = tokio::process::Command::new("bash")
        .arg("scripts/demo.sh")
        .current_dir(root)
        .env("RAFTQ", BIN)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        // Its own process group, so every node the script starts can be
        // signalled with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("run bash scripts/demo.sh");
    let pgid = child.id().expect("demo pid").to_string();
    let waited = tokio::time::timeout(DEMO_TIMEOUT, child.wait()).await;
    // Whatever happened, leave no node of the demo behind.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    let output =
        String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default()).into_owned();
    match waited {
        Err(_) => {
            panic!("scripts/demo.sh did not finish within {DEMO_TIMEOUT:?}; output:\n{output}")
        }
        Ok(status) => {
            let status = status.expect("wait for demo.sh");
            assert!(status.success(), "scripts/demo.sh exited with {status}; output:\n{output}");
        }
    }
}
