//! Issue 5, named sequences: 8 concurrent `raftq seq next` processes (batch
//! sizes 1 and 100) across two leader kills, then a full restart of the
//! cluster and more clients: no id is printed twice, and every id the
//! cluster allocated is accounted for (a leased block, or a lease request
//! whose reply was lost).

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::consumer::{client_flags, tail, ClientProc};
use crate::harness::{wait_until, Cluster};

const NAME: &str = "orders";

struct Run {
    proc: ClientProc,
    batch: u64,
    count: u64,
}

fn spawn_seq(c: &Cluster, dir: &std::path::Path, name: &str, batch: u64, count: u64) -> Run {
    // Each client lists the nodes in a different order.
    let k = name.bytes().map(usize::from).sum::<usize>();
    let order: Vec<usize> = (0..c.nodes.len()).map(|i| (i + k) % c.nodes.len()).collect();
    let mut args: Vec<String> = vec!["seq".into(), "next".into(), NAME.into()];
    args.extend(["--batch".into(), batch.to_string(), "--count".into(), count.to_string()]);
    args.push("--verbose".into());
    args.extend(client_flags(c, &order));
    Run { proc: ClientProc::spawn(dir, name, &args), batch, count }
}

/// What one finished client reported.
struct Report {
    name: String,
    ids: Vec<u64>,
    leases: Vec<(u64, u64)>,
    unknown: u64,
    batch: u64,
}

async fn finish(mut run: Run) -> Report {
    let status = run.proc.wait(Duration::from_secs(120)).await;
    let name = run.proc.name.clone();
    let err = run.proc.stderr_text();
    assert!(status.success(), "{name} exited with {status}:\n{}", tail(&err, 30));
    let ids: Vec<u64> = run
        .proc
        .stdout_text()
        .lines()
        .map(|l| l.parse().unwrap_or_else(|_| panic!("{name}: bad id line {l:?}")))
        .collect();
    let mut leases = Vec::new();
    let mut unknown = 0;
    for line in err.lines() {
        if let Some(range) = line.strip_prefix("raftq seq: leased ") {
            let (a, b) = range.split_once("..=").expect("a..=b");
            leases.push((a.parse().expect("first"), b.parse().expect("last")));
        } else if let Some(n) = line.strip_prefix("raftq seq: unknown-outcome lease attempts: ") {
            unknown += n.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    assert_eq!(ids.len() as u64, run.count, "{name}: printed {} ids", ids.len());
    for w in ids.windows(2) {
        assert!(w[0] < w[1], "{name}: ids not strictly increasing: {w:?}");
    }
    for &(a, b) in &leases {
        assert_eq!(b - a + 1, run.batch, "{name}: lease {a}..={b} is not one batch");
    }
    for id in &ids {
        assert!(
            leases.iter().any(|&(a, b)| (a..=b).contains(id)),
            "{name}: printed {id} outside its leases {leases:?}"
        );
    }
    Report { name, ids, leases, unknown, batch: run.batch }
}

async fn final_allocation(c: &Cluster) -> u64 {
    let l = c.leader().await;
    let r =
        c.request(l, Method::POST, &format!("/sequences/{NAME}?count=1"), None, &[], true).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let v = r.json();
    assert_eq!(v["first"], v["last"], "{v}");
    v["first"].as_u64().expect("first")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_clients_never_repeat_an_id_across_leader_kills_and_restarts() {
    let mut c = Cluster::start(3).await;
    c.wait_for_voters(3, Duration::from_secs(30)).await;
    let dir = c.dir().join("seq");
    std::fs::create_dir_all(&dir).expect("mkdir");

    // Round 1: 8 concurrent clients, two leader kills while they run: the
    // first once every client has handed out ids (and so is mid-run).
    let mut runs: Vec<Run> = (0..8)
        .map(|k| {
            let (batch, count) = if k % 2 == 0 { (1, 300) } else { (100, 2000) };
            spawn_seq(&c, &dir, &format!("seq-r1-{k}-b{batch}"), batch, count)
        })
        .collect();
    wait_until(Duration::from_secs(60), "every client to print ids", async || {
        let started = runs.iter().filter(|r| !r.proc.stdout_text().is_empty()).count();
        if started == runs.len() {
            Ok(())
        } else {
            Err(format!("{started} of {} clients printed ids", runs.len()))
        }
    })
    .await;
    for round in 0..2 {
        let l = c.leader().await;
        let mut running = Vec::new();
        for r in runs.iter_mut() {
            if r.proc.running() {
                running.push(r.batch);
            }
        }
        assert!(!running.is_empty(), "every client finished before leader kill {round}");
        eprintln!(
            "kill -9 leader {} with clients of batch sizes {running:?} running",
            c.nodes[l].name
        );
        c.nodes[l].kill9();
        c.wait_for_voters(3, Duration::from_secs(30)).await;
        c.restart(l).await;
    }
    let mut reports = Vec::new();
    for run in runs {
        reports.push(finish(run).await);
    }

    // A full restart of every node, then more clients.
    for i in 0..3 {
        let status = c.nodes[i].stop();
        assert!(status.success(), "{} exited with {status}", c.nodes[i].name);
    }
    for i in 0..3 {
        c.nodes[i].spawn();
    }
    for i in 0..3 {
        c.wait_healthy(i).await;
    }
    c.wait_for_voters(3, Duration::from_secs(30)).await;
    let runs =
        vec![spawn_seq(&c, &dir, "seq-r2-b1", 1, 20), spawn_seq(&c, &dir, "seq-r2-b100", 100, 150)];
    for run in runs {
        reports.push(finish(run).await);
    }
    let next = final_allocation(&c).await;

    // No id printed twice, by anyone.
    let mut printed = BTreeSet::new();
    for r in &reports {
        for &id in &r.ids {
            assert!(printed.insert(id), "id {id} printed twice (again by {})", r.name);
        }
    }
    // Leased blocks never overlap and lie below the next allocation.
    let mut leases: Vec<(u64, u64, &str)> = reports
        .iter()
        .flat_map(|r| r.leases.iter().map(|&(a, b)| (a, b, r.name.as_str())))
        .collect();
    leases.sort();
    for w in leases.windows(2) {
        assert!(w[0].1 < w[1].0, "leases overlap: {:?} and {:?}", w[0], w[1]);
    }
    let first = leases.first().expect("some lease").0;
    let last = leases.last().expect("some lease").1;
    assert!(first >= 1 && last < next, "leases {first}..={last} vs next allocation {next}");
    // Gapless allocations: every id below the next allocation is in a lease,
    // except whole blocks of lease requests whose reply was lost.
    let mut holes = 0u64;
    let mut expected = 1;
    for &(a, b, _) in &leases {
        holes += a - expected;
        expected = b + 1;
    }
    holes += next - expected;
    let unknown: u64 = reports.iter().map(|r| r.unknown).sum();
    let unknown_ids: u64 = reports.iter().map(|r| r.unknown * r.batch).sum();
    eprintln!(
        "{} ids printed, {} leases, next allocation {next}, {holes} ids in no lease, \
         {unknown} lease requests with unknown outcome (up to {unknown_ids} ids)",
        printed.len(),
        leases.len()
    );
    assert!(
        holes <= unknown_ids,
        "{holes} allocated ids are in no lease, but lost replies explain at most {unknown_ids}"
    );
}
