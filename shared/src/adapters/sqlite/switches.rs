//! The switches and counters: the freeze switch (`freeze`, one row), each workspace's suspension
//! (`workspace_suspensions`) and the counters (`counters`, rows `{group}|{name}`, moved by every
//! commit and append). A request reads its token and the switches it needs at once (`gate`).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::writer::Step;
use super::{SqliteStore, meta_err, tokens};
use crate::domain::WorkspaceId;
use crate::error::Result;
use crate::ports::{Freeze, Gate, Suspension};

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

/// Set the freeze switch, inside the caller's transaction: 0 rows when it is in that position already.
pub(super) fn set_freeze(conn: &Connection, f: &Freeze) -> rusqlite::Result<usize> {
    // Freezing a frozen registry, or unfreezing one that is not frozen, changes nothing.
    if f.frozen {
        conn.execute(
            "INSERT INTO freeze (id, frozen, reason, by, at) VALUES (1, 1, ?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET frozen = 1, reason = excluded.reason, by = excluded.by,
               at = excluded.at WHERE frozen = 0",
            params![f.reason, f.by, f.at],
        )
    } else {
        conn.execute(
            "UPDATE freeze SET frozen = 0, reason = ?1, by = ?2, at = ?3 WHERE id = 1 AND frozen = 1",
            params![f.reason, f.by, f.at],
        )
    }
}

/// Set a workspace's suspension switch, inside the caller's transaction: 0 rows when it is in that
/// position already.
pub(super) fn set_suspension(conn: &Connection, w: &Suspension) -> rusqlite::Result<usize> {
    // Suspending a suspended workspace, or unsuspending one that is not, changes nothing.
    if w.suspended {
        conn.execute(
            "INSERT INTO workspace_suspensions (workspace_id, suspended, reason, by, at) VALUES (?1, 1, ?2, ?3, ?4)
             ON CONFLICT(workspace_id) DO UPDATE SET suspended = 1, reason = excluded.reason, by = excluded.by,
               at = excluded.at WHERE suspended = 0",
            params![w.workspace_id, w.reason, w.by, w.at],
        )
    } else {
        conn.execute(
            "UPDATE workspace_suspensions SET suspended = 0, reason = ?2, by = ?3, at = ?4
             WHERE workspace_id = ?1 AND suspended = 1",
            params![w.workspace_id, w.reason, w.by, w.at],
        )
    }
}

/// Add to counters of a group (rows `{group}|{name}`), inside the caller's transaction.
pub(super) fn add_counters_in(conn: &Connection, group: &str, deltas: &[(String, i64)]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
    )?;
    for (name, delta) in deltas {
        stmt.execute(params![format!("{group}|{name}"), delta])?;
    }
    Ok(())
}

impl SqliteStore {
    pub(super) async fn switches(
        &self,
        token_sha256: Option<&str>,
        freeze: bool,
        workspace: Option<&WorkspaceId>,
    ) -> Result<Gate> {
        let (sha, ws) = (token_sha256.map(str::to_owned), workspace.map(WorkspaceId::to_string));
        self.with(meta_err, move |c| {
            // One read transaction: the token and the switches as of one moment.
            let c = c.transaction()?;
            let token = match sha {
                Some(sha) => tokens::token_in(&c, &sha)?,
                None => None,
            };
            let freeze = if freeze { Some(freeze_in(&c)?) } else { None };
            let suspension = ws.map(|ws| suspension_in(&c, &ws)).transpose()?;
            Ok(Gate { token, freeze, suspension, prefetched: None })
        })
        .await
    }

    pub(super) async fn freeze_switch(&self) -> Result<Freeze> {
        self.with(meta_err, |c| freeze_in(c)).await
    }

    pub(super) async fn suspensions(&self) -> Result<Vec<Suspension>> {
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

    pub(super) async fn add_counters(&self, group: &str, deltas: &[(String, i64)]) -> Result<()> {
        let (group, deltas) = (group.to_owned(), deltas.to_vec());
        self.write(meta_err, move |c| Ok(Step::Keep(add_counters_in(c, &group, &deltas)?))).await
    }

    pub(super) async fn counter_sums(&self, group: &str) -> Result<BTreeMap<String, i64>> {
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
}
