//! The database's schema and its upgrades: the SQL of each schema version, the migrations in order
//! (`PRAGMA user_version` says which have run), and `migrate`, which brings a database opened by
//! `SqliteStore::open` to this build's `SCHEMA_VERSION` and refuses one written by a newer build.

use rusqlite::{Connection, TransactionBehavior, params};

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

/// Schema version 8: each version's state as its last receipt left it (written with the receipt), and
/// each workspace's counters (moved by every commit that changes what they count), seeded with the
/// links, bytes and versions an older database holds. An older database's versions have no state row
/// until their next receipt: their state is read from their ledger head (docs/decisions.md).
const SCHEMA_V8_TABLES: &str = "
CREATE TABLE IF NOT EXISTS version_states (
  workspace_id TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, state TEXT NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY (workspace_id, name, version));
CREATE TABLE IF NOT EXISTS workspace_counts (
  workspace_id TEXT NOT NULL, counter TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (workspace_id, counter));
INSERT OR IGNORE INTO workspace_counts SELECT workspace_id, 'blob_links', count(*) FROM blob_links GROUP BY workspace_id;
INSERT OR IGNORE INTO workspace_counts SELECT workspace_id, 'blob_bytes', sum(size) FROM blob_links GROUP BY workspace_id;
INSERT OR IGNORE INTO workspace_counts
  SELECT workspace_id, 'bundle_versions', count(*) FROM bundle_versions GROUP BY workspace_id;
";

/// Schema version 9: the notification outbox (docs/notifications.md): the position, in commit order, of
/// every governance event appended from this version on (written in the event's transaction), and each
/// delivery channel's cursor. Events of an older database are history, not notified.
const SCHEMA_V9_TABLES: &str = "
CREATE TABLE IF NOT EXISTS notify_outbox (
  position INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS notify_cursors (channel TEXT PRIMARY KEY, position INTEGER NOT NULL, at TEXT NOT NULL);
";

/// Schema version 10: asynchronous verifications of large uploads (`crate::verify`): one row per job,
/// its JSON beside the version every write is conditional on.
const SCHEMA_V10_TABLES: &str = "
CREATE TABLE IF NOT EXISTS verify_jobs (
  workspace_id TEXT NOT NULL, upload_id TEXT NOT NULL, version INTEGER NOT NULL, job TEXT NOT NULL,
  PRIMARY KEY (workspace_id, upload_id));
";

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
    |c| c.execute_batch(SCHEMA_V8_TABLES),
    |c| c.execute_batch(SCHEMA_V9_TABLES),
    |c| c.execute_batch(SCHEMA_V10_TABLES),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Bring the database to `SCHEMA_VERSION` (`PRAGMA user_version`), one migration per transaction.
/// A database written by a newer build is refused: this build does not know what it holds. That is
/// an internal error naming the upgrade (not an outage, and not to be retried); a failing statement is
/// the meta store's.
pub(super) fn migrate(conn: &mut Connection) -> crate::Result<()> {
    let version: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).map_err(super::meta_err)? as usize;
    if version > SCHEMA_VERSION {
        return Err(crate::Error::Internal(format!(
            "the data dir's database is schema version {version}, newer than this build's {SCHEMA_VERSION}: upgrade helix"
        )));
    }
    apply(conn, version).map_err(super::meta_err)
}

fn apply(conn: &mut Connection, version: usize) -> rusqlite::Result<()> {
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

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, params};

    use super::*;
    use crate::adapters::sqlite::SqliteStore;
    use crate::domain::{AuditDraft, Digest, WorkspaceId};
    use crate::ports::{AuditLog, AuditSearch, BUSINESS_COUNTERS, MetaStore};

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
        let refused = SqliteStore::open(&path).err().expect("refused");
        // An internal error naming the upgrade, not a meta store outage (a 503 a client would retry).
        assert!(matches!(refused, crate::Error::Internal(_)), "{refused:?}");
        let err = refused.to_string();
        assert!(err.contains("newer than this build"), "{err}");
    }
}
