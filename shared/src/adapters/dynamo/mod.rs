//! DynamoDB MetaStore and AuditLog, one module per concern: `tokens`, `catalog` (blob links, bundle
//! versions, governance ledgers, the signing-key history), `switches` (freeze, suspension, counters)
//! and `audit` (the audit table and its indexes); this module holds what they share (the client, item
//! helpers, the transaction) and the MetaStore port over them. Each partition-key prefix is written by
//! one function only (IAM `dynamodb:LeadingKeys`).
//!
//! A meta change and its audit event go in one TransactWriteItems; when the transaction is cancelled,
//! the cancellation reasons say whether the change was already in effect (done, nothing written) or
//! the audit seq was taken by a concurrent writer (re-read the head, retry).

mod audit;
mod batch;
mod catalog;
mod switches;
mod tokens;
mod verify;

use crate::adapters::lazy::LazyClient;
use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};

pub use self::audit::{AUDIT_ACTION_INDEX, AUDIT_ACTOR_INDEX, AUDIT_DAY_INDEX};
use self::switches::{FREEZE_PK, Position, SUSPENDED_PK};
use crate::domain::governance::State;
use crate::domain::time::now_rfc3339_ms;
use crate::domain::{AuditDraft, Digest, TokenRecord, WorkspaceId};
use crate::error::{Dependency, Error, Result};
use crate::ports::{
    BUSINESS_COUNTERS, BlobLink, BundleVersion, Change, Commit, Freeze, Gate, LedgerReceipt, LinksCommit, MetaStore,
    Prefetch, SigningKeyRecord, Suspension, VerifyJob, WorkspaceCounts, counter_deltas, workspace_deltas,
};

type Item = HashMap<String, AttributeValue>;

/// Attempts at claiming an audit seq before giving up with 503 (each loss means another writer won).
const APPEND_ATTEMPTS: u32 = 200;
/// The condition of every put that creates an item: it does not exist yet.
const ABSENT: &str = "attribute_not_exists(pk)";

pub struct DynamoStore {
    client: LazyClient<aws_sdk_dynamodb::Client>,
    table: String,
    audit_table: String,
    /// The last event this instance appended to or read as the head of each stream (`audit::Heads`).
    heads: audit::Heads,
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

fn meta_key(pk: impl Into<String>, sk: &str) -> Item {
    Item::from([("pk".into(), s(pk)), ("sk".into(), s(sk))])
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

    pub fn new(
        client: impl Into<LazyClient<aws_sdk_dynamodb::Client>>,
        table: String,
        audit_table: String,
    ) -> DynamoStore {
        DynamoStore { client: client.into(), table, audit_table, heads: audit::Heads::default() }
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

    /// Every item a meta-table query yields, page after page.
    async fn meta_items(&self, req: QueryFluentBuilder) -> Result<Vec<Item>> {
        self.meta_items_from(req, None, usize::MAX).await
    }

    /// The items of `req` from `start` (exclusive), page after page, until `limit` or the end.
    async fn meta_items_from(
        &self,
        req: QueryFluentBuilder,
        mut start: Option<Item>,
        limit: usize,
    ) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        loop {
            let page_limit = i32::try_from(limit - items.len()).ok();
            let page = req
                .clone()
                .set_limit(page_limit)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(err(Dependency::MetaStore))?;
            items.extend(page.items().iter().cloned());
            match page.last_evaluated_key {
                Some(k) if items.len() < limit => start = Some(k),
                _ => return Ok(items),
            }
        }
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

    /// The meta-table writes of a change, each conditional on the change not being in effect yet.
    fn change_items(&self, change: &Change) -> Result<Vec<TransactWriteItem>> {
        let put = |item| self.put(&self.table, item, ABSENT);
        Ok(match change {
            Change::IssueToken(t) => self.issue_items(t)?,
            Change::RevokeToken { sha256 } => vec![self.disable(sha256, None)?],
            Change::RotateToken { old_sha256, new } => {
                let mut items = vec![self.disable(old_sha256, Some(&new.id))?];
                items.extend(self.issue_items(new)?);
                items
            }
            Change::RegisterBundle(b) => vec![put(catalog::bundle_item(b))?],
            Change::LinkBlob(l) => vec![put(catalog::link_item(l))?],
            Change::AppendReceipt { workspace_id, name, version, receipt, state, .. } => {
                self.receipt_items(workspace_id, name, version, receipt, *state)?
            }
            Change::RecordUnregisteredExport { workspace_id, name, version, id } => {
                vec![put(catalog::unregistered_export_item(workspace_id, name, version, id))?]
            }
            Change::RecordSigningKey { key_id, pem } => vec![put(catalog::signing_key_item(key_id, pem))?],
            Change::RetireSigningKey { key_id, at, reason } => vec![self.retire_key(key_id, at, reason)?],
            Change::SetFreeze(f) => {
                let to = Position { on: f.frozen, reason: &f.reason, by: &f.by, at: &f.at };
                vec![self.switch_update(FREEZE_PK, FREEZE_PK, "frozen", to)?]
            }
            Change::SetSuspension(w) => {
                let to = Position { on: w.suspended, reason: &w.reason, by: &w.by, at: &w.at };
                vec![self.switch_update(SUSPENDED_PK, &w.workspace_id, "suspended", to)?]
            }
        })
    }
}

#[async_trait]
impl MetaStore for DynamoStore {
    fn backend(&self) -> &'static str {
        "dynamodb"
    }

    async fn token_by_sha256(&self, sha256: &str) -> Result<Option<TokenRecord>> {
        self.token(sha256).await
    }

    async fn gate(&self, token_sha256: Option<&str>, freeze: bool, workspace: Option<&WorkspaceId>) -> Result<Gate> {
        self.switches(token_sha256, freeze, workspace, None).await
    }

    async fn gate_with(
        &self,
        token_sha256: Option<&str>,
        freeze: bool,
        workspace: Option<&WorkspaceId>,
        prefetch: Prefetch<'_>,
    ) -> Result<Gate> {
        self.switches(token_sha256, freeze, workspace, Some(prefetch)).await
    }

    async fn freeze(&self) -> Result<Freeze> {
        self.freeze_switch().await
    }

    async fn suspended_workspaces(&self) -> Result<Vec<Suspension>> {
        self.suspensions().await
    }

    async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.token_of_id(id).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.scan_tokens().await
    }

    async fn blob_link(&self, ws: &WorkspaceId, digest: &Digest) -> Result<Option<BlobLink>> {
        self.link(ws, digest).await
    }

    async fn bundle_version(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Option<BundleVersion>> {
        self.version(ws, name, version).await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        self.key_history().await
    }

    async fn ledger(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Vec<LedgerReceipt>> {
        self.receipts(ws, name, version).await
    }

    async fn ledger_head(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Option<LedgerReceipt>> {
        self.last_receipt(ws, name, version).await
    }

    async fn list_bundles(
        &self,
        ws: &WorkspaceId,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<(BundleVersion, Option<State>)>> {
        self.versions(ws, after, limit).await
    }

    async fn workspace_counts(&self, ws: &WorkspaceId) -> Result<WorkspaceCounts> {
        self.counts(ws).await
    }

    async fn list_workspaces(&self, after: Option<&WorkspaceId>, limit: usize) -> Result<Vec<WorkspaceCounts>> {
        self.workspaces(after, limit).await
    }

    async fn commit(&self, change: Change, draft: AuditDraft) -> Result<Commit> {
        let change_items = self.change_items(&change)?;
        for attempt in 0..APPEND_ATTEMPTS {
            let head = self.append_head(&draft.stream).await?;
            let event = draft.clone().seal_after(head.as_ref(), now_rfc3339_ms())?;
            let mut items = change_items.clone();
            items.extend(self.event_puts(&event)?);
            items.push(self.head_hint_update(&event)?);
            let deltas = counter_deltas(Some(&change), &draft);
            items.push(TransactWriteItem::builder().update(self.counter_update(BUSINESS_COUNTERS, &deltas)?).build());
            if let Some((ws, deltas)) = workspace_deltas(&change) {
                items.push(self.workspace_counter_update(ws, &deltas)?);
            }
            let reasons = match self.appended(&event, self.transact(items).await)? {
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

    async fn blob_links(&self, ws: &WorkspaceId, digests: &[Digest]) -> Result<Vec<BlobLink>> {
        self.links_among(ws, digests).await
    }

    async fn commit_links(&self, links: Vec<(BlobLink, AuditDraft)>) -> LinksCommit {
        self.link_many(links).await
    }

    async fn add_to_counters(&self, group: &str, deltas: &[(String, i64)]) -> Result<()> {
        self.add_counters(group, deltas).await
    }

    async fn counters(&self, group: &str) -> Result<BTreeMap<String, i64>> {
        self.counter_sums(group).await
    }

    async fn verify_job(&self, ws: &WorkspaceId, upload_id: &str) -> Result<Option<VerifyJob>> {
        self.job(ws, upload_id).await
    }

    async fn save_verify_job(&self, job: &VerifyJob) -> Result<bool> {
        self.save_job(job).await
    }

    async fn check(&self) -> Result<()> {
        self.get_meta("HEALTH#probe".into(), "HEALTH").await.map(|_| ())
    }
}
