//! Governance decisions on a bundle version (SPEC §4): approve, reject, waive. Each is a signed
//! receipt (a DSSE envelope through the Signer port) appended to the version's ledger with a
//! conditional write on its seq, in the same commit as its audit event. The state a ledger yields is
//! the fold of `domain::governance::next` over its receipts. User and role come from the
//! authenticated principal, never from the body.
//!
//! Rules: separation of duties (the user who registered a version can neither approve nor waive it:
//! `403 self_approval`); the state first (a decision the version's state forbids is refused with the
//! state's reason, whatever was decided before); idempotency while in force (the same decision by the
//! same user, identical in every requested field, returns the receipt it made while that receipt is in
//! force: an expired waiver asked for again is a new receipt); a waiver covers exactly one transition,
//! in scope `export_unapproved`, until it expires. Reads, decisions and exports verify the ledger's
//! last receipt only (`head`), whatever its length; the whole ledger is read where it is short by
//! construction (before an export) and by GET .../governance (docs/security.md, "Ledger heads").

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
/// Longest justification, in bytes as signed (JSON-escaped: `"` and `\` count 2, a control
/// character 6), so a receipt always fits the signer's 4096 bytes; a longer text is referenced by
/// the digest of a blob holding it.
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
    /// The seq and `prev` of the next receipt: the digest of the last payload, as signed.
    fn next_position(&self) -> Position {
        Position {
            seq: self.receipts.last().map_or(1, |r| r.seq + 1),
            prev: self.payloads.last().map(|p| Digest::of(p).to_string()),
        }
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
    app.receipts_read.fetch_add(receipts.len() as u64, std::sync::atomic::Ordering::Relaxed);
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

/// Where the next receipt goes: its seq and its `prev`.
#[derive(Clone, Debug)]
struct Position {
    seq: u64,
    prev: Option<String>,
}

/// A ledger's last receipt, verified, and the state it yields.
pub struct Head {
    pub statement: Option<Statement>,
    pub state: State,
    position: Position,
}

/// The state of a version from its ledger's last receipt alone: one store read and one signature
/// check whatever the ledger's length. The receipt must verify with a registry key (transition id
/// recomputed, one signature by the key it names), be about this version and manifest and sit at its
/// own seq; a receipt at seq 1 must start from `submitted`. The state is what that signed receipt
/// says: the registry signed it only after verifying the ledger before it (its `from` is the state it
/// found; `to`, or `from` for a waiver, the state it left). What storage alone could still do, and
/// where each thing is caught, is in docs/security.md ("Ledger heads").
pub async fn head(app: &App, ws: &WorkspaceId, name: &str, version: &str, manifest: &Digest) -> Result<Head> {
    let Some(last) = app.meta.ledger_head(ws, name, version).await? else {
        return Ok(Head { statement: None, state: State::Submitted, position: Position { seq: 1, prev: None } });
    };
    app.receipts_read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let keys = verification_keys(app).await?;
    let bundle = bundle_ref(ws, name, version);
    let broken = |why: String| Error::BlobIntegrity(format!("the ledger of {bundle} does not verify: {why}"));
    let mut verified = verify_receipts(&[last.envelope.clone().into_bytes()], &keys, false).map_err(broken)?;
    let s = verified.statements.remove(0);
    if s.bundle != bundle || s.manifest != manifest.to_string() || s.seq != last.seq {
        return Err(broken(format!(
            "the receipt stored at seq {} is seq {} of {} ({})",
            last.seq, s.seq, s.bundle, s.manifest
        )));
    }
    let left = if s.kind == "waiver" { &s.from } else { &s.to };
    let state = State::ALL
        .into_iter()
        .find(|st| st.as_str() == left)
        .ok_or_else(|| broken(format!("seq {}: unknown state {left:?}", s.seq)))?;
    let position = Position { seq: last.seq + 1, prev: Some(Digest::of(&verified.payloads[0]).to_string()) };
    Ok(Head { statement: Some(s), state, position })
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
/// 200 when the same decision by the same user, identical in every requested field, was already
/// recorded and is still in force). The version's state is checked first: a decision it forbids is
/// refused with the state's reason (409 `version_rejected`, `version_exported`), never answered with an
/// earlier receipt.
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
    let identity = decision_identity(kind, principal, &request)?;
    for attempt in 0..APPEND_ATTEMPTS {
        // The state first, from the last receipt alone: an exported or rejected version refuses
        // (every re-export lengthens an exported version's ledger; none of it is read here).
        let head = head(app, ws, name.as_str(), version.as_str(), &v.manifest_digest).await?;
        let head_transition = transition_id(&bundle, head.state, State::Exported)?;
        next(head.state, decision).map_err(|r| r.into_error(&head_transition))?;
        // Permitted: the whole ledger, which holds decisions only (no export yet), for the receipt this
        // very decision may already have.
        let ledger = ledger(app, ws, name.as_str(), version.as_str(), &v.manifest_digest).await?;
        let export_transition = transition_id(&bundle, ledger.state, State::Exported)?;
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
        let now = now_unix();
        let (latest, occurrence) = latest_occurrence(&ledger, &identity);
        if let Some((receipt, statement)) = latest {
            // An approval or a rejection stays in force while the state permits it again (checked
            // above); a waiver until it expires.
            let in_force = statement.kind != "waiver" || statement.expires_at.is_some_and(|e| now < e);
            if in_force {
                return Ok((receipt.clone(), false));
            }
        }
        let draft = Draft {
            kind,
            manifest: &v.manifest_digest,
            transition: &transition,
            from,
            to: to_s,
            scope: waiver.map(|w| w.scope.clone()),
            justification: waiver.map(|w| w.justification.clone()),
            expires_at: waiver.map(|w| now + w.expires_in_seconds.unwrap_or(WAIVER_DEFAULT_SECONDS)),
            details: None,
            outcome: Outcome::Success,
        };
        let key = decision_key(&identity, occurrence);
        if let Some(receipt) = append(app, caller, ws, name, version, ledger.next_position(), draft, Some(key)).await? {
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
    at: Position,
    draft: Draft<'_>,
    decision_key: Option<String>,
) -> Result<Option<LedgerReceipt>> {
    let principal = caller.principal;
    let bundle = bundle_ref(ws, name.as_str(), version.as_str());
    let signer_key = app.signer.public_key().await?;
    // A retired key signs nothing more: its receipt would verify nowhere and, as the ledger's head,
    // leave the version unreadable for good. An instance still configured with it fails closed.
    if let Some(retired) =
        verification_keys(app).await?.into_iter().find(|k| k.key_id == signer_key.key_id).and_then(|k| k.retired_at)
    {
        return Err(Error::unavailable(
            crate::error::Dependency::Signer,
            format!("the signing key {} was retired at {retired}: configure the new key", signer_key.key_id),
        ));
    }
    record_signing_key(app, &caller.principal.actor(), caller.request_id, &signer_key).await?;
    let seq = at.seq;
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
        prev: at.prev,
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
    // What is signed is bounded, not what was typed: the justification as the statement holds it.
    let signed = serde_json::to_string(&w.justification).map_or(usize::MAX, |j| j.len() - 2);
    if w.justification.trim().is_empty() || signed > MAX_JUSTIFICATION {
        return Err(Error::WaiverInvalid(format!(
            "a justification is 1 to {MAX_JUSTIFICATION} bytes as signed (JSON-escaped: each \" and \\ counts 2 \
             bytes, each control character 6); this one is {signed}: reference a longer text by the digest of a \
             blob holding it"
        )));
    }
    if w.expires_in_seconds.is_some_and(|s| !(1..=WAIVER_MAX_SECONDS).contains(&s)) {
        return Err(Error::WaiverInvalid(format!("expires_in_seconds is 1 to {WAIVER_MAX_SECONDS}")));
    }
    Digest::parse(&w.transition).map_err(|_| Error::WaiverInvalid("transition is a sha256: digest".into()))?;
    Ok(())
}

/// A decision's identity: kind and user (the same approval by the same user through another token is
/// the same decision), and for a waiver everything it asks for (transition, scope, justification,
/// lifetime): a request that differs in any of them is another decision.
fn decision_identity(kind: &str, principal: &Principal, request: &Request) -> Result<String> {
    let covers = match request {
        Request::Waive(w) => json!({"transition": w.transition, "scope": w.scope, "justification": w.justification,
            "expires_in_seconds": w.expires_in_seconds.unwrap_or(WAIVER_DEFAULT_SECONDS)}),
        _ => Value::Null,
    };
    canonical::to_string(&json!({"kind": kind, "user": principal.user, "covers": covers}))
}

/// The stored key of the `occurrence`-th receipt of one decision (0 for the first; a waiver asked for
/// again after it expired is the next occurrence). The first keeps the form keys always had.
fn decision_key(identity: &str, occurrence: u64) -> String {
    match occurrence {
        0 => Digest::of(identity.as_bytes()).hex().to_owned(),
        n => Digest::of(format!("{identity}#{n}").as_bytes()).hex().to_owned(),
    }
}

/// The latest receipt of a decision in `ledger` (with its statement), and the occurrence a new one
/// would be.
fn latest_occurrence<'l>(ledger: &'l Ledger, identity: &str) -> (Option<(&'l LedgerReceipt, &'l Statement)>, u64) {
    let mut latest = None;
    let mut occurrence = 0;
    loop {
        let key = decision_key(identity, occurrence);
        let found =
            ledger.receipts.iter().zip(&ledger.statements).find(|(r, _)| r.decision_key.as_deref() == Some(&key));
        match found {
            Some(f) => {
                latest = Some(f);
                occurrence += 1;
            }
            None => return (latest, occurrence),
        }
    }
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

pub use crate::proofs::{PROOF_URL_FILES, Proof, ProofFile};

/// POST .../export (SPEC §4): every file intact (checked in parallel, bounded), the governance gate
/// of HELIX_GOVERNANCE_MODE, a signed export receipt appended to the ledger, and proof URLs of the
/// manifest and every file (`proofs`: registry-signed, never a presigned GET of a shared object). A
/// refusal by governance is audited as a denial.
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
    let enforce = app.config.governance_mode == GovernanceMode::Enforce;
    for attempt in 0..APPEND_ATTEMPTS {
        // The last receipt alone gives the state and the exports so far; only an export that needs a
        // waiver reads the whole ledger, which then holds waivers only (nothing leaves `submitted` but
        // to a state where no waiver counts).
        let head = head(app, ws, name.as_str(), version.as_str(), &v.manifest_digest).await?;
        let (state, position, waiver) = if head.state == State::Submitted && enforce {
            let ledger = ledger(app, ws, name.as_str(), version.as_str(), &v.manifest_digest).await?;
            let transition = transition_id(&bundle, ledger.state, State::Exported)?;
            let waiver = ledger.live_waiver(&transition, now_unix()).map(|w| w.seq);
            (ledger.state, ledger.next_position(), waiver)
        } else {
            (head.state, head.position.clone(), None)
        };
        let transition = transition_id(&bundle, state, State::Exported)?;
        // A rejection is final in every mode: `warn` and `off` relax the approval, not a refusal.
        if state == State::Rejected {
            return Err(crate::domain::governance::Refusal::VersionRejected.into_error(&transition));
        }
        let number = exports_so_far(app, ws, name, version, &v, &head).await? + 1;
        if number > app.config.export_limit {
            return Err(Error::GovernanceConflict {
                reason: "export_limit_reached",
                detail: format!(
                    "this version was exported {} times, the most HELIX_EXPORT_LIMIT allows; its receipts and \
                     proof stay readable (GET .../governance, GET .../blobs/{{digest}}); publish a new version to \
                     export again",
                    number - 1
                ),
            });
        }
        let (permitted, governance) = match (app.config.governance_mode, state, waiver) {
            (_, State::Exported, _) => (true, "re-export"),
            (_, State::Approved, _) => (true, "approved"),
            (GovernanceMode::Enforce, State::Submitted, Some(_)) => (true, "waived"),
            (GovernanceMode::Enforce, _, _) => (false, "denied"),
            (GovernanceMode::Warn, _, _) => (true, "warned"),
            (GovernanceMode::Off, _, _) => (true, "off"),
        };
        let to = match next(state, Decision::Export { permitted }) {
            Ok(to) => to,
            Err(refusal) => {
                deny(app, caller, &bundle, &transition, state).await;
                return Err(refusal.into_error(&transition));
            }
        };
        let details = json!({
            "mode": app.config.governance_mode.as_str(), "governance": governance,
            "files": v.files, "bytes": v.bytes,
            "waiver_seq": waiver, "number": number,
        });
        let draft = Draft {
            kind: "export",
            manifest: &v.manifest_digest,
            transition: &transition,
            from: state,
            to,
            scope: None,
            justification: None,
            expires_at: None,
            details: Some(details),
            outcome: if governance == "warned" { Outcome::Warned } else { Outcome::Success },
        };
        // The proof is built before the receipt: an export is never recorded without its answer.
        let proof = crate::proofs::proof(app, ws, &v, &manifest, &keys).await?;
        if let Some(receipt) = append(app, caller, ws, name, version, position, draft, None).await? {
            let envelope: Value = serde_json::from_str(&receipt.envelope).unwrap_or(Value::Null);
            return Ok(Exported { seq: receipt.seq, receipt: envelope, governance, proof });
        }
        crate::adapters::backoff(attempt.min(5)).await;
    }
    Err(Error::unavailable(crate::error::Dependency::MetaStore, "could not claim the next ledger seq"))
}

/// How many official exports a version's ledger holds, from its last receipt: the `number` a signed
/// export receipt carries (0 when the last receipt is no export: exports are final, so none came
/// before). A ledger whose last export predates `number` is counted once by reading it whole.
async fn exports_so_far(
    app: &App,
    ws: &WorkspaceId,
    name: &BundleName,
    version: &BundleName,
    v: &BundleVersion,
    head: &Head,
) -> Result<u64> {
    let Some(last) = head.statement.as_ref().filter(|s| s.kind == "export") else { return Ok(0) };
    if let Some(n) = last.details.as_ref().and_then(|d| d["number"].as_u64()) {
        return Ok(n);
    }
    let ledger = ledger(app, ws, name.as_str(), version.as_str(), &v.manifest_digest).await?;
    Ok(ledger.statements.iter().filter(|s| s.kind == "export").count() as u64)
}

/// Whether a refusal of a governance route (approve, reject, waive, export) or of the freeze switch is
/// a governance denial, audited with outcome `denied` and counted in `helix_governance_denials_total`
/// (SPEC §4): separation of duties, a state that forbids the decision, an invalid waiver, the export
/// limit, a role or workspace the credential lacks, an unapproved export (`deny`, in `export`).
pub fn is_denial(e: &Error) -> bool {
    matches!(
        e,
        Error::SelfApproval
            | Error::GovernanceConflict { .. }
            | Error::WaiverInvalid(_)
            | Error::NotApproved { .. }
            | Error::InsufficientRole { .. }
            | Error::ForbiddenWorkspace
    )
}

/// Audit a refusal as `denied` in `stream`: the reason (the problem's `reason`), its status and
/// detail, under the request id. Best effort: the refusal stands whether or not it is recorded.
pub async fn audit_denial(app: &App, actor: &str, request_id: &str, target: DenialTarget<'_>, e: &Error) {
    let (status, reason) = crate::http::problem::classify(e);
    let event = AuditDraft {
        stream: target.stream.to_owned(),
        actor: actor.to_owned(),
        action: target.action.to_owned(),
        entity_type: target.entity_type.to_owned(),
        entity_id: target.entity_id.to_owned(),
        outcome: Outcome::Denied,
        request_id: request_id.into(),
        details: json!({"reason": reason, "status": status, "detail": e.to_string()}),
    };
    if let Err(e) = app.audit.append(event).await {
        tracing::error!(error = %e, "could not audit a governance denial");
    }
}

/// What a denial was about: the stream it is recorded in and the action and entity it refused.
pub struct DenialTarget<'a> {
    pub stream: &'a str,
    pub action: &'a str,
    pub entity_type: &'a str,
    pub entity_id: &'a str,
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
