//! SQLite MetaStore and AuditLog in one database file (WAL, `synchronous=FULL`, busy timeout), so a
//! state change and its audit event commit in one transaction. Every write goes to one writer thread
//! (`writer`), which commits the writes waiting for it in one `BEGIN IMMEDIATE` transaction, each in
//! its own savepoint, and answers them after COMMIT (group commit: one WAL fsync for all of them).
//! The write lock is taken up front, so the audit head read inside a transaction cannot go stale; the
//! audit table's primary key (stream, seq) is the same guard the DynamoDB adapter gets from its
//! condition. Reads use a second connection (WAL readers do not wait for the writer).
//!
//! One module per concern: `schema` (the tables and their migrations), `tokens`, `catalog` (blob
//! links, bundle versions, ledgers, the signing-key history), `switches` (freeze, suspension,
//! counters), `audit` (the audit table), `outbox` (the notification outbox) and `writer` (group commit); this module holds the store
//! (opening, the reads off the async runtime, backups) and the MetaStore port over them, with
//! `commit`'s write.

mod audit;
mod batch;
mod catalog;
mod outbox;
mod schema;
mod switches;
mod tokens;
mod verify;
mod wal_vfs;
mod writer;
#[cfg(test)]
mod writer_tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::Connection;

use self::writer::{Step, Writer};

pub use self::schema::SCHEMA_VERSION;
use crate::domain::governance::State;
use crate::domain::{AuditDraft, Digest, TokenRecord, WorkspaceId};
use crate::error::{Dependency, Error, Result};
use crate::ports::{
    BlobLink, BundleVersion, Change, Commit, Freeze, Gate, LedgerReceipt, LinksCommit, MetaStore, SigningKeyRecord,
    Suspension, VerifyJob, WorkspaceCounts, workspace_deltas,
};

#[derive(Clone)]
pub struct SqliteStore {
    /// The reads' connection.
    conn: Arc<Mutex<Connection>>,
    /// The writes' connection, on its thread.
    writer: Arc<Writer>,
}

fn meta_err(e: impl std::fmt::Display) -> Error {
    Error::unavailable(Dependency::MetaStore, e)
}

fn audit_err(e: impl std::fmt::Display) -> Error {
    Error::unavailable(Dependency::AuditLog, e)
}

/// Prepared statements that stay prepared. With the query planner stability guarantee on, a
/// statement's plan never depends on the values bound to it, so SQLite never re-prepares a cached
/// statement because a new value was bound: without it, every `WHERE stream = ?1 ORDER BY ...` (an
/// index prefix and a bound value) was parsed and planned again at each step (~8 µs instead of ~4 µs
/// a chain-head read here). The registry never runs ANALYZE, so no plan could use the values anyway.
/// And a cache large enough for every statement the writer runs (rusqlite keeps 16 by default).
fn steady_plans(c: &Connection) -> rusqlite::Result<()> {
    c.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    c.set_prepared_statement_cache_capacity(256);
    Ok(())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        // The writer's connection writes each commit's WAL frames at once (wal_vfs.rs).
        let vfs = wal_vfs::register().map_err(meta_err)?;
        let mut conn =
            Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), vfs).map_err(meta_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(meta_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(meta_err)?;
        // Every COMMIT fsyncs the WAL: an acknowledged write survives power loss.
        conn.pragma_update(None, "synchronous", "FULL").map_err(meta_err)?;
        schema::migrate(&mut conn)?;
        let reader = Connection::open(path).map_err(meta_err)?;
        reader.busy_timeout(std::time::Duration::from_secs(10)).map_err(meta_err)?;
        for c in [&conn, &reader] {
            steady_plans(c).map_err(meta_err)?;
        }
        let writer = Writer::start(conn).map_err(meta_err)?;
        Ok(SqliteStore { conn: Arc::new(Mutex::new(reader)), writer: Arc::new(writer) })
    }

    /// A consistent copy of the database at `db` into the new file `out` (`VACUUM INTO`), taken while a
    /// server may be writing: the copy holds every transaction committed before it began, and nothing
    /// of any after. Returns the copy's schema version.
    pub fn snapshot(db: &Path, out: &Path) -> Result<usize> {
        let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(meta_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(meta_err)?;
        let out = out.to_str().ok_or_else(|| Error::Internal("the backup path is not UTF-8".into()))?;
        conn.execute("VACUUM INTO ?1", [out]).map_err(meta_err)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(meta_err)?;
        Ok(version as usize)
    }

    /// Every blob key a database links (any workspace), and its schema version, read-only: what a
    /// backup of the blob store must hold for the database to be served.
    pub fn linked_keys(db: &Path) -> Result<(usize, Vec<crate::ports::BlobKey>)> {
        let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(meta_err)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(meta_err)?;
        let mut stmt = conn.prepare("SELECT DISTINCT digest, slot FROM blob_links").map_err(meta_err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(meta_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(meta_err)?;
        let keys = rows
            .into_iter()
            .map(|(d, slot)| Ok(crate::ports::BlobKey { digest: Digest::parse(&d)?, slot: slot as u8 }))
            .collect::<Result<Vec<_>>>()?;
        Ok((version as usize, keys))
    }

    /// Run the write `f` in the writer's next group (its own savepoint of one transaction); the answer
    /// comes after that transaction's COMMIT.
    fn write<T: Send + 'static>(
        &self,
        on_err: fn(rusqlite::Error) -> Error,
        f: impl FnOnce(&Connection) -> rusqlite::Result<Step<T>> + Send + 'static,
    ) -> impl Future<Output = Result<T>> + Send + 'static {
        self.writer.write(on_err, f)
    }

    /// Transactions the writer has run since the store was opened: fewer than the writes when they
    /// shared commits (for tests and benchmarks).
    pub fn write_groups(&self) -> u64 {
        self.writer.groups()
    }

    /// Run the read `f` on the readers' connection off the async runtime.
    async fn with<T: Send + 'static>(
        &self,
        on_err: fn(rusqlite::Error) -> Error,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard).map_err(on_err)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
    }
}

#[async_trait]
impl MetaStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn token_by_sha256(&self, sha256: &str) -> Result<Option<TokenRecord>> {
        self.token(sha256).await
    }

    async fn gate(&self, token_sha256: Option<&str>, freeze: bool, workspace: Option<&WorkspaceId>) -> Result<Gate> {
        self.switches(token_sha256, freeze, workspace).await
    }

    async fn freeze(&self) -> Result<Freeze> {
        self.freeze_switch().await
    }

    async fn suspended_workspaces(&self) -> Result<Vec<Suspension>> {
        self.suspensions().await
    }

    async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.token_of_id(id).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.all_tokens().await
    }

    async fn blob_link(&self, ws: &WorkspaceId, digest: &Digest) -> Result<Option<BlobLink>> {
        self.link(ws, digest).await
    }

    async fn bundle_version(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Option<BundleVersion>> {
        self.version(ws, name, version).await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        self.key_history().await
    }

    async fn ledger(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Vec<LedgerReceipt>> {
        self.receipts(ws, name, version).await
    }

    async fn ledger_head(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Option<LedgerReceipt>> {
        self.last_receipt(ws, name, version).await
    }

    async fn list_bundles(
        &self,
        ws: &WorkspaceId,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<(BundleVersion, Option<State>)>> {
        self.versions(ws, after, limit).await
    }

    async fn workspace_counts(&self, ws: &WorkspaceId) -> Result<WorkspaceCounts> {
        self.counts(ws).await
    }

    async fn list_workspaces(&self, after: Option<&WorkspaceId>, limit: usize) -> Result<Vec<WorkspaceCounts>> {
        self.workspaces(after, limit).await
    }

    /// The change and its audit event in one write (one savepoint of the writer's transaction); a
    /// change already in effect (no row written) is undone and is `AlreadyDone`.
    async fn commit(&self, change: Change, event: AuditDraft) -> Result<Commit> {
        self.write(meta_err, move |tx| {
            let applied = match &change {
                Change::IssueToken(t) => tokens::insert_token(tx, t)?,
                Change::LinkBlob(l) => catalog::link_blob(tx, l)?,
                Change::RevokeToken { sha256 } => tokens::disable_token(tx, sha256, None)?,
                Change::RegisterBundle(b) => catalog::register_bundle(tx, b)?,
                Change::RecordUnregisteredExport { workspace_id, name, version, id } => {
                    catalog::record_unregistered_export(tx, workspace_id, name, version, id)?
                }
                Change::RecordSigningKey { key_id, pem } => catalog::record_signing_key(tx, key_id, pem)?,
                Change::RetireSigningKey { key_id, at, reason } => catalog::retire_signing_key(tx, key_id, at, reason)?,
                Change::AppendReceipt { workspace_id, name, version, receipt, state, .. } => {
                    catalog::append_receipt(tx, workspace_id, name, version, receipt, *state)?
                }
                Change::SetFreeze(f) => switches::set_freeze(tx, f)?,
                Change::SetSuspension(w) => switches::set_suspension(tx, w)?,
                Change::RotateToken { old_sha256, new } => {
                    // Both or neither: a rotation that cannot disable the old token creates nothing.
                    let disabled = tokens::disable_token(tx, old_sha256, Some(&new.id))?;
                    if disabled == 1 && tokens::insert_token(tx, new)? == 1 { 1 } else { 0 }
                }
            };
            if applied == 0 {
                // A rotation may have disabled the old token before its new one was refused: undone.
                return Ok(Step::Undo(Commit::AlreadyDone));
            }
            if let Some((ws, deltas)) = workspace_deltas(&change) {
                catalog::add_workspace_counts(tx, ws, &deltas)?;
            }
            let sealed = audit::append_in(tx, event, Some(&change))?;
            Ok(Step::Keep(Commit::Applied(Box::new(sealed))))
        })
        .await
    }

    async fn blob_links(&self, ws: &WorkspaceId, digests: &[Digest]) -> Result<Vec<BlobLink>> {
        self.links_among(ws, digests).await
    }

    async fn commit_links(&self, links: Vec<(BlobLink, AuditDraft)>) -> LinksCommit {
        self.link_many(links).await
    }

    async fn add_to_counters(&self, group: &str, deltas: &[(String, i64)]) -> Result<()> {
        self.add_counters(group, deltas).await
    }

    async fn counters(&self, group: &str) -> Result<BTreeMap<String, i64>> {
        self.counter_sums(group).await
    }

    async fn verify_job(&self, ws: &WorkspaceId, upload_id: &str) -> Result<Option<VerifyJob>> {
        self.job(ws, upload_id).await
    }

    async fn save_verify_job(&self, job: &VerifyJob) -> Result<bool> {
        self.save_job(job).await
    }

    async fn check(&self) -> Result<()> {
        self.with(meta_err, |c| c.query_row("SELECT count(*) FROM tokens WHERE sha256 = ''", [], |_| Ok(()))).await
    }
}
