//! `raftq status`: a node's view of the cluster, for people.

use raftq::cli::StatusArgs;
use raftq::client::Client;
use serde_json::Value;

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let status = Client::new(&args.client)?.status().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    print!("{}", render(&status));
    Ok(())
}

fn field(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The human form of `/status`: a summary, then one row per gossip member.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<16} {v}\n"));
    line(&mut out, "node", field(status, "node_id"));
    line(&mut out, "role", field(status, "role"));
    line(
        &mut out,
        "leader",
        format!("{} ({})", field(status, "leader_id"), field(status, "leader_api_url")),
    );
    line(&mut out, "term", field(status, "term"));
    line(
        &mut out,
        "log",
        format!(
            "last {} / committed {} / applied {}",
            field(status, "last_log_index"),
            field(status, "commit_index"),
            field(status, "applied_index")
        ),
    );
    line(
        &mut out,
        "queue default",
        format!(
            "{} events (front {}, head {})",
            field(status, "queue_len"),
            field(status, "front_seq"),
            field(status, "head_seq")
        ),
    );
    let ids = |key: &str| -> Vec<u64> {
        status[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    };
    let (voters, learners) = (ids("voters"), ids("learners"));
    out.push_str(&format!(
        "\n{:<22} {:<8} {:<8} {:<24} {}\n",
        "NODE", "RAFT", "GOSSIP", "API", "RAFT ADDR"
    ));
    for m in status["members"].as_array().into_iter().flatten() {
        let id = m["node_id"].as_u64().unwrap_or(0);
        let role = if voters.contains(&id) {
            "voter"
        } else if learners.contains(&id) {
            "learner"
        } else {
            "-"
        };
        let live = if m["live"].as_bool().unwrap_or(false) { "live" } else { "dead" };
        out.push_str(&format!(
            "{:<22} {:<8} {:<8} {:<24} {}\n",
            id,
            role,
            live,
            field(m, "api_addr"),
            field(m, "raft_addr")
        ));
    }
    out
}
