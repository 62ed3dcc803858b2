//! Governance decisions on a bundle version (SPEC §4): approve, reject, waive. Each is a signed
//! receipt (a DSSE envelope through the Signer port) appended to the version's ledger with a
//! conditional write on its seq, in the same commit as its audit event. The state a ledger yields is
//! the fold of `domain::governance::next` over its receipts. User and role come from the
//! authenticated principal, never from the body.
//!
//! Rules: separation of duties (the user who registered a version can neither approve nor waive it:
//! `403 self_approval`); idempotency (the same decision by the same user returns the receipt it made);
//! a waiver covers exactly one transition, in scope `export_unapproved`, until it expires.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::App;
use crate::auth::Principal;
use crate::blobs::Caller;
use crate::domain::governance::{Decision, State, next, transition_id};
use crate::domain::time::{now_rfc3339_ms, now_unix};
use crate::domain::{AuditDraft, BundleName, Digest, Outcome, WorkspaceId, bundle_ref, canonical};
use crate::error::{Error, Result};
use crate::keys::{record_signing_key, verification_keys};
use crate::ports::{BundleVersion, Change, Commit, LedgerReceipt, PublicKeyInfo};

pub use crate::keys::RECEIPT_PAYLOAD_TYPE;
pub const WAIVER_SCOPE: &str = "export_unapproved";
/// Longest justification, in bytes (anything longer is referenced by a blob digest).
pub const MAX_JUSTIFICATION: usize = 2048;
/// Waiver lifetime: default and most.
pub const WAIVER_DEFAULT_SECONDS: i64 = 86_400;
pub const WAIVER_MAX_SECONDS: i64 = 7 * 86_400;
/// Attempts at claiming the next seq before giving up with 503 (each loss means another decision won).
const APPEND_ATTEMPTS: u32 = 64;

/// What a receipt says (its payload, canonical JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub kind: String,
    pub bundle: String,
    pub manifest: String,
    /// The transition this receipt records (for a waiver: the transition it permits).
    pub transition: String,
    pub from: String,
    pub to: String,
    pub user: String,
    pub role: String,
    pub credential: String,
    pub time: String,
    pub seq: u64,
    pub prev: Option<String>,
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// Unix seconds after which a waiver no longer counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl Statement {
    pub fn decision(&self) -> Result<Decision> {
        Ok(match self.kind.as_str() {
            "approval" => Decision::Approve,
            "rejection" => Decision::Reject,
            "waiver" => Decision::Waive,
            "export" => Decision::Export { permitted: true },
            other => return Err(Error::Internal(format!("unknown receipt kind {other:?}"))),
        })
    }
}

/// A ledger read back: its receipts, their statements and payloads (verified), and the state they yield.
pub struct Ledger {
    pub receipts: Vec<LedgerReceipt>,
    pub statements: Vec<Statement>,
    payloads: Vec<Vec<u8>>,
    pub state: State,
}

impl Ledger {
    /// The `prev` of the next receipt: the digest of the last payload, as signed.
    fn head(&self) -> Option<String> {
        self.payloads.last().map(|p| Digest::of(p).to_string())
    }

    /// A waiver that is live at `now` for `transition`.
    pub fn live_waiver(&self, transition: &Digest, now: i64) -> Option<&Statement> {
        self.statements.iter().find(|s| {
            s.kind == "waiver"
                && s.transition == transition.to_string()
                && s.scope.as_deref() == Some(WAIVER_SCOPE)
                && s.expires_at.is_some_and(|e| now < e)
        })
    }
}

/// Read a version's ledger and verify it as `helix governance verify` does (every signature, seq from
/// 1 without gaps, the `prev` chain, transition ids, states), and that every receipt is about this
/// version and this manifest and sits at its own seq. The store is not trusted: a receipt copied from
/// another version, a reordered or overwritten one, is an integrity error (500), never a state.
pub async fn ledger(app: &App, ws: &WorkspaceId, name: &str, version: &str, manifest: &Digest) -> Result<Ledger> {
    let receipts = app.meta.ledger(ws, name, version).await?;
    if receipts.is_empty() {
        return Ok(Ledger { receipts, statements: Vec::new(), payloads: Vec::new(), state: State::Submitted });
    }
    let keys = verification_keys(app).await?;
    let envelopes: Vec<Vec<u8>> = receipts.iter().map(|r| r.envelope.clone().into_bytes()).collect();
    let bundle = bundle_ref(ws, name, version);
    let broken = |why: String| Error::BlobIntegrity(format!("the ledger of {bundle} does not verify: {why}"));
    let verified = verify_receipts(&envelopes, &keys, true).map_err(broken)?;
    for (r, s) in receipts.iter().zip(&verified.statements) {
        if s.bundle != bundle || s.manifest != manifest.to_string() || s.seq != r.seq {
            return Err(broken(format!(
                "the receipt stored at seq {} is seq {} of {} ({})",
                r.seq, s.seq, s.bundle, s.manifest
            )));
        }
    }
    let state = verified.state.unwrap_or(State::Submitted);
    Ok(Ledger { receipts, statements: verified.statements, payloads: verified.payloads, state })
}

/// The statement of a receipt envelope, if a registry key signed it.
pub fn open_receipt(envelope: &[u8], keys: &[PublicKeyInfo]) -> std::result::Result<Statement, String> {
    let payload = crate::dsse::verify(envelope, RECEIPT_PAYLOAD_TYPE, keys)?;
    serde_json::from_slice(&payload).map_err(|e| format!("not a receipt statement: {e}"))
}

/// A waiver request's fields (the body of POST .../waivers).
pub struct WaiverRequest {
    pub transition: String,
    pub scope: String,
    pub justification: String,
    pub expires_in_seconds: Option<i64>,
}

/// The decision a route records.
pub enum Request {
    Approve,
    Reject,
    Waive(WaiverRequest),
}

/// Record a decision by `caller` on `ws`/`name`@`version`: the receipt (201 when made by this request,
/// 200 when the same decision by the same user was already recorded).
pub async fn decide(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    request: Request,
) -> Result<(LedgerReceipt, bool)> {
    let v = app.meta.bundle_version(ws, name.as_str(), version.as_str()).await?.ok_or(Error::BundleMissing)?;
    let principal = caller.principal;
    if !matches!(request, Request::Reject) && same_user(&principal.user, &v.registered_user) {
        return Err(Error::SelfApproval);
    }
    let bundle = bundle_ref(ws, name.as_str(), version.as_str());
    let (kind, decision) = match &request {
        Request::Approve => ("approval", Decision::Approve),
        Request::Reject => ("rejection", Decision::Reject),
        Request::Waive(_) => ("waiver", Decision::Waive),
    };
    if let Request::Waive(w) = &request {
        check_waiver_fields(w)?;
    }
    for attempt in 0..APPEND_ATTEMPTS {
        let ledger = ledger(app, ws, name.as_str(), version.as_str(), &v.manifest_digest).await?;
        let export_transition = transition_id(&bundle, ledger.state, State::Exported)?;
        let key = decision_key(kind, principal, &request)?;
        if let Some(existing) = ledger.receipts.iter().find(|r| r.decision_key.as_deref() == Some(key.as_str())) {
            return Ok((existing.clone(), false));
        }
        let to = next(ledger.state, decision).map_err(|r| r.into_error(&export_transition))?;
        let (transition, from, to_s, waiver) = match &request {
            Request::Waive(w) => {
                if w.transition != export_transition.to_string() {
                    return Err(Error::WaiverInvalid(format!(
                        "the waiver names transition {}, but this version's export is {export_transition}",
                        w.transition
                    )));
                }
                (export_transition.clone(), ledger.state, State::Exported, Some(w))
            }
            _ => (transition_id(&bundle, ledger.state, to)?, ledger.state, to, None),
        };
        let draft = Draft {
            kind,
            manifest: &v.manifest_digest,
            transition: &transition,
            from,
            to: to_s,
            scope: waiver.map(|w| w.scope.clone()),
            justification: waiver.map(|w| w.justification.clone()),
            expires_at: waiver.map(|w| now_unix() + w.expires_in_seconds.unwrap_or(WAIVER_DEFAULT_SECONDS)),
            details: None,
            outcome: Outcome::Success,
        };
        if let Some(receipt) = append(app, caller, ws, name, version, &ledger, draft, Some(key)).await? {
            return Ok((receipt, true));
        }
        // The seq was taken by a concurrent decision, or this very decision was recorded concurrently:
        // read the ledger again (the loop finds the latter by its key).
        crate::adapters::backoff(attempt.min(5)).await;
    }
    Err(Error::unavailable(crate::error::Dependency::MetaStore, "could not claim the next ledger seq"))
}

/// A receipt about to be signed: what differs between decisions.
struct Draft<'a> {
    kind: &'static str,
    manifest: &'a Digest,
    transition: &'a Digest,
    from: State,
    to: State,
    scope: Option<String>,
    justification: Option<String>,
    expires_at: Option<i64>,
    details: Option<Value>,
    outcome: Outcome,
}

/// Sign the next receipt of `ledger` and append it with its audit event. `None` when another writer
/// took the seq (or `decision_key`) first: the caller reads the ledger again and decides again.
#[allow(clippy::too_many_arguments)]
async fn append(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    ledger: &Ledger,
    draft: Draft<'_>,
    decision_key: Option<String>,
) -> Result<Option<LedgerReceipt>> {
    let principal = caller.principal;
    let bundle = bundle_ref(ws, name.as_str(), version.as_str());
    let signer_key = app.signer.public_key().await?;
    record_signing_key(app, &caller.principal.actor(), caller.request_id, &signer_key).await?;
    let seq = ledger.receipts.last().map_or(1, |r| r.seq + 1);
    let statement = Statement {
        kind: draft.kind.into(),
        bundle: bundle.clone(),
        manifest: draft.manifest.to_string(),
        transition: draft.transition.to_string(),
        from: draft.from.as_str().into(),
        to: draft.to.as_str().into(),
        user: principal.user.clone(),
        role: principal.role.as_str().into(),
        credential: principal.credential_id.clone(),
        time: now_rfc3339_ms(),
        seq,
        prev: ledger.head(),
        key_id: signer_key.key_id.clone(),
        scope: draft.scope,
        justification: draft.justification,
        expires_at: draft.expires_at,
        details: draft.details.clone(),
    };
    let payload = canonical::to_string(&serde_json::to_value(&statement).map_err(|e| Error::Internal(e.to_string()))?)?;
    let envelope =
        crate::dsse::sign(app.signer.as_ref(), &signer_key, RECEIPT_PAYLOAD_TYPE, payload.as_bytes()).await?;
    let receipt = LedgerReceipt { seq, envelope, decision_key };
    let change = Change::AppendReceipt {
        workspace_id: ws.to_string(),
        name: name.to_string(),
        version: version.to_string(),
        receipt: receipt.clone(),
    };
    let action = if draft.kind == "export" { "bundle.export".to_owned() } else { format!("governance.{}", draft.kind) };
    let mut details = json!({"seq": seq, "transition": draft.transition, "from": draft.from.as_str(),
                             "to": draft.to.as_str(), "receipt": Digest::of(payload.as_bytes())});
    if let Some(extra) = draft.details {
        details["export"] = extra;
    }
    let event = AuditDraft {
        stream: ws.to_string(),
        actor: principal.actor(),
        action,
        entity_type: "bundle_version".into(),
        entity_id: bundle,
        outcome: draft.outcome,
        request_id: caller.request_id.into(),
        details,
    };
    Ok(match app.meta.commit(change, event).await? {
        Commit::Applied(_) => Some(receipt),
        Commit::AlreadyDone => None,
    })
}

/// Users compared for separation of duties: trimmed and case-folded, so "Ada " is "ada".
fn same_user(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

fn check_waiver_fields(w: &WaiverRequest) -> Result<()> {
    if w.scope != WAIVER_SCOPE {
        return Err(Error::WaiverInvalid(format!("scope must be {WAIVER_SCOPE:?}")));
    }
    if w.justification.trim().is_empty() || w.justification.len() > MAX_JUSTIFICATION {
        return Err(Error::WaiverInvalid(format!(
            "a justification is 1 to {MAX_JUSTIFICATION} bytes (reference a longer text by its blob digest)"
        )));
    }
    if w.expires_in_seconds.is_some_and(|s| !(1..=WAIVER_MAX_SECONDS).contains(&s)) {
        return Err(Error::WaiverInvalid(format!("expires_in_seconds is 1 to {WAIVER_MAX_SECONDS}")));
    }
    Digest::parse(&w.transition).map_err(|_| Error::WaiverInvalid("transition is a sha256: digest".into()))?;
    Ok(())
}

/// A decision's identity: kind and user (the same approval by the same user through another token is
/// the same decision), and for a waiver what it covers and says.
fn decision_key(kind: &str, principal: &Principal, request: &Request) -> Result<String> {
    let covers = match request {
        Request::Waive(w) => json!({"transition": w.transition, "scope": w.scope, "justification": w.justification}),
        _ => Value::Null,
    };
    let identity = canonical::to_string(&json!({"kind": kind, "user": principal.user, "covers": covers}))?;
    Ok(Digest::of(identity.as_bytes()).hex().to_owned())
}

/// GET .../governance: every receipt in order, and the state it yields.
pub async fn view(app: &App, ws: &WorkspaceId, name: &BundleName, version: &BundleName) -> Result<Value> {
    let v: BundleVersion =
        app.meta.bundle_version(ws, name.as_str(), version.as_str()).await?.ok_or(Error::BundleMissing)?;
    let l = ledger(app, ws, name.as_str(), version.as_str(), &v.manifest_digest).await?;
    let bundle = bundle_ref(ws, name.as_str(), version.as_str());
    let receipts: Vec<Value> =
        l.receipts.iter().map(|r| serde_json::from_str(&r.envelope).unwrap_or(Value::Null)).collect();
    Ok(json!({
        "bundle": bundle,
        "manifest_digest": v.manifest_digest,
        "state": l.state,
        "export_transition": transition_id(&bundle, l.state, State::Exported)?,
        "receipts": receipts,
    }))
}

/// Files verified at once during an export.
const EXPORT_PARALLELISM: usize = 16;

/// The answer to an official export: the receipt and short-lived proof URLs.
#[derive(Debug, Serialize)]
pub struct Exported {
    pub seq: u64,
    pub receipt: Value,
    /// How governance let it through: `approved`, `waived`, `re-export`, `warned` (warn mode) or `off`.
    pub governance: &'static str,
    pub proof: Proof,
}

#[derive(Debug, Serialize)]
pub struct Proof {
    pub expires_at: i64,
    pub manifest: crate::ports::Presigned,
    pub files: Vec<ProofFile>,
}

#[derive(Debug, Serialize)]
pub struct ProofFile {
    pub path: String,
    pub digest: Digest,
    /// A presigned GET, for the first `PROOF_URL_FILES` files (an answer must fit Lambda's 6 MB);
    /// the others are fetched by digest (GET .../blobs/{digest}).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Files an export answer carries a presigned URL for.
pub const PROOF_URL_FILES: usize = 1000;

/// POST .../export (SPEC §4): every file intact (checked in parallel, bounded), the governance gate
/// of HELIX_GOVERNANCE_MODE, a signed export receipt appended to the ledger, and presigned GETs of the
/// manifest and every file as proof. A refusal by governance is audited as a denial.
pub async fn export(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
) -> Result<Exported> {
    use crate::config::GovernanceMode;
    let v = app.meta.bundle_version(ws, name.as_str(), version.as_str()).await?.ok_or(Error::BundleMissing)?;
    let bundle = bundle_ref(ws, name.as_str(), version.as_str());
    let manifest = crate::blobs::stored_manifest(app, ws, &v).await?;
    let keys = check_integrity(app, ws, &v, &manifest).await?;
    for attempt in 0..APPEND_ATTEMPTS {
        let ledger = ledger(app, ws, name.as_str(), version.as_str(), &v.manifest_digest).await?;
        let transition = transition_id(&bundle, ledger.state, State::Exported)?;
        // A rejection is final in every mode: `warn` and `off` relax the approval, not a refusal.
        if ledger.state == State::Rejected {
            return Err(crate::domain::governance::Refusal::VersionRejected.into_error(&transition));
        }
        let waiver = ledger.live_waiver(&transition, now_unix());
        let (permitted, governance) = match (app.config.governance_mode, ledger.state, waiver) {
            (_, State::Exported, _) => (true, "re-export"),
            (_, State::Approved, _) => (true, "approved"),
            (GovernanceMode::Enforce, State::Submitted, Some(_)) => (true, "waived"),
            (GovernanceMode::Enforce, _, _) => (false, "denied"),
            (GovernanceMode::Warn, _, _) => (true, "warned"),
            (GovernanceMode::Off, _, _) => (true, "off"),
        };
        let to = match next(ledger.state, Decision::Export { permitted }) {
            Ok(to) => to,
            Err(refusal) => {
                deny(app, caller, &bundle, &transition, ledger.state).await;
                return Err(refusal.into_error(&transition));
            }
        };
        let details = json!({
            "mode": app.config.governance_mode.as_str(), "governance": governance,
            "files": v.files, "bytes": v.bytes,
            "waiver_seq": waiver.map(|w| w.seq),
        });
        let draft = Draft {
            kind: "export",
            manifest: &v.manifest_digest,
            transition: &transition,
            from: ledger.state,
            to,
            scope: None,
            justification: None,
            expires_at: None,
            details: Some(details),
            outcome: if governance == "warned" { Outcome::Warned } else { Outcome::Success },
        };
        // The proof is built before the receipt: an export is never recorded without its answer.
        let proof = proof(app, ws, &v, &manifest, &keys).await?;
        if let Some(receipt) = append(app, caller, ws, name, version, &ledger, draft, None).await? {
            let envelope: Value = serde_json::from_str(&receipt.envelope).unwrap_or(Value::Null);
            return Ok(Exported { seq: receipt.seq, receipt: envelope, governance, proof });
        }
        crate::adapters::backoff(attempt.min(5)).await;
    }
    Err(Error::unavailable(crate::error::Dependency::MetaStore, "could not claim the next ledger seq"))
}

/// Audit a governance refusal (best effort: the refusal stands whether or not it is recorded).
async fn deny(app: &App, caller: Caller<'_>, bundle: &str, transition: &Digest, state: State) {
    let event = AuditDraft {
        stream: bundle.split('/').next().unwrap_or("*").to_owned(),
        actor: caller.principal.actor(),
        action: "bundle.export".into(),
        entity_type: "bundle_version".into(),
        entity_id: bundle.to_owned(),
        outcome: Outcome::Denied,
        request_id: caller.request_id.into(),
        details: json!({"reason": "not_approved", "state": state.as_str(), "transition": transition}),
    };
    if let Err(e) = app.audit.append(event).await {
        tracing::error!(error = %e, "could not audit an export denial");
    }
}

/// Every file of the manifest linked in `ws` and intact in the store: its key, in manifest order.
async fn check_integrity(
    app: &App,
    ws: &WorkspaceId,
    v: &BundleVersion,
    manifest: &crate::domain::Manifest,
) -> Result<Vec<crate::ports::BlobKey>> {
    use futures_util::{StreamExt, TryStreamExt};
    let digests = manifest.digests();
    let checked: Vec<(Digest, Result<crate::ports::BlobKey>)> = futures_util::stream::iter(digests)
        .map(|digest| async move {
            let result = async {
                let link =
                    app.meta.blob_link(ws, &digest).await?.ok_or_else(|| Error::BlobMissing(digest.to_string()))?;
                crate::blobs::verify_object(app.blobs.as_ref(), &link.key()).await?;
                Ok(link.key())
            }
            .await;
            Ok::<_, Error>((digest, result))
        })
        .buffered(EXPORT_PARALLELISM)
        .try_collect()
        .await?;
    let mut missing = Vec::new();
    let mut keys = Vec::with_capacity(checked.len());
    for (digest, result) in checked {
        match result {
            Ok(key) => keys.push(key),
            Err(Error::BlobMissing(_)) => missing.push(digest.to_string()),
            Err(Error::BlobIntegrity(detail)) => {
                return Err(Error::BlobIntegrity(format!("{} of {}@{}: {detail}", digest, v.name, v.version)));
            }
            Err(e) => return Err(e),
        }
    }
    if !missing.is_empty() {
        missing.sort();
        missing.dedup();
        missing.truncate(1000);
        return Err(Error::BlobsMissing(missing));
    }
    Ok(keys)
}

async fn proof(
    app: &App,
    ws: &WorkspaceId,
    v: &BundleVersion,
    manifest: &crate::domain::Manifest,
    keys: &[crate::ports::BlobKey],
) -> Result<Proof> {
    let ttl = crate::blobs::DOWNLOAD_URL_TTL;
    let link = app
        .meta
        .blob_link(ws, &v.manifest_digest)
        .await?
        .ok_or_else(|| Error::BlobMissing(v.manifest_digest.to_string()))?;
    let manifest_url = app.blobs.presign_get(&link.key(), ttl).await?;
    let mut files = Vec::with_capacity(keys.len());
    for (i, (file, key)) in manifest.files.iter().zip(keys).enumerate() {
        let url = if i < PROOF_URL_FILES { Some(app.blobs.presign_get(key, ttl).await?.url) } else { None };
        files.push(ProofFile { path: file.path.clone(), digest: key.digest.clone(), url });
    }
    Ok(Proof { expires_at: manifest_url.expires_at, manifest: manifest_url, files })
}

/// What an offline verification of receipts established.
#[derive(Debug)]
pub struct Verified {
    pub bundle: String,
    pub receipts: usize,
    /// The state the receipts yield (when they are a whole ledger, from seq 1).
    pub state: Option<State>,
    pub first_seq: u64,
    pub statements: Vec<Statement>,
    /// Each receipt's payload, as signed.
    pub payloads: Vec<Vec<u8>>,
}

/// Verify receipts offline, as `helix governance verify` does: every signature by one of `keys` (with
/// the key id the statement names), one bundle and manifest, seq without gaps, each `prev` the digest of
/// the previous payload (null for seq 1), each transition id recomputed from bundle, from and to, and
/// the states: each receipt's `from` is the state the ones before it yield, and its `to` is what the
/// state machine allows. One receipt alone is checked for its signature and transition id.
pub fn verify_receipts(
    envelopes: &[Vec<u8>],
    keys: &[PublicKeyInfo],
    whole_ledger: bool,
) -> std::result::Result<Verified, String> {
    if envelopes.is_empty() {
        return Err("no receipts".into());
    }
    let mut statements = Vec::new();
    let mut payloads = Vec::new();
    for (i, e) in envelopes.iter().enumerate() {
        let (payload, key) =
            crate::dsse::verify_by(e, RECEIPT_PAYLOAD_TYPE, keys).map_err(|why| format!("receipt {}: {why}", i + 1))?;
        let s: Statement = serde_json::from_slice(&payload).map_err(|why| format!("receipt {}: {why}", i + 1))?;
        // Within the signing key's validity window (a retired or leaked key signs nothing later).
        let at = time::OffsetDateTime::parse(&s.time, &time::format_description::well_known::Rfc3339)
            .map_err(|_| format!("seq {}: time {:?} is not RFC 3339", s.seq, s.time))?;
        if let Some(why) = key.outside_window(at, true) {
            return Err(format!("seq {}: {why}", s.seq));
        }
        let env: Value = serde_json::from_slice(e).map_err(|why| why.to_string())?;
        // Exactly one signature, by the key the statement names (which then verified it above).
        let sigs = env["signatures"].as_array().map(Vec::as_slice).unwrap_or_default();
        if sigs.len() != 1 || sigs[0]["keyid"] != s.key_id.as_str() {
            return Err(format!("seq {}: not exactly one signature by the key the statement names", s.seq));
        }
        s.decision().map_err(|e| format!("seq {}: {e}", s.seq))?;
        statements.push(s);
        payloads.push(payload);
    }
    let first = &statements[0];
    if whole_ledger && first.seq != 1 {
        return Err(format!("the ledger starts at seq {}: a receipt is missing", first.seq));
    }
    let parse_state = |name: &str, seq: u64| {
        State::ALL.into_iter().find(|s| s.as_str() == name).ok_or_else(|| format!("seq {seq}: unknown state {name:?}"))
    };
    let mut state = (first.seq == 1).then_some(State::Submitted);
    for (i, s) in statements.iter().enumerate() {
        if s.bundle != first.bundle || s.manifest != first.manifest {
            return Err(format!("seq {}: another bundle or manifest than seq {}", s.seq, first.seq));
        }
        if s.seq != first.seq + i as u64 {
            return Err(format!(
                "seq {} follows seq {}: a receipt is missing or out of order",
                s.seq,
                first.seq + i as u64 - 1
            ));
        }
        let expected_prev = match i {
            0 if s.seq == 1 => None,
            0 => s.prev.clone(),
            _ => Some(Digest::of(&payloads[i - 1]).to_string()),
        };
        if s.prev != expected_prev {
            return Err(format!("seq {}: prev does not name the previous receipt", s.seq));
        }
        let (from, to) = (parse_state(&s.from, s.seq)?, parse_state(&s.to, s.seq)?);
        let recomputed = transition_id(&s.bundle, from, to).map_err(|e| e.to_string())?;
        if s.transition != recomputed.to_string() {
            return Err(format!("seq {}: transition {} is not that of {}→{}", s.seq, s.transition, s.from, s.to));
        }
        if let Some(current) = state {
            if from != current {
                return Err(format!("seq {}: from {} but the ledger is {}", s.seq, s.from, current.as_str()));
            }
            let decision = s.decision().map_err(|e| e.to_string())?;
            let after = next(current, decision).map_err(|r| format!("seq {}: {r:?}", s.seq))?;
            let claimed = if decision == Decision::Waive { State::Exported } else { after };
            if to != claimed {
                return Err(format!("seq {}: to {} but the state machine gives {}", s.seq, s.to, claimed.as_str()));
            }
            state = Some(after);
        }
    }
    Ok(Verified {
        bundle: first.bundle.clone(),
        receipts: statements.len(),
        state,
        first_seq: first.seq,
        payloads,
        statements: statements.clone(),
    })
}

/// The receipts in a file, and whether it is a whole ledger: one envelope, an array of them, or a
/// ledger (`{"receipts": [...]}`, as GET .../governance answers).
pub fn receipts_in(document: &[u8]) -> std::result::Result<(Vec<Vec<u8>>, bool), String> {
    let doc: Value = serde_json::from_slice(document).map_err(|e| format!("not JSON: {e}"))?;
    let (list, whole) = match &doc {
        Value::Object(o) if o.contains_key("payloadType") => (vec![doc.clone()], false),
        Value::Object(o) => {
            (o.get("receipts").and_then(Value::as_array).cloned().ok_or("no receipts in the file")?, true)
        }
        Value::Array(a) => (a.clone(), false),
        _ => return Err("not a receipt, a list of receipts or a ledger".into()),
    };
    let envelopes = list.iter().map(|r| serde_json::to_vec(r).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    Ok((envelopes, whole))
}

/// What a client reports after an export it made while the registry could not be reached
/// (`HELIX_REGISTRY_ALLOW_UNREGISTERED_EXPORT=1`, the playbook's last resort). The client's own words:
/// the registry records them as reported, with the reporter's identity from the token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnregisteredExport {
    /// `uex_` + 32 lowercase hex, chosen by the client: a report sent twice is recorded once.
    pub id: String,
    /// When the client made the export (RFC 3339).
    pub exported_at: String,
    /// The local account and host that made it.
    pub local_user: String,
    pub host: String,
    /// Why the override was used, and the error that made the registry unreachable.
    pub reason: String,
    pub error: String,
}

impl UnregisteredExport {
    fn check(&self) -> Result<()> {
        let id_ok = self
            .id
            .strip_prefix("uex_")
            .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        if !id_ok {
            return Err(Error::BadRequest("id is uex_ + 32 lowercase hex".into()));
        }
        let at = time::OffsetDateTime::parse(&self.exported_at, &time::format_description::well_known::Rfc3339)
            .map_err(|_| Error::BadRequest("exported_at is an RFC 3339 time".into()))?;
        // A client's clock may be off a little; an export cannot have happened in the future.
        if at.unix_timestamp() > now_unix() + 300 {
            return Err(Error::BadRequest("exported_at is in the future".into()));
        }
        for (field, value, max) in [
            ("local_user", &self.local_user, 128),
            ("host", &self.host, 255),
            ("reason", &self.reason, 1024),
            ("error", &self.error, 1024),
        ] {
            if !crate::domain::is_safe_text(value, max) {
                return Err(Error::BadRequest(format!(
                    "{field} is 1 to {max} characters, without control, line-separator or invisible formatting characters"
                )));
            }
        }
        Ok(())
    }
}

/// Record a client's report of an unregistered export in the workspace's audit trail
/// (`bundle.export_unregistered`, outcome `warned`), once per report id. The version need not be
/// registered: an export of something the registry never saw is what an auditor most needs to see.
/// A report id is recorded once per workspace, whichever version a repeat names. Returns whether this
/// call recorded it (false: already recorded).
pub async fn report_unregistered_export(
    app: &App,
    caller: Caller<'_>,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    report: &UnregisteredExport,
) -> Result<bool> {
    report.check()?;
    let change = Change::RecordUnregisteredExport {
        workspace_id: ws.to_string(),
        name: name.as_str().to_owned(),
        version: version.as_str().to_owned(),
        id: report.id.clone(),
    };
    let event = AuditDraft {
        stream: ws.to_string(),
        actor: caller.principal.actor(),
        action: "bundle.export_unregistered".into(),
        entity_type: "bundle".into(),
        entity_id: bundle_ref(ws, name.as_str(), version.as_str()),
        outcome: Outcome::Warned,
        request_id: caller.request_id.into(),
        details: json!({
            "id": report.id,
            "exported_at": report.exported_at,
            "local_user": report.local_user.trim(),
            "host": report.host.trim(),
            "reason": report.reason.trim(),
            "error": report.error.trim(),
        }),
    };
    Ok(matches!(app.meta.commit(change, event).await?, Commit::Applied(_)))
}
