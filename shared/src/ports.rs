//! The four ports (SPEC §1). Each has an AWS adapter and an embedded adapter in `adapters/`, and one
//! contract suite in the helix-tests crate that both must pass.
//!
//! Shape rule: a meta-store state change can only be written together with its audit event
//! (`MetaStore::commit` takes both), so there is no change without its event and no event without
//! its change. Adapters must fail with `Error::Unavailable` naming their dependency when the backing
//! service cannot be reached, and must not report a write that did not happen.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use tokio::io::AsyncRead;

use crate::domain::governance::State;
use crate::domain::{AuditDraft, AuditEvent, Digest, TokenRecord, WorkspaceId};
use crate::error::Result;

// ---------------------------------------------------------------------------------------------
// BlobStore

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum PutOutcome {
    Created,
    Existed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlobHead {
    pub size: u64,
    /// The full-object SHA-256 the store itself computed and kept, when it has one.
    pub stored_sha256: Option<Digest>,
}

pub struct BlobReader {
    pub size: u64,
    pub body: Pin<Box<dyn AsyncRead + Send>>,
}

/// A request a client can make without credentials: method, URL and headers it must send.
#[derive(Debug, Clone, Serialize)]
pub struct Presigned {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub expires_at: i64,
}

/// What `/v1/status` may say about a blob store (never secrets).
#[derive(Debug, Clone, Serialize)]
pub struct BlobBackendInfo {
    pub backend: &'static str,
    pub location: String,
    pub prefix: String,
    pub strict_no_overwrite: bool,
}

/// Where a blob's bytes live: its digest and a slot. Slot 0 is the digest's own key
/// (`sha256/ab/<hex>`); slot n > 0 (`sha256/ab/<hex>.n`) is used only when every lower slot holds
/// bytes that do not hash to the digest, so a wrong object under a digest's key is never served or
/// linked and never blocks a correct upload (docs/decisions.md, "Proof of possession").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobKey {
    pub digest: Digest,
    pub slot: u8,
}

/// Slots tried before a blob is refused as unstorable (each failed one is a poisoned object an
/// operator must remove; docs/runbook.md).
pub const BLOB_SLOTS: u8 = 4;

impl BlobKey {
    pub fn primary(digest: &Digest) -> BlobKey {
        BlobKey { digest: digest.clone(), slot: 0 }
    }

    /// Below a store's `blobs/` root, the same on S3 and on disk.
    pub fn storage_key(&self) -> String {
        match self.slot {
            0 => self.digest.storage_key(),
            n => format!("{}.{n}", self.digest.storage_key()),
        }
    }
}

/// A direct upload's staging object: written by the client through a presigned PUT bound to one
/// workspace and one upload id, verified by the registry, then promoted to a `BlobKey`. Key
/// `uploads/{ws}/{id}`: a caller can only complete uploads of a workspace it may publish to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRef {
    pub workspace: WorkspaceId,
    pub id: String,
}

impl UploadRef {
    /// A new upload of `workspace` with a random id (32 lowercase hex).
    pub fn new(workspace: &WorkspaceId) -> UploadRef {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).expect("OS random source");
        UploadRef { workspace: workspace.clone(), id: hex::encode(raw) }
    }

    pub fn parse(workspace: &WorkspaceId, id: &str) -> Result<UploadRef> {
        let ok = id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(crate::Error::BadRequest("upload_id is 32 lowercase hex, as POST .../uploads returned".into()));
        }
        Ok(UploadRef { workspace: workspace.clone(), id: id.to_owned() })
    }

    /// Below a store's `blobs/`-sibling root: `uploads/{ws}/{id}`.
    pub fn storage_key(&self) -> String {
        format!("uploads/{}/{}", self.workspace, self.id)
    }
}

/// What the store holds for an upload, pinned: the version (or ETag) read here is the one verified
/// and the one promoted, even if the client writes the staging key again in between.
#[derive(Debug, Clone, PartialEq)]
pub struct Staged {
    pub size: u64,
    /// The store's own full-object SHA-256, when it has one (trusted only if the store verifies).
    pub stored_sha256: Option<Digest>,
    pub version_id: Option<String>,
    pub etag: Option<String>,
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    fn info(&self) -> BlobBackendInfo;

    /// True when the store itself verifies `x-amz-checksum-sha256` on write and refuses bytes that
    /// do not match, so its stored checksum is proof of the bytes (AWS S3). False for stores that
    /// may keep a checksum they never checked (some S3-compatibles, moto): the registry re-hashes.
    fn checksums_verified(&self) -> bool;

    /// True when a staged upload's `stored_sha256` was checked by the store itself against the bytes
    /// as they arrived (the local presigned PUT hashes while it writes): `complete` need not re-hash.
    fn staged_checksums_verified(&self) -> bool {
        self.checksums_verified()
    }

    /// True when `promote` makes the blob key the very bytes that were staged (a hard link of the
    /// same file), not a copy: verified staged bytes need no second check where they landed.
    fn promote_is_exact(&self) -> bool {
        false
    }

    /// Store `bytes` at `key` unless an object is already there (`Existed`: the caller verifies it,
    /// the adapter never does). Two concurrent writers never both get `Created`.
    async fn put_if_absent(&self, key: &BlobKey, bytes: Bytes) -> Result<PutOutcome>;

    async fn head(&self, key: &BlobKey) -> Result<Option<BlobHead>>;

    /// Streaming read; memory stays flat in the blob size.
    async fn get(&self, key: &BlobKey) -> Result<Option<BlobReader>>;

    async fn presign_get(&self, key: &BlobKey, ttl: Duration) -> Result<Presigned>;

    /// A direct upload to `upload`'s staging key, with `digest` and `size` signed in where the
    /// store can check them; the object is verified again at completion whatever the store did.
    async fn presign_upload(&self, upload: &UploadRef, digest: &Digest, size: u64, ttl: Duration) -> Result<Presigned>;

    async fn staged(&self, upload: &UploadRef) -> Result<Option<Staged>>;

    /// The pinned bytes of a staged upload.
    async fn read_staged(&self, upload: &UploadRef, staged: &Staged) -> Result<BlobReader>;

    /// Copy the pinned, verified staging object to `key` unless an object is already there (the
    /// same contract as `put_if_absent`).
    async fn promote(&self, upload: &UploadRef, staged: &Staged, key: &BlobKey) -> Result<PutOutcome>;

    /// Remove a staging object (done, or refused); a missing one is not an error.
    async fn discard(&self, upload: &UploadRef) -> Result<()>;

    /// Store a small document (the audit exports) at `key` (relative to the store's prefix, e.g.
    /// `audit/2026/11/22/manifest.json`) unless something is already there: `Existed` leaves the
    /// stored bytes untouched for the caller to compare. Two writers never both get `Created`.
    async fn put_document_if_absent(&self, key: &str, bytes: Bytes) -> Result<PutOutcome>;

    /// A document's bytes, or None when there is none at `key`.
    async fn get_document(&self, key: &str) -> Result<Option<Bytes>>;

    /// `put_document_if_absent` of a file's contents, streamed (an exported day may be large), which
    /// must hash to `digest` as the store receives them (the file is not trusted after it was written).
    async fn put_document_file_if_absent(
        &self,
        key: &str,
        file: &std::path::Path,
        digest: &Digest,
    ) -> Result<PutOutcome>;

    /// The SHA-256 of a stored document, read as a stream; None when there is none at `key`.
    async fn document_sha256(&self, key: &str) -> Result<Option<Digest>>;

    /// Readiness probe: cheap, touches the backing service.
    async fn check(&self) -> Result<()>;
}

// ---------------------------------------------------------------------------------------------
// MetaStore

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlobLink {
    pub workspace_id: String,
    pub digest: Digest,
    pub size: u64,
    pub linked_at: i64,
    pub linked_by: String,
    /// The `BlobKey` slot holding the verified bytes (0 unless a lower slot was poisoned).
    pub slot: u8,
}

impl BlobLink {
    pub fn key(&self) -> BlobKey {
        BlobKey { digest: self.digest.clone(), slot: self.slot }
    }
}

/// A registered bundle version: its manifest (stored as a blob linked in the workspace) is the
/// version's identity, and it never changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BundleVersion {
    pub workspace_id: String,
    pub name: String,
    pub version: String,
    pub manifest_digest: Digest,
    pub files: u64,
    /// Sum of the files' sizes.
    pub bytes: u64,
    pub registered_at: i64,
    /// The actor (`user@credential`) who registered it.
    pub registered_by: String,
    /// The user who registered it (separation of duties compares users, whatever credential).
    pub registered_user: String,
}

/// One signed governance receipt in a bundle version's ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerReceipt {
    pub seq: u64,
    /// The DSSE envelope, canonical JSON.
    pub envelope: String,
    /// `sha256:` of a decision's identity (kind, user and what it covers): at most one receipt per key,
    /// so a retried decision finds the receipt it made. None for exports, which may repeat.
    pub decision_key: Option<String>,
}

/// The registry-wide freeze switch (the kill switch): while `frozen`, every mutating route but unfreeze
/// answers 503 `registry_frozen`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Freeze {
    pub frozen: bool,
    /// Why (the operator's words), who and when (RFC 3339) the switch was last set.
    pub reason: Option<String>,
    pub by: Option<String>,
    pub at: Option<String>,
}

/// One workspace's suspension switch (SPEC §2, "contain one tenant"): while `suspended`, every request
/// scoped to the workspace answers 403 `workspace_suspended`. A workspace never suspended reads as
/// `suspended: false` with nothing else set.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Suspension {
    pub workspace_id: String,
    pub suspended: bool,
    /// Why (the operator's words), who and when (RFC 3339) the switch was last set.
    pub reason: Option<String>,
    pub by: Option<String>,
    pub at: Option<String>,
}

/// What a request reads with its credential, in one round trip: the API token (when it has one), the
/// freeze switch (when it changes something) and the suspension of the workspace it is scoped to
/// (when it names one). Each is None when it was not asked for.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    pub token: Option<TokenRecord>,
    pub freeze: Option<Freeze>,
    pub suspension: Option<Suspension>,
    /// The blob link asked for with `gate_with_link`, when the store read it in the same round trip
    /// (`Some(None)`: read, and there is none); None when it was not read (the caller reads it).
    pub link: Option<Option<BlobLink>>,
}

/// A conditional state change. Each one fails its condition when its effect is already present.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create a token (condition: no token with that SHA-256 or id).
    IssueToken(TokenRecord),
    /// Link a verified blob into a workspace (condition: not linked yet).
    LinkBlob(BlobLink),
    /// Disable a token (condition: it exists and is not disabled yet).
    RevokeToken { sha256: String },
    /// Disable `old_sha256` and create `new` with the same grant, at once (conditions of both).
    RotateToken { old_sha256: String, new: TokenRecord },
    /// Register a bundle version (condition: no version of that name and version yet).
    RegisterBundle(BundleVersion),
    /// Append a receipt to a version's ledger (conditions: its seq is free, and its decision key, if
    /// any, is not taken yet). `from` is the version's state before it, `state` the state it leaves
    /// (the version's state record and its workspace's counts move with it).
    AppendReceipt {
        workspace_id: String,
        name: String,
        version: String,
        receipt: LedgerReceipt,
        from: State,
        state: State,
    },
    /// Record a public key the registry signs with (condition: not recorded yet), so that what it
    /// signed stays verifiable after the key is rotated.
    RecordSigningKey { key_id: String, pem: String },
    /// Retire a recorded signing key at `at` (RFC 3339) for `reason` (condition: recorded and not
    /// retired yet): whatever it signed dated after `at` no longer verifies.
    RetireSigningKey { key_id: String, at: String, reason: String },
    /// Set the freeze switch (condition: it is not in that position already).
    SetFreeze(Freeze),
    /// Set a workspace's suspension switch (condition: it is not in that position already).
    SetSuspension(Suspension),
    /// Record a client's report of an export made while the registry was unreachable (condition: no
    /// report of that id for that bundle version yet), so a client that re-sends it records it once.
    RecordUnregisteredExport { workspace_id: String, name: String, version: String, id: String },
}

/// The counter group the store moves with every commit and append, exactly.
pub const BUSINESS_COUNTERS: &str = "business";

/// The exact counters a committed change (None: a standalone event) and its event move: every event;
/// governance denials; blob links and their bytes; enabled tokens; bundle versions; receipts by kind.
pub fn counter_deltas(change: Option<&Change>, event: &AuditDraft) -> Vec<(String, i64)> {
    let mut d: Vec<(&str, i64)> = vec![("audit_events", 1)];
    let governance = event.action.starts_with("bundle.")
        || event.action.starts_with("governance.")
        || event.action.starts_with("registry.");
    if governance && event.outcome == crate::domain::Outcome::Denied {
        d.push(("governance_denials", 1));
    }
    match change {
        Some(Change::LinkBlob(l)) => d.extend([("blob_links", 1), ("blob_bytes", l.size as i64)]),
        Some(Change::IssueToken(_)) => d.push(("tokens_enabled", 1)),
        Some(Change::RevokeToken { .. }) => d.push(("tokens_enabled", -1)),
        Some(Change::RegisterBundle(_)) => d.push(("bundle_versions", 1)),
        Some(Change::AppendReceipt { .. }) => match event.action.as_str() {
            "governance.approval" => d.push(("approvals", 1)),
            "governance.rejection" => d.push(("rejections", 1)),
            "governance.waiver" => d.push(("waivers", 1)),
            "bundle.export" => d.push(("exports", 1)),
            _ => {}
        },
        Some(Change::SetSuspension(s)) => d.push(("workspaces_suspended", if s.suspended { 1 } else { -1 })),
        Some(
            Change::RotateToken { .. }
            | Change::RecordSigningKey { .. }
            | Change::RetireSigningKey { .. }
            | Change::SetFreeze(_),
        )
        | None => {}
        Some(Change::RecordUnregisteredExport { .. }) => d.push(("unregistered_exports", 1)),
    }
    d.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The counters of one workspace (`GET /v1/workspaces`): blob links and their bytes, bundle versions,
/// and versions per governance state. Moved by the commit that changes what they count, in its
/// transaction (`workspace_deltas`).
pub const WORKSPACE_COUNTERS: [&str; 7] =
    ["blob_links", "blob_bytes", "bundle_versions", "submitted", "approved", "rejected", "exported"];

/// The workspace counters a committed change moves, and the workspace: a link (+1 link, its bytes), a
/// registration (+1 version, +1 submitted), a receipt that changes the state (-1 from, +1 to).
pub fn workspace_deltas(change: &Change) -> Option<(&str, Vec<(String, i64)>)> {
    let (ws, d): (&str, Vec<(&str, i64)>) = match change {
        Change::LinkBlob(l) => (&l.workspace_id, vec![("blob_links", 1), ("blob_bytes", l.size as i64)]),
        Change::RegisterBundle(b) => (&b.workspace_id, vec![("bundle_versions", 1), ("submitted", 1)]),
        Change::AppendReceipt { workspace_id, from, state, .. } if from != state => {
            (workspace_id, vec![(from.as_str(), -1), (state.as_str(), 1)])
        }
        _ => return None,
    };
    Some((ws, d.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

/// One workspace's counters, by name (`WORKSPACE_COUNTERS`; a counter never moved is absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkspaceCounts {
    pub workspace_id: String,
    pub counts: BTreeMap<String, i64>,
}

/// Links per DynamoDB transaction in `commit_links`: each link is two actions (the link and its audit
/// event) and the transaction moves two counter items, within DynamoDB's 100 actions.
pub const LINKS_PER_TRANSACTION: usize = 49;

/// What `commit_links` did: `done[i]` is the outcome of link `i`, for a prefix of the links. When
/// `failed` is set, the links after that prefix were not committed (or, for `OutcomeUnknown`, the
/// first transaction after it may have been): every committed transaction was whole, and sending the
/// same links again is idempotent (a committed link is `AlreadyDone`).
#[derive(Debug, Default)]
pub struct LinksCommit {
    pub done: Vec<Commit>,
    pub failed: Option<crate::Error>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Commit {
    /// The change and its audit event were written together.
    Applied(Box<AuditEvent>),
    /// The condition failed because the change is already in effect; nothing was written.
    AlreadyDone,
}

#[async_trait]
pub trait MetaStore: Send + Sync {
    fn backend(&self) -> &'static str;

    async fn token_by_sha256(&self, sha256: &str) -> Result<Option<TokenRecord>>;

    async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>>;

    /// In one round trip: the token of that SHA-256 (when given), the freeze switch (when `freeze`) and
    /// `workspace`'s suspension (when given). Every request reads its token with the switches that
    /// concern it: a freeze or a suspension holds from the very next request, on every function.
    async fn gate(&self, token_sha256: Option<&str>, freeze: bool, workspace: Option<&WorkspaceId>) -> Result<Gate>;

    /// `gate`, and the link of `link`'s digest in `link`'s workspace in the same round trip where the
    /// store can (a blob route reads its link with the credential: docs/decisions.md "Fewest round
    /// trips"). A store that cannot leaves `Gate::link` None, and the route reads the link itself.
    async fn gate_with_link(
        &self,
        token_sha256: Option<&str>,
        freeze: bool,
        workspace: Option<&WorkspaceId>,
        link: (&WorkspaceId, &Digest),
    ) -> Result<Gate> {
        let _ = link;
        self.gate(token_sha256, freeze, workspace).await
    }

    /// The freeze switch alone (status, metrics).
    async fn freeze(&self) -> Result<Freeze>;

    /// The workspaces suspended now, in workspace order (status, for an admin of every workspace).
    async fn suspended_workspaces(&self) -> Result<Vec<Suspension>>;

    /// Every token record (never a secret: none is stored), in no particular order.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;

    async fn blob_link(&self, ws: &WorkspaceId, digest: &Digest) -> Result<Option<BlobLink>>;

    async fn bundle_version(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Option<BundleVersion>>;

    /// Every public key the registry has signed receipts with, in the order recorded.
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;

    /// A version's ledger, in seq order.
    async fn ledger(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Vec<LedgerReceipt>>;

    /// The last receipt (highest seq) of a version's ledger, read consistently, in one read whatever
    /// the ledger's length (the hot path of reads, decisions and exports: `governance::head`).
    async fn ledger_head(&self, ws: &WorkspaceId, name: &str, version: &str) -> Result<Option<LedgerReceipt>>;

    /// Bundle versions of `ws` ordered by (name, version), after `after` when given, at most `limit`,
    /// each with the state its last receipt recorded (None: no receipt recorded one, so `submitted`,
    /// or a version decided before the state was recorded: `governance::states` reads its ledger head).
    async fn list_bundles(
        &self,
        ws: &WorkspaceId,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<Vec<(BundleVersion, Option<State>)>>;

    /// One workspace's counters (all absent when nothing was ever committed in it).
    async fn workspace_counts(&self, ws: &WorkspaceId) -> Result<WorkspaceCounts>;

    /// Every workspace that has counters, in workspace order, after `after` when given, at most `limit`
    /// (for a credential of every workspace).
    async fn list_workspaces(&self, after: Option<&WorkspaceId>, limit: usize) -> Result<Vec<WorkspaceCounts>>;

    /// Apply `change` and append `event` atomically (one transaction across meta and audit).
    async fn commit(&self, change: Change, event: AuditDraft) -> Result<Commit>;

    /// The links of `ws` among `digests` (at most `batch::MAX_QUERY_DIGESTS`), in no particular order;
    /// a digest not linked in `ws` is absent whatever other workspaces hold (one query on SQLite,
    /// BatchGetItem of 100 keys at a time on DynamoDB).
    async fn blob_links(&self, ws: &WorkspaceId, digests: &[Digest]) -> Result<Vec<BlobLink>>;

    /// Link many verified blobs, each with its audit event (`LinkBlob` and its event, as `commit`
    /// writes them one by one), in as few transactions as the store allows: SQLite one, DynamoDB one per
    /// `LINKS_PER_TRANSACTION`. Each transaction is whole (its links with their events and counters, or
    /// nothing); see `LinksCommit` for a failure between them.
    async fn commit_links(&self, links: Vec<(BlobLink, AuditDraft)>) -> LinksCommit;

    /// Atomic adds to counters of one group (one write; on DynamoDB to one of a few shard items of
    /// `COUNTER#{group}`, each counter an attribute). `commit` and `AuditLog::append` move the
    /// `business` group themselves, in their own transaction (`counter_deltas`).
    async fn add_to_counters(&self, group: &str, deltas: &[(String, i64)]) -> Result<()>;

    /// Every counter of a group, summed over its shards.
    async fn counters(&self, group: &str) -> Result<BTreeMap<String, i64>>;

    async fn check(&self) -> Result<()>;
}

// ---------------------------------------------------------------------------------------------
// AuditLog

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

// ---------------------------------------------------------------------------------------------
// Notifications: the outbox of governance events and the channels they are sent on

/// One governance event in the outbox: its position (commit order, across streams) and the event.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub position: u64,
    pub event: AuditEvent,
}

/// The outbox a deliverer reads (`crate::notify`): every audit event whose action is one of
/// `domain::notification::NOTIFIED_ACTIONS`, recorded in the transaction that appends the event (so a
/// committed governance event is always in it, and nothing uncommitted ever is), in commit order; and
/// the deliverer's durable cursor. The embedded store has one; on AWS the audit table's DynamoDB
/// stream is the outbox and the event source mapping keeps the cursor (docs/notifications.md).
#[async_trait]
pub trait NotificationOutbox: Send + Sync {
    /// The position `channel` has delivered (or given up) up to; None when it never ran on this store.
    async fn outbox_cursor(&self, channel: &str) -> Result<Option<u64>>;

    /// The position of the last entry (0 when there is none).
    async fn outbox_end(&self) -> Result<u64>;

    /// Up to `limit` entries after `after`, in position order.
    async fn outbox_after(&self, after: u64, limit: usize) -> Result<Vec<OutboxEntry>>;

    /// Store `channel`'s cursor durably; it never moves back.
    async fn set_outbox_cursor(&self, channel: &str, position: u64) -> Result<()>;
}

/// A channel notifications are sent on (a signed webhook; EventBridge). One call is one attempt: the
/// deliverer retries, bounded. An error is the reason the attempt failed (for the log; never a secret).
#[async_trait]
pub trait NotificationSink: Send + Sync {
    /// The channel's name (the outbox cursor's, the metrics label): `webhook`, `eventbridge`.
    fn channel(&self) -> &'static str;

    async fn send(&self, notification: &crate::domain::notification::Notification) -> std::result::Result<(), String>;
}

// ---------------------------------------------------------------------------------------------
// Signer

pub const MAX_SIGNED_MESSAGE: usize = 4096;

#[derive(Debug, Clone, Serialize)]
pub struct PublicKeyInfo {
    pub key_id: String,
    /// DER SubjectPublicKeyInfo.
    #[serde(skip)]
    pub spki_der: Vec<u8>,
    pub pem: String,
    /// The key's validity window, when known (from the key history): recorded before its first
    /// signature, and retired (RFC 3339 times).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
}

/// One key of the signing-key history (`MetaStore::signing_keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub key_id: String,
    pub pem: String,
    /// When it was recorded: before its first signature.
    pub recorded_at: String,
    pub retired_at: Option<String>,
    pub retired_reason: Option<String>,
}

/// Instance clocks differ by a second or so; a receipt may be dated this much before its key was
/// recorded by another instance.
pub const KEY_WINDOW_LEEWAY: time::Duration = time::Duration::minutes(5);

#[async_trait]
pub trait Signer: Send + Sync {
    fn backend(&self) -> &'static str;

    /// ECDSA P-256 over SHA-256 of `message` (at most 4096 bytes); DER signature.
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;

    async fn public_key(&self) -> Result<PublicKeyInfo>;

    async fn check(&self) -> Result<()>;
}

impl PublicKeyInfo {
    /// From a DER SubjectPublicKeyInfo; refuses anything that is not a P-256 key. The key id is
    /// `sha256:` of the DER, so it names the key itself whatever holds it (KMS or a local file).
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKeyInfo> {
        use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
        let bad = |e: &dyn std::fmt::Display| {
            crate::Error::unavailable(crate::error::Dependency::Signer, format!("public key: {e}"))
        };
        let key = p256::PublicKey::from_public_key_der(der).map_err(|e| bad(&e))?;
        let pem = key.to_public_key_pem(LineEnding::LF).map_err(|e| bad(&e))?;
        Ok(PublicKeyInfo {
            key_id: Digest::of(der).to_string(),
            spki_der: der.to_vec(),
            pem,
            valid_from: None,
            retired_at: None,
        })
    }

    /// Why this key cannot have signed something dated `at`, if it cannot: `at` is after the key was
    /// retired, or (when `check_start`) before it was recorded, beyond `KEY_WINDOW_LEEWAY`. The
    /// reason names the key.
    pub fn outside_window(&self, at: time::OffsetDateTime, check_start: bool) -> Option<String> {
        let parse = |t: &str| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok();
        let shown = crate::domain::time::rfc3339_ms(at);
        if let Some(retired) = self.retired_at.as_deref()
            && parse(retired).is_none_or(|r| at > r)
        {
            return Some(format!(
                "key {} was retired at {retired}: nothing it signed dated {shown} counts",
                self.key_id
            ));
        }
        if check_start
            && let Some(from) = self.valid_from.as_deref()
            && parse(from).is_none_or(|f| at < f - KEY_WINDOW_LEEWAY)
        {
            return Some(format!("key {} was first used at {from}: it signed nothing dated {shown}", self.key_id));
        }
        None
    }

    /// Verify a DER ECDSA P-256/SHA-256 signature over `message` with this key.
    pub fn verify(&self, message: &[u8], der_sig: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier;
        use p256::pkcs8::DecodePublicKey;
        let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(&self.spki_der) else { return false };
        let Ok(sig) = p256::ecdsa::DerSignature::try_from(der_sig) else { return false };
        key.verify(message, &sig).is_ok()
    }
}
