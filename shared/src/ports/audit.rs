//! The audit log: hash-chained event streams, searched, read by day for the export.

use super::*;

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub stream: String,
    /// Inclusive lower bound on `ts` (RFC 3339, compared as fixed-width strings).
    pub since: Option<String>,
    /// Exclusive upper bound on `ts`.
    pub until: Option<String>,
    /// Only events with a greater seq (pagination cursor).
    pub after_seq: Option<u64>,
    pub limit: usize,
}

/// A search of the audit trail (GET /v1/audit). It names a stream, an action or an actor, each an
/// indexed read (a search naming none would read everything: the daily export is that). Results come in (ts, stream,
/// seq) order, the order of `AuditEvent::at_key`.
#[derive(Debug, Clone, Default)]
pub struct AuditSearch {
    pub stream: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    /// Inclusive lower bound on `ts` (fixed-width RFC 3339, as events carry it).
    pub since: Option<String>,
    /// Exclusive upper bound on `ts`.
    pub until: Option<String>,
    /// Only events after this `at_key` (the pagination cursor).
    pub after: Option<String>,
    pub limit: usize,
}

/// What one search call read.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    pub events: Vec<AuditEvent>,
    /// Set when the adapter stopped at its read bound before `limit` matches: everything up to and
    /// including this `at_key` was read, and the search goes on after it.
    pub resume_after: Option<String>,
}

#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Append a standalone event (one with no meta-store change, such as a denial). Never
    /// overwrites: conditional on seq, re-reading the head and retrying on a lost race.
    async fn append(&self, draft: AuditDraft) -> Result<AuditEvent>;

    /// `append`, once per `key`: the event and a record of `key` in one write; None (nothing
    /// written) when `key` was recorded before. A redelivered batch of read records (the CloudWatch
    /// Logs subscription delivers at least once) is appended once, keyed by each log event's id.
    async fn append_once(&self, draft: AuditDraft, key: &str) -> Result<Option<AuditEvent>>;

    /// Several standalone events, appended in order, each as `append` would: the events appended
    /// (the first drafts, in order) and the error that stopped the rest, if one did. The embedded
    /// store writes them all in one step of its writer (one head read per stream, the counters moved
    /// once), or none; other stores append them one by one and stop at the first failure.
    async fn append_many(&self, drafts: Vec<AuditDraft>) -> (Vec<AuditEvent>, Option<crate::error::Error>) {
        let mut out = Vec::with_capacity(drafts.len());
        for d in drafts {
            match self.append(d).await {
                Ok(e) => out.push(e),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    async fn head(&self, stream: &str) -> Result<Option<AuditEvent>>;

    /// One event, read consistently (the export checks a day's boundaries with it).
    async fn event(&self, stream: &str, seq: u64) -> Result<Option<AuditEvent>>;

    /// Events of one stream in seq order.
    async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>>;

    /// Events matching `q`, in (ts, stream, seq) order, at most `q.limit`; never a table scan, and a
    /// bounded read per call: a search whose filter matches little may stop early (`resume_after`).
    async fn search(&self, q: &AuditSearch) -> Result<SearchPage>;

    /// How many shards a day is read in (`read_day_shard`); every stream lives in exactly one.
    fn day_shards(&self) -> u8;

    /// The UTC day (`YYYY-MM-DD`) of the earliest event of the whole trail, or `None` when there is
    /// none: where the first audit export starts (the genesis), found in one read, not day by day.
    async fn first_event_day(&self) -> Result<Option<String>>;

    /// Up to `limit` events of one shard whose `ts` falls on `day` (UTC, `YYYY-MM-DD`), in (stream,
    /// seq) order, after the event whose `ord_key` is `after`. The export merges the shards.
    async fn read_day_shard(&self, day: &str, shard: u8, after: Option<&str>, limit: usize) -> Result<Vec<AuditEvent>>;

    async fn check(&self) -> Result<()>;
}
