//! The audit log in the `audit_events` table (primary key (stream, seq), the canonical event in
//! `event`, action and actor as indexed columns): sealing an event after its stream's head, in the
//! caller's transaction or its own, and the reads, searches and daily export over its indexes.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::switches::add_counters_in;
use super::writer::Step;
use super::{SqliteStore, audit_err};
use crate::domain::audit::{day_bounds, parse_at_key, parse_ord_key};
use crate::domain::notification::NOTIFIED_ACTIONS;
use crate::domain::time::now_rfc3339_ms;
use crate::domain::{AuditDraft, AuditEvent, ChainHead};
use crate::error::{Error, Result};
use crate::ports::{AuditLog, AuditQuery, AuditSearch, BUSINESS_COUNTERS, Change, SearchPage, counter_deltas};

fn head_in(conn: &Connection, stream: &str) -> rusqlite::Result<Option<AuditEvent>> {
    let line: Option<String> = conn
        .query_row("SELECT event FROM audit_events WHERE stream = ?1 ORDER BY seq DESC LIMIT 1", params![stream], |r| {
            r.get(0)
        })
        .optional()?;
    line.map(|l| AuditEvent::from_canonical(&l).map_err(|e| rusqlite::Error::InvalidParameterName(e.to_string())))
        .transpose()
}

/// The place, time and hash of `stream`'s last event, from their columns (the event is not parsed).
fn chain_head_in(conn: &Connection, stream: &str) -> rusqlite::Result<Option<ChainHead>> {
    conn.prepare_cached("SELECT seq, ts, hash FROM audit_events WHERE stream = ?1 ORDER BY seq DESC LIMIT 1")?
        .query_row(params![stream], |r| {
            Ok(ChainHead { seq: r.get::<_, i64>(0)? as u64, ts: r.get(1)?, hash: r.get(2)? })
        })
        .optional()
}

/// Seal and insert an event after its stream's head, with the exact counters it moves.
pub(super) fn append_in(conn: &Connection, draft: AuditDraft, change: Option<&Change>) -> rusqlite::Result<AuditEvent> {
    add_counters_in(conn, BUSINESS_COUNTERS, &counter_deltas(change, &draft))?;
    let head = chain_head_in(conn, &draft.stream)?;
    seal_and_insert(conn, draft, head.as_ref())
}

/// Seal `draft` after `head` and insert it (with its notification, when it is one).
fn seal_and_insert(conn: &Connection, draft: AuditDraft, head: Option<&ChainHead>) -> rusqlite::Result<AuditEvent> {
    let to_sql = |e: Error| rusqlite::Error::InvalidParameterName(e.to_string());
    let (event, line) = draft.seal_after_with_line(head, now_rfc3339_ms()).map_err(to_sql)?;
    conn.prepare_cached(
        "INSERT INTO audit_events (stream, seq, ts, event, hash, action, actor) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![event.stream, event.seq as i64, event.ts, line, event.hash, event.action, event.actor])?;
    if NOTIFIED_ACTIONS.contains(&event.action.as_str()) {
        // The notification outbox, in the event's own transaction (docs/notifications.md).
        conn.prepare_cached("INSERT INTO notify_outbox (stream, seq) VALUES (?1, ?2)")?
            .execute(params![event.stream, event.seq as i64])?;
    }
    Ok(event)
}

/// `append_in` for several events (each with the change it records, None for a standalone one), in
/// order, in one step: each stream's head read once and carried from event to event, the business
/// counters moved once by the sum.
pub(super) fn append_many_in(
    conn: &Connection,
    drafts: Vec<(AuditDraft, Option<Change>)>,
) -> rusqlite::Result<Vec<AuditEvent>> {
    let mut sums = std::collections::BTreeMap::new();
    for (d, change) in &drafts {
        crate::ports::summed(&mut sums, counter_deltas(change.as_ref(), d));
    }
    add_counters_in(conn, BUSINESS_COUNTERS, &sums.into_iter().collect::<Vec<_>>())?;
    let mut heads: std::collections::HashMap<String, Option<ChainHead>> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(drafts.len());
    for (draft, _) in drafts {
        let head = match heads.get(&draft.stream) {
            Some(h) => h.clone(),
            None => chain_head_in(conn, &draft.stream)?,
        };
        let event = seal_and_insert(conn, draft, head.as_ref())?;
        heads.insert(event.stream.clone(), Some(ChainHead::from(&event)));
        out.push(event);
    }
    Ok(out)
}

#[async_trait]
impl AuditLog for SqliteStore {
    async fn append(&self, draft: AuditDraft) -> Result<AuditEvent> {
        self.write(audit_err, move |c| Ok(Step::Keep(append_in(c, draft, None)?))).await
    }

    async fn append_once(&self, draft: AuditDraft, key: &str) -> Result<Option<AuditEvent>> {
        let key = key.to_owned();
        self.write(audit_err, move |c| {
            // Created at first use (only the read-record ingest calls this; it runs on AWS).
            c.execute_batch("CREATE TABLE IF NOT EXISTS audit_once (key TEXT PRIMARY KEY, at TEXT NOT NULL)")?;
            let added = c.execute(
                "INSERT OR IGNORE INTO audit_once (key, at) VALUES (?1, ?2)",
                params![key, now_rfc3339_ms()],
            )?;
            if added == 0 {
                return Ok(Step::Undo(None));
            }
            Ok(Step::Keep(Some(append_in(c, draft, None)?)))
        })
        .await
    }

    async fn append_many(&self, drafts: Vec<AuditDraft>) -> (Vec<AuditEvent>, Option<Error>) {
        let drafts = drafts.into_iter().map(|d| (d, None)).collect();
        match self.write(audit_err, move |c| Ok(Step::Keep(append_many_in(c, drafts)?))).await {
            Ok(events) => (events, None),
            Err(e) => (Vec::new(), Some(e)),
        }
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

    async fn first_event_day(&self) -> Result<Option<String>> {
        // The lowest key of the `audit_by_day` index.
        self.with(audit_err, |c| c.query_row("SELECT min(substr(ts, 1, 10)) FROM audit_events", [], |r| r.get(0))).await
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
