//! SQLite MetaStore and AuditLog in one database file (WAL, busy timeout), so a state change and
//! its audit event commit in one transaction. Writes take the write lock up front (BEGIN
//! IMMEDIATE), so the audit head read inside a transaction cannot go stale; the audit table's
//! primary key (stream, seq) is the same guard the DynamoDB adapter gets from its condition.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::domain::audit::{day_bounds, parse_at_key, parse_ord_key};
use crate::domain::time::now_rfc3339_ms;
use crate::domain::{AuditDraft, AuditEvent, Digest, Scope, TokenRecord, WorkspaceId};
use crate::error::{Dependency, Error, Result};
use crate::ports::{
    AuditLog, AuditQuery, AuditSearch, BUSINESS_COUNTERS, BlobLink, BundleVersion, Change, Commit, Freeze, Gate,
    LedgerReceipt, MetaStore, SearchPage, SigningKeyRecord, Suspension, counter_deltas,
};

/// Schema version 1: the tables of the first release (tokens, blob links, counters, audit events).
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS tokens (
  sha256 TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, user TEXT NOT NULL, role TEXT NOT NULL,
  workspace_id TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER,
  disabled INTEGER NOT NULL DEFAULT 0, created_by TEXT NOT NULL, description TEXT);
CREATE TABLE IF NOT EXISTS blob_links (
  workspace_id TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
  linked_at INTEGER NOT NULL, linked_by TEXT NOT NULL, PRIMARY KEY (workspace_id, digest));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit_events (
  stream TEXT NOT NULL, seq INTEGER NOT NULL, ts TEXT NOT NULL, event TEXT NOT NULL,
  hash TEXT NOT NULL, PRIMARY KEY (stream, seq));
";

/// Schema version 2: blob slots, token rotation chains, bundle versions, ledgers, signing keys.
const SCHEMA_V2_TABLES: &str = "
CREATE TABLE IF NOT EXISTS bundle_versions (
  workspace_id TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, manifest_digest TEXT NOT NULL,
  files INTEGER NOT NULL, bytes INTEGER NOT NULL, registered_at INTEGER NOT NULL, registered_by TEXT NOT NULL,
  registered_user TEXT NOT NULL, PRIMARY KEY (workspace_id, name, version));
CREATE TABLE IF NOT EXISTS signing_keys (key_id TEXT PRIMARY KEY, pem TEXT NOT NULL, recorded_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (
  workspace_id TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, seq INTEGER NOT NULL,
  envelope TEXT NOT NULL, decision_key TEXT, PRIMARY KEY (workspace_id, name, version, seq));
CREATE UNIQUE INDEX IF NOT EXISTS ledger_decisions ON ledger (workspace_id, name, version, decision_key)
  WHERE decision_key IS NOT NULL;
";

/// Schema version 3: audit events carry their action and actor as columns, indexed for audit
/// searches (by action and time, by stream and time) and the daily export (by day, then stream and
/// seq: a page of the export is an index range).
const SCHEMA_V3_INDEXES: &str = "
UPDATE audit_events SET action = json_extract(event, '$.action'), actor = json_extract(event, '$.actor')
  WHERE action IS NULL;
CREATE INDEX IF NOT EXISTS audit_by_action ON audit_events (action, ts, stream, seq);
CREATE INDEX IF NOT EXISTS audit_by_day ON audit_events (substr(ts, 1, 10), stream, seq);
CREATE INDEX IF NOT EXISTS audit_by_stream ON audit_events (stream, ts, seq);
";

/// Schema version 4: the freeze switch (one row), and the exact counters seeded from what an older
/// database holds (they are moved by every commit from this version on).
const SCHEMA_V4_TABLES: &str = "
CREATE TABLE IF NOT EXISTS freeze (
  id INTEGER PRIMARY KEY CHECK (id = 1), frozen INTEGER NOT NULL, reason TEXT, by TEXT, at TEXT);
INSERT OR IGNORE INTO counters (name, value) SELECT 'business|blob_links', count(*) FROM blob_links;
INSERT OR IGNORE INTO counters (name, value) SELECT 'business|blob_bytes', coalesce(sum(size), 0) FROM blob_links;
INSERT OR IGNORE INTO counters (name, value) SELECT 'business|tokens_enabled', count(*) FROM tokens WHERE disabled = 0;
INSERT OR IGNORE INTO counters (name, value) SELECT 'business|bundle_versions', count(*) FROM bundle_versions;
INSERT OR IGNORE INTO counters (name, value) SELECT 'business|audit_events', count(*) FROM audit_events;
";

/// Schema version 5: clients' reports of exports made while the registry was unreachable (one row
/// per report id in a workspace, so a report sent twice is recorded once).
const SCHEMA_V5_TABLES: &str = "
CREATE TABLE IF NOT EXISTS unregistered_exports (
  workspace_id TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, recorded_at TEXT NOT NULL,
  PRIMARY KEY (workspace_id, id));
";

/// Schema version 6: workspace suspensions (one row per workspace ever switched), and the audit index
/// for searches by actor alone (an admin of every workspace: "everything this user did").
const SCHEMA_V6_TABLES: &str = "
CREATE TABLE IF NOT EXISTS workspace_suspensions (
  workspace_id TEXT PRIMARY KEY, suspended INTEGER NOT NULL, reason TEXT, by TEXT, at TEXT);
CREATE INDEX IF NOT EXISTS audit_by_actor ON audit_events (actor, ts, stream, seq);
";

fn suspension_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Suspension> {
    Ok(Suspension {
        workspace_id: r.get(0)?,
        suspended: r.get::<_, i64>(1)? != 0,
        reason: r.get(2)?,
        by: r.get(3)?,
        at: r.get(4)?,
    })
}

fn suspension_in(conn: &Connection, ws: &str) -> rusqlite::Result<Suspension> {
    conn.query_row(
        "SELECT workspace_id, suspended, reason, by, at FROM workspace_suspensions WHERE workspace_id = ?1",
        params![ws],
        suspension_from_row,
    )
    .optional()
    .map(|s| s.unwrap_or_else(|| Suspension { workspace_id: ws.to_owned(), ..Suspension::default() }))
}

fn freeze_in(conn: &Connection) -> rusqlite::Result<Freeze> {
    conn.query_row("SELECT frozen, reason, by, at FROM freeze WHERE id = 1", [], |r| {
        Ok(Freeze { frozen: r.get::<_, i64>(0)? != 0, reason: r.get(1)?, by: r.get(2)?, at: r.get(3)? })
    })
    .optional()
    .map(Option::unwrap_or_default)
}

/// The migrations, in order: entry i brings a database from version i to version i + 1. Each is
/// additive (new tables, new columns with defaults) and idempotent, and runs in its own transaction
/// with the new `user_version`.
const MIGRATIONS: &[fn(&Connection) -> rusqlite::Result<()>] = &[
    |c| c.execute_batch(SCHEMA_V1),
    |c| {
        add_column(c, "blob_links", "slot", "INTEGER NOT NULL DEFAULT 0")?;
        add_column(c, "tokens", "replaced_by", "TEXT")?;
        c.execute_batch(SCHEMA_V2_TABLES)
    },
    |c| {
        add_column(c, "audit_events", "action", "TEXT")?;
        add_column(c, "audit_events", "actor", "TEXT")?;
        c.execute_batch(SCHEMA_V3_INDEXES)
    },
    |c| c.execute_batch(SCHEMA_V4_TABLES),
    |c| c.execute_batch(SCHEMA_V5_TABLES),
    |c| c.execute_batch(SCHEMA_V6_TABLES),
    // Version 7: a signing key's retirement (the end of its validity window).
    |c| {
        add_column(c, "signing_keys", "retired_at", "TEXT")?;
        add_column(c, "signing_keys", "retired_reason", "TEXT")
    },
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn meta_err(e: impl std::fmt::Display) -> Error {
    Error::unavailable(Dependency::MetaStore, e)
}

fn audit_err(e: impl std::fmt::Display) -> Error {
    Error::unavailable(Dependency::AuditLog, e)
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let mut conn = Connection::open(path).map_err(meta_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(meta_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(meta_err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(meta_err)?;
        migrate(&mut conn).map_err(meta_err)?;
        Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)) })
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

    /// Run `f` on the connection off the async runtime.
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

/// Bring the database to `SCHEMA_VERSION` (`PRAGMA user_version`), one migration per transaction.
/// A database written by a newer build is refused: this build does not know what it holds.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the data dir's database is schema version {version}, newer than this build's {SCHEMA_VERSION}: upgrade helix"
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        migration(&tx)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        if version > 0 {
            tracing::info!(from = i, to = i + 1, "upgraded the SQLite schema");
        }
    }
    Ok(())
}

/// Add a column unless it is there (a database from a build between two schema versions may have it).
fn add_column(conn: &Connection, table: &str, column: &str, definition: &str) -> rusqlite::Result<()> {
    let present: bool =
        conn.query_row("SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2", params![table, column], |r| {
            r.get(0)
        })?;
    if !present {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {definition}"))?;
    }
    Ok(())
}

fn head_in(conn: &Connection, stream: &str) -> rusqlite::Result<Option<AuditEvent>> {
    let line: Option<String> = conn
        .query_row("SELECT event FROM audit_events WHERE stream = ?1 ORDER BY seq DESC LIMIT 1", params![stream], |r| {
            r.get(0)
        })
        .optional()?;
    line.map(|l| AuditEvent::from_canonical(&l).map_err(|e| rusqlite::Error::InvalidParameterName(e.to_string())))
        .transpose()
}

/// Add to counters of a group (rows `{group}|{name}`), inside the caller's transaction.
fn add_counters_in(conn: &Connection, group: &str, deltas: &[(String, i64)]) -> rusqlite::Result<()> {
    for (name, delta) in deltas {
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            params![format!("{group}|{name}"), delta],
        )?;
    }
    Ok(())
}

/// Seal and insert an event after its stream's head, with the exact counters it moves.
fn append_in(conn: &Connection, draft: AuditDraft, change: Option<&Change>) -> rusqlite::Result<AuditEvent> {
    add_counters_in(conn, BUSINESS_COUNTERS, &counter_deltas(change, &draft))?;
    let head = head_in(conn, &draft.stream)?;
    let to_sql = |e: Error| rusqlite::Error::InvalidParameterName(e.to_string());
    let event = draft.seal(head.as_ref(), now_rfc3339_ms()).map_err(to_sql)?;
    let line = event.canonical().map_err(to_sql)?;
    conn.execute(
        "INSERT INTO audit_events (stream, seq, ts, event, hash, action, actor) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![event.stream, event.seq as i64, event.ts, line, event.hash, event.action, event.actor],
    )?;
    Ok(event)
}

fn insert_token(conn: &Connection, t: &TokenRecord) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT OR IGNORE INTO tokens (sha256, id, user, role, workspace_id, created_at, expires_at, disabled, created_by, description)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            t.sha256,
            t.id,
            t.user,
            t.role.as_str(),
            t.workspace_id.as_str(),
            t.created_at,
            t.expires_at,
            t.disabled as i64,
            t.created_by,
            t.description
        ],
    )
}

fn disable_token(conn: &Connection, sha256: &str, replaced_by: Option<&str>) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE tokens SET disabled = 1, replaced_by = coalesce(?2, replaced_by) WHERE sha256 = ?1 AND disabled = 0",
        params![sha256, replaced_by],
    )
}

fn bundle_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BundleVersion> {
    let digest: String = r.get("manifest_digest")?;
    Ok(BundleVersion {
        workspace_id: r.get("workspace_id")?,
        name: r.get("name")?,
        version: r.get("version")?,
        manifest_digest: Digest::parse(&digest).map_err(|e| rusqlite::Error::InvalidParameterName(e.to_string()))?,
        files: r.get::<_, i64>("files")? as u64,
        bytes: r.get::<_, i64>("bytes")? as u64,
        registered_at: r.get("registered_at")?,
        registered_by: r.get("registered_by")?,
        registered_user: r.get("registered_user")?,
    })
}

fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    let bad = |e: Error| rusqlite::Error::InvalidParameterName(e.to_string());
    let role: String = r.get("role")?;
    let ws: String = r.get("workspace_id")?;
    Ok(TokenRecord {
        id: r.get("id")?,
        sha256: r.get("sha256")?,
        user: r.get("user")?,
        role: role.parse().map_err(bad)?,
        workspace_id: Scope::parse(&ws).map_err(bad)?,
        created_at: r.get("created_at")?,
        expires_at: r.get("expires_at")?,
        disabled: r.get::<_, i64>("disabled")? != 0,
        created_by: r.get("created_by")?,
        description: r.get("description")?,
        replaced_by: r.get("replaced_by")?,
    })
}

#[async_trait]
impl MetaStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn token_by_sha256(&self, sha256: &str) -> Result<Option<TokenRecord>> {
        let sha = sha256.to_owned();
        self.with(meta_err, move |c| {
            c.query_row("SELECT * FROM tokens WHERE sha256 = ?1", params![sha], token_from_row).optional()
        })
        .await
    }

    async fn gate(&self, token_sha256: Option<&str>, freeze: bool, workspace: Option<&WorkspaceId>) -> Result<Gate> {
        let (sha, ws) = (token_sha256.map(str::to_owned), workspace.map(WorkspaceId::to_string));
        self.with(meta_err, move |c| {
            let token = match sha {
                Some(sha) => {
                    c.query_row("SELECT * FROM tokens WHERE sha256 = ?1", params![sha], token_from_row).optional()?
                }
                None => None,
            };
            let freeze = if freeze { Some(freeze_in(c)?) } else { None };
            let suspension = ws.map(|ws| suspension_in(c, &ws)).transpose()?;
            Ok(Gate { token, freeze, suspension })
        })
        .await
    }

    async fn freeze(&self) -> Result<Freeze> {
        self.with(meta_err, |c| freeze_in(c)).await
    }

    async fn suspended_workspaces(&self) -> Result<Vec<Suspension>> {
        self.with(meta_err, |c| {
            let mut stmt = c.prepare(
                "SELECT workspace_id, suspended, reason, by, at FROM workspace_suspensions WHERE suspended = 1
                 ORDER BY workspace_id",
            )?;
            let rows = stmt.query_map([], suspension_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>> {
        let id = id.to_owned();
        self.with(meta_err, move |c| {
            c.query_row("SELECT * FROM tokens WHERE id = ?1", params![id], token_from_row).optional()
        })
        .await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.with(meta_err, |c| {
            let mut stmt = c.prepare("SELECT * FROM tokens ORDER BY created_at, id")?;
            let rows = stmt.query_map([], token_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn blob_link(&self, ws: &WorkspaceId, digest: &Digest) -> Result<Option<BlobLink>> {
        let (ws, digest) = (ws.to_string(), digest.clone());
        self.with(meta_err, move |c| {
            c.query_row(
                "SELECT size, linked_at, linked_by, slot FROM blob_links WHERE workspace_id = ?1 AND digest = ?2",
                params![ws, digest.to_string()],
                |r| {
                    Ok(BlobLink {
                        workspace_id: ws.clone(),
                        digest: digest.clone(),
                        size: r.get::<_, i64>(0)? as u64,
                        linked_at: r.get(1)?,
                        linked_by: r.get(2)?,
                        slot: r.get(3)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn bundle_version(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Option<BundleVersion>> {
        let (ws, name, version) = (ws.to_string(), name.to_owned(), version.to_owned());
        self.with(meta_err, move |c| {
            c.query_row(
                "SELECT * FROM bundle_versions WHERE workspace_id = ?1 AND name = ?2 AND version = ?3",
                params![ws, name, version],
                bundle_from_row,
            )
            .optional()
        })
        .await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        self.with(meta_err, |c| {
            let mut stmt = c.prepare(
                "SELECT key_id, pem, recorded_at, retired_at, retired_reason FROM signing_keys ORDER BY recorded_at, key_id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(SigningKeyRecord {
                    key_id: r.get(0)?,
                    pem: r.get(1)?,
                    recorded_at: r.get(2)?,
                    retired_at: r.get(3)?,
                    retired_reason: r.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn ledger(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Vec<LedgerReceipt>> {
        let (ws, name, version) = (ws.to_string(), name.to_owned(), version.to_owned());
        self.with(meta_err, move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, envelope, decision_key FROM ledger WHERE workspace_id = ?1 AND name = ?2 AND version = ?3
                 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![ws, name, version], |r| {
                Ok(LedgerReceipt { seq: r.get::<_, i64>(0)? as u64, envelope: r.get(1)?, decision_key: r.get(2)? })
            })?;
            rows.collect()
        })
        .await
    }

    async fn ledger_head(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Option<LedgerReceipt>> {
        let (ws, name, version) = (ws.to_string(), name.to_owned(), version.to_owned());
        self.with(meta_err, move |c| {
            c.query_row(
                "SELECT seq, envelope, decision_key FROM ledger WHERE workspace_id = ?1 AND name = ?2 AND version = ?3
                 ORDER BY seq DESC LIMIT 1",
                params![ws, name, version],
                |r| Ok(LedgerReceipt { seq: r.get::<_, i64>(0)? as u64, envelope: r.get(1)?, decision_key: r.get(2)? }),
            )
            .optional()
        })
        .await
    }

    async fn list_bundles(
        &self,
        ws: &WorkspaceId,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<BundleVersion>> {
        let ws = ws.to_string();
        let (name, version) = after.unwrap_or_default();
        self.with(meta_err, move |c| {
            let mut stmt = c.prepare(
                "SELECT * FROM bundle_versions WHERE workspace_id = ?1 AND (name, version) > (?2, ?3)
                 ORDER BY name, version LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![ws, name, version, limit as i64], bundle_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn commit(&self, change: Change, event: AuditDraft) -> Result<Commit> {
        self.with(meta_err, move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let applied = match &change {
                Change::IssueToken(t) => insert_token(&tx, t)?,
                Change::LinkBlob(l) => tx.execute(
                    "INSERT OR IGNORE INTO blob_links (workspace_id, digest, size, linked_at, linked_by, slot) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![l.workspace_id, l.digest.to_string(), l.size as i64, l.linked_at, l.linked_by, l.slot],
                )?,
                Change::RevokeToken { sha256 } => disable_token(&tx, sha256, None)?,
                Change::RegisterBundle(b) => tx.execute(
                    "INSERT OR IGNORE INTO bundle_versions (workspace_id, name, version, manifest_digest, files, bytes, registered_at, registered_by, registered_user)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        b.workspace_id,
                        b.name,
                        b.version,
                        b.manifest_digest.to_string(),
                        b.files as i64,
                        b.bytes as i64,
                        b.registered_at,
                        b.registered_by,
                        b.registered_user
                    ],
                )?,
                Change::RecordUnregisteredExport { workspace_id, name, version, id } => tx.execute(
                    "INSERT OR IGNORE INTO unregistered_exports (workspace_id, name, version, id, recorded_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![workspace_id, name, version, id, now_rfc3339_ms()],
                )?,
                Change::RecordSigningKey { key_id, pem } => tx.execute(
                    "INSERT OR IGNORE INTO signing_keys (key_id, pem, recorded_at) VALUES (?1, ?2, ?3)",
                    params![key_id, pem, now_rfc3339_ms()],
                )?,
                Change::RetireSigningKey { key_id, at, reason } => tx.execute(
                    "UPDATE signing_keys SET retired_at = ?2, retired_reason = ?3 WHERE key_id = ?1 AND retired_at IS NULL",
                    params![key_id, at, reason],
                )?,
                Change::AppendReceipt { workspace_id, name, version, receipt } => tx.execute(
                    "INSERT OR IGNORE INTO ledger (workspace_id, name, version, seq, envelope, decision_key)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![workspace_id, name, version, receipt.seq as i64, receipt.envelope, receipt.decision_key],
                )?,
                // Freezing a frozen registry, or unfreezing one that is not frozen, changes nothing.
                Change::SetFreeze(f) if f.frozen => tx.execute(
                    "INSERT INTO freeze (id, frozen, reason, by, at) VALUES (1, 1, ?1, ?2, ?3)
                     ON CONFLICT(id) DO UPDATE SET frozen = 1, reason = excluded.reason, by = excluded.by,
                       at = excluded.at WHERE frozen = 0",
                    params![f.reason, f.by, f.at],
                )?,
                Change::SetFreeze(f) => tx.execute(
                    "UPDATE freeze SET frozen = 0, reason = ?1, by = ?2, at = ?3 WHERE id = 1 AND frozen = 1",
                    params![f.reason, f.by, f.at],
                )?,
                // Suspending a suspended workspace, or unsuspending one that is not, changes nothing.
                Change::SetSuspension(w) if w.suspended => tx.execute(
                    "INSERT INTO workspace_suspensions (workspace_id, suspended, reason, by, at) VALUES (?1, 1, ?2, ?3, ?4)
                     ON CONFLICT(workspace_id) DO UPDATE SET suspended = 1, reason = excluded.reason, by = excluded.by,
                       at = excluded.at WHERE suspended = 0",
                    params![w.workspace_id, w.reason, w.by, w.at],
                )?,
                Change::SetSuspension(w) => tx.execute(
                    "UPDATE workspace_suspensions SET suspended = 0, reason = ?2, by = ?3, at = ?4
                     WHERE workspace_id = ?1 AND suspended = 1",
                    params![w.workspace_id, w.reason, w.by, w.at],
                )?,
                Change::RotateToken { old_sha256, new } => {
                    // Both or neither: a rotation that cannot disable the old token creates nothing.
                    let disabled = disable_token(&tx, old_sha256, Some(&new.id))?;
                    if disabled == 1 && insert_token(&tx, new)? == 1 { 1 } else { 0 }
                }
            };
            if applied == 0 {
                return Ok(Commit::AlreadyDone);
            }
            let sealed = append_in(&tx, event, Some(&change))?;
            tx.commit()?;
            Ok(Commit::Applied(Box::new(sealed)))
        })
        .await
    }

    async fn add_to_counters(&self, group: &str, deltas: &[(String, i64)]) -> Result<()> {
        let (group, deltas) = (group.to_owned(), deltas.to_vec());
        self.with(meta_err, move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            add_counters_in(&tx, &group, &deltas)?;
            tx.commit()
        })
        .await
    }

    async fn counters(&self, group: &str) -> Result<BTreeMap<String, i64>> {
        let prefix = format!("{group}|");
        self.with(meta_err, move |c| {
            let mut stmt = c.prepare("SELECT name, value FROM counters WHERE substr(name, 1, ?2) = ?1")?;
            let rows = stmt.query_map(params![prefix, prefix.len() as i64], |r| {
                Ok((r.get::<_, String>(0)?[prefix.len()..].to_owned(), r.get::<_, i64>(1)?))
            })?;
            rows.collect()
        })
        .await
    }

    async fn check(&self) -> Result<()> {
        self.with(meta_err, |c| c.query_row("SELECT count(*) FROM tokens WHERE sha256 = ''", [], |_| Ok(()))).await
    }
}

#[async_trait]
impl AuditLog for SqliteStore {
    async fn append(&self, draft: AuditDraft) -> Result<AuditEvent> {
        self.with(audit_err, move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let event = append_in(&tx, draft, None)?;
            tx.commit()?;
            Ok(event)
        })
        .await
    }

    async fn head(&self, stream: &str) -> Result<Option<AuditEvent>> {
        let stream = stream.to_owned();
        self.with(audit_err, move |c| head_in(c, &stream)).await
    }

    async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let q = q.clone();
        let lines = self
            .with(audit_err, move |c| {
                let mut stmt = c.prepare(
                    "SELECT event FROM audit_events WHERE stream = ?1 AND seq > ?2
                       AND (?3 IS NULL OR ts >= ?3) AND (?4 IS NULL OR ts < ?4)
                     ORDER BY seq LIMIT ?5",
                )?;
                let rows = stmt.query_map(
                    params![q.stream, q.after_seq.unwrap_or(0) as i64, q.since, q.until, q.limit as i64],
                    |r| r.get::<_, String>(0),
                )?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })
            .await?;
        lines.iter().map(|l| AuditEvent::from_canonical(l)).collect()
    }

    async fn event(&self, stream: &str, seq: u64) -> Result<Option<AuditEvent>> {
        let stream = stream.to_owned();
        let line = self
            .with(audit_err, move |c| {
                c.query_row(
                    "SELECT event FROM audit_events WHERE stream = ?1 AND seq = ?2",
                    params![stream, seq as i64],
                    |r| r.get::<_, String>(0),
                )
                .optional()
            })
            .await?;
        line.as_deref().map(AuditEvent::from_canonical).transpose()
    }

    async fn search(&self, q: &AuditSearch) -> Result<SearchPage> {
        if q.stream.is_none() && q.action.is_none() && q.actor.is_none() {
            return Err(Error::BadRequest("a search names a workspace, an action or an actor".into()));
        }
        // The SQL for this search's shape only (an `?x IS NULL OR` term would keep the planner from
        // the index: `audit_by_stream`, `audit_by_action` or `audit_by_actor`, all in (ts, stream, seq)
        // order).
        let mut terms: Vec<&str> = Vec::new();
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        use rusqlite::types::Value as V;
        for (term, value) in [
            ("stream = ?", &q.stream),
            ("action = ?", &q.action),
            ("actor = ?", &q.actor),
            ("ts >= ?", &q.since),
            ("ts < ?", &q.until),
        ] {
            if let Some(value) = value {
                terms.push(term);
                args.push(V::Text(value.clone()));
            }
        }
        if let Some(after) = &q.after {
            let (ts, stream, seq) = parse_at_key(after)?;
            terms.push("(ts, stream, seq) > (?, ?, ?)");
            args.extend([V::Text(ts), V::Text(stream), V::Integer(seq as i64)]);
        }
        args.push(V::Integer(q.limit as i64));
        let sql =
            format!("SELECT event FROM audit_events WHERE {} ORDER BY ts, stream, seq LIMIT ?", terms.join(" AND "));
        let lines = self
            .with(audit_err, move |c| {
                let mut stmt = c.prepare(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })
            .await?;
        let events = lines.iter().map(|l| AuditEvent::from_canonical(l)).collect::<Result<_>>()?;
        Ok(SearchPage { events, resume_after: None })
    }

    fn day_shards(&self) -> u8 {
        1
    }

    async fn read_day_shard(
        &self,
        day: &str,
        _shard: u8,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>> {
        day_bounds(day)?;
        let day = day.to_owned();
        let after = match after {
            None => None,
            Some(ord) => Some(parse_ord_key(ord)?),
        };
        let lines = self
            .with(audit_err, move |c| {
                // The expression is the index's (audit_by_day) and the order its (stream, seq): each page
                // is an index range, without a sort. Two statements: an `OR` on the cursor would make
                // every page scan from the day's start.
                match after {
                    None => {
                        let mut stmt = c.prepare_cached(
                            "SELECT event FROM audit_events WHERE substr(ts, 1, 10) = ?1
                             ORDER BY stream, seq LIMIT ?2",
                        )?;
                        let rows = stmt.query_map(params![day, limit as i64], |r| r.get::<_, String>(0))?;
                        rows.collect::<rusqlite::Result<Vec<String>>>()
                    }
                    Some((stream, seq)) => {
                        let mut stmt = c.prepare_cached(
                            "SELECT event FROM audit_events WHERE substr(ts, 1, 10) = ?1 AND (stream, seq) > (?2, ?3)
                             ORDER BY stream, seq LIMIT ?4",
                        )?;
                        let rows =
                            stmt.query_map(params![day, stream, seq as i64, limit as i64], |r| r.get::<_, String>(0))?;
                        rows.collect::<rusqlite::Result<Vec<String>>>()
                    }
                }
            })
            .await?;
        lines.iter().map(|l| AuditEvent::from_canonical(l)).collect()
    }

    async fn check(&self) -> Result<()> {
        self.with(audit_err, |c| c.query_row("SELECT count(*) FROM audit_events WHERE stream = ''", [], |_| Ok(())))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data dir written by the first release (schema version 1, as it wrote it) opens, is upgraded
    /// in place, and keeps its tokens and links.
    #[tokio::test]
    async fn a_database_of_the_previous_schema_is_upgraded_on_open_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("helix.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.execute(
                "INSERT INTO tokens (sha256, id, user, role, workspace_id, created_at, disabled, created_by)
                 VALUES ('ab', 'tok_0123456789abcdef', 'ada', 'admin', '*', 1, 0, 'tests')",
                [],
            )
            .unwrap();
            c.execute(
                "INSERT INTO blob_links VALUES ('team-a', 'sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae', 3, 1, 'ada')",
                [],
            )
            .unwrap();
            // An event as the first release stored it: no action or actor column yet (schema 3
            // fills them in from the event; schema 4 counts it).
            let event = AuditDraft {
                stream: "team-a".into(),
                actor: "ada@tok_0123456789abcdef".into(),
                action: "blob.link".into(),
                entity_type: "blob".into(),
                entity_id: "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae".into(),
                outcome: crate::domain::Outcome::Success,
                request_id: "r1".into(),
                details: serde_json::json!({}),
            }
            .seal(None, "2026-11-23T10:00:00.000Z".into())
            .unwrap();
            c.execute(
                "INSERT INTO audit_events (stream, seq, ts, event, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![event.stream, event.seq as i64, event.ts, event.canonical().unwrap(), event.hash],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let token = store.token_by_sha256("ab").await.unwrap().expect("kept");
        assert_eq!((token.user.as_str(), token.replaced_by.as_deref()), ("ada", None));
        let ws = WorkspaceId::parse("team-a").unwrap();
        let d = Digest::parse("sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae").unwrap();
        assert_eq!(store.blob_link(&ws, &d).await.unwrap().expect("kept").slot, 0);
        assert!(store.list_bundles(&ws, None, 10).await.unwrap().is_empty(), "new tables exist");
        assert!(store.signing_keys().await.unwrap().is_empty());
        let counters = store.counters(BUSINESS_COUNTERS).await.unwrap();
        assert_eq!((counters["blob_links"], counters["blob_bytes"], counters["tokens_enabled"]), (1, 3, 1), "seeded");
        assert_eq!(counters["audit_events"], 1, "seeded from the stored events");
        let q = AuditSearch {
            action: Some("blob.link".into()),
            actor: Some("ada@tok_0123456789abcdef".into()),
            limit: 10,
            ..Default::default()
        };
        let found = store.search(&q).await.unwrap().events;
        assert_eq!(found.len(), 1, "action and actor filled in from the stored event");
        assert_eq!(found[0].entity_type, "blob");
        let version: i64 = Connection::open(&path).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version as usize, SCHEMA_VERSION);
        drop(store);
        SqliteStore::open(&path).expect("opening again is a no-op");
    }

    #[test]
    fn a_database_of_a_newer_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("helix.db");
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
        let err = SqliteStore::open(&path).err().expect("refused").to_string();
        assert!(err.contains("newer than this build"), "{err}");
    }
}
