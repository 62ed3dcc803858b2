//! Group commit on the SQLite store: concurrent writers leave one verifying chain with every event,
//! writes queued together commit in one transaction where a failing write fails alone, and a
//! transaction that does not commit acknowledges none of its writes.

use std::collections::BTreeSet;
use std::sync::mpsc;

use rusqlite::{Connection, params};

use super::audit::append_in;
use super::switches::add_counters_in;
use super::writer::Step;
use super::{SqliteStore, audit_err, meta_err};
use crate::domain::audit::verify_chain;
use crate::domain::{AuditDraft, AuditEvent, Outcome};
use crate::ports::{AuditLog, AuditQuery, BUSINESS_COUNTERS, MetaStore};

fn draft(stream: &str, n: usize) -> AuditDraft {
    AuditDraft {
        stream: stream.into(),
        actor: format!("ada@tok_{n:016x}"),
        action: "blob.link".into(),
        entity_type: "blob".into(),
        entity_id: format!("sha256:{n:064x}"),
        outcome: Outcome::Success,
        request_id: format!("req-{n}"),
        details: serde_json::json!({"n": n}),
    }
}

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("helix.db")).unwrap();
    (dir, store)
}

async fn stream(store: &SqliteStore, name: &str) -> Vec<AuditEvent> {
    let q = AuditQuery { stream: name.into(), limit: 100_000, ..Default::default() };
    store.query(&q).await.unwrap()
}

/// Holds the writer inside a first write until `release` is sent, so the writes queued meanwhile are
/// taken together as the next group.
async fn hold_writer(store: &SqliteStore) -> (mpsc::Sender<()>, impl Future<Output = crate::error::Result<()>>) {
    let (started_tx, started) = mpsc::channel();
    let (release, held) = mpsc::channel::<()>();
    let holder = store.write(meta_err, move |_| {
        started_tx.send(()).unwrap();
        held.recv().unwrap();
        Ok(Step::Keep(()))
    });
    tokio::task::spawn_blocking(move || started.recv().unwrap()).await.unwrap();
    (release, holder)
}

fn audit_counter(path: &std::path::Path) -> i64 {
    let c = Connection::open(path).unwrap();
    c.query_row(
        "SELECT value FROM counters WHERE name = ?1",
        params![format!("{BUSINESS_COUNTERS}|audit_events")],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_writers_on_one_stream_leave_every_event_in_a_chain_that_verifies() {
    let (dir, store) = open();
    const N: usize = 150;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..N {
                    let event = store.append(draft("team-a", w * N + n)).await.unwrap();
                    assert_eq!(event.entity_id, format!("sha256:{:064x}", w * N + n));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let events = stream(&store, "team-a").await;
    assert_eq!(events.len(), 8 * N, "every acknowledged append is in the stream, once");
    verify_chain(&events).expect("one chain, seq 1.. without gaps, each linked to the one before");
    let ids: BTreeSet<_> = events.iter().map(|e| e.entity_id.clone()).collect();
    assert_eq!(ids.len(), 8 * N, "no event twice, none lost");
    assert_eq!(audit_counter(&dir.path().join("helix.db")), (8 * N) as i64, "the counter moved once per event");
    assert!(store.write_groups() <= (8 * N) as u64);
}

#[tokio::test]
async fn a_failing_write_inside_a_group_fails_alone_and_the_group_commits_once() {
    let (dir, store) = open();
    let path = dir.path().join("helix.db");
    let (release, holder) = hold_writer(&store).await;
    let groups = store.write_groups();
    // Queued behind the holder, in this order: one group.
    let first = store.write(audit_err, |c| Ok(Step::Keep(append_in(c, draft("team-a", 1), None)?)));
    // A uniqueness check that must fail: seq 1 of the stream is the first append's, in this
    // transaction. Its counter move before the failing insert is rolled back with it.
    let duplicate = store.write(audit_err, |c| {
        add_counters_in(c, BUSINESS_COUNTERS, &[("audit_events".into(), 1000)])?;
        c.execute("INSERT INTO audit_events (stream, seq, ts, event, hash) VALUES ('team-a', 1, 'x', '{}', 'x')", [])?;
        Ok(Step::Keep(()))
    });
    let panics = store.write(meta_err, |c| -> rusqlite::Result<Step<()>> {
        add_counters_in(c, BUSINESS_COUNTERS, &[("audit_events".into(), 1000)])?;
        panic!("a bug in a write")
    });
    // A write that asks for its rows to be undone (a change already in effect) answers, writes nothing.
    let undone = store.write(meta_err, |c| {
        add_counters_in(c, BUSINESS_COUNTERS, &[("audit_events".into(), 1000)])?;
        Ok(Step::Undo(7))
    });
    let second = store.write(audit_err, |c| Ok(Step::Keep(append_in(c, draft("team-a", 2), None)?)));
    release.send(()).unwrap();
    holder.await.unwrap();

    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!((first.seq, second.seq), (1, 2));
    let err = duplicate.await.expect_err("the duplicate (stream, seq) is refused").to_string();
    assert!(err.contains("UNIQUE"), "{err}");
    assert!(panics.await.is_err(), "a write that panics is answered with an error");
    assert_eq!(undone.await.unwrap(), 7);
    assert_eq!(store.write_groups(), groups + 2, "the holder's transaction, then one for the five writes");

    // What another connection sees: the two appends, committed; nothing of the failed or undone ones.
    let events = stream(&store, "team-a").await;
    assert_eq!(events, vec![first, second]);
    verify_chain(&events).unwrap();
    assert_eq!(audit_counter(&path), 2);
}

#[tokio::test]
async fn a_transaction_rolled_back_under_its_writes_acknowledges_none_of_them() {
    let (dir, store) = open();
    let (release, holder) = hold_writer(&store).await;
    let before = store.write(audit_err, |c| Ok(Step::Keep(append_in(c, draft("team-a", 1), None)?)));
    // What SQLite does on an I/O error or a full disk: the whole transaction is rolled back.
    let breaks = store.write(meta_err, |c| {
        c.execute_batch("ROLLBACK")?;
        Ok(Step::Keep(()))
    });
    let after = store.write(audit_err, |c| Ok(Step::Keep(append_in(c, draft("team-a", 2), None)?)));
    release.send(()).unwrap();
    holder.await.unwrap();

    assert!(before.await.is_err(), "its rows were rolled back: not acknowledged");
    assert!(breaks.await.is_err());
    let after = after.await.expect("a write after the rollback commits in a new transaction");
    assert_eq!(after.seq, 1, "the rolled-back append left no head behind");
    assert_eq!(stream(&store, "team-a").await, vec![after]);
    assert_eq!(audit_counter(&dir.path().join("helix.db")), 1);
}

/// Group commit does not trade durability: the writer's connection is in WAL mode with
/// `synchronous=FULL` (the WAL is fsynced at every COMMIT, before any write of it is answered).
#[tokio::test]
async fn the_writer_commits_with_a_full_fsync_in_wal_mode() {
    let (_dir, store) = open();
    let (sync, mode) = store
        .write(meta_err, |c| {
            let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            Ok(Step::Keep((sync, mode)))
        })
        .await
        .unwrap();
    assert_eq!((sync, mode.as_str()), (2, "wal"), "2 is FULL");
    MetaStore::check(&store).await.unwrap();
    AuditLog::check(&store).await.unwrap();
}

/// `append_many` (the read records' drain): many events of two streams in one step, interleaved with
/// single appends from another writer; each stream stays one chain in draft order, and the counter
/// moves once per event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_events_appended_in_one_step_stay_one_chain_per_stream_beside_single_appends() {
    let (dir, store) = open();
    let single = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..50 {
                store.append(draft("team-a", 10_000 + n)).await.unwrap();
            }
        })
    };
    for round in 0..10 {
        let drafts: Vec<AuditDraft> = (0..20usize)
            .map(|n| draft(if n.is_multiple_of(2) { "team-a" } else { "team-b" }, round * 20 + n))
            .collect();
        let (events, stopped) = store.append_many(drafts.clone()).await;
        assert!(stopped.is_none(), "{stopped:?}");
        let ids: Vec<_> = events.iter().map(|e| e.entity_id.clone()).collect();
        assert_eq!(ids, drafts.iter().map(|d| d.entity_id.clone()).collect::<Vec<_>>(), "in draft order");
    }
    single.await.unwrap();
    let a = stream(&store, "team-a").await;
    let b = stream(&store, "team-b").await;
    assert_eq!((a.len(), b.len()), (100 + 50, 100));
    verify_chain(&a).expect("team-a: one chain");
    verify_chain(&b).expect("team-b: one chain");
    let order: Vec<_> = b.iter().map(|e| e.entity_id.clone()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "team-b's events in the order they were drafted");
    assert_eq!(audit_counter(&dir.path().join("helix.db")), 250, "the counter moved once per event");
}
