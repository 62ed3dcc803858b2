//! Tokens in the `tokens` table, one row per token keyed by the SHA-256 of its secret (the id is
//! unique too): the lookups, and the insert and disable a commit applies (a rotation is both).

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, meta_err};
use crate::domain::{Scope, TokenRecord};
use crate::error::{Error, Result};

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

/// The token whose secret hashes to `sha256`, on the caller's connection (a gate reads it with the
/// switches).
pub(super) fn token_in(conn: &Connection, sha256: &str) -> rusqlite::Result<Option<TokenRecord>> {
    conn.query_row("SELECT * FROM tokens WHERE sha256 = ?1", params![sha256], token_from_row).optional()
}

pub(super) fn insert_token(conn: &Connection, t: &TokenRecord) -> rusqlite::Result<usize> {
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

pub(super) fn disable_token(conn: &Connection, sha256: &str, replaced_by: Option<&str>) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE tokens SET disabled = 1, replaced_by = coalesce(?2, replaced_by) WHERE sha256 = ?1 AND disabled = 0",
        params![sha256, replaced_by],
    )
}

impl SqliteStore {
    pub(super) async fn token(&self, sha256: &str) -> Result<Option<TokenRecord>> {
        let sha = sha256.to_owned();
        self.with(meta_err, move |c| token_in(c, &sha)).await
    }

    pub(super) async fn token_of_id(&self, id: &str) -> Result<Option<TokenRecord>> {
        let id = id.to_owned();
        self.with(meta_err, move |c| {
            c.query_row("SELECT * FROM tokens WHERE id = ?1", params![id], token_from_row).optional()
        })
        .await
    }

    pub(super) async fn all_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.with(meta_err, |c| {
            let mut stmt = c.prepare("SELECT * FROM tokens ORDER BY created_at, id")?;
            let rows = stmt.query_map([], token_from_row)?;
            rows.collect()
        })
        .await
    }
}
