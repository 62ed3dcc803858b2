//! DynamoDB MetaStore and AuditLog. Meta table: `pk`/`sk` strings (tokens `TOKEN#{sha256}`, token
//! ids `TOKENID#{id}`, links `WS#{ws}`/`BLOB#{digest}`, bundle versions `WS#{ws}`/`BUNDLE#…`,
//! ledgers `GOV#{ws}`/`LEDGER#…` and `DECISION#…`, counters `COUNTER#{name}`/`SHARD#{n}`, the freeze
//! switch `FREEZE`/`FREEZE`, workspace suspensions `SUSPENDED`/`{ws}`). Each
//! partition-key prefix is written by one function only (IAM `dynamodb:LeadingKeys`).
//! Audit table: `stream` (S) / `seq` (N), the canonical event in `event`.
//!
//! Append never overwrites: every audit put is conditional on `attribute_not_exists(seq)`. A meta
//! change and its event go in one TransactWriteItems; when the transaction is cancelled, the
//! cancellation reasons say whether the change was already in effect (done, nothing written) or the
//! audit seq was taken by a concurrent writer (re-read the head, retry).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use crate::domain::audit::{AUDIT_SHARDS, parse_at_key, shard_of};
use crate::domain::time::now_rfc3339_ms;
use crate::domain::{AuditDraft, AuditEvent, Digest, Scope, TokenRecord, WorkspaceId};
use crate::error::{Dependency, Error, Result};
use crate::ports::{
    AuditLog, AuditQuery, AuditSearch, BUSINESS_COUNTERS, BlobLink, BundleVersion, Change, Commit, Freeze, Gate,
    LedgerReceipt, MetaStore, SearchPage, SigningKeyRecord, Suspension, counter_deltas,
};

type Item = HashMap<String, AttributeValue>;

/// Attempts at claiming an audit seq before giving up with 503 (each loss means another writer won).
const APPEND_ATTEMPTS: u32 = 200;
/// Counter shards, each its own partition (`COUNTER#{group}#{n}`): every commit moves one, so they
/// must not share a partition's write limit (32 × ~500 transactional adds/s).
const COUNTER_SHARDS: u8 = 32;
/// Items a search evaluates per page, and pages per search (per index shard): a search whose filter
/// matches little answers a short page and a cursor instead of reading on without bound.
const SEARCH_PAGE: i32 = 250;
const SEARCH_PAGES: usize = 4;

pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    audit_table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s(item: &Item, k: &str) -> Result<String> {
    match item.get(k) {
        Some(AttributeValue::S(v)) => Ok(v.clone()),
        _ => Err(Error::Internal(format!("stored item lacks string {k}"))),
    }
}

fn get_n(item: &Item, k: &str) -> Result<Option<i64>> {
    match item.get(k) {
        Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| Error::Internal(format!("bad number {k}"))),
        None | Some(AttributeValue::Null(_)) => Ok(None),
        _ => Err(Error::Internal(format!("stored item has non-number {k}"))),
    }
}

fn err<E: std::error::Error + 'static, R: std::fmt::Debug>(dep: Dependency) -> impl Fn(SdkError<E, R>) -> Error {
    move |e| Error::unavailable(dep, DisplayErrorContext(e))
}

fn build<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| Error::Internal(format!("request builder: {e}")))
}

fn token_item(t: &TokenRecord) -> Item {
    let mut item = Item::from([
        ("pk".into(), s(format!("TOKEN#{}", t.sha256))),
        ("sk".into(), s("TOKEN")),
        ("id".into(), s(&t.id)),
        ("sha256".into(), s(&t.sha256)),
        ("user".into(), s(&t.user)),
        ("role".into(), s(t.role.as_str())),
        ("workspace_id".into(), s(t.workspace_id.as_str())),
        ("created_at".into(), n(t.created_at)),
        ("disabled".into(), AttributeValue::Bool(t.disabled)),
        ("created_by".into(), s(&t.created_by)),
    ]);
    if let Some(exp) = t.expires_at {
        item.insert("expires_at".into(), n(exp));
    }
    if let Some(d) = &t.description {
        item.insert("description".into(), s(d));
    }
    item
}

fn token_from_item(item: &Item) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: get_s(item, "id")?,
        sha256: get_s(item, "sha256")?,
        user: get_s(item, "user")?,
        role: get_s(item, "role")?.parse()?,
        workspace_id: Scope::parse(&get_s(item, "workspace_id")?)?,
        created_at: get_n(item, "created_at")?.unwrap_or(0),
        expires_at: get_n(item, "expires_at")?,
        disabled: matches!(item.get("disabled"), Some(AttributeValue::Bool(true))),
        created_by: get_s(item, "created_by")?,
        description: get_s(item, "description").ok(),
        replaced_by: get_s(item, "replaced_by").ok(),
    })
}

/// Sort key of a bundle version under its workspace's partition: `BUNDLE#{name}#{version}` (names
/// and versions never hold `#`, which sorts before every character they may hold, so the key order is
/// the (name, version) order).
fn bundle_sk(name: &str, version: &str) -> String {
    format!("BUNDLE#{name}#{version}")
}

fn bundle_from_item(ws: &WorkspaceId, item: &Item) -> Result<BundleVersion> {
    let n = |k: &str| get_n(item, k).map(|v| v.unwrap_or(0));
    Ok(BundleVersion {
        workspace_id: ws.to_string(),
        name: get_s(item, "name")?,
        version: get_s(item, "version")?,
        manifest_digest: Digest::parse(&get_s(item, "manifest_digest")?)?,
        files: n("files")? as u64,
        bytes: n("bytes")? as u64,
        registered_at: n("registered_at")?,
        registered_by: get_s(item, "registered_by")?,
        registered_user: get_s(item, "registered_user")?,
    })
}

/// The freeze switch's item (`pk` = `sk` = `FREEZE`), written by the token function only.
const FREEZE_PK: &str = "FREEZE";

/// The partition of the workspace suspension switches (`pk` = `SUSPENDED`, `sk` = the workspace id;
/// attributes `suspended` (BOOL), `reason`, `by`, `at`), written by the token function only. One
/// partition: status lists the suspended workspaces with one Query; a request reads its workspace's
/// item in the BatchGetItem that reads its token.
const SUSPENDED_PK: &str = "SUSPENDED";

fn suspension_from_item(item: &Item) -> Result<Suspension> {
    Ok(Suspension {
        workspace_id: get_s(item, "sk")?,
        suspended: matches!(item.get("suspended"), Some(AttributeValue::Bool(true))),
        reason: get_s(item, "reason").ok(),
        by: get_s(item, "by").ok(),
        at: get_s(item, "at").ok(),
    })
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

fn meta_key(pk: impl Into<String>, sk: &str) -> Item {
    Item::from([("pk".into(), s(pk)), ("sk".into(), s(sk))])
}

fn freeze_from_item(item: &Item) -> Freeze {
    Freeze {
        frozen: matches!(item.get("frozen"), Some(AttributeValue::Bool(true))),
        reason: get_s(item, "reason").ok(),
        by: get_s(item, "by").ok(),
        at: get_s(item, "at").ok(),
    }
}

/// The partition of the keys the registry signed with (written by the ledger writer, `waive`).
const SIGNING_KEYS_PK: &str = "GOV#keys";

/// Sort key of a ledger receipt: `LEDGER#{name}#{version}#{seq:020}` (zero-padded: key order is seq
/// order).
fn ledger_sk(name: &str, version: &str, seq: u64) -> String {
    format!("LEDGER#{name}#{version}#{seq:020}")
}

/// Global secondary index of the audit table the daily export reads: hash key `day_shard`
/// (`{YYYY-MM-DD}#{shard:02}`, the shard of the stream), range key `ord` (`{stream}#{seq:020}`), all
/// attributes. Sharding spreads one day's writes over `AUDIT_SHARDS` partitions; each shard holds
/// whole streams in (stream, seq) order, so the export merges the shards without sorting.
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

/// How one TransactWriteItems ended, once its outcome is known.
enum Transaction {
    Committed,
    /// Cancelled: nothing was written; the cancellation reason code of each item, in order.
    Cancelled(Vec<Option<String>>),
}

/// Re-sends of one transaction, each attempt's timeout, and the time after which no re-send starts:
/// at most 16 s + 6 s, inside the 29 s of the API Gateway integration and the Lambda timeout.
const TRANSACT_RESENDS: u32 = 3;
const TRANSACT_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6);
const TRANSACT_BUDGET: std::time::Duration = std::time::Duration::from_secs(16);

/// DynamoDB refused the request because an item is too large (over 400 KB): the input's fault, never
/// an outage, and never retried. Any other ValidationException is our own bug or an operator's
/// misconfiguration (a key schema that does not match): an internal error, not the client's.
fn is_item_too_large<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().is_some_and(|s| {
        s.code() == Some("ValidationException") && s.message().is_some_and(|m| m.to_ascii_lowercase().contains("size"))
    })
}

fn is_throttled<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|s| s.code()).is_some_and(|c| {
        matches!(c, "ThrottlingException" | "ProvisionedThroughputExceededException" | "RequestLimitExceeded")
    })
}

/// True when a failed call may nevertheless have been applied: no definite answer from DynamoDB
/// (timeout, connection lost, unreadable response) or a server-side (5xx) error. A 4xx answer
/// (throttled, not found, denied) is definite: nothing was written.
fn is_ambiguous<E>(e: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> bool {
    match e {
        SdkError::ConstructionFailure(_) => false,
        SdkError::ServiceError(_) => e.raw_response().is_none_or(|r| r.status().as_u16() >= 500),
        _ => true,
    }
}

impl DynamoStore {
    /// One TransactWriteItems with its own client request token, resolved. The SDK's own retries are
    /// off for this call: they would hide an attempt that may have committed behind a later, definite
    /// refusal. Each attempt here has its own short timeout; when an attempt's outcome is unknown (see
    /// `is_ambiguous`), the same request is sent again with the same token (DynamoDB makes that
    /// idempotent for ten minutes: success without writing again if the first one committed). Once
    /// any attempt may have been applied, nothing but a definite commit or cancellation is reported
    /// as such: everything else is `OutcomeUnknown`, never "nothing changed".
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Transaction> {
        use aws_config::retry::RetryConfig;
        use aws_config::timeout::TimeoutConfig;
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).expect("OS random source");
        let token = hex::encode(raw);
        let started = std::time::Instant::now();
        let mut maybe_applied = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(&token)
                .customize()
                .config_override(
                    aws_sdk_dynamodb::config::Builder::default().retry_config(RetryConfig::disabled()).timeout_config(
                        TimeoutConfig::builder()
                            .operation_attempt_timeout(TRANSACT_ATTEMPT_TIMEOUT)
                            .operation_timeout(TRANSACT_ATTEMPT_TIMEOUT)
                            .build(),
                    ),
                )
                .send()
                .await;
            let e = match sent {
                Ok(_) => return Ok(Transaction::Committed),
                Err(e) => e,
            };
            if let Some(TransactWriteItemsError::TransactionCanceledException(tc)) = e.as_service_error() {
                return Ok(Transaction::Cancelled(
                    tc.cancellation_reasons().iter().map(|r| r.code().map(str::to_owned)).collect(),
                ));
            }
            if !maybe_applied && is_item_too_large(&e) {
                return Err(Error::StoreRefused(DisplayErrorContext(e).to_string()));
            }
            let in_progress =
                matches!(e.as_service_error(), Some(TransactWriteItemsError::TransactionInProgressException(_)));
            maybe_applied |= in_progress || is_ambiguous(&e);
            let retryable = maybe_applied || is_throttled(&e);
            if !retryable && e.as_service_error().and_then(|s| s.code()) == Some("ValidationException") {
                return Err(Error::Internal(format!("DynamoDB refused a transaction: {}", DisplayErrorContext(e))));
            }
            if !retryable {
                return Err(err(Dependency::MetaStore)(e));
            }
            if attempt > TRANSACT_RESENDS || started.elapsed() > TRANSACT_BUDGET {
                if !maybe_applied {
                    return Err(err(Dependency::MetaStore)(e));
                }
                tracing::error!(error = %DisplayErrorContext(&e), token, "transaction outcome unknown");
                return Err(Error::OutcomeUnknown(DisplayErrorContext(e).to_string()));
            }
            tracing::warn!(error = %DisplayErrorContext(&e), attempt, maybe_applied, "transaction re-sent with the same client request token");
            crate::adapters::backoff(attempt + 3).await;
        }
    }

    pub fn new(client: aws_sdk_dynamodb::Client, table: String, audit_table: String) -> DynamoStore {
        DynamoStore { client, table, audit_table }
    }

    /// `ADD` to counters of a group: one shard item (`COUNTER#{group}#{n}` / `SHARD`, n at random), each
    /// counter an attribute.
    fn counter_update(&self, group: &str, deltas: &[(String, i64)]) -> Result<Update> {
        let mut r = [0u8; 1];
        let _ = getrandom::fill(&mut r);
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(format!("COUNTER#{group}#{}", r[0] % COUNTER_SHARDS)))
            .key("sk", s("SHARD"));
        let mut adds = Vec::new();
        for (i, (name, delta)) in deltas.iter().enumerate() {
            adds.push(format!("#c{i} :c{i}"));
            update = update
                .expression_attribute_names(format!("#c{i}"), name)
                .expression_attribute_values(format!(":c{i}"), n(delta));
        }
        build(update.update_expression(format!("ADD {}", adds.join(", "))).build())
    }

    /// Meta-table items by key (at most 100), read consistently in one BatchGetItem; keys left
    /// unprocessed (throttling) are asked for again, a few times, then it is a 503.
    async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let mut pending = Some(build(KeysAndAttributes::builder().set_keys(Some(keys)).consistent_read(true).build())?);
        let mut items = Vec::new();
        for attempt in 0..5u32 {
            let Some(k) = pending.take() else { return Ok(items) };
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, k)
                .send()
                .await
                .map_err(err(Dependency::MetaStore))?;
            items.extend(out.responses().and_then(|r| r.get(&self.table)).into_iter().flatten().cloned());
            pending = out.unprocessed_keys().and_then(|u| u.get(&self.table)).filter(|k| !k.keys().is_empty()).cloned();
            if pending.is_some() {
                crate::adapters::backoff(attempt).await;
            }
        }
        match pending {
            None => Ok(items),
            Some(_) => Err(Error::unavailable(Dependency::MetaStore, "batch read throttled")),
        }
    }

    fn put(&self, table: &str, item: Item, condition: &str) -> Result<TransactWriteItem> {
        let put = build(Put::builder().table_name(table).set_item(Some(item)).condition_expression(condition).build())?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Disable a token, on condition that it exists and is still enabled; a rotation also records
    /// the token it was replaced by.
    fn disable(&self, sha256: &str, replaced_by: Option<&str>) -> Result<TransactWriteItem> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(format!("TOKEN#{sha256}")))
            .key("sk", s("TOKEN"))
            .condition_expression("attribute_exists(pk) AND disabled = :f")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":f", AttributeValue::Bool(false));
        update = match replaced_by {
            Some(id) => {
                update.update_expression("SET disabled = :t, replaced_by = :r").expression_attribute_values(":r", s(id))
            }
            None => update.update_expression("SET disabled = :t"),
        };
        Ok(TransactWriteItem::builder().update(build(update.build())?).build())
    }

    fn issue_items(&self, t: &TokenRecord) -> Result<Vec<TransactWriteItem>> {
        let absent = "attribute_not_exists(pk)";
        let pointer = Item::from([
            ("pk".into(), s(format!("TOKENID#{}", t.id))),
            ("sk".into(), s("TOKENID")),
            ("sha256".into(), s(&t.sha256)),
        ]);
        Ok(vec![self.put(&self.table, token_item(t), absent)?, self.put(&self.table, pointer, absent)?])
    }

    /// The meta-table writes of a change, each conditional on the change not being in effect yet.
    fn change_items(&self, change: &Change) -> Result<Vec<TransactWriteItem>> {
        let absent = "attribute_not_exists(pk)";
        match change {
            Change::IssueToken(t) => self.issue_items(t),
            Change::RevokeToken { sha256 } => Ok(vec![self.disable(sha256, None)?]),
            Change::RotateToken { old_sha256, new } => {
                let mut items = vec![self.disable(old_sha256, Some(&new.id))?];
                items.extend(self.issue_items(new)?);
                Ok(items)
            }
            Change::RegisterBundle(b) => {
                let item = Item::from([
                    ("pk".into(), s(format!("WS#{}", b.workspace_id))),
                    ("sk".into(), s(bundle_sk(&b.name, &b.version))),
                    ("name".into(), s(&b.name)),
                    ("version".into(), s(&b.version)),
                    ("manifest_digest".into(), s(b.manifest_digest.to_string())),
                    ("files".into(), n(b.files)),
                    ("bytes".into(), n(b.bytes)),
                    ("registered_at".into(), n(b.registered_at)),
                    ("registered_by".into(), s(&b.registered_by)),
                    ("registered_user".into(), s(&b.registered_user)),
                ]);
                Ok(vec![self.put(&self.table, item, absent)?])
            }
            Change::SetFreeze(f) => {
                // Freezing a frozen registry, or unfreezing one that is not frozen, changes nothing.
                let condition =
                    if f.frozen { "attribute_not_exists(pk) OR frozen = :other" } else { "frozen = :other" };
                let update = Update::builder()
                    .table_name(&self.table)
                    .key("pk", s(FREEZE_PK))
                    .key("sk", s(FREEZE_PK))
                    .update_expression("SET frozen = :v, reason = :r, #by = :b, #at = :a")
                    .condition_expression(condition)
                    .expression_attribute_names("#by", "by")
                    .expression_attribute_names("#at", "at")
                    .expression_attribute_values(":v", AttributeValue::Bool(f.frozen))
                    .expression_attribute_values(":other", AttributeValue::Bool(!f.frozen))
                    .expression_attribute_values(":r", s(f.reason.clone().unwrap_or_default()))
                    .expression_attribute_values(":b", s(f.by.clone().unwrap_or_default()))
                    .expression_attribute_values(":a", s(f.at.clone().unwrap_or_default()));
                Ok(vec![TransactWriteItem::builder().update(build(update.build())?).build()])
            }
            Change::SetSuspension(w) => {
                // Suspending a suspended workspace, or unsuspending one that is not, changes nothing.
                let condition =
                    if w.suspended { "attribute_not_exists(pk) OR suspended = :other" } else { "suspended = :other" };
                let update = Update::builder()
                    .table_name(&self.table)
                    .key("pk", s(SUSPENDED_PK))
                    .key("sk", s(&w.workspace_id))
                    .update_expression("SET suspended = :v, reason = :r, #by = :b, #at = :a")
                    .condition_expression(condition)
                    .expression_attribute_names("#by", "by")
                    .expression_attribute_names("#at", "at")
                    .expression_attribute_values(":v", AttributeValue::Bool(w.suspended))
                    .expression_attribute_values(":other", AttributeValue::Bool(!w.suspended))
                    .expression_attribute_values(":r", s(w.reason.clone().unwrap_or_default()))
                    .expression_attribute_values(":b", s(w.by.clone().unwrap_or_default()))
                    .expression_attribute_values(":a", s(w.at.clone().unwrap_or_default()));
                Ok(vec![TransactWriteItem::builder().update(build(update.build())?).build()])
            }
            Change::RecordUnregisteredExport { workspace_id, name, version, id } => {
                let item = Item::from([
                    ("pk".into(), s(format!("GOV#{workspace_id}"))),
                    ("sk".into(), s(format!("UNREGISTERED#{id}"))),
                    ("bundle".into(), s(format!("{name}@{version}"))),
                    ("recorded_at".into(), s(now_rfc3339_ms())),
                ]);
                Ok(vec![self.put(&self.table, item, absent)?])
            }
            Change::RecordSigningKey { key_id, pem } => {
                let item = Item::from([
                    ("pk".into(), s(SIGNING_KEYS_PK)),
                    ("sk".into(), s(format!("KEY#{key_id}"))),
                    ("pem".into(), s(pem)),
                    ("recorded_at".into(), s(now_rfc3339_ms())),
                ]);
                Ok(vec![self.put(&self.table, item, absent)?])
            }
            Change::RetireSigningKey { key_id, at, reason } => {
                let update = Update::builder()
                    .table_name(&self.table)
                    .key("pk", s(SIGNING_KEYS_PK))
                    .key("sk", s(format!("KEY#{key_id}")))
                    .update_expression("SET retired_at = :at, retired_reason = :r")
                    .condition_expression("attribute_exists(pem) AND attribute_not_exists(retired_at)")
                    .expression_attribute_values(":at", s(at))
                    .expression_attribute_values(":r", s(reason));
                Ok(vec![TransactWriteItem::builder().update(build(update.build())?).build()])
            }
            Change::AppendReceipt { workspace_id, name, version, receipt } => {
                let pk = format!("GOV#{workspace_id}");
                let mut item = Item::from([
                    ("pk".into(), s(&pk)),
                    ("sk".into(), s(ledger_sk(name, version, receipt.seq))),
                    ("seq".into(), n(receipt.seq)),
                    ("envelope".into(), s(&receipt.envelope)),
                ]);
                let mut items = Vec::new();
                if let Some(key) = &receipt.decision_key {
                    item.insert("decision_key".into(), s(key));
                    // The decision's own item: a second receipt of the same decision fails its condition.
                    let marker = Item::from([
                        ("pk".into(), s(&pk)),
                        ("sk".into(), s(format!("DECISION#{name}#{version}#{key}"))),
                        ("seq".into(), n(receipt.seq)),
                    ]);
                    items.push(self.put(&self.table, marker, absent)?);
                }
                items.insert(0, self.put(&self.table, item, absent)?);
                Ok(items)
            }
            Change::LinkBlob(l) => {
                let item = Item::from([
                    ("pk".into(), s(format!("WS#{}", l.workspace_id))),
                    ("sk".into(), s(format!("BLOB#{}", l.digest))),
                    ("size".into(), n(l.size)),
                    ("linked_at".into(), n(l.linked_at)),
                    ("linked_by".into(), s(&l.linked_by)),
                    ("slot".into(), n(l.slot)),
                ]);
                Ok(vec![self.put(&self.table, item, absent)?])
            }
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
    async fn events(&self, req: QueryFluentBuilder, limit: usize) -> Result<Vec<AuditEvent>> {
        Ok(self.events_bounded(req, limit, usize::MAX).await?.0)
    }

    fn event_item(event: &AuditEvent) -> Result<Item> {
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

    /// Every item a meta-table query yields, page after page.
    async fn meta_items(&self, req: QueryFluentBuilder) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page =
                req.clone().set_exclusive_start_key(start.take()).send().await.map_err(err(Dependency::MetaStore))?;
            items.extend(page.items().iter().cloned());
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(items),
            }
        }
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

    async fn get_meta(&self, pk: String, sk: &str) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(err(Dependency::MetaStore))?;
        Ok(out.item)
    }
}

#[async_trait]
impl MetaStore for DynamoStore {
    fn backend(&self) -> &'static str {
        "dynamodb"
    }

    async fn token_by_sha256(&self, sha256: &str) -> Result<Option<TokenRecord>> {
        self.get_meta(format!("TOKEN#{sha256}"), "TOKEN").await?.as_ref().map(token_from_item).transpose()
    }

    async fn gate(&self, token_sha256: Option<&str>, freeze: bool, workspace: Option<&WorkspaceId>) -> Result<Gate> {
        let mut keys = Vec::new();
        if let Some(sha) = token_sha256 {
            keys.push(meta_key(format!("TOKEN#{sha}"), "TOKEN"));
        }
        if freeze {
            keys.push(meta_key(FREEZE_PK, FREEZE_PK));
        }
        if let Some(ws) = workspace {
            keys.push(meta_key(SUSPENDED_PK, ws.as_str()));
        }
        let mut gate = Gate {
            token: None,
            freeze: freeze.then(Freeze::default),
            suspension: workspace.map(|ws| Suspension { workspace_id: ws.to_string(), ..Suspension::default() }),
        };
        if keys.is_empty() {
            return Ok(gate);
        }
        // One round trip for all of them (BatchGetItem, read consistently).
        for item in self.batch_get(keys).await? {
            match get_s(&item, "pk")?.as_str() {
                FREEZE_PK => gate.freeze = Some(freeze_from_item(&item)),
                SUSPENDED_PK => gate.suspension = Some(suspension_from_item(&item)?),
                _ => gate.token = Some(token_from_item(&item)?),
            }
        }
        Ok(gate)
    }

    async fn freeze(&self) -> Result<Freeze> {
        Ok(self.get_meta(FREEZE_PK.into(), FREEZE_PK).await?.as_ref().map(freeze_from_item).unwrap_or_default())
    }

    async fn suspended_workspaces(&self) -> Result<Vec<Suspension>> {
        let req = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .filter_expression("suspended = :t")
            .expression_attribute_values(":pk", s(SUSPENDED_PK))
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .consistent_read(true);
        self.meta_items(req).await?.iter().map(suspension_from_item).collect()
    }

    async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>> {
        let Some(pointer) = self.get_meta(format!("TOKENID#{id}"), "TOKENID").await? else {
            return Ok(None);
        };
        self.token_by_sha256(&get_s(&pointer, "sha256")?).await
    }

    /// A filtered Scan: token listing is an admin action over a small set of items.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let mut tokens = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :sk")
                .expression_attribute_values(":sk", s("TOKEN"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(err(Dependency::MetaStore))?;
            for item in out.items() {
                tokens.push(token_from_item(item)?);
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tokens)
    }

    async fn blob_link(&self, ws: &WorkspaceId, digest: &Digest) -> Result<Option<BlobLink>> {
        let Some(item) = self.get_meta(format!("WS#{ws}"), &format!("BLOB#{digest}")).await? else {
            return Ok(None);
        };
        Ok(Some(BlobLink {
            workspace_id: ws.to_string(),
            digest: digest.clone(),
            size: get_n(&item, "size")?.unwrap_or(0) as u64,
            linked_at: get_n(&item, "linked_at")?.unwrap_or(0),
            linked_by: get_s(&item, "linked_by")?,
            slot: u8::try_from(get_n(&item, "slot")?.unwrap_or(0))
                .map_err(|_| Error::Internal("stored link has a bad slot".into()))?,
        }))
    }

    async fn bundle_version(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Option<BundleVersion>> {
        let item = self.get_meta(format!("WS#{ws}"), &bundle_sk(name, version)).await?;
        item.as_ref().map(|i| bundle_from_item(ws, i)).transpose()
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let req = self
            .client
            .query()
            .table_name(&self.table)
            // `GOV#keys` is also the governance partition of a workspace named `keys`: only KEY# items.
            .key_condition_expression("pk = :pk AND begins_with(sk, :key)")
            .expression_attribute_values(":pk", s(SIGNING_KEYS_PK))
            .expression_attribute_values(":key", s("KEY#"))
            .consistent_read(true);
        let optional = |i: &Item, k: &str| i.get(k).and_then(|v| v.as_s().ok()).cloned();
        let mut keys: Vec<SigningKeyRecord> = self
            .meta_items(req)
            .await?
            .iter()
            .map(|i| {
                Ok(SigningKeyRecord {
                    key_id: get_s(i, "sk")?.trim_start_matches("KEY#").to_owned(),
                    pem: get_s(i, "pem")?,
                    recorded_at: get_s(i, "recorded_at")?,
                    retired_at: optional(i, "retired_at"),
                    retired_reason: optional(i, "retired_reason"),
                })
            })
            .collect::<Result<_>>()?;
        keys.sort_by(|a, b| (&a.recorded_at, &a.key_id).cmp(&(&b.recorded_at, &b.key_id)));
        Ok(keys)
    }

    async fn ledger(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Vec<LedgerReceipt>> {
        let req = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :l)")
            .expression_attribute_values(":pk", s(format!("GOV#{ws}")))
            .expression_attribute_values(":l", s(format!("LEDGER#{name}#{version}#")))
            .consistent_read(true);
        self.meta_items(req)
            .await?
            .iter()
            .map(|item| {
                Ok(LedgerReceipt {
                    seq: get_n(item, "seq")?.unwrap_or(0) as u64,
                    envelope: get_s(item, "envelope")?,
                    decision_key: get_s(item, "decision_key").ok(),
                })
            })
            .collect()
    }

    async fn ledger_head(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Option<LedgerReceipt>> {
        // Sort keys are zero-padded seqs: the last item in key order is the highest seq.
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :l)")
            .expression_attribute_values(":pk", s(format!("GOV#{ws}")))
            .expression_attribute_values(":l", s(format!("LEDGER#{name}#{version}#")))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(err(Dependency::MetaStore))?;
        page.items()
            .first()
            .map(|item| {
                Ok(LedgerReceipt {
                    seq: get_n(item, "seq")?.unwrap_or(0) as u64,
                    envelope: get_s(item, "envelope")?,
                    decision_key: get_s(item, "decision_key").ok(),
                })
            })
            .transpose()
    }

    async fn list_bundles(
        &self,
        ws: &WorkspaceId,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<BundleVersion>> {
        let pk = format!("WS#{ws}");
        let mut start = after
            .map(|(name, version)| Item::from([("pk".into(), s(&pk)), ("sk".into(), s(bundle_sk(&name, &version)))]));
        let mut out = Vec::new();
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :b)")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":b", s("BUNDLE#"))
                .consistent_read(true)
                .limit((limit - out.len()) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(err(Dependency::MetaStore))?;
            for item in page.items() {
                out.push(bundle_from_item(ws, item)?);
            }
            match page.last_evaluated_key {
                Some(k) if out.len() < limit => start = Some(k),
                _ => return Ok(out),
            }
        }
    }

    async fn commit(&self, change: Change, draft: AuditDraft) -> Result<Commit> {
        let change_items = self.change_items(&change)?;
        for attempt in 0..APPEND_ATTEMPTS {
            let head = self.head(&draft.stream).await?;
            let event = draft.clone().seal(head.as_ref(), now_rfc3339_ms())?;
            let mut items = change_items.clone();
            items.push(self.put(&self.audit_table, Self::event_item(&event)?, "attribute_not_exists(seq)")?);
            let deltas = counter_deltas(Some(&change), &draft);
            items.push(TransactWriteItem::builder().update(self.counter_update(BUSINESS_COUNTERS, &deltas)?).build());
            let reasons = match self.transact(items).await? {
                Transaction::Committed => return Ok(Commit::Applied(Box::new(event))),
                Transaction::Cancelled(reasons) => reasons,
            };
            let code = |i: usize| reasons.get(i).and_then(|c| c.as_deref());
            if (0..reasons.len()).any(|i| code(i) == Some("ValidationError")) {
                return Err(Error::StoreRefused(format!("transaction cancelled: {reasons:?}")));
            }
            if (0..change_items.len()).any(|i| code(i) == Some("ConditionalCheckFailed")) {
                return Ok(Commit::AlreadyDone);
            }
            // Lost the audit seq to another writer, or a transaction conflict: retry.
            crate::adapters::backoff(attempt.min(4)).await;
        }
        Err(Error::unavailable(Dependency::AuditLog, "could not claim an audit sequence number"))
    }

    async fn add_to_counters(&self, group: &str, deltas: &[(String, i64)]) -> Result<()> {
        // An update expression is at most 4 KB: 50 counters per write.
        for chunk in deltas.chunks(50) {
            let u = self.counter_update(group, chunk)?;
            self.client
                .update_item()
                .table_name(u.table_name())
                .set_key(Some(u.key().clone()))
                .update_expression(u.update_expression())
                .set_expression_attribute_names(u.expression_attribute_names().cloned())
                .set_expression_attribute_values(u.expression_attribute_values().cloned())
                .send()
                .await
                .map_err(err(Dependency::MetaStore))?;
        }
        Ok(())
    }

    async fn counters(&self, group: &str) -> Result<BTreeMap<String, i64>> {
        let keys = (0..COUNTER_SHARDS).map(|n| meta_key(format!("COUNTER#{group}#{n}"), "SHARD")).collect();
        let mut out = BTreeMap::new();
        for item in self.batch_get(keys).await? {
            for (k, v) in item {
                if let (false, AttributeValue::N(n)) = (k == "pk" || k == "sk", v) {
                    let n: i64 = n.parse().map_err(|_| Error::Internal(format!("counter {k} is not a number")))?;
                    *out.entry(k).or_insert(0) += n;
                }
            }
        }
        Ok(out)
    }

    async fn check(&self) -> Result<()> {
        self.get_meta("HEALTH#probe".into(), "HEALTH").await.map(|_| ())
    }
}

#[async_trait]
impl AuditLog for DynamoStore {
    async fn append(&self, draft: AuditDraft) -> Result<AuditEvent> {
        let counters = self.counter_update(BUSINESS_COUNTERS, &counter_deltas(None, &draft))?;
        for attempt in 0..APPEND_ATTEMPTS {
            let head = self.head(&draft.stream).await?;
            let event = draft.clone().seal(head.as_ref(), now_rfc3339_ms())?;
            let items = vec![
                self.put(&self.audit_table, Self::event_item(&event)?, "attribute_not_exists(seq)")?,
                TransactWriteItem::builder().update(counters.clone()).build(),
            ];
            // The event and its counters in one transaction; a re-send after a lost answer is idempotent.
            let reasons = match self.transact(items).await? {
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

    async fn head(&self, stream: &str) -> Result<Option<AuditEvent>> {
        let out = self
            .client
            .query()
            .table_name(&self.audit_table)
            .key_condition_expression("#s = :s")
            .expression_attribute_names("#s", "stream")
            .expression_attribute_values(":s", s(stream))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(err(Dependency::AuditLog))?;
        out.items().first().map(event_from_item).transpose()
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
