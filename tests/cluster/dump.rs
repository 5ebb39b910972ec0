//! Issue 11's `raftq dump`: it refuses the data dir of a running node (the
//! RocksDB lock is held) and prints a stopped node's state, through the
//! real binary.

use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::{Cluster, BIN, FORM};

fn dump(data_dir: &std::path::Path, events: bool) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("dump").arg("--data-dir").arg(data_dir).env("RUST_BACKTRACE", "0");
    if events {
        cmd.arg("--events");
    }
    cmd.output().expect("raftq dump")
}

#[tokio::test]
async fn dump_refuses_a_running_node_and_prints_a_stopped_one() {
    let mut c = Cluster::builder().nodes(1).start().await;
    c.wait_ready(0, Duration::from_secs(30)).await;
    for event in ["a", "b", "c"] {
        assert_eq!(c.post(0, event).await.status, StatusCode::CREATED);
    }
    assert_eq!(c.delete_event(0, false).await.status, StatusCode::OK);
    let r = c
        .request(
            0,
            Method::POST,
            "/queues/jobs/event",
            Some((FORM, b"event=j".to_vec())),
            &[],
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let data_dir = c.nodes[0].data_dir.clone();

    let out = dump(&data_dir, false);
    assert!(!out.status.success(), "dumped a running node: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop the node first"), "{out:?}");

    c.nodes[0].stop();
    let out = dump(&data_dir, true);
    assert!(out.status.success(), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout).expect("dump prints JSON");
    assert_eq!(json["queues"]["default"]["front"], 2, "{json}");
    assert_eq!(json["queues"]["default"]["next"], 4, "{json}");
    assert_eq!(json["queues"]["jobs"]["pending"], 1, "{json}");
    assert_eq!(json["events"]["default"]["2"], "b", "{json}");
    assert_eq!(json["events"]["jobs"]["1"], "j", "{json}");
    assert!(json["last_applied"]["index"].as_u64().is_some_and(|i| i >= 5), "{json}");
    // Two dumps of the same stopped node are the same bytes.
    assert_eq!(dump(&data_dir, true).stdout, out.stdout);
}
