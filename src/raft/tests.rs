//! openraft's storage conformance suite against the RocksDB stores, plus
//! restart and snapshot checks of our own.

use openraft::testing::log::{StoreBuilder, Suite};

use super::db;
use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::types::{NodeId, StorageError, TypeConfig};

/// `as_node`: the node the log store is told it is (`None`: none, so every
/// append goes through the flush thread; a node id the suite never leads
/// with: every append is a follower's, synced inline when idle).
struct RocksBuilder {
    as_node: Option<NodeId>,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db::open(&dir.path().join("db")).expect("open rocksdb");
        let sm = StateMachine::open(db.clone(), &dir.path().join("snapshots"))
            .expect("open state machine");
        let log = LogStore::new(db);
        let log = match self.as_node {
            Some(id) => log.with_node_id(id),
            None => log,
        };
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(RocksBuilder { as_node: None }).await.expect("storage suite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_as_a_follower() {
    let suite = Suite::test_all(RocksBuilder { as_node: Some(NodeId::MAX) }).await;
    suite.expect("storage suite, appends synced inline");
}

mod state_machine {
    use std::path::Path;

    use std::io::Read;

    use openraft::storage::RaftStateMachine;
    use openraft::RaftSnapshotBuilder;
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};

    use rocksdb::IteratorMode;

    use super::super::snapshot::SnapshotFile;
    use super::super::state_machine::{StateMachine, RESTORE_BATCH_BYTES, RESTORING_MARKER};
    use super::super::types::{
        Entry, EntryPayload, LeaderId, LogId, Op, Reply, Request, Response, SnapshotMeta,
    };
    use super::super::{db, keys};
    use crate::maze::MazeCommand;
    use crate::maze_net::clients::Registry;
    use crate::queue::{Command, EventStamp, Limits};
    use std::sync::atomic::Ordering;

    fn open(dir: &Path) -> StateMachine {
        let db = db::open(&dir.join("db")).unwrap();
        StateMachine::open(db, &dir.join("snapshots")).unwrap()
    }

    fn entry(index: u64, commands: Vec<Command>) -> Entry {
        Entry {
            log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, index),
            payload: EntryPayload::Normal(Request {
                limits: Limits { retention_events: 2, ..Limits::default() },
                maze_limits: Default::default(),
                ops: commands.into_iter().map(Op::Queue).collect(),
                time_ms: 0,
            }),
        }
    }

    fn enqueue(event: &str) -> Command {
        Command::Enqueue { queue: "default".into(), event: event.into(), idempotency_key: None }
    }

    fn dequeue() -> Command {
        Command::Dequeue { queue: "default".into(), expect_seq: None }
    }

    /// An entry proposed at `time_ms` with generous retention.
    fn timed(index: u64, time_ms: u64, commands: Vec<Command>) -> Entry {
        let mut e = entry(index, commands);
        if let EntryPayload::Normal(request) = &mut e.payload {
            request.limits.retention_events = 100;
            request.time_ms = time_ms;
        }
        e
    }

    fn stamps_of(
        sm: &StateMachine,
        seqs: std::ops::RangeInclusive<u64>,
    ) -> Vec<Option<EventStamp>> {
        let reader = sm.reader();
        seqs.map(|seq| reader.stamp("default", seq).unwrap()).collect()
    }

    async fn apply(sm: &mut StateMachine, entries: Vec<Entry>) -> Vec<Response> {
        sm.apply_now(entries).await.unwrap()
    }

    #[tokio::test]
    async fn enqueue_and_dequeue_in_one_batch_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        let out = apply(&mut sm, vec![entry(1, vec![enqueue("a"), enqueue("b"), dequeue()])]).await;
        assert_eq!(
            out[0].replies,
            vec![
                Reply::Enqueued { seq: 1, duplicate: false },
                Reply::Enqueued { seq: 2, duplicate: false },
                Reply::Dequeued { seq: 1, event: "a".into() }
            ]
        );
        let reader = sm.reader();
        assert_eq!(reader.front("default").unwrap(), Some((2, "b".to_string())));
        let page = reader.events_after("default", 0, 10).unwrap();
        assert_eq!(page.events, vec![(1, "a".to_string()), (2, "b".to_string())]);
        assert_eq!((page.head, page.oldest), (2, 1));
    }

    #[tokio::test]
    async fn retention_deletes_old_bodies_even_within_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        let mut cmds: Vec<Command> = (0..5).map(|i| enqueue(&format!("e{i}"))).collect();
        cmds.extend((0..4).map(|_| dequeue()));
        let out = apply(&mut sm, vec![entry(1, cmds)]).await;
        assert_eq!(out[0].replies[8], Reply::Dequeued { seq: 4, event: "e3".into() });
        let page = sm.reader().events_after("default", 0, 10).unwrap();
        // retention 2: dequeued 3 and 4 kept, 5 pending.
        assert_eq!(page.oldest, 3);
        assert_eq!(page.events.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 4, 5]);
    }

    #[tokio::test]
    async fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut sm = open(dir.path());
            apply(
                &mut sm,
                vec![entry(1, vec![enqueue("a"), enqueue("b")]), entry(2, vec![dequeue()])],
            )
            .await;
        }
        let mut sm = open(dir.path());
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2));
        assert_eq!(sm.reader().front("default").unwrap(), Some((2, "b".to_string())));
        let out = apply(&mut sm, vec![entry(3, vec![enqueue("c")])]).await;
        assert_eq!(out[0].replies, vec![Reply::Enqueued { seq: 3, duplicate: false }]);
    }

    #[tokio::test]
    async fn snapshot_installs_into_a_fresh_node_and_is_isolated_from_later_applies() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        apply(&mut sm, vec![entry(1, vec![enqueue("a"), enqueue("b"), dequeue()])]).await;
        let mut builder = sm.get_snapshot_builder().await;
        // Applied after the builder was created: must not be in the snapshot.
        apply(&mut sm, vec![entry(2, vec![enqueue("late")])]).await;
        let snapshot = builder.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(1));

        let other = tempfile::tempdir().unwrap();
        let mut fresh = open(other.path());
        fresh.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
        let (applied, _) = fresh.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(1));
        let page = fresh.reader().events_after("default", 0, 10).unwrap();
        assert_eq!(page.events, vec![(1, "a".to_string()), (2, "b".to_string())]);
        assert_eq!(fresh.reader().front("default").unwrap(), Some((2, "b".to_string())));
        // Retention stamps travel with the events.
        assert_eq!(
            fresh.reader().stamp("default", 2).unwrap(),
            sm.reader().stamp("default", 2).unwrap()
        );
        assert!(fresh.reader().stamp("default", 2).unwrap().is_some());

        // The persisted snapshot is served after a restart.
        drop(sm);
        let mut reopened = open(dir.path());
        let current = reopened.get_current_snapshot().await.unwrap().expect("snapshot persisted");
        assert_eq!(current.meta.last_log_id.map(|l| l.index), Some(1));
    }

    /// Leases, policies, cursors, counters and dead letters live in the `sm`
    /// family: a snapshot carries them, and the installed node dumps the
    /// same bytes as the one that applied the entries.
    #[tokio::test]
    async fn work_queue_state_travels_in_snapshots_and_dumps_identically() {
        use crate::queue::QueuePolicy;
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        let q = || "default".to_owned();
        let policy = QueuePolicy {
            max_deliveries: Some(1),
            dead_letter: Some("dead".into()),
            lease_ttl_ms: Some(10),
        };
        let lease = |nonce| Command::Lease { queue: q(), max: 2, ttl_ms: None, nonce };
        let entries = vec![
            timed(1, 100, vec![Command::SetPolicy { queue: q(), policy }]),
            timed(
                2,
                100,
                vec![Command::EnqueueBatch {
                    queue: q(),
                    events: vec!["a".into(), "b".into(), "c".into()],
                    idempotency_key: Some("k".into()),
                    delay_ms: 0,
                }],
            ),
            timed(3, 100, vec![lease(1)]),
            timed(4, 200, vec![lease(2), enqueue("later")]),
            timed(
                5,
                200,
                vec![Command::SetCursor { queue: q(), group: "g".into(), seq: 2, if_seq: None }],
            ),
        ];
        let out = apply(&mut sm, entries).await;
        // Entry 4: seqs 1 and 2 expired at their only delivery and were
        // dead-lettered; 3 is leased ("later" comes after the lease).
        let Reply::Leased(leased) = &out[3].replies[0] else { panic!("{out:?}") };
        assert_eq!(leased.iter().map(|l| (l.seq, l.deliveries)).collect::<Vec<_>>(), [(3, 1)]);
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let other = tempfile::tempdir().unwrap();
        let mut fresh = open(other.path());
        fresh.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
        drop((sm, fresh));
        let dump = |dir: &Path| {
            serde_json::to_string(&crate::raft::dump::data_dir(dir, true).unwrap()).unwrap()
        };
        let (a, b) = (dump(dir.path()), dump(other.path()));
        assert_eq!(a, b);
        let json: serde_json::Value = serde_json::from_str(&a).unwrap();
        assert_eq!(json["work"]["default"]["dead_lettered"], 2);
        assert_eq!(json["work"]["default"]["leased"], 1);
        assert_eq!(json["policies"]["default"]["dead_letter"], "dead");
        assert_eq!(json["cursors"]["default"]["g"], 2);
        let dead = json["events"]["dead"]["1"].as_str().unwrap();
        let dead: serde_json::Value = serde_json::from_str(dead).unwrap();
        assert_eq!(dead["event"], "a");
    }

    #[tokio::test]
    async fn get_skips_a_leased_front_until_its_lease_expires_by_the_local_clock() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        let now = crate::raft::proposer::unix_ms();
        let lease =
            Command::Lease { queue: "default".into(), max: 1, ttl_ms: Some(60_000), nonce: 1 };
        apply(&mut sm, vec![timed(1, now, vec![enqueue("a"), enqueue("b"), lease])]).await;
        let reader = sm.reader();
        assert_eq!(reader.front("default").unwrap(), Some((2, "b".to_string())));
        assert_eq!(reader.front_at("default", now + 60_000).unwrap(), Some((1, "a".to_string())));
        assert_eq!(reader.work_stats("default").leased, 1);
    }

    /// The bytes of a snapshot openraft holds.
    async fn bytes_of(snapshot: SnapshotFile) -> Vec<u8> {
        let (mut file, _) = snapshot.into_parts().await;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    }

    /// Writes `bytes` into a new receiving file the way openraft's chunk
    /// receiver does: seek to each chunk's offset, write it, shut down.
    async fn receive(sm: &mut StateMachine, bytes: &[u8], chunk: usize) -> SnapshotFile {
        let mut data = sm.receive_snapshot().unwrap();
        for (i, part) in bytes.chunks(chunk).enumerate() {
            data.seek(std::io::SeekFrom::Start((i * chunk) as u64)).await.unwrap();
            data.write_all(part).await.unwrap();
        }
        data.shutdown().await.unwrap();
        data
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_corrupt_snapshot_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        apply(&mut sm, vec![entry(1, vec![enqueue("a")])]).await;
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let meta = snapshot.meta.clone();
        let bytes = bytes_of(snapshot.snapshot).await;
        let mut flipped = bytes.clone();
        let last = flipped.len() - 10;
        flipped[last] ^= 0xff;
        let torn = &bytes[..bytes.len() - 7];

        let other = tempfile::tempdir().unwrap();
        let mut fresh = with_mine(other.path()).await;
        for bad in [&flipped[..], torn] {
            let data = receive(&mut fresh, bad, 16).await;
            assert!(fresh.install_snapshot(&meta, data).await.is_err());
            assert_eq!(fresh.reader().front("default").unwrap(), Some((1, "mine".to_string())));
            assert!(fresh.get_current_snapshot().await.unwrap().is_none());
            // No marker, no current.snap, and the received file is gone.
            assert_eq!(files_in(&other.path().join("snapshots")), Vec::<String>::new());
        }
        drop(fresh);
        let reopened = open(other.path());
        assert_eq!(reopened.reader().front("default").unwrap(), Some((1, "mine".to_string())));
    }

    /// A node with 6 MiB of events (more than one batch of an install) and
    /// its snapshot: the node, its event count, the snapshot's meta and bytes.
    async fn big_snapshot(dir: &Path) -> (StateMachine, usize, SnapshotMeta, Vec<u8>) {
        let mut sm = open(dir);
        let body = "b".repeat(4096);
        let mut count = 0;
        for index in 1..=96 {
            let cmds: Vec<Command> = (0..16).map(|_| enqueue(&body)).collect();
            count += cmds.len();
            apply(&mut sm, vec![timed(index, index, cmds)]).await;
        }
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let bytes = bytes_of(snapshot.snapshot).await;
        (sm, count, snapshot.meta, bytes)
    }

    /// A node whose state is one event of its own.
    async fn with_mine(dir: &Path) -> StateMachine {
        let mut sm = open(dir);
        apply(&mut sm, vec![entry(1, vec![enqueue("mine")])]).await;
        sm
    }

    #[tokio::test]
    async fn a_large_snapshot_travels_through_files_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (sm, count, meta, bytes) = big_snapshot(dir.path()).await;
        assert!(bytes.len() > RESTORE_BATCH_BYTES + (1 << 20));
        let snap_dir = dir.path().join("snapshots");
        assert_eq!(files_in(&snap_dir), vec!["current.snap".to_string()]);
        assert_eq!(std::fs::read(snap_dir.join("current.snap")).unwrap(), bytes);

        let other = tempfile::tempdir().unwrap();
        let mut fresh = with_mine(other.path()).await;
        let data = receive(&mut fresh, &bytes, 1 << 20).await;
        fresh.install_snapshot(&meta, data).await.unwrap();

        assert_eq!(fresh.applied_state().await.unwrap().0, meta.last_log_id);
        let page = fresh.reader().events_after("default", 0, usize::MAX).unwrap();
        assert_eq!(page.events.len(), count);
        assert_eq!(page.events, sm.reader().events_after("default", 0, usize::MAX).unwrap().events);
        assert_eq!(
            fresh.reader().stamp("default", 7).unwrap(),
            sm.reader().stamp("default", 7).unwrap()
        );
        let other_dir = other.path().join("snapshots");
        assert_eq!(files_in(&other_dir), vec!["current.snap".to_string()]);
        assert_eq!(std::fs::read(other_dir.join("current.snap")).unwrap(), bytes);
        let current = fresh.get_current_snapshot().await.unwrap().expect("installed snapshot kept");
        assert_eq!(current.meta, meta);
        assert_eq!(bytes_of(current.snapshot).await, bytes);
    }

    /// Reads `inner`, then fails: a disk error (or a crash) mid-install.
    struct FailAfter<'a> {
        inner: &'a [u8],
        left: usize,
    }

    impl std::io::Read for FailAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::Error::other("cut short"));
            }
            let n = buf.len().min(self.left);
            let n = self.inner.read(&mut buf[..n])?;
            self.left -= n;
            Ok(n)
        }
    }

    #[tokio::test]
    async fn an_install_cut_short_between_batches_is_redone_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (sm, count, meta, bytes) = big_snapshot(dir.path()).await;

        let other = tempfile::tempdir().unwrap();
        let fresh = with_mine(other.path()).await;
        let snap_dir = other.path().join("snapshots");
        // Where an install stands once the file was validated and renamed.
        std::fs::write(snap_dir.join("current.snap"), &bytes).unwrap();
        let cut = FailAfter { inner: &bytes, left: bytes.len() / 2 };
        assert!(fresh.replace_state_from(cut, 64 << 10).is_err());
        assert!(snap_dir.join(RESTORING_MARKER).exists());
        drop(fresh);
        {
            // A mix: the new applied id (the `sm` family comes first) but
            // only some of the events, so only the marker tells.
            let db = db::open(&other.path().join("db")).unwrap();
            let applied = db.get_cf(db.cf_handle(keys::CF_SM).unwrap(), keys::SM_APPLIED);
            let applied: Option<LogId> =
                serde_json::from_slice(&applied.unwrap().unwrap()).unwrap();
            assert_eq!(applied, meta.last_log_id);
            let events =
                db.iterator_cf(db.cf_handle(keys::CF_EVENTS).unwrap(), IteratorMode::Start);
            let stored = events.count();
            assert!(stored > 0 && stored < count, "{stored} of {count} events stored");
        }

        let mut reopened = open(other.path());
        assert!(!snap_dir.join(RESTORING_MARKER).exists());
        assert_eq!(reopened.applied_state().await.unwrap().0, meta.last_log_id);
        let page = reopened.reader().events_after("default", 0, usize::MAX).unwrap();
        assert_eq!(page.events.len(), count);
        assert_eq!(page.events, sm.reader().events_after("default", 0, usize::MAX).unwrap().events);
    }

    #[tokio::test]
    async fn an_abandoned_receive_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        let data = receive(&mut sm, b"partial", 4).await;
        assert_eq!(files_in(&dir.path().join("snapshots")).len(), 1);
        drop(data);
        assert_eq!(files_in(&dir.path().join("snapshots")), Vec::<String>::new());
    }

    #[tokio::test]
    async fn stamps_do_not_depend_on_how_entries_were_batched() {
        let entries = || {
            vec![
                timed(1, 1_000, vec![enqueue("aaa"), enqueue("bb")]),
                // A new leader whose clock is behind: times stay monotonic.
                timed(2, 900, vec![dequeue(), dequeue(), enqueue("c")]),
                timed(3, 2_000, vec![enqueue("dddd")]),
            ]
        };
        let (one, many) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut batched = open(one.path());
        apply(&mut batched, entries()).await;
        let mut single = open(many.path());
        for e in entries() {
            apply(&mut single, vec![e]).await;
        }
        let stamp = |time_ms, start, end| Some(EventStamp { time_ms, start, end });
        let expected =
            vec![stamp(1_000, 0, 3), stamp(1_000, 3, 5), stamp(1_000, 5, 6), stamp(2_000, 6, 10)];
        assert_eq!(stamps_of(&batched, 1..=4), expected);
        assert_eq!(stamps_of(&single, 1..=4), expected);
    }

    #[tokio::test]
    async fn compact_deletes_bodies_and_stamps_but_not_pending_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        let mut cmds: Vec<Command> = (0..5).map(|i| enqueue(&format!("e{i}"))).collect();
        cmds.extend((0..3).map(|_| dequeue()));
        apply(&mut sm, vec![timed(1, 10, cmds)]).await;
        let compact = |upto| Command::Compact { queue: "default".into(), upto };
        let out = apply(&mut sm, vec![timed(2, 20, vec![compact(3), compact(99)])]).await;
        assert_eq!(
            out[0].replies,
            vec![
                Reply::Compacted { oldest: 3, dropped: 2 },
                Reply::Compacted { oldest: 4, dropped: 1 }
            ]
        );
        let page = sm.reader().events_after("default", 0, 10).unwrap();
        assert_eq!(page.oldest, 4);
        assert_eq!(page.events.iter().map(|e| e.0).collect::<Vec<_>>(), vec![4, 5]);
        let stamps = stamps_of(&sm, 1..=5);
        assert_eq!(stamps[..3], [None, None, None]);
        assert!(stamps[3..].iter().all(Option::is_some));
        // The chain continues across the compaction.
        apply(&mut sm, vec![timed(3, 30, vec![enqueue("x")])]).await;
        assert_eq!(sm.reader().stamp("default", 6).unwrap().map(|s| s.start), Some(10));
    }

    #[tokio::test]
    async fn a_page_stops_at_its_byte_budget_but_holds_at_least_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        let big = "x".repeat(100);
        apply(&mut sm, vec![timed(1, 0, vec![enqueue(&big), enqueue(&big), enqueue("s")])]).await;
        let reader = sm.reader();
        assert_eq!(reader.events_page("default", 0, 10, 150).unwrap().events.len(), 2);
        assert_eq!(reader.events_page("default", 0, 10, 1).unwrap().events.len(), 1);
        assert_eq!(reader.events_page("default", 2, 10, 1).unwrap().events, vec![(3, "s".into())]);
    }

    fn maze_entry(index: u64, command: MazeCommand) -> Entry {
        let mut e = entry(index, vec![]);
        if let EntryPayload::Normal(request) = &mut e.payload {
            request.ops = vec![Op::Maze(command)];
        }
        e
    }

    /// Issue 10's amplification through the real apply path: the status
    /// updates of a user with thousands of followers reach the one follower
    /// connected here, in order, and nobody else; the others are counted.
    #[tokio::test]
    async fn maze_status_updates_reach_the_connected_followers_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        let registry = Registry::new(1000);
        let (_, mut seven) = registry.register(7);
        let (_, mut stranger) = registry.register(8);
        sm.set_maze_sink(registry.clone());

        let follows: Vec<String> = (1..=5000u64)
            .map(|seq| format!("{seq}|F|{}|42\n", 1000 + seq))
            .chain(["5001|F|7|42\n".to_string()])
            .collect();
        let statuses: Vec<String> = (5002..=5101u64).map(|seq| format!("{seq}|S|42\n")).collect();
        apply(
            &mut sm,
            vec![
                maze_entry(1, MazeCommand::Reset),
                maze_entry(2, MazeCommand::Lines { epoch: 1, lines: follows }),
                maze_entry(3, MazeCommand::Lines { epoch: 1, lines: statuses.clone() }),
            ],
        )
        .await;

        let got: Vec<String> = std::iter::from_fn(|| seven.try_recv().ok())
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        assert_eq!(got, statuses);
        assert!(stranger.try_recv().is_err(), "8 follows nobody");
        let dropped = registry.counters.notifications_dropped.load(Ordering::Relaxed);
        assert_eq!(dropped, 5001 + 100 * 5000, "the follows to 42 and 42's other followers");
        assert_eq!(sm.reader().maze_status().next_seq, 5102);
    }

    #[tokio::test]
    async fn applies_are_signalled_after_they_are_readable() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        let reader = sm.reader();
        let mut applied = reader.subscribe_applied();
        apply(&mut sm, vec![entry(1, vec![enqueue("a")])]).await;
        applied.changed().await.unwrap();
        assert_eq!(applied.borrow_and_update().map(|l| l.index), Some(1));
        assert_eq!(reader.queue("default").map(|m| m.head()), Some(1));
    }

    /// `raftq dump`'s view of a data dir written through the state machine.
    #[tokio::test]
    async fn dump_prints_a_stopped_nodes_state_through_the_core() {
        let dir = tempfile::tempdir().unwrap();
        let keyed = Command::Enqueue {
            queue: "jobs".into(),
            event: "j1".into(),
            idempotency_key: Some("k".into()),
        };
        {
            let mut sm = open(dir.path());
            let mut maze = maze_entry(3, MazeCommand::Reset);
            if let EntryPayload::Normal(request) = &mut maze.payload {
                request.ops.push(Op::Maze(MazeCommand::Lines {
                    epoch: 1,
                    lines: vec!["1|F|7|42\n".into(), "3|B\n".into()],
                }));
                request.ops.push(Op::RetireNode { id: 5 });
            }
            apply(
                &mut sm,
                vec![
                    entry(1, vec![enqueue("a"), enqueue("b"), dequeue(), keyed]),
                    entry(2, vec![Command::AllocSeq { name: "ids".into(), count: 10 }]),
                    maze,
                ],
            )
            .await;
        }
        let dump = super::super::dump::data_dir(dir.path(), true).unwrap();
        let json = serde_json::to_value(&dump).unwrap();
        assert_eq!(json["last_applied"]["index"], 3);
        assert_eq!(json["queues"]["default"]["front"], 2);
        assert_eq!(json["queues"]["default"]["pending"], 1);
        assert_eq!(json["queues"]["jobs"]["next"], 2);
        assert_eq!(json["sequences"]["ids"], 11);
        assert_eq!(json["idempotency"][0]["key"], "k");
        assert_eq!(json["retired"], serde_json::json!([5]));
        assert_eq!(json["maze"]["epoch"], 1);
        assert_eq!(json["maze"]["next"], 2);
        assert_eq!(json["maze"]["pending"]["3"], "3|B\n");
        assert_eq!(json["maze"]["follows"]["42"], serde_json::json!([7]));
        assert_eq!(json["events"]["default"]["1"], "a");
        assert_eq!(json["events"]["jobs"]["1"], "j1");
        assert!(json.get("install_interrupted").is_none());
        // Without --events, no bodies; the same state either way.
        let plain = super::super::dump::data_dir(dir.path(), false).unwrap();
        assert!(plain.events.is_none());
        assert_eq!(plain.state, dump.state);
        // The dump opened read-only: the node still opens and agrees.
        let sm = open(dir.path());
        assert_eq!(sm.reader().queue("jobs").map(|m| m.next), Some(2));
    }

    #[test]
    fn dump_refuses_a_dir_without_data() {
        let dir = tempfile::tempdir().unwrap();
        let err = super::super::dump::data_dir(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("holds no node's data"), "{err}");
    }
}
