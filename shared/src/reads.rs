//! Who read what (docs/decisions.md, "Read auditing"): every read by a principal (a blob's GET or
//! HEAD, a version's GET, a proof URL's fetch) becomes an audit event (`blob.read`, `bundle.read`) in
//! the stream of the workspace read, with the actor, the request id and the outcome. Reads are
//! recorded off the request's critical path:
//! - on Lambda (`Sink::Log`) each read is one JSON line on stderr (no store call on the read); a
//!   CloudWatch Logs subscription delivers the lines to the `audit-ingest` function, which appends
//!   them once each (`ingest`, keyed by the log event id);
//! - on `helix serve` (`Sink::Queue`) a bounded in-process queue, drained in batches by a background
//!   task through `AuditLog::append` (the SQLite writer commits a batch in one transaction), flushed
//!   on shutdown. A full queue holds the read back (up to `QUEUE_WAIT`), then the record is logged as
//!   an error line and counted (`helix_read_records_dropped_total`), and the read is answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::domain::{AuditDraft, Outcome, WorkspaceId};
use crate::error::Error;
use crate::ports::AuditLog;

pub const BLOB_READ: &str = "blob.read";
pub const BUNDLE_READ: &str = "bundle.read";
/// The actions a read record may carry (the ingest refuses any other).
pub const READ_ACTIONS: [&str; 2] = [BLOB_READ, BUNDLE_READ];
/// The top-level `message` of a read record's log line (the subscription filter's pattern).
pub const LOG_MESSAGE: &str = "helix.read";
/// The actor of a proof URL's fetch (the URL is its own credential: it names no one).
pub const PROOF_URL_ACTOR: &str = "proof-url";
/// Records the local queue holds before a read waits for room.
pub const QUEUE_CAPACITY: usize = 4096;
/// How long a read waits for room in a full queue before its record is dropped (and counted).
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);
/// Records one batch appends at most (one SQLite transaction).
const BATCH: usize = 256;
/// Attempts at appending one record before it is dropped (and counted).
const APPEND_ATTEMPTS: u32 = 3;

/// One read, as recorded: everything of its audit event but its place in the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadRecord {
    pub workspace: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub actor: String,
    pub outcome: Outcome,
    pub request_id: String,
    pub details: Value,
}

impl ReadRecord {
    /// A read of `entity_id` in `ws` answered with `result`: success, `denied` for a refusal of the
    /// credential (role, workspace, suspension, an invalid or expired proof grant), `failed` for
    /// anything else (not found, an outage); the status and problem reason in `details`.
    pub fn new(
        ws: &WorkspaceId,
        action: &str,
        entity_id: String,
        actor: &str,
        request_id: &str,
        failure: Option<Failure<'_>>,
        mut details: Value,
    ) -> ReadRecord {
        let entity_type = if action == BUNDLE_READ { "bundle_version" } else { "blob" };
        let outcome = match failure {
            None => Outcome::Success,
            Some(f) => {
                details["status"] = json!(f.status);
                details["reason"] = json!(f.reason);
                if is_refusal(f.error) { Outcome::Denied } else { Outcome::Failed }
            }
        };
        ReadRecord {
            workspace: ws.to_string(),
            action: action.to_owned(),
            entity_type: entity_type.to_owned(),
            entity_id,
            actor: actor.to_owned(),
            outcome,
            request_id: request_id.to_owned(),
            details,
        }
    }

    pub fn draft(self) -> AuditDraft {
        AuditDraft {
            stream: self.workspace,
            actor: self.actor,
            action: self.action,
            entity_type: self.entity_type,
            entity_id: self.entity_id,
            outcome: self.outcome,
            request_id: self.request_id,
            details: self.details,
        }
    }

    /// The record's log line (`Sink::Log`): `{"message":"helix.read","read":{...}}`.
    pub fn log_line(&self) -> String {
        json!({"message": LOG_MESSAGE, "read": self}).to_string()
    }

    /// A read record from a log line, checked as untrusted input: the line must be one `log_line`
    /// wrote, its workspace a workspace id, its action a read action, every text field short and
    /// printable. None for any other line (the subscription may deliver others).
    pub fn from_log_line(line: &str) -> Option<ReadRecord> {
        let v: Value = serde_json::from_str(line.trim()).ok()?;
        if v.get("message")?.as_str()? != LOG_MESSAGE {
            return None;
        }
        let r: ReadRecord = serde_json::from_value(v.get("read")?.clone()).ok()?;
        let texts = [&r.actor, &r.entity_id, &r.request_id, &r.entity_type];
        let ok = WorkspaceId::parse(&r.workspace).is_ok()
            && READ_ACTIONS.contains(&r.action.as_str())
            && texts.iter().all(|t| crate::domain::is_safe_text(t, 512))
            && r.details.is_object()
            && r.details.to_string().len() <= 4096;
        ok.then_some(r)
    }
}

/// Why a read was not answered: the error and its problem status and reason.
#[derive(Clone, Copy)]
pub struct Failure<'a> {
    pub error: &'a Error,
    pub status: u16,
    pub reason: &'a str,
}

/// A refusal of the credential (outcome `denied`), as opposed to a read that failed.
fn is_refusal(e: &Error) -> bool {
    matches!(
        e,
        Error::InsufficientRole { .. }
            | Error::ForbiddenWorkspace
            | Error::WorkspaceSuspended { .. }
            | Error::ProofInvalid(_)
            | Error::ProofExpired
    )
}

/// Where this process's read records go.
enum Sink {
    /// HELIX_AUDIT_READS=off.
    Off,
    /// A log line each (Lambda).
    Log,
    /// The local queue.
    Queue(mpsc::Sender<ReadRecord>),
}

/// What the queue's counters share with its drain task.
#[derive(Default)]
struct Counts {
    queued: AtomicU64,
    done: AtomicU64,
    dropped: AtomicU64,
    progress: Notify,
}

pub struct ReadAudit {
    sink: Sink,
    counts: Arc<Counts>,
}

impl ReadAudit {
    pub fn off() -> ReadAudit {
        ReadAudit { sink: Sink::Off, counts: Arc::default() }
    }

    pub fn log() -> ReadAudit {
        ReadAudit { sink: Sink::Log, counts: Arc::default() }
    }

    /// The local queue and its drain task (spawned on the current runtime).
    pub fn queue(audit: Arc<dyn AuditLog>) -> ReadAudit {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let counts: Arc<Counts> = Arc::default();
        tokio::spawn(drain(rx, audit, counts.clone()));
        ReadAudit { sink: Sink::Queue(tx), counts }
    }

    pub fn enabled(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    /// Record one read. Never fails the read: a record that cannot be queued is logged and counted.
    pub async fn record(&self, record: ReadRecord) {
        match &self.sink {
            Sink::Off => {}
            Sink::Log => write_line(&record.log_line()),
            Sink::Queue(tx) => {
                self.counts.queued.fetch_add(1, Ordering::SeqCst);
                if let Err(e) = tx.send_timeout(record, QUEUE_WAIT).await {
                    let record = match e {
                        mpsc::error::SendTimeoutError::Timeout(r) | mpsc::error::SendTimeoutError::Closed(r) => r,
                    };
                    give_up(&self.counts, &record, "the read audit queue stayed full");
                }
            }
        }
    }

    /// Records dropped by this process (queue full, or the audit log failed every attempt).
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::SeqCst)
    }

    /// Wait until every record queued so far is stored (or dropped), at most `timeout`; true when
    /// none is left. `helix serve` calls it on shutdown; tests before they search the trail.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let target = self.counts.queued.load(Ordering::SeqCst);
        let wait = async {
            loop {
                let notified = self.counts.progress.notified();
                if self.counts.done.load(Ordering::SeqCst) >= target {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// One line on stderr in a single write (a pipe keeps a write of up to 4 KiB whole), outside the
/// tracing filter: RUST_LOG never silences a read record.
fn write_line(line: &str) {
    use std::io::Write;
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let _ = std::io::stderr().lock().write_all(buf.as_bytes());
}

fn give_up(counts: &Counts, record: &ReadRecord, why: &str) {
    counts.dropped.fetch_add(1, Ordering::SeqCst);
    counts.done.fetch_add(1, Ordering::SeqCst);
    counts.progress.notify_waiters();
    // The record itself stays in the log: an operator can still see (and re-append) it.
    tracing::error!(read = %record.log_line(), why, "read record not stored in the audit trail");
}

/// The queue's drain: take what waits (up to `BATCH`), append it all at once (`append_many`: the
/// SQLite writer appends the batch in one step of one transaction, in queue order); when that fails,
/// each record of it on its own, retried; count what could not be stored.
async fn drain(mut rx: mpsc::Receiver<ReadRecord>, audit: Arc<dyn AuditLog>, counts: Arc<Counts>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let drafts = batch.iter().map(|r| r.clone().draft()).collect();
        let (appended, stopped) = audit.append_many(drafts).await;
        counts.done.fetch_add(appended.len() as u64, Ordering::SeqCst);
        if stopped.is_none() {
            batch.clear();
            counts.progress.notify_waiters();
            continue;
        }
        let appends = batch.drain(appended.len()..).map(|r| {
            let audit = audit.clone();
            async move {
                for attempt in 0..APPEND_ATTEMPTS {
                    match audit.append(r.clone().draft()).await {
                        Ok(_) => return None,
                        Err(_) if attempt + 1 < APPEND_ATTEMPTS => {
                            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                        }
                        Err(e) => return Some((r, e)),
                    }
                }
                None
            }
        });
        let failed = futures_util::future::join_all(appends).await;
        let mut stored = 0;
        for f in failed {
            match f {
                None => stored += 1,
                Some((r, e)) => give_up(&counts, &r, &e.to_string()),
            }
        }
        counts.done.fetch_add(stored, Ordering::SeqCst);
        counts.progress.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ReadRecord {
        let ws = WorkspaceId::parse("team-a").unwrap();
        let f = Failure { error: &Error::ForbiddenWorkspace, status: 403, reason: "forbidden_workspace" };
        ReadRecord::new(&ws, BLOB_READ, "sha256:ab".into(), "bob@tok_1", "req-1", Some(f), json!({"method": "GET"}))
    }

    #[test]
    fn a_refusal_is_denied_with_its_reason_and_a_log_line_reads_back_only_when_well_formed() {
        let r = record();
        assert_eq!(r.outcome, Outcome::Denied);
        assert_eq!(r.details["reason"], "forbidden_workspace");
        assert_eq!(r.details["status"], 403);
        assert_eq!(ReadRecord::from_log_line(&r.log_line()), Some(r.clone()));
        let missing = Error::BlobMissing("x".into());
        let f = Failure { error: &missing, status: 404, reason: "blob_missing" };
        let ws = WorkspaceId::parse("team-a").unwrap();
        assert_eq!(ReadRecord::new(&ws, BLOB_READ, "d".into(), "a", "r", Some(f), json!({})).outcome, Outcome::Failed);
        // Lines that are not read records, or forged ones, are skipped.
        let mut forged = r.clone();
        forged.action = "token.issue".into();
        let mut other_ws = r.clone();
        other_ws.workspace = "*".into();
        for line in [
            forged.log_line(),
            other_ws.log_line(),
            r#"{"fields":{"message":"helix.read"}}"#.into(),
            "START RequestId: x".into(),
        ] {
            assert_eq!(ReadRecord::from_log_line(&line), None, "{line}");
        }
    }
}
