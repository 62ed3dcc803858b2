//! Batches of blob links (issue 19): which of many digests a workspace links (BatchGetItem, 100 keys
//! per call, the calls concurrent); many links with their audit events in TransactWriteItems of
//! `LINKS_PER_TRANSACTION` links each (two actions per link, the two counter items, the stream's head
//! hint and perhaps its birth: within DynamoDB's 100 actions). Each transaction is whole; a failure stops at the first transaction that
//! did not commit and says so (`LinksCommit`), and sending the same links again is idempotent.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::TransactWriteItem;

use super::{ABSENT, APPEND_ATTEMPTS, DynamoStore, Item, Transaction, catalog, get_n, get_s, meta_key};
use crate::domain::time::now_rfc3339_ms;
use crate::domain::{AuditDraft, AuditEvent, ChainHead, Digest, WorkspaceId};
use crate::error::{Dependency, Error, Result};
use crate::ports::{
    BUSINESS_COUNTERS, BlobLink, Change, Commit, LINKS_PER_TRANSACTION, LinksCommit, counter_deltas, workspace_deltas,
};

/// Keys per BatchGetItem (DynamoDB's limit).
const KEYS_PER_BATCH_GET: usize = 100;

fn link_from_item(ws: &WorkspaceId, item: &Item) -> Result<BlobLink> {
    let sk = get_s(item, "sk")?;
    let digest = sk.strip_prefix("BLOB#").ok_or_else(|| Error::Internal(format!("{sk} is not a blob link")))?;
    Ok(BlobLink {
        workspace_id: ws.to_string(),
        digest: Digest::parse(digest)?,
        size: get_n(item, "size")?.unwrap_or(0) as u64,
        linked_at: get_n(item, "linked_at")?.unwrap_or(0),
        linked_by: get_s(item, "linked_by")?,
        slot: u8::try_from(get_n(item, "slot")?.unwrap_or(0))
            .map_err(|_| Error::Internal("stored link has a bad slot".into()))?,
    })
}

impl DynamoStore {
    pub(super) async fn links_among(&self, ws: &WorkspaceId, digests: &[Digest]) -> Result<Vec<BlobLink>> {
        let mut unique: Vec<&Digest> = digests.iter().collect();
        unique.sort();
        unique.dedup();
        let reads = unique.chunks(KEYS_PER_BATCH_GET).map(|chunk| {
            let keys = chunk.iter().map(|d| meta_key(format!("WS#{ws}"), &format!("BLOB#{d}"))).collect();
            self.batch_get(keys)
        });
        let mut links = Vec::new();
        for items in futures_util::future::join_all(reads).await {
            for item in items? {
                links.push(link_from_item(ws, &item)?);
            }
        }
        Ok(links)
    }

    pub(super) async fn link_many(&self, links: Vec<(BlobLink, AuditDraft)>) -> LinksCommit {
        let mut out = LinksCommit::default();
        for chunk in links.chunks(LINKS_PER_TRANSACTION) {
            match self.link_chunk(chunk).await {
                Ok(done) => out.done.extend(done),
                Err(e) => {
                    out.failed = Some(e);
                    break;
                }
            }
        }
        out
    }

    /// One transaction's links: each link conditional on its absence, each event on its seq being free,
    /// the business counters and each workspace's counters moved once by the sum of the links'. A link
    /// found present (a concurrent writer) is `AlreadyDone` and the rest are tried again; a lost audit
    /// seq re-reads the head and tries again.
    async fn link_chunk(&self, chunk: &[(BlobLink, AuditDraft)]) -> Result<Vec<Commit>> {
        let mut done: Vec<Option<Commit>> = vec![None; chunk.len()];
        let mut pending: Vec<usize> = (0..chunk.len()).collect();
        for attempt in 0..APPEND_ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            let mut heads: BTreeMap<String, Option<ChainHead>> = BTreeMap::new();
            for &i in &pending {
                let stream = &chunk[i].1.stream;
                if !heads.contains_key(stream) {
                    heads.insert(stream.clone(), self.append_head(stream).await?);
                }
            }
            let (mut links, mut events, mut sealed) = (Vec::new(), Vec::new(), Vec::new());
            let mut business = BTreeMap::new();
            let mut per_ws: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
            for &i in &pending {
                let (link, draft) = &chunk[i];
                let head = heads.get_mut(&draft.stream).expect("read above");
                let event = draft.clone().seal_after(head.as_ref(), now_rfc3339_ms())?;
                let change = Change::LinkBlob(link.clone());
                links.push(self.put(&self.table, catalog::link_item(link), ABSENT)?);
                events.extend(self.event_puts(&event)?);
                crate::ports::summed(&mut business, counter_deltas(Some(&change), draft));
                if let Some((ws, deltas)) = workspace_deltas(&change) {
                    crate::ports::summed(per_ws.entry(ws.to_owned()).or_default(), deltas);
                }
                *head = Some(ChainHead::from(&event));
                sealed.push(event);
            }
            let mut items: Vec<TransactWriteItem> = links;
            items.extend(events);
            // Each stream's last event in this transaction becomes its head hint.
            let mut last: BTreeMap<String, AuditEvent> = BTreeMap::new();
            for event in &sealed {
                last.insert(event.stream.clone(), event.clone());
            }
            for event in last.values() {
                items.push(self.head_hint_update(event)?);
            }
            let business: Vec<(String, i64)> = business.into_iter().collect();
            items.push(TransactWriteItem::builder().update(self.counter_update(BUSINESS_COUNTERS, &business)?).build());
            for (ws, deltas) in per_ws {
                items.push(self.workspace_counter_update(&ws, &deltas.into_iter().collect::<Vec<_>>())?);
            }
            if items.len() > 100 {
                return Err(Error::Internal(format!("a link transaction of {} actions", items.len())));
            }
            let outcome = self.transact(items).await;
            for event in last.values() {
                // Committed, each stream's last event is its head; otherwise the guesses are forgotten.
                self.settle_head(event, matches!(outcome, Ok(Transaction::Committed)));
            }
            let reasons = match outcome? {
                Transaction::Committed => {
                    for (&i, event) in pending.iter().zip(sealed) {
                        done[i] = Some(Commit::Applied(Box::new(event)));
                    }
                    pending.clear();
                    break;
                }
                Transaction::Cancelled(reasons) => reasons,
            };
            let code = |j: usize| reasons.get(j).and_then(|c| c.as_deref());
            if (0..reasons.len()).any(|j| code(j) == Some("ValidationError")) {
                return Err(Error::StoreRefused(format!("transaction cancelled: {reasons:?}")));
            }
            let present: Vec<usize> =
                (0..pending.len()).filter(|&j| code(j) == Some("ConditionalCheckFailed")).collect();
            if present.is_empty() {
                // Lost an audit seq to another writer, or a transaction conflict: retry.
                crate::adapters::backoff(attempt.min(4)).await;
                continue;
            }
            for &j in &present {
                done[pending[j]] = Some(Commit::AlreadyDone);
            }
            pending = pending.into_iter().enumerate().filter(|(j, _)| !present.contains(j)).map(|(_, i)| i).collect();
        }
        if !pending.is_empty() {
            return Err(Error::unavailable(Dependency::AuditLog, "could not claim audit sequence numbers"));
        }
        Ok(done.into_iter().map(|c| c.expect("every link has an outcome")).collect())
    }
}
