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
    use crate::queue::{Command, Limits};

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
            }),
        }
    }

    fn enqueue(event: &str) -> Command {
        Command::Enqueue { queue: "default".into(), event: event.into(), idempotency_key: None }
    }

    fn dequeue() -> Command {
        Command::Dequeue { queue: "default".into(), expect_seq: None }
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
}
