//! `raftq status`: the cluster as one node sees it, then every member's own
//! view (role, term, applied index, lag behind the leader), for people.

use std::collections::BTreeMap;
use std::fmt::Display;

use raftq::cli::StatusArgs;
use raftq::client::Client;
use raftq::wire::Status;

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client.config())?;
    let status = client.status().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&raftq::wire::to_body(&status)?)?);
        return Ok(());
    }
    // Ask every member for its own view, concurrently: a dead or partitioned
    // member shows as unreachable instead of stalling the table.
    let members = members(&status);
    let surveys = futures_util::future::join_all(members.iter().map(|(_, api_addr)| {
        let client = &client;
        async move {
            match api_addr {
                Some(addr) => {
                    client.status_of(&format!("https://{addr}")).await.map_err(|e| e.to_string())
                }
                None => Err("no address known".to_string()),
            }
        }
    }))
    .await;
    let views: BTreeMap<u64, Result<Status, String>> =
        members.iter().map(|(id, _)| *id).zip(surveys).collect();
    print!("{}", render(&status, &views));
    Ok(())
}

/// A field for the table: `-` when absent.
fn field(value: Option<impl Display>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Every node the answering node knows of (Raft members and gossip
/// members), with the API address gossip reports for it.
fn members(status: &Status) -> Vec<(u64, Option<String>)> {
    let mut out: BTreeMap<u64, Option<String>> = BTreeMap::new();
    for id in status.voters.iter().chain(&status.learners) {
        out.entry(*id).or_default();
    }
    for m in &status.members {
        out.insert(m.node_id, Some(m.api_addr.clone()));
    }
    out.into_iter().collect()
}

/// The human form: a summary of the answering node, then one row per
/// member from that member's own `/status`.
pub fn render(status: &Status, views: &BTreeMap<u64, Result<Status, String>>) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<16} {v}\n"));
    line(&mut out, "asked node", format!("{} ({})", status.node_id, status.role));
    line(
        &mut out,
        "leader",
        format!("{} ({})", field(status.leader_id), field(status.leader_api_url.as_ref())),
    );
    line(&mut out, "term", status.term.to_string());
    line(
        &mut out,
        "queue default",
        format!(
            "{} events (front {}, head {})",
            status.queue_len,
            field(status.front_seq),
            status.head_seq
        ),
    );
    let gossip: BTreeMap<u64, bool> = status.members.iter().map(|m| (m.node_id, m.live)).collect();
    let api: BTreeMap<u64, String> =
        members(status).into_iter().filter_map(|(id, addr)| Some((id, addr?))).collect();
    let leader_applied = status
        .leader_id
        .and_then(|l| views.get(&l))
        .and_then(|v| v.as_ref().ok())
        .and_then(|v| v.applied_index);
    out.push_str(&format!(
        "\n{:<22} {:<8} {:<10} {:>6} {:>10} {:>7} {:<7} {}\n",
        "NODE", "MEMBER", "ROLE", "TERM", "APPLIED", "LAG", "GOSSIP", "API"
    ));
    for (id, view) in views {
        let member = if status.voters.contains(id) {
            "voter"
        } else if status.learners.contains(id) {
            "learner"
        } else {
            "-"
        };
        let live = match gossip.get(id) {
            Some(true) => "live",
            Some(false) => "dead",
            None => "-",
        };
        match view {
            Ok(v) => {
                let lag = match (leader_applied, v.applied_index) {
                    (Some(l), Some(a)) => l.saturating_sub(a).to_string(),
                    _ => "-".into(),
                };
                out.push_str(&format!(
                    "{:<22} {:<8} {:<10} {:>6} {:>10} {:>7} {:<7} {}\n",
                    id,
                    member,
                    v.role,
                    v.term,
                    field(v.applied_index),
                    lag,
                    live,
                    api.get(id).map_or("-", String::as_str)
                ));
            }
            Err(e) => out.push_str(&format!(
                "{:<22} {:<8} {:<10} {:>6} {:>10} {:>7} {:<7} {} (unreachable: {})\n",
                id,
                member,
                "-",
                "-",
                "-",
                "-",
                live,
                api.get(id).map_or("-", String::as_str),
                e
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_shows_each_members_own_view_and_lag() {
        let status: Status = serde_json::from_value(json!({
            "node_id": 1, "role": "leader", "leader_id": 1,
            "leader_api_url": "https://10.0.0.1:8080", "term": 3,
            "queue_len": 2, "front_seq": 5, "head_seq": 6,
            "voters": [1, 2], "learners": [3],
            "members": [
                {"node_id": 1, "live": true, "api_addr": "10.0.0.1:8080"},
                {"node_id": 2, "live": true, "api_addr": "10.0.0.2:8080"},
                {"node_id": 3, "live": false, "api_addr": "10.0.0.3:8080"},
            ],
        }))
        .unwrap();
        assert_eq!(members(&status).iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![1, 2, 3]);
        let views = BTreeMap::from([
            (
                1,
                Ok(serde_json::from_value(
                    json!({"role": "leader", "term": 3, "applied_index": 40}),
                )
                .unwrap()),
            ),
            (
                2,
                Ok(serde_json::from_value(
                    json!({"role": "follower", "term": 3, "applied_index": 37}),
                )
                .unwrap()),
            ),
            (3, Err("connection refused".to_string())),
        ]);
        let table = render(&status, &views);
        let row = |id: &str| {
            table
                .lines()
                .find(|l| l.starts_with(id))
                .unwrap_or_else(|| panic!("{table}"))
                .to_string()
        };
        let two = row("2 ");
        let two: Vec<&str> = two.split_whitespace().collect();
        assert_eq!(two[..7], ["2", "voter", "follower", "3", "37", "3", "live"], "{table}");
        let three = row("3 ");
        assert!(three.contains("learner") && three.contains("unreachable: connection refused"));
        assert!(table.contains("front 5, head 6"), "{table}");
    }
}
