//! Group commit: one writer thread owns the write connection and commits the writes that wait for it
//! together, so concurrent writes share one WAL fsync (`synchronous=FULL`).
//!
//! A write is a closure over the connection. The thread takes every write queued (up to
//! `MAX_GROUP`; waiting up to `GATHER_WAIT` for as many as its last group had), opens one `BEGIN IMMEDIATE` transaction, runs each write in its own `SAVEPOINT`
//! (a write that fails, or asks to undo, is rolled back to its savepoint and fails alone), then
//! `COMMIT`s, and only after COMMIT has returned (its fsync done) answers every waiter. A write whose
//! group does not commit (COMMIT fails, or SQLite rolled the whole transaction back after an I/O
//! error) is answered with that error, never with success; a crash before COMMIT answers nothing.
//! Writes run in the order they were queued, each after the previous one's rows: an audit append
//! reads its stream's head inside the transaction, so the chain order is the queue order.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// The most writes one transaction takes; a longer queue is committed in several groups.
const MAX_GROUP: usize = 512;

/// How long the writer waits for the writes it expects before it commits fewer. Writers that await
/// their answers come back one after the other once answered: without the wait, the first one back
/// commits alone (a fsync for one write) while the others queue behind it. A lone writer (its last
/// group was one write) never waits.
const GATHER_WAIT: Duration = Duration::from_micros(300);

/// What a write asks for its rows: keep them (committed with the group) or undo them (rolled back to
/// its savepoint; the value is still its answer, e.g. a change already in effect).
pub(super) enum Step<T> {
    Keep(T),
    Undo(T),
}

/// A queued write, its type erased: run it in the group's transaction, fail it if its group does not
/// commit, answer its waiter.
trait Pending: Send {
    /// Run in a savepoint; true when its rows are in the transaction (they depend on COMMIT).
    fn run(&mut self, conn: &Connection);
    /// The group did not commit: a write that succeeded (its rows kept, or undone on what the
    /// transaction held) is answered with `why`; a write that failed keeps its own error.
    fn fail(&mut self, why: &rusqlite::Error);
    fn answer(self: Box<Self>);
}

type Work<T> = Box<dyn FnOnce(&Connection) -> rusqlite::Result<Step<T>> + Send>;

struct Job<T> {
    work: Option<Work<T>>,
    on_err: fn(rusqlite::Error) -> Error,
    outcome: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

/// A copy of a SQLite error (one error fails every write of a group), its result code kept.
fn copy_err(e: &rusqlite::Error) -> rusqlite::Error {
    match e.sqlite_error() {
        Some(code) => rusqlite::Error::SqliteFailure(*code, Some(e.to_string())),
        None => rusqlite::Error::InvalidParameterName(e.to_string()),
    }
}

impl<T: Send> Pending for Job<T> {
    fn run(&mut self, conn: &Connection) {
        let Some(work) = self.work.take() else { return };
        // Cached statements: a savepoint per write is parsed once per connection, not per write.
        let exec = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ());
        if let Err(e) = exec("SAVEPOINT helix_write") {
            self.outcome = Some(Err((self.on_err)(e)));
            return;
        }
        let undo = |conn: &Connection| {
            conn.execute_batch("ROLLBACK TO helix_write; RELEASE helix_write").or_else(|e| {
                // Nothing to roll back to when SQLite already rolled the whole transaction back.
                if conn.is_autocommit() { Ok(()) } else { Err(e) }
            })
        };
        let (outcome, keep) = match catch_unwind(AssertUnwindSafe(|| work(conn))) {
            Ok(Ok(Step::Keep(v))) => (Ok(v), true),
            Ok(Ok(Step::Undo(v))) => (Ok(v), false),
            Ok(Err(e)) => (Err((self.on_err)(e)), false),
            Err(_) => (Err(Error::Internal("a database write panicked; it was rolled back".into())), false),
        };
        let closed = if keep { exec("RELEASE helix_write") } else { undo(conn) };
        self.outcome = Some(match closed {
            Ok(()) => outcome,
            Err(e) => Err((self.on_err)(e)),
        });
    }

    fn fail(&mut self, why: &rusqlite::Error) {
        if !matches!(self.outcome, Some(Err(_))) {
            self.outcome = Some(Err((self.on_err)(copy_err(why))));
        }
    }

    fn answer(self: Box<Self>) {
        let outcome = self.outcome.unwrap_or_else(|| Err(Error::Internal("a database write did not run".into())));
        let _ = self.reply.send(outcome);
    }
}

/// The writer thread and its queue; dropping the last handle lets the thread finish the queue, close
/// the connection and end.
pub(super) struct Writer {
    queue: Option<mpsc::Sender<Box<dyn Pending>>>,
    thread: Option<JoinHandle<()>>,
    groups: Arc<AtomicU64>,
}

impl Writer {
    pub(super) fn start(conn: Connection) -> std::io::Result<Writer> {
        let (queue, rx) = mpsc::channel::<Box<dyn Pending>>();
        let groups = Arc::new(AtomicU64::new(0));
        let counted = groups.clone();
        let thread = std::thread::Builder::new().name("helix-sqlite-writer".into()).spawn(move || {
            // As many writes as the last group had: its writers, answered, are likely to write again.
            let mut expected = 1;
            while let Ok(first) = rx.recv() {
                let mut group = vec![first];
                let until = Instant::now() + GATHER_WAIT;
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(job) => group.push(job),
                        Err(mpsc::TryRecvError::Empty) if group.len() < expected => {
                            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                                Ok(job) => group.push(job),
                                Err(_) => break,
                            }
                        }
                        Err(_) => break,
                    }
                }
                expected = group.len();
                commit_group(&conn, &mut group);
                counted.fetch_add(1, Ordering::Relaxed);
                for job in group {
                    job.answer();
                }
            }
        })?;
        Ok(Writer { queue: Some(queue), thread: Some(thread), groups })
    }

    /// Queue a write; the answer comes once its group has committed (or failed).
    pub(super) fn write<T: Send + 'static>(
        &self,
        on_err: fn(rusqlite::Error) -> Error,
        work: impl FnOnce(&Connection) -> rusqlite::Result<Step<T>> + Send + 'static,
    ) -> impl Future<Output = Result<T>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let job = Job { work: Some(Box::new(work)), on_err, outcome: None, reply };
        let stopped = move || on_err(rusqlite::Error::InvalidParameterName("the database writer has stopped".into()));
        let queued = self.queue.as_ref().is_some_and(|q| q.send(Box::new(job)).is_ok());
        async move {
            if !queued {
                return Err(stopped());
            }
            answer.await.unwrap_or_else(|_| Err(stopped()))
        }
    }

    /// Transactions committed (or attempted) so far: fewer than the writes when they shared commits.
    pub(super) fn groups(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One transaction for the group: each write in its savepoint, then COMMIT. The writes of a
/// transaction that does not commit are failed (but for those that failed on their own).
fn commit_group(conn: &Connection, group: &mut [Box<dyn Pending>]) {
    let begin = |rest: &mut [Box<dyn Pending>]| match conn.execute_batch("BEGIN IMMEDIATE") {
        Ok(()) => true,
        Err(e) => {
            rest.iter_mut().for_each(|job| job.fail(&e));
            false
        }
    };
    if !begin(group) {
        return;
    }
    let mut open_from = 0; // the first write of the open transaction
    for i in 0..group.len() {
        group[i].run(conn);
        if conn.is_autocommit() {
            // SQLite rolled the transaction back (an I/O error, a full disk): none of its writes is in.
            let why = rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                Some("the group's transaction was rolled back by an error of another write".into()),
            );
            group[open_from..=i].iter_mut().for_each(|job| job.fail(&why));
            open_from = i + 1;
            if open_from < group.len() && !begin(&mut group[open_from..]) {
                return;
            }
        }
    }
    if open_from == group.len() {
        return;
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        group[open_from..].iter_mut().for_each(|job| job.fail(&e));
    }
}
