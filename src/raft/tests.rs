//! openraft's storage conformance suite against the RocksDB stores, plus
//! restart and snapshot checks of our own.

use openraft::testing::{StoreBuilder, Suite};

use super::db;
use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::types::{StorageError, TypeConfig};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db::open(&dir.path().join("db")).expect("open rocksdb");
        let sm = StateMachine::open(db.clone(), &dir.path().join("snapshots"))
            .expect("open state machine");
        Ok((dir, LogStore::new(db), sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(RocksBuilder).expect("storage suite");
}

mod state_machine {
    use std::path::Path;

    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};

    use super::super::db;
    use super::super::state_machine::StateMachine;
    use super::super::types::{Entry, LogId, Op, Reply, Request, Response};
    use crate::queue::{Command, EventStamp, Limits};

    fn open(dir: &Path) -> StateMachine {
        let db = db::open(&dir.join("db")).unwrap();
        StateMachine::open(db, &dir.join("snapshots")).unwrap()
    }

    fn entry(index: u64, commands: Vec<Command>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
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
        sm.apply(entries).await.unwrap()
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

    #[tokio::test]
    async fn a_corrupt_snapshot_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = open(dir.path());
        apply(&mut sm, vec![entry(1, vec![enqueue("a")])]).await;
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut bytes = snapshot.snapshot.into_inner();
        let last = bytes.len() - 10;
        bytes[last] ^= 0xff;

        let other = tempfile::tempdir().unwrap();
        let mut fresh = open(other.path());
        apply(&mut fresh, vec![entry(1, vec![enqueue("mine")])]).await;
        let res =
            fresh.install_snapshot(&snapshot.meta, Box::new(std::io::Cursor::new(bytes))).await;
        assert!(res.is_err());
        assert_eq!(fresh.reader().front("default").unwrap(), Some((1, "mine".to_string())));
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
}
