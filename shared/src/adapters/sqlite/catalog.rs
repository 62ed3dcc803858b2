//! What workspaces hold: blob links (`blob_links`), bundle versions (`bundle_versions`), governance
//! ledgers (`ledger`, one row per receipt, a decision key at most once), unregistered-export reports
//! and the signing-key history (`signing_keys`). Every insert is `OR IGNORE`: a row is written once.

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, meta_err};
use crate::domain::governance::State;
use crate::domain::time::now_rfc3339_ms;
use crate::domain::{Digest, WorkspaceId};
use crate::error::Result;
use crate::ports::{BlobLink, BundleVersion, LedgerReceipt, SigningKeyRecord, WorkspaceCounts};

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

pub(super) fn link_blob(conn: &Connection, l: &BlobLink) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO blob_links (workspace_id, digest, size, linked_at, linked_by, slot) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![l.workspace_id, l.digest.to_string(), l.size as i64, l.linked_at, l.linked_by, l.slot])
}

pub(super) fn register_bundle(conn: &Connection, b: &BundleVersion) -> rusqlite::Result<usize> {
    let written = conn.execute(
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
    )?;
    if written == 1 {
        // A version starts `submitted` (seq 0: before its first receipt).
        conn.execute(
            "INSERT OR IGNORE INTO version_states (workspace_id, name, version, state, seq) VALUES (?1, ?2, ?3, ?4, 0)",
            params![b.workspace_id, b.name, b.version, State::Submitted.as_str()],
        )?;
    }
    Ok(written)
}

pub(super) fn record_unregistered_export(
    conn: &Connection,
    workspace_id: &str,
    name: &str,
    version: &str,
    id: &str,
) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT OR IGNORE INTO unregistered_exports (workspace_id, name, version, id, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![workspace_id, name, version, id, now_rfc3339_ms()],
    )
}

pub(super) fn record_signing_key(conn: &Connection, key_id: &str, pem: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT OR IGNORE INTO signing_keys (key_id, pem, recorded_at) VALUES (?1, ?2, ?3)",
        params![key_id, pem, now_rfc3339_ms()],
    )
}

pub(super) fn retire_signing_key(conn: &Connection, key_id: &str, at: &str, reason: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE signing_keys SET retired_at = ?2, retired_reason = ?3 WHERE key_id = ?1 AND retired_at IS NULL",
        params![key_id, at, reason],
    )
}

/// A receipt at its seq and, when it was written, the state it leaves as the version's state.
pub(super) fn append_receipt(
    conn: &Connection,
    workspace_id: &str,
    name: &str,
    version: &str,
    receipt: &LedgerReceipt,
    state: State,
) -> rusqlite::Result<usize> {
    let written = conn.execute(
        "INSERT OR IGNORE INTO ledger (workspace_id, name, version, seq, envelope, decision_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![workspace_id, name, version, receipt.seq as i64, receipt.envelope, receipt.decision_key],
    )?;
    if written == 1 {
        conn.execute(
            "INSERT INTO version_states (workspace_id, name, version, state, seq) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (workspace_id, name, version) DO UPDATE SET state = excluded.state, seq = excluded.seq
             WHERE excluded.seq > version_states.seq",
            params![workspace_id, name, version, state.as_str(), receipt.seq as i64],
        )?;
    }
    Ok(written)
}

/// Add to one workspace's counters, inside the caller's transaction.
pub(super) fn add_workspace_counts(conn: &Connection, ws: &str, deltas: &[(String, i64)]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO workspace_counts (workspace_id, counter, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (workspace_id, counter) DO UPDATE SET value = value + excluded.value",
    )?;
    for (counter, delta) in deltas {
        stmt.execute(params![ws, counter, delta])?;
    }
    Ok(())
}

fn counts_of(conn: &Connection, ws: &str) -> rusqlite::Result<WorkspaceCounts> {
    let mut stmt = conn.prepare_cached("SELECT counter, value FROM workspace_counts WHERE workspace_id = ?1")?;
    let counts = stmt.query_map(params![ws], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    Ok(WorkspaceCounts { workspace_id: ws.to_owned(), counts: counts.collect::<rusqlite::Result<_>>()? })
}

impl SqliteStore {
    pub(super) async fn link(&self, ws: &WorkspaceId, digest: &Digest) -> Result<Option<BlobLink>> {
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

    pub(super) async fn version(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Option<BundleVersion>> {
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

    pub(super) async fn versions(
        &self,
        ws: &WorkspaceId,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<(BundleVersion, Option<State>)>> {
        let ws = ws.to_string();
        let (name, version) = after.unwrap_or_default();
        self.with(meta_err, move |c| {
            let mut stmt = c.prepare(
                "SELECT b.*, s.state AS recorded_state FROM bundle_versions b
                 LEFT JOIN version_states s USING (workspace_id, name, version)
                 WHERE b.workspace_id = ?1 AND (b.name, b.version) > (?2, ?3)
                 ORDER BY b.name, b.version LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![ws, name, version, limit as i64], |r| {
                let state: Option<String> = r.get("recorded_state")?;
                Ok((bundle_from_row(r)?, state.as_deref().and_then(State::parse)))
            })?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn counts(&self, ws: &WorkspaceId) -> Result<WorkspaceCounts> {
        let ws = ws.to_string();
        self.with(meta_err, move |c| counts_of(c, &ws)).await
    }

    pub(super) async fn workspaces(&self, after: Option<&WorkspaceId>, limit: usize) -> Result<Vec<WorkspaceCounts>> {
        let after = after.map(ToString::to_string).unwrap_or_default();
        self.with(meta_err, move |c| {
            let mut stmt = c.prepare(
                "SELECT DISTINCT workspace_id FROM workspace_counts WHERE workspace_id > ?1 ORDER BY workspace_id LIMIT ?2",
            )?;
            let ids: Vec<String> =
                stmt.query_map(params![after, limit as i64], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            ids.iter().map(|ws| counts_of(c, ws)).collect()
        })
        .await
    }

    pub(super) async fn key_history(&self) -> Result<Vec<SigningKeyRecord>> {
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

    pub(super) async fn receipts(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Vec<LedgerReceipt>> {
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

    pub(super) async fn last_receipt(
        &self,
        ws: &WorkspaceId,
        name: &str,
        version: &str,
    ) -> Result<Option<LedgerReceipt>> {
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
}
