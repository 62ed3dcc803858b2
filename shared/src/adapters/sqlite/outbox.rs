//! The notification outbox (`notify_outbox`: a position per governance event, written by `audit::append_in`
//! in the event's transaction) and the delivery channels' cursors (`notify_cursors`).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::writer::Step;
use super::{SqliteStore, audit_err};
use crate::domain::AuditEvent;
use crate::domain::time::now_rfc3339_ms;
use crate::error::Result;
use crate::ports::{NotificationOutbox, OutboxEntry};

#[async_trait]
impl NotificationOutbox for SqliteStore {
    async fn outbox_cursor(&self, channel: &str) -> Result<Option<u64>> {
        let channel = channel.to_owned();
        let at = self
            .with(audit_err, move |c| {
                c.query_row("SELECT position FROM notify_cursors WHERE channel = ?1", params![channel], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()
            })
            .await?;
        Ok(at.map(|p| p as u64))
    }

    async fn outbox_end(&self) -> Result<u64> {
        let end = self
            .with(audit_err, |c| {
                c.query_row("SELECT coalesce(max(position), 0) FROM notify_outbox", [], |r| r.get::<_, i64>(0))
            })
            .await?;
        Ok(end as u64)
    }

    async fn outbox_after(&self, after: u64, limit: usize) -> Result<Vec<OutboxEntry>> {
        let rows = self
            .with(audit_err, move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT o.position, e.event FROM notify_outbox o
                       JOIN audit_events e ON e.stream = o.stream AND e.seq = o.seq
                     WHERE o.position > ?1 ORDER BY o.position LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![after as i64, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter()
            .map(|(position, line)| {
                Ok(OutboxEntry { position: position as u64, event: AuditEvent::from_canonical(&line)? })
            })
            .collect()
    }

    async fn set_outbox_cursor(&self, channel: &str, position: u64) -> Result<()> {
        let channel = channel.to_owned();
        self.write(audit_err, move |c| {
            c.execute(
                "INSERT INTO notify_cursors (channel, position, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (channel) DO UPDATE SET position = max(position, excluded.position), at = excluded.at",
                params![channel, position as i64, now_rfc3339_ms()],
            )?;
            Ok(Step::Keep(()))
        })
        .await
    }
}
