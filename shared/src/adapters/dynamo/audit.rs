//! The audit table (`stream` (S) / `seq` (N), the canonical event in `event`) and its indexes: the
//! daily export's `by-day-shard`, searches' `by-action` and `by-actor`. Appends never overwrite: every
//! put is conditional on `attribute_not_exists(seq)`; a writer that loses the seq re-reads the head.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::TransactWriteItem;

use super::{APPEND_ATTEMPTS, DynamoStore, Item, Transaction, err, get_n, get_s, n, s};
use crate::domain::audit::{AUDIT_SHARDS, parse_at_key, shard_of};
use crate::domain::time::now_rfc3339_ms;
use crate::domain::{AuditDraft, AuditEvent, ChainHead};
use crate::error::{Dependency, Error, Result};
use crate::ports::{AuditLog, AuditQuery, AuditSearch, BUSINESS_COUNTERS, SearchPage, counter_deltas};

/// Items a search evaluates per page, and pages per search (per index shard): a search whose filter
/// matches little answers a short page and a cursor instead of reading on without bound.
const SEARCH_PAGE: i32 = 250;

/// Partition-key prefix of `append_once`'s markers in the meta table (written by audit-ingest only).
pub const ONCE_PK: &str = "ONCE#";
const SEARCH_PAGES: usize = 4;

/// Global secondary index of the audit table the daily export reads: hash key `day_shard`
/// (`{YYYY-MM-DD}#{shard:02}`, the shard of the stream), range key `ord` (`{stream}#{seq:020}`), all
/// attributes. Sharding spreads one day's writes over `AUDIT_SHARDS` partitions; each shard holds
/// whole streams in (stream, seq) order, so the export merges the shards without sorting.
/// The partition of stream births: one item per stream, written with its first event and keyed by that
/// event's time (Unix milliseconds), so the trail's earliest event is the partition's first item. It
/// carries none of the indexes' keys, so no index holds it, and it is no stream (`~` starts no
/// workspace id, as the health probe's `~probe`).
pub const BIRTHS_STREAM: &str = "~births";

/// Unix milliseconds of an event's RFC 3339 time.
fn epoch_ms(ts: &str) -> Result<i64> {
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::Internal(format!("event time {ts:?}: {e}")))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

pub const AUDIT_DAY_INDEX: &str = "by-day-shard";
/// Global secondary index for audit searches by action: hash key `action_shard`
/// (`{action}#{shard:02}`), range key `at` (`{ts}#{stream}#{seq:020}`), all attributes.
pub const AUDIT_ACTION_INDEX: &str = "by-action";
/// Global secondary index for audit searches by actor alone (an admin of every workspace: "everything
/// this user did"): hash key `actor` (the event's own attribute, so events written before the index
/// existed are in it too), range key `at`, all attributes. Unsharded: one actor's appends are bounded
/// by one index partition (~1,000 events/s), far above what one credential does.
pub const AUDIT_ACTOR_INDEX: &str = "by-actor";

fn event_from_item(item: &Item) -> Result<AuditEvent> {
    AuditEvent::from_canonical(&get_s(item, "event")?)
}

/// A filter expression requiring each named attribute to equal its value (those given).
fn equal_filters(mut req: QueryFluentBuilder, equal: &[(&str, Option<&str>)]) -> QueryFluentBuilder {
    let mut terms = Vec::new();
    for (i, (name, value)) in equal.iter().enumerate() {
        if let Some(v) = value {
            terms.push(format!("#f{i} = :f{i}"));
            req = req
                .expression_attribute_names(format!("#f{i}"), *name)
                .expression_attribute_values(format!(":f{i}"), s(*v));
        }
    }
    if terms.is_empty() { req } else { req.filter_expression(terms.join(" AND ")) }
}

/// Most streams whose head an instance remembers; past it the memory starts again empty.
const REMEMBERED_HEADS: usize = 4096;

/// Partition-key prefix of each stream's head hint in the meta table (`AUDITHEAD#{stream}`, sort key
/// `HEAD`): the seq, time and hash of the stream's last event and the audit table it is in, written
/// in the transaction of every append, read with the credential in a change's BatchGetItem.
pub const HEAD_HINT_PK: &str = "AUDITHEAD#";

/// The head of each stream as this instance last saw it: the event it appended last, the hint read
/// with the credential, or the head read by Query. Only a guess of where the next append goes, never
/// trusted: the append's put is conditional on `attribute_not_exists(seq)`, and seqs are dense (every
/// append puts head + 1, nothing deletes an event), so a put of `guess + 1` that succeeds proves
/// `guess` was the head and the chain links to it. A put that loses (another writer appended) forgets
/// the guess and reads the head (Query). With the hint, an append of any instance after another's
/// costs no Query and no lost transaction; without it (a stream written before hints), the first
/// append reads the head once.
#[derive(Default)]
pub(super) struct Heads(std::sync::Mutex<std::collections::HashMap<String, ChainHead>>);

impl Heads {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, ChainHead>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, stream: &str) -> Option<ChainHead> {
        self.lock().get(stream).cloned()
    }

    fn remember(&self, stream: &str, head: ChainHead) {
        let mut heads = self.lock();
        if heads.len() >= REMEMBERED_HEADS && !heads.contains_key(stream) {
            heads.clear();
        }
        let newer = heads.get(stream).is_none_or(|h| h.seq < head.seq);
        if newer {
            heads.insert(stream.to_owned(), head);
        }
    }

    fn forget(&self, stream: &str) {
        self.lock().remove(stream);
    }
}

/// The key of `stream`'s head hint in the meta table.
pub(super) fn head_hint_key(stream: &str) -> Item {
    super::meta_key(format!("{HEAD_HINT_PK}{stream}"), "HEAD")
}

impl DynamoStore {
    /// The head an append to `stream` builds on: the remembered one (`Heads`), else read now.
    pub(super) async fn append_head(&self, stream: &str) -> Result<Option<ChainHead>> {
        if let Some(head) = self.heads.get(stream) {
            return Ok(Some(head));
        }
        let head = self.head(stream).await?.as_ref().map(ChainHead::from);
        if let Some(h) = &head {
            self.heads.remember(stream, h.clone());
        }
        Ok(head)
    }

    /// Keep what an append of `event` tells of its stream's head: committed, `event` is the head;
    /// cancelled (the seq lost to another writer, or the change already done) or unknown, the
    /// remembered head may be stale and is forgotten (the next attempt reads it).
    pub(super) fn appended(&self, event: &AuditEvent, outcome: Result<Transaction>) -> Result<Transaction> {
        self.settle_head(event, matches!(outcome, Ok(Transaction::Committed)));
        outcome
    }

    /// `appended`, told only whether the transaction with `event` committed.
    pub(super) fn settle_head(&self, event: &AuditEvent, committed: bool) {
        match committed {
            true => self.heads.remember(&event.stream, ChainHead::from(event)),
            false => self.heads.forget(&event.stream),
        }
    }

    /// The update that makes `event` its stream's head hint (in the transaction that appends it). No
    /// condition: transactions on the stream commit in seq order, and a hint is only a guess.
    pub(super) fn head_hint_update(&self, event: &AuditEvent) -> Result<TransactWriteItem> {
        let update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .set_key(Some(head_hint_key(&event.stream)))
            .update_expression("SET #q = :q, #t = :t, #h = :h, #a = :a")
            .expression_attribute_names("#q", "seq")
            .expression_attribute_names("#t", "ts")
            .expression_attribute_names("#h", "hash")
            .expression_attribute_names("#a", "audit_table")
            .expression_attribute_values(":q", n(event.seq))
            .expression_attribute_values(":t", s(&event.ts))
            .expression_attribute_values(":h", s(&event.hash))
            .expression_attribute_values(":a", s(&self.audit_table))
            .build();
        Ok(TransactWriteItem::builder().update(super::build(update)?).build())
    }

    /// A head hint read with a change's credential: remembered when it is of this audit table (a hint
    /// written before the audit table was restored from a backup names the old table, and is ignored:
    /// it may be ahead of the restored chain, and a guess ahead of the head would leave a gap). A hint
    /// that does not parse is ignored too, never an error: it is only a guess, and failing the gate on
    /// it would stop every change in the workspace, including the append that would rewrite it.
    pub(super) fn head_hint_read(&self, item: &Item) {
        let parsed = (|| -> Result<Option<(String, ChainHead)>> {
            let pk = get_s(item, "pk")?;
            let Some(stream) = pk.strip_prefix(HEAD_HINT_PK) else { return Ok(None) };
            if get_s(item, "audit_table")? != self.audit_table {
                return Ok(None);
            }
            let seq = get_n(item, "seq")?.filter(|&q| q >= 1);
            let Some(seq) = seq else { return Ok(None) };
            Ok(Some((
                stream.to_owned(),
                ChainHead { seq: seq as u64, ts: get_s(item, "ts")?, hash: get_s(item, "hash")? },
            )))
        })();
        match parsed {
            Ok(Some((stream, head))) => self.heads.remember(&stream, head),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "an audit head hint that does not parse: ignored"),
        }
    }

    /// Up to `limit` events a query yields, page after page, from at most `max_pages` pages; and the
    /// key the read stopped at when the page bound, not the limit or the end, stopped it.
    async fn events_bounded(
        &self,
        req: QueryFluentBuilder,
        limit: usize,
        max_pages: usize,
    ) -> Result<(Vec<AuditEvent>, Option<Item>)> {
        let mut events = Vec::new();
        let mut start: Option<Item> = None;
        for _ in 0..max_pages {
            let out =
                req.clone().set_exclusive_start_key(start.take()).send().await.map_err(err(Dependency::AuditLog))?;
            for item in out.items() {
                if events.len() == limit {
                    return Ok((events, None));
                }
                events.push(event_from_item(item)?);
            }
            match out.last_evaluated_key {
                Some(k) if events.len() < limit => start = Some(k),
                _ => return Ok((events, None)),
            }
        }
        Ok((events, start))
    }

    /// Every event a query yields, page after page, up to `limit`.
    pub(super) async fn events(&self, req: QueryFluentBuilder, limit: usize) -> Result<Vec<AuditEvent>> {
        Ok(self.events_bounded(req, limit, usize::MAX).await?.0)
    }

    /// What an event adds to a transaction: its item, and for a stream's first event the stream's
    /// birth (`BIRTHS_STREAM`). Both conditional: a birth in the same millisecond as another stream's
    /// cancels the transaction like a lost seq, and the writer retries with a new time.
    pub(super) fn event_puts(&self, event: &AuditEvent) -> Result<Vec<TransactWriteItem>> {
        let mut items = vec![self.put(&self.audit_table, Self::event_item(event)?, "attribute_not_exists(seq)")?];
        if event.seq == 1 {
            let birth = Item::from([
                ("stream".into(), s(BIRTHS_STREAM)),
                ("seq".into(), n(epoch_ms(&event.ts)?)),
                ("born".into(), s(&event.stream)),
                ("ts".into(), s(&event.ts)),
            ]);
            items.push(self.put(&self.audit_table, birth, "attribute_not_exists(seq)")?);
        }
        Ok(items)
    }

    /// The first (`first`) or last item of one partition of the audit table, read consistently.
    async fn end_item(&self, stream: &str, first: bool) -> Result<Option<Item>> {
        let out = self
            .client
            .query()
            .table_name(&self.audit_table)
            .key_condition_expression("#s = :s")
            .expression_attribute_names("#s", "stream")
            .expression_attribute_values(":s", s(stream))
            .scan_index_forward(first)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(err(Dependency::AuditLog))?;
        Ok(out.items().first().cloned())
    }

    pub(super) fn event_item(event: &AuditEvent) -> Result<Item> {
        Ok(Item::from([
            ("stream".into(), s(&event.stream)),
            ("seq".into(), n(event.seq)),
            ("ts".into(), s(&event.ts)),
            ("action".into(), s(&event.action)),
            ("actor".into(), s(&event.actor)),
            ("hash".into(), s(&event.hash)),
            // Keys of the `by-day-shard` index (the daily export) and the `by-action` index (searches).
            ("day_shard".into(), s(format!("{}#{:02}", event.day(), shard_of(&event.stream)))),
            ("ord".into(), s(event.ord_key())),
            ("action_shard".into(), s(format!("{}#{:02}", event.action, shard_of(&event.stream)))),
            ("at".into(), s(event.at_key())),
            ("event".into(), s(event.canonical()?)),
        ]))
    }

    /// The first seq of `stream` whose `ts` is at least `bound`, in `1..=head + 1`: a binary search
    /// over seq, which orders a stream's events by time too (`ts` never goes back within a stream).
    async fn first_seq_at_or_after(&self, stream: &str, head: u64, bound: &str) -> Result<u64> {
        let (mut lo, mut hi) = (1u64, head + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match AuditLog::event(self, stream, mid).await? {
                Some(e) if e.ts.as_str() < bound => lo = mid + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// A search within one stream: the seq range its time bounds and cursor cover, read from the table.
    async fn search_stream(&self, stream: &str, q: &AuditSearch) -> Result<SearchPage> {
        let Some(head) = self.head(stream).await? else { return Ok(SearchPage::default()) };
        let cursor = q.after.as_deref().map(parse_at_key).transpose()?;
        if cursor.as_ref().is_some_and(|(_, cursor_stream, _)| cursor_stream != stream) {
            return Err(Error::BadRequest("cursor is not one this search returned".into()));
        }
        let first = match (&q.since, cursor) {
            // A cursor at or after `since` is where the search goes on (`ts` never goes back within a
            // stream): no binary search on every page.
            (Some(since), Some((ts, _, seq))) if ts.as_str() >= since.as_str() => seq + 1,
            (Some(since), cursor) => {
                let at = self.first_seq_at_or_after(stream, head.seq, since).await?;
                cursor.map_or(at, |(_, _, seq)| at.max(seq + 1))
            }
            (None, cursor) => cursor.map_or(1, |(_, _, seq)| seq + 1),
        };
        let end = match &q.until {
            Some(until) => self.first_seq_at_or_after(stream, head.seq, until).await?,
            None => head.seq + 1,
        };
        if first >= end {
            return Ok(SearchPage::default());
        }
        let mut req = self
            .client
            .query()
            .table_name(&self.audit_table)
            .key_condition_expression("#s = :s AND #q BETWEEN :first AND :last")
            .expression_attribute_names("#s", "stream")
            .expression_attribute_names("#q", "seq")
            .expression_attribute_values(":s", s(stream))
            .expression_attribute_values(":first", n(first))
            .expression_attribute_values(":last", n(end - 1))
            .consistent_read(true);
        req = equal_filters(req, &[("action", q.action.as_deref()), ("actor", q.actor.as_deref())]);
        let (events, stopped) = self.events_bounded(req.limit(SEARCH_PAGE), q.limit, SEARCH_PAGES).await?;
        let resume_after = match stopped.as_ref().and_then(|k| get_n(k, "seq").ok().flatten()) {
            Some(seq) => AuditLog::event(self, stream, seq as u64).await?.map(|e| e.at_key()),
            None => None,
        };
        Ok(SearchPage { events, resume_after })
    }

    /// A search by action: each shard of the `by-action` index (only the stream's own shard when the
    /// search names a stream) in `at` order, merged.
    async fn search_action(&self, action: &str, q: &AuditSearch) -> Result<SearchPage> {
        let shards: Vec<u8> = match &q.stream {
            Some(stream) => vec![shard_of(stream)],
            None => (0..AUDIT_SHARDS).collect(),
        };
        let keys = shards.into_iter().map(|shard| format!("{action}#{shard:02}")).collect();
        let filters = [("stream", q.stream.as_deref()), ("actor", q.actor.as_deref())];
        self.search_by_time(AUDIT_ACTION_INDEX, "action_shard", keys, &filters, q).await
    }

    /// A search by actor alone: the actor's partition of the `by-actor` index, in `at` order.
    async fn search_actor(&self, actor: &str, q: &AuditSearch) -> Result<SearchPage> {
        self.search_by_time(AUDIT_ACTOR_INDEX, "actor", vec![actor.to_owned()], &[], q).await
    }

    /// A search of an index whose range key is `at` (`{ts}#{stream}#{seq:020}`): each of `keys` (values of
    /// its hash key `hash`) read in `at` order within the search's bounds, filtered, and merged.
    async fn search_by_time(
        &self,
        index: &str,
        hash: &str,
        keys: Vec<String>,
        filters: &[(&str, Option<&str>)],
        q: &AuditSearch,
    ) -> Result<SearchPage> {
        // The lower key bound: the cursor (exclusive, filtered below) or `since`, whichever is later.
        let from = match (&q.after, &q.since) {
            (Some(a), Some(since)) => Some(a.clone().max(since.clone())),
            (a, since) => a.clone().or_else(|| since.clone()),
        };
        if let (Some(from), Some(until)) = (&from, &q.until)
            && from >= until
        {
            return Ok(SearchPage::default());
        }
        let queries = keys.into_iter().map(|k| {
            let mut req = self
                .client
                .query()
                .table_name(&self.audit_table)
                .index_name(index)
                .expression_attribute_names("#h", hash)
                .expression_attribute_values(":k", s(k));
            let key = match (&from, &q.until) {
                (Some(from), Some(until)) => {
                    req = req
                        .expression_attribute_values(":from", s(from))
                        .expression_attribute_values(":until", s(until));
                    "#h = :k AND #at BETWEEN :from AND :until"
                }
                (Some(from), None) => {
                    req = req.expression_attribute_values(":from", s(from));
                    "#h = :k AND #at >= :from"
                }
                (None, Some(until)) => {
                    req = req.expression_attribute_values(":until", s(until));
                    "#h = :k AND #at < :until"
                }
                (None, None) => "#h = :k",
            };
            if key.contains("#at") {
                req = req.expression_attribute_names("#at", "at");
            }
            req = req.key_condition_expression(key);
            req = equal_filters(req, filters);
            // One more than asked: the cursor's own event may come back (BETWEEN is inclusive).
            self.events_bounded(req.limit(SEARCH_PAGE), q.limit + 1, SEARCH_PAGES)
        });
        let mut events: Vec<AuditEvent> = Vec::new();
        // The earliest key a shard stopped at: nothing after it is certain yet.
        let mut resume_after: Option<String> = None;
        for shard in futures_util::future::join_all(queries).await {
            let (shard_events, stopped) = shard?;
            events.extend(shard_events);
            if let Some(at) = stopped.as_ref().and_then(|k| get_s(k, "at").ok()) {
                resume_after = Some(resume_after.map_or(at.clone(), |r: String| r.min(at)));
            }
        }
        if let Some(r) = &resume_after {
            events.retain(|e| e.at_key() <= *r);
        }
        // The key bounds were inclusive; the cursor and `until` are not.
        events
            .retain(|e| q.after.as_ref().is_none_or(|a| e.at_key() > *a) && q.until.as_ref().is_none_or(|u| e.ts < *u));
        events.sort_by_key(AuditEvent::at_key);
        events.truncate(q.limit);
        Ok(SearchPage { events, resume_after })
    }
}

#[async_trait]
impl AuditLog for DynamoStore {
    async fn append(&self, draft: AuditDraft) -> Result<AuditEvent> {
        let counters = self.counter_update(BUSINESS_COUNTERS, &counter_deltas(None, &draft))?;
        for attempt in 0..APPEND_ATTEMPTS {
            let head = self.append_head(&draft.stream).await?;
            let event = draft.clone().seal_after(head.as_ref(), now_rfc3339_ms())?;
            let mut items = self.event_puts(&event)?;
            items.push(TransactWriteItem::builder().update(counters.clone()).build());
            items.push(self.head_hint_update(&event)?);
            // The event and its counters in one transaction; a re-send after a lost answer is idempotent.
            let reasons = match self.appended(&event, self.transact(items).await)? {
                Transaction::Committed => return Ok(event),
                Transaction::Cancelled(reasons) => reasons,
            };
            if reasons.iter().any(|c| c.as_deref() == Some("ValidationError")) {
                return Err(Error::StoreRefused(format!("append cancelled: {reasons:?}")));
            }
            // Lost the seq to another writer, or a transaction conflict: retry after the new head.
            crate::adapters::backoff(attempt.min(4)).await;
        }
        Err(Error::unavailable(Dependency::AuditLog, "could not claim an audit sequence number"))
    }

    async fn append_once(&self, draft: AuditDraft, key: &str) -> Result<Option<AuditEvent>> {
        let counters = self.counter_update(BUSINESS_COUNTERS, &counter_deltas(None, &draft))?;
        // The key's marker in the meta table (`ONCE#{key}`), written with the event: a second append
        // of the same key is cancelled by the marker's condition and writes nothing.
        let marker = Item::from([
            ("pk".into(), s(format!("{ONCE_PK}{key}"))),
            ("sk".into(), s("once")),
            ("at".into(), s(now_rfc3339_ms())),
        ]);
        for attempt in 0..APPEND_ATTEMPTS {
            let head = self.append_head(&draft.stream).await?;
            let event = draft.clone().seal_after(head.as_ref(), now_rfc3339_ms())?;
            let mut items = vec![self.put(&self.table, marker.clone(), super::ABSENT)?];
            items.extend(self.event_puts(&event)?);
            items.push(TransactWriteItem::builder().update(counters.clone()).build());
            items.push(self.head_hint_update(&event)?);
            let reasons = match self.appended(&event, self.transact(items).await)? {
                Transaction::Committed => return Ok(Some(event)),
                Transaction::Cancelled(reasons) => reasons,
            };
            if reasons.first().is_some_and(|c| c.as_deref() == Some("ConditionalCheckFailed")) {
                return Ok(None);
            }
            if reasons.iter().any(|c| c.as_deref() == Some("ValidationError")) {
                return Err(Error::StoreRefused(format!("append cancelled: {reasons:?}")));
            }
            crate::adapters::backoff(attempt.min(4)).await;
        }
        Err(Error::unavailable(Dependency::AuditLog, "could not claim an audit sequence number"))
    }

    async fn head(&self, stream: &str) -> Result<Option<AuditEvent>> {
        self.end_item(stream, false).await?.as_ref().map(event_from_item).transpose()
    }

    async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let mut req = self
            .client
            .query()
            .table_name(&self.audit_table)
            .key_condition_expression("#s = :s AND #q > :after")
            .expression_attribute_names("#s", "stream")
            .expression_attribute_names("#q", "seq")
            .expression_attribute_values(":s", s(&q.stream))
            .expression_attribute_values(":after", n(q.after_seq.unwrap_or(0)))
            .consistent_read(true);
        let mut filters = Vec::new();
        if let Some(since) = &q.since {
            filters.push("ts >= :since");
            req = req.expression_attribute_values(":since", s(since));
        }
        if let Some(until) = &q.until {
            filters.push("ts < :until");
            req = req.expression_attribute_values(":until", s(until));
        }
        if !filters.is_empty() {
            req = req.filter_expression(filters.join(" AND "));
        }
        self.events(req, q.limit).await
    }

    async fn event(&self, stream: &str, seq: u64) -> Result<Option<AuditEvent>> {
        // A Query, not a GetItem: writer roles may not GetItem the audit table.
        let out = self
            .client
            .query()
            .table_name(&self.audit_table)
            .key_condition_expression("#s = :s AND #q = :q")
            .expression_attribute_names("#s", "stream")
            .expression_attribute_names("#q", "seq")
            .expression_attribute_values(":s", s(stream))
            .expression_attribute_values(":q", n(seq))
            .consistent_read(true)
            .send()
            .await
            .map_err(err(Dependency::AuditLog))?;
        out.items().first().map(event_from_item).transpose()
    }

    async fn search(&self, q: &AuditSearch) -> Result<SearchPage> {
        match (&q.action, &q.stream) {
            (Some(action), _) => self.search_action(action, q).await,
            (None, Some(stream)) => self.search_stream(stream, q).await,
            (None, None) => match &q.actor {
                Some(actor) => self.search_actor(actor, q).await,
                None => Err(Error::BadRequest("a search names a workspace, an action or an actor".into())),
            },
        }
    }

    fn day_shards(&self) -> u8 {
        AUDIT_SHARDS
    }

    async fn first_event_day(&self) -> Result<Option<String>> {
        match self.end_item(BIRTHS_STREAM, true).await? {
            None => Ok(None),
            Some(item) => Ok(Some(get_s(&item, "ts")?.chars().take(10).collect())),
        }
    }

    async fn read_day_shard(&self, day: &str, shard: u8, after: Option<&str>, limit: usize) -> Result<Vec<AuditEvent>> {
        let mut req = self
            .client
            .query()
            .table_name(&self.audit_table)
            .index_name(AUDIT_DAY_INDEX)
            .expression_attribute_values(":d", s(format!("{day}#{shard:02}")));
        req = match after {
            Some(ord) => req
                .key_condition_expression("day_shard = :d AND ord > :after")
                .expression_attribute_values(":after", s(ord)),
            None => req.key_condition_expression("day_shard = :d"),
        };
        self.events(req.limit(limit.min(1000) as i32), limit).await
    }

    async fn check(&self) -> Result<()> {
        self.client
            .get_item()
            .table_name(&self.audit_table)
            .key("stream", s("~probe"))
            .key("seq", n(0))
            .send()
            .await
            .map_err(err(Dependency::AuditLog))?;
        Ok(())
    }
}
