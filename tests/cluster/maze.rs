//! Follower-maze across a real cluster (SPEC §3, issue 3): the reference
//! workload through `raftq maze-verify`, a leader kill mid-stream, a gap that
//! only the leader's timeout can close, and garbage on both ports.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{u64_field, wait_until, Cluster, BIN};

/// Runs `raftq maze-verify` with the reference program's settings.
fn verify_cmd(events: u64, source: SocketAddr, clients: &[SocketAddr]) -> Command {
    let mut cmd = Command::new(BIN);
    let clients: Vec<String> = clients.iter().map(|a| a.to_string()).collect();
    cmd.args(["maze-verify", "--source", &source.to_string(), "--clients", &clients.join(",")])
        .env("totalEvents", events.to_string())
        .env("concurrencyLevel", "100")
        .env("logInterval", "100000")
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run_verify(events: u64, source: SocketAddr, clients: &[SocketAddr]) {
    let out = verify_cmd(events, source, clients).output().expect("run maze-verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("\"result\":\"pass\""),
        "maze-verify failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Acceptance 1 and 3: source and clients on the leader, then the source on
/// a follower with clients spread over all nodes: a second run against the
/// same cluster, so its sequence restarts at 1 on a new stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_workload_on_leader_then_spread() {
    let c = Cluster::start(3).await;
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let leader = &c.nodes[l];
    let (src, cli) = (leader.maze_source_addr(), leader.maze_client_addr());
    tokio::task::spawn_blocking(move || run_verify(200_000, src, &[cli])).await.unwrap();

    let f = c.followers().await[0];
    let src = c.nodes[f].maze_source_addr();
    let clients: Vec<SocketAddr> = c.nodes.iter().map(|n| n.maze_client_addr()).collect();
    tokio::task::spawn_blocking(move || run_verify(200_000, src, &clients)).await.unwrap();

    // Every node applied both streams completely and identically.
    for i in 0..3 {
        let s = c.status(i).await;
        let stream = &s["maze"]["stream"];
        assert_eq!(stream["epoch"], 2, "node {i}: {stream}");
        assert_eq!(stream["next_seq"], 200_001, "node {i}: {stream}");
        assert_eq!(stream["pending"], 0, "node {i}: {stream}");
    }
}

/// Acceptance 2: the leader is killed mid-stream; the source is on a
/// follower and the clients on the two surviving nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_mid_stream_loses_nothing() {
    let mut c = Cluster::start(3).await;
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let survivors = c.followers().await;
    let src = c.nodes[survivors[0]].maze_source_addr();
    let clients: Vec<SocketAddr> =
        survivors.iter().map(|&i| c.nodes[i].maze_client_addr()).collect();
    let child = verify_cmd(200_000, src, &clients).spawn().expect("spawn maze-verify");

    // Kill the leader once the stream is well under way.
    wait_until(Duration::from_secs(60), "the stream to pass seq 30000", async || {
        let s = c.try_status(survivors[0]).await?;
        let next = u64_field(&s["maze"]["stream"], "next_seq");
        if next > 30_000 {
            Ok(())
        } else {
            Err(format!("next_seq {next}"))
        }
    })
    .await;
    c.nodes[l].kill9();

    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .expect("maze-verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("\"result\":\"pass\""),
        "maze-verify failed across the leader kill: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn connect_user(addr: SocketAddr, id: &str) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).expect("connect user");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(id.as_bytes()).unwrap();
    BufReader::new(s)
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read notification");
    line
}

/// A seq that never arrives is skipped after the leader's gap timeout (and
/// not before); garbage lines are counted and skipped; line endings are
/// forwarded as received; a non-numeric user id is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_skip_and_malformed_input() {
    let c = Cluster::builder().nodes(3).args(["--maze-gap-timeout-ms", "1500"]).start().await;
    let l = c.wait_for_voters(3, Duration::from_secs(30)).await;
    let f = c.followers().await[0];
    let (user_addr, source_addr) = (c.nodes[f].maze_client_addr(), c.nodes[l].maze_source_addr());

    let t = tokio::task::spawn_blocking(move || {
        let mut user = connect_user(user_addr, "7\n");
        let mut bad_user = TcpStream::connect(user_addr).unwrap();
        bad_user.write_all(b"seven\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let mut source = TcpStream::connect(source_addr).unwrap();
        // 3 is missing; garbage is interleaved; 4 uses CRLF.
        let long = format!("{}\n", "9".repeat(5000));
        let mut stream: Vec<u8> = Vec::new();
        stream.extend_from_slice(b"2|P|1|7\nhello\n1|F|7|3\n\xff\xfe|B\n1|X|2\n");
        stream.extend_from_slice(long.as_bytes());
        stream.extend_from_slice(b"4|P|2|7\r\n5|B\n6|S|3\n");
        source.write_all(&stream).unwrap();
        // Seq 1 (7 follows 3) notifies 3, who is not connected.
        assert_eq!(read_line(&mut user), "2|P|1|7\n");
        let waiting = Instant::now();
        assert_eq!(read_line(&mut user), "4|P|2|7\r\n", "delivered after the gap skip");
        let waited = waiting.elapsed();
        assert!(
            waited >= Duration::from_millis(1000),
            "skipped before the gap timeout: {waited:?}"
        );
        assert_eq!(read_line(&mut user), "5|B\n");
        // 6|S|3 reaches 3's follower 7 (seq 1).
        assert_eq!(read_line(&mut user), "6|S|3\n");
        // The refused user's connection is closed.
        let mut buf = [0u8; 16];
        bad_user.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(std::io::Read::read(&mut bad_user, &mut buf), Ok(0) | Err(_)));
        source
    });
    let _source = t.await.unwrap();

    let s = c.status(l).await;
    let maze = &s["maze"];
    assert!(u64_field(&maze["stream"], "malformed") >= 2, "hello and 1|X|2: {maze}");
    assert!(u64_field(&maze["stream"], "skipped") >= 1, "{maze}");
    assert!(u64_field(maze, "gap_skips") >= 1, "{maze}");
    assert!(u64_field(maze, "source_rejected_lines") >= 2, "over-long and non-UTF-8: {maze}");
    let fs = c.status(f).await;
    assert!(u64_field(&fs["maze"], "bad_hellos") >= 1, "{}", fs["maze"]);
    // Nodes stay up and consistent.
    for i in 0..3 {
        assert_eq!(c.status(i).await["maze"]["stream"]["next_seq"], 7);
    }
}
