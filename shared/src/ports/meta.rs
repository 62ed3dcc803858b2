//! The meta store: tokens, links, bundle versions, ledgers, switches, counters; every change with its audit event.

use super::*;

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
    /// The item asked for with `gate_with`, when the store read it in the same round trip; None when
    /// it was not read (the route reads it itself).
    pub prefetched: Option<Prefetched>,
}

/// The one item a route reads first, which the store may read with the credential in the same round
/// trip (`MetaStore::gate_with`; docs/decisions.md "Fewest round trips"). Read before the principal is
/// authorized, so it is the route's to use only once it is (`Ctx::authorize` keeps it only then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetch<'a> {
    /// A blob route's link: the link of `digest` in `ws`.
    Link { ws: &'a WorkspaceId, digest: &'a Digest },
    /// A decision's or an export's bundle version: `name`@`version` in `ws`.
    Version { ws: &'a WorkspaceId, name: &'a str, version: &'a str },
}

/// What a store read for a `Prefetch` (the inner None: read, and there is none).
#[derive(Debug, Clone, PartialEq)]
pub enum Prefetched {
    Link(Option<BlobLink>),
    Version(Option<BundleVersion>),
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

/// Sum the deltas of several changes, counter by counter (a batch moves each counter once).
pub fn summed(into: &mut std::collections::BTreeMap<String, i64>, deltas: Vec<(String, i64)>) {
    for (k, v) in deltas {
        *into.entry(k).or_insert(0) += v;
    }
}

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
/// event), and the transaction moves two counter items and the stream's head hint, and puts the
/// stream's birth when it holds its first event: 48 × 2 + 4 within DynamoDB's 100 actions.
pub const LINKS_PER_TRANSACTION: usize = 48;

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

    /// `gate`, and the item `prefetch` names (a blob route's link, a decision's bundle version) in the
    /// same round trip where the store can (docs/decisions.md "Fewest round trips"). A store that
    /// cannot leaves `Gate::prefetched` None, and the route reads the item itself.
    async fn gate_with(
        &self,
        token_sha256: Option<&str>,
        freeze: bool,
        workspace: Option<&WorkspaceId>,
        prefetch: Prefetch<'_>,
    ) -> Result<Gate> {
        let _ = prefetch;
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

    /// The verification job of upload `upload_id` in `ws` (`crate::verify`), or None.
    async fn verify_job(&self, ws: &WorkspaceId, upload_id: &str) -> Result<Option<VerifyJob>>;

    /// Write `job`: create-only when `job.version` is 1, else only over the stored version
    /// `job.version - 1`. False when that condition failed (another worker wrote first): nothing written.
    async fn save_verify_job(&self, job: &VerifyJob) -> Result<bool>;

    async fn check(&self) -> Result<()>;
}
