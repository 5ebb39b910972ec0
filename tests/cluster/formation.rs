//! SPEC §1: three nodes form one cluster by gossip alone (node 1 bootstraps,
//! nodes 2 and 3 only know node 1's gossip address).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{id_of, id_set, status_brief, str_field, u64_field, wait_until, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_by_gossip() {
    let c = Cluster::start(3).await; // returns once all three answer /healthz
    let up = Instant::now();

    // Within 10 s every node shows the same 3 voters, the same leader and
    // term, no learners, a gossip view of 3 members, and followers point at
    // the leader's advertised API URL.
    let statuses: Vec<Value> = wait_until(
        Duration::from_secs(10),
        "3 voters and one agreed leader on every node",
        async || {
            let mut all = Vec::new();
            for i in 0..3 {
                all.push(c.try_status(i).await?);
            }
            let summary = || all.iter().map(status_brief).collect::<Vec<_>>().join(" | ");
            let voters: Vec<BTreeSet<String>> = all.iter().map(|v| id_set(v, "voters")).collect();
            let leaders: Vec<Option<String>> = all.iter().map(|v| id_of(&v["leader_id"])).collect();
            let terms: Vec<Option<u64>> = all.iter().map(|v| v["term"].as_u64()).collect();
            if voters.iter().any(|s| s.len() != 3)
                || voters.iter().any(|s| *s != voters[0])
                || leaders[0].is_none()
                || leaders.iter().any(|l| *l != leaders[0])
                || terms.iter().any(|t| *t != terms[0])
            {
                return Err(summary());
            }
            Ok(all)
        },
    )
    .await;
    eprintln!("formed {:?} after all nodes were healthy", up.elapsed());

    let ids: Vec<String> =
        statuses.iter().map(|v| id_of(&v["node_id"]).expect("node_id")).collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 3, "node ids must be distinct: {ids:?}");
    let voters = id_set(&statuses[0], "voters");
    assert_eq!(
        voters,
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        "the voters are exactly the three nodes"
    );

    let leader_id = id_of(&statuses[0]["leader_id"]).unwrap();
    let li = ids.iter().position(|id| *id == leader_id).expect("leader is one of the nodes");
    let leader_url = c.nodes[li].api_url();
    assert!(u64_field(&statuses[0], "term") >= 1);
    for (i, v) in statuses.iter().enumerate() {
        let want_role = if i == li { "leader" } else { "follower" };
        assert_eq!(str_field(v, "role"), want_role, "{}", status_brief(v));
        assert!(id_set(v, "learners").is_empty(), "no learners once formed: {}", status_brief(v));
        assert_eq!(
            v["leader_api_url"].as_str().map(|s| s.trim_end_matches('/')),
            Some(leader_url.as_str()),
            "leader_api_url must be the leader's advertised API URL: {v}"
        );
        let members = match &v["members"] {
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            other => panic!("members (gossip view) must be an array or object: {other}"),
        };
        assert_eq!(members, 3, "gossip view must list all 3 nodes: {v}");
        for field in ["last_log_index", "commit_index", "applied_index", "queue_len", "head_seq"] {
            u64_field(v, field);
        }
        assert_eq!(u64_field(v, "queue_len"), 0, "{v}");
        assert_eq!(u64_field(v, "head_seq"), 0, "{v}");
        assert!(
            u64_field(v, "applied_index") <= u64_field(v, "last_log_index"),
            "applied beyond the log: {v}"
        );
    }

    // The formed cluster takes a write through a follower and every node
    // reads it back.
    let f = (0..3).find(|&i| i != li).unwrap();
    let r = c.post_follow(f, "formed").await;
    assert_eq!(r.status, reqwest::StatusCode::CREATED, "{r:?}");
    c.check_acked_everywhere(&[(r.expect_seq(), "formed".to_string())]).await;
}
